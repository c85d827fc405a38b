"""The run manifest: what a plate job used and produced, saved as JSON next to its outputs.

It records the settings, library versions and devices of the run, a sha256 and size for every
file written (so ``--resume`` can trust a finished file and redo a damaged one), timings, and the
input files that were skipped with the reason. Saved atomically, so a crash never leaves a
half-written manifest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import stat
import threading
from importlib import metadata
from pathlib import Path, PurePosixPath

from .atomic import atomic_write_bytes
from ..errors import InvalidValue

FORMAT = "gpuillum-manifest"
FORMAT_VERSION = 1
ROLES = ("corrected", "illum", "preview")
# the kinds of file a run writes, by the folder of OUT it writes them in: all that --overwrite may delete
OUTPUT_KINDS = {"illum": (".npy", ".png", ".npz"), "corrected": (".tif", ".tiff")}
_CHUNK = 1 << 20


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (constant memory for any file size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def input_stamp(files, extra: str = "") -> str:
    """A short hex digest of ``files`` ((name, path) pairs) with each path's size and modification
    time in ns, plus ``extra``; "unreadable" when a path cannot be stat'ed (it matches no record).

    What ``make`` and ``rsync`` compare: an input replaced or edited since an output was made
    changes its stamp, so ``--resume`` redoes that output, without reading the inputs again.
    Names, not paths, enter the digest, so INPUT may be spelled differently on resume.
    """
    digest = hashlib.sha256(extra.encode())
    for name, path in files:
        try:
            status = Path(path).stat()
        except OSError:
            return "unreadable"
        digest.update(f"\n{name}\t{status.st_size}\t{status.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def collect_versions(packages=("gpuillum", "numpy", "scipy", "tifffile", "imagecodecs", "dask", "cupy-cuda13x", "cupy-cuda12x")) -> dict:
    """Python and installed package versions for the manifest (packages not installed are left out)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def is_output(relpath, kinds=OUTPUT_KINDS) -> bool:
    """Whether ``relpath`` (relative to OUT, "/"-separated, as a manifest lists it) names a file of a
    kind a run writes, where it writes it: ``illum/<name>.npy|.png|.npz`` or ``corrected/.../<name>.tif``.

    >>> is_output("corrected/P1/B02_s1_DNA.tif"), is_output("user_notes.txt"), is_output("corrected/../x.tif")
    (True, False, False)
    """
    path = PurePosixPath(str(relpath))
    parts = path.parts
    if path.is_absolute() or len(parts) < 2 or any(part in ("", ".", "..") for part in parts) or "\\" in str(relpath):
        return False
    return path.suffix.lower() in kinds.get(parts[0], ())


def remove_outputs(out_dir, relpaths, fixed=()) -> list[Path]:
    """Delete from ``out_dir`` the files of ``relpaths`` that are gpuillum outputs by place and kind
    (:func:`is_output`), then the files named ``fixed`` (the job's own: its manifest, its LoadData
    CSV), then the folders those deletions left empty; return the paths deleted.

    Only regular files are deleted, and only where no folder between ``out_dir`` and them is a
    symbolic link, so a tampered manifest cannot make ``--overwrite`` delete a user's file. What
    is not there is skipped; OSError for a file that cannot be deleted.
    """
    out_dir = Path(out_dir)
    removed = []
    for relpath in [r for r in relpaths if is_output(r)] + [str(name) for name in fixed]:
        path = out_dir.joinpath(*PurePosixPath(relpath).parts)
        if path in removed or not _regular_without_links(out_dir, path):
            continue
        path.unlink()
        removed.append(path)
    for path in removed:  # prune, deepest first along each path, up to (not including) OUT
        for folder in path.parents:
            if folder == out_dir or out_dir not in folder.parents:
                break
            with contextlib.suppress(OSError):  # not empty (or gone): stop going up
                folder.rmdir()
                continue
            break
    return removed


def _regular_without_links(root: Path, path: Path) -> bool:
    """``path`` (below ``root``) is a regular file and no component of it below ``root`` is a link."""
    for entry in [*reversed(path.relative_to(root).parents[:-1]), path.relative_to(root)]:
        try:
            mode = os.lstat(root / entry).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            return False
    return stat.S_ISREG(mode)


