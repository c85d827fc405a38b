"""Fit speed of the flat-field method per image, beside BaSiCPy 2.0 in the same run.

A synthetic plate (gpuillum.methods.flatfield.plates, ``--images`` of ``--size``^2 uint16) is
fitted by ``gi.fit_flatfield`` (darkfield on; the time includes shrinking every image to the
working size) and, when ``--basicpy-python`` names a Python with BaSiCPy, by ``BaSiC(
get_darkfield=True)`` with and without ``sort_intensity`` (``fit`` alone, timed inside its own
process: benchmarks/basicpy_runner.py). The runs alternate, ``--repeats`` times, and medians are
reported with their ratio: wall time with each library's default threads, and CPU time (process
time, all threads; with ``--torch-threads 1`` BaSiCPy's is one thread's, as in docs/peers.md),
which a loaded machine disturbs less.

Usage: ``python benchmarks/bench_flatfield.py [--basicpy-python /work/basicpy-venv/bin/python]``
or ``--quick``. Writes benchmarks/results/flatfield[-torch<N>]-<device>-<date>.json.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy_flatfield import BASICPY, run_basicpy  # noqa: E402
from benchmarks.common import machine_description, synchronize, write_results  # noqa: E402
from gpuillum.methods.flatfield import fit_flatfield  # noqa: E402
from gpuillum.methods.flatfield.plates import make_plate  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--images", type=int, nargs="+", default=[24, 96], help="plate sizes (default 24 96)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats (default 3)")
    parser.add_argument("--basicpy-python", help="a Python with BaSiCPy 2.0 (e.g. /work/basicpy-venv/bin/python)")
    parser.add_argument("--torch-threads", type=int, help="torch threads for BaSiCPy (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 6 images of 96^2, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.images, args.repeats = 96, [6], 1
    results = []
    for count in args.images:
        plate = make_plate(count, (args.size, args.size), kind="gaussian", dark=100, background=300, seed=1)
        fit_flatfield(plate.images[:4])  # warm caches (operators, FFT plans)
        times = {"gpuillum": [], "gpuillum_cpu": []}
        jobs = {n: (plate.images, s) for n, s in BASICPY.items()}
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            synchronize(fit_flatfield(plate.images).flatfield)
            times["gpuillum"].append(time.perf_counter() - start)
            times["gpuillum_cpu"].append(time.process_time() - cpu)
            if args.basicpy_python:
                for name, (_, _, seconds, cpu_seconds) in run_basicpy(args.basicpy_python, jobs, args.torch_threads).items():
                    times.setdefault(name, []).append(seconds)
                    times.setdefault(name + "_cpu", []).append(cpu_seconds)
        record = {"images": count, "size": args.size, "load_1min": os.getloadavg()[0], "torch_threads": args.torch_threads}
        for name, values in times.items():
            record[f"{name}_fit_s"] = statistics.median(values)
            record[f"{name}_s_per_image"] = statistics.median(values) / count
        for name in BASICPY:
            if f"{name}_fit_s" in record:
                record[f"speedup_vs_{name}"] = record[f"{name}_fit_s"] / record["gpuillum_fit_s"]
                record[f"cpu_speedup_vs_{name}"] = record[f"{name}_cpu_fit_s"] / record["gpuillum_cpu_fit_s"]
        results.append(record)
        print(record, flush=True)
    kind = "flatfield" if not args.torch_threads else f"flatfield-torch{args.torch_threads}"
    path = write_results(kind, {"quick": args.quick, "machine": machine_description(), "results": results,
                                       "repeats": args.repeats, "basicpy": bool(args.basicpy_python)})
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
