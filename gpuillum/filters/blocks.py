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

Both layouts consist of contiguous runs of rows and of columns (index arrays of O(H + W) are built
on the host), and one code path serves NumPy and CuPy. Min, max and sums (means, pixel counts) are
separable: each axis's runs are gathered into a padded axis and reduced, rows first, then columns,
O(H W) work. Medians and percentiles gather every block's pixels into a padded array and sort it.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import ORDER_DTYPES, check_choice, check_image, check_mask, check_radius
from ..backend import get_array_module, on_input_device
from .neutral import never_wins
from ..errors import InvalidValue

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


def _run_index(labels: np.ndarray, n: int):
    """(n, max_run) gather indices of each run, and which entries are real (padding points at 0)."""
    starts, counts = _runs(labels, n)
    offset = np.arange(int(counts.max()), dtype=np.int64)[None, :]
    real = offset < counts[:, None]
    return np.where(real, starts[:, None] + offset, 0), real


def _reduce_runs(x, labels: np.ndarray, n: int, axis: int, op: str, xp):
    """Reduce every run of equal ``labels`` along ``axis`` (0 or 1) of ``x`` with "min", "max" or "sum".

    The runs are gathered through a (width, n) index, so the padded axis comes before the run axis
    and the reduction combines whole contiguous slabs (``ufunc.reduceat`` along axis 0 walks strided
    columns, and CuPy has no minimum/maximum.reduceat). Short runs repeat their last element for min
    and max, and point at an appended zero for sums (accumulated as ``_sum_dtype`` chooses). Runs
    are never empty on either block layout.
    """
    starts, counts = _runs(labels, n)
    offset = np.arange(int(counts.max()), dtype=np.int64)[:, None]
    if op != "sum":
        gathered = xp.take(x, xp.asarray(starts + np.minimum(offset, counts - 1)), axis=axis)
        return gathered.min(axis=axis) if op == "min" else gathered.max(axis=axis)
    index = starts + offset
    if (counts < offset.size).any():
        index = np.where(offset < counts, index, x.shape[axis])
        zero_shape = (1, x.shape[1]) if axis == 0 else (x.shape[0], 1)
        x = xp.concatenate([x, xp.zeros(zero_shape, dtype=x.dtype)], axis=axis)
    return xp.take(x, xp.asarray(index), axis=axis).sum(axis=axis, dtype=_sum_dtype(x.dtype, offset.size))


def _sum_dtype(dtype, terms: int):
    """uint32 where a sum of ``terms`` values of ``dtype`` surely fits (half the memory traffic of the
    float64 accumulator), else float64: exact for integers below 2**53, one rounding for floats."""
    largest = 1 if dtype == np.bool_ else np.iinfo(dtype).max if dtype.kind == "u" else None
    return np.uint32 if largest is not None and terms * largest < 2**32 else np.float64


def _where_masked(mask, image, fill, xp):
    """``where(mask, image, fill)``; for unsigned integers with ``fill`` 0 or the dtype's maximum as
    bitwise arithmetic, because NumPy's where mispredicts branches on irregular masks (~10x slower)."""
    if image.dtype.kind == "u" and fill in (0, np.iinfo(image.dtype).max):
        kept = image * mask
        return kept if fill == 0 else kept | (~mask).astype(image.dtype) * image.dtype.type(fill)
    return xp.where(mask, image, xp.asarray(fill, dtype=image.dtype))


def _reduce_blocks(x, op: str, row_labels, n_rows: int, col_labels, n_cols: int, xp):
    """``op`` ("min", "max", "sum") over every (row run, column run) block: rows first, then columns."""
    partial = _reduce_runs(x, row_labels, n_rows, 0, op, xp)  # (n_rows, W)
    return _reduce_runs(partial, col_labels, n_cols, 1, op, xp)  # (n_rows, n_cols)


@on_input_device
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
    layout = (row_labels, n_rows, col_labels, n_cols, xp)
    if mask is None:
        minima = _reduce_blocks(image, "min", *layout)
        return minima[row_gather][:, col_gather]
    minima = _reduce_blocks(_where_masked(mask, image, never_wins(image.dtype, "min"), xp), "min", *layout)
    counts = _reduce_blocks(mask, "sum", *layout)
    minima = xp.where(counts > 0, minima, xp.zeros_like(minima))
    painted = minima[row_gather][:, col_gather]
    return xp.where(mask, painted, xp.zeros_like(painted))


