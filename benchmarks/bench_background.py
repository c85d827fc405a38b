"""Local-background benchmarks (issue 19): gpuillum against ImageJ and scikit-image, in one run.

Usage::

    python benchmarks/bench_background.py            # 2160^2 uint16, radii 50 and 150
    python benchmarks/bench_background.py --quick    # small sizes, a smoke test

* ``rolling_ball_imagej`` and ``sliding_paraboloid`` against ImageJ's own Subtract Background on
  the same image, timed inside ImageJ's JVM (``getTime()`` around ``run()``: start-up and file
  reading excluded; tests/imagej_oracle.py). ImageJ processes a single image on one thread, so
  gpuillum is timed on one thread too (``gpuillum_1thread``) besides its default thread count.
  The outputs are compared: ``identical`` says whether they are equal bit for bit.
* ``rolling_ball`` (scikit-image's semantics, exact) against ``skimage.restoration.rolling_ball``;
  scikit-image is timed on a centred crop and scaled by the pixel ratio (``extrapolated_from``)
  when the full image would take longer than ``--peer-budget`` seconds.
* ``--device gpu`` adds each gpuillum kernel's time on a CuPy copy of the image (``gpuillum_gpu``).
* ``projection`` over a multi-page TIFF: reading every page and folding it into a
  ``ProjectionReducer`` (``add_all``: the same tifffile page loop, run in a reader thread beside
  the fold), against reading the pages alone (that loop in one thread).

Ratios are peer time / gpuillum time (higher is better for gpuillum), except projection's, which
is (read + reduce) / read (the target is <= 1.2). Results go to
benchmarks/results/background-<device>-<date>.json; a markdown table is printed at the end.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpuillum as gi  # noqa: E402
from benchmarks.bench_kernels import test_image, timed  # noqa: E402
from benchmarks.common import machine_description, time_call, write_results  # noqa: E402

TARGETS = {"rolling_ball_imagej": 5.0, "rolling_ball": 50.0, "projection": 1.2}


def load_oracle():
    path = Path(__file__).resolve().parent.parent / "tests" / "imagej_oracle.py"
    spec = importlib.util.spec_from_file_location("imagej_oracle", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def one_thread(fn):
    """``fn`` run with numba (and so gpuillum's thread pool) limited to one thread."""
    def run(*args):
        previous = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return fn(*args)
        finally:
            numba.set_num_threads(previous)
    return run


def imagej_cases(radii, legacy: bool):
    """(name, radius, ImageJ options, gpuillum function) of the Subtract Background comparisons."""
    cases = []
    for radius in radii:
        cases.append(("rolling_ball_imagej", radius, f"rolling={radius}", lambda im, r=radius: gi.rolling_ball_imagej(im, r)))
        cases.append(("sliding_paraboloid", radius, f"rolling={radius} sliding",
                      lambda im, r=radius: gi.sliding_paraboloid(im, r, legacy=legacy)))
    return cases


def on_gpu(fn, image, repeats):
    """Median time of ``fn`` on a CuPy copy of ``image`` (uploaded once, GPU synchronised)."""
    import cupy

    device_image = cupy.asarray(image)
    return time_call(lambda: fn(device_image), repeats=max(repeats, 5), warmup=2)


def bench_imagej(image, radii, repeats, gpu=False):
    """ImageJ and gpuillum in alternating rounds (one JVM per round: ImageJ times every case, its
    first run of each discarded as JIT warm-up; then gpuillum times every case on all threads and
    on one), so that a change of the machine's load hits both alike; medians over the rounds."""
    oracle = load_oracle()
    reason = oracle.skip_reason()
    info = {"version": None, "threads": None}
    if reason is None:
        _, info = oracle.run_jobs([oracle.Job(image[:8, :8], "Subtract Background...", "rolling=5")])
    cases = imagej_cases(radii, oracle.paraboloid_is_legacy(info["version"]) if reason is None else False)
    imagej_times = [[] for _ in cases]
    ours_times = [[] for _ in cases]
    ours_1_times = [[] for _ in cases]
    outputs = [None] * len(cases)
    for _ in range(repeats):
        if reason is None:
            jobs = [oracle.Job(image, "Subtract Background...", options, repeats=2) for _, _, options, _ in cases]
            results, info = oracle.run_jobs(jobs, timeout=1800)
            for i, result in enumerate(results):
                imagej_times[i].append(result.times_ms[-1] / 1e3)
                outputs[i] = result.output
        for i, (_, _, _, fn) in enumerate(cases):
            fn(image)  # warm-up
            ours_times[i].append(_seconds(lambda: fn(image)))
            ours_1_times[i].append(_seconds(lambda: one_thread(fn)(image)))
    rows = []
    for i, (name, radius, _, fn) in enumerate(cases):
        ours, ours_1 = _summary(ours_times[i]), _summary(ours_1_times[i])
        row = {"kernel": name, "params": {"size": image.shape[0], "radius": radius, "dtype": str(image.dtype)},
               "gpuillum": ours, "gpuillum_1thread": ours_1}
        if gpu:
            row["gpuillum_gpu"] = on_gpu(fn, image, repeats)
        if reason is not None:
            row["peer"] = {"name": "ImageJ", "skipped": reason}
        else:
            row["peer"] = {"name": f"ImageJ {info['version']} (threads setting {info['threads']})", **_summary(imagej_times[i])}
            row["speedup"] = row["peer"]["median_s"] / ours["median_s"]
            row["speedup_1thread"] = row["peer"]["median_s"] / ours_1["median_s"]
            row["identical"] = bool(np.array_equal(outputs[i], fn(image)))
        rows.append(row)
        _print(row)
    return rows, info


def _seconds(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def bench_skimage(image, radii, repeats, budget, gpu=False):
    from skimage.restoration import rolling_ball as skimage_rolling_ball

    rows = []
    for radius in radii:
        ours = time_call(lambda: gi.rolling_ball(image, radius), repeats=repeats)
        peer = timed(lambda im: skimage_rolling_ball(im, radius=radius), image, budget, repeats)
        crop = image[:64, :64]
        row = {"kernel": "rolling_ball", "params": {"size": image.shape[0], "radius": radius, "dtype": str(image.dtype)},
               "gpuillum": ours, "peer": {"name": "skimage.restoration.rolling_ball", **peer},
               "speedup": peer["median_s"] / ours["median_s"],
               "identical_on_crop": bool(np.array_equal(gi.rolling_ball(crop, radius), skimage_rolling_ball(crop, radius=radius)))}
        if gpu:
            row["gpuillum_gpu"] = on_gpu(lambda im: gi.rolling_ball(im, radius), image, repeats)
        rows.append(row)
        _print(row)
    return rows


def bench_projection(size, frames, repeats, statistics_to_time, compression):
    rng = np.random.default_rng(1)
    field = test_image(size)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpuillum-bench-") as folder:
        path = Path(folder) / "stack.tif"
        with tifffile.TiffWriter(path) as writer:
            for _ in range(frames):
                noise = rng.integers(0, 64, field.shape, dtype=np.uint16)
                writer.write(field + noise, compression=compression, contiguous=compression is None)

        def read_only():
            with tifffile.TiffFile(path) as tif:
                for page in tif.pages:
                    page.asarray()

        def read_and_reduce(statistic):  # the same page reads, in a reader thread (add_all) beside the fold
            with tifffile.TiffFile(path) as tif:
                return gi.ProjectionReducer(statistic).add_all(page.asarray() for page in tif.pages).result()

        # interleaved: each repeat reads once alone, then reads and reduces each statistic
        timings = {name: [] for name in ("read",) + tuple(statistics_to_time)}
        for statistic in statistics_to_time:
            read_and_reduce(statistic)  # warm-up (numba, page cache)
        for _ in range(max(repeats, 3)):
            for name in timings:
                timings[name].append(_seconds(read_only if name == "read" else lambda n=name: read_and_reduce(n)))
        read = _summary(timings["read"])
        for statistic in statistics_to_time:
            both = _summary(timings[statistic])
            row = {"kernel": "projection", "params": {"size": size, "frames": frames, "statistic": statistic,
                                                      "compression": compression or "none", "dtype": "uint16"},
                   "gpuillum": both, "peer": {"name": "reading the pages (tifffile)", **read},
                   "ratio_to_read": both["median_s"] / read["median_s"]}
            rows.append(row)
            _print(row)
    return rows


def _summary(times):
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def _print(row):
    params = " ".join(f"{k}={v}" for k, v in row["params"].items())
    ours = row["gpuillum"]["median_s"] * 1e3
    line = f"{row['kernel']:<20} {params:<55} gpuillum {ours:9.1f} ms"
    peer = row.get("peer", {})
    if "median_s" in peer:
        mark = "*" if "extrapolated_from" in peer else ""
        line += f" | {peer['name']} {peer['median_s'] * 1e3:.1f} ms{mark}"
    if "speedup" in row:
        line += f" | x{row['speedup']:.1f}"
    if "speedup_1thread" in row:
        line += f" (1 thread: {row['gpuillum_1thread']['median_s'] * 1e3:.1f} ms, x{row['speedup_1thread']:.1f})"
    if "ratio_to_read" in row:
        line += f" | {row['ratio_to_read']:.2f} x read"
    if "gpuillum_gpu" in row:
        line += f" | GPU {row['gpuillum_gpu']['median_s'] * 1e3:.2f} ms"
    print(line, flush=True)


def markdown_table(rows) -> str:
    lines = ["| kernel | image | parameters | gpuillum | peer | peer time | ratio | target |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        p = row["params"]
        image = f"{p['size']}^2 {p.get('dtype', '')}" + (f" x {p['frames']} frames" if "frames" in p else "")
        params = ", ".join(f"{k} {v}" for k, v in p.items() if k not in ("size", "dtype", "frames"))
        ours = f"{row['gpuillum']['median_s'] * 1e3:.0f} ms"
        if "gpuillum_1thread" in row:
            ours += f" ({row['gpuillum_1thread']['median_s'] * 1e3:.0f} ms on 1 thread)"
        if "gpuillum_gpu" in row:
            ours += f"; GPU {row['gpuillum_gpu']['median_s'] * 1e3:.2f} ms"
        peer = row.get("peer", {})
        peer_time = f"{peer['median_s'] * 1e3:.0f} ms" + ("*" if "extrapolated_from" in peer else "") if "median_s" in peer else peer.get("skipped", "")
        if "ratio_to_read" in row:
            ratio = f"{row['ratio_to_read']:.2f} x read"
            target = f"<= {TARGETS['projection']} x"
        elif "speedup" in row:
            ratio = f"{row['speedup']:.1f}x" + (f" ({row['speedup_1thread']:.1f}x on 1 thread)" if "speedup_1thread" in row else "")
            target = f">= {TARGETS[row['kernel']]:.0f}x" if row["kernel"] in TARGETS else ""
        else:
            ratio = target = ""
        lines.append(f"| {row['kernel']} | {image} | {params} | {ours} | {peer.get('name', '')} | {peer_time} | {ratio} | {target} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2160)
    parser.add_argument("--radii", type=float, nargs="+", default=[50, 150])
    parser.add_argument("--skimage-radii", type=float, nargs="+", default=[50])
    parser.add_argument("--frames", type=int, default=40, help="frames of the projection stack")
    parser.add_argument("--projection-size", type=int, default=2160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peer-budget", type=float, default=20.0, help="seconds scikit-image may take before it is timed on a crop")
    parser.add_argument("--only", nargs="*", choices=("imagej", "skimage", "projection"), help="only these comparisons")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu", help="gpu: also time gpuillum on CuPy arrays")
    parser.add_argument("--quick", action="store_true", help="small images, a smoke test")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.radii, args.skimage_radii, args.frames, args.projection_size = 192, [12, 40], [12], 4, 96
        args.repeats, args.peer_budget = 1, 2.0
    args.radii = [int(r) if float(r).is_integer() else r for r in args.radii]
    args.skimage_radii = [int(r) if float(r).is_integer() else r for r in args.skimage_radii]
    chosen = set(args.only or ("imagej", "skimage", "projection"))
    gpu = args.device == "gpu"
    if gpu and not gi.gpu_available():
        print("bench_background: --device gpu but no usable CUDA GPU", file=sys.stderr)
        return 2

    image = test_image(args.size)
    rows, imagej = [], None
    started = time.perf_counter()
    load_before = os.getloadavg()
    if "imagej" in chosen:
        imagej_rows, imagej = bench_imagej(image, args.radii, args.repeats, gpu)
        rows += imagej_rows
    if "skimage" in chosen:
        rows += bench_skimage(image, args.skimage_radii, args.repeats, args.peer_budget, gpu)
    if "projection" in chosen:
        for compression in (None, "zlib"):
            rows += bench_projection(args.projection_size, args.frames, args.repeats, ("max", "mean", "median"), compression)
    payload = {"benchmark": "background", "quick": args.quick, "machine": machine_description(), "args": vars(args),
               "imagej": imagej, "wall_s": time.perf_counter() - started, "results": rows,
               "load_average": {"before": load_before, "after": os.getloadavg()}}
    print(markdown_table(rows))
    print(f"load average (1, 5, 15 min) before {load_before}, after {payload['load_average']['after']}")
    if not args.no_save:
        print(f"wrote {write_results('background', payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
