"""Per-block statistics of an image, on two block layouts.

``block_minimum`` reproduces CellProfiler's "Background" preprocessing (centrosome
``cpmorphology.block`` + ``scipy.ndimage.minimum``): ``n = max(1, int(L / B))`` blocks per axis,
stretched to cover the image, row ``i`` in block ``int(i * (float64(n) / float64(L)))``. The result
is painted back at full size in the input dtype.

``block_reduce`` summarises an image on the *edge-anchored* layout that ``resample.upsample``
inverts: per axis ``n = max(2, round((L - 1) / B) + 1)`` samples (``n = 1`` when ``L == 1``;
Python's ``round``, ties to even), sample ``k`` sits at pixel ``k * (L - 1) / (n - 1)`` and owns
the pixels whose nearest sample it is (a pixel exactly half-way goes to the later sample). The
first and last blocks are therefore half as wide as the others, so the grid's corner samples
describe the image's corners rather than points half a block inside them.

Both layouts consist of contiguous runs of rows and of columns, so every statistic is computed by
gathering each block's rows and columns into a padded array (index arrays of O(H + W) are built on
the host) and reducing over the padding axes: one code path for NumPy and CuPy.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import ORDER_DTYPES, check_choice, check_image, check_mask, check_radius
from ..backend import get_array_module

STATS = ("min", "max", "mean", "median", "percentile")
REDUCE_DTYPES = ORDER_DTYPES + (np.float64,)


def cellprofiler_block_labels(length: int, block_size: int) -> np.ndarray:
    """Block index of each position along one axis, exactly as centrosome ``cpmorphology.block``.

    The multiplier ``float64(n) / float64(length)`` is formed first and then multiplied by the
    integer position, in float64, and truncated: this differs from ``(i * n) // length`` for some
    (length, block_size) pairs (e.g. 506 and 60 at row 253), and CellProfiler uses the former.
    """
    n = max(1, int(float(length) / float(block_size)))
    multiplier = np.float64(n) / np.float64(length)
    return (np.arange(length, dtype=np.int64) * multiplier).astype(np.int64)


def edge_anchored_count(length: int, block_size: int) -> int:
    """Number of samples of the edge-anchored layout along an axis of ``length`` pixels."""
    if length == 1:
        return 1
    return max(2, round((length - 1) / block_size) + 1)


def edge_anchored_labels(length: int, n: int) -> np.ndarray:
    """Nearest-sample index of each pixel, samples at ``k * (length - 1) / (n - 1)``.

    Computed in integers: ``floor((2 i (n - 1) + (length - 1)) / (2 (length - 1)))``, so a pixel
    exactly half-way between two samples goes to the later one, with no float rounding.
    """
    if n == 1:
        return np.zeros(length, dtype=np.int64)
    i = np.arange(length, dtype=np.int64)
    span = length - 1
    return (2 * i * (n - 1) + span) // (2 * span)


def _runs(labels: np.ndarray, n: int):
    """Start and length of each label's run in a non-decreasing label vector (NumPy, host)."""
    counts = np.bincount(labels, minlength=n)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return starts, counts


def _run_index(labels: np.ndarray, n: int, repeat_last: bool):
    """(n, max_run) gather indices of each run, and which entries are real (not padding).

    With ``repeat_last`` the padding repeats the run's last index (harmless for min and max);
    otherwise padding points at index 0 and must be discarded through the validity array.
    """
    starts, counts = _runs(labels, n)
    width = int(counts.max())
    offset = np.arange(width, dtype=np.int64)[None, :]
    real = offset < counts[:, None]
    if repeat_last:
        index = starts[:, None] + np.minimum(offset, np.maximum(counts, 1)[:, None] - 1)
    else:
        index = np.where(real, starts[:, None] + offset, 0)
    return index, real


def _segment_min(x, row_labels, n_rows, col_labels, n_cols, xp):
    """Minimum of every (row run, column run) block of ``x``: a separable two-step reduction."""
    rows, _ = _run_index(row_labels, n_rows, repeat_last=True)
    cols, _ = _run_index(col_labels, n_cols, repeat_last=True)
    partial = xp.take(x, xp.asarray(rows), axis=0).min(axis=1)  # (n_rows, W)
    return xp.take(partial, xp.asarray(cols), axis=1).min(axis=2)  # (n_rows, n_cols)


def _segment_sum(x, row_labels, n_rows, col_labels, n_cols, xp):
    """Sum of every block of ``x`` (zero padding), separable."""
    rows, real_rows = _run_index(row_labels, n_rows, repeat_last=False)
    cols, real_cols = _run_index(col_labels, n_cols, repeat_last=False)
    partial = (xp.take(x, xp.asarray(rows), axis=0) * xp.asarray(real_rows)[:, :, None]).sum(axis=1)
    return (xp.take(partial, xp.asarray(cols), axis=1) * xp.asarray(real_cols)[None]).sum(axis=2)


