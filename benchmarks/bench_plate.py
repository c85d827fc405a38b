"""The whole plate job (read -> accumulate -> apply -> write) against CellProfiler's path and the I/O floor.

On a synthetic plate written once to a scratch folder (default 384 sites x 2 channels of 1080^2
uint16, zlib like many acquisitions), with the JUMP recipe (resize x0.2, median size 20, rescale,
resize back, divide):

* ``gpuillum``: ``run_plate`` in-process (decode threads) and with ``--workers`` Dask workers,
  on the CPU, and on the GPU when one is usable;
* ``cellprofiler``: the code path CellProfiler runs for the same recipe, one image at a time in one
  process as CellProfiler processes a plate group (Resize via skimage.transform.resize bilinear
  with its default anti-aliasing,
  float32 sum, rank median of skimage on the x65535 uint16 average, the 2 % robust rescale, resize
  back, then per image: divide, clip to [0, 1], save at 16 bits), with the same TIFF reader/writer;
* ``io-floor``: only the reads and writes the job must do (every image read twice, written once),
  with the same number of threads as gpuillum.

Images per second count each input image once. Results: benchmarks/results/plate-<device>-<date>.json.
``--quick`` is a tiny run for a smoke test.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine_description, write_results  # noqa: E402


def make_plate(folder: Path, images: int, shape, channels=("DNA", "Actin")):
    """A synthetic plate with ``images`` sites per channel (rows of 12 wells, 4 sites per well)."""
    from gpuillum.demo.synthetic import make_synthetic_plate

    sites = 4 if images >= 4 else images
    wells = max(1, -(-images // sites))
    cols = tuple(range(1, 1 + min(12, wells)))
    rows = "ABCDEFGHIJKLMNOP"[: -(-wells // len(cols))]
    return make_synthetic_plate(folder, plate="BENCH", rows=rows, cols=cols, sites=sites, channels=channels, shape=tuple(shape))


def cellprofiler_path(paths_by_channel: dict, out: Path, source: Path, radius: int = 9, factor: float = 0.2):
    """The JUMP recipe as CellProfiler computes it, one image at a time (see module docstring)."""
    import warnings

    from skimage.filters.rank import median
    from skimage.morphology import disk
    from skimage.transform import resize

    from gpuillum.io.tiff import read_tiff, write_tiff

    for paths in paths_by_channel.values():
        total = None
        for path in paths:
            image = read_tiff(path)[0].astype(np.float32) / np.float32(65535)
            # CellProfiler 4.2's Resize module: skimage resize, bilinear, symmetric edges, anti-aliasing on
            small = resize(image, [round(n * factor) for n in image.shape], order=1, mode="symmetric").astype(np.float32)
            total = small if total is None else total + small
        average = (total / len(paths)).astype(np.float32)
        with warnings.catch_warnings():  # skimage warns that many-bin rank filters are slow: that is CellProfiler's cost
            warnings.simplefilter("ignore", UserWarning)
            smooth = median((average * 65535).astype(np.uint16), disk(radius)).astype(np.float32) / np.float32(65535)
        positive = np.sort(smooth[smooth > 0])
        robust = positive[int(len(positive) * 0.02)]
        function = np.maximum(smooth, robust) / robust
        function = resize(function, image.shape, order=1, mode="symmetric").astype(np.float32)
        for path in paths:
            pixels, info = read_tiff(path)
            corrected = np.clip(pixels.astype(np.float32) / np.float32(65535) / function, 0, 1)
            target = out / Path(path).relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_tiff(target, np.rint(corrected * 65535).astype(np.uint16), like=info)


def io_floor(paths: list, out: Path, source: Path, threads: int):
    """Read every image (pass 1), then read and write every image (pass 2), in ``threads`` threads."""
    from gpuillum.io.tiff import read_tiff, write_tiff

    def read(path):
        read_tiff(path)

    def copy(path):
        pixels, info = read_tiff(path)
        target = out / Path(path).relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_tiff(target, pixels, like=info)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, paths))
        list(pool.map(copy, paths))


def timed(function, *args, **kwargs) -> float:
    start = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - start


class GpuBusySampler:
    """Fraction of time the GPU was busy while the block ran: NVML's utilisation (the share of each
    sample period in which a kernel ran), sampled every 50 ms in a thread. ``fraction`` is None
    when NVML (nvidia-ml-py) is not available."""

    def __init__(self, index: int = 0, period: float = 0.05):
        self.index, self.period, self.samples, self.fraction = index, period, [], None

    def __enter__(self):
        import threading

        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle, self._nvml = pynvml.nvmlDeviceGetHandleByIndex(self.index), pynvml
        except Exception:
            self._handle = None
            return self
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.period):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc):
        if self._handle is not None:
            self._stop.set()
            self._thread.join()
            if self.samples:
                self.fraction = sum(self.samples) / (100.0 * len(self.samples))
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=384, help="sites per channel (default 384; 2 channels)")
    parser.add_argument("--shape", type=int, nargs=2, default=(1080, 1080), metavar=("H", "W"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="gpuillum CPU worker counts to run (1 = in-process)")
    parser.add_argument("--threads", type=int, default=None, help="decode/write threads (default: gpuillum's)")
    parser.add_argument("--methods", nargs="+", default=["jump"], metavar="NAME[:OPTION=VALUE,...]",
                        help="gpuillum methods to time besides the jump preset, named as for gpuillum compare, e.g. flatfield "
                        "median:radius=25 (in-process)")
    parser.add_argument("--qc", action="store_true", help="time every gpuillum run with its per-run QC report as well")
    parser.add_argument("--skip-cellprofiler", action="store_true", help="leave out the (slow) CellProfiler path")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: 16 sites x 2 channels of 256^2")
    parser.add_argument("--scratch", default=None, help="folder for the plate and outputs (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.shape = 16, (256, 256)

    from gpuillum.backend import gpu_available
    from gpuillum.job import default_threads, run_plate
    from gpuillum.qc.candidates import resolve

    threads = args.threads or default_threads()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="gpuillum-bench-"))
    try:
        started = time.perf_counter()
        plate = make_plate(scratch / "plate", args.images, args.shape)
        source = scratch / "plate"
        paths = sorted(str(p) for p in plate.images)
        by_channel = {channel: [str(p) for p, key in zip(plate.images, plate.keys) if key.channel == channel] for channel in plate.channels}
        n = len(paths)
        print(f"plate: {n} images {args.shape[0]}x{args.shape[1]} uint16 zlib in {time.perf_counter() - started:.1f} s; threads {threads}")
        rows = []

        def record(name, seconds, **extra):
            rows.append({"variant": name, "seconds": seconds, "images_per_s": n / seconds, **extra})
            print(f"  {name:<28} {seconds:8.2f} s {n / seconds:9.1f} img/s")

        # warm-up (numba/JIT compilation, page cache) on a copy of a few images, not timed
        run_plate(source, scratch / "warm", preset="jump", layout="gpuillum", device="cpu", threads=threads)
        shutil.rmtree(scratch / "warm")
        record("io-floor", timed(io_floor, paths, scratch / "floor", source, threads), threads=threads)
        for workers in args.workers:
            out = scratch / f"cpu-{workers}"
            seconds = timed(run_plate, source, out, preset="jump", layout="gpuillum", device="cpu", workers=workers,
                            threads=threads, qc=False)
            record(f"gpuillum cpu workers={workers}", seconds, device="cpu", workers=workers, threads=threads)
            shutil.rmtree(out)
        for spec in [m for m in args.methods if m != "jump"]:
            candidate = resolve(spec)  # the names of gpuillum compare: methods, presets, NAME:option=value
            out = scratch / f"method-{candidate.method.name}"
            seconds = timed(run_plate, source, out, method=candidate.method.name, options=candidate.settings,
                            layout="gpuillum", device="cpu", threads=threads, qc=False)
            record(f"gpuillum cpu {spec}", seconds, device="cpu", method=spec, threads=threads)
            shutil.rmtree(out)
        if args.qc:
            out = scratch / "qc"
            seconds = timed(run_plate, source, out, preset="jump", layout="gpuillum", device="cpu", threads=threads, qc=True)
            record("gpuillum cpu jump with QC", seconds, device="cpu", threads=threads, qc=True)
            shutil.rmtree(out)
        if gpu_available():
            out = scratch / "gpu"
            with GpuBusySampler() as busy:
                seconds = timed(run_plate, source, out, preset="jump", layout="gpuillum", device="gpu", threads=threads)
            record("gpuillum gpu", seconds, device="gpu", threads=threads, gpu_busy_fraction=busy.fraction)
            shutil.rmtree(out)
        if not args.skip_cellprofiler:
            record("cellprofiler path", timed(cellprofiler_path, by_channel, scratch / "cp", source), processes=1)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)

    by_name = {row["variant"]: row for row in rows}
    best_cpu = min((row for row in rows if row["variant"].startswith("gpuillum cpu workers=")), key=lambda row: row["seconds"])
    summary = {"best_cpu_variant": best_cpu["variant"],
               "vs_io_floor": best_cpu["seconds"] / by_name["io-floor"]["seconds"],
               "vs_io_floor_by_variant": {row["variant"]: row["seconds"] / by_name["io-floor"]["seconds"] for row in rows
                                          if row["variant"].startswith("gpuillum")}}
    if "cellprofiler path" in by_name:
        summary["speedup_vs_cellprofiler"] = by_name["cellprofiler path"]["seconds"] / best_cpu["seconds"]
    if "gpuillum gpu" in by_name:
        gpu = by_name["gpuillum gpu"]
        summary["gpu_vs_io_floor"] = gpu["seconds"] / by_name["io-floor"]["seconds"]
        summary["gpu_busy_fraction"] = gpu["gpu_busy_fraction"]
        print(f"GPU: {summary['gpu_vs_io_floor']:.2f}x the I/O floor's time, GPU busy {gpu['gpu_busy_fraction']}")
    print("\n| variant | s | img/s |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['seconds']:.2f} | {row['images_per_s']:.1f} |")
    print(f"\nbest CPU ({summary['best_cpu_variant']}): {summary['vs_io_floor']:.2f}x the I/O floor's time"
          + (f", {summary['speedup_vs_cellprofiler']:.2f}x faster than CellProfiler's path" if "speedup_vs_cellprofiler" in summary else ""))
    payload = {"machine": machine_description(), "images": n, "shape": list(args.shape), "quick": args.quick,
               "recipe": "jump (resize 0.2, median size 20, rescale Yes, divide)", "cpu_count": os.cpu_count(),
               "results": rows, "summary": summary}
    print(f"results: {write_results('plate', payload)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
