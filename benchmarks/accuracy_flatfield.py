"""Accuracy of the flat-field method against known truth, beside the CellProfiler estimators and BaSiCPy.

Synthetic plates (gpuillum.methods.flatfield.plates: ``I = F * (b u_n + cells) + D``, Poisson +
read noise, uint16) in three conditions: "bright, dark 0" and "bright, dark 100" (background 300
counts), "dim, dark 400" (background 50); four vignetting shapes x ``--seeds``; image brightness
u_n uniform in 1 +- 10 %. Flat-field error: % RMS of the mean-normalised flat fields, border
(1/16 of the side) excluded; darkfield error: mean absolute error in counts (estimators without a
darkfield count as 0). Rows: gpuillum ``fit_flatfield`` (defaults), the ``jump`` preset
(CellProfiler's JUMP recipe), ``fit_polynomial(mean, 6, robust=True)``, and BaSiCPy 2.0
(``get_darkfield=True``, with and without ``sort_intensity``) when ``--basicpy-python`` names a
Python that has it (run as a subprocess: benchmarks/basicpy_runner.py).

Then BaSiC's demo stacks (GPUILLUM_DATA/basicpy_npz, or ``--data``) against PyBaSiC's reference
flat fields at 128^2.

Usage: ``python benchmarks/accuracy_flatfield.py [--basicpy-python /work/basicpy-venv/bin/python]``
(minutes) or ``--quick``. Writes benchmarks/results/accuracy-flatfield-<device>-<date>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_description, write_results  # noqa: E402
from gpuillum.filters.resample import resize_bilinear  # noqa: E402
from gpuillum.methods.flatfield import fit_flatfield  # noqa: E402
from gpuillum.methods.flatfield.plates import SHAPES, dark_error_counts, flat_error_percent, make_plate  # noqa: E402

CONDITIONS = {"bright, dark 0": (0.0, 300.0), "bright, dark 100": (100.0, 300.0), "dim, dark 400": (400.0, 50.0)}
BASICPY = {"basicpy": {"get_darkfield": True}, "basicpy-sort": {"get_darkfield": True, "sort_intensity": True}}
DEMOS = ("timelapse_nanog", "wsi_brain", "cell_culture")


def jump_flat(images):
    import gpuillum as gi

    function = np.asarray(gi.calculate(list(images), gi.preset("jump")), np.float64)
    return function / function.mean()


def polynomial_flat(images):
    import gpuillum as gi

    mean = np.mean(images, axis=0, dtype=np.float64).astype(np.float32)
    return np.asarray(gi.fit_polynomial(mean, 6, robust=True), np.float64)


def run_basicpy(python: str, jobs: dict, threads: int | None = None) -> dict:
    """Fit every job ({name: (images, settings)}) with BaSiCPy in ``python`` (torch on ``threads``
    threads, default its own); {name: (flat, dark, fit wall s, fit CPU s)}."""
    with tempfile.TemporaryDirectory() as folder:
        source, target = Path(folder) / "in.npz", Path(folder) / "out.npz"
        arrays = {}
        for name, (images, settings) in jobs.items():
            arrays[f"{name}_images"] = images
            arrays[f"{name}_settings"] = np.array(json.dumps(settings))
        np.savez(source, **arrays)
        env = dict(os.environ, **({"BASICPY_THREADS": str(threads)} if threads else {}))
        subprocess.run([python, str(ROOT / "benchmarks" / "basicpy_runner.py"), str(source), str(target)], check=True, env=env)
        with np.load(target) as out:
            return {name: (out[f"{name}_flatfield"], out[f"{name}_darkfield"], float(out[f"{name}_fit_s"]),
                           float(out[f"{name}_cpu_s"])) for name in jobs}


def synthetic(args) -> list[dict]:
    records = []
    for condition, (dark, background) in CONDITIONS.items():
        for kind in args.shapes:
            for seed in range(1, args.seeds + 1):
                plate = make_plate(args.images, (args.size, args.size), kind=kind, dark=dark, background=background, seed=seed)
                start = time.perf_counter()
                model = fit_flatfield(plate.images)
                fit_s = time.perf_counter() - start
                estimates = {"gpuillum": (model.flatfield, model.darkfield, fit_s),
                             "jump": (jump_flat(plate.images), None, None),
                             "polynomial": (polynomial_flat(plate.images), None, None)}
                if args.basicpy_python:
                    jobs = {name: (plate.images, settings) for name, settings in BASICPY.items()}
                    estimates.update({name: fit[:3] for name, fit in run_basicpy(args.basicpy_python, jobs).items()})
                for name, (flat, darkfield, seconds) in estimates.items():
                    records.append({"condition": condition, "shape": kind, "seed": seed, "method": name,
                                    "flat_error_percent": flat_error_percent(flat, plate.flatfield),
                                    "dark_error_counts": dark_error_counts(darkfield, plate.darkfield),
                                    "fit_s": seconds,
                                    "darkfield_status": model.info["darkfield"] if name == "gpuillum" else None})
                print(condition, kind, seed, {r["method"]: (round(r["flat_error_percent"], 2), round(r["dark_error_counts"], 1))
                                              for r in records[-len(estimates):]}, flush=True)
    return records


def _relative_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(100 * np.sqrt(np.mean((a / a.mean() - b / b.mean()) ** 2)))


def demos(args) -> list[dict]:
    folder = Path(args.data) / "basicpy_npz" if args.data else None
    if folder is None or not folder.is_dir():
        print("demo stacks skipped: give --data or set GPUILLUM_DATA", flush=True)
        return []
    references = np.load(folder / "reference_results.npz", allow_pickle=True)  # the reference's own (pickled) format
    records = []
    for name in DEMOS:
        images = np.load(folder / f"{name}.npz")["images"]
        reference = references[name].item() if name in references.files else None
        runs = {"gpuillum": dict(), "gpuillum median": dict(statistic="median"),
                "gpuillum, no darkfield": dict(darkfield=False), "gpuillum median, no darkfield": dict(darkfield=False, statistic="median")}
        if reference is not None:  # the reference's own darkfield (its offset is a clamp, docs/basic.md 8.2) as dark frames
            runs["gpuillum median, reference darkfield"] = dict(
                statistic="median", dark_frames=np.asarray(resize_bilinear(reference["darkfield"].astype(np.float32), images.shape[1:])))
        fitted = {}
        for label, kwargs in runs.items():
            model = fit_flatfield(images, **kwargs)
            fitted[label] = (resize_bilinear(model.flatfield, (128, 128)), model.info)
        if args.basicpy_python:
            small = np.stack([np.asarray(resize_bilinear(i, (128, 128))) for i in images]) if images.shape[1:] != (128, 128) else images
            jobs = {"basicpy-sort": (small, {"get_darkfield": True, "sort_intensity": True}),
                    "basicpy-sort, no darkfield": (small, {"get_darkfield": False, "sort_intensity": True})}
            for label, (flat, *_) in run_basicpy(args.basicpy_python, jobs).items():
                fitted[label] = (flat, {})
        for label, (flat, info) in fitted.items():
            target = "flatfield-flatonly" if "no darkfield" in label else "flatfield"
            record = {"stack": name, "method": label, "reference": target if reference else None,
                      "flat_vs_reference_percent": _relative_rms(flat, reference[target]) if reference else None,
                      "darkfield_offset": info.get("darkfield_offset"), "darkfield": info.get("darkfield")}
            if reference is None and "basicpy-sort" in fitted:
                twin = "basicpy-sort, no darkfield" if "no darkfield" in label else "basicpy-sort"
                record["flat_vs_basicpy_sort_percent"] = _relative_rms(flat, fitted[twin][0])
            records.append(record)
            print(name, label, {k: v for k, v in record.items() if k.endswith("percent")}, flush=True)
    return records


def summary_table(records: list[dict]) -> str:
    methods = sorted({r["method"] for r in records}, key=["gpuillum", "jump", "polynomial", "basicpy", "basicpy-sort"].index)
    lines = ["| Method | " + " | ".join(CONDITIONS) + " | s per image (fit) |", "|---" * (len(CONDITIONS) + 2) + "|"]
    for method in methods:
        cells = []
        for condition in CONDITIONS:
            rows = [r for r in records if r["method"] == method and r["condition"] == condition]
            flat = [r["flat_error_percent"] for r in rows]
            dark = [r["dark_error_counts"] for r in rows]
            cells.append(f"{np.mean(flat):.2f} (max {max(flat):.2f}) / {np.mean(dark):.1f} (max {max(dark):.1f})")
        times = [r["fit_s"] for r in records if r["method"] == method and r["fit_s"] is not None]
        images = records[0].get("images", 1)
        per_image = f"{np.median(times) / images:.4f}" if times else ""
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {per_image} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--images", type=int, default=24, help="images per plate (default 24)")
    parser.add_argument("--seeds", type=int, default=3, help="plates per shape and condition (default 3)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--basicpy-python", help="a Python with BaSiCPy 2.0 installed (e.g. /work/basicpy-venv/bin/python)")
    parser.add_argument("--data", default=os.environ.get("GPUILLUM_DATA"), help="the shared data folder (default $GPUILLUM_DATA)")
    parser.add_argument("--no-demos", action="store_true", help="skip BaSiC's demo stacks")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2 shapes, 1 seed, 8 images of 128^2")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.images, args.seeds, args.shapes = 128, 8, 1, ["gaussian", "cos4"]
    records = synthetic(args)
    for record in records:
        record["images"] = args.images
    table = summary_table(records)
    print(f"\nflat-field error % RMS / darkfield error counts, mean (max) over {len(args.shapes)} shapes x {args.seeds} seeds, "
          f"{args.images} images of {args.size}^2\n{table}")
    demo = [] if args.no_demos or args.quick else demos(args)
    payload = {"quick": args.quick, "machine": machine_description(), "size": args.size, "images": args.images,
               "seeds": args.seeds, "shapes": args.shapes, "brightness_spread": 0.1, "synthetic": records, "table": table,
               "demo_stacks": demo, "basicpy": bool(args.basicpy_python)}
    print(write_results("accuracy-flatfield", payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
