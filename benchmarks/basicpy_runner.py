"""Fit BaSiCPy 2.0 to stacks in a separate environment (run by accuracy_flatfield.py and
bench_flatfield.py with ``--basicpy-python``; BaSiCPy is never a dependency of gpuillum).

Usage: ``/path/to/basicpy-venv/bin/python benchmarks/basicpy_runner.py IN.npz OUT.npz``. IN holds
``images`` (N, Y, X) and ``settings`` (a JSON string of BaSiC keyword arguments) for each job
``<k>_images`` / ``<k>_settings``; OUT gets ``<k>_flatfield``, ``<k>_darkfield``, ``<k>_fit_s``
(wall time of ``fit`` alone), ``<k>_cpu_s`` (its process CPU time) and ``version``. Torch runs on
the CPU with its default threads, or ``$BASICPY_THREADS`` of them.
"""
import json
import sys
import time
import warnings

import numpy as np


def main(source: str, target: str) -> int:
    import os

    import basicpy
    import torch

    if os.environ.get("BASICPY_THREADS"):
        torch.set_num_threads(int(os.environ["BASICPY_THREADS"]))

    data = np.load(source, allow_pickle=False)
    jobs = sorted({name.rsplit("_", 1)[0] for name in data.files if name.endswith("_images")})
    from importlib.metadata import version

    out = {"version": np.array(version("basicpy"))}
    for job in jobs:
        settings = json.loads(str(data[f"{job}_settings"]))
        images = data[f"{job}_images"]
        model = basicpy.BaSiC(**settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start, cpu = time.perf_counter(), time.process_time()
            model.fit(images)
            out[f"{job}_fit_s"] = np.array(time.perf_counter() - start)
            out[f"{job}_cpu_s"] = np.array(time.process_time() - cpu)
        out[f"{job}_flatfield"] = np.asarray(model.flatfield, np.float32)
        out[f"{job}_darkfield"] = np.asarray(model.darkfield, np.float32)
    np.savez(target, **out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
