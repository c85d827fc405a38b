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

Units: the formulas above take the function in CellProfiler's units. gpuillum's kernels return
backgrounds in the image's raw units (counts); ``units="counts"`` subtracts such a background as
it is, or divides by it normalised to mean 1, and ``units="auto"`` (the default) recognises an
integer-dtype background as counts and refuses, in one line, a float function that looks like
counts, instead of returning a black or an all-ones image. ``output_dtype`` ("same", "float32",
"signed") and ``stats`` follow gpuillum.output_dtype; an IlluminationModel is applied as itself.
"""
from __future__ import annotations

import functools

import numpy as np

from ._checks import check_choice, check_float32_range, check_image, pixels_are
from .backend import get_array_module, is_cupy_array
from .output_dtype import OUTPUT_DTYPES, OutputStats, cast_output
from .errors import InvalidType, InvalidValue

APPLY_METHODS = ("Divide", "Subtract")
ON_INVALID = ("raise", "ignore")
UNITS = ("auto", "cellprofiler", "counts")
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
        raise InvalidType(f"function: expected a numeric array, got dtype {function.dtype}")
    if tuple(function.shape) != tuple(image.shape):
        raise InvalidValue(f"function: shape {tuple(function.shape)} does not match the image shape {tuple(image.shape)}")
    if is_cupy_array(function) != is_cupy_array(image):
        raise InvalidType("function: must live on the same backend as the image (both NumPy or both CuPy)")
    xp = get_array_module(function)
    if on_invalid == "raise":
        check_float32_range(function, "function")
    function = function.astype(xp.float32, copy=False)
    if on_invalid == "raise":
        count = invalid_function_pixels(function, method)
        if count:
            what = "zero, negative or not finite" if method == "Divide" else "not finite"
            raise InvalidValue(
                f"function: {pixels_are(count)} {what}; {method} would produce inf/NaN "
                "(fix the function, or pass on_invalid='ignore' for CellProfiler's unguarded arithmetic)"
            )
    return function


def apply(image, function, method: str = "Divide", clip_low: bool = True, clip_high: bool = True, *,
          on_invalid: str = "raise", units: str = "auto", output_dtype: str = "same", stats: OutputStats | None = None):
    """Correct ``image`` with an illumination ``function`` (same shape and backend) or an IlluminationModel.

    Float input gives float32 output with CellProfiler's semantics; uint8/uint16 input keeps its
    dtype (round half to even, clamp). See the module docstring for the exact formulas.

    Parameters
    ----------
    image : 2-D NumPy or CuPy array (uint8, uint16, float32, float64)
    function : array of the image's shape and backend, or gpuillum.IlluminationModel
        A model is applied as ``model.apply(image)``; ``method`` and ``units`` then do not apply.
    method : {"Divide", "Subtract"}
    clip_low, clip_high : bool
        CellProfiler's clipping of float results to [0, 1] (``output_dtype="same"`` only).
    on_invalid : {"raise", "ignore"}
        Refuse a function that would divide by zero, a negative or a non-finite value.
    units : {"auto", "cellprofiler", "counts"}
        ``cellprofiler``: the function is in CellProfiler's units (1.0 = the dtype maximum);
        ``counts``: the function is in the image's raw units, as gpuillum's kernels return it
        (Subtract subtracts it as it is; Divide divides by it normalised to mean 1). ``auto``:
        counts for an integer-dtype function, cellprofiler for a float one, refused in one line
        when a float function looks like raw counts (it would give a black or an all-ones image).
    output_dtype : {"same", "float32", "signed"}
        See gpuillum.output_dtype.
    stats : OutputStats, optional
        Counts the pixels and grey levels the cast to the output dtype loses.

    Returns
    -------
    The corrected image on the image's backend.

    Examples
    --------
    >>> corrected = apply(raw_uint16, function)                         # CellProfiler's Divide
    >>> foreground = apply(raw_uint16, gi.median_filter(raw_uint16, 25), "Subtract", output_dtype="signed")
    """
    from .model import IlluminationModel

    if isinstance(function, IlluminationModel):
        return function.apply(image, output_dtype=output_dtype, stats=stats)
    check_choice(method, "method", APPLY_METHODS)
    check_choice(on_invalid, "on_invalid", ON_INVALID)
    check_choice(units, "units", UNITS)
    check_choice(output_dtype, "output_dtype", OUTPUT_DTYPES)
    for name, flag in (("clip_low", clip_low), ("clip_high", clip_high)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InvalidType(f"{name}: expected True or False, got {flag!r}")
    image = check_image(image, "image", dtypes=IMAGE_DTYPES, allow_nan=True)
    units = _resolve_units(image, function, method, units)
    function = _check_function(function, image, method, on_invalid)
    subtract = method == "Subtract"
    xp = get_array_module(image)
    if units == "counts":
        return cast_output(_counts_values(image, function, subtract, xp), image.dtype, output_dtype, stats=stats, source=image)
    if image.dtype.kind == "u":
        top = np.float32(np.iinfo(image.dtype).max)
        if xp is not np and output_dtype == "same" and stats is None:
            return _integer_kernel()(image, function, top, np.int32(subtract))  # the fused one-pass kernel
        values = _integer_values(image, function, subtract, top, xp)
        return cast_output(values, image.dtype, output_dtype, stats=stats, source=image)
    image = image.astype(xp.float32, copy=False)
    if output_dtype != "same":  # float32 or signed: the values with their negatives, unclipped
        return cast_output(_float_values(image, function, subtract, xp), image.dtype, output_dtype, stats=stats)
    if stats is not None:
        stats.pixels += int(image.size)
    if xp is not np:
        return _float_kernel()(image, function, np.int32(subtract), np.int32(bool(clip_low)), np.int32(bool(clip_high)))
    return _apply_float(image, function, subtract, clip_low, clip_high, xp)


def _resolve_units(image, function, method: str, units: str) -> str:
    """``units`` with "auto" decided (see :func:`apply`); a one-line ValueError where a float
    function in CellProfiler's units would blacken the image or flatten it to ones."""
    if units != "auto":
        return units
    if getattr(function, "dtype", np.dtype(np.float32)).kind in "iu":
        return "counts"
    if image.dtype.kind != "u" or getattr(function, "ndim", 0) != 2:
        return "cellprofiler"
    xp = get_array_module(function)
    finite = function[xp.isfinite(function)]
    if finite.size == 0:
        return "cellprofiler"
    if method == "Subtract" and float(finite.max()) > 1:
        raise InvalidValue(f"function: values up to {float(finite.max()):.6g}, but a subtracted function in CellProfiler's "
                         "units lies within [0, 1] (1 = the dtype maximum), so this would blacken the image; pass "
                         "units='counts' for a background in the image's own units, or units='cellprofiler' to insist")
    # a CellProfiler function to divide by is rescaled (its 2nd percentile is 1, or its median) or an
    # average image within [0, 1]; a background in counts lies above 1 and near the image's own values
    level, low = (float(v) for v in xp.percentile(finite, xp.asarray([50.0, 2.0])))
    if method == "Divide" and low > 1.5 and level >= float(xp.median(image)) / 4:
        raise InvalidValue(f"function: its median {level:.6g} is of the order of the image's pixel values, so it looks like a "
                         "background in raw counts and dividing by it would give an image of ones; pass units='counts' to "
                         "divide by it normalised to mean 1, or units='cellprofiler' to divide by it as it is")
    return "cellprofiler"


