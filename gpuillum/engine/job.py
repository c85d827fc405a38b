"""The plate job: find the images, estimate one function per plate x channel, correct and write.

``run_plate(INPUT, OUT, ...)`` is the whole job and the CLI's ``run``; ``calc`` / ``apply`` are
its two passes on their own. Per plate x channel:

1. pass 1 streams the images into fixed-size batch partial sums merged in a fixed order
   (engine.accumulate), so the function is bit-identical for any number of workers; the smoothing
   runs once; the function is saved as ``OUT/illum/<plate>_Illum<channel>.npy`` (+ a PNG preview);
2. pass 2 corrects every image and writes ``OUT/corrected/<relpath>`` in the input's dtype,
   metadata and compression (engine.apply), then ``OUT/corrected/load_data.csv``.

``OUT/manifest.json`` records settings, versions, devices, per-file checksums, timings and
skipped files; it is rewritten atomically as files complete, so ``resume=True`` finishes a
crashed run by skipping every output whose checksum still matches. A run holds OUT's lock
(io.run_lock) while it writes, so no second run mixes its files or manifest into it.

Memory bound (host, per process, independent of the plate size). T threads, images of P pixels
of b bytes, working resolution P' (= P, or P/25 with the jump preset's 0.2x resize):

* pass 1: at most T batches in flight, each thread holding one decoded image plus its
  temporaries (~ P*(b + 8) bytes: the float32 copy and resize) and one partial sum (12 B/px at
  P': float64 sum + int32 count); at most T finished partials wait to be merged, plus the
  merged total: about T*P*(b+8) + (2T+1)*12*P' bytes;
* pass 2: at most 2T images in flight (read-ahead queue), each with ~3 float32-sized temporaries
  while being corrected: about 2T*P*(b+12) bytes, plus the float32 function (4P);
* the client of a Dask run holds at most 2 x workers batch partials (12*P' each); on the GPU,
  pass 2 adds one pinned input and two pinned output batches of GPU_BATCH images (3*16*P*b).

E.g. 2160^2 uint16 with 16 threads: pass 1 ~ 16*4.7e6*10 B = 0.75 GB, pass 2 ~ 32*4.7e6*14 B =
2.1 GB, whatever the number of images.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuillum._checks import check_choice, check_integer, check_path, pixels_are
from gpuillum.inputs.records import Problem
from gpuillum.io.manifest import Manifest, input_stamp
from gpuillum.io.run_lock import LOCK_NAME, FolderLocked, folder_lock
from gpuillum.io.safe_open import LinkInOut, refuse_links

from .accumulate import OrderedMerge, accumulate_records, fixed_batches
from .arguments import check_job_arguments
from .apply import ApplyOptions, OutputProblem, WrittenFile, apply_records, corrected_path, os_error_text
from .background import BackgroundSettings
from .cluster import check_scheduler_address, check_workers, map_in_order, open_client
from .progress import Progress
from .reading import CheckedReader
from .stopping import raise_if_stop_requested

ON_ERROR = ("fail", "skip")
PASSES = ("calc", "apply")
MANIFEST_NAME = "manifest.json"
LOADDATA_NAME = "load_data.csv"
MANIFEST_SAVE_SECONDS = 2.0
MIN_IMAGES_ALL = 20  # fewer images in an All-mode average: cells, not the illumination, shape the function


class JobError(ValueError):
    """A problem the user must fix, as one line naming the file or option (CLI: exit code 2)."""



@dataclass
class JobManifest(Manifest):
    """The io Manifest plus the job's state: ``status`` (running | complete | failed), ``error``
    (the one-line message of a failed run), ``method`` (the effective method) and ``warnings``."""

    status: str = "running"
    error: str | None = None
    method: str | None = None
    warnings: list = field(default_factory=list)
    orphaned: list = field(default_factory=list)  # {"path", "source"}: outputs an earlier run made from inputs now gone


@dataclass
class RunResult:
    """What a plate job did: where things are, what was written, reused, skipped, and how long."""

    out_dir: Path
    device: str
    workers: int
    functions: dict = field(default_factory=dict)  # (plate, channel) -> Path of the .npy
    written: list = field(default_factory=list)  # WrittenFile for each image corrected now
    reused: list = field(default_factory=list)  # relpaths found complete by --resume
    skipped: list = field(default_factory=list)  # (relpath, reason)
    manifest: Path | None = None
    loaddata: Path | None = None
    timings: dict = field(default_factory=dict)
    method: str = ""  # the effective method (describe_method)
    warnings: list = field(default_factory=list)


# ----------------------------------------------------------------------------- options


def check_not_empty(path, name: str) -> None:
    """Refuse an empty path string (often an unset shell variable): it would mean the current folder."""
    if isinstance(path, str) and not path.strip():
        raise JobError(f"{name}: expected a folder, got an empty path")


def check_paths(input_dir, out_dir) -> tuple[Path, Path]:
    """INPUT must be a folder (not an empty path); OUT must not be empty, be INPUT, lie inside it, or
    hold it among its outputs."""
    check_not_empty(input_dir, "INPUT")
    check_not_empty(out_dir, "OUT")
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise JobError(f"{input_dir}: input folder does not exist or is not a directory")
    source = input_dir.resolve()
    target = Path(out_dir).resolve()
    if target == source:
        raise JobError(f"{out_dir}: the output folder is the input folder; choose another -o OUT (gpuillum never writes inside INPUT)")
    if source in target.parents:
        raise JobError(f"{out_dir}: the output folder lies inside the input folder {input_dir}; choose an -o OUT outside it")
    for produced in (target / "corrected", target / "illum"):
        if source == produced or produced in source.parents:
            raise JobError(f"{input_dir}: the input folder lies where outputs are written ({produced}); choose another -o OUT")
    return input_dir, Path(out_dir)


def check_output_folders(input_dir: Path, out_dir: Path, records) -> None:
    """No folder an output goes to (OUT/illum, OUT/corrected and the folders under it) may lead into
    INPUT through a symbolic link: the outputs would replace the input images. Nor may any of
    them, the lock, the manifest or the LoadData CSV be a link at all (io.safe_open.refuse_links)."""
    source = input_dir.resolve()
    folders = {out_dir / "illum", out_dir / "corrected"}
    folders.update(corrected_path(out_dir, record).parent for record in records)
    for folder in sorted(folders):
        real = Path(os.path.realpath(folder))  # also for folders not made yet: their existing part decides
        if real == source or source in real.parents:
            raise JobError(f"{folder}: leads into the input folder {input_dir} (as {real}, through a symbolic link); "
                           "gpuillum never writes inside INPUT: remove the link or choose another -o OUT")
    owned = [LOCK_NAME, MANIFEST_NAME, f"corrected/{LOADDATA_NAME}", *(folder.relative_to(out_dir) for folder in folders)]
    try:
        refuse_links(out_dir, owned)
    except LinkInOut as error:
        raise JobError(str(error)) from None


def resolve_settings(settings=None, preset: str | None = None):
    """The CalculateSettings of the job: ``settings`` if given, else ``preset(name)``."""
    from gpuillum.methods import cellprofiler

    if settings is not None and preset is not None:
        raise JobError("settings and preset: give one of them, not both")
    if preset is not None:
        try:
            return cellprofiler.preset(preset)
        except (KeyError, ValueError) as error:
            message = one_line(error)
            raise JobError(message if message.startswith("preset:") else f"preset: {message}") from None
    return settings


def describe_method(settings) -> str:
    """The settings that shape the function, in one line (run summary and manifest)."""
    if settings is None:
        return "no illumination function"
    parts = [settings.intensity]
    if settings.intensity == "Background":
        parts.append(f"block size {settings.block_size:g}")
    parts.append(settings.aggregation)
    smoothing = settings.smoothing
    if smoothing in ("Median Filter", "Gaussian Filter"):
        if settings.filter_size_method == "Manually":
            smoothing += f" size {settings.manual_size:g}"
        elif settings.filter_size_method == "Object size":
            smoothing += f" (object width {settings.object_width:g})"
        else:
            smoothing += " (automatic size)"
    parts.append(smoothing)
    if settings.dilate:
        parts.append(f"dilation radius {settings.dilation_radius}")
    parts.append(f"rescale {settings.rescale}")
    if settings.resize_factor != 1:
        parts.append(f"resize x{settings.resize_factor:g}")
    return ", ".join(parts)


def check_method(settings, apply_method: str, passes) -> None:
    """Refuse a method and apply method that together destroy the images (one line naming the fix).

    Only a job that both calculates and applies is checked here: calc alone applies nothing, and
    the apply pass checks the function it is given (``_Job.check_functions``).
    """
    if settings is None or not {"calc", "apply"} <= set(passes):
        return
    if not settings.is_all and settings.smoothing == "No smoothing" and settings.intensity == "Regular":
        raise JobError("aggregation Each with smoothing 'No smoothing' divides each image by itself (every image "
                       "becomes flat); use --aggregation All or a --smoothing method (e.g. Median Filter)")
    if apply_method == "Subtract" and settings.rescale != "No":
        raise JobError(f"apply method Subtract with rescale {settings.rescale}: the rescaled function (>= 1) is subtracted "
                       "in 0..1 units and blackens every image; use --rescale No")
    if apply_method == "Divide" and settings.smoothing == "Splines" and settings.rescale != "Yes":
        raise JobError(f"apply method Divide with smoothing Splines and rescale {settings.rescale}: the spline function is a "
                       "zero-mean background (negative in places) and dividing by it blackens the images; use --apply-method Subtract")


def check_resize(settings, groups, passes) -> None:
    """Refuse, before anything is written, images that the resize factor shrinks to nothing."""
    if settings is None or settings.resize_factor == 1 or "calc" not in passes:
        return
    from gpuillum.filters.resample import cellprofiler_resize_shape

    for group in groups:
        shape = group.reader.shape
        try:
            cellprofiler_resize_shape(shape, settings.resize_factor)
        except ValueError:
            raise JobError(f"{group.records[0].path}: images of {group.plate}/{group.channel} are {shape[0]}x{shape[1]}, "
                           f"too small for resize factor {settings.resize_factor:g} (it leaves no pixel on an axis); "
                           "use a larger resize factor or 1") from None


def default_apply_method(settings) -> str:
    """Subtract a background, divide by anything else: a Background function (block minima) and a
    Splines one (a zero-mean background fit, cellprofiler.md 4.5) are subtracted, a Regular one divides."""
    subtract = settings is not None and (settings.intensity == "Background" or settings.smoothing == "Splines")
    return "Subtract" if subtract else "Divide"


def supported_dtypes(background=None) -> tuple[str, ...]:
    """The image dtypes a job corrects: those of gpuillum.correct (uint8, uint16, float32, float64),
    without float64 when a per-image ``background`` is subtracted (its median and top-hat filters
    take the others)."""
    from gpuillum._checks import ORDER_DTYPES
    from gpuillum.correct import IMAGE_DTYPES

    return tuple(np.dtype(d).name for d in (IMAGE_DTYPES if background is None else ORDER_DTYPES))


def _reason(error: BaseException, path: Path) -> str:
    """``error``'s one-line message without a leading "<path>: " that the caller already names."""
    return one_line(error).removeprefix(f"{path}: ")


