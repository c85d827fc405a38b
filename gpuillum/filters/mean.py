"""Exact mean filter over a disk, a square or ImageJ's circle, returned as float32.

``mean = sum / count`` of the pixels of the footprint. The footprint is a set of chords (for each
row offset dy, the half-width w of its row), so every window sum is a sum of chord sums, and a
chord sum is the difference of two entries of its row's running (prefix) sums: O(r) per pixel
for any footprint. For uint8 and uint16 images the running sums are int64, so every sum is the
exact integer, and ``float32(float64(sum) / count)`` is the exactly rounded mean (a float64
quotient of integers below 2^53, rounded again to float32, is the correctly rounded quotient: 53 >=
2 * 24 + 2). For float32 images the running sums are float64, exact to ~1e-16 of the row's running
total.

Edges, ``mode``:

* "ignore" (default, the project's convention, as ``median_filter``): only the in-image pixels of
  the footprint count, so the mean near a border is over fewer pixels;
* "nearest": out-of-image pixels take the value of the nearest edge pixel (ImageJ's RankFilters,
  scipy's "nearest"), so every window has the footprint's full count.

``footprint="imagej"`` is ImageJ's circle for a real radius (``footprints.imagej_half_widths``):
with ``mode="nearest"`` this is Process > Filters > Mean..., which ImageJ computes as
``(float)(sum / n)`` with double sums and writes to 8/16-bit images as ``(int)(mean + 0.5f)``: the
same float32 value, then that rounding (tests/test_mean.py compares with ImageJ itself).

CPU: numba (per output row, chords of the rows above and below, interior pixels in a vectorised
loop); GPU: the same sums as whole-image slice operations on the padded running sums (2r + 1
slices). Row bands run on the shared thread pool.
"""
from __future__ import annotations

import numbers

import numba
import numpy as np

from ..errors import InvalidValue
from .._checks import ORDER_DTYPES, check_choice, check_image, check_radius
from ..backend import get_array_module, on_input_device
from .bands import cpu_threads, run_jobs
from .footprints import chord_half_widths, imagej_half_widths

__all__ = ["mean_filter"]

MEAN_FOOTPRINTS = ("disk", "square", "imagej")
MEAN_MODES = ("ignore", "nearest")


@on_input_device
def mean_filter(image, radius, *, footprint="disk", mode="ignore"):
    """Exact mean over a disk (x^2 + y^2 <= r^2), a square ((2r+1)^2) or ImageJ's circle.

    Parameters
    ----------
    image : 2-D NumPy or CuPy array, uint8, uint16 or float32 (no NaN).
    radius : int >= 1 for "disk" and "square"; a real number >= 0 for "imagej".
    footprint : "disk", "square" or "imagej" (RankFilters' kernel {x^2 + y^2 <= floor(r^2) + 1}).
    mode : "ignore" (out-of-image pixels do not count) or "nearest" (they repeat the edge).

    Returns
    -------
    float32 array of the image's shape and backend.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> gi.mean_filter(np.array([[0, 3, 9]], np.uint8), 1, footprint="square")
    array([[1.5, 4. , 6. ]], dtype=float32)
    """
    image = check_image(image, "image", ORDER_DTYPES)
    check_choice(footprint, "footprint", MEAN_FOOTPRINTS)
    check_choice(mode, "mode", MEAN_MODES)
    if footprint == "imagej":
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not 0 <= radius < 1e4:
            raise InvalidValue(f"radius: expected a number in [0, 10000) for footprint='imagej', got {radius!r}")
        half = imagej_half_widths(float(radius))
    else:
        half = chord_half_widths(check_radius(radius), footprint)
    xp = get_array_module(image)
    height, width = image.shape
    reach = (half.size - 1) // 2
    if mode == "nearest":
        source = xp.pad(image, ((reach, reach), (int(half.max()),) * 2), mode="edge")
        origin = (reach, int(half.max()))
    else:
        source, origin = image, (0, 0)
        keep = min(reach, height - 1)  # rows and widths beyond the image add nothing
        half = np.minimum(half[reach - keep: reach + keep + 1], width - 1)
    accumulate = np.int64 if image.dtype.kind == "u" else np.float64
    running = xp.zeros((source.shape[0], source.shape[1] + 1), dtype=accumulate)
    running[:, 1:] = xp.cumsum(source, axis=1, dtype=accumulate)
    if xp is np:
        sums, counts = _window_sums_cpu(running, half, origin, (height, width))
    else:
        sums, counts = _window_sums_gpu(running, half, origin, (height, width))
    return (sums.astype(np.float64) / counts).astype(np.float32)


