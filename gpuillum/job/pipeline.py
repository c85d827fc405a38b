"""The run as a pipeline: plan -> check -> estimate -> correct -> index, under OUT's lock.

:func:`run` takes a checked RunSpec (gpuillum.job.spec). It discovers the inputs and refuses,
before OUT exists, everything it can know is wrong (inputs, options, models to apply); then,
holding OUT's lock, it opens the manifest, estimates one model per group when the method has a
group or series scope (pass 1), corrects and writes every image (pass 2), writes the LoadData CSV,
and records what the output dtype cast lost per group. The manifest's ``status`` is running, then
complete or failed (with the one-line ``error``); every output is recorded as it completes, so
``--resume`` finishes a crashed run.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError, one_line
from .groups import MIN_IMAGES, files_in_order, group_key, make_groups
from .outdir import (
    MANIFEST_NAME,
    MODEL_FOLDER,
    OutDir,
    check_output_folders,
    check_paths,
    create_out,
    remove_stale_temporaries,
)
from .spec import JobError, RunSpec


@dataclass
class RunResult:
    """What a run did: where things are, what was written, reused, skipped, and how long."""

    out_dir: Path
    device: str
    workers: int
    functions: dict = field(default_factory=dict)  # group key -> Path of the saved model
    written: list = field(default_factory=list)  # WrittenFile for each file corrected now
    reused: list = field(default_factory=list)  # relpaths found complete by --resume
    skipped: list = field(default_factory=list)  # (image name, reason)
    manifest: Path | None = None
    loaddata: Path | None = None
    timings: dict = field(default_factory=dict)
    method: str = ""  # the effective method
    warnings: list = field(default_factory=list)
    qc: dict = field(default_factory=dict)  # group label -> what the output dtype cast lost


IMAGE_DTYPES = ("uint8", "uint16", "float32", "float64")


def accepted_dtypes(spec: RunSpec) -> tuple[str, ...]:
    """The image dtypes a run takes: every dtype gpuillum corrects, less those its method or its
    per-image background refuse."""
    return tuple(d for d in IMAGE_DTYPES if all(d in method.input_dtypes(settings) for method, settings in spec.stages))


def plan_inputs(input_path, discovery, dtypes=IMAGE_DTYPES, why: str = ""):
    """Discover the images of INPUT (nothing computed); returns gpuillum.inputs.records.Plan.

    Images of a dtype outside ``dtypes`` are left out as problems (``why`` says which option
    refuses them), so ``gpuillum plan`` reports them and a run refuses (or skips) them before
    reading any pixel.
    """
    from ..inputs.discovery import discover
    from ..inputs.records import Problem

    input_path = Path(input_path)
    if not (input_path.is_dir() or input_path.is_file()):
        raise JobError(f"{input_path}: input folder or image does not exist")
    try:
        plan = discover(input_path, pattern=discovery.pattern, layout=discovery.layout, loaddata=discovery.loaddata,
                        ignore_unmatched=discovery.ignore_unmatched)
    except (UserError, OSError) as error:
        raise JobError(one_line(error)) from None
    unsupported = {group: dtype for group, (_shape, dtype) in plan.shapes.items() if dtype not in dtypes}
    for record in plan.records:
        dtype = unsupported.get((record.plate, record.channel))
        if dtype is not None:
            reason = why if dtype in IMAGE_DTYPES else ""
            plan.problems.append(Problem(record.name, "unsupported-dtype", f"dtype {dtype} is not supported{reason}; "
                                         f"expected one of {', '.join(dtypes)}"))
    plan.records = [r for r in plan.records if (r.plate, r.channel) not in unsupported]
    return plan


class Run:
    """One run's state: its spec, OUT, the result, the executor; what every pass reports through."""

    def __init__(self, spec: RunSpec):
        self.spec = spec
        self.result = RunResult(out_dir=spec.out, device=str(spec.device), workers=spec.workers)
        self.out = OutDir(spec.out, resume=spec.resume, overwrite=spec.overwrite, warn=self.warn)
        self.executor = None
        self.corrections = None
        self.groups: list = []
        self.group_of: dict = {}
        self.min_images = getattr(spec.method, "min_images", None) or MIN_IMAGES
        self._skipped: set = set()

    # -- reporting

    def say(self, text: str) -> None:
        if self.spec.log is not None:
            self.spec.log(text)

    def warn(self, text: str) -> None:
        """A problem that does not stop the run: printed (unless quiet) and listed in the manifest."""
        self.result.warnings.append(text)
        self.out.manifest.warnings.append(text)
        self.say(f"warning: {text}")

    def skip(self, name, reason) -> None:
        """Leave an image (or, ``name`` None, a group) out and say why, once."""
        if name is not None and name in self._skipped:
            return
        self._skipped.add(name)
        self.result.skipped.append((name, reason))
        subject = name or getattr(reason, "subject", None) or str(reason).split(": ", 1)[0]  # never an empty path
        self.out.manifest.add_skipped(subject, str(reason))

    def problem(self, name, reason) -> None:
        """A bad input: fatal with on_error="fail", listed with "skip"."""
        if self.spec.on_error != "skip":
            raise JobError(getattr(reason, "message", str(reason)))
        self.skip(name, reason)

    def nothing_usable(self) -> JobError:
        """The error of a run left with no image to process (all refused, or skipped, before or while reading)."""
        skipped = self.result.skipped
        why = f" ({len(skipped)} skipped, e.g. {getattr(skipped[0][1], 'message', skipped[0][1])})" if skipped else ""
        return JobError(f"{self.spec.input}: no usable images found{why}")

    def progress_bar(self, total: int, label: str):
        from .progress import Progress

        return Progress(total, label, enabled=self.spec.progress)

    @staticmethod
    def check_stop() -> None:
        from .stopping import raise_if_stop_requested

        raise_if_stop_requested()

    # -- models

    def model_path(self, group) -> Path:
        from .models import model_suffix

        return self.out.path / MODEL_FOLDER / (group.model_stem() + model_suffix(self.spec.method, self.spec.settings))

    def model_sha(self, record) -> str:
        """The sha256 of the model file an image is corrected with ("" for none): part of its output's stamp."""
        from ..io.manifest import file_sha256

        group = self.group_of.get(group_key(record, self.scope))
        if group is None or group.model_path is None or group.model is None:
            return ""
        if not group.model_sha:  # a given model file (or BaSiCPy model folder: its files), hashed once
            path = group.model_path
            files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
            group.model_sha = "".join(file_sha256(file) for file in files)
        return group.model_sha

    @property
    def scope(self) -> str:
        spec = self.spec
        return "group" if spec.method is None else spec.method.scope(spec.settings)

    # -- the steps

    def prepare_groups(self, plan) -> None:
        """Groups of usable records; discovery problems are fatal, or listed as skipped with on_error="skip"."""
        from ..inputs.records import Problem

        spec = self.spec
        if plan.problems and spec.on_error != "skip":
            more = len(plan.problems) - 1
            raise JobError(plan.problems[0].message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
                           + f"; see them all with: {spec.discovery.plan_command(spec.input)}, or leave those files out "
                           "with --on-error skip"
                           + (" (only the files not named: --ignore-unmatched)" if any(p.kind == "unmatched" for p in plan.problems) else ""))
        for problem in plan.problems:
            self.problem(problem.path, problem)
        outside = [r for r in plan.records if Path(r.relpath).is_absolute() or ".." in Path(r.relpath).parts]
        for record in outside:
            self.problem(record.name, Problem(record.path, "outside", "lies outside INPUT; its corrected copy would be written "
                                              "outside OUT/corrected", left_out=False))
        plan.records = [r for r in plan.records if r not in outside]
        unit_floats = spec.method.unit_floats if spec.method is not None else spec.uses_models
        self.groups = make_groups(plan, self.scope, unit_floats)
        if not self.groups:
            raise self.nothing_usable()
        self.group_of = {group.key: group for group in self.groups}
        for group in self.groups:
            if spec.uses_models:
                try:
                    group.model_stem()
                except ValueError as error:
                    raise JobError(f"{group.records[0].relpath}: {error}; it names the illumination function file "
                                   "<plate>_Illum<channel>.npy") from None
            for method, settings in spec.stages:
                try:
                    method.check(settings, group.info)
                except UserError as error:
                    raise JobError(f"{group.records[0].path}: {one_line(error)}") from None

    def manifest_outputs(self) -> tuple[set, set]:
        """(the relpaths this run corrects, the OUT-relative model and preview paths it estimates)."""
        sources = {record.relpath for group in self.groups for record in group.records}
        models = set()
        if self.spec.estimates:
            from .models import part_paths

            for group in self.groups:
                path = self.model_path(group)
                models.update(p.relative_to(self.out.path).as_posix()
                              for p in (path, path.with_suffix(".png"), *part_paths(path, group).values()))
        return sources, models

    def passes(self) -> None:
        from .correct import Corrections, correct_group
        from .estimate import estimate_group
        from .executor import open_executor
        from .index import write_loaddata
        from .models import check_models

        spec = self.spec
        remove_stale_temporaries(self.out.path)
        count = sum(len(g.records) for g in self.groups)
        self.say(f"device: {spec.device} ({'GPU' if spec.device.is_gpu else 'CPU'}), {len(self.groups)} group(s), {count} images, "
                 f"workers: {spec.scheduler or spec.workers}")
        with open_executor(workers=spec.workers, scheduler=spec.scheduler, threads=spec.threads, device=spec.device) as executor:
            self.executor = executor
            if spec.estimates:
                for group in self.groups:
                    estimate_group(self, group)
                if spec.corrects:
                    check_models(self.groups)
            if spec.corrects:
                image_method = spec.method is not None and self.scope == "image"
                groups = [g for g in self.groups if not (spec.estimates and g.model is None)]  # every image of those was skipped
                self.corrections = executor.share(Corrections(
                    scope=self.scope, models={g.key: g.model for g in groups}, readers={g.key: g.reader for g in self.groups},
                    method=spec.method if image_method else None, settings=spec.settings if image_method else None,
                    background=spec.background, output_dtype=spec.output_dtype))
                for group, files in files_in_order(groups, self._skipped):
                    correct_group(self, group, files)
        produced = self.result.written or self.result.reused if spec.corrects else any(g.model is not None for g in self.groups)
        if not produced:  # every image was skipped while being read: nothing was made, so the run failed
            raise self.nothing_usable()
        if spec.corrects:
            self.result.loaddata = write_loaddata(self, self.groups)
            self.record_losses()
        if spec.qc:
            from ..qc.collect import run_qc

            run_qc(self)  # OUT/qc: metrics, verdicts, pictures, report.html (on a bounded sample per group)

    def record_losses(self) -> None:
        """What the output dtype cast lost, per group, into the result and the manifest, with a warning
        for each group over the thresholds (gpuillum.output_dtype)."""
        remedy = self.spec.method.remedy if self.spec.method is not None else ""
        for group in self.groups:
            if not group.stats.pixels:
                continue
            self.result.qc[group.label] = self.out.manifest.qc[group.label] = group.stats.to_dict()
            for line in group.stats.warnings(group.label, remedy):
                self.warn(line)