def _counts_values(image, function, subtract: bool, xp):
    """Float32 values of a correction by a function in the image's raw units."""
    values = image.astype(xp.float32)
    if subtract:
        return values - function
    flat = (function / xp.float32(float(function.mean(dtype=xp.float64)))).astype(xp.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # only reachable with on_invalid="ignore"
        return values / flat


def _float_values(image, function, subtract: bool, xp):
    """CellProfiler's float formulas without its clipping (float32 and signed outputs)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # only reachable with on_invalid="ignore"
        return image - function if subtract else image / function


def _apply_float(image, function, subtract: bool, clip_low: bool, clip_high: bool, xp):
    """CellProfiler's float formulas (NumPy; the CuPy path is the fused kernel below)."""
    out = _float_values(image, function, subtract, xp)
    zero = xp.float32(0)
    if subtract or clip_low:
        out = xp.where(out < 0, zero, out)
    if clip_high:
        out = xp.where(out > 1, xp.float32(1), out)
    return out.astype(xp.float32, copy=False)


def _integer_values(image, function, subtract: bool, top, xp):
    """Float32 values of CellProfiler's formulas on an integer image, before rounding and clamping:
    ``x / f`` or ``x - f * M``, one rounding per operation (the CuPy kernel avoids the FMA)."""
    if xp is not np:
        return _integer_values_kernel()(image, function, top, np.int32(subtract))
    values = image.astype(xp.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # only reachable with on_invalid="ignore"
        return values - function * top if subtract else values / function


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


@functools.lru_cache(maxsize=None)
def _integer_values_kernel():
    import cupy

    return cupy.ElementwiseKernel(
        "T x, float32 f, float32 top, int32 subtract",
        "float32 v",
        "v = subtract ? __fsub_rn((float)x, __fmul_rn(f, top)) : __fdiv_rn((float)x, f);",
        "gpuillum_apply_integer_values",
    )
