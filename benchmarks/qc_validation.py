"""Validation of the QC metrics, the "correction needed?" threshold and ``--method auto``, on
synthetic image sets of known flat field (gpuillum.demo.variants: shapes vignetting, gaussian,
ramp, spot; depths, camera offsets, cell densities and the images' brightness spread drawn per
set: a quarter of the sets have every image equally bright, where no method can tell a camera
offset from the flat field by the backgrounds).

* ``metrics``: for each set, the background's peak-to-valley before correction (against the
  true flat field's and against the visible shading, offset included) and after correcting with
  the true flat field distorted by a known error (against that error): Pearson and Spearman
  correlations; the "needed" verdict on flat sets (false positives) and on shaded ones
  (detections by true peak-to-valley).
* ``auto``: every candidate of ``--method auto`` (default: the registered ones) on each set; the
  flat-field error (mean |F_hat / F - 1| against the truth, gpuillum.qc.metrics.compare_to_truth)
  of the chosen model against the best candidate's. Passes when the chosen one is within 10 % of
  the best in at least 90 % of the sets.

Usage: ``python benchmarks/qc_validation.py [--sets N] [--quick]``. Writes
benchmarks/results/qc-validation-<device>-<date>.json and prints the tables (markdown).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_description, write_results  # noqa: E402
from gpuillum.demo.variants import ShadingCase  # noqa: E402

SHAPES = ("vignetting", "gaussian", "ramp", "spot")
DEPTHS = (1.15, 1.3, 1.6, 2.0)
DARKS = (0.0, 100.0, 300.0)
COVERAGES = ((0.03, 0.08), (0.10, 0.20), (0.25, 0.40))
SPREADS = (0.0, 0.05, 0.1, 0.2)  # images' brightness 1 +- spread (0: all equal, the offset hidden from the backgrounds)
CELLPROFILER_ONLY = ("jump", "cellpainting-2014", "broad-0.1x", "broad-0.1x-size10", "cdrp", "polynomial")
WITHIN = 0.10
REQUIRED = 0.90


def draw_case(index: int, *, images: int, size: int, kind=None, depth=None) -> ShadingCase:
    rng = np.random.default_rng([2026, index])
    spread = float(np.random.default_rng([2026, index, 1]).choice(SPREADS))
    return ShadingCase(kind or SHAPES[index % len(SHAPES)], depth=depth or float(rng.choice(DEPTHS)),
                       dark=float(rng.choice(DARKS)), coverage=COVERAGES[int(rng.integers(len(COVERAGES)))],
                       spread=spread, images=images, shape=(size, size), seed=index)


def _corr(a, b) -> dict:
    a, b = np.asarray(a, float), np.asarray(b, float)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    return {"pearson": round(float(np.corrcoef(a, b)[0, 1]), 4), "spearman": round(float(np.corrcoef(rank(a), rank(b))[0, 1]), 4),
            "n": int(a.size)}


def _true_p2v(field) -> float:
    from gpuillum.qc.maps import _blocks, grid_shape
    from gpuillum.qc.shading import shading

    block = _blocks(field, grid_shape(field.shape), np).mean(axis=(2, 3))
    return shading(block)["peak_to_valley"]


def metrics_part(sets: int, images: int, size: int) -> dict:
    from gpuillum.qc.group import measure
    from gpuillum.qc.verdicts import needed

    rows = []
    for index in range(sets):
        flat_set = index % 5 == 4  # every fifth set is evenly lit
        case = draw_case(index, images=images, size=size, depth=1.0 if flat_set else None)
        raw = case.images_uint16()
        truth = case.flat()
        before = measure(raw)
        verdict, _ = needed(before)
        rng = np.random.default_rng([7, index])
        error_level = float(rng.uniform(0.0, 0.3))
        y, x = np.mgrid[0:size, 0:size] / size
        distortion = 1 + error_level * (np.cos(2 * np.pi * (y * rng.uniform(0.3, 1) + x * rng.uniform(0.3, 1))) * 0.5)
        model = truth * distortion
        after = measure([((image - case.dark) / model).astype(np.float32) for image in raw])
        from gpuillum.qc.metrics import compare_to_truth

        rows.append({"set": index, "kind": case.kind, "depth": case.depth, "dark": case.dark, "coverage": list(case.coverage),
                     "true_peak_to_valley": _true_p2v(truth),
                     "visible_peak_to_valley": _true_p2v(case.dark + truth * case.background),
                     "before_peak_to_valley": before["background"]["peak_to_valley"], "noise_floor": before["noise_floor"],
                     "needed": verdict, "model_error": compare_to_truth(model, truth)["mean_rel_error"],
                     "after_peak_to_valley": after["background"]["peak_to_valley"]})
    shaded = [r for r in rows if r["depth"] > 1]
    flat = [r for r in rows if r["depth"] == 1]
    strong = [r for r in shaded if r["true_peak_to_valley"] >= 0.10]
    return {
        "rows": rows,
        "before_vs_true": _corr([r["before_peak_to_valley"] for r in shaded], [r["true_peak_to_valley"] for r in shaded]),
        "before_vs_visible": _corr([r["before_peak_to_valley"] for r in shaded], [r["visible_peak_to_valley"] for r in shaded]),
        "after_vs_model_error": _corr([r["after_peak_to_valley"] for r in rows], [r["model_error"] for r in rows]),
        "needed_false_positives": f"{sum(r['needed'] for r in flat)}/{len(flat)}",
        "needed_detected_true_p2v_ge_10pct": f"{sum(bool(r['needed']) for r in strong)}/{len(strong)}",
        "max_before_on_flat_sets": max((r["before_peak_to_valley"] for r in flat), default=None),
    }


def auto_part(sets: int, images: int, size: int, candidates: str | None) -> dict:
    from gpuillum.methods import get_method
    from gpuillum.methods.auto import AutoSettings, evaluate
    from gpuillum.methods.base import GroupInfo
    from gpuillum.backend import resolve_device
    from gpuillum.qc.candidates import choose
    from gpuillum.qc.metrics import compare_to_truth

    method = get_method("auto")
    settings = AutoSettings(candidates or "default")
    device = resolve_device("cpu")
    rows = []
    for index in range(sets):
        case = draw_case(index, images=images, size=size)
        raw = case.images_uint16()
        truth = case.flat()
        info = GroupInfo(f"set {index}", case.shape, "uint16", len(raw))
        reduction = method.reduction(settings, info)
        for image in raw:
            reduction.add(image)
        results = evaluate(settings, reduction, info, device)
        scored = {r["label"]: r for r in results if "model" in r}
        chosen, why = choose(scored)
        cellprofiler = {label: result for label, result in scored.items() if label in CELLPROFILER_ONLY}
        cp_chosen = choose(cellprofiler)[0] if cellprofiler else None
        errors = {}
        for label, result in scored.items():
            flat = result["model"].flatfield
            errors[label] = compare_to_truth(np.ones(case.shape) if flat is None else np.asarray(flat), truth)["mean_rel_error"]
        best = min(errors, key=errors.get)
        cp_best = min(cellprofiler, key=errors.get) if cellprofiler else None
        rows.append({"set": index, "kind": case.kind, "depth": case.depth, "dark": case.dark, "coverage": list(case.coverage),
                     "spread": case.spread, "chosen": chosen, "best": best, "chosen_error": round(errors[chosen], 5), "best_error": round(errors[best], 5),
                     "within": errors[chosen] <= (1 + WITHIN) * errors[best], "errors": {k: round(v, 5) for k, v in errors.items()},
                     "scores": {k: round(v["score"], 5) for k, v in scored.items()}, "why": why,
                     "cellprofiler_chosen": cp_chosen, "cellprofiler_best": cp_best,
                     "cellprofiler_within": None if cp_chosen is None else errors[cp_chosen] <= (1 + WITHIN) * errors[cp_best]})
    passed = sum(r["within"] for r in rows)
    cp_rows = [r for r in rows if r["cellprofiler_within"] is not None]
    cp_passed = sum(r["cellprofiler_within"] for r in cp_rows)
    return {"rows": rows, "candidates": [c.label for c in settings.resolved()], "within_10pct": f"{passed}/{len(rows)}",
            "share": round(passed / len(rows), 4), "passes": passed / len(rows) >= REQUIRED,
            "cellprofiler_only": None if not cp_rows else {
                "candidates": [label for label in CELLPROFILER_ONLY if label in rows[0]["errors"]],
                "within_10pct": f"{cp_passed}/{len(cp_rows)}", "share": round(cp_passed / len(cp_rows), 4),
                "passes": cp_passed / len(cp_rows) >= REQUIRED}}


def table(result: dict) -> str:
    metrics, auto = result["metrics"], result["auto"]
    lines = ["| metric check | value |", "|---|---|"]
    for key in ("before_vs_true", "before_vs_visible", "after_vs_model_error"):
        c = metrics[key]
        lines.append(f"| {key.replace('_', ' ')} | Pearson {c['pearson']}, Spearman {c['spearman']} (n = {c['n']}) |")
    lines += [f"| needed: false positives on flat sets | {metrics['needed_false_positives']} |",
              f"| needed: detected, true peak-to-valley >= 10 % | {metrics['needed_detected_true_p2v_ge_10pct']} |",
              f"| largest peak-to-valley measured on a flat set | {metrics['max_before_on_flat_sets']} |", "",
              f"--method auto among {', '.join(auto['candidates'])}: chosen within 10 % of the best flat-field error in "
              f"{auto['within_10pct']} sets ({100 * auto['share']:.0f} %, required 90 %: {'pass' if auto['passes'] else 'FAIL'})", "",
              "| set | shape | depth | offset | coverage | spread | chosen | error | best | error | within | CellProfiler only: chosen | best | within |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    cp = auto.get("cellprofiler_only")
    if cp:
        lines.insert(-2, f"Among the CellProfiler candidates alone ({', '.join(cp['candidates'])}): within 10 % of the best of "
                         f"them in {cp['within_10pct']} sets ({100 * cp['share']:.0f} %).")
        lines.insert(-2, "")
    for r in auto["rows"]:
        errors = r["errors"]
        cp_cells = ("| - | - | - |" if r.get("cellprofiler_chosen") is None else
                    f"| {r['cellprofiler_chosen']} {errors[r['cellprofiler_chosen']]:.4f} | {r['cellprofiler_best']} "
                    f"{errors[r['cellprofiler_best']]:.4f} | {'yes' if r['cellprofiler_within'] else 'NO'} |")
        lines.append(f"| {r['set']} | {r['kind']} | {r['depth']} | {r['dark']:g} | {r['coverage'][0]}-{r['coverage'][1]} | "
                     f"{r['spread']:g} | {r['chosen']} | "
                     f"{r['chosen_error']:.4f} | {r['best']} | {r['best_error']:.4f} | {'yes' if r['within'] else 'NO'} " + cp_cells)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", type=int, default=40)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--candidates", help="comma-separated (default: those of --method auto)")
    parser.add_argument("--quick", action="store_true", help="3 small sets: a smoke run")
    args = parser.parse_args(argv)
    sets, images, size = (3, 8, 96) if args.quick else (args.sets, args.images, args.size)
    started = time.perf_counter()
    result = {"metrics": metrics_part(sets, images, size), "auto": auto_part(sets, images, size, args.candidates)}
    payload = {"benchmark": "qc-validation", "quick": args.quick, "sets": sets, "images": images, "size": size,
               "seconds": round(time.perf_counter() - started, 1), "machine": machine_description(), **result}
    path = write_results("qc-validation", payload)
    print(table(result))
    print(f"\nwritten: {path} ({payload['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