def _window_sums_cpu(running, half, origin, shape):
    height, width = shape
    sums = np.empty(shape, dtype=running.dtype)
    counts = np.empty(shape, dtype=np.int64)
    n_bands = max(1, min(cpu_threads(), height * width * half.size // (1 << 20), height))
    edges = [height * b // n_bands for b in range(n_bands + 1)]
    run_jobs([lambda a=a, b=b: _chord_sums(running, half, origin[0], origin[1], a, b, sums, counts)
              for a, b in zip(edges[:-1], edges[1:])])
    return sums, counts


@numba.njit(cache=True, nogil=True)
def _chord_sums(running, half, oy, ox, y0, y1, sums, counts):
    """Window sums and pixel counts of output rows [y0, y1) from the rows' running sums
    (``running[r, j]`` = sum of source row r before column j); output (y, x) is source (y + oy, x + ox)."""
    src_height = running.shape[0]
    src_width = running.shape[1] - 1
    reach = (half.size - 1) // 2
    width = sums.shape[1]
    for y in range(y0, y1):
        total = sums[y]
        count = counts[y]
        total[:] = 0
        count[:] = 0
        for j in range(half.size):
            row = y + oy + j - reach
            if row < 0 or row >= src_height:
                continue
            w = half[j]
            line = running[row]
            # interior: the chord [c - w, c + w] inside the source row, c = x + ox
            lo = max(0, w - ox)
            hi = min(width, src_width - w - ox)
            for x in range(lo, hi):
                total[x] += line[x + ox + w + 1] - line[x + ox - w]
                count[x] += 2 * w + 1
            for x in range(width):
                if lo <= x < hi:
                    continue
                c = x + ox
                a = max(c - w, 0)
                b = min(c + w + 1, src_width)
                if a < b:
                    total[x] += line[b] - line[a]
                    count[x] += b - a


def _window_sums_gpu(running, half, origin, shape):
    """The chord sums as slices of the running sums, extended so that clipping is an index shift."""
    xp = get_array_module(running)
    height, width = shape
    reach = (half.size - 1) // 2
    widest = int(half.max())
    src_height, src_width = running.shape[0], running.shape[1] - 1
    # columns -widest - 1 .. src_width + widest, clipped into [0, src_width]; rows padded with zeros
    columns = np.clip(np.arange(-widest - 1, src_width + widest + 1), 0, src_width)
    padded = xp.zeros((src_height + 2 * reach, columns.size), dtype=running.dtype)
    padded[reach:reach + src_height] = running[:, xp.asarray(columns)]
    ones = xp.zeros((src_height + 2 * reach, columns.size), dtype=np.int64)
    ones[reach:reach + src_height] = xp.asarray(columns)[None, :]
    sums = xp.zeros(shape, dtype=running.dtype)
    counts = xp.zeros(shape, dtype=np.int64)
    oy, ox = origin
    for j, w in enumerate(half.tolist()):
        rows = slice(oy + j, oy + j + height)
        right = slice(ox + w + 2 + widest, ox + w + 2 + widest + width)  # column c + w + 1 of the source
        left = slice(ox - w + 1 + widest, ox - w + 1 + widest + width)  # column c - w
        sums += padded[rows, right] - padded[rows, left]
        counts += ones[rows, right] - ones[rows, left]
    return sums, counts
