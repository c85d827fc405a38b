"""gpuillum's CorrectIlluminationCalculate vs the code path CellProfiler 4.2 runs, per setting.

The CellProfiler side is tests/cp_oracle.py (centrosome + scikit-image + scipy strung together as
the CP4 module does). The plate is synthetic and made in memory: ``--images`` 12-bit images in
uint16 (vignetting + blobs + Poisson-like noise) of ``--size``^2 pixels. "Each" + Median Filter is
also timed on a 16-bit camera plate (same scene, ~2.8x the counts): CellProfiler's rank median
scans its histogram up to the median value, so its time grows with the counts and gpuillum's
does not. gpuillum's CPU path uses ``cpu_threads()`` threads (recorded); CellProfiler's path is
single-threaded, so "Each" settings also time gpuillum on one thread (``gpuillum_cpu_1thread_s``).

* "Each" settings are timed per image on ``--cp-images`` images (CellProfiler's full-resolution
  median costs seconds per image), one image on each side in turn; medians per image. gpuillum's
  throughput on the whole plate (``calculate(plate)``, total / images) is recorded beside it.
* "All" settings are timed over the whole plate on both sides (accumulate + smooth once).
* GPU (when ``cupy.is_available()``): the plate is uploaded once and timed device-resident
  ("gpu_s"), and also including the per-image host->device copies ("gpu_with_upload_s").

Usage: ``python benchmarks/bench_cellprofiler.py`` (the full run, minutes) or ``--quick`` (a tiny
smoke run). Writes benchmarks/results/cellprofiler-<device>-<date>.json (``common.write_results``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine_description, synchronize, write_results  # noqa: E402
from gpuillum.backend import gpu_available  # noqa: E402
from gpuillum.filters.bands import cpu_threads  # noqa: E402
from gpuillum.methods.cellprofiler import CalculateSettings, calculate, median_radius, preset  # noqa: E402


def load_oracle():
    """tests/cp_oracle.py, imported by path (the tests folder is not a package)."""
    spec = importlib.util.spec_from_file_location("cp_oracle", ROOT / "tests" / "cp_oracle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CAMERAS = {  # dark offset, signal gain and saturation of the synthetic plates
    "12-bit": (100, 900, 4095),
    "16-bit": (200, 2500, 65535),
}


def synthetic_plate(n: int, size: int, seed: int = 0, camera: str = "12-bit") -> list[np.ndarray]:
    """``n`` uint16 images: off-centre vignetting, a dark offset, bright blobs and noise."""
    offset, gain, saturation = CAMERAS[camera]
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / np.float32(size)
    vignette = 1.0 - 0.55 * ((yy - 0.45) ** 2 + (xx - 0.55) ** 2) / 0.5
    blob_r = max(3, size // 90)
    by, bx = np.mgrid[-3 * blob_r : 3 * blob_r + 1, -3 * blob_r : 3 * blob_r + 1]
    blob = np.exp(-(by**2 + bx**2) / (2.0 * blob_r**2)).astype(np.float32)
    images = []
    for _ in range(n):
        signal = np.zeros((size, size), np.float32)
        for _ in range(max(4, size * size // 20000)):
            y, x = rng.integers(0, size - blob.shape[0], 2)
            signal[y : y + blob.shape[0], x : x + blob.shape[1]] += blob * np.float32(rng.uniform(0.5, 2.0))
        expected = offset + gain * vignette * (1 + signal)
        image = expected + rng.standard_normal((size, size), dtype=np.float32) * np.sqrt(expected)
        images.append(np.clip(np.rint(image), 0, saturation).astype(np.uint16))
    return images


def settings_to_run() -> dict[str, CalculateSettings]:
    all_mode = dict(aggregation="All: Across cycles")
    return {
        "each-median-auto": CalculateSettings(smoothing="Median Filter"),
        "each-median-auto-16bit": CalculateSettings(smoothing="Median Filter"),
        "each-gaussian-auto": CalculateSettings(smoothing="Gaussian Filter"),
        "each-background-polynomial": CalculateSettings(intensity="Background", smoothing="Fit Polynomial", rescale="No"),
        "all-median-auto": CalculateSettings(smoothing="Median Filter", **all_mode),
        "all-median-size200": CalculateSettings(smoothing="Median Filter", filter_size_method="Manually", manual_size=200, **all_mode),
        "all-gaussian-auto": CalculateSettings(smoothing="Gaussian Filter", **all_mode),
        "all-gaussian-dilate2": CalculateSettings(smoothing="Gaussian Filter", dilate=True, dilation_radius=2, **all_mode),
        "all-polynomial": CalculateSettings(smoothing="Fit Polynomial", **all_mode),
        "all-average": CalculateSettings(smoothing="Smooth to Average", rescale="Median", **all_mode),
        "all-none": CalculateSettings(**all_mode),
        "all-background-median": CalculateSettings(intensity="Background", smoothing="Median Filter", rescale="No", **all_mode),
        "all-splines": CalculateSettings(smoothing="Splines", rescale="No", **all_mode),
        "all-convex-hull": CalculateSettings(smoothing="Convex Hull", **all_mode),
        "jump": preset("jump"),
    }


@contextlib.contextmanager
def one_thread():
    """gpuillum's CPU kernels on one thread (``cpu_threads()`` follows numba's thread count)."""
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(threads)


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs (GPU work synchronised)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        synchronize(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_image(fn, images, repeats: int = 1) -> float:
    """Median over ``images`` of the time of ``fn(image)``."""
    return statistics.median(timed(lambda image=image: fn(image), repeats) for image in images)


def bench_setting(name, settings, plate, oracle, args, device_plate):
    record = {"setting": name, "settings": settings.__dict__.copy(), "images": len(plate),
              "shape": list(plate[0].shape), "median_radius": median_radius(settings, plate[0].shape)}
    if settings.is_all:
        record["timing"] = "whole plate (accumulate + finalize)"
        calculate(plate[:2], settings)  # warm-up: numba compilation, caches
        record["gpuillum_cpu_s"] = timed(lambda: calculate(plate, settings), args.repeats)
        record["cellprofiler_cpu_s"] = timed(lambda: oracle.calculate(settings, plate), 1)
    else:
        record["timing"] = "per image (median), the two sides interleaved image by image"
        calculate(plate[:1], settings)
        ours, ours_one_thread, theirs = [], [], []
        for image in plate[: args.cp_images]:  # a drifting machine load then weighs on every side alike
            ours.append(timed(lambda image=image: calculate([image], settings), args.repeats))
            with one_thread():
                ours_one_thread.append(timed(lambda image=image: calculate([image], settings), args.repeats))
            theirs.append(timed(lambda image=image: oracle.calculate(settings, [image]), 1))
        record["gpuillum_cpu_s"] = statistics.median(ours)
        record["cellprofiler_cpu_s"] = statistics.median(theirs)
        record["cp_images_timed"] = len(theirs)
        record["gpuillum_cpu_per_image_s"], record["cellprofiler_cpu_per_image_s"] = ours, theirs  # the spread
        # CellProfiler's path is single-threaded: the same comparison on one core, and what the threads add
        record["gpuillum_cpu_1thread_s"] = statistics.median(ours_one_thread)
        record["speedup_cpu_1thread"] = record["cellprofiler_cpu_s"] / record["gpuillum_cpu_1thread_s"]
        record["thread_scaling"] = record["gpuillum_cpu_1thread_s"] / record["gpuillum_cpu_s"]
        # what a user calling calculate() on the whole plate gets per image (throughput, not the target)
        record["gpuillum_cpu_plate_s_per_image"] = timed(lambda: calculate(plate, settings), 1) / len(plate)
    record["speedup_cpu"] = record["cellprofiler_cpu_s"] / record["gpuillum_cpu_s"]
    if device_plate is not None:
        import cupy

        if settings.is_all:
            calculate(device_plate[:2], settings)
            record["gpu_s"] = timed(lambda: calculate(device_plate, settings), args.repeats)
            record["gpu_with_upload_s"] = timed(lambda: calculate((cupy.asarray(i) for i in plate), settings), args.repeats)
        else:
            ours = device_plate[: args.cp_images]
            calculate(device_plate[:1], settings)
            record["gpu_s"] = per_image(lambda image: calculate([image], settings), ours, args.repeats)
        record["speedup_gpu"] = record["cellprofiler_cpu_s"] / record["gpu_s"]
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96, help="images in the synthetic plate (default 96)")
    parser.add_argument("--size", type=int, default=1080, help="image side in pixels (default 1080)")
    parser.add_argument("--cp-images", type=int, default=9, help="images timed per 'Each' setting (both sides)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each gpuillum timing (median)")
    parser.add_argument("--only", nargs="*", help="run only these settings (names as in the output)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 6 images of 160^2, one repeat")
    parser.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size, args.cp_images, args.repeats = 6, 160, 2, 1

    chosen = settings_to_run()
    if args.only:  # checked first: a typo costs no plate
        unknown = sorted(set(args.only) - set(chosen))
        if unknown:
            parser.error(f"--only: unknown settings {unknown}; choose from {sorted(chosen)}")
        chosen = {k: v for k, v in chosen.items() if k in args.only}

    oracle = load_oracle()
    started = time.perf_counter()
    plate = synthetic_plate(args.images, args.size)
    print(f"plate: {len(plate)} x {args.size}^2 uint16 (12-bit), made in {time.perf_counter() - started:.1f} s", flush=True)
    device_plate = None
    if gpu_available():
        import cupy

        device_plate = [cupy.asarray(image) for image in plate]
    results = []
    for name, settings in chosen.items():
        if name.endswith("-16bit"):  # an "Each" setting: only the images it times
            camera = "16-bit"
            images = synthetic_plate(args.cp_images, args.size, camera=camera)
            device_images = None if device_plate is None else [cupy.asarray(image) for image in images]
        else:
            camera, images, device_images = "12-bit", plate, device_plate
        record = bench_setting(name, settings, images, oracle, args, device_images)
        record["camera"] = camera
        record["gpuillum_cpu_threads"] = cpu_threads()
        results.append(record)
        gpu = f"  gpu {record['gpu_s']:.4f} s (x{record['speedup_gpu']:.1f})" if "gpu_s" in record else ""
        print(f"{name:28s} {record['timing']:36s} gpuillum {record['gpuillum_cpu_s']:.4f} s  "
              f"CellProfiler {record['cellprofiler_cpu_s']:.4f} s  x{record['speedup_cpu']:.1f}{gpu}", flush=True)

    targets = {}
    for record in results:
        if record["setting"].startswith("each-median-auto"):
            targets[f"{record['setting']} >= 50x on CPU"] = record["speedup_cpu"] >= 50
        elif record["setting"].startswith("all-") or record["setting"] == "jump":
            targets[f"{record['setting']} >= 1x on CPU"] = record["speedup_cpu"] >= 1
    for target, met in targets.items():
        print(f"target {target}: {'met' if met else 'NOT met'}")
    payload = {"benchmark": "cellprofiler", "quick": args.quick, "machine": machine_description(),
               "arguments": vars(args), "results": results, "targets": targets}
    if not args.no_save:
        print(f"wrote {write_results('cellprofiler', payload)}")


if __name__ == "__main__":
    main()
