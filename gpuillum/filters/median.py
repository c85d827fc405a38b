"""Exact median filter (disk or square window) for uint8, uint16 and float32 images.

``mode="ignore"`` counts only the in-bounds pixels of each window and returns element ``n // 2`` of
their sorted values (the upper median for even n): identical to ``skimage.filters.rank.median`` and
to CellProfiler >= 4.2. The padded modes equal ``scipy.ndimage.median_filter(footprint=...)``: the
image is padded by the radius the way scipy extends it and the ignore-mode kernel runs on the
padded image, over the original pixels only.

Every input is reduced to integer *levels* (uint8/uint16 values as they are; float32 values to the
index of their value among the image's distinct values, ``ranks.dense_ranks``), so one exact
histogram kernel serves all dtypes. Its cost is O(r) per pixel: the window histogram slides along the image and only the chord
ends that enter or leave the window are counted, never a per-pixel sort. The CPU kernel is numba,
the GPU kernel a CUDA RawKernel (``cuda/median.cu``); validation, padding and the level transform
are one ``xp`` code path shared by both.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .._checks import INTEGER_DTYPES, ORDER_DTYPES, check_choice, check_image, check_radius
from ..backend import cuda_kernel, get_array_module, on_input_device
from .bands import cpu_threads, run_jobs
from .footprints import FOOTPRINTS, chord_half_widths, covering_radius, imagej_half_widths
from .ranks import dense_ranks
from ..errors import InvalidType, InvalidValue

MODES = ("ignore", "reflect", "nearest", "mirror", "constant")
MEDIAN_FOOTPRINTS = FOOTPRINTS + ("imagej",)
# scipy.ndimage mode -> numpy.pad mode giving the same extension (also for pads wider than the image)
_NUMPY_PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge"}


@on_input_device
def median_filter(image, radius, *, footprint="disk", mode="ignore", cval=0):
    """Exact median over a disk (x^2 + y^2 <= r^2), a square ((2r+1)^2) or ImageJ's circle.

    ``image``: 2-D uint8, uint16 or float32, NumPy or CuPy (no NaN); the result has the same dtype
    and backend. ``mode``: "ignore" (only in-bounds pixels count, skimage rank / CellProfiler
    semantics) or one of scipy's "reflect", "nearest", "mirror", "constant" (padding with ``cval``,
    converted to the image dtype as scipy does). Any radius >= 1 is exact, also beyond the image size.
    ``footprint="imagej"``: RankFilters' circle {x^2 + y^2 <= floor(r^2) + 1} for a real radius
    r in (0, 1000] (footprints.imagej_half_widths); with ``mode="nearest"`` this is ImageJ's
    Process > Filters > Median... on 8/16-bit images (an odd count: the median is a pixel value).

    Examples
    --------
    >>> background = median_filter(image, 15)                                       # skimage.filters.rank.median(image, disk(15))
    >>> imagej = median_filter(image, 15, footprint="imagej", mode="nearest")       # run("Median...", "radius=15")
    """
    return _median(image, radius, footprint, mode, cval, count=False)[0]


@on_input_device
def median_filter_counted(image, radius, *, footprint="disk", mode="ignore", cval=0):
    """``median_filter`` of a uint8 or uint16 image and the histogram of its result: int64
    ``counts[v]`` = pixels whose median is v, for v up to the largest value a window sees (the
    image maximum, or the larger of it and ``cval`` in constant mode). The CPU kernel counts as it
    writes each pixel, which spares a statistic of the result (CellProfiler's rescale) a pass."""
    image = check_image(image, "image", INTEGER_DTYPES)
    return _median(image, radius, footprint, mode, cval, count=True)


def _median(image, radius, footprint, mode, cval, count: bool):
    """(median, counts or None): the body of ``median_filter`` and ``median_filter_counted``."""
    image = check_image(image, "image", ORDER_DTYPES)
    check_choice(footprint, "footprint", MEDIAN_FOOTPRINTS)
    check_choice(mode, "mode", MODES)
    if footprint == "imagej":
        half = imagej_half_widths(_imagej_radius(radius))
        radius = (half.size - 1) // 2  # its widest chord is the middle one, of this half-width too
    else:
        radius = check_radius(radius)
    xp = get_array_module(image)
    height, width = image.shape

    if mode == "ignore":
        source = xp.ascontiguousarray(image)
        origin = 0
        if footprint != "imagej":
            radius = covering_radius(radius, image.shape, footprint)  # the same windows, however large
    else:
        fill = _cval_as(cval, image.dtype) if mode == "constant" else None
        source = _pad(image, radius, mode, fill, xp)
        origin = radius

    if image.dtype == np.float32:
        values, levels = dense_ranks(source)
        n_levels = int(values.size)
    else:
        values, levels = None, source
        n_levels = int(source.max()) + 1  # one scalar read back on the GPU

    if footprint != "imagej":
        half = chord_half_widths(radius, footprint)
    if xp is np:
        result, counts = _median_levels_cpu(levels, half, origin, origin, height, width, n_levels, count)
    else:
        result, counts = _median_levels_gpu(levels, half, origin, origin, height, width, n_levels), None
    if count and counts is None:  # the GPU, and CPU images with more bands x levels than pixels
        counts = xp.bincount(result.ravel(), minlength=n_levels)
    return (result if values is None else values[result]), counts


def _imagej_radius(radius) -> float:
    """ImageJ's rank filter radius: a real number in (0, 1000] (its dialog allows up to 1000)."""
    if isinstance(radius, bool) or not isinstance(radius, (int, float, np.integer, np.floating)) or not 0 < radius <= 1000:
        raise InvalidValue(f"radius: expected a number in (0, 1000] for footprint='imagej', got {radius!r}")
    return float(radius)


def _cval_as(cval, dtype) -> np.generic:
    """``cval`` in the image dtype, converted like scipy's C cast (truncation for integers)."""
    if isinstance(cval, bool) or not isinstance(cval, (int, float, np.integer, np.floating)):
        raise InvalidType(f"cval: expected a real number, got {cval!r}")
    if math.isnan(cval):
        raise InvalidValue("cval: expected a real number, got nan")
    if dtype == np.float32:
        return np.float32(cval)
    info = np.iinfo(dtype)
    if math.isinf(cval) or not info.min <= math.trunc(cval) <= info.max:
        raise InvalidValue(f"cval: expected a value in [{info.min}, {info.max}] for a {np.dtype(dtype).name} image, got {cval!r}")
    return dtype.type(math.trunc(cval))


def _pad(image, radius, mode, cval, xp):
    """The image extended by ``radius`` on every side as scipy.ndimage extends it.

    For "reflect" with a radius of 4x an image side or more, scipy's 2-D rank filter reads outside
    the image (an offset of exactly -4n maps to index -1); there this follows the periodic
    extension of numpy.pad("symmetric"), which scipy's own 1-D filters use.
    """
    height, width = image.shape
    if mode == "constant":
        padded = xp.full((height + 2 * radius, width + 2 * radius), cval, dtype=image.dtype)
        padded[radius:radius + height, radius:radius + width] = image
        return padded
    # index maps built on the host (O(H + W)); numpy.pad repeats reflections past the image edge
    # with the same period as scipy, which the tests check on images smaller than the radius
    rows = np.pad(np.arange(height), radius, mode=_NUMPY_PAD_MODES[mode])
    cols = np.pad(np.arange(width), radius, mode=_NUMPY_PAD_MODES[mode])
    return image[xp.asarray(rows)[:, None], xp.asarray(cols)[None, :]]


# ----------------------------------------------------------------------------------------------
# CPU kernel (numba: a sliding histogram needs a per-pixel loop that NumPy cannot vectorise).
# Huang's sliding window: each pixel costs the chord-end updates of the `fine` histogram (one bin
# per level) plus a walk of the median from its previous position, which skips whole blocks of
# 2**shift levels when it can. Block counts come from up to two more tiers kept in step with the
# updates (`coarse`, and `top` for blocks of 4**shift levels), or, when the levels are dense
# compared with the window (n_tiers = 1), from summing the block's fine bins on demand: the median
# then moves a few levels per pixel and the cheaper updates win (~25 % faster on 12-bit data).
# An absent tier is passed as None, so numba compiles each layout without its tier tests.
# Update cost (measured on 12-bit fields, ~2x in all against a straightforward loop): the image is
# read through a flat index plus per-row chord-end offsets, with unsigned indices (no negative-index
# wraparound code) and unsigned below-counts (each comparison becomes one add-carry); window rows
# go two at a time; the count n // 2 is hoisted out of the interior steps. Two bands interleaved
# in one thread and int16 counts or int32 offsets were measured too: slower or no better. So were
# walks moving 2-4 levels branch-free, or in 8-level spans: on a 12-bit 1080^2 image (r = 11, one
# thread) the updates take ~25 of ~38 ms, the branch-free step ~5 and the walk's loops ~8.
# Also measured slower: pairing window rows r - d and r + d to share one load of their half-width
# (~5 %); a step generated for r = 11 and width 1080 with constant offsets (~10 %); counting the
# chord ends below a threshold held for 16-32 steps with vector compares, leaving the scalar loop
# only the histogram (1.5-2x: per-row vector set-up, re-summing the bins between the threshold and
# the median). Dropping the compares altogether (a wrong result) saves only ~25 %.

_THREADED_UPDATES = 1 << 20  # below ~this many window-row updates (a few ms) one thread is faster
_BANDS_PER_THREAD = 4  # row bands per thread: load balance against a window rebuild per band
_LAZY_LEVELS_PER_PIXEL = 64  # n_tiers = 1 while levels <= this x window area (measured crossover)
_LAZY_SHIFT = 6


def _tiers(n_levels: int, window_area: int) -> tuple[int, int]:
    """(shift, number of tiers) of the histogram for ``n_levels`` levels."""
    if n_levels <= _LAZY_LEVELS_PER_PIXEL * window_area:
        return _LAZY_SHIFT, 1
    bits = max(n_levels - 1, 1).bit_length()
    if bits <= 16:
        return (bits + 1) // 2, 2  # blocks of ~sqrt(levels)
    return (bits + 2) // 3, 3  # ~cbrt(levels): float ranks


@numba.njit(cache=True, nogil=True, inline="always")
def _count(fine, coarse, top, shift, value, delta):
    """Add ``delta`` to the count of level ``value`` in every tier present."""
    fine[value] += delta
    if coarse is not None:
        coarse[value >> shift] += delta
    if top is not None:
        top[value >> (2 * shift)] += delta


@numba.njit(cache=True, nogil=True, inline="always")
def _block_count(fine, coarse, shift, block):
    """Window count of the levels in block ``block`` (2**shift levels)."""
    if coarse is not None:
        return coarse[block]
    total = 0
    for level in range(block << shift, min((block + 1) << shift, fine.size)):
        total += fine[level]
    return total


@numba.njit(cache=True, nogil=True, inline="always")
def _walk(fine, coarse, top, shift, med, below, k):
    """Move ``med`` to the level holding element k; ``below`` = window count of levels < med."""
    # a branch-free move of one level first: it settles most pixels without the mispredicted
    # branches of the loops below (fine[-1] is read when med == 0, then weighted by zero)
    here = fine[med]
    under = fine[med - 1]
    up = np.int64(below + here <= k)
    down = np.int64(below > k)
    below += up * here - down * under
    med += up - down
    block = 1 << shift
    big = block << shift
    while below + fine[med] <= k:  # upwards, whole blocks where aligned
        if top is not None and med & (big - 1) == 0 and below + top[med >> (2 * shift)] <= k:
            below += top[med >> (2 * shift)]
            med += big
            continue
        if med & (block - 1) == 0:
            count = _block_count(fine, coarse, shift, med >> shift)
            if below + count <= k:
                below += count
                med += block
                continue
        below += fine[med]
        med += 1
    while below > k:  # downwards
        if top is not None and med & (big - 1) == 0 and below - top[(med >> (2 * shift)) - 1] > k:
            below -= top[(med >> (2 * shift)) - 1]
            med -= big
            continue
        if med & (block - 1) == 0:
            count = _block_count(fine, coarse, shift, (med >> shift) - 1)
            if below - count > k:
                below -= count
                med -= block
                continue
        med -= 1
        below -= fine[med]
    return med, below


@numba.njit(cache=True, nogil=True, inline="always")
def _emit(out, counts, y, x, med):
    """Write the median of pixel (y, x), and count it when a histogram of the result is kept."""
    out[y, x] = med
    if counts is not None:
        counts[med] += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _exchange(src, entering_at, leaving_at, threshold, fine, coarse, top, shift):
    """Count src[entering_at] in and src[leaving_at] out; returns whether each is below threshold."""
    entering = src[entering_at]
    leaving = src[leaving_at]
    _count(fine, coarse, top, shift, entering, 1)
    _count(fine, coarse, top, shift, leaving, -1)
    return np.uint64(np.uint64(entering) < threshold), np.uint64(np.uint64(leaving) < threshold)


@numba.njit(cache=True, nogil=True, inline="always")
def _slide(src, base, plus, minus, j_lo, j_hi, med, fine, coarse, top, shift):
    """Horizontal step with every chord end inside the image: on window rows [j_lo, j_hi) count
    src[base + plus[j]] in and src[base + minus[j]] out; returns the change of the count below med."""
    # unsigned indices and counts: no wraparound code, and each comparison compiles to an add-carry
    entered_below = np.uint64(0)
    left_below = np.uint64(0)
    threshold = np.uint64(med)
    j = np.uint64(j_lo)
    stop = np.uint64(j_hi)
    if (stop - j) & np.uint64(1):  # one row, then the rest two at a time (fewer loop branches)
        entered, left = _exchange(src, np.uint64(base + plus[j]), np.uint64(base + minus[j]), threshold, fine, coarse, top, shift)
        entered_below += entered
        left_below += left
        j += np.uint64(1)
    while j < stop:
        entered, left = _exchange(src, np.uint64(base + plus[j]), np.uint64(base + minus[j]), threshold, fine, coarse, top, shift)
        entered_below += entered
        left_below += left
        j += np.uint64(1)
        entered, left = _exchange(src, np.uint64(base + plus[j]), np.uint64(base + minus[j]), threshold, fine, coarse, top, shift)
        entered_below += entered
        left_below += left
        j += np.uint64(1)
    return np.int64(entered_below) - np.int64(left_below)


@numba.njit(cache=True, nogil=True)
def _median_band(src, src_w, half, oy0, ox0, width, y_start, y_stop, out, counts, fine, coarse, top, shift):
    """Output rows [y_start, y_stop) in a snake walk (right on even rows, left on odd ones);
    ``src`` is the flattened image, ``src_w`` its width; ``counts``: None, or the histogram of
    the medians written, added to."""
    src_h = src.size // src_w
    radius = (half.size - 1) // 2
    # flat offsets from the centre of the chord ends of a step to the right: the pixel entering
    # (dx = hw + 1) and the one leaving (dx = -hw) on each window row; a step to the left from
    # cx is the reverse of the step to the right from cx - 1
    ahead = np.empty(half.size, np.int64)
    behind = np.empty(half.size, np.int64)
    for j in range(half.size):
        ahead[j] = (j - radius) * src_w + half[j] + 1
        behind[j] = (j - radius) * src_w - half[j]
    x_inside_lo = max(0, radius + 1 - ox0)  # steps from x in [lo, hi) keep every chord end inside
    x_inside_hi = min(width - 1, src_w - radius - 1 - ox0)

    n = 0
    cy = oy0 + y_start
    for dy in range(max(-radius, -cy), min(radius, src_h - 1 - cy) + 1):
        hw = half[dy + radius]
        for col in range(max(0, ox0 - hw), min(src_w - 1, ox0 + hw) + 1):
            _count(fine, coarse, top, shift, src[(cy + dy) * src_w + col], 1)
            n += 1
    med, below = _walk(fine, coarse, top, shift, 0, 0, n // 2)

    x = 0
    for y in range(y_start, y_stop):
        cy = oy0 + y
        if y > y_start:  # step down one row at column x: each column of the window shifts by one
            cx = ox0 + x
            for dx in range(max(-radius, -cx), min(radius, src_w - 1 - cx) + 1):
                vh = half[dx + radius]
                if cy - 1 - vh >= 0:
                    value = src[(cy - 1 - vh) * src_w + cx + dx]
                    _count(fine, coarse, top, shift, value, -1)
                    n -= 1
                    below -= value < med
                if cy + vh < src_h:
                    value = src[(cy + vh) * src_w + cx + dx]
                    _count(fine, coarse, top, shift, value, 1)
                    n += 1
                    below += value < med
            med, below = _walk(fine, coarse, top, shift, med, below, n // 2)
        _emit(out, counts, y, x, med)
        forward = (y - y_start) % 2 == 0
        j_lo = max(-radius, -cy) + radius  # window rows inside the image
        j_hi = min(radius, src_h - 1 - cy) + radius + 1
        row = cy * src_w + ox0
        k = n // 2  # window size changes only in the border steps
        for _ in range(width - 1):
            if x_inside_lo <= x < x_inside_hi:
                if forward:
                    below += _slide(src, row + x, ahead, behind, j_lo, j_hi, med, fine, coarse, top, shift)
                    x += 1
                else:
                    below += _slide(src, row + x - 1, behind, ahead, j_lo, j_hi, med, fine, coarse, top, shift)
                    x -= 1
            else:
                step = 1 if forward else -1
                cx = ox0 + x
                for j in range(j_lo, j_hi):  # branch-free: an end outside the image counts 0 times
                    hw = half[j]
                    enter = cx + step * (hw + 1)
                    leave = cx - step * hw
                    enter_inside = np.int64(np.uint64(enter) < np.uint64(src_w))
                    leave_inside = np.int64(np.uint64(leave) < np.uint64(src_w))
                    line = (cy + j - radius) * src_w  # an end outside reads column 0 instead
                    entering = src[np.uint64(line + enter * enter_inside)]
                    leaving = src[np.uint64(line + leave * leave_inside)]
                    _count(fine, coarse, top, shift, entering, enter_inside)
                    _count(fine, coarse, top, shift, leaving, -leave_inside)
                    n += enter_inside - leave_inside
                    below += enter_inside * np.int64(entering < med) - leave_inside * np.int64(leaving < med)
                x += step
                k = n // 2
            med, below = _walk(fine, coarse, top, shift, med, below, k)
            _emit(out, counts, y, x, med)


def _median_levels_cpu(levels, half, oy0, ox0, height, width, n_levels, count=False):
    """(median, counts or None) of the ``height`` x ``width`` region at (oy0, ox0) of ``levels``,
    windows clipped to it; ``count``: also the histogram of the median (n_levels int64), counted
    by the kernel while one histogram per band costs less than a bincount of the result (else None).

    Row bands run on the shared thread pool (``bands.run_jobs``; the band kernel releases the
    GIL): the same parallelism as a numba prange, without its seconds of extra compile time per dtype.
    """
    shift, n_tiers = _tiers(n_levels, int(np.sum(2 * half + 1)))
    half = half.astype(np.int64)
    src_w = levels.shape[1]
    src = np.ascontiguousarray(levels).reshape(-1)
    out = np.empty((height, width), dtype=levels.dtype)
    n_threads = cpu_threads()
    small = height * width * half.size < _THREADED_UPDATES  # a few ms of work: threads cost more
    n_bands = 1 if small or n_threads == 1 else min(height, _BANDS_PER_THREAD * n_threads)

    count_in_bands = count and n_bands * n_levels <= height * width
    band_counts = np.zeros((n_bands, n_levels), dtype=np.int64) if count_in_bands else None

    def run_band(band):
        y_start, y_stop = band * height // n_bands, (band + 1) * height // n_bands
        fine = np.zeros(n_levels, dtype=np.int32)
        coarse = np.zeros(((n_levels - 1) >> shift) + 1, dtype=np.int32) if n_tiers > 1 else None
        top = np.zeros(((n_levels - 1) >> (2 * shift)) + 1, dtype=np.int32) if n_tiers == 3 else None
        counts = band_counts[band] if count_in_bands else None
        _median_band(src, src_w, half, oy0, ox0, width, y_start, y_stop, out, counts, fine, coarse, top, shift)

    run_jobs([lambda band=band: run_band(band) for band in range(n_bands)])
    return out, (band_counts.sum(axis=0) if count_in_bands else None)


# ----------------------------------------------------------------------------------------------
# GPU kernel: one warp per column strip, window histogram updated incrementally down the strip
# (see cuda/median.cu for the design).

_CUDA_SOURCE = "median.cu"
_CUDA_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(np.uint16): "unsigned short", np.dtype(np.uint32): "unsigned int"}
_CUDA_KERNELS = tuple(f"median_hist_strips<{name}>" for name in _CUDA_TYPES.values())
_SHARED_BYTES = 48 * 1024  # default dynamic shared memory limit per block
_SCRATCH_BYTES = 1 << 30  # global fine histograms when they do not fit in shared memory
_WARPS_PER_SM = 16
_MAX_WARPS_PER_BLOCK = 8


def _median_levels_gpu(levels, half, oy0, ox0, height, width, n_levels):
    """CuPy twin of ``_median_levels_cpu`` without ``count``: the median only."""
    import cupy as cp

    levels = cp.ascontiguousarray(levels)
    radius = (half.size - 1) // 2
    shift = max(5, (max(n_levels - 1, 1).bit_length() + 1) // 2)  # coarse and fine blocks ~ sqrt(levels)
    n_coarse = (n_levels + (1 << shift) - 1) >> shift

    band_rows = min(height, max(16, 4 * radius))  # a strip's start and end cost ~ pi r^2 updates each
    n_items = -(-height // band_rows) * width
    fine_in_shared = 2 * 4 * (n_levels + n_coarse) <= _SHARED_BYTES  # at least two warps per block
    per_warp = n_coarse + (n_levels if fine_in_shared else 0)
    warps_per_block = min(_MAX_WARPS_PER_BLOCK, _SHARED_BYTES // (4 * per_warp))
    if warps_per_block < 1:
        raise InvalidValue(f"image: {n_levels} distinct values need more GPU shared memory than a block has")
    sm_count = cp.cuda.Device().attributes["MultiProcessorCount"]
    n_warps = min(n_items, sm_count * _WARPS_PER_SM)
    if not fine_in_shared:
        n_warps = max(1, min(n_warps, _SCRATCH_BYTES // (4 * n_levels)))
    n_blocks = -(-n_warps // warps_per_block)
    scratch_len = 1 if fine_in_shared else n_blocks * warps_per_block * n_levels
    fine_global = cp.zeros(scratch_len, dtype=cp.int32)

    out = cp.empty((height, width), dtype=levels.dtype)
    kernel = cuda_kernel(_CUDA_SOURCE, f"median_hist_strips<{_CUDA_TYPES[levels.dtype]}>", _CUDA_KERNELS)
    args = (
        levels, np.int32(levels.shape[0]), np.int32(levels.shape[1]),
        cp.asarray(half.astype(np.int32)), np.int32(radius),
        np.int32(oy0), np.int32(ox0), np.int32(height), np.int32(width),
        np.int32(band_rows), np.int32(n_items), out, fine_global,
        np.int32(n_levels), np.int32(shift), np.int32(n_coarse), np.int32(fine_in_shared),
    )
    kernel((n_blocks,), (32 * warps_per_block,), args, shared_mem=4 * per_warp * warps_per_block)
    return out
