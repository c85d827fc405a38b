"""Bilinear resampling: the edge-anchored upsample of block grids, and CellProfiler's Resize.

Both are separable linear maps: every output row (column) is a weighted sum of two input rows
(columns). The source positions and weights are O(H + W) float64 vectors computed on the host and
moved to the image's device; the image itself never leaves it.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_image
from ..backend import get_array_module, get_ndimage

RESAMPLE_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)


def _linear_taps(positions: np.ndarray, length: int):
    """Neighbour indices and weight of the upper neighbour for sampling at ``positions``.

    Positions outside [0, length - 1] are clamped, which equals half-sample symmetric
    ("reflect") extension for linear interpolation within half a pixel of the edge.
    """
    positions = np.clip(positions, 0.0, float(length - 1))
    lower = np.minimum(np.floor(positions).astype(np.int64), length - 1)
    upper = np.minimum(lower + 1, length - 1)
    return lower, upper, positions - lower


def _resample_axis(x, positions: np.ndarray, axis: int, xp):
    """Linear interpolation of ``x`` (float64) along ``axis`` at ``positions``."""
    lower, upper, weight = _linear_taps(positions, x.shape[axis])
    shape = (-1, 1) if axis == 0 else (1, -1)
    weight = xp.asarray(weight).reshape(shape)
    low = xp.take(x, xp.asarray(lower), axis=axis)
    high = xp.take(x, xp.asarray(upper), axis=axis)
    return low + (high - low) * weight


def _separable(x, row_positions: np.ndarray, col_positions: np.ndarray, xp):
    x = x.astype(xp.float64)
    x = _resample_axis(x, row_positions, 0, xp)
    return _resample_axis(x, col_positions, 1, xp)


def _check_shape(shape, name: str = "shape") -> tuple[int, int]:
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise ValueError(f"{name}: expected two integers >= 1 (rows, cols), got {shape!r}")
    return int(shape[0]), int(shape[1])


def edge_anchored_positions(n: int, length: int) -> np.ndarray:
    """Grid coordinate of each of ``length`` pixels when grid sample k sits at k*(length-1)/(n-1)."""
    if n == 1 or length == 1:
        return np.zeros(length, dtype=np.float64)
    return np.arange(length, dtype=np.float64) * (n - 1) / (length - 1)  # exact at every sample pixel


def upsample(grid, shape):
    """Bilinear, edge-anchored enlargement of a grid to ``shape`` (float32).

    Grid sample k of n along an axis of L pixels sits at pixel ``k * (L - 1) / (n - 1)`` (the
    align_corners convention, the layout of ``blocks.block_reduce``), so corner samples land on
    corner pixels and a field that is linear in the grid index is reproduced exactly. A grid axis
    of length 1 is constant along that axis. NaN in the grid spreads to its neighbourhood.
    """
    grid = check_image(grid, "grid", dtypes=RESAMPLE_DTYPES, allow_nan=True)
    rows, cols = _check_shape(shape)
    xp = get_array_module(grid)
    out = _separable(
        grid,
        edge_anchored_positions(grid.shape[0], rows),
        edge_anchored_positions(grid.shape[1], cols),
        xp,
    )
    return out.astype(xp.float32)


def cellprofiler_resize_shape(shape, factor: float) -> tuple[int, int]:
    """Output shape of CellProfiler's Resize "by a fraction or multiple": numpy.round(L * factor)."""
    out = tuple(int(np.round(float(length) * factor)) for length in shape)
    if min(out) < 1:
        raise ValueError(f"factor: {factor!r} shrinks shape {tuple(shape)} to {out}; need at least 1 pixel per axis")
    return out


def resize_bilinear(image, factor_or_shape):
    """CellProfiler's Resize module with "Bilinear" interpolation, as float32.

    ``factor_or_shape`` is a number (CellProfiler's "Resize by a fraction or multiple of the
    original size": output ``numpy.round(L * factor)`` per axis, ties to even) or an (rows, cols)
    tuple of integers ("Resize by specifying desired final dimensions").

    CellProfiler 4.2 calls ``skimage.transform.resize(pixels / max|pixels|, shape, order=1,
    mode="symmetric")`` and multiplies back; with scikit-image >= 0.19 that is, per axis with
    scale s = L_in / L_out:

    1. when shrinking any axis (anti_aliasing defaults to True): ``scipy.ndimage.gaussian_filter``
       with sigma ``max(0, (s - 1) / 2)`` per axis, mode "reflect", truncate 4, on float32;
    2. linear interpolation at pixel-centre-aligned positions ``(k + 0.5) * s - 0.5``
       (``ndimage.zoom(grid_mode=True)``), half-sample symmetric edges;
    3. clipping to [min, max] of the input.

    The division by and multiplication with max|pixels| only rescale (the steps are linear), so
    they are left out: results agree with CellProfiler to float32 rounding (~1e-7 relative).
    """
    image = check_image(image, dtypes=RESAMPLE_DTYPES)
    if isinstance(factor_or_shape, numbers.Real) and not isinstance(factor_or_shape, bool):
        factor = float(factor_or_shape)
        if not np.isfinite(factor) or factor <= 0:
            raise ValueError(f"factor_or_shape: expected a factor > 0 or (rows, cols), got {factor_or_shape!r}")
        out_shape = cellprofiler_resize_shape(image.shape, factor)
    else:
        out_shape = _check_shape(factor_or_shape, "factor_or_shape")
    xp = get_array_module(image)
    ndi = get_ndimage(xp)
    image = image.astype(xp.float32, copy=False)
    scales = [in_len / out_len for in_len, out_len in zip(image.shape, out_shape)]
    filtered = image
    if any(out_len < in_len for in_len, out_len in zip(image.shape, out_shape)):
        sigma = [max(0.0, (s - 1) / 2) for s in scales]
        filtered = ndi.gaussian_filter(image, sigma, mode="reflect", cval=0)
    positions = [(np.arange(n, dtype=np.float64) + 0.5) * s - 0.5 for n, s in zip(out_shape, scales)]
    out = _separable(filtered, positions[0], positions[1], xp).astype(xp.float32)
    return xp.clip(out, image.min(), image.max())
