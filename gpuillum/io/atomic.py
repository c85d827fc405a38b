"""Atomic file writes: write to a temporary name in the same folder, then rename.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never a
half-written file: on any exception, Ctrl-C included, the temporary file is deleted and the
exception re-raised. ``os.replace`` is atomic because the temporary file lives in the same
directory (same file system) as the target.

Temporary names look like ``.<name>.tmp-<pid>-<random hex>``, with ``<name>`` shortened where
the whole would exceed the folder's longest file name (NAME_MAX), so a temporary fits wherever its
final name does. The writers here create them with ``O_CREAT | O_EXCL | O_NOFOLLOW``: never an
existing file, never through a link planted at that name. A crash that kills the process outright
(SIGKILL, power loss) can leave one behind, and :func:`remove_stale_temporaries` clears them
before a ``--resume``.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
from pathlib import Path

import numpy as np

from .safe_open import create_new
from ..errors import InvalidType, InvalidValue

_TEMPORARY_NAME = re.compile(r"\..+\.tmp-\d+-[0-9a-f]{8}")
DEFAULT_NAME_MAX = 255  # bytes: Linux, macOS and Windows file systems


def name_max(folder) -> int:
    """The longest file name, in bytes, that ``folder``'s file system takes (255 when it cannot say)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):  # no such folder yet, no pathconf (Windows)
        return DEFAULT_NAME_MAX


def temporary_name(path) -> Path:
    """The temporary path :func:`atomic_path` uses for ``path`` (hidden, same folder, unique).

    ``.<name>.tmp-<pid>-<8 hex digits>``; when that would be longer than the folder's NAME_MAX
    (counted in bytes of the file system encoding), ``<name>`` keeps only as many of its first
    characters as fit, so a legal final name never fails for its temporary's length.

    >>> temporary_name("out/P1_IllumDNA.npy").name  # doctest: +SKIP
    '.P1_IllumDNA.npy.tmp-4242-9f86d081'
    """
    path = Path(path)
    tail = f".tmp-{os.getpid()}-{secrets.token_hex(4)}"
    room = name_max(path.parent) - len(os.fsencode(f".{tail}"))
    name = path.name
    while len(os.fsencode(name)) > room and len(name) > 1:
        name = name[: -max(1, (len(os.fsencode(name)) - room) // 4)]  # a character is at most 4 bytes
    return path.with_name(f".{name}{tail}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The caller writes the complete file to the yielded path, creating it with
    :func:`gpuillum.io.safe_open.create_new` (or an open that does not follow links). Missing
    parent folders are created. On any exception (including KeyboardInterrupt and SystemExit) the
    temporary file is removed and the exception propagates, an OSError naming ``path`` when it
    named no file or the temporary; ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_name(path)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno is not None and error.filename in (None, str(temporary)):
            error.filename = str(path)  # name the file being written (a full disk while writing names none)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename.

    The fsync makes bookkeeping files (manifests, CSVs) survive a power loss intact; these are
    small, so it costs little.
    """
    with atomic_path(path) as temporary:
        with create_new(temporary) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_save_npy(path, array) -> None:
    """Save a NumPy array as ``.npy`` atomically (``np.load(path)`` gives it back exactly)."""
    if not isinstance(array, np.ndarray):
        raise InvalidType(f"array: expected a NumPy array, got {type(array).__name__} (copy CuPy arrays to the host first)")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def remove_stale_temporaries(folder, *, recursive: bool = True) -> list[Path]:
    """Delete temporaries left by :func:`atomic_path` in a crashed run; return what was removed.

    Every file named like a temporary is removed, whatever process its pid names now: call this
    only while holding the folder's run lock (gpuillum.io.run_lock), which guarantees that no other
    run is writing there. A pid says nothing then: a run that was a container's pid 1, or a pid
    recycled after a reboot, would otherwise keep its temporaries for ever.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidValue(f"folder: {folder} is not a directory")
    candidates = folder.rglob(".*.tmp-*") if recursive else folder.glob(".*.tmp-*")
    removed = []
    for candidate in sorted(candidates):
        if not _TEMPORARY_NAME.fullmatch(candidate.name) or not candidate.is_file():
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed
