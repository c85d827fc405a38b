"""One run at a time per output folder: a lock file that names the run holding it.

Two jobs writing into the same OUT would overwrite each other's manifest (losing the record of
finished files that ``--resume`` relies on) and delete each other's temporaries. The lock is a
file created with O_EXCL (atomic on local and NFS file systems) holding the host, pid and start
time of its run; it is removed when the run ends, Ctrl-C and SIGTERM included. A lock left by a
run killed outright (SIGKILL, power loss) is taken over when its host is this machine and its
process no longer exists; on another host that cannot be checked, so the message says which file
to remove.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".gpuillum-run.lock"


class FolderLocked(ValueError):
    """Another live run holds the folder's lock; ``str(error)`` is one line naming the lock file."""


def _holder(path: Path) -> dict:
    """The lock's record, or {} when it is unreadable (e.g. being written at this moment)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    except (OverflowError, ValueError):
        return False
    return True


def _is_stale(record: dict) -> bool:
    """True only when the holder provably died: same host, no such process."""
    pid = record.get("pid")
    return record.get("host") == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and not _process_exists(pid)


def _try_create(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    return True


@contextlib.contextmanager
def folder_lock(folder):
    """Hold ``folder``'s run lock for the duration of the block; FolderLocked if a live run holds it."""
    path = Path(folder) / LOCK_NAME
    if not _try_create(path):
        record = _holder(path)
        if _is_stale(record):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if not _try_create(path):
            record = _holder(path) or record
            who = f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"
            raise FolderLocked(f"{path}: another gpuillum run ({who}) is writing into this folder; wait for it to "
                               "finish, or delete this lock file if that run no longer exists")
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
