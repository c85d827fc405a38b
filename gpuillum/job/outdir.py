"""OUT: where a run writes, and its manifest, lock, resume, overwrite and orphans.

OUT holds ``illum/`` (the models: ``<plate>_Illum<channel>.npy`` for CellProfiler functions,
``.npz`` for other models, a PNG preview each), ``corrected/`` (the corrected images under their
paths relative to INPUT, and ``load_data.csv``), ``manifest.json`` and the run lock. Nothing else
in OUT is gpuillum's. :class:`OutDir` keeps the manifest: it resumes an earlier run's (same
settings), replaces it (``--overwrite``: only gpuillum's own outputs are deleted), or refuses to
mix two runs, and it records every output with the checksum and input stamp ``--resume`` trusts.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, one_line
from ..io.manifest import Manifest
from .spec import JobError, check_not_empty

MANIFEST_NAME = "manifest.json"
LOADDATA_NAME = "load_data.csv"
MODEL_FOLDER, CORRECTED_FOLDER = "illum", "corrected"
MANIFEST_SAVE_SECONDS = 2.0


@dataclass
class JobManifest(Manifest):
    """The io Manifest plus the job's state: ``status`` (running | complete | failed), ``error``
    (the one-line message of a failed run), ``method`` (the effective method), ``warnings``,
    ``orphaned`` (outputs an earlier run made from inputs now gone: {"path", "source"}) and ``qc``
    (per group: what the output dtype cast lost)."""

    status: str = "running"
    error: str | None = None
    method: str | None = None
    warnings: list = field(default_factory=list)
    orphaned: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)


def os_error_text(error: OSError) -> str:
    """A write error in a few words: "no space left on device" for a full disk (also NumPy's
    errno-less "N requested and M written" short write), else the OS's text."""
    import errno

    text = str(error)
    if error.errno in (errno.ENOSPC, errno.EDQUOT) or (error.errno is None and "requested and" in text and "written" in text):
        return "no space left on device"
    return error.strerror or text


def check_paths(input_path, out_dir) -> tuple[Path, Path]:
    """INPUT must be a folder or an image file; OUT must not be empty, be INPUT, lie inside it, or
    hold it among its outputs."""
    check_not_empty(input_path, "INPUT")
    check_not_empty(out_dir, "OUT")
    input_path = Path(input_path)
    if not (input_path.is_dir() or input_path.is_file()):
        raise JobError(f"{input_path}: input folder or image does not exist")
    source = input_path.resolve()
    target = Path(out_dir).resolve()
    if target == source:
        raise JobError(f"{out_dir}: the output folder is the input folder; choose another -o OUT (gpuillum never writes inside INPUT)")
    if source in target.parents:
        raise JobError(f"{out_dir}: the output folder lies inside the input folder {input_path}; choose an -o OUT outside it")
    for produced in (target / CORRECTED_FOLDER, target / MODEL_FOLDER):
        if source == produced or produced in source.parents:
            raise JobError(f"{input_path}: the input lies where outputs are written ({produced}); choose another -o OUT")
    return input_path, Path(out_dir)


def corrected_path(out_dir, relpath: str) -> Path:
    """OUT/corrected/<the input's path relative to INPUT>."""
    return Path(out_dir) / CORRECTED_FOLDER / relpath


def check_output_folders(input_path: Path, out_dir: Path, relpaths) -> None:
    """No folder an output goes to (OUT/illum, OUT/corrected and the folders under it) may lead into
    INPUT through a symbolic link: the outputs would replace the input images. Nor may any of
    them, the lock, the manifest or the LoadData CSV be a link at all (io.safe_open.refuse_links)."""
    from ..io.run_lock import LOCK_NAME
    from ..io.safe_open import LinkInOut, refuse_links

    source = input_path.resolve()
    folders = {out_dir / MODEL_FOLDER, out_dir / CORRECTED_FOLDER}
    folders.update(corrected_path(out_dir, relpath).parent for relpath in relpaths)
    for folder in sorted(folders):
        real = Path(os.path.realpath(folder))  # also for folders not made yet: their existing part decides
        if real == source or source in real.parents:
            raise JobError(f"{folder}: leads into the input folder {input_path} (as {real}, through a symbolic link); "
                           "gpuillum never writes inside INPUT: remove the link or choose another -o OUT")
    owned = [LOCK_NAME, MANIFEST_NAME, f"{CORRECTED_FOLDER}/{LOADDATA_NAME}", *(folder.relative_to(out_dir) for folder in folders)]
    try:
        refuse_links(out_dir, owned)
    except LinkInOut as error:
        raise JobError(str(error)) from None


