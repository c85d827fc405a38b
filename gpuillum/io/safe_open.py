"""Opening files without surprises: inputs are regular files, and OUT's own files are never links.

Two hostile-input rules every reader and writer here follows:

* only a regular file is read as an input (an image, a LoadData CSV): opening a FIFO named
  ``*.tif`` for reading blocks until someone writes into it, that is for ever, and a device or
  socket is no image either. :func:`open_regular` opens without blocking and checks what it
  opened, so no check-then-open race is left;
* a file gpuillum owns inside OUT (its lock, ``manifest.json``, ``illum/``, ``corrected/`` and
  the folders under it) is never reached through a symbolic link: writing through a planted
  link would replace or truncate the link's target, an input image or any file of the user.
  :func:`refuse_links` checks OUT's own entries with ``lstat`` before a run touches anything,
  and the files a run creates are opened with ``O_NOFOLLOW`` (and ``O_EXCL`` for new ones).
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from ..errors import InvalidValue

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # 0 where the OS has no such flag (Windows)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


class NotRegularFile(InvalidValue):
    """An input that is not a regular file; ``kind`` says what it is ("a FIFO", "a directory", ...)
    and ``str(error)`` is ``"<path>: is <kind>, not a regular file"``."""

    def __init__(self, path, kind: str):
        self.path, self.kind = str(path), kind
        super().__init__(f"{self.path}: is {kind}, not a regular file")

    def __reduce__(self):  # keep (path, kind) through pickling, e.g. from a Dask worker
        return (type(self), (self.path, self.kind))


class LinkInOut(InvalidValue):
    """A file or folder gpuillum owns in OUT is a symbolic link (or the lock file is a hard link or
    not a regular file), so it is not written; ``str(error)`` is one line naming it."""


def file_kind(mode: int) -> str:
    """What a ``st_mode`` describes, in words: "a regular file", "a FIFO" (named pipe), ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def open_regular(path):
    """Open ``path`` for reading in binary mode, if it is a regular file (links to one are fine).

    Opened without blocking, so a FIFO is refused at once instead of hanging, and checked on the
    open descriptor, so it cannot be swapped between a check and the open. Raises
    :class:`NotRegularFile` for anything else, OSError (FileNotFoundError, PermissionError, ...)
    when it cannot be opened.

    >>> with open_regular("plate/A01_s1_DNA.tif") as handle:  # doctest: +SKIP
    ...     header = handle.read(4)
    """
    return open(path, "rb", opener=_regular)


def _regular(path, _flags) -> int:
    descriptor = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, file_kind(mode))
        if _NONBLOCK:
            os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def read_regular_text(path, encoding: str = "utf-8") -> str:
    """The text of a regular file (see :func:`open_regular`): ``Path.read_text`` that never blocks on a FIFO."""
    with open_regular(path) as handle:
        return handle.read().decode(encoding)


def refuse_links(folder, relpaths) -> None:
    """Raise :class:`LinkInOut` if any existing component of ``folder/relpath`` below ``folder`` is a
    symbolic link, for each relative path in ``relpaths``; components that do not exist yet pass.

    ``folder`` itself may be a link (the user's choice of OUT); what lies in it is gpuillum's.

    >>> refuse_links("out", [".gpuillum-run.lock", "manifest.json", "corrected/P1"])  # doctest: +SKIP
    """
    folder = Path(folder)
    seen = set()
    for relpath in relpaths:
        parts = PurePosixPath(Path(relpath).as_posix()).parts
        for depth in range(1, len(parts) + 1):
            entry = folder.joinpath(*parts[:depth])
            if entry in seen:
                continue
            seen.add(entry)
            try:
                mode = os.lstat(entry).st_mode
            except (FileNotFoundError, NotADirectoryError):
                break
            if stat.S_ISLNK(mode):
                raise LinkInOut(link_message(entry))


def link_message(path) -> str:
    """The one line said of a link found where gpuillum writes its own file."""
    return (f"{path}: is a symbolic link; gpuillum never follows a link to a file or folder it writes in OUT "
            "(its lock, manifest.json, illum/, corrected/): remove the link or choose another -o OUT")


def create_new(path):
    """A new file at ``path`` open for writing in binary mode (its ``name`` is ``path``): never an
    existing file, never through a link (``O_CREAT | O_EXCL | O_NOFOLLOW``); FileExistsError if
    anything, a link included, is there.

    >>> with create_new("out/.P1_IllumDNA.npy.tmp-42-0badf00d") as handle:  # doctest: +SKIP
    ...     handle.write(data)
    """
    return open(path, "wb", opener=_exclusive)


def _exclusive(path, _flags) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | _CLOEXEC, 0o666)


def open_owned(path, mode: int = 0o644) -> int:
    """A read-write descriptor on ``path``, created if missing, that is one of gpuillum's own files:
    not reached through a link (:class:`LinkInOut`), a regular file with no other name (a hard link
    to a user's file would be overwritten with it: :class:`LinkInOut` too)."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | NOFOLLOW | _NONBLOCK | _CLOEXEC, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise LinkInOut(link_message(path)) from None
        raise
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode) or status.st_nlink > 1:
        os.close(descriptor)
        what = file_kind(status.st_mode) if not stat.S_ISREG(status.st_mode) else f"a file with {status.st_nlink} names (hard links)"
        raise LinkInOut(f"{path}: is {what}, not a file of gpuillum's own; it is never written: remove it or choose another -o OUT")
    if _NONBLOCK:
        os.set_blocking(descriptor, True)
    return descriptor
