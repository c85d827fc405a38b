"""``gpuillum demo``: a synthetic plate with known illumination, corrected end to end and scored.

Writes OUT/plate (the synthetic images and their ground truth), OUT/results (the job's outputs)
and OUT/before_after.png, replacing those of an earlier demo into the same OUT, and returns a
short report: where things are, how close each recovered function is to the true flat field, and
the flat-field CV before and after correction.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from ..errors import InvalidValue

ROW_LETTERS = "BCDEFGHIJKLMNO"
WELLS_PER_ROW = 12


def demo_wells(count: int) -> tuple[str, tuple[int, ...]]:
    """Rows and columns for ``count`` wells: one row of up to 12 wells, more rows of 12 beyond that."""
    columns = min(count, WELLS_PER_ROW)
    rows = math.ceil(count / WELLS_PER_ROW)
    if rows > len(ROW_LETTERS):
        raise InvalidValue(f"wells: at most {len(ROW_LETTERS) * WELLS_PER_ROW}, got {count}")
    return ROW_LETTERS[:rows], tuple(range(2, 2 + columns))


DEMO_WELLS, DEMO_SITES, DEMO_SHAPE = 24, 8, (384, 384)  # 192 images per channel: enough that cells average out
DEMO_MAX_SIDE = 4096  # a large camera's frame; at 4096^2 the default plate already holds 12 GiB of pixels
DEMO_MAX_SITES = 100  # fields per well of a dense screen


def check_demo_size(shape, wells: int, sites: int) -> None:
    """Refuse, before anything is written, a demo plate larger than a real one: each side of
    ``shape`` 16 to DEMO_MAX_SIDE, ``wells`` 1 to 168 (14 rows of 12), ``sites`` 1 to DEMO_MAX_SITES."""
    from gpuillum._checks import check_integer, check_shape

    rows, cols = check_shape(shape, "shape")
    if min(rows, cols) < 16 or max(rows, cols) > DEMO_MAX_SIDE:
        raise InvalidValue(f"shape: expected each side 16 to {DEMO_MAX_SIDE}, got {rows}x{cols}")
    demo_wells(check_integer(wells, "wells"))
    if check_integer(sites, "sites") > DEMO_MAX_SITES:
        raise InvalidValue(f"sites: at most {DEMO_MAX_SITES}, got {sites}")


def ideal_divide_function(flat, dark, background: float):
    """The best function a divide-only recipe (no darkfield term) can reach on a background pixel:
    ``dark + flat * background``, normalised to mean 1 (the camera offset is part of it)."""
    ideal = dark.astype("float64") + flat.astype("float64") * background
    return (ideal / ideal.mean()).astype("float32")


def _holds_an_earlier_demo(out: Path) -> bool:
    """Whether OUT/plate is an earlier demo's; ValueError naming it when it exists and is not."""
    plate = out / "plate"
    if not plate.exists():
        return False
    if not (plate / "truth" / "truth.json").is_file():
        raise InvalidValue(f"{plate}: exists and is not a gpuillum demo plate (no truth/truth.json); choose another demo OUT")
    return True


def clear_earlier_demo(out: Path) -> bool:
    """Remove the plate an earlier demo left in OUT (regenerating it is cheap and deterministic), so
    a demo of another shape or size never mixes with it; returns whether there was one.

    OUT/plate is removed only when it holds a demo's ``truth/truth.json``; any other OUT/plate is
    refused (ValueError naming it), never deleted.
    """
    import shutil

    plate = out / "plate"
    if not _holds_an_earlier_demo(out):
        return False
    try:
        shutil.rmtree(plate)
    except OSError as error:
        raise InvalidValue(f"{error.filename or plate}: cannot remove the earlier demo plate ({error.strerror or error})") from None
    return True


def run_demo(out, *, shape=DEMO_SHAPE, wells: int = DEMO_WELLS, sites: int = DEMO_SITES, seed: int = 0,
             channels=("DNA", "Actin"), **job_options) -> str:
    """Make the plate, run the jump-preset job on it, score it; returns the report text.

    Each recovered function is compared with the true flat field and with the ideal divide-only
    function (see :func:`ideal_divide_function`): the jump recipe divides raw images and has no
    darkfield term, so the second comparison is the fair one. The flat-field CV is measured on the
    signal above the true dark field (before: raw - dark; after: corrected - dark / function).
    """
    from gpuillum.io.run_lock import FolderLocked, folder_lock

    from gpuillum.job.spec import check_not_empty

    from gpuillum._checks import check_integer
    from gpuillum.backend import resolve_device
    from gpuillum.demo.synthetic import SyntheticModel

    from gpuillum.job.cluster import check_workers

    check_not_empty(out, "OUT")
    out = Path(out)
    # a bad size, seed or worker count or a foreign OUT/plate is refused before anything is written
    check_demo_size(shape, wells, sites)
    SyntheticModel(rows=demo_wells(wells)[0], sites=sites, channels=channels, shape=tuple(shape), seed=seed)  # checks the seed
    check_workers(check_integer(job_options.get("workers", 1), "workers"), gpu=resolve_device(job_options.get("device", "auto")).is_gpu,
                  scheduler=job_options.get("scheduler"))
    _holds_an_earlier_demo(out)
    try:
        (out / "results").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InvalidValue(f"{error.filename or out}: cannot create the demo folder ({error.strerror or error})") from None
    try:
        # one demo at a time in OUT: another one would delete this one's plate while it runs
        with folder_lock(out / "results"):
            return _make_run_and_score(out, shape, wells, sites, seed, channels, job_options)
    except FolderLocked as error:
        raise InvalidValue(str(error)) from None


def _make_run_and_score(out: Path, shape, wells: int, sites: int, seed: int, channels, job_options) -> str:
    """run_demo's work, under OUT's lock."""
    import json

    import numpy as np

    from gpuillum.io.tiff import read_tiff
    from gpuillum.qc.figures import before_after
    from gpuillum.qc.metrics import compare_to_truth, correction_report
    from gpuillum.demo.synthetic import make_synthetic_plate

    from gpuillum.job import run_plate

    rows, cols = demo_wells(wells)
    earlier = clear_earlier_demo(out)
    started = time.perf_counter()
    plate = make_synthetic_plate(out / "plate", plate="DEMO", rows=rows, cols=cols, sites=sites, channels=channels,
                                 shape=tuple(shape), seed=seed)
    made = time.perf_counter() - started
    truth = json.loads(Path(plate.truth_json).read_text())["channels"]
    # the results of an earlier demo into this OUT are replaced, not mixed with these
    result = run_plate(out / "plate", out / "results", preset="jump", layout="gpuillum", overwrite=earlier, **job_options)
    per_channel = len(plate.images) // len(plate.channels)
    lines = [f"synthetic plate: {len(plate.images)} images ({per_channel} per channel) {shape[0]}x{shape[1]} {plate.dtype} "
             f"under {out / 'plate'} ({made:.1f} s)",
             f"method: {result.method}",
             f"corrected images: {out / 'results' / 'corrected'}  (job {result.timings['total']:.1f} s on {result.device})",
             f"illumination functions: {out / 'results' / 'illum'} (PNG previews next to them)"]
    first = None
    for channel in plate.channels:
        function = np.load(result.functions[(plate.plate, channel)])
        dark = plate.dark(channel)
        ideal = ideal_divide_function(plate.flat(channel), dark, truth[channel]["background"])
        vs_flat = compare_to_truth(function, plate.flat(channel))
        vs_ideal = compare_to_truth(function, ideal)
        paths = [p for p, key in zip(plate.images, plate.keys) if key.channel == channel]
        raw = [read_tiff(p)[0] for p in paths]
        corrected = [read_tiff(out / "results" / "corrected" / p.relative_to(out / "plate"))[0] for p in paths]
        dark_after = dark / function
        report = correction_report([image - dark for image in raw], [image - dark_after for image in corrected],
                                   dark_before=0.0, dark_after=0.0)
        lines += [f"  {channel}: vs true flat field: r = {vs_flat['pearson_r']:.3f}, mean |rel. error| = "
                  f"{vs_flat['mean_rel_error']:.3f}, max = {vs_flat['max_rel_error']:.3f}",
                  f"  {channel}: vs the best a divide-only function can do (camera offset included): r = "
                  f"{vs_ideal['pearson_r']:.3f}, mean |rel. error| = {vs_ideal['mean_rel_error']:.3f}, "
                  f"max = {vs_ideal['max_rel_error']:.3f}",
                  f"  {channel}: flat-field CV of the signal above the camera offset: {report['cv_before']:.3f} -> "
                  f"{report['cv_after']:.3f}"]
        if first is None:
            first = (raw[0], corrected[0])
        del raw, corrected
    picture = out / "before_after.png"
    before_after(first[0], first[1], picture)
    lines.append(f"before/after picture: {picture}")
    return "\n".join(lines)
