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
            raise ValueError(f"sigma: presmooth='gaussian' needs a finite sigma > 0, got {sigma!r}")
        return presmooth, float(sigma)
    if sigma is not None:
        raise ValueError(f"sigma: only used with presmooth='gaussian', got sigma={sigma!r} with presmooth={presmooth!r}")
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
        raise ValueError(f"image: expected a 2-D array, got shape {getattr(image, 'shape', None)}")
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
    NumPy: one fused numba pass per direction in thread bands; CuPy: whole-array operations."""
    if get_array_module(pixels) is not np:
        return mean3x3_xp(pixels)
    out = np.array(pixels, dtype=np.float32, order="C", copy=True)
    height, width = out.shape
    for lines, kernel in ((height, _mean3_rows), (-(-width // COLUMN_GROUP), _mean3_columns)):
        bands = max(1, min(cpu_threads(), lines))
        edges = [lines * b // bands for b in range(bands + 1)]
        run_jobs([lambda a=a, b=b, kernel=kernel: kernel(out, a, b) for a, b in zip(edges[:-1], edges[1:])])
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
# numba: the mean of each line needs its neighbours from before the pass (in place, as ImageJ);
# NumPy needs eight whole-image passes for it. Columns are copied 16 at a time into contiguous
# lines, so their strided pixels are read and written a cache line at a time.

COLUMN_GROUP = 16


@numba.njit(cache=True, nogil=True, inline="always")
def _mean3_line(line):
    """ImageJ's filter3(MEAN) on one contiguous line, in place."""
    v3 = line[0]
    v2 = v3
    for i in range(line.size):
        v1 = v2
        v2 = v3
        if i < line.size - 1:
            v3 = line[i + 1]
        mean = ((v1 + v2) + v3) * THIRD
        if not np.isnan(mean):
            line[i] = mean


@numba.njit(cache=True, nogil=True)
def _mean3_rows(pixels, y0, y1):
    for y in range(y0, y1):
        _mean3_line(pixels[y])


@numba.njit(cache=True, nogil=True)
def _mean3_columns(pixels, g0, g1):
    columns = np.empty((COLUMN_GROUP, pixels.shape[0]), np.float32)
    for g in range(g0, g1):
        count = copy_columns(pixels, g * COLUMN_GROUP, columns, True)
        for k in range(count):
            _mean3_line(columns[k])
        copy_columns(pixels, g * COLUMN_GROUP, columns, False)


@numba.njit(cache=True, nogil=True, inline="always")
def copy_columns(pixels, x0, columns, gather):
    """columns[k, y] <-> pixels[y, x0 + k] for the up to COLUMN_GROUP columns from x0; returns
    how many there are."""
    count = min(columns.shape[0], pixels.shape[1] - x0)
    for y in range(pixels.shape[0]):
        for k in range(count):
            if gather:
                columns[k, y] = pixels[y, x0 + k]
            else:
                pixels[y, x0 + k] = columns[k, y]
    return count
