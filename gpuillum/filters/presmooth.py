"""Pre-smoothing before a background is estimated: ImageJ's 3x3 mean, a Gaussian, or nothing.

Background estimators (rolling balls, the sliding paraboloid, minima) follow the darkest pixels,
so noise pulls them down; smoothing the image they look at first (but subtracting from the
original) keeps them at the noise-free level. Every background method takes
``presmooth="mean" | "gaussian" | "none"`` (True and False mean "mean" and "none"):

* "mean": ImageJ's 3x3 mean of Subtract Background (docs/imagej.md section 6.1), bit for bit: a
  separable pass along each row, then along each column of the result, each output
  ``((left + centre) + right) * 0.333333333f`` in float32 (a multiplication, not a division),
  line ends replicated, and (ImageJ 1.54t4 and later) a pixel whose mean would be NaN kept as it
  was. On 8/16-bit data this is exactly what ImageJ subtracts its background from.
* "gaussian": ``gaussian_filter(sigma)`` (normalised at the borders, float32), for images whose
  noise needs more than 3x3.
* "none": the image as float32.
"""
from __future__ import annotations

import numbers

import numba
import numpy as np

from ..errors import InvalidValue
from .._checks import check_choice
from ..backend import get_array_module, on_input_device
from .bands import cpu_threads, run_jobs

PRESMOOTH = ("mean", "gaussian", "none")
THIRD = np.float32(0.333333333)  # ImageJ's constant: 0x3EAAAAAB, the float nearest 1/3


def resolve_presmooth(presmooth, sigma):
    """("mean" | "gaussian" | "none", sigma or None) from a ``presmooth`` argument (True is
    "mean", False "none"); a one-line ValueError for a bad choice or a missing sigma."""
    if presmooth is True:
        presmooth = "mean"
    elif presmooth is False:
        presmooth = "none"
    check_choice(presmooth, "presmooth", PRESMOOTH)
    if presmooth == "gaussian":
        if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma <= 0:
            raise InvalidValue(f"sigma: presmooth='gaussian' needs a finite sigma > 0, got {sigma!r}")
        return presmooth, float(sigma)
    if sigma is not None:
        raise InvalidValue(f"sigma: only used with presmooth='gaussian', got sigma={sigma!r} with presmooth={presmooth!r}")
    return presmooth, None


@on_input_device
def presmooth(image, method="mean", *, sigma=None):
    """The smoothed float32 copy of a 2-D ``image`` that background methods look at.

    Parameters
    ----------
    image : 2-D NumPy or CuPy array (uint8, uint16, float32).
    method : "mean" (ImageJ's 3x3 mean, exact), "gaussian" (needs ``sigma``) or "none";
        True / False stand for "mean" / "none".
    sigma : float, the Gaussian's standard deviation in pixels.

    Returns
    -------
    float32 array of the same shape and backend.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> gi.presmooth(np.array([[0, 3, 6]], np.uint8))
    array([[1., 3., 5.]], dtype=float32)
    """
    method, sigma = resolve_presmooth(method, sigma)
    if getattr(image, "ndim", None) != 2:
        raise InvalidValue(f"image: expected a 2-D array, got shape {getattr(image, 'shape', None)}")
    return smooth_float(get_array_module(image).asarray(image, dtype=np.float32), method, sigma)


def smooth_float(pixels, method: str, sigma):
    """``presmooth`` of a float32 2-D array whose arguments are already checked (may return it)."""
    if method == "mean":
        return imagej_mean3x3(pixels)
    if method == "gaussian":
        from .smoothing import gaussian_filter

        return gaussian_filter(pixels, sigma)
    return pixels


