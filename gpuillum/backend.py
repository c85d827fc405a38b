"""The one place that knows about CuPy versus NumPy.

Every other module asks this one which array module an array belongs to, whether a GPU can be
used, and for compiled CUDA kernels. CuPy is optional: when it is not installed, or installed on
a machine without a usable GPU (``cupy.is_available()`` is false), everything runs on NumPy and
nothing here raises. No GPU API is touched at import time.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from .errors import InvalidType, InvalidValue

CUDA_SOURCE_DIRS = (
    Path(__file__).resolve().parent / "filters" / "cuda",
    Path(__file__).resolve().parent / "engine" / "cuda",
)


@functools.lru_cache(maxsize=1)
def _cupy() -> ModuleType | None:
    """Return the cupy module, or None when it cannot be imported."""
    try:
        import cupy
    except Exception:  # ImportError, or a broken CUDA installation
        return None
    return cupy


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when CuPy is installed and at least one CUDA device answers (cached)."""
    if os.environ.get("GPUILLUM_DISABLE_GPU", "") not in ("", "0"):
        return False
    cp = _cupy()
    if cp is None:
        return False
    try:
        return bool(cp.is_available())
    except Exception:
        return False


def gpu_count() -> int:
    """Number of visible CUDA devices (0 without a usable GPU)."""
    if not gpu_available():
        return 0
    try:
        return int(_cupy().cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def is_cupy_array(x) -> bool:
    """True when ``x`` is a CuPy array (without importing CuPy when it is absent)."""
    cp = _cupy()
    return cp is not None and isinstance(x, cp.ndarray)


def get_array_module(*arrays) -> ModuleType:
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if any(is_cupy_array(a) for a in arrays):
        return _cupy()
    return np


def get_ndimage(xp: ModuleType) -> ModuleType:
    """scipy.ndimage for NumPy, cupyx.scipy.ndimage for CuPy."""
    if xp is np:
        import scipy.ndimage as ndi
    else:
        import cupyx.scipy.ndimage as ndi
    return ndi


def device_of(array):
    """Context manager making ``array``'s GPU current (a null context for NumPy arrays)."""
    if is_cupy_array(array):
        return _cupy().cuda.Device(array.device.id)
    return contextlib.nullcontext()


def on_input_device(function):
    """Decorator for kernels: run with the first argument's GPU current, so an array on cuda:N is
    computed on cuda:N whatever device the caller has current (NumPy inputs: no effect)."""

    @functools.wraps(function)
    def on_device(image, *args, **kwargs):
        with device_of(image):
            return function(image, *args, **kwargs)

    return on_device


def to_numpy(x) -> np.ndarray:
    """A NumPy array holding ``x`` (copies device arrays to the host)."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def same_backend(x, like):
    """``x`` as an array of the same backend (and device) as ``like``."""
    if is_cupy_array(like):
        cp = _cupy()
        with cp.cuda.Device(like.device.id):
            return cp.asarray(x)
    return to_numpy(x)


@dataclass(frozen=True)
class Device:
    """Where a job computes: ``kind`` is "cpu" or "cuda"; ``index`` the CUDA device number."""

    kind: str
    index: int = 0

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"

    @property
    def xp(self) -> ModuleType:
        return _cupy() if self.is_gpu else np

    def __str__(self) -> str:
        return f"cuda:{self.index}" if self.is_gpu else "cpu"

    def asarray(self, x):
        """Move ``x`` onto this device (a no-op when it is already there)."""
        if not self.is_gpu:
            return to_numpy(x)
        cp = _cupy()
        with cp.cuda.Device(self.index):
            return cp.asarray(x)

    def activate(self):
        """Context manager making this device current (a null context on the CPU)."""
        if not self.is_gpu:
            return contextlib.nullcontext()
        return _cupy().cuda.Device(self.index)


def resolve_device(spec: str | Device | None = "auto") -> Device:
    """Parse ``auto|cpu|gpu|cuda:N`` into a Device.

    ``auto`` means the first GPU when one is usable, otherwise the CPU. Asking for a GPU that is not
    there raises ValueError with a one-line reason.
    """
    if isinstance(spec, Device):
        return spec
    if spec is not None and not isinstance(spec, str):
        raise InvalidType(f"device: expected auto, cpu, gpu or cuda:N, got {spec!r}")
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return Device("cpu")
    if spec == "auto":
        return Device("cuda", 0) if gpu_available() else Device("cpu")
    if spec in ("gpu", "cuda"):
        index = 0
    elif spec.startswith("cuda:") and spec[5:].isdigit():
        index = int(spec[5:])
    else:
        raise InvalidValue(f"device: expected auto, cpu, gpu or cuda:N, got {spec!r}")
    if not gpu_available():
        raise InvalidValue(f"device {spec!r}: no usable CUDA GPU (cupy missing or cupy.is_available() is false)")
    if index >= gpu_count():
        raise InvalidValue(f"device {spec!r}: only {gpu_count()} CUDA device(s) visible")
    return Device("cuda", index)


def cuda_source(name: str) -> str:
    """The text of a CUDA source file shipped with gpuillum (``filters/cuda`` or ``engine/cuda``)."""
    for folder in CUDA_SOURCE_DIRS:
        path = folder / name
        if path.is_file():
            return path.read_text()
    raise FileNotFoundError(f"CUDA source {name!r} not found in {[str(d) for d in CUDA_SOURCE_DIRS]}")


def all_cuda_sources() -> list[Path]:
    """Every CUDA source file shipped with gpuillum."""
    return sorted(p for d in CUDA_SOURCE_DIRS if d.is_dir() for p in d.glob("*.cu"))


CUDA_COMPILE_OPTIONS = ("--std=c++17",)


@functools.lru_cache(maxsize=None)
def _raw_module(name: str, name_expressions: tuple[str, ...], device_id: int):
    cp = _cupy()
    with cp.cuda.Device(device_id):
        return cp.RawModule(
            code=cuda_source(name),
            options=CUDA_COMPILE_OPTIONS,
            name_expressions=name_expressions or None,
        )


def cuda_kernel(source_name: str, kernel_name: str, name_expressions: tuple[str, ...] = ()):
    """A compiled kernel from one of gpuillum's CUDA sources, cached per source and device.

    ``name_expressions`` lists every template instantiation the source offers (for example
    ``("median_hist<unsigned short>",)``); ``kernel_name`` is one of them or a plain extern "C" name.
    """
    cp = _cupy()
    module = _raw_module(source_name, tuple(name_expressions), cp.cuda.Device().id)
    return module.get_function(kernel_name)


def compile_check(source_name: str, name_expressions: tuple[str, ...] = (), arch: str = "compute_90") -> str:
    """Compile a CUDA source to PTX with NVRTC, without a GPU, and return the PTX.

    Used by CI to catch syntax and type errors in the kernels on CPU-only machines. Relies on a
    private CuPy helper (``_NVRTCProgram``) because the public compiler entry point asks the driver
    for the GPU's architecture; raises ``cupy.cuda.compiler.CompileException`` on errors.
    """
    cp = _cupy()
    if cp is None:
        raise RuntimeError("compile_check needs cupy (pip install .[cuda-lint])")
    from cupy._core.core import assemble_cupy_compiler_options
    from cupy.cuda.compiler import _NVRTCProgram

    options = tuple(assemble_cupy_compiler_options(CUDA_COMPILE_OPTIONS)) + (f"-arch={arch}",)
    program = _NVRTCProgram(cuda_source(source_name), source_name, name_expressions=list(name_expressions) or None, method="ptx")
    ptx, _mapping = program.compile(options)
    return ptx
