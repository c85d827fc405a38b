"""One run at a time per output folder: an advisory lock on a file that names the run holding it.

Two jobs writing into the same OUT would overwrite each other's manifest (losing the record of
finished files that ``--resume`` relies on) and delete each other's temporaries. The lock is an
exclusive ``flock`` on ``OUT/.gpuillum-run.lock``, which holds the host, pid and start time of its
run for the message a second run gets. The kernel drops a flock when its process ends, however it
ends (SIGKILL, out of memory, a container restarted as pid 1), so a lock is never stale; the file
itself is removed when the run ends. On a file system without locks (some network mounts) the
block runs unlocked and says so, rather than refusing to run. The lock file is never opened through
a link (io.safe_open.open_owned): a planted one would have the run write its record into the
link's target.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from pathlib import Path

from .safe_open import open_owned
from ..errors import InvalidValue

try:
    import fcntl
except ImportError:  # not POSIX: no flock
    fcntl = None

LOCK_NAME = ".gpuillum-run.lock"
_held = threading.local()  # lock paths this thread holds: a nested block on the same folder goes ahead


class FolderLocked(InvalidValue):
    """Another live run holds the folder's lock; ``str(error)`` is one line naming the lock file."""


def _holder(path: Path) -> dict:
    """The lock's record, or {} when it is unreadable (e.g. its run is writing it at this moment)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _same_file(path: Path, descriptor: int) -> bool:
    """Whether ``path`` still names the file open as ``descriptor`` (a finishing run unlinks it)."""
    try:
        named, opened = os.stat(path), os.fstat(descriptor)
    except FileNotFoundError:
        return False
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def _acquire(path: Path) -> int | None:
    """An open descriptor holding the exclusive flock on ``path`` with this run's record written;
    None when the file system has no locks. FolderLocked when a live run holds it."""
    while True:
        descriptor = open_owned(path)  # LinkInOut for a symbolic or hard link: its target is never written
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            record = _holder(path)
            who = f"pid {record.get('pid', '?')} on {record.get('host', '?')}, started {record.get('started', '?')}"
            raise FolderLocked(f"{path}: another gpuillum run ({who}) is writing into this folder; wait for it to "
                               "finish or stop it") from None
        except OSError as error:
            os.close(descriptor)
            if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        if _same_file(path, descriptor):
            break
        os.close(descriptor)  # locked a file its run has just unlinked: try the new one
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, json.dumps(record).encode())
    except OSError as error:
        _release(path, descriptor)
        raise OSError(error.errno, error.strerror, str(path)) from None
    return descriptor


def _release(path: Path, descriptor: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # while still locked: a run waiting on this file sees it gone and takes a new one
    os.close(descriptor)


@contextlib.contextmanager
def folder_lock(folder):
    """Hold ``folder``'s run lock for the block; yields the lock path, or None where the file
    system cannot lock (the caller may warn). FolderLocked if a live run holds it, LinkInOut (a
    ValueError) if the lock file is a link; a block nested in one that holds the same folder's lock
    in this thread goes ahead."""
    path = Path(folder) / LOCK_NAME
    key = str(path.resolve())
    held = _held.__dict__.setdefault("paths", set())
    if key in held:
        yield path
        return
    descriptor = _acquire(path) if fcntl is not None else None
    if descriptor is None:
        yield None
        return
    held.add(key)
    try:
        yield path
    finally:
        held.discard(key)
        _release(path, descriptor)
