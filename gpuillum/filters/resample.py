"""Bilinear resampling: the edge-anchored upsample of block grids, and CellProfiler's Resize.

Both are separable linear maps, applied as ``A_rows @ image @ A_cols.T`` with one sparse
(out_len x in_len) matrix per axis, built once per length pair on the host and cached (and cached
per CUDA device). ``upsample``'s matrices hold the two interpolation weights of each output pixel
(float64); ``resize_bilinear``'s fold the anti-aliasing Gaussian into the interpolation (float32),
so a resize is two sparse-dense products instead of a full-image Gaussian. The image never leaves
its device.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import scipy.sparse

from .._checks import check_image, check_shape
from ..backend import get_array_module, is_cupy_array, on_input_device
from ..errors import InvalidValue

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


def edge_anchored_positions(n: int, length: int) -> np.ndarray:
    """Grid coordinate of each of ``length`` pixels when grid sample k sits at k*(length-1)/(n-1)."""
    if n == 1 or length == 1:
        return np.zeros(length, dtype=np.float64)
    return np.arange(length, dtype=np.float64) * (n - 1) / (length - 1)  # exact at every sample pixel


@on_input_device
def upsample(grid, shape):
    """Bilinear, edge-anchored enlargement of a grid to ``shape`` (float32).

    Grid sample k of n along an axis of L pixels sits at pixel ``k * (L - 1) / (n - 1)`` (the
    align_corners convention, the layout of ``blocks.block_reduce``), so corner samples land on
    corner pixels and a field that is linear in the grid index is reproduced exactly. A grid axis
    of length 1 is constant along that axis. A NaN grid sample makes every pixel it weights NaN:
    those less than one grid spacing from it along both axes (not its neighbours' pixels). Computed
    in float64 with the cached ``upsample_operator`` matrices and rounded once to float32.
    """
    grid = check_image(grid, "grid", dtypes=RESAMPLE_DTYPES, allow_nan=True)
    rows, cols = check_shape(shape)
    return _apply_separable(grid, upsample_operator, (rows, cols))


def cellprofiler_resize_shape(shape, factor: float, name: str = "factor") -> tuple[int, int]:
    """Output shape of CellProfiler's Resize "by a fraction or multiple": numpy.round(L * factor);
    a ValueError naming the argument ``name`` when an axis would vanish."""
    out = tuple(int(np.round(float(length) * factor)) for length in shape)
    if min(out) < 1:
        raise InvalidValue(f"{name}: {factor!r} shrinks shape {tuple(shape)} to {out}; need at least 1 pixel per axis")
    return out


GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default, which skimage.transform.resize uses


def _reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Map indices outside [0, length) back in by half-sample symmetric reflection (d c b a | a b c d)."""
    folded = np.mod(index, 2 * length)
    return np.where(folded < length, folded, 2 * length - 1 - folded)


def _anti_aliasing_kernel(in_len: int, out_len: int) -> np.ndarray:
    """skimage's anti-aliasing Gaussian for one axis: sigma (s - 1) / 2 when shrinking by s, else none.

    The taps follow scipy.ndimage.gaussian_filter1d: radius int(4 * sigma + 0.5), weights
    exp(-x^2 / (2 sigma^2)) normalised to sum 1.
    """
    if out_len >= in_len:
        return np.ones(1)
    sigma = (in_len / out_len - 1) / 2
    radius = int(GAUSSIAN_TRUNCATE * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * offsets**2 / sigma**2)
    return weights / weights.sum()


def _shared_operator(rows, cols, data, shape, dtype) -> scipy.sparse.csr_array:
    """A ``dtype`` CSR matrix from float64 (row, col, weight) triplets (repeats summed, zeros dropped),
    read-only because the caches below share it."""
    matrix = scipy.sparse.csr_array((data, (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    matrix = matrix.astype(dtype)
    for part in (matrix.data, matrix.indices, matrix.indptr):
        part.flags.writeable = False
    return matrix


@functools.lru_cache(maxsize=64)
def upsample_operator(in_len: int, out_len: int) -> scipy.sparse.csr_array:
    """The (out_len x in_len) float64 CSR matrix of ``upsample`` along one axis (cached).

    Row k interpolates linearly at grid coordinate ``edge_anchored_positions(in_len, out_len)[k]``:
    two non-zeros, one where the pixel sits exactly on a grid sample. float64, because float32
    weights of a row do not sum to exactly 1: a constant grid would come out a few ulp off.
    """
    lower, upper, upper_weight = _linear_taps(edge_anchored_positions(in_len, out_len), in_len)
    rows = np.repeat(np.arange(out_len), 2)
    cols = np.stack([lower, upper], axis=1).ravel()
    data = np.stack([1.0 - upper_weight, upper_weight], axis=1).ravel()
    return _shared_operator(rows, cols, data, (out_len, in_len), np.float64)


@functools.lru_cache(maxsize=64)
def resize_operator(in_len: int, out_len: int) -> scipy.sparse.csr_array:
    """The (out_len x in_len) float32 CSR matrix of skimage's 1-D resize along one axis (cached).

    Row k holds the anti-aliasing Gaussian (reflect boundary, only when shrinking) composed with
    linear interpolation at the pixel-centre position (k + 0.5) * in_len / out_len - 0.5
    (half-sample symmetric boundary): about 8 sigma + 2 non-zeros per row, 2 when enlarging.
    The weights are computed in float64; the returned matrix is read-only because it is shared.
    """
    kernel = _anti_aliasing_kernel(in_len, out_len)
    radius = kernel.size // 2
    positions = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    lower, upper, upper_weight = _linear_taps(positions, in_len)
    taps = np.arange(-radius, radius + 1)
    rows = np.repeat(np.arange(out_len), 2 * kernel.size)
    cols = _reflect_index(np.concatenate([lower[:, None] + taps, upper[:, None] + taps], axis=1), in_len)
    data = np.concatenate(
        [(1.0 - upper_weight)[:, None] * kernel, upper_weight[:, None] * kernel], axis=1
    )
    return _shared_operator(rows, cols.ravel(), data.ravel(), (out_len, in_len), np.float32)


@functools.lru_cache(maxsize=64)
def _device_operator(host_operator, in_len: int, out_len: int, device_id: int):
    """``host_operator(in_len, out_len)`` copied once onto CUDA device ``device_id`` (cached; ~100 KiB
    for a 2160 -> 432 resize)."""
    import cupy
    import cupyx.scipy.sparse

    with cupy.cuda.Device(device_id):
        matrix = cupyx.scipy.sparse.csr_matrix(host_operator(in_len, out_len))
        # canonical before it is shared: a first product would otherwise rebuild it in place
        matrix.sum_duplicates()
        cupy.cuda.get_current_stream().synchronize()
        return matrix


def _operator_like(host_operator, image, in_len: int, out_len: int):
    """``host_operator(in_len, out_len)`` on the backend and device of ``image``."""
    if is_cupy_array(image):
        return _device_operator(host_operator, in_len, out_len, image.device.id)
    return host_operator(in_len, out_len)


def _apply_separable(image, host_operator, out_shape):
    """``A_rows @ image @ A_cols.T`` with the per-axis matrices of ``host_operator``, as float32.

    The products run in the matrices' dtype. Both orders give the same result; each makes the
    sparse product copy its transposed operand to contiguous memory, so shrink rows first, and
    enlarge them last. Returns a fresh C-contiguous array.
    """
    xp = get_array_module(image)
    (in_rows, in_cols), (out_rows, out_cols) = image.shape, out_shape
    rows_op = _operator_like(host_operator, image, in_rows, out_rows)
    cols_op = _operator_like(host_operator, image, in_cols, out_cols)
    pixels = image.astype(rows_op.dtype, copy=False)
    if out_rows <= in_rows:
        resized = (cols_op @ (rows_op @ pixels).T).T
    else:
        resized = rows_op @ (cols_op @ pixels.T).T
    if resized.dtype != xp.float32:
        return resized.astype(xp.float32, order="C")
    return xp.ascontiguousarray(resized)


@on_input_device
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

    Steps 1 and 2 are linear per axis, so they run as ``A_rows @ image @ A_cols.T`` with the
    cached sparse matrices of ``resize_operator`` (float32, ~17 terms per sum for a 0.2 shrink).
    The division by and multiplication with max|pixels| only rescale, so they are left out:
    results agree with CellProfiler to float32 rounding (~2e-7 of the image's range).
    """
    image = check_image(image, dtypes=RESAMPLE_DTYPES)
    if isinstance(factor_or_shape, numbers.Real) and not isinstance(factor_or_shape, bool):
        factor = float(factor_or_shape)
        if not np.isfinite(factor) or factor <= 0:
            raise InvalidValue(f"factor_or_shape: expected a factor > 0 or (rows, cols), got {factor_or_shape!r}")
        out_shape = cellprofiler_resize_shape(image.shape, factor, "factor_or_shape")
    else:
        out_shape = check_shape(factor_or_shape, "factor_or_shape")
    out = _apply_separable(image, resize_operator, out_shape)  # fresh: clipping it in place is safe
    xp = get_array_module(out)
    return xp.clip(out, image.min(), image.max(), out=out)  # the input dtype's min/max: a cheaper pass


def nearest_indices(in_len: int, out_len: int) -> np.ndarray:
    """Source index of each output pixel for nearest-neighbour resizing: ``ndimage.zoom(order=0,
    grid_mode=True)`` samples at ``(k + 0.5) * s - 0.5`` (s = in_len / out_len) and takes
    ``floor(position + 0.5)``; the same double arithmetic here gives the same index at ties."""
    positions = (np.arange(out_len, dtype=np.float64) + 0.5) * (in_len / out_len) - 0.5
    return np.clip(np.floor(positions + 0.5).astype(np.int64), 0, in_len - 1)


@on_input_device
def resize_mask(mask, shape):
    """CellProfiler's Resize of an image's mask to ``shape``: ``img_as_bool(skimage.transform.resize(
    mask, shape, order=0, mode="constant"))``, i.e. nearest neighbour at the pixel-centre-aligned
    positions of ``resize_bilinear`` (a bool array on the mask's device)."""
    xp = get_array_module(mask)
    if mask.ndim != 2 or mask.dtype != bool:
        raise InvalidValue(f"mask: expected a 2-D bool array, got {mask.ndim}-D {mask.dtype}")
    rows, cols = check_shape(shape)
    row_index = xp.asarray(nearest_indices(mask.shape[0], rows))
    col_index = xp.asarray(nearest_indices(mask.shape[1], cols))
    return mask[row_index[:, None], col_index[None, :]]