def create_out(out_dir: Path) -> None:
    """Make OUT (and its parents); a one-line JobError when it cannot be made or written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(f"{out_dir}: cannot create the output folder ({error.strerror or error})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise JobError(f"{out_dir}: output folder is not writable")


def remove_stale_temporaries(out_dir: Path) -> None:
    """Temporaries a run killed outright left where runs write (OUT itself, illum/, corrected/):
    the caller holds OUT's lock, so no other run is writing them. Nothing else is looked at."""
    from ..io.atomic import remove_stale_temporaries as remove

    remove(out_dir, recursive=False)
    for folder in (out_dir / MODEL_FOLDER, out_dir / CORRECTED_FOLDER):
        if folder.is_dir() and not folder.is_symlink():
            remove(folder)


def same_run(earlier: dict, current: dict) -> bool:
    """True when a manifest's settings belong to the same run as ``current``: same INPUT and discovery,
    and the same method and apply settings (whichever passes), or an apply pass that corrects with the
    models an earlier calc (or run) left in OUT/illum."""
    def without(settings, *keys):
        return {k: v for k, v in settings.items() if k not in keys}

    if without(earlier, "passes") == without(current, "passes"):
        return True
    method_keys = ("passes", "method", "method_name", "apply", "functions")
    same_input = without(earlier, *method_keys) == without(current, *method_keys)
    return same_input and "calc" in (earlier.get("passes") or []) and current.get("passes") == ["apply"]


