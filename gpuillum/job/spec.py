"""The run's specification: everything a run needs to know, checked once, before OUT is touched.

:func:`build_spec` takes the Python API's keywords (the CLI's options under the same names),
checks each with the CLI's messages, resolves the method (a registered name, CellProfiler
settings or a preset, or none) and returns a frozen :class:`RunSpec`. Nothing here reads images.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidValue, UserError, one_line

PASSES = ("calc", "apply")
ON_ERROR = ("fail", "skip")
MAX_THREADS = 16


class JobError(InvalidValue):
    """A problem the user must fix, as one line naming the file or option (CLI: exit code 2)."""


@dataclass(frozen=True)
class BackgroundSettings:
    """``--background median|tophat --background-radius R``: a per-image background subtracted
    after an illumination function (alone, it is the whole method). ``median`` is the fast
    downsampled median (gpuillum.median_background), ``tophat`` the white top-hat."""

    method: str
    radius: int

    def __post_init__(self):
        from .._checks import check_choice, check_radius

        check_choice(self.method, "background", ("median", "tophat"))
        check_radius(self.radius, "background_radius")

    def as_method(self):
        """(Method, settings) of the registry that compute this background."""
        from ..methods import get_method

        method = get_method(self.method)
        options = {"radius": self.radius, **({"downsample": "auto"} if self.method == "median" else {})}
        return method, method.settings_from_options(options)


@dataclass(frozen=True)
class Discovery:
    """How INPUT's images are named: a regex pattern, a built-in layout, a LoadData CSV, or none."""

    pattern: str | None = None
    layout: str | None = None
    loaddata: str | None = None
    ignore_unmatched: bool = False

    def manifest(self) -> dict:
        entry = {"pattern": self.pattern, "layout": self.layout, "loaddata": self.loaddata}
        if self.ignore_unmatched:  # only then: a manifest written before the option existed still matches
            entry["ignore_unmatched"] = True
        return entry

    def plan_command(self, input_path) -> str:
        """The ``gpuillum plan`` command line, quoted for a POSIX shell, that lists what this finds."""
        import shlex

        words = ["gpuillum", "plan", str(input_path)]
        for option, value in (("--pattern", self.pattern), ("--layout", self.layout), ("--loaddata", self.loaddata)):
            if value is not None:
                words += [option, str(value)]
        return shlex.join(words + ["--ignore-unmatched"] * bool(self.ignore_unmatched))


@dataclass(frozen=True)
class RunSpec:
    """A checked run: what to read, which method, which passes, where to write, how to execute.

    ``method``/``settings``: the registered method that estimates (group or series scope) or
    corrects each image (image scope), or None; ``background``: (method, settings) of a
    per-image background subtracted after it, or None; ``functions``: the existing models an
    apply-only run corrects with (a folder, or a mapping of channel or (plate, channel) to a
    file), applied with ``apply_method`` when they are CellProfiler functions.
    """

    input: Path
    out: Path
    method: object
    settings: object
    background: tuple | None
    passes: tuple
    functions: object
    apply_method: str
    discovery: Discovery
    output_dtype: str
    compression: str
    device: object
    workers: int
    scheduler: str | None
    threads: int
    resume: bool
    overwrite: bool
    on_error: str
    progress: bool | None
    log: object
    qc: bool = True  # write OUT/qc (gpuillum.qc.collect)

    @property
    def stages(self) -> list[tuple]:
        """(method, settings) of the method and of the per-image background, those the run has."""
        return [stage for stage in ((self.method, self.settings), self.background) if stage is not None and stage[0] is not None]

    @property
    def estimates(self) -> bool:
        """The run estimates models (pass 1) with a group or series method."""
        return "calc" in self.passes and self.method is not None and self.method.scope(self.settings) != "image"

    @property
    def corrects(self) -> bool:
        return "apply" in self.passes

    @property
    def uses_models(self) -> bool:
        """A model (function) is estimated or loaded, so float images must be in [0, 1] when it is a
        CellProfiler one; an image-scope method or a background alone needs none."""
        if self.estimates:
            return True
        return self.passes == ("apply",) and not (self.functions is None and self.background is not None)

    def method_text(self) -> str:
        """The effective method in one line (run summary and manifest)."""
        if self.method is not None and ("calc" in self.passes or self.method.scope(self.settings) == "image"):
            text = self.method.describe(self.settings)
        else:
            text = "existing illumination functions" if self.uses_models else ""
        if self.background is not None:
            method, settings = self.background
            text = "; ".join(filter(None, [text, method.describe(settings)]))
        return text

    def manifest_settings(self) -> dict:
        """What identifies the run in its manifest (a resume must match it)."""
        apply = {"method": self.apply_method, "compression": self.compression,
                 "background": None if self.background is None else {"method": self.background[0].name,
                                                                         **dataclasses.asdict(self.background[1])}}
        if self.output_dtype != "same":
            apply["output_dtype"] = self.output_dtype
        functions = self.functions
        settings = {
            "passes": list(self.passes),
            "method": None if self.method is None else self.method.manifest_settings(self.settings),
            "apply": apply,
            "functions": None if functions is None else {str(k): str(v) for k, v in functions.items()}
            if isinstance(functions, dict) else str(functions),
            "input": str(self.input.resolve()),
            "discovery": self.discovery.manifest(),
        }
        if self.method is not None and self.method.name != "cellprofiler":
            settings["method_name"] = self.method.name
        return settings


def default_qc() -> bool:
    """Whether a run writes OUT/qc when not told: yes, unless the environment's GPUILLUM_QC says
    0, no, off or false (a pipeline or test suite of many small runs that judges them otherwise)."""
    return os.environ.get("GPUILLUM_QC", "").strip().lower() not in ("0", "no", "off", "false")


def default_threads() -> int:
    """Decode/write threads per process: the CPU count, between 2 and 16."""
    return max(2, min(MAX_THREADS, os.cpu_count() or 2))


def check_not_empty(path, name: str) -> None:
    """Refuse an empty path string (often an unset shell variable): it would mean the current folder."""
    if isinstance(path, str) and not path.strip():
        raise JobError(f"{name}: expected a folder, got an empty path")


def as_path(value, name: str) -> Path:
    """``value`` (str, bytes as the file system encodes names, or os.PathLike) as a Path; a one-line
    JobError naming ``name`` for anything else or an empty path."""
    from .._checks import check_path

    try:
        value = check_path(value, name)
    except UserError as error:
        raise JobError(one_line(error)) from None
    check_not_empty(value, name)
    return Path(value)


def _method_and_settings(method, options, settings, preset, apply_method, background, passes):
    """(Method or None, its settings): a registered method by name with its options, CellProfiler's
    settings/preset, the jump preset by default, or none when a background alone is the method."""
    from ..methods import get_method
    from ..methods.cellprofiler.method import CellProfilerSettings, option_names
    from ..methods.cellprofiler.settings import check_settings

    if settings is not None and preset is not None:
        raise JobError("settings and preset: give one of them, not both")
    if settings is not None:
        try:
            check_settings(settings)
        except UserError as error:
            raise JobError(one_line(error)) from None
    chosen = get_method(method) if method is not None else None
    if chosen is not None and isinstance(options, chosen.Settings):  # the method's settings themselves
        return chosen, options
    if options is not None and not isinstance(options, dict):
        raise JobError(f"options: expected a dict of the method's settings (or its Settings), got {type(options).__name__}")
    cellprofiler = settings is not None or preset is not None or (apply_method is not None and "calc" in passes)
    if chosen is None and cellprofiler:
        chosen = get_method("cellprofiler")
    if chosen is None:
        if background is not None and passes != ("calc",) or "calc" not in passes:
            return None, None
        chosen = get_method("cellprofiler")
    if chosen.name != "cellprofiler":
        if cellprofiler:
            raise JobError(f"method {chosen.name}: settings, preset and apply_method are CellProfiler settings; "
                           "give the method's own options")
        return chosen, _settings(chosen, dict(options or {}))
    values = dict(options or {})
    if preset is not None:
        values["preset"] = preset
    if apply_method is not None:
        values["apply_method"] = apply_method
    if settings is not None:
        try:
            return chosen, CellProfilerSettings(settings, values.get("apply_method"))
        except (ValueError, TypeError) as error:
            raise JobError(option_names(one_line(error))) from None
    return chosen, _settings(chosen, values)


def _settings(method, values: dict):
    """``method``'s settings from option values, a one-line JobError if they are not valid."""
    try:
        return method.settings_from_options(values)
    except UserError as error:
        raise JobError(one_line(error)) from None


