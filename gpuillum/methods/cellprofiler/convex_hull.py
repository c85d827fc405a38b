"""CellProfiler's "Convex Hull" smoothing and the convex hull transform behind it.

``convex_hull_smooth`` = masked grey erosion (radius-2 disk) -> ``convex_hull_transform``
(256 levels) -> masked grey dilation (radius-2 disk), the chain CellProfiler runs through
centrosome. Results equal centrosome's to the last bit (before the final float32 cast).

The transform quantises the (masked) intensity range into ``levels`` levels; for every level
it takes the convex hull of the pixels at or above that level and raises the pixels inside
the hull to at least that level. "Inside" follows centrosome exactly:

* hull vertices are the strictly convex corners (collinear points dropped) of the pixel
  centres, walked counter-clockwise in (x = column, y = row) from the top pixel of the
  leftmost column; only each column's first and last pixel at the level can be a vertex;
* each hull edge is rasterised with Bresenham's algorithm from vertex k to vertex k + 1
  (direction matters where the line passes exactly half-way between pixels), and an
  outline pixel keeps the highest level drawn on it;
* every pixel then takes the lower of the nearest outline levels at or above it and at or
  below it in its column (0 when either side has none);
* with more than 16 levels a 16-level pass on the floored levels runs first, and the fine
  levels are raised to its result (this can move outline pixels, so it is kept).

The per-level hulls, the line drawing and the column fill are sequential integer work with
no NumPy/SciPy equivalent, so they are numba kernels (O(levels x (width + perimeter))).
The work is on the CPU; a CuPy image is copied to the host and the result copied back.
"""
from __future__ import annotations

import numbers

import numba
import numpy as np

from ..._checks import check_image, check_mask
from ...backend import same_backend, to_numpy
from ...errors import InvalidValue

_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
# CellProfiler's settings: 256 levels, a 16-level coarse pass above 16 levels, radius-2 disk.
_COARSE_PASS_ABOVE = 16


def convex_hull_smooth(image, mask=None):
    """CellProfiler's Convex Hull smoothing of ``image``; float32 result of the image's shape.

    Masked-out pixels take no part in the erosion, the level range or the dilation (they
    count as level 0 in the hulls) and keep the transform's value, as in CellProfiler.
    """
    check_image(image, "image", dtypes=_DTYPES)
    mask = check_mask(mask, image)
    host = to_numpy(image).astype(np.float64)
    host_mask = None if mask is None else to_numpy(mask)

    eroded = _masked_disk2_filter(host, host_mask, np.minimum, outside=1.0)
    transformed = _transform(eroded, 256, host_mask)
    smoothed = _masked_disk2_filter(transformed, host_mask, np.maximum, outside=0.0)
    return same_backend(smoothed.astype(np.float32), image)


def convex_hull_transform(image, levels: int = 256, mask=None):
    """centrosome's ``convex_hull_transform``: float result in the image's float dtype
    (float64 for integer images); an empty mask gives zeros, a flat image comes back as is."""
    check_image(image, "image", dtypes=_DTYPES)
    mask = check_mask(mask, image)
    if isinstance(levels, bool) or not isinstance(levels, numbers.Integral) or levels < 2:
        raise InvalidValue(f"levels: expected an integer >= 2, got {levels!r}")
    host = to_numpy(image)
    if host.dtype.kind != "f":
        host = host.astype(np.float64)
    host_mask = None if mask is None else to_numpy(mask)
    return same_backend(_transform(host, int(levels), host_mask), image)


def _masked_disk2_filter(image, mask, extreme, outside):
    """Min or max (``extreme`` = np.minimum or np.maximum) over the radius-2 disk, i.e. the
    3x3 square plus the 5-long cross, with pixels outside the image and masked pixels
    reading as ``outside``; masked pixels keep their input value
    (centrosome.cpmorphology.grey_erosion / grey_dilation with ``strel_disk(2)``)."""
    height, width = image.shape
    padded = np.full((height + 4, width + 4), outside)
    padded[2:-2, 2:-2] = image
    if mask is not None:
        padded[2:-2, 2:-2][~mask] = outside
    across3 = extreme(extreme(padded[:, 1:-3], padded[:, 2:-2]), padded[:, 3:-1])
    result = extreme(extreme(across3[1:-3], across3[2:-2]), across3[3:-1])  # 3x3 square
    for cross_end in (padded[:-4, 2:-2], padded[4:, 2:-2], padded[2:-2, :-4], padded[2:-2, 4:]):
        extreme(result, cross_end, out=result)
    if mask is not None:
        result[~mask] = image[~mask]
    return result


def _transform(image, levels, mask):
    if mask is None:
        low, high = image.min(), image.max()
    else:
        inside = image[mask]
        if inside.size == 0:
            return np.zeros(image.shape, image.dtype)
        low, high = inside.min(), inside.max()
    if low == high:
        return image.copy()

    # Same expressions (and so the same rounding) as centrosome.
    level_values = low + np.arange(levels).astype(image.dtype) * (high - low) / float(levels - 1)
    scaled = (image - low) * (levels - 1) / (high - low)
    if mask is not None:
        scaled[~mask] = 0
    if levels > _COARSE_PASS_ABOVE:
        coarse = _transform(np.floor(scaled), int(np.sqrt(levels)), None)
        scaled = np.maximum(scaled, coarse)
    level_image = scaled.astype(np.int64)

    present = np.flatnonzero(np.bincount(level_image.ravel(), minlength=levels))
    rank = np.zeros(levels, np.int32)
    rank[present] = np.arange(present.size, dtype=np.int32)
    labels = rank[level_image]
    filled = _fill_hulls(labels, present.size)
    return level_values[present][filled]


