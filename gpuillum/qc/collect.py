"""QC of a run's groups on a bounded sample of images: metrics, verdicts, pictures, the report.

Both ``gpuillum run`` (every run, into OUT/qc) and ``gpuillum qc`` use :func:`write_qc`. Per
group it reads at most SAMPLE_IMAGES images (evenly spaced through the group) before and, when
there are corrected images, after correction, and for plates the background level of at most
HEATMAP_IMAGES sites at low resolution for the plate heatmap, so the cost of QC does not grow with
the plate: about (SAMPLE_IMAGES + HEATMAP_IMAGES) x 2 image reads and under a second of
arithmetic per group. Everything lands in one folder: ``qc.json`` (the ``gpuillum qc --json``
format), the PNGs, and ``report.html`` with the pictures embedded.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from ..errors import UserError, one_line

SAMPLE_IMAGES = 16
HEATMAP_IMAGES = 96
HEATMAP_SIDE = 128


def sample(records: list, count: int) -> list:
    """At most ``count`` of ``records``, evenly spaced from the first to the last, in order."""
    if len(records) <= count:
        return list(records)
    picks = sorted(set(np.linspace(0, len(records) - 1, count).round().astype(int).tolist()))
    return [records[index] for index in picks]


def read_images(records, reader) -> tuple[list, list]:
    """(records read, images) of ``records``; unreadable ones are left out (QC never stops a run)."""
    from ..job.reading import read_records

    skipped: list = []
    pairs = list(read_records(records, reader, "skip", skipped))
    return [record for record, _image in pairs], [image for _record, image in pairs]


def read_corrected(out_dir, records) -> list:
    """The corrected images of ``records`` under OUT/corrected (None for one that is missing)."""
    from ..io.stacks import read_planes
    from ..io.tiff import read_tiff
    from ..job.outdir import corrected_path

    images = []
    for record in records:
        path = corrected_path(out_dir, record.relpath)
        try:
            images.append(read_planes(path, [record.page])[0] if record.page is not None else read_tiff(path)[0])
        except (UserError, OSError):  # a missing or unreadable output: that image has no "after"
            images.append(None)
    return images


STEM_LIMIT = 96  # characters of a QC file's stem: room for its suffix within any file system's name limit


def safe_stem(key) -> str:
    """A file-name stem for a group key: its parts joined by "_", other characters replaced; a long
    one is cut and given a short hash of the whole, so two long keys never share a file."""
    import hashlib

    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", "_".join(str(part) for part in key if part is not None)).strip("-") or "group"
    if len(stem) <= STEM_LIMIT:
        return stem
    return f"{stem[:STEM_LIMIT - 9]}-{hashlib.sha256(stem.encode()).hexdigest()[:8]}"


def _levels(records, reader, out_dir) -> dict:
    """{"before": {(well, site): level}, "after": {...}} for a plate heatmap (low resolution)."""
    from .maps import image_maps, shrink

    chosen, raw = read_images(records, reader)
    after = read_corrected(out_dir, chosen) if out_dir is not None else [None] * len(chosen)
    levels: dict = {"before": {}, "after": {}}
    for record, image, corrected in zip(chosen, raw, after):
        key = (record.well, int(record.site) if str(record.site).isdigit() else 1)
        levels["before"][key] = image_maps(shrink(image, HEATMAP_SIDE)).level
        if corrected is not None:
            levels["after"][key] = image_maps(shrink(corrected, HEATMAP_SIDE)).level
    return levels


def group_qc_with_pictures(group, folder: Path, *, corrected_root=None, output=None, min_images=None,
                           estimated_images=None, background_of=None) -> tuple[dict, list]:
    """One group's QC (gpuillum.qc.group.group_qc) on its sample, and the PNGs written for it.

    ``background_of(image, model)``: the background a background method subtracted from one raw
    image (None: not a background method); with corrected images, the middle one of the sample is
    drawn before / background / after with a profile across them (``<group>_background.png``)."""
    import dataclasses

    from . import figures
    from .group import group_qc
    from .plate import has_layout

    records = sample(group.records, SAMPLE_IMAGES)
    chosen, raw = read_images(records, group.reader)
    after = read_corrected(corrected_root, chosen) if corrected_root is not None else None
    if after is not None and any(image is None for image in after):
        keep = [index for index, image in enumerate(after) if image is not None]
        chosen, raw, after = [chosen[i] for i in keep], [raw[i] for i in keep], [after[i] for i in keep]
        after = after or None
    model = group.model
    if model is not None and model.info.get("images") is None and estimated_images is not None:
        model = dataclasses.replace(model, info={**model.info, "images": estimated_images})
    qc = group_qc(group.label, raw, after, names=[r.name for r in chosen], model=model, output=output,
                  min_images=min_images, group_size=len(group.records))
    if model is not None and "auto" in model.info:
        qc["auto"] = model.info["auto"]
    stem = safe_stem(group.key)
    pictures = []
    if after:
        index = len(raw) // 2
        pictures.append(folder / f"{stem}_before_after.png")
        figures.before_after(raw[index], after[index], pictures[-1], title=f"{group.label}: {chosen[index].name}")
        background = None if background_of is None else background_of(raw[index], group.model)
        if background is not None:
            from ..backend import to_numpy

            pictures.append(folder / f"{stem}_background.png")
            figures.background_figure(raw[index], to_numpy(background), after[index], pictures[-1],
                                      title=f"{group.label}: {chosen[index].name}")
    if model is not None and (model.flatfield is not None or model.darkfield is not None):
        pictures.append(folder / f"{stem}_model.png")
        figures.model_figure(model, pictures[-1], title=f"{group.label}: model")
    before, measured_after = qc["_measured"]
    pictures.append(folder / f"{stem}_profiles.png")
    figures.profiles_figure(before, measured_after, pictures[-1], title=f"{group.label}: background profiles")
    keys = [(r.well, r.site) for r in group.records]
    if has_layout(keys):
        levels = _levels(sample(group.records, HEATMAP_IMAGES), group.reader, corrected_root)
        if levels["before"]:
            pictures.append(folder / f"{stem}_plate.png")
            figures.plate_heatmap(levels, pictures[-1], title=f"{group.label}: background per site")
    return qc, pictures


def write_qc(groups, folder, *, title: str, corrected_root=None, outputs: dict | None = None, min_images=None,
             estimated: bool = False, intro: str = "", say=None, background_of=None) -> tuple[list, Path]:
    """QC every group (see the module docstring) into ``folder``; returns (the groups' QC, report.html).

    ``outputs``: {group label: OutputStats.to_dict()}; ``estimated``: the models were estimated
    from the groups' images (their count is then known even when the model does not say it);
    ``background_of``: see :func:`group_qc_with_pictures`.
    """
    from .report import write_json, write_report

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results, pictures = [], {}
    for group in groups:
        if not group.records:
            continue
        try:
            qc, files = group_qc_with_pictures(group, folder, corrected_root=corrected_root,
                                               output=(outputs or {}).get(group.label), min_images=min_images,
                                               estimated_images=len(group.records) if estimated else None,
                                               background_of=background_of)
        except UserError as error:  # images QC cannot measure (e.g. a few pixels wide): said, never a failed run
            qc, files = unmeasured(group.label, one_line(error)), []
        results.append(qc)
        pictures[group.label] = files
        if say is not None:
            say(summary_line(qc))
    elapsed = time.perf_counter() - started
    write_json(folder / "qc.json", results, seconds=round(elapsed, 3))
    report = write_report(folder / "report.html", title, results, pictures, intro=intro)
    return results, report


def unmeasured(label: str, reason: str) -> dict:
    """The QC entry of a group whose images could not be measured, and why."""
    why = f"not measured: {reason}"
    return {"group": label, "needed": None, "worked": None, "evidence": {"needed": why, "worked": why}, "flags": [],
            "metrics": {}}  # the report and the manifest show the reason; there is nothing to draw


def summary_line(qc: dict) -> str:
    """One line: the group, correction needed?, worked?, with the evidence."""
    def word(value):
        return "unknown" if value is None else "yes" if value else "no"

    line = f"qc {qc['group']}: correction needed: {word(qc['needed'])} ({qc['evidence']['needed']})"
    if qc["worked"] is not None:
        line += f"; worked: {word(qc['worked'])} ({qc['evidence']['worked']})"
    if "auto" in qc:
        line += f"; method auto chose {qc['auto']['why']}"
    return line


def run_qc(run) -> None:
    """Every run's QC (gpuillum.job.pipeline.Run): OUT/qc with the report, the verdicts in the run's
    result, manifest (``qc``, per group) and log, each problem a warning."""
    started = time.perf_counter()
    spec = run.spec
    outputs = {group.label: group.stats.to_dict() for group in run.groups if group.stats.pixels}
    method = spec.method
    background_of = None if method is None else lambda image, model: method.background(spec.settings, image, model)
    results, report = write_qc(run.groups, run.out.path / "qc", title=f"gpuillum QC: {spec.input.name}",
                               corrected_root=run.out.path if spec.corrects else None, outputs=outputs,
                               min_images=run.min_images, estimated=spec.estimates, say=run.say,
                               intro=f"method: {run.result.method or 'none'}; input: {spec.input}",
                               background_of=background_of)
    for qc in results:
        verdict = {"needed": qc["needed"], "worked": qc["worked"], "evidence": qc["evidence"],
                   "flags": [flag["text"] for flag in qc["flags"]], **({"auto": qc["auto"]} if "auto" in qc else {})}
        entry = run.out.manifest.qc.setdefault(qc["group"], {})
        entry.update(verdict)
        run.result.qc[qc["group"]] = entry
        for flag in qc["flags"]:
            run.warn(f"{qc['group']}: PROBLEM: {flag['text']}")
    seconds = time.perf_counter() - started
    run.out.manifest.timings["qc"] = seconds
    run.say(f"qc report: {report} ({seconds:.1f} s)")