def one_line(error: BaseException) -> str:
    """The first line of an error's message (KeyError's argument unquoted), or its type's name."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = str(text).strip()
    return text.splitlines()[0] if text else type(error).__name__


def default_threads() -> int:
    """Decode/write threads per process: the CPU count, between 2 and 16."""
    return max(2, min(16, os.cpu_count() or 2))


# ----------------------------------------------------------------------------- discovery


def plan_plate(input_dir, *, pattern=None, layout=None, loaddata=None, ignore_unmatched=False, dtypes=None):
    """Discover the images of INPUT (nothing computed); returns gpuillum.inputs.discovery.Plan.

    Images of a dtype outside ``dtypes`` (default: ``supported_dtypes()``) are left out as problems,
    so ``gpuillum plan`` reports them and a job refuses (or skips) them before reading any pixel.
    """
    from gpuillum.inputs.discovery import discover

    try:
        input_dir = Path(check_path(input_dir, "INPUT"))
    except TypeError as error:
        raise JobError(str(error)) from None
    if not input_dir.is_dir():
        raise JobError(f"{input_dir}: input folder does not exist or is not a directory")
    try:
        plan = discover(input_dir, pattern=pattern, layout=layout, loaddata=loaddata, ignore_unmatched=ignore_unmatched)
    except (ValueError, KeyError, OSError) as error:
        raise JobError(one_line(error)) from None
    _leave_out_unsupported(plan, dtypes or supported_dtypes())
    return plan


def few_images_warning(plate: str, channel: str, count: int) -> str:
    """Why a function averaged over fewer than ``MIN_IMAGES_ALL`` images is not to be trusted."""
    return (f"plate {plate}, channel {channel}: only {count} images; an illumination function "
            f"from so few images follows the cells, not the illumination (use {MIN_IMAGES_ALL} or more)")


def plan_warnings(plan) -> list[str]:
    """What ``gpuillum plan`` warns of before a job: (plate, channel) groups too small for a function."""
    return [few_images_warning(plate, channel, len(records))
            for (plate, channel), records in plan.groups().items() if len(records) < MIN_IMAGES_ALL]


def plan_command(input_dir, pattern=None, layout=None, loaddata=None, ignore_unmatched=False) -> str:
    """The ``gpuillum plan`` command line, quoted for a POSIX shell, that discovers what a job with
    these discovery options does."""
    import shlex

    words = ["gpuillum", "plan", str(input_dir)]
    for option, value in (("--pattern", pattern), ("--layout", layout), ("--loaddata", loaddata)):
        if value is not None:
            words += [option, str(value)]
    return shlex.join(words + ["--ignore-unmatched"] * bool(ignore_unmatched))


def _leave_out_unsupported(plan, dtypes) -> None:
    """Move the records of every plate x channel whose dtype is not in ``dtypes`` to the plan's problems."""
    unsupported = {group: dtype for group, (_shape, dtype) in plan.shapes.items() if dtype not in dtypes}
    if not unsupported:
        return
    every = supported_dtypes()
    for record in plan.records:
        dtype = unsupported.get((record.plate, record.channel))
        if dtype is not None:
            why = " with --background" if dtype in every else ""  # float64: corrected, but not by the background filters
            plan.problems.append(Problem(record.relpath, "unsupported-dtype", f"dtype {dtype} is not supported{why}; expected one of "
                                         f"{', '.join(dtypes)}"))
    plan.records = [r for r in plan.records if (r.plate, r.channel) not in unsupported]


