"""Applying an illumination function: CellProfiler's CorrectIlluminationApply plus a dtype policy.

Float images follow CellProfiler exactly (cellprofiler.md section 5), in float32:

* Divide: ``out = image / function``; Subtract: ``out = image - function`` and negatives are
  always set to 0 (CellProfiler does this whatever the clip settings say);
* then ``clip_low`` sets values < 0 to 0 and ``clip_high`` values > 1 to 1 (both default on).
  NaN survives both clips, as in CellProfiler.

uint8 / uint16 images keep their dtype (the function stays in CellProfiler's float units, where
1.0 is the dtype maximum M):

* Divide: ``rint(image / function)``; Subtract: ``rint(image - function * M)``; this is what
  CellProfiler computes on ``image / M`` followed by saving at the original bit depth;
* the result is rounded half to even and clamped to [0, M], never wrapped. The clamp makes
  ``clip_low`` / ``clip_high`` moot for integers (nothing outside the dtype range survives).
  All arithmetic is float32 with one rounding per operation on both backends.

Division by zero, by a negative or by a non-finite function value is refused by default
(``on_invalid="raise"``) instead of silently producing inf/NaN or a black image (no illumination is
negative: such a function is a zero-mean background, e.g. Splines with rescale No, to subtract);
``on_invalid="ignore"`` gives CellProfiler's unguarded behaviour (for integer output +inf then
clamps to M and NaN becomes 0). On the GPU one fused ``cupy.ElementwiseKernel`` does the
arithmetic, clipping and dtype conversion in a single pass.
"""
from __future__ import annotations

import functools

import numpy as np

from ._checks import check_choice, check_float32_range, check_image, pixels_are
from .backend import get_array_module, is_cupy_array

APPLY_METHODS = ("Divide", "Subtract")
ON_INVALID = ("raise", "ignore")
IMAGE_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def invalid_function_pixels(function, method: str = "Divide") -> int:
    """Number of function pixels ``method`` cannot use: zero, negative or non-finite for Divide,
    non-finite for Subtract."""
    check_choice(method, "method", APPLY_METHODS)
    xp = get_array_module(function)
    bad = ~xp.isfinite(function)
    if method == "Divide":
        bad |= function <= 0
    return int(bad.sum())


def _check_function(function, image, method: str, on_invalid: str):
    function = check_image(function, "function", dtypes=None, allow_nan=True)
    if function.dtype.kind not in "fiu":
        raise TypeError(f"function: expected a numeric array, got dtype {function.dtype}")
    if tuple(function.shape) != tuple(image.shape):
        raise ValueError(f"function: shape {tuple(function.shape)} does not match the image shape {tuple(image.shape)}")
    if is_cupy_array(function) != is_cupy_array(image):
        raise TypeError("function: must live on the same backend as the image (both NumPy or both CuPy)")
    xp = get_array_module(function)
    if on_invalid == "raise":
        check_float32_range(function, "function")
    function = function.astype(xp.float32, copy=False)
    if on_invalid == "raise":
        count = invalid_function_pixels(function, method)
        if count:
            what = "zero, negative or not finite" if method == "Divide" else "not finite"
            raise ValueError(
                f"function: {pixels_are(count)} {what}; {method} would produce inf/NaN "
                "(fix the function, or pass on_invalid='ignore' for CellProfiler's unguarded arithmetic)"
            )
    return function


def apply(image, function, method: str = "Divide", clip_low: bool = True, clip_high: bool = True, *, on_invalid: str = "raise"):
    """Correct ``image`` with an illumination ``function`` (same shape and backend).

    Float input gives float32 output with CellProfiler's semantics; uint8/uint16 input keeps its
    dtype (round half to even, clamp). See the module docstring for the exact formulas.
    """
    check_choice(method, "method", APPLY_METHODS)
    check_choice(on_invalid, "on_invalid", ON_INVALID)
    for name, flag in (("clip_low", clip_low), ("clip_high", clip_high)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {flag!r}")
    image = check_image(image, "image", dtypes=IMAGE_DTYPES, allow_nan=True)
    function = _check_function(function, image, method, on_invalid)
    subtract = method == "Subtract"
    xp = get_array_module(image)
    if image.dtype.kind == "u":
        top = float(np.iinfo(image.dtype).max)
        if xp is not np:
            return _integer_kernel()(image, function, np.float32(top), np.int32(subtract))
        return _apply_integer(image, function, subtract, np.float32(top), xp)
    image = image.astype(xp.float32, copy=False)
    if xp is not np:
        return _float_kernel()(image, function, np.int32(subtract), np.int32(bool(clip_low)), np.int32(bool(clip_high)))
    return _apply_float(image, function, subtract, clip_low, clip_high, xp)


def _apply_float(image, function, subtract: bool, clip_low: bool, clip_high: bool, xp):
    """CellProfiler's float formulas (NumPy; the CuPy path is the fused kernel below)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # only reachable with on_invalid="ignore"
        out = image - function if subtract else image / function
    zero = xp.float32(0)
    if subtract or clip_low:
        out = xp.where(out < 0, zero, out)
    if clip_high:
        out = xp.where(out > 1, xp.float32(1), out)
    return out.astype(xp.float32, copy=False)


def _apply_integer(image, function, subtract: bool, top, xp):
    """Integer policy: float32 arithmetic, rint, NaN and negatives -> 0, clamp to the dtype maximum."""
    values = image.astype(xp.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # only reachable with on_invalid="ignore"
        out = values - function * top if subtract else values / function
        out = xp.rint(out)
    out = xp.where(out >= 0, out, xp.float32(0))
    out = xp.minimum(out, top)
    return out.astype(image.dtype)


@functools.lru_cache(maxsize=None)
def _float_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "float32 x, float32 f, int32 subtract, int32 clip_low, int32 clip_high",
        "float32 y",
        """
        float v = subtract ? __fsub_rn(x, f) : __fdiv_rn(x, f);
        if ((subtract || clip_low) && v < 0.0f) v = 0.0f;
        if (clip_high && v > 1.0f) v = 1.0f;
        y = v;
        """,
        "gpuillum_apply_float",
    )


@functools.lru_cache(maxsize=None)
def _integer_kernel():
    import cupy

    # __fmul_rn / __fsub_rn stop the compiler from fusing into an FMA, so rounding matches NumPy.
    return cupy.ElementwiseKernel(
        "T x, float32 f, float32 top, int32 subtract",
        "T y",
        """
        float v = subtract ? __fsub_rn((float)x, __fmul_rn(f, top)) : __fdiv_rn((float)x, f);
        v = rintf(v);
        if (!(v >= 0.0f)) v = 0.0f;
        if (v > top) v = top;
        y = (T)v;
        """,
        "gpuillum_apply_integer",
    )
