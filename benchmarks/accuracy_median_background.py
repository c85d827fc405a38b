"""How far ``median_background`` (downsampled median) is from the exact median and from the truth.

Accuracy, not speed: on synthetic vignetted fields with cells and Poisson noise, where the true
background is known, each (radius, factor) case reports the error of the downsampled background
against the exact full-resolution median (max and mean relative error) and against the true
background (mean relative error, beside the exact median's own). Medians over ``--seeds`` fields.

The field: ``--size``^2 pixels, 400 counts with an off-centre 35 % fall-off, Gaussian cells
(sigma 3-6 px, 5x the background at their centre) placed until ``--cell-fraction`` of the pixels
are brighter than 1.5x the background, Poisson noise.

Usage: ``python benchmarks/accuracy_median_background.py`` (seconds) or ``--quick``. Writes
benchmarks/results/accuracy-median-background-<device>-<date>.json (``common.write_results``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_description, write_results  # noqa: E402
from gpuillum.filters.median import median_filter  # noqa: E402
from gpuillum.filters.median_background import auto_downsample, median_background  # noqa: E402

CASES = ((16, "auto"), (32, "auto"), (64, "auto"), (64, 16))


def cell_field(rng: np.random.Generator, size: int, cell_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(uint16 noisy image, float64 true background) of one synthetic field."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    distance = (y - 0.42 * size) ** 2 + (x - 0.58 * size) ** 2
    truth = 400 * (1 - 0.35 * distance / distance.max())
    cells = np.zeros_like(truth)
    while np.mean(cells > 0.5) < cell_fraction:  # cells add > 0.5x the background where they count
        cy, cx, sigma = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(3, 6)
        cells += 4 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return rng.poisson(truth * (1 + cells)).astype(np.uint16), truth


def measure(image: np.ndarray, truth: np.ndarray, radius: int, downsample) -> dict:
    exact = median_filter(image, radius).astype(np.float64)
    background = median_background(image, radius, downsample=downsample).astype(np.float64)
    vs_exact = np.abs(background - exact) / exact
    return {"max_vs_exact": float(vs_exact.max()), "mean_vs_exact": float(vs_exact.mean()),
            "mean_vs_truth": float(np.mean(np.abs(background / truth - 1))),
            "exact_mean_vs_truth": float(np.mean(np.abs(exact / truth - 1)))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="field side in pixels (default 512)")
    parser.add_argument("--seeds", type=int, default=5, help="fields per case; medians are reported (default 5)")
    parser.add_argument("--cell-fraction", type=float, default=0.17, help="share of pixels in cells (default 0.17)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 2 fields of 128^2")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.seeds = 128, 2
    if not 0 < args.cell_fraction < 0.9:
        parser.error(f"--cell-fraction: expected a share between 0 and 0.9, got {args.cell_fraction}")

    fields = [cell_field(np.random.default_rng(seed), args.size, args.cell_fraction) for seed in range(args.seeds)]
    results = []
    print("| radius | factor | vs exact median: max / mean | vs true background: mean (exact median's own) |")
    print("|---|---|---|---|")
    for radius, downsample in CASES:
        factor = auto_downsample(radius, (args.size, args.size)) if downsample == "auto" else downsample
        runs = [measure(image, truth, radius, downsample) for image, truth in fields]
        row = {"radius": radius, "downsample": downsample, "factor": factor,
               **{key: statistics.median(run[key] for run in runs) for key in runs[0]}, "per_field": runs}
        results.append(row)
        mark = " (auto)" if downsample == "auto" else ""
        print(f"| {radius} | {factor}{mark} | {100 * row['max_vs_exact']:.1f} % / {100 * row['mean_vs_exact']:.2f} % | "
              f"{100 * row['mean_vs_truth']:.2f} % ({100 * row['exact_mean_vs_truth']:.2f} %) |", flush=True)
    payload = {"benchmark": "accuracy-median-background", "quick": args.quick, "machine": machine_description(),
               "arguments": vars(args), "results": results}
    if not args.no_save:
        print(f"wrote {write_results('accuracy-median-background', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
