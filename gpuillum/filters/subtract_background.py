"""The frame of ImageJ's Process > Subtract Background, shared by its two background methods.

``rolling_ball_imagej`` and ``sliding_paraboloid`` compute a float32 background of each 2-D slice;
this module does what ImageJ does around that (docs/imagej.md sections 2, 4, 5):

* every slice of a stack on its own (leading axes), in float32 (8/16-bit values convert exactly);
* the output in the image's own type, as ImageJ writes it: 8/16-bit ``(orig - bg) + 0.5f`` (or
  ``+ 255.5f`` / ``+ 65535.5f`` with a light background, so that the background maps to white),
  clamped to the type's range and truncated, all in float32; ``create_background`` writes
  ``bg + 0.5f``, clamped and truncated; 32-bit images get ``orig - bg`` or ``bg`` unrounded;
* ``output_dtype="float32"`` instead: the unrounded float32 ``orig - bg`` (negatives kept) or the
  background itself, for callers that want a signed or float foreground.

ImageJ fails on one shape (section 3.5): when the rolling ball shrinks the image by s and the image
is at most s pixels wide, ImageJ throws ArrayIndexOutOfBoundsException and leaves the slice as it
was at that moment (8/16-bit: unchanged; 32-bit: negated if light, smoothed). ``ImageJFailure``
carries that state; in ImageJ's own output mode it is reproduced with a warning, with float32
output it is an error (there is no background to return).
"""
from __future__ import annotations

import math
import numbers
import warnings

import numba
import numpy as np

from ..errors import InvalidType, InvalidValue
from .._checks import ORDER_DTYPES, check_choice
from ..backend import get_array_module

OUTPUT_DTYPES = ("same", "float32")


class ImageJFailure(Exception):
    """ImageJ stops inside the background computation; ``pixels`` is the float32 slice as ImageJ
    leaves a 32-bit image at that point."""

    def __init__(self, pixels, reason: str):
        super().__init__(reason)
        self.pixels = pixels
        self.reason = reason


def check_stack(image, name: str = "image"):
    """A NumPy or CuPy array of ImageJ's grey types (uint8, uint16, float32) with at least two
    axes; leading axes are slices."""
    if not hasattr(image, "ndim") or not hasattr(image, "dtype"):
        raise InvalidType(f"{name}: expected a NumPy or CuPy array, got {type(image).__name__}")
    if image.ndim < 2:
        raise InvalidValue(f"{name}: expected a 2-D image or a stack of them, got shape {tuple(image.shape)}")
    if image.size == 0:
        raise InvalidValue(f"{name}: expected a non-empty array, got shape {tuple(image.shape)}")
    if image.dtype not in tuple(np.dtype(d) for d in ORDER_DTYPES):
        raise InvalidType(f"{name}: dtype {image.dtype} is not supported; expected uint8, uint16 or float32 (ImageJ's grey types)")
    return image


def check_imagej_radius(radius) -> float:
    """ImageJ's "Rolling ball radius": a finite number > 0.0001 (its dialog's limit)."""
    if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not math.isfinite(radius) or not radius > 0.0001:
        raise InvalidValue(f"radius: expected a finite number > 0.0001 (ImageJ's limit), got {radius!r}")
    return float(radius)


def subtract_background(image, background_of, *, light_background: bool, create_background: bool, output_dtype,
                        stats=None):
    """Run ImageJ's Subtract Background frame over every slice of ``image``.

    ``background_of(pixels)`` maps a float32 2-D slice to its float32 background (light
    background already handled) or raises ``ImageJFailure``. ``stats`` (an
    gpuillum.output_dtype.OutputStats, optional) counts the pixels and those ImageJ's 8/16-bit
    conversion clamps below 0 or above the maximum (a subtracted background leaves fewer grey
    levels by design, so those are not counted, as for every background method).
    """
    output_dtype = "same" if output_dtype is None else output_dtype
    if output_dtype in (np.float32, np.dtype(np.float32)):
        output_dtype = "float32"
    check_choice(output_dtype, "output_dtype", OUTPUT_DTYPES)
    xp = get_array_module(image)
    dtype = image.dtype if output_dtype == "same" else np.dtype(np.float32)
    out = xp.empty(image.shape, dtype=dtype)
    for index in np.ndindex(image.shape[:-2]):
        plane = image[index]
        pixels = plane.astype(np.float32)
        try:
            background = background_of(pixels)
        except ImageJFailure as failure:
            if output_dtype == "float32":
                raise InvalidValue(f"image: {failure.reason}; ImageJ computes no background for it") from None
            warnings.warn(f"{failure.reason}: ImageJ leaves such a slice as it is at that point, and so does gpuillum",
                          RuntimeWarning, stacklevel=3)
            out[index] = failure.pixels if plane.dtype == np.float32 else plane
            if stats is not None:
                stats.pixels += int(plane.size)
            continue
        out[index], below, above = _output(plane, pixels, background, light_background, create_background, output_dtype)
        if stats is not None:
            stats.pixels += int(plane.size)
            stats.below += below
            stats.above += above
    return out


def _output(plane, pixels, background, light: bool, create: bool, output_dtype: str):
    """(the slice's output, pixels clamped below 0, pixels clamped above the maximum)."""
    xp = get_array_module(background)
    if output_dtype == "float32" or plane.dtype == np.float32:
        return (background if create else xp.subtract(pixels, background)), 0, 0
    top = np.iinfo(plane.dtype).max
    offset = np.float32(0.5 if create or not light else top + 0.5)
    if xp is np:
        out = np.empty(plane.shape, plane.dtype)
        below, above = _round_into(pixels, background, create, offset, np.float32(top), out)
        return out, int(below), int(above)
    if create:
        value = xp.add(background, offset)
    else:
        value = xp.subtract(pixels, background)
        value = xp.add(value, offset, out=value)
    below, above = int(xp.count_nonzero(value < 0)), int(xp.count_nonzero(value > top))
    value = xp.clip(value, np.float32(0), np.float32(top), out=value)
    return value.astype(plane.dtype), below, above  # truncation, as Java's (int) cast


@numba.njit(cache=True, nogil=True)
def _round_into(pixels, background, create, offset, top, out):
    """ImageJ's conversion to 8/16-bit in one pass: ``(orig - bg) + offset`` (or ``bg + offset``
    when creating the background), clamped to [0, top], truncated; all float32. Returns the
    counts of values clamped below 0 and above ``top``."""
    flat_pixels = pixels.reshape(-1)
    flat_background = background.reshape(-1)
    flat_out = out.reshape(-1)
    below = 0
    above = 0
    for i in range(flat_out.size):
        value = flat_background[i] + offset if create else (flat_pixels[i] - flat_background[i]) + offset
        if value < 0:
            value = np.float32(0)
            below += 1
        if value > top:
            value = top
            above += 1
        flat_out[i] = value
    return below, above