def build_spec(input_path, out_dir, *, method=None, options=None, settings=None, preset=None, pattern=None, layout=None,
               loaddata=None, ignore_unmatched=False, background=None, apply_method=None, functions=None, passes=PASSES,
               output_dtype="same", device="auto", workers=1, scheduler=None, threads=None, resume=False, overwrite=False,
               on_error="fail", compression="same", progress=False, log=None, qc=None) -> RunSpec:
    """Check every option of a run and resolve its method; a one-line JobError for the first bad one."""
    from .._checks import check_choice, check_instance, check_integer
    from ..backend import resolve_device
    from ..correct import APPLY_METHODS
    from ..io.tiff import COMPRESSION_CHOICES
    from ..output_dtype import OUTPUT_DTYPES
    from .cluster import check_scheduler_address, check_workers

    if resume and overwrite:
        raise JobError("resume and overwrite: give one of them")
    try:
        if not isinstance(passes, (list, tuple)) or not passes:
            raise JobError(f"passes: expected a subset of {PASSES}, got {passes!r}")
        passes = tuple(check_choice(name, "passes", PASSES) for name in passes)
        check_choice(on_error, "on_error", ON_ERROR)
        check_choice(output_dtype, "output_dtype", OUTPUT_DTYPES)
        if compression is not None and not (isinstance(compression, str) and compression.lower() in COMPRESSION_CHOICES):
            raise JobError(f"compression: expected one of {', '.join(map(repr, COMPRESSION_CHOICES))} or None, got {compression!r}")
        check_integer(workers, "workers")
        threads = default_threads() if threads is None else check_integer(threads, "threads")
        if scheduler is not None:
            check_scheduler_address(scheduler)
        if apply_method is not None:
            check_choice(apply_method, "apply_method", APPLY_METHODS)
        qc = default_qc() if qc is None else qc
        for name, flag in (("resume", resume), ("overwrite", overwrite), ("ignore_unmatched", ignore_unmatched), ("qc", qc)):
            if not isinstance(flag, bool):
                raise JobError(f"{name}: expected True or False, got {flag!r}")
        for name, value in (("pattern", pattern), ("layout", layout)):
            if value is not None and not isinstance(value, str):
                raise JobError(f"{name}: expected a str, got {type(value).__name__}")
        if background is not None:
            check_instance(background, "background", BackgroundSettings, " (e.g. BackgroundSettings('median', 25))")
        if log is not None and not callable(log):
            raise JobError(f"log: expected a callable taking one line of text, or None, got {type(log).__name__}")
        device = resolve_device(device)
        check_workers(workers, gpu=device.is_gpu, scheduler=scheduler)
    except UserError as error:
        raise JobError(one_line(error)) from None
    input_path, out_dir = as_path(input_path, "INPUT"), as_path(out_dir, "OUT")
    loaddata = None if loaddata is None else str(as_path(loaddata, "loaddata"))
    if isinstance(functions, dict):
        functions = {key: str(as_path(path, "functions")) for key, path in functions.items()}
    elif functions is not None:
        functions = str(as_path(functions, "functions"))
    chosen, method_settings = _method_and_settings(method, options, settings, preset, apply_method, background, passes)
    if chosen is not None and passes == ("calc",) and chosen.scope(method_settings) == "image":
        what = "aggregation 'Each' computes a function per image" if chosen.name == "cellprofiler" else \
            f"method {chosen.name} corrects each image on its own"
        raise JobError(f"calc: {what} while correcting; use run" + (", or aggregation All" if chosen.name == "cellprofiler" else ""))
    if chosen is not None:
        chosen.check_settings(method_settings, estimating="calc" in passes, correcting="apply" in passes)
    stage = background.as_method() if background is not None else None
    if stage is not None and chosen is not None and chosen.scope(method_settings) == "image" and chosen.name != "cellprofiler":
        raise JobError(f"background: method {chosen.name} already subtracts a per-image background; give one of them")
    cp_apply = getattr(method_settings, "apply_method", None)
    return RunSpec(
        input=input_path, out=out_dir, method=chosen, settings=method_settings, background=stage, passes=passes,
        functions=functions, apply_method=apply_method or cp_apply or "Divide",
        discovery=Discovery(pattern, layout, loaddata, ignore_unmatched),
        output_dtype=output_dtype, compression=compression, device=device, workers=workers,
        scheduler=scheduler, threads=threads, resume=resume, overwrite=overwrite, on_error=on_error, progress=progress, log=log,
        qc=qc)