class OutDir:
    """OUT's manifest for one run: opened (resumed, replaced or refused), updated as outputs are
    written, saved atomically at most every MANIFEST_SAVE_SECONDS (or when forced), finished."""

    def __init__(self, out_dir: Path, *, resume: bool, overwrite: bool, warn):
        self.path = out_dir
        self.resume, self.overwrite = resume, overwrite
        self.warn = warn
        self.manifest = JobManifest()  # in memory until open(): collects the files skipped before it
        self._last_save = 0.0

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST_NAME

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_save >= MANIFEST_SAVE_SECONDS:
            try:
                self.manifest.save(self.manifest_path)
            except OSError as error:
                raise JobError(f"{self.manifest_path}: {os_error_text(error)}") from None
            self._last_save = now

    def open(self, settings: dict, method: str, *, devices, workers) -> None:
        """Start this run's manifest: resume the earlier one, replace it (overwrite), or refuse to mix runs.

        An earlier manifest that lists no output (a run that failed before writing any) protects
        nothing: it is replaced, so the corrected rerun goes ahead. An unreadable one cannot say
        whose outputs illum/ and corrected/ hold, so they are kept unless ``overwrite``.
        """
        from ..io.manifest import collect_versions

        path = self.manifest_path
        earlier = None
        if path.is_file():
            try:
                earlier = JobManifest.load(path)
            except (UserError, ValueError, OSError) as error:
                reason = one_line(error).removeprefix(f"{path}: ")
                if self.resume:
                    raise JobError(f"{path}: cannot resume from this manifest ({reason}); start again with "
                                   "--overwrite, which replaces illum/, corrected/ and the manifest") from None
                self._replace_unreadable(path, reason)
        if earlier is not None and not earlier.files:
            earlier = None
        settings = json.loads(json.dumps(settings, default=str))  # as it reads back from JSON
        if self.resume and earlier is not None and earlier.settings != settings:
            raise JobError(f"{path}: --resume with different settings than the earlier run; use the same options or another -o OUT")
        if earlier is not None and self.overwrite:
            self._remove_earlier_outputs([*earlier.files, *(entry.get("path") for entry in earlier.orphaned if isinstance(entry, dict))])
            earlier = None
        elif earlier is not None and not self.resume and not same_run(earlier.settings, settings):
            raise JobError(f"{self.path}: holds the outputs of a different run (its {MANIFEST_NAME} has another INPUT or "
                           "other settings); use --overwrite to replace them, --resume with the same options, or another -o OUT")
        skipped = self.manifest.skipped
        self.manifest = earlier if earlier is not None else JobManifest()
        self.manifest.settings = settings
        self.manifest.method = method
        self.manifest.status, self.manifest.error, self.manifest.warnings, self.manifest.qc = "running", None, [], {}
        self.manifest.versions = collect_versions()
        self.manifest.devices = [str(device) for device in devices]
        self.manifest.skipped = skipped
        self.manifest.timings["workers"] = workers
        self.save(force=True)

    def set_aside_orphans(self, sources: set, models: set, input_path: Path) -> None:
        """Outputs the earlier run recorded whose inputs this run does not use (images deleted, moved
        out of INPUT or now skipped as unreadable, a channel gone) leave the manifest's ``files``
        for its ``orphaned`` list, so the manifest describes this run's outputs only. The files
        stay: their inputs may exist nowhere else any more. ``sources``: the relpaths this run
        corrects; ``models``: the OUT-relative model and preview paths it estimates."""
        orphans = [(relpath, entry.get("source")) for relpath, entry in self.manifest.files.items()
                   if (entry.get("source") not in sources if entry["role"] == "corrected" else relpath not in models)]
        if not orphans:
            return
        for relpath, source in orphans:
            del self.manifest.files[relpath]
            self.manifest.orphaned.append({"path": relpath, "source": source})
        self.warn(f"{len(orphans)} output(s) of the earlier run have no usable input in {input_path} any more (e.g. "
                  f"{orphans[0][0]}); left in place, listed as \"orphaned\" in {MANIFEST_NAME}, and not in its files")
        self.save(force=True)

    def _replace_unreadable(self, path: Path, reason: str) -> None:
        """An unreadable manifest: with ``overwrite`` remove it (and the LoadData CSV; it lists no
        outputs, so the new run writes over them); else refuse when illum/ or corrected/ exist (they
        may hold another run's outputs)."""
        if self.overwrite:
            self._remove_earlier_outputs(())
        elif any((self.path / folder).exists() for folder in (MODEL_FOLDER, CORRECTED_FOLDER)):
            raise JobError(f"{path}: unreadable ({reason}), so the outputs in {self.path} may belong to another "
                           "run; use --overwrite to replace them (illum/, corrected/ and the manifest), or another -o OUT")

    def _remove_earlier_outputs(self, files) -> None:
        """--overwrite: delete the files the earlier manifest lists that are gpuillum outputs by place
        and kind (under illum/ and corrected/, io.manifest.remove_outputs), its LoadData CSV and the
        manifest itself, and the folders left empty; nothing else in OUT is touched."""
        from ..io.manifest import remove_outputs

        try:
            remove_outputs(self.path, files, fixed=(f"{CORRECTED_FOLDER}/{LOADDATA_NAME}", MANIFEST_NAME))
        except OSError as error:
            raise JobError(f"{error.filename or self.path}: cannot remove the earlier run's output ({error.strerror or error})") from None

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the run's final status (complete or failed, with the one-line error)."""
        self.manifest.status, self.manifest.error = status, error
        self.save(force=True)

    def intact(self, relpath: str, path: Path, inputs: str) -> bool:
        """--resume: the output at ``path`` is recorded, undamaged and made from the same ``inputs``."""
        return self.resume and self.manifest.is_complete(relpath, path, inputs)
