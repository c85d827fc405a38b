"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never a
half-written file: on any exception, Ctrl-C included, the temporary file is deleted and the
exception re-raised. ``os.replace`` is atomic because the temporary file lives in the same
directory (same file system) as the target.

Temporary names look like ``.<name>.tmp-<pid>-<random hex>``; a crash that kills the process
outright (SIGKILL, power loss) can leave one behind, and :func:`remove_stale_temporaries` clears
them before a ``--resume``.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from pathlib import Path

import numpy as np

_TEMPORARY_NAME = re.compile(r"\..+\.tmp-(?P<pid>\d+)-[0-9a-f]{8}")


def temporary_name(path) -> Path:
    """The temporary path :func:`atomic_path` uses for ``path`` (hidden, same folder, unique)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The caller writes the complete file to the yielded path. Missing parent folders are created.
    On any exception (including KeyboardInterrupt and SystemExit) the temporary file is removed
    and the exception propagates; ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename.

    The fsync makes bookkeeping files (manifests, CSVs) survive a power loss intact; these are
    small, so it costs little.
    """
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_save_npy(path, array) -> None:
    """Save a NumPy array as ``.npy`` atomically (``np.load(path)`` gives it back exactly)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array: expected a NumPy array, got {type(array).__name__} (copy CuPy arrays to the host first)")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):  # not a pid
        return False
    return True


def remove_stale_temporaries(folder, *, recursive: bool = True) -> list[Path]:
    """Delete temporaries left by :func:`atomic_path` in a crashed run; return what was removed.

    Temporaries named with the pid of a process alive on this machine (this one included) are
    kept, since they may be writes in flight. Do not call this while a job on another machine
    writes into the same folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"folder: {folder} is not a directory")
    candidates = folder.rglob(".*.tmp-*") if recursive else folder.glob(".*.tmp-*")
    removed = []
    for candidate in sorted(candidates):
        match = _TEMPORARY_NAME.fullmatch(candidate.name)
        if match is None or _process_exists(int(match["pid"])) or not candidate.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed
