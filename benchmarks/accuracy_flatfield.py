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

Then a robustness grid of gpuillum's defaults alone: image sizes 96x128 to 512^2 x cells on 5,
15 and 30 % of the field x "bright, dark 100" and "dim, dark 400" x two shapes (``--no-grid``
skips it). Then BaSiC's demo stacks (GPUILLUM_DATA/basicpy_npz, or ``--data``): each fit's flat field against
PyBaSiC's reference of the same model at 128^2 (fitted without a darkfield when the fit has none,
with one otherwise; whole field and border excluded), cell_culture (no reference) against BaSiCPy
2.0 with sorting.

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
GRID_SIZES = ((96, 128), (128, 128), (256, 256), (512, 512))  # the robustness grid: image shapes ...
GRID_DENSITIES = (0.05, 0.15, 0.3)  # ... shares of the field covered by cells ...
GRID_CONDITIONS = ("bright, dark 100", "dim, dark 400")  # ... levels and offsets ...
GRID_SHAPES = ("cos4", "gaussian")  # ... and vignetting shapes (seed 1, ``--images`` images each)


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
                                    "darkfield_status": model.info["darkfield"] if name == "gpuillum" else None,
                                    "flatfield_statistic": model.info["flatfield_statistic"] if name == "gpuillum" else None})
                print(condition, kind, seed, {r["method"]: (round(r["flat_error_percent"], 2), round(r["dark_error_counts"], 1))
                                              for r in records[-len(estimates):]}, flush=True)
    return records


def grid(args) -> list[dict]:
    """gpuillum's defaults over image sizes x cell densities x conditions x shapes (one plate each):
    flat-field and darkfield error, the darkfield's verdict and the fit's own error estimate."""
    records = []
    for shape in GRID_SIZES:
        for density in GRID_DENSITIES:
            for condition in GRID_CONDITIONS:
                dark, background = CONDITIONS[condition]
                for kind in GRID_SHAPES:
                    plate = make_plate(args.images, shape, kind=kind, dark=dark, background=background, density=density, seed=1)
                    model = fit_flatfield(plate.images)
                    records.append({"shape": list(shape), "density": density, "condition": condition, "kind": kind,
                                    "flat_error_percent": flat_error_percent(model.flatfield, plate.flatfield),
                                    "dark_error_counts": dark_error_counts(model.darkfield, plate.darkfield),
                                    "darkfield_status": model.info["darkfield"],
                                    "flatfield_statistic": model.info["flatfield_statistic"]})
                    print("grid", shape, density, condition, kind, round(records[-1]["flat_error_percent"], 2),
                          round(records[-1]["dark_error_counts"], 1), model.info["darkfield"], flush=True)
    return records


def grid_table(records: list[dict]) -> str:
    """Markdown: per size and density, each condition's worst flat-field error (%) / darkfield error
    (counts) over the shapes, and the darkfield verdicts when not all "estimated"."""
    lines = ["| size | cells cover | " + " | ".join(GRID_CONDITIONS) + " |", "|---|---" + "|---" * len(GRID_CONDITIONS) + "|"]
    for shape in GRID_SIZES:
        for density in GRID_DENSITIES:
            cells = []
            for condition in GRID_CONDITIONS:
                rows = [r for r in records if tuple(r["shape"]) == shape and r["density"] == density and r["condition"] == condition]
                verdicts = sorted({r["darkfield_status"] for r in rows} - {"estimated"})
                cells.append(f"{max(r['flat_error_percent'] for r in rows):.2f} / {max(r['dark_error_counts'] for r in rows):.1f}"
                             + (f" ({', '.join(verdicts)})" if verdicts else ""))
            lines.append(f"| {shape[0]}x{shape[1]} | {100 * density:.0f} % | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _relative_rms(a, b, border: int = 0):
    """RMS difference (percent) of two flat fields, each normalised to mean 1 inside ``border``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    return float(100 * np.sqrt(np.mean((a / a.mean() - b / b.mean()) ** 2)))


def _agreement(flat, target) -> dict:
    """Whole-field and border-excluded (1/16 of the side, the synthetic plates' metric) relative RMS."""
    return {"full": _relative_rms(flat, target), "inner": _relative_rms(flat, target, flat.shape[0] // 16)}


DEMO_RUNS = {"gpuillum": {}, "gpuillum mean": {"statistic": "mean"}, "gpuillum median": {"statistic": "median"},
             "gpuillum, no darkfield": {"darkfield": False},
             "gpuillum mean, no darkfield": {"darkfield": False, "statistic": "mean"}}


def demos(args) -> list[dict]:
    """Fit BaSiC's demo stacks and compare each flat field with the reference of the same model: the
    reference fitted without a darkfield when the fit has none ("not identifiable" or off), the one
    fitted with a darkfield otherwise (docs/basic.md 8; both are reported). cell_culture has no
    reference: BaSiCPy 2.0 with sorting (same model) stands in when ``--basicpy-python`` is given."""
    folder = Path(args.data) / "basicpy_npz" if args.data else None
    if folder is None or not folder.is_dir():
        print("demo stacks skipped: give --data or set GPUILLUM_DATA", flush=True)
        return []
    references = np.load(folder / "reference_results.npz", allow_pickle=True)  # the reference's own (pickled) format
    records = []
    for name in DEMOS:
        images = np.load(folder / f"{name}.npz")["images"]
        reference = references[name].item() if name in references.files else None
        runs = dict(DEMO_RUNS)
        if reference is not None:  # the reference's own darkfield (its offset is a clamp, docs/basic.md 8.2) as dark frames
            runs["gpuillum median, reference darkfield"] = dict(
                statistic="median", dark_frames=np.asarray(resize_bilinear(reference["darkfield"].astype(np.float32), images.shape[1:])))
        fitted = {}
        for label, kwargs in runs.items():
            start = time.perf_counter()
            model = fit_flatfield(images, **kwargs)
            seconds = time.perf_counter() - start
            fitted[label] = (np.asarray(resize_bilinear(model.flatfield, (128, 128))), model.darkfield is not None, model.info, seconds)
        if args.basicpy_python:
            small = np.stack([np.asarray(resize_bilinear(i, (128, 128))) for i in images]) if images.shape[1:] != (128, 128) else images
            jobs = {"basicpy-sort": (small, {"get_darkfield": True, "sort_intensity": True}),
                    "basicpy-sort, no darkfield": (small, {"get_darkfield": False, "sort_intensity": True})}
            for label, (flat, dark, seconds, _) in run_basicpy(args.basicpy_python, jobs).items():
                fitted[label] = (flat, "no darkfield" not in label, {"darkfield_offset": float(np.mean(dark))}, seconds)
        for label, (flat, has_dark, info, seconds) in fitted.items():
            record = {"stack": name, "images": int(images.shape[0]), "method": label, "fit_s": seconds,
                      "has_darkfield": has_dark, "darkfield": info.get("darkfield"), "darkfield_reason": info.get("darkfield_reason"),
                      "darkfield_offset": info.get("darkfield_offset"), "darkfield_offset_halves": info.get("darkfield_offset_halves"),
                      "flatfield_statistic": info.get("flatfield_statistic")}
            if reference is not None:
                record["reference"] = "flatfield" if has_dark else "flatfield-flatonly"
                record["vs_reference"] = _agreement(flat, reference[record["reference"]])
                record["vs_flatfield"] = _agreement(flat, reference["flatfield"])
                record["vs_flatfield_flatonly"] = _agreement(flat, reference["flatfield-flatonly"])
            elif "basicpy-sort" in fitted and not label.startswith("basicpy"):
                record["reference"] = "basicpy-sort" if has_dark else "basicpy-sort, no darkfield"
                record["vs_reference"] = _agreement(flat, fitted[record["reference"]][0])
            records.append(record)
            print(name, label, record.get("reference"), {k: {m: round(v, 2) for m, v in record[k].items()}
                                                         for k in record if k.startswith("vs_")}, flush=True)
    return records


def demo_table(records: list[dict]) -> str:
    """Markdown: each run's agreement with the reference of its model (border excluded / whole field)."""
    stacks = list(dict.fromkeys(r["stack"] for r in records))
    methods = list(dict.fromkeys(r["method"] for r in records))
    lines = ["| Run | " + " | ".join(stacks) + " |", "|---" * (len(stacks) + 1) + "|"]
    for method in methods:
        cells = []
        for stack in stacks:
            row = next((r for r in records if r["stack"] == stack and r["method"] == method), None)
            if row is None or "vs_reference" not in row:
                cells.append("")
                continue
            verdict = f", darkfield {row['darkfield']}" if row.get("darkfield") else ""
            statistic = f", {row['flatfield_statistic']}" if row.get("flatfield_statistic") else ""
            cells.append(f"{row['vs_reference']['inner']:.2f} / {row['vs_reference']['full']:.2f} vs {row['reference']}"
                         f"{statistic}{verdict}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    parser.add_argument("--no-grid", action="store_true", help="skip the grid of sizes x densities x offsets")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2 shapes, 1 seed, 8 images of 128^2")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.images, args.seeds, args.shapes = 128, 8, 1, ["gaussian", "cos4"]
    load_start = os.getloadavg()[0]
    records = synthetic(args)
    for record in records:
        record["images"] = args.images
    table = summary_table(records)
    print(f"\nflat-field error % RMS / darkfield error counts, mean (max) over {len(args.shapes)} shapes x {args.seeds} seeds, "
          f"{args.images} images of {args.size}^2\n{table}")
    robustness = [] if args.no_grid or args.quick else grid(args)
    if robustness:
        print(f"\nworst flat-field error % RMS / darkfield error counts over {', '.join(GRID_SHAPES)}, {args.images} "
              f"images each\n{grid_table(robustness)}")
    demo = [] if args.no_demos or args.quick else demos(args)
    if demo:
        print("\ndemo stacks, % RMS of the flat field against the reference of the same model (border excluded / whole "
              "field, 128^2)\n" + demo_table(demo))
    payload = {"quick": args.quick, "machine": machine_description(), "load_1min_end": os.getloadavg()[0],
               "load_1min_start": load_start, "size": args.size, "images": args.images,
               "seeds": args.seeds, "shapes": args.shapes, "brightness_spread": 0.1, "synthetic": records, "table": table,
               "grid": robustness, "grid_table": grid_table(robustness) if robustness else "",
               "demo_stacks": demo, "demo_table": demo_table(demo) if demo else "", "basicpy": bool(args.basicpy_python)}
    print(write_results("accuracy-flatfield", payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