def block_minimum(image, block_size: int, *, mask=None):
    """Full-size image of per-block minima on CellProfiler's block layout, in the input dtype.

    ``block_size`` is CellProfiler's "Block size" B. Masked pixels take no part in any block and are
    0 in the output; a block without unmasked pixels yields 0 (as ``scipy.ndimage.minimum`` does for
    an empty label in CellProfiler).
    """
    image = check_image(image)
    block_size = check_radius(block_size, "block_size")
    mask = check_mask(mask, image)
    xp = get_array_module(image)
    height, width = image.shape
    row_labels = cellprofiler_block_labels(height, block_size)
    col_labels = cellprofiler_block_labels(width, block_size)
    n_rows, n_cols = int(row_labels[-1]) + 1, int(col_labels[-1]) + 1
    row_gather, col_gather = xp.asarray(row_labels), xp.asarray(col_labels)
    if mask is None:
        minima = _segment_min(image, row_labels, n_rows, col_labels, n_cols, xp)
        return minima[row_gather][:, col_gather]
    if image.dtype.kind == "f":
        top = xp.asarray(np.inf, dtype=image.dtype)
    else:
        top = xp.asarray(np.iinfo(image.dtype).max, dtype=image.dtype)
    minima = _segment_min(xp.where(mask, image, top), row_labels, n_rows, col_labels, n_cols, xp)
    counts = _segment_sum(mask.astype(xp.int32), row_labels, n_rows, col_labels, n_cols, xp)
    minima = xp.where(counts > 0, minima, xp.zeros_like(minima))
    painted = minima[row_gather][:, col_gather]
    return xp.where(mask, painted, xp.zeros_like(painted))


def _check_q(stat: str, q):
    if stat != "percentile":
        if q is not None:
            raise ValueError(f"q: only used with stat='percentile', got q={q!r} with stat={stat!r}")
        return None
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 <= float(q) <= 100:
        raise ValueError(f"q: expected a number in [0, 100] with stat='percentile', got {q!r}")
    return float(q)


def _lerp(low, high, t, xp):
    """``low + (high - low) * t`` the way numpy.percentile's linear method evaluates it."""
    diff = high - low
    return xp.where(t >= 0.5, high - diff * (1 - t), low + diff * t)


def block_reduce(image, block_size: int, *, stat: str = "min", q=None, mask=None):
    """Small float32 grid of per-block statistics on the edge-anchored layout (see module doc).

    ``stat``: "min", "max", "mean", "median" (== numpy.median of the block's pixels) or
    "percentile" with ``q`` in [0, 100] (numpy.percentile's default linear interpolation). Values
    are taken in float64 and the result is rounded once to float32. Masked pixels are excluded; a
    block with no unmasked pixel is NaN. Shape: ``(edge_anchored_count(H, B),
    edge_anchored_count(W, B))``.
    """
    image = check_image(image, dtypes=REDUCE_DTYPES)
    block_size = check_radius(block_size, "block_size")
    check_choice(stat, "stat", STATS)
    q = _check_q(stat, q)
    mask = check_mask(mask, image)
    xp = get_array_module(image)
    height, width = image.shape
    n_rows, n_cols = edge_anchored_count(height, block_size), edge_anchored_count(width, block_size)
    rows, real_rows = _run_index(edge_anchored_labels(height, n_rows), n_rows, repeat_last=False)
    cols, real_cols = _run_index(edge_anchored_labels(width, n_cols), n_cols, repeat_last=False)
    # (n_rows, n_cols, block_height, block_width): every block's pixels, padding marked invalid
    values = image[xp.asarray(rows)[:, None, :, None], xp.asarray(cols)[None, :, None, :]].astype(xp.float64)
    valid = xp.asarray(real_rows[:, None, :, None] & real_cols[None, :, None, :])
    if mask is not None:
        valid = valid & mask[xp.asarray(rows)[:, None, :, None], xp.asarray(cols)[None, :, None, :]]
    values = values.reshape(n_rows, n_cols, -1)
    valid = valid.reshape(n_rows, n_cols, -1)
    count = valid.sum(axis=2)
    empty = count == 0
    if stat == "min":
        result = xp.where(valid, values, np.inf).min(axis=2)
    elif stat == "max":
        result = xp.where(valid, values, -np.inf).max(axis=2)
    elif stat == "mean":
        result = xp.where(valid, values, 0.0).sum(axis=2) / xp.maximum(count, 1)
    else:
        ordered = xp.sort(xp.where(valid, values, np.nan), axis=2)  # NaN padding sorts last
        last = xp.maximum(count - 1, 0)
        if stat == "median":
            low = xp.take_along_axis(ordered, (last // 2)[..., None], axis=2)[..., 0]
            high = xp.take_along_axis(ordered, ((last + 1) // 2)[..., None], axis=2)[..., 0]
            result = (low + high) / 2
        else:
            position = last * (q / 100.0)
            below = xp.floor(position).astype(xp.int64)
            above = xp.minimum(below + 1, last)
            low = xp.take_along_axis(ordered, below[..., None], axis=2)[..., 0]
            high = xp.take_along_axis(ordered, above[..., None], axis=2)[..., 0]
            result = _lerp(low, high, position - below, xp)
    result = xp.where(empty, np.nan, result)
    return result.astype(xp.float32)