def _check_q(stat: str, q):
    if stat != "percentile":
        if q is not None:
            raise InvalidValue(f"q: only used with stat='percentile', got q={q!r} with stat={stat!r}")
        return None
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 <= float(q) <= 100:
        raise InvalidValue(f"q: expected a number in [0, 100] with stat='percentile', got {q!r}")
    return float(q)


def _lerp(low, high, t, xp):
    """``low + (high - low) * t`` the way numpy.percentile's linear method evaluates it."""
    diff = high - low
    return xp.where(t >= 0.5, high - diff * (1 - t), low + diff * t)


@on_input_device
def block_reduce(image, block_size: int, *, stat: str = "min", q=None, mask=None):
    """Small float32 grid of per-block statistics on the edge-anchored layout (see module doc).

    ``stat``: "min", "max", "mean", "median" (== numpy.median of the block's pixels) or
    "percentile" with ``q`` in [0, 100] (numpy.percentile's default linear interpolation). Sums
    and interpolations run in float64 (or exact integers), and the result is rounded once to
    float32. Masked pixels are excluded; a block with no unmasked pixel is NaN. Shape:
    ``(edge_anchored_count(H, B), edge_anchored_count(W, B))``.
    """
    image = check_image(image, dtypes=REDUCE_DTYPES)
    block_size = check_radius(block_size, "block_size")
    check_choice(stat, "stat", STATS)
    q = _check_q(stat, q)
    mask = check_mask(mask, image)
    xp = get_array_module(image)
    height, width = image.shape
    n_rows, n_cols = edge_anchored_count(height, block_size), edge_anchored_count(width, block_size)
    row_labels, col_labels = edge_anchored_labels(height, n_rows), edge_anchored_labels(width, n_cols)
    if stat in ("min", "max", "mean"):
        return _separable_stat(image, stat, mask, (row_labels, n_rows, col_labels, n_cols, xp))
    return _sorted_stat(image, stat, q, mask, (row_labels, n_rows, col_labels, n_cols, xp))


def _separable_stat(image, stat: str, mask, layout):
    """Block min, max or mean as two one-axis reductions (O(H W) work, no per-block copies).

    Masked pixels are set to the value that cannot win (min, max) or to 0 (mean), and the unmasked
    pixels of every block are counted the same way to find the empty blocks.
    """
    row_labels, n_rows, col_labels, n_cols, xp = layout
    if stat == "mean":
        op, fill = "sum", 0
    else:
        op, fill = stat, never_wins(image.dtype, stat)
    if mask is not None:
        image = _where_masked(mask, image, fill, xp)
    result = _reduce_blocks(image, op, *layout)
    if mask is None:
        if stat == "mean":
            _, row_counts = _runs(row_labels, n_rows)
            _, col_counts = _runs(col_labels, n_cols)
            result = result / xp.asarray(np.outer(row_counts, col_counts))
        return result.astype(xp.float32)
    count = _reduce_blocks(mask, "sum", *layout)
    if stat == "mean":
        result = result / xp.maximum(count, 1)
    return xp.where(count > 0, result, np.nan).astype(xp.float32)


def _sorted_stat(image, stat: str, q, mask, layout):
    """Block median or percentile: every block's pixels gathered into a padded array and sorted."""
    row_labels, n_rows, col_labels, n_cols, xp = layout
    rows, real_rows = _run_index(row_labels, n_rows)
    cols, real_cols = _run_index(col_labels, n_cols)
    # (n_rows, n_cols, block_height, block_width): every block's pixels, padding marked invalid
    values = image[xp.asarray(rows)[:, None, :, None], xp.asarray(cols)[None, :, None, :]].astype(xp.float64)
    valid = xp.asarray(real_rows[:, None, :, None] & real_cols[None, :, None, :])
    if mask is not None:
        valid = valid & mask[xp.asarray(rows)[:, None, :, None], xp.asarray(cols)[None, :, None, :]]
    values = values.reshape(n_rows, n_cols, -1)
    valid = valid.reshape(n_rows, n_cols, -1)
    count = valid.sum(axis=2)
    empty = count == 0
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