def run(spec: RunSpec) -> RunResult:
    """Run ``spec`` (see the module docstring); returns a RunResult. Raises JobError (one line)
    for anything the user must fix."""
    from ..io.run_lock import FolderLocked, folder_lock

    started = time.perf_counter()
    input_path, out_dir = check_paths(spec.input, spec.out)
    job = Run(spec)
    job.result.method = spec.method_text()
    why = ""
    if spec.background is not None and "float64" not in spec.background[0].input_dtypes(spec.background[1]):
        why = " with --background"
    elif spec.method is not None and "float64" not in spec.method.input_dtypes(spec.settings):
        why = f" by method {spec.method.name}"
    plan = plan_inputs(input_path, spec.discovery, accepted_dtypes(spec), why)
    job.prepare_groups(plan)  # refused before anything is written
    check_output_folders(input_path, out_dir, {record.relpath for group in job.groups for record in group.records})
    if spec.passes == ("apply",) and spec.uses_models:
        from .models import attach_existing, check_models

        attach_existing(job.groups, spec.functions, out_dir, plan.named, spec.apply_method)
        check_models(job.groups)
    create_out(out_dir)
    try:
        with folder_lock(out_dir) as lock:  # one run at a time writes into OUT, its manifest included
            job.out.open(spec.manifest_settings(), job.result.method, devices=[spec.device],
                         workers=spec.scheduler or spec.workers)
            job.out.set_aside_orphans(*job.manifest_outputs(), input_path)
            if lock is None:
                job.warn(f"{out_dir}: its file system cannot lock files, so a second run into it at the same time "
                         "would not be refused")
            try:
                job.passes()
                job.check_stop()  # a stop whose exception was swallowed after the last batch
                job.out.manifest.timings["total"] = time.perf_counter() - started
                job.out.finish("complete")
            except BaseException as error:  # Ctrl-C or an error: keep the record of every file finished so far, for --resume
                message = "interrupted" if isinstance(error, KeyboardInterrupt) else one_line(error)
                with contextlib.suppress(Exception):
                    job.out.finish("failed", message)
                raise
    except FolderLocked as error:
        raise JobError(str(error)) from None
    job.result.manifest = out_dir / MANIFEST_NAME
    job.result.timings = {"total": time.perf_counter() - started}
    return job.result