# ----------------------------------------------------------------------------- Dask tasks


def _accumulate_task(records, settings, reader, device_spec, threads, on_error):
    """One batch on a worker: (partial accumulator or None, skipped, error message or None)."""
    from gpuillum.backend import resolve_device

    try:
        partial, skipped = accumulate_records(records, settings, resolve_device(device_spec), reader,
                                              threads=threads, on_error=on_error)
    except (ValueError, OutputProblem) as error:
        return None, [], str(error)
    return partial, skipped, None


def _apply_task(records, function, options, out_dir, reader, device_spec, threads, on_error):
    """One batch on a worker: (written files, skipped, error message or None)."""
    from gpuillum.backend import resolve_device

    try:
        written, skipped = apply_records(records, function, options, out_dir, reader, device=resolve_device(device_spec),
                                         threads=threads, on_error=on_error)
    except (ValueError, OutputProblem) as error:
        return [], [], str(error)
    return written, skipped, None


# ----------------------------------------------------------------------------- the job


def _same_run(earlier: dict, current: dict) -> bool:
    """True when a manifest's settings belong to the same run as ``current``: same INPUT and discovery,
    and the same method and apply settings (whichever passes), or an apply pass that corrects with the
    functions an earlier calc (or run) left in OUT/illum."""
    def without(settings, *keys):
        return {k: v for k, v in settings.items() if k not in keys}

    if without(earlier, "passes") == without(current, "passes"):
        return True
    same_input = without(earlier, "passes", "method", "apply", "functions") == without(current, "passes", "method", "apply", "functions")
    return same_input and "calc" in (earlier.get("passes") or []) and current.get("passes") == ["apply"]


@dataclass
class _Group:
    plate: str
    channel: str
    records: list
    reader: CheckedReader | None = None
    function_path: Path | None = None
    function: object = None
    function_sha: str = ""  # sha256 of function_path when this run wrote or verified it (pass 1)