def imagej_mean3x3(pixels):
    """ImageJ's 3x3 mean (BackgroundSubtracter.filter3x3(MEAN)) of a float32 2-D array: rows,
    then columns, float32 arithmetic in ImageJ's order, NaN means keep the pixel (1.54t4+).
    NumPy: one fused numba pass in thread bands; CuPy: whole-array operations."""
    if get_array_module(pixels) is not np:
        return mean3x3_xp(pixels)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    out = np.empty_like(pixels)
    height = pixels.shape[0]
    bands = max(1, min(cpu_threads(), height // 64))
    edges = [height * b // bands for b in range(bands + 1)]
    run_jobs([lambda a=a, b=b: _mean3x3_band(pixels, out, a, b) for a, b in zip(edges[:-1], edges[1:])])
    return out


def mean3x3_xp(pixels):
    """The 3x3 mean as whole-array operations on either backend (the same roundings)."""
    for axis in (1, 0):
        pixels = _mean3_along(pixels, axis)
    return pixels


def _mean3_along(pixels, axis: int):
    xp = get_array_module(pixels)
    left, right = neighbours(pixels, axis)
    mean = xp.add(left, pixels)
    mean = xp.add(mean, right, out=mean)
    mean = xp.multiply(mean, THIRD, out=mean)
    nan = xp.isnan(mean)
    return xp.where(nan, pixels, mean) if bool(nan.any()) else mean


def neighbours(pixels, axis: int):
    """The left and right neighbour of every pixel along ``axis``, line ends replicated."""
    xp = get_array_module(pixels)
    n = pixels.shape[axis]

    def part(start, stop):
        index = [slice(None)] * pixels.ndim
        index[axis] = slice(start, stop)
        return pixels[tuple(index)]

    before = xp.concatenate([part(0, 1), part(0, n - 1)], axis=axis)
    after = xp.concatenate([part(1, n), part(n - 1, n)], axis=axis)
    return before, after


# ----------------------------------------------------------------------------- CPU kernels (numba)
# numba: both passes fused into one sweep over the rows (NumPy needs eight whole-image passes):
# the row pass of the rows y - 1, y, y + 1 is kept in three buffers, and output row y is their
# column mean. Bands of rows run in threads, each recomputing the row pass of its two border rows.

COLUMN_GROUP = 16


@numba.njit(cache=True, nogil=True, inline="always")
def _keep_unless_nan(mean, before):
    return before if np.isnan(mean) else mean


@numba.njit(cache=True, nogil=True, inline="always")
def _row_mean(line, out):
    """The row pass of ImageJ's filter3(MEAN) on one line (ends replicated) into ``out``."""
    n = line.size
    if n == 1:
        out[0] = _keep_unless_nan(((line[0] + line[0]) + line[0]) * THIRD, line[0])
        return
    out[0] = _keep_unless_nan(((line[0] + line[0]) + line[1]) * THIRD, line[0])
    for x in range(1, n - 1):
        out[x] = _keep_unless_nan(((line[x - 1] + line[x]) + line[x + 1]) * THIRD, line[x])
    out[n - 1] = _keep_unless_nan(((line[n - 2] + line[n - 1]) + line[n - 1]) * THIRD, line[n - 1])


@numba.njit(cache=True, nogil=True)
def _mean3x3_band(pixels, out, y0, y1):
    """Output rows [y0, y1) of the 3x3 mean: the column pass over the row pass's rows."""
    height, width = pixels.shape
    above = np.empty(width, np.float32)
    here = np.empty(width, np.float32)
    below = np.empty(width, np.float32)
    _row_mean(pixels[max(y0 - 1, 0)], above)
    _row_mean(pixels[y0], here)
    for y in range(y0, y1):
        _row_mean(pixels[min(y + 1, height - 1)], below)
        row = out[y]
        for x in range(width):
            row[x] = _keep_unless_nan(((above[x] + here[x]) + below[x]) * THIRD, here[x])
        above, here, below = here, below, above


@numba.njit(cache=True, nogil=True, inline="always")
def copy_columns(pixels, x0, columns, gather):
    """columns[k, y] <-> pixels[y, x0 + k] for the up to COLUMN_GROUP columns from x0 (a group of
    strided columns read and written a cache line at a time); returns how many there are."""
    count = min(columns.shape[0], pixels.shape[1] - x0)
    for y in range(pixels.shape[0]):
        for k in range(count):
            if gather:
                columns[k, y] = pixels[y, x0 + k]
            else:
                pixels[y, x0 + k] = columns[k, y]
    return count