@dataclasses.dataclass
class Manifest:
    """A plate job's record. ``files`` maps an output's relative path to
    ``{"sha256", "bytes", "role", "source", "inputs"}`` (role: corrected, illum or preview; source:
    the input relpath it came from, or None; inputs: a stamp of everything it was made from, see
    :func:`input_stamp`, or None); ``skipped`` lists ``{"path", "reason"}``.

    ``record_file`` and ``add_skipped`` may be called from several threads; ``save`` writes a
    consistent snapshot.
    """

    settings: dict = dataclasses.field(default_factory=dict)
    versions: dict = dataclasses.field(default_factory=dict)
    devices: list = dataclasses.field(default_factory=list)
    files: dict = dataclasses.field(default_factory=dict)
    timings: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def record_file(self, relpath: str, path, role: str, source: str | None = None, inputs: str | None = None) -> dict:
        """Checksum the written file at ``path`` and record it under ``relpath``; returns the entry."""
        path = Path(path)
        return self.record_entry(relpath, file_sha256(path), path.stat().st_size, role, source, inputs)

    def record_entry(self, relpath: str, sha256: str, size: int, role: str, source: str | None = None,
                     inputs: str | None = None) -> dict:
        """Record a file whose checksum and size are already known (e.g. computed by the writer)."""
        if role not in ROLES:
            raise ValueError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
        entry = {"sha256": sha256, "bytes": int(size), "role": role, "source": source, "inputs": inputs}
        with self._lock:
            self.files[str(relpath)] = entry
        return entry

    def add_skipped(self, path, reason: str) -> None:
        """Record an input left out of the job and why (e.g. an ImageReadError message)."""
        with self._lock:
            self.skipped.append({"path": str(path), "reason": str(reason)})

    def is_complete(self, relpath: str, path, inputs: str | None = None) -> bool:
        """True when ``relpath`` is recorded, the file at ``path`` has its size and sha256 and, if
        ``inputs`` is given, it was recorded as made from the same inputs."""
        entry = self.files.get(str(relpath))
        path = Path(path)
        if entry is None or not path.is_file():
            return False
        if inputs is not None and entry.get("inputs") != inputs:
            return False
        if path.stat().st_size != entry.get("bytes"):
            return False
        return file_sha256(path) == entry.get("sha256")

    def to_dict(self) -> dict:
        with self._lock:
            body = {field.name: json.loads(json.dumps(getattr(self, field.name), default=str)) for field in dataclasses.fields(self)}
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **body}

    def save(self, path) -> None:
        """Write the manifest as JSON (sorted keys, indented), atomically."""
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True)
        atomic_write_bytes(path, (text + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path) -> "Manifest":
        """Read a manifest written by :meth:`save`; ValueError naming the file if it is not one."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidValue(f"{path}: no such manifest file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InvalidValue(f"{path}: not a readable gpuillum manifest ({error})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidValue(f"{path}: not a gpuillum manifest (no \"format\": \"{FORMAT}\")")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise InvalidValue(f"{path}: manifest format version {data['format_version']} is newer than this gpuillum reads ({FORMAT_VERSION})")
        problem = _shape_problem(cls, data)
        if problem:
            raise InvalidValue(f"{path}: not a readable gpuillum manifest ({problem})")
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in names})


def _shape_problem(cls, data: dict) -> str | None:
    """What in ``data`` does not have the type :meth:`Manifest.save` writes (a hand-edited or foreign
    file), or None: containers keep their type, other fields are strings or null, and every file
    entry is a mapping with a sha256 string and a byte count."""
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        if field.default_factory is not dataclasses.MISSING:
            expected = type(field.default_factory())
            if not isinstance(value, expected):
                return f'"{field.name}" is not a {"mapping" if expected is dict else "list"}'
        elif value is not None and not isinstance(value, str):
            return f'"{field.name}" is not a string'
    for name, entry in data.get("files", {}).items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int) and entry.get("role") in ROLES):
            return f'the entry of "{name}" in "files" is not a file record'
    for entry in data.get("skipped", []):
        if not isinstance(entry, dict):
            return 'an entry of "skipped" is not a mapping'
    return None
