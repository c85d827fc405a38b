"""``gpuillum demo``: a synthetic plate with known illumination, corrected end to end and scored.

Writes OUT/plate (the synthetic images and their ground truth), OUT/results (the job's outputs)
and OUT/before_after.png, and returns a short report: where things are, how close each recovered
function is to the true flat field, and the flat-field CV before and after correction.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

ROW_LETTERS = "BCDEFGHIJKLMNO"
WELLS_PER_ROW = 12


def demo_wells(count: int) -> tuple[str, tuple[int, ...]]:
    """Rows and columns for ``count`` wells: one row of up to 12 wells, more rows of 12 beyond that."""
    columns = min(count, WELLS_PER_ROW)
    rows = math.ceil(count / WELLS_PER_ROW)
    if rows > len(ROW_LETTERS):
        raise ValueError(f"wells: at most {len(ROW_LETTERS) * WELLS_PER_ROW}, got {count}")
    return ROW_LETTERS[:rows], tuple(range(2, 2 + columns))


def run_demo(out, *, shape=(512, 512), wells: int = 6, sites: int = 3, seed: int = 0, channels=("DNA", "Actin"),
             **job_options) -> str:
    """Make the plate, run the jump-preset job on it, score it; returns the report text."""
    import numpy as np

    from gpuillum.io.tiff import read_tiff
    from gpuillum.qc.figures import before_after
    from gpuillum.qc.metrics import compare_to_truth, correction_report
    from gpuillum.synthetic import make_synthetic_plate

    from .job import run_plate

    out = Path(out)
    rows, cols = demo_wells(wells)
    started = time.perf_counter()
    plate = make_synthetic_plate(out / "plate", plate="DEMO", rows=rows, cols=cols, sites=sites, channels=channels,
                                 shape=tuple(shape), seed=seed)
    made = time.perf_counter() - started
    result = run_plate(out / "plate", out / "results", preset="jump", layout="gpuillum", **job_options)
    lines = [f"synthetic plate: {len(plate.images)} images {shape[0]}x{shape[1]} {plate.dtype} under {out / 'plate'} ({made:.1f} s)",
             f"corrected images: {out / 'results' / 'corrected'}  (job {result.timings['total']:.1f} s on {result.device})",
             f"illumination functions: {out / 'results' / 'illum'}"]
    first = None
    for channel in plate.channels:
        function = np.load(result.functions[(plate.plate, channel)])
        score = compare_to_truth(function, plate.flat(channel))
        paths = [p for p, key in zip(plate.images, plate.keys) if key.channel == channel]
        before = [read_tiff(p)[0] for p in paths]
        after = [read_tiff(out / "results" / "corrected" / p.relative_to(out / "plate"))[0] for p in paths]
        report = correction_report(before, after)
        lines.append(f"  {channel}: recovered vs true flat field r = {score['pearson_r']:.3f}, mean |rel. error| = "
                     f"{score['mean_rel_error']:.3f}, max = {score['max_rel_error']:.3f}; flat-field CV "
                     f"{report['cv_before']:.3f} -> {report['cv_after']:.3f}")
        if first is None:
            first = (before[0], after[0])
    picture = out / "before_after.png"
    before_after(first[0], first[1], picture)
    lines.append(f"before/after picture: {picture}")
    return "\n".join(lines)
