"""Shared benchmark helpers: timing with medians, machine description, JSON results."""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def source_commit() -> str | None:
    """The gpuillum commit a benchmark measures: ``GPUILLUM_COMMIT`` when set (a copy of the working
    tree without .git, as carried to a GPU machine), else ``git describe --always --dirty`` of this
    checkout ("-dirty": uncommitted changes were measured too); None when neither says."""
    if os.environ.get("GPUILLUM_COMMIT"):
        return os.environ["GPUILLUM_COMMIT"]
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=Path(__file__).resolve().parent,
                                   capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if described.returncode != 0:
        return None
    return described.stdout.strip() or None


def machine_description() -> dict:
    """Where a benchmark ran: CPU, cores, library versions and the GPU if one is usable."""
    import scipy

    info = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": source_commit(),
        "gpu": None,
    }
    for module in ("skimage", "centrosome", "numba", "tifffile", "dask", "cupy", "cucim"):
        try:
            info[module] = __import__(module).__version__
        except Exception:
            pass
    from gpuillum.backend import gpu_available

    if gpu_available():
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        info["gpu"] = {
            "name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
            "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion(),
        }
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def synchronize(result=None):
    """Wait for queued GPU work (no-op for NumPy results), so timings cover the computation."""
    from gpuillum.backend import gpu_available, is_cupy_array

    if gpu_available() and (result is None or is_cupy_array(result)):
        import cupy

        cupy.cuda.Device().synchronize()


def time_call(fn, repeats: int = 3, warmup: int = 1, max_seconds: float | None = None) -> dict:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (GPU synchronised).

    Stops repeating once ``max_seconds`` is spent (at least one timed run).
    """
    for _ in range(warmup):
        synchronize(fn())
    times = []
    start_all = time.perf_counter()
    for _ in range(repeats):
        t0 = time.perf_counter()
        synchronize(fn())
        times.append(time.perf_counter() - t0)
        if max_seconds is not None and time.perf_counter() - start_all > max_seconds:
            break
    return {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times)}


def write_results(kind: str, payload: dict) -> Path:
    """Write ``payload`` as benchmarks/results/<kind>-<device>-<date>.json and return the path;
    a ``--quick`` smoke run (``payload["quick"]``) goes to ``...-quick.json`` (git-ignored), so it
    never replaces a full run's results."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    machine = payload.get("machine") or machine_description()
    device = "gpu-" + machine["gpu"]["name"].replace(" ", "_") if machine.get("gpu") else "cpu"
    stamp = _dt.datetime.now().strftime("%Y%m%d")
    path = RESULTS_DIR / f"{kind}-{device}-{stamp}{'-quick' if payload.get('quick') else ''}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str))
    os.replace(tmp, path)
    return path