@numba.njit(cache=True, nogil=True)
def _column_extents(labels, nlabels):
    """first[L, j] / last[L, j]: first and last row of column j with label >= L
    (first = H, last = -1 when the column has none)."""
    height, width = labels.shape
    first = np.full((nlabels, width), height, np.int32)
    last = np.full((nlabels, width), -1, np.int32)
    reached = np.zeros(width, np.int32)
    for i in range(height):
        for j in range(width):
            v = labels[i, j]
            if v > reached[j]:
                for level in range(reached[j] + 1, v + 1):
                    first[level, j] = i
                reached[j] = v
    reached[:] = 0
    for i in range(height - 1, -1, -1):
        for j in range(width):
            v = labels[i, j]
            if v > reached[j]:
                for level in range(reached[j] + 1, v + 1):
                    last[level, j] = i
                reached[j] = v
    return first, last


@numba.njit(inline="always")
def _turn(oi, oj, ai, aj, bi, bj):
    """Cross product of (a - o) and (b - o) with x = column, y = row; > 0 is a left turn."""
    return (aj - oj) * (bi - oi) - (ai - oi) * (bj - oj)


@numba.njit(cache=True, nogil=True)
def _hull(first_row, last_row, hull_i, hull_j):
    """Strictly convex hull of the column extents (monotone chain), counter-clockwise from
    the top pixel of the leftmost column; writes the vertices and returns their count."""
    width = first_row.size
    start = -1
    end = -1
    for j in range(width):
        if first_row[j] <= last_row[j]:
            if start < 0:
                start = j
            end = j
    if start < 0:
        return 0
    if start == end and first_row[start] == last_row[start]:
        hull_i[0] = first_row[start]
        hull_j[0] = start
        return 1
    # Lower chain (first rows), left to right, ending with the last column's bottom pixel.
    n = 0
    for j in range(start, end + 2):
        if j <= end:
            if first_row[j] > last_row[j]:
                continue
            pi, pj = first_row[j], j
        elif last_row[end] != first_row[end]:
            pi, pj = last_row[end], end
        else:
            continue
        while n >= 2 and _turn(hull_i[n - 2], hull_j[n - 2], hull_i[n - 1], hull_j[n - 1], pi, pj) <= 0:
            n -= 1
        hull_i[n] = pi
        hull_j[n] = pj
        n += 1
    # Upper chain (last rows), right to left from the column before the last, closing on the
    # first vertex; it never pops into the lower chain.
    upper_from = n + 1
    for j in range(end - 1, start - 2, -1):
        if j >= start:
            if first_row[j] > last_row[j]:
                continue
            pi, pj = last_row[j], j
        else:
            pi, pj = first_row[start], start
        while n >= upper_from and _turn(hull_i[n - 2], hull_j[n - 2], hull_i[n - 1], hull_j[n - 1], pi, pj) <= 0:
            n -= 1
        hull_i[n] = pi
        hull_j[n] = pj
        n += 1
    return n - 1  # the closing point repeats the first vertex


@numba.njit(cache=True, nogil=True)
def _draw_line(outline, i0, j0, i1, j1, level):
    """Bresenham line from (i0, j0) to (i1, j1), centrosome's rounding (ties step)."""
    di = abs(i1 - i0)
    dj = abs(j1 - j0)
    si = 1 if i1 > i0 else -1
    sj = 1 if j1 > j0 else -1
    i, j = i0, j0
    outline[i, j] = level
    if di >= dj:
        remainder = 2 * dj - di
        for _ in range(di):
            if remainder >= 0:
                j += sj
                remainder -= 2 * di
            i += si
            remainder += 2 * dj
            outline[i, j] = level
    else:
        remainder = 2 * di - dj
        for _ in range(dj):
            if remainder >= 0:
                i += si
                remainder -= 2 * dj
            j += sj
            remainder += 2 * di
            outline[i, j] = level


@numba.njit(cache=True, nogil=True)
def _fill_hulls(labels, nlabels):
    """Label image -> hull-filled label image (see the module docstring)."""
    height, width = labels.shape
    first, last = _column_extents(labels, nlabels)
    outline = np.zeros((height, width), np.int32)
    hull_i = np.empty(2 * width + 2, np.int64)
    hull_j = np.empty(2 * width + 2, np.int64)
    for level in range(1, nlabels):  # ascending, so the highest level drawn on a pixel stays
        count = _hull(first[level], last[level], hull_i, hull_j)
        for k in range(count):
            nxt = k + 1 if k + 1 < count else 0
            _draw_line(outline, hull_i[k], hull_j[k], hull_i[nxt], hull_j[nxt], level)

    filled = np.empty((height, width), np.int32)
    above = np.zeros(width, np.int32)
    for i in range(height):
        for j in range(width):
            if outline[i, j] > 0:
                above[j] = outline[i, j]
            filled[i, j] = above[j]
    below = np.zeros(width, np.int32)
    for i in range(height - 1, -1, -1):
        for j in range(width):
            if outline[i, j] > 0:
                below[j] = outline[i, j]
            if below[j] < filled[i, j]:
                filled[i, j] = below[j]
    return filled