class _Job:
    """State of one run: options, manifest, client, result; the passes are its methods."""

    def __init__(self, input_dir, out_dir, *, settings, apply_options, device, workers, scheduler, threads,
                 resume, on_error, progress, log, overwrite=False, uses_function=True):
        self.input_dir, self.out_dir = input_dir, out_dir
        self.uses_function = uses_function  # an illumination function is computed or applied: floats in [0, 1]
        self.overwrite = overwrite
        self.settings, self.apply_options = settings, apply_options
        self.device, self.workers, self.scheduler = device, workers, scheduler
        self.threads, self.resume, self.on_error = threads, resume, on_error
        self.progress, self.log = progress, log
        self.client = None
        self.result = RunResult(out_dir=out_dir, device=str(device), workers=workers)
        self.manifest = JobManifest()  # in memory until open_manifest: collects the files skipped before it
        self._last_save = 0.0
        self._skipped: set = set()

    # -- bookkeeping

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)

    def skip(self, relpath, reason: str) -> None:
        if relpath is not None and relpath in self._skipped:
            return
        self._skipped.add(relpath)
        self.result.skipped.append((relpath, reason))
        self.manifest.add_skipped(relpath or reason.split(": ", 1)[0], reason)  # never an empty path

    def problem(self, relpath, reason: str) -> None:
        """A bad input: fatal with on_error="fail", listed with "skip"."""
        if self.on_error != "skip":
            raise JobError(reason.removesuffix("; left out"))
        self.skip(relpath, reason)

    def save_manifest(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_save >= MANIFEST_SAVE_SECONDS:
            try:
                self.manifest.save(self.out_dir / MANIFEST_NAME)
            except OSError as error:
                raise JobError(f"{self.out_dir / MANIFEST_NAME}: {os_error_text(error)}") from None
            self._last_save = now

    def open_manifest(self, manifest_settings: dict, method: str) -> None:
        """Start this run's manifest: resume the earlier one, replace it (overwrite), or refuse to mix runs.

        An earlier manifest that lists no output (a run that failed before writing any) protects
        nothing: it is replaced, so the corrected rerun goes ahead. An unreadable one cannot say
        whose outputs illum/ and corrected/ hold, so they are kept unless ``overwrite``.
        """
        from gpuillum.io.manifest import collect_versions

        path = self.out_dir / MANIFEST_NAME
        earlier = None
        if path.is_file():
            try:
                earlier = JobManifest.load(path)
            except (ValueError, OSError) as error:
                if self.resume:
                    raise JobError(f"{path}: cannot resume from this manifest ({_reason(error, path)}); start again with "
                                   "--overwrite, which replaces illum/, corrected/ and the manifest") from None
                self.replace_unreadable_manifest(path, error)
        if earlier is not None and not earlier.files:
            earlier = None
        manifest_settings = json.loads(json.dumps(manifest_settings, default=str))  # as it reads back from JSON
        if self.resume and earlier is not None and earlier.settings != manifest_settings:
            raise JobError(f"{path}: --resume with different settings than the earlier run; use the same options or another -o OUT")
        if earlier is not None and self.overwrite:
            self.remove_earlier_outputs([*earlier.files, *(entry.get("path") for entry in earlier.orphaned if isinstance(entry, dict))])
            earlier = None
        elif earlier is not None and not self.resume and not _same_run(earlier.settings, manifest_settings):
            raise JobError(f"{self.out_dir}: holds the outputs of a different run (its {MANIFEST_NAME} has another INPUT or "
                           "other settings); use --overwrite to replace them, --resume with the same options, or another -o OUT")
        skipped = self.manifest.skipped
        self.manifest = earlier if earlier is not None else JobManifest()
        self.manifest.settings = manifest_settings
        self.manifest.method = method
        self.manifest.status, self.manifest.error, self.manifest.warnings = "running", None, []
        self.manifest.versions = collect_versions()
        self.manifest.devices = [str(self.device)]
        self.manifest.skipped = skipped
        self.manifest.timings["workers"] = self.scheduler or self.workers
        self.save_manifest(force=True)

    def set_aside_orphans(self, groups: list[_Group], passes) -> None:
        """Outputs the earlier run recorded whose inputs this run does not use (images deleted, moved
        out of INPUT or now skipped as unreadable, a channel gone) leave the manifest's ``files``
        for its ``orphaned`` list, so the manifest describes this run's outputs only. The files
        stay: their inputs may exist nowhere else any more."""
        from gpuillum.methods.cellprofiler.functions_io import function_filename

        sources = {record.relpath for group in groups for record in group.records}
        functions = set()
        if "calc" in passes:
            for group in groups:
                name = f"illum/{function_filename(group.plate, group.channel)}"
                functions.update((name, name.removesuffix(".npy") + ".png"))
        orphans = [(relpath, entry.get("source")) for relpath, entry in self.manifest.files.items()
                   if (entry.get("source") not in sources if entry["role"] == "corrected" else relpath not in functions)]
        if not orphans:
            return
        for relpath, source in orphans:
            del self.manifest.files[relpath]
            self.manifest.orphaned.append({"path": relpath, "source": source})
        self.warn(f"{len(orphans)} output(s) of the earlier run have no usable input in {self.input_dir} any more (e.g. "
                  f"{orphans[0][0]}); left in place, listed as \"orphaned\" in {MANIFEST_NAME}, and not in its files")
        self.save_manifest(force=True)

    def replace_unreadable_manifest(self, path: Path, error: BaseException) -> None:
        """An unreadable manifest: with ``overwrite`` remove it (and the LoadData CSV; it lists no
        outputs, so the new run writes over them); else refuse when illum/ or corrected/ exist (they
        may hold another run's outputs)."""
        if self.overwrite:
            self.remove_earlier_outputs(())
        elif any((self.out_dir / folder).exists() for folder in ("illum", "corrected")):
            raise JobError(f"{path}: unreadable ({_reason(error, path)}), so the outputs in {self.out_dir} may belong to another "
                           "run; use --overwrite to replace them (illum/, corrected/ and the manifest), or another -o OUT")

    def remove_earlier_outputs(self, files) -> None:
        """--overwrite: delete the files the earlier manifest lists that are gpuillum outputs by place
        and kind (under illum/ and corrected/, io.manifest.remove_outputs), its LoadData CSV and the
        manifest itself, and the folders left empty; nothing else in OUT is touched."""
        from gpuillum.io.manifest import remove_outputs

        try:
            remove_outputs(self.out_dir, files, fixed=(f"corrected/{LOADDATA_NAME}", MANIFEST_NAME))
        except OSError as error:
            raise JobError(f"{error.filename or self.out_dir}: cannot remove the earlier run's output ({error.strerror or error})") from None

    def finish(self, status: str, error: str | None = None) -> None:
        """Record the run's final status (complete or failed, with the one-line error) in the manifest."""
        self.manifest.status, self.manifest.error = status, error
        self.save_manifest(force=True)

    def warn(self, text: str) -> None:
        """A problem that does not stop the run: printed (unless quiet) and listed in the manifest."""
        self.result.warnings.append(text)
        self.manifest.warnings.append(text)
        if self.log is not None:
            self.log(f"warning: {text}")

    def intact(self, relpath: str, path: Path, inputs: str) -> bool:
        """--resume: the output at ``path`` is recorded, undamaged and made from the same ``inputs``."""
        return self.resume and self.manifest.is_complete(relpath, path, inputs)

    # -- groups

    def prepare_groups(self, plan, plan_command: str) -> list[_Group]:
        """Groups of usable records; discovery problems are fatal, or listed as skipped with on_error="skip".
        ``plan_command``: the ``gpuillum plan`` command that lists the same problems."""
        from gpuillum.methods.cellprofiler.functions_io import function_filename

        if plan.problems and self.on_error != "skip":
            more = len(plan.problems) - 1
            raise JobError(plan.problems[0].message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
                           + f"; see them all with: {plan_command}, or leave those files out with --on-error skip"
                           + (" (only the files not named: --ignore-unmatched)" if any(p.kind == "unmatched" for p in plan.problems) else ""))
        for problem in plan.problems:
            self.problem(problem.path, problem)
        groups = []
        for (plate, channel), records in plan.groups().items():
            outside = [r for r in records if Path(r.relpath).is_absolute() or ".." in Path(r.relpath).parts]
            for record in outside:
                self.problem(record.relpath, f"{record.path}: lies outside INPUT; its corrected copy would be written outside OUT/corrected")
            records = [r for r in records if r not in outside]
            if records and self.uses_function:  # checked before OUT exists, not when the function is saved
                try:
                    function_filename(plate, channel)
                except ValueError as error:
                    raise JobError(f"{records[0].relpath}: {error}; it names the illumination function file "
                                   "<plate>_Illum<channel>.npy") from None
            if records:
                shape, dtype = plan.shapes[(plate, channel)]
                groups.append(_Group(plate, channel, records, reader=CheckedReader(shape, dtype, unit_floats=self.uses_function)))
        if not groups:
            raise self.nothing_usable()
        return groups

    def nothing_usable(self) -> JobError:
        """The error of a run left with no image to process (all refused, or skipped, before or while reading)."""
        skipped = self.result.skipped
        why = f" ({len(skipped)} skipped, e.g. {skipped[0][1].removesuffix('; left out')})" if skipped else ""
        return JobError(f"{self.input_dir}: no usable images found{why}")

    # -- pass 1

    def calculate(self, group: _Group) -> None:
        from gpuillum.backend import to_numpy
        from gpuillum.methods.cellprofiler.functions_io import function_filename, load_function, save_function

        name = function_filename(group.plate, group.channel)
        path = self.out_dir / "illum" / name
        group.function_path = path
        inputs = input_stamp((record.relpath, record.path) for record in group.records)
        if self.intact(f"illum/{name}", path, inputs):
            group.function = load_function(path)
            group.function_sha = self.manifest.files[f"illum/{name}"]["sha256"]  # just verified against the file
            self.say(f"{group.plate}/{group.channel}: function {path} intact, reused")
            return
        started = time.perf_counter()
        total = self.accumulate(group)
        if total is None:
            self.problem(None, f"{group.plate}/{group.channel}: empty channel, every image was skipped")
            return
        if total.count < MIN_IMAGES_ALL:
            self.warn(few_images_warning(group.plate, group.channel, total.count))
        if self.client is not None and self.device.is_gpu:
            total.to(self.device)  # Dask partials arrive as NumPy: finalize on this job's device
        with self.device.activate():
            function = to_numpy(total.finalize(group.reader.shape))
        try:
            save_function(path, function)
            self.preview(group, function, inputs)
        except OSError as error:
            raise JobError(f"{error.filename or path}: {os_error_text(error)}") from None
        group.function = function
        group.function_sha = self.manifest.record_file(f"illum/{name}", path, "illum", inputs=inputs)["sha256"]
        self.manifest.timings[f"calc {group.plate}/{group.channel}"] = time.perf_counter() - started
        self.result.functions[(group.plate, group.channel)] = path
        self.save_manifest(force=True)

    def accumulate(self, group: _Group):
        label = f"calc  {group.plate}/{group.channel}"
        with Progress(len(group.records), label, enabled=self.progress) as bar:
            if self.client is None:
                def tick(count=1):
                    bar.update(count)
                    raise_if_stop_requested()

                total, skipped = accumulate_records(group.records, self.settings, self.device, group.reader,
                                                    threads=self.threads, on_error=self.on_error, tick=tick)
                for relpath, reason in skipped:
                    self.skip(relpath, reason)
                return total
            merged = OrderedMerge()
            batches = fixed_batches(group.records)
            # closing: tasks still queued are cancelled on an error while the client is still open
            with contextlib.closing(map_in_order(self.client, _accumulate_task, batches, self.settings, group.reader,
                                                 self.worker_device, 2, self.on_error)) as results:
                for index, (batch, (partial, skipped, error)) in enumerate(zip(batches, results)):
                    if error is not None:
                        raise JobError(error)
                    for relpath, reason in skipped:
                        self.skip(relpath, reason)
                    merged.push(index, partial)
                    bar.update(len(batch))
                    raise_if_stop_requested()
            return merged.result()

    def preview(self, group: _Group, function, inputs: str) -> None:
        from gpuillum.qc.figures import function_preview

        png = group.function_path.with_suffix(".png")
        function_preview(function, png, title=f"{group.plate} {group.channel}")
        self.manifest.record_file(png.relative_to(self.out_dir).as_posix(), png, "preview", inputs=inputs)

    # -- pass 2

    def check_functions(self, groups: list[_Group]) -> None:
        """Before pass 2 writes anything, refuse (one line naming the file) a function it cannot use:
        another shape than the images; a value that is not finite; for Divide a value <= 0 (a
        zero-mean Splines function is for Subtract); for Subtract every value >= 1 (a rescaled
        function: subtracted in 0..1 units it blackens every image)."""
        from gpuillum.correct import invalid_function_pixels

        method = self.apply_options.method
        for group in groups:
            function, path = group.function, group.function_path
            if function is None:  # every image of the group was skipped
                continue
            if tuple(function.shape) != group.reader.shape:
                raise JobError(f"{path}: function shape {tuple(function.shape)} does not match the images' {group.reader.shape}")
            bad = invalid_function_pixels(function, method)  # not finite; for Divide also zero or negative
            if method == "Divide":
                if bad:
                    raise JobError(f"{path}: {pixels_are(bad)} zero, negative or not finite; cannot divide by it (a zero-mean "
                                   "function, e.g. from Splines, is for --apply-method Subtract)")
                continue
            if bad:
                raise JobError(f"{path}: {pixels_are(bad)} not finite; cannot subtract it")
            if function.min() >= 1:
                raise JobError(f"{path}: every value is >= 1, a rescaled function; subtracting it in 0..1 units blackens "
                               "every image; use --apply-method Divide, or a function calculated with --rescale No")

    def apply(self, group: _Group) -> None:
        from gpuillum.io.manifest import file_sha256

        # a corrected image depends on its source and on the function it was divided by (hashed in
        # pass 1 when this run calculated or verified it; a given function file is hashed here)
        function_sha = ""
        if group.function_path is not None and group.function is not None:
            function_sha = group.function_sha or file_sha256(group.function_path)
        todo, stamps = [], {}
        for record in group.records:
            if record.relpath in self._skipped:  # already found bad in pass 1
                continue
            path = corrected_path(self.out_dir, record)
            stamps[record.relpath] = input_stamp([(record.relpath, record.path)], extra=function_sha)
            if self.intact(path.relative_to(self.out_dir).as_posix(), path, stamps[record.relpath]):  # the key write_corrected records
                self.result.reused.append(record.relpath)
            else:
                todo.append(record)
        started = time.perf_counter()

        def done(written: WrittenFile) -> None:
            self.result.written.append(written)
            # checksummed by the task that wrote it (in parallel), so recorded directly
            self.manifest.record_entry(written.output, written.sha256, written.size, "corrected", written.relpath,
                                       stamps[written.relpath])
            self.save_manifest()

        label = f"apply {group.plate}/{group.channel}"
        with Progress(len(todo), label, enabled=self.progress) as bar:
            if self.client is None:
                def tick(written):
                    done(written)
                    bar.update()
                    raise_if_stop_requested()

                try:
                    _written, skipped = apply_records(todo, group.function, self.apply_options, self.out_dir, group.reader,
                                                      device=self.device, threads=self.threads, on_error=self.on_error, done=tick)
                except OutputProblem as error:
                    raise JobError(str(error)) from None
                for relpath, reason in skipped:
                    self.skip(relpath, reason)
                    bar.update()
            else:
                # hash=False: a key of its own per group. Two groups with identical functions (e.g. flat ones)
                # would otherwise share a content-hashed key, which releasing the first group's future
                # can drop while the second group's tasks still need it ("lost dependencies")
                function = None if group.function is None else self.client.scatter(group.function, broadcast=True, hash=False)
                batches = fixed_batches(todo)
                with contextlib.closing(map_in_order(self.client, _apply_task, batches, function, self.apply_options,
                                                     self.out_dir, group.reader, self.worker_device, 2, self.on_error)) as results:
                    for batch, (written, skipped, error) in zip(batches, results):
                        if error is not None:
                            raise JobError(error)
                        for item in written:
                            done(item)
                        for relpath, reason in skipped:
                            self.skip(relpath, reason)
                        bar.update(len(batch))
                        raise_if_stop_requested()
        self.manifest.timings[f"apply {group.plate}/{group.channel}"] = time.perf_counter() - started
        self.save_manifest(force=True)

    def write_loaddata(self, groups: list[_Group]) -> Path | None:
        """OUT/corrected/load_data.csv: one row per image set, CellProfiler LoadData columns.

        Lists the corrected images (and, where the job has one, each channel's illumination
        function as FileName_Illum<channel> / PathName_Illum<channel>).
        """
        from gpuillum.inputs.loaddata import loaddata_rows, write_loaddata_csv

        skipped = {relpath for relpath, _ in self.result.skipped}
        records = [r for g in groups for r in g.records if r.relpath not in skipped]
        records = self.complete_sites(records, groups)
        if not records:
            return None
        rows = loaddata_rows(records, path_of=lambda record: corrected_path(self.out_dir, record))
        functions = {(g.plate, g.channel): g.function_path for g in groups if g.function_path is not None and g.function is not None}
        for row in rows:
            for channel in [key[len("FileName_"):] for key in row if key.startswith("FileName_")]:
                path = functions.get((row["Metadata_Plate"], channel))
                if path is not None:
                    row[f"FileName_Illum{channel}"] = path.name
                    row[f"PathName_Illum{channel}"] = str(path.absolute().parent)
        path = self.out_dir / "corrected" / LOADDATA_NAME
        try:
            write_loaddata_csv(path, rows)
        except OSError as error:
            raise JobError(f"{path}: {os_error_text(error)}") from None
        return path

    def complete_sites(self, records, groups) -> list:
        """The records of image sets that have every channel of their plate; the others are listed as
        skipped (a LoadData row with an empty FileName_ column breaks CellProfiler)."""
        channels = {}
        for group in groups:
            channels.setdefault(group.plate, set()).add(group.channel)
        sites = {}
        for record in records:
            sites.setdefault((record.plate, record.well, record.site, record.z, record.t), []).append(record)
        incomplete = set()
        for members in sites.values():
            missing = channels[members[0].plate] - {r.channel for r in members}
            if missing:
                for record in members:
                    incomplete.add(record.relpath)
                    self.skip(record.relpath, f"{record.relpath}: left out of {LOADDATA_NAME}: its site has no usable "
                                              f"{', '.join(sorted(missing))} image")
        return [r for r in records if r.relpath not in incomplete]

    @property
    def worker_device(self) -> str:
        """Device spec for Dask tasks: every GPU worker sees its own GPU as its first device."""
        return "gpu" if self.device.is_gpu else "cpu"


def _functions_for(groups, functions, out_dir, named) -> None:
    """Attach existing functions (apply-only): a folder of <plate>_Illum<channel> files or a mapping.

    A mapping's keys must name channels, or (plate, channel) pairs, that the file names of INPUT
    give (``named``, files with problems included), so a typo is not silently ignored."""
    from gpuillum.methods.cellprofiler.functions_io import function_filename, load_function

    if isinstance(functions, dict):
        names = set(named) | {channel for _plate, channel in named}
        unknown = [key for key in functions if (tuple(key) if isinstance(key, (list, tuple)) else key) not in names]
        if unknown:
            key = unknown[0]
            if isinstance(key, str):
                given, listed = f"channel {key!r} (--function {key}=FILE)", ", ".join(sorted({c for _p, c in named}))
            else:
                given, listed = f"plate and channel {key!r}", ", ".join(f"{plate}/{channel}" for plate, channel in sorted(named))
            raise JobError(f"function given for {given}: INPUT has no such channel; it has {listed}")
    for group in groups:
        if isinstance(functions, dict):
            path = functions.get((group.plate, group.channel)) or functions.get(group.channel)
            if path is None:
                raise JobError(f"functions: no illumination function given for {group.plate}/{group.channel}")
            path = Path(path)
        else:
            folder = Path(functions) if functions is not None else Path(out_dir) / "illum"
            stem = Path(function_filename(group.plate, group.channel)).stem
            candidates = [folder / f"{stem}.npy", folder / f"{stem}.mat"]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                where = "run calc first, or pass --functions DIR" if functions is None else f"looked for .npy and .mat in {folder}"
                raise JobError(f"{candidates[0]}: illumination function for {group.plate}/{group.channel} not found ({where})")
        try:
            group.function = load_function(path)
        except (ValueError, TypeError) as error:
            raise JobError(one_line(error)) from None
        group.function_path = path


def run_plate(input_dir, out_dir, *, settings=None, preset=None, pattern=None, layout=None, loaddata=None, ignore_unmatched=False,
              background: BackgroundSettings | None = None, apply_method: str | None = None, functions=None,
              passes=PASSES, device="auto", workers: int = 1, scheduler: str | None = None, threads: int | None = None,
              resume: bool = False, overwrite: bool = False, on_error: str = "fail", compression: str = "same",
              progress: bool | None = False, log=None) -> RunResult:
    """Run the plate job on INPUT, writing under OUT; returns a RunResult. See the module docstring.

    Method: ``settings`` (a CalculateSettings) or ``preset`` ("jump", ...); with neither and no
    ``background``, the jump preset. ``background`` alone subtracts a per-image background in a
    single pass. ``passes``: ("calc", "apply") the whole job, ("calc",) functions only, ("apply",)
    correct with existing ``functions`` (a folder of ``<plate>_Illum<channel>.npy|.mat`` files,
    default OUT/illum, or a mapping {channel or (plate, channel): path}). Discovery: ``pattern``
    (regex with named groups), ``layout`` (a built-in name) or ``loaddata`` (a CSV); ``ignore_unmatched``:
    the files the pattern or layout does not name are left alone instead of being problems.
    ``device``: auto|cpu|gpu|cuda:N; ``workers``/``scheduler``: see engine.cluster.
    OUT may hold unrelated files; if it holds the manifest of a different run (another INPUT or
    other settings) the job refuses unless ``resume`` (same settings) or ``overwrite`` (removes the
    outputs that manifest lists, files of gpuillum's kinds under illum/ and corrected/, its
    load_data.csv and manifest.json, nothing else).
    The manifest's ``status`` is running, then complete or failed (with ``error``).
    Raises JobError (one line) for any problem the user must fix.
    """
    if resume and overwrite:
        raise JobError("resume and overwrite: give one of them")
    from gpuillum.backend import resolve_device

    passes = tuple(passes)
    try:
        check_choice(on_error, "on_error", ON_ERROR)
        if not passes:
            raise ValueError(f"passes: expected a subset of {PASSES}, got {passes!r}")
        for name in passes:
            check_choice(name, "passes", PASSES)
        check_integer(workers, "workers")
        if scheduler is not None:
            check_scheduler_address(scheduler)
        input_dir, out_dir, loaddata, functions = check_job_arguments(
            input_dir, out_dir, settings=settings, background=background, threads=threads, loaddata=loaddata,
            functions=functions, pattern=pattern, layout=layout, compression=compression, log=log)
    except (TypeError, ValueError) as error:
        raise JobError(str(error)) from None
    input_dir, out_dir = check_paths(input_dir, out_dir)
    settings = resolve_settings(settings, preset)
    if settings is None and (background is None or passes == ("calc",)) and "calc" in passes:
        settings = resolve_settings(None, "jump")
    if passes == ("calc",) and not settings.is_all:
        raise JobError("calc: aggregation 'Each' computes a function per image while correcting; use run, or aggregation All")
    try:
        device = resolve_device(device)
        check_workers(workers, gpu=device.is_gpu, scheduler=scheduler)
    except (TypeError, ValueError) as error:
        raise JobError(str(error)) from None
    if apply_method is None:
        apply_method = default_apply_method(settings)
    if apply_method not in ("Divide", "Subtract"):
        raise JobError(f"apply_method: expected Divide or Subtract, got {apply_method!r}")
    check_method(settings, apply_method, passes)
    per_image = settings if (settings is not None and not settings.is_all and "calc" in passes) else None
    options = ApplyOptions(method=apply_method, background=background, per_image_settings=per_image, compression=compression)
    threads = threads or default_threads()

    started = time.perf_counter()
    plan = plan_plate(input_dir, pattern=pattern, layout=layout, loaddata=loaddata, ignore_unmatched=ignore_unmatched,
                      dtypes=supported_dtypes(background))
    discovery = {"pattern": pattern, "layout": layout, "loaddata": None if loaddata is None else str(loaddata)}
    if ignore_unmatched:  # only then: a manifest written before the option existed still matches
        discovery["ignore_unmatched"] = True
    # an illumination function is computed, or (apply alone) one is loaded: not a background alone
    uses_function = settings is not None if "calc" in passes else not (functions is None and background is not None)
    job = _Job(input_dir, out_dir, settings=settings, apply_options=options, device=device, workers=workers,
               scheduler=scheduler, threads=threads, resume=resume, on_error=on_error, progress=progress, log=log,
               overwrite=overwrite, uses_function=uses_function)
    method = describe_method(settings) if "calc" in passes else "existing illumination functions" if uses_function else ""
    if background is not None:
        method = "; ".join(filter(None, [method if settings is not None or "calc" not in passes else "",
                                         f"{background.method} background subtraction, radius {background.radius}"]))
    job.result.method = method
    groups = job.prepare_groups(plan, plan_command(input_dir, pattern, layout, loaddata, ignore_unmatched))  # refused before anything is written
    check_resize(settings, groups, passes)
    check_output_folders(input_dir, out_dir, [record for group in groups for record in group.records])
    if passes == ("apply",) and uses_function:
        _functions_for(groups, functions, out_dir, plan.named)
        job.check_functions(groups)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise JobError(f"{out_dir}: cannot create the output folder ({error.strerror or error})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise JobError(f"{out_dir}: output folder is not writable")
    manifest_settings = {
        "passes": list(passes),
        "method": None if settings is None else dataclasses.asdict(settings),
        "apply": {"method": apply_method, "compression": compression,
                  "background": None if background is None else dataclasses.asdict(background)},
        "functions": None if functions is None else str(functions) if not isinstance(functions, dict) else {str(k): str(v) for k, v in functions.items()},
        "input": str(input_dir.resolve()),
        "discovery": discovery,
    }
    try:
        with folder_lock(out_dir) as lock:  # one run at a time writes into OUT, its manifest included
            job.open_manifest(manifest_settings, method)
            job.set_aside_orphans(groups, passes)
            if lock is None:
                job.warn(f"{out_dir}: its file system cannot lock files, so a second run into it at the same time "
                         "would not be refused")
            try:
                _run_passes(job, groups, passes, settings)
                raise_if_stop_requested()  # a stop whose exception was swallowed after the last batch
                job.manifest.timings["total"] = time.perf_counter() - started
                job.finish("complete")
            except BaseException as error:  # Ctrl-C or an error: keep the record of every file finished so far, for --resume
                message = "interrupted" if isinstance(error, KeyboardInterrupt) else one_line(error)
                with contextlib.suppress(Exception):
                    job.finish("failed", message)
                raise
    except (FolderLocked, LinkInOut) as error:  # another run holds OUT; its lock file is a link
        raise JobError(str(error)) from None
    job.result.manifest = out_dir / MANIFEST_NAME
    job.result.timings = {"total": time.perf_counter() - started}
    return job.result


def _run_passes(job: _Job, groups, passes, settings) -> None:
    """Pass 1 for every group, then pass 2 for every group, then the LoadData CSV.

    Temporaries that a run killed outright left where runs write (OUT itself, illum/, corrected/)
    are removed first: this run holds OUT's lock, so no other run is writing them. Anything else
    in OUT (INPUT, another job's folder) is not looked at.
    """
    from gpuillum.io.atomic import remove_stale_temporaries

    out_dir, device, workers, scheduler = job.out_dir, job.device, job.workers, job.scheduler
    remove_stale_temporaries(out_dir, recursive=False)
    for folder in (out_dir / "illum", out_dir / "corrected"):
        if folder.is_dir() and not folder.is_symlink():
            remove_stale_temporaries(folder)
    job.say(f"device: {device} ({'GPU' if device.is_gpu else 'CPU'}), {len(groups)} plate x channel group(s), "
            f"{sum(len(g.records) for g in groups)} images, workers: {scheduler or workers}")
    with open_client(workers=workers, scheduler=scheduler, gpu=device.is_gpu) as client:
        job.client = client
        calculating = "calc" in passes and settings is not None and settings.is_all
        if calculating:
            for group in groups:
                job.calculate(group)
            if "apply" in passes:
                job.check_functions(groups)
        if "apply" in passes:
            for group in groups:
                if calculating and group.function is None:
                    continue  # every image of the group was skipped
                job.apply(group)
    produced = job.result.written or job.result.reused if "apply" in passes else any(g.function is not None for g in groups)
    if not produced:  # every image was skipped while being read: nothing was made, so the run failed
        raise job.nothing_usable()
    if "apply" in passes:
        job.result.loaddata = job.write_loaddata(groups)


def calc_plate(input_dir, out_dir, **options) -> RunResult:
    """Pass 1 only: the illumination functions under OUT/illum."""
    return run_plate(input_dir, out_dir, passes=("calc",), **options)


def apply_plate(input_dir, out_dir, *, functions=None, **options) -> RunResult:
    """Pass 2 only: correct INPUT with existing functions (default OUT/illum; CellProfiler .npy/.mat work)."""
    return run_plate(input_dir, out_dir, passes=("apply",), functions=functions, **options)
