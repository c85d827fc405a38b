"""Flat grey-scale morphology with a disk, a square or ImageJ's circle: exact, any radius, borders ignored.

Out-of-bounds pixels are ignored: erosion is the minimum over the in-bounds pixels of the
footprint, dilation the maximum (``skimage.morphology.erosion/dilation(..., mode="ignore")``).
Opening is dilation(erosion), closing erosion(dilation), each with borders ignored, exactly as
``skimage.morphology.opening/closing(..., mode="ignore")``; ``white_tophat = image - opening`` and
``black_tophat = closing - image`` in the input dtype (never negative, since opening <= image <=
closing pixel by pixel). ``footprint="imagej"`` is the circle of ImageJ's RankFilters for a real
radius R, {x^2 + y^2 <= floor(R^2) + 1} (footprints.imagej_half_widths): ImageJ's Minimum,
Maximum and Top Hat, whose out-of-image pixels repeat the nearest edge pixel, which for a minimum
or maximum over a convex footprint is the same as ignoring them.

Everything is written once with ``xp``; only erosion has backend kernels, and only for minima:
dilation is erosion in reversed order (``~x`` reverses uint8/uint16, ``-x`` reverses float32), so
``dilate(f) = flip(erode(flip(f)))``. Ignoring the border equals padding with the dtype's largest
value, which never wins a minimum.

* ``"square"``: van Herk / Gil-Werman 1-D minima along rows, then columns: per line, prefix and
  suffix minima in blocks of 2r+1, ``out[x] = min(suffix[x - r], prefix[x + r])``; 3 comparisons
  per pixel and pass whatever r.
* ``"disk"``: the disk is a union of horizontal chords (row offset dy, half-width w(dy)), so
  ``erosion(y, x) = min_dy H_w(dy)[y + dy, x]`` with ``H_w`` the 1-D minimum over [x - w, x + w].
  CPU (numba): each input row's ``H_w`` for increasing w is built from the previous width by
  ``H_{w+d}[x] = min(H_w[x - d], H_w[x + d])`` (plus ``H_w[x]`` when d > w), one vector pass per
  distinct chord width (about 0.6 r of them), and each ``H_w`` is folded into the 2r+1 output rows
  that use it. Cost ~ (0.6 r + 2r + 1) vectorised comparisons per pixel, memory two padded rows
  per row band; row bands run in threads. GPU (CUDA): per row band a sparse table (minima over
  windows of 2^k pixels) of the band's input rows, then one thread per output pixel answers each
  chord with two look-ups (Urbach & Wilkinson 2008): 2 (2r + 1) look-ups per pixel, table memory
  per band capped by ``GPU_TABLE_BUDGET_BYTES``.

float32 results equal scikit-image's as values (the sign of a zero may differ); a top-hat of an
infinite pixel is inf - inf = NaN, as in scikit-image.
"""
from __future__ import annotations

import numbers

import numba
import numpy as np

from .._checks import ORDER_DTYPES, check_choice, check_image, check_radius
from ..errors import InvalidValue
from ..backend import cuda_kernel, get_array_module, on_input_device
from .bands import cpu_threads, run_jobs
from .footprints import FOOTPRINTS, chord_half_widths, covering_radius, imagej_half_widths
from .neutral import never_wins

__all__ = ["grey_erosion", "grey_dilation", "grey_opening", "grey_closing", "white_tophat", "black_tophat"]

MORPHOLOGY_FOOTPRINTS = FOOTPRINTS + ("imagej",)
CUDA_SOURCE = "morphology.cu"
_CUDA_TYPES = {np.dtype(np.uint8): "unsigned char", np.dtype(np.uint16): "unsigned short", np.dtype(np.float32): "float"}
_CUDA_KERNELS = ("chord_erosion", "sparse_table_level", "vhgw_blocks", "vhgw_combine")
CUDA_INSTANTIATIONS = tuple(f"{k}<{t}>" for k in _CUDA_KERNELS for t in _CUDA_TYPES.values())
GPU_TABLE_BUDGET_BYTES = 256 * 2**20  # sparse-table memory per row band on the GPU
_THREADS = 256


# ----------------------------------------------------------------------------- public functions


@on_input_device
def grey_erosion(image, radius, *, footprint="disk"):
    """Minimum over the in-bounds pixels of a disk, square or ImageJ circle of ``radius``; input dtype out."""
    image, radius = _validated(image, radius, footprint)
    return _erode(image, radius, footprint)


@on_input_device
def grey_dilation(image, radius, *, footprint="disk"):
    """Maximum over the in-bounds pixels of a disk, square or ImageJ circle of ``radius``; input dtype out."""
    image, radius = _validated(image, radius, footprint)
    return _dilate(image, radius, footprint)


@on_input_device
def grey_opening(image, radius, *, footprint="disk"):
    """Dilation of the erosion (borders ignored in both): removes bright details smaller than the footprint."""
    image, radius = _validated(image, radius, footprint)
    return _dilate(_erode(image, radius, footprint), radius, footprint)


@on_input_device
def grey_closing(image, radius, *, footprint="disk"):
    """Erosion of the dilation (borders ignored in both): removes dark details smaller than the footprint."""
    image, radius = _validated(image, radius, footprint)
    return _erode(_dilate(image, radius, footprint), radius, footprint)


@on_input_device
def white_tophat(image, radius, *, footprint="disk"):
    """``image - grey_opening(image)``: the bright details smaller than the footprint, input dtype."""
    opened = grey_opening(image, radius, footprint=footprint)
    xp = get_array_module(image)
    return xp.subtract(image, opened, out=opened)


@on_input_device
def black_tophat(image, radius, *, footprint="disk"):
    """``grey_closing(image) - image``: the dark details smaller than the footprint, input dtype."""
    closed = grey_closing(image, radius, footprint=footprint)
    xp = get_array_module(image)
    return xp.subtract(closed, image, out=closed)


# ----------------------------------------------------------------------------- shared xp logic


def _validated(image, radius, footprint):
    image = check_image(image, "image", ORDER_DTYPES)
    check_choice(footprint, "footprint", MORPHOLOGY_FOOTPRINTS)
    image = get_array_module(image).ascontiguousarray(image)
    if footprint == "imagej":
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not 0 < radius <= 1000:
            raise InvalidValue(f"radius: expected a number in (0, 1000] for footprint='imagej', got {radius!r}")
        return image, float(radius)
    radius = check_radius(radius, "radius")
    return image, covering_radius(radius, image.shape, footprint)


def _flip(image):
    """Reverse the order of the values (``~x`` for unsigned ints, ``-x`` for floats): max becomes min."""
    xp = get_array_module(image)
    return xp.negative(image) if image.dtype.kind == "f" else xp.invert(image)


def _dilate(image, radius, footprint):
    return _flip(_erode(_flip(image), radius, footprint))


def _erode(image, radius, footprint):
    height, width = image.shape
    if footprint == "square":
        rows = _line_erosion(image, min(radius, width - 1), axis=1)
        return _line_erosion(rows, min(radius, height - 1), axis=0)
    return _chord_erosion(image, _clipped_chords(radius, height, width, footprint))


def _clipped_chords(radius, height, width, footprint="disk"):
    """Half-widths of the disk (or ImageJ's circle) for dy = -r'..r', r' = min(r, height - 1),
    widths capped at width - 1.

    Rows and columns beyond the image can never be in bounds, so clipping them changes no result
    and keeps radii larger than the image cheap.
    """
    half = imagej_half_widths(radius) if footprint == "imagej" else chord_half_widths(radius, "disk")
    radius = (half.size - 1) // 2
    reach = min(radius, height - 1)
    return np.minimum(half[radius - reach: radius + reach + 1], width - 1)


def _line_erosion(image, radius, axis):
    """1-D minimum over [i - r, i + r] along ``axis`` (van Herk / Gil-Werman), borders ignored."""
    if radius == 0:
        return image.copy()
    if get_array_module(image) is np:
        kernel = _vhgw_columns_cpu if axis == 0 else _vhgw_rows_cpu
        return kernel(image, radius, never_wins(image.dtype, "min"))
    return _line_erosion_gpu(image, radius, axis)


def _chord_erosion(image, half):
    """Minimum over the chords ``|dx| <= half[dy + r']`` of each pixel, borders ignored."""
    if get_array_module(image) is not np:
        return _chord_erosion_gpu(image, half)
    schedule, step_first, step_dys = _width_schedule(half)
    sentinel = never_wins(image.dtype, "min")
    out = np.full_like(image, sentinel)
    height = image.shape[0]
    reach = (half.size - 1) // 2
    # row bands run in threads (the kernel releases the GIL); each band re-reads `reach` rows above
    # and below, so small images stay in one band
    bands = max(1, min(cpu_threads(), height // max(64, 4 * reach)))
    edges = [height * b // bands for b in range(bands + 1)]

    def run(b):
        _chord_erosion_cpu(image, out, edges[b], edges[b + 1], schedule, step_first, step_dys, sentinel)

    run_jobs([lambda b=b: run(b) for b in range(bands)])
    return out


def _width_schedule(half):
    """Increasing chord widths to build, each reachable from the previous one, and their row offsets.

    ``H_{w+d}[x] = min(H_w[x - d], H_w[x], H_w[x + d])`` needs d <= 2w + 1 (the windows must touch;
    ``H_w[x]`` can be left out when d <= w), so intermediate widths 3w + 1 are inserted where a jump
    is longer. Returns the widths, CSR offsets into ``dys`` per width, and the row offsets dy whose
    chord has that width.
    """
    reach = (half.size - 1) // 2
    schedule, dys, first = [], [], [0]
    built = 0
    for target in np.unique(half):
        while target - built > 2 * built + 1:
            built = 3 * built + 1
            schedule.append(built)
            first.append(len(dys))
        schedule.append(int(target))
        dys.extend(int(i) - reach for i in np.flatnonzero(half == target))
        first.append(len(dys))
        built = int(target)
    return (np.asarray(schedule, dtype=np.int64), np.asarray(first, dtype=np.int64),
            np.asarray(dys, dtype=np.int64))


# ----------------------------------------------------------------------------- CPU kernels (numba)
# numba: the per-row prefix/suffix scans and the per-row-band chord folding are loops that NumPy
# cannot express without O(r) temporary images. Inner loops run over zero-based 1-D views so that
# LLVM vectorises them. No numba parallel regions: on 2 shared cores their start-up cost more than
# the vHGW passes (a few ms per 1080^2 image); the O(r) chord kernel runs row bands in threads.


@numba.njit(cache=True, nogil=True, )
def _vhgw_rows_cpu(image, radius, sentinel):
    """van Herk / Gil-Werman minimum over [x - r, x + r] along each row, borders padded with sentinel."""
    height, width = image.shape
    size = 2 * radius + 1
    padded = (width + 2 * radius + size - 1) // size * size
    out = np.empty_like(image)
    for y in range(height):
        line = np.full(padded, sentinel, image.dtype)
        line[radius:radius + width] = image[y]
        prefix = np.empty(padded, image.dtype)
        suffix = np.empty(padded, image.dtype)
        for start in range(0, padded, size):
            m = sentinel
            for p in range(start, start + size):
                v = line[p]
                m = v if v < m else m
                prefix[p] = m
            m = sentinel
            for p in range(start + size - 1, start - 1, -1):
                v = line[p]
                m = v if v < m else m
                suffix[p] = m
        row = out[y]
        row[:] = suffix[:width]
        _fold_into(row, prefix[2 * radius:2 * radius + width])
    return out


@numba.njit(cache=True, nogil=True, )
def _vhgw_columns_cpu(image, radius, sentinel):
    """van Herk / Gil-Werman minimum over [y - r, y + r] along each column, one vector op per row."""
    height, width = image.shape
    size = 2 * radius + 1
    padded = (height + 2 * radius + size - 1) // size * size
    prefix = np.empty((padded, width), image.dtype)
    suffix = np.empty((padded, width), image.dtype)
    for b in range(padded // size):
        start = b * size
        _scan_rows(prefix, image, radius, sentinel, start, start + size, 1)
        _scan_rows(suffix, image, radius, sentinel, start + size - 1, start - 1, -1)
    out = np.empty_like(image)
    for y in range(height):
        row = out[y]
        row[:] = suffix[y]
        _fold_into(row, prefix[y + 2 * radius])
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _scan_rows(scan, image, radius, sentinel, first, stop, step):
    """Running minimum of padded rows first, first + step, ... (padded row p is image row p - radius)."""
    for p in range(first, stop, step):
        row = scan[p]
        if p == first:
            row[:] = sentinel
        else:
            row[:] = scan[p - step]
        y = p - radius
        if 0 <= y < image.shape[0]:
            _fold_into(row, image[y])


@numba.njit(cache=True, nogil=True, inline="always")
def _fold_into(target, values):
    """target = min(target, values), elementwise (1-D views: numba vectorises zero-based loops)."""
    for x in range(target.size):
        v = values[x]
        t = target[x]
        target[x] = v if v < t else t


@numba.njit(cache=True, nogil=True, inline="always")
def _fold_shifted(out, left, right, centre, with_centre):
    """out = min(left, right[, centre]), elementwise over 1-D views."""
    for x in range(out.size):
        a = left[x]
        c = right[x]
        out[x] = a if a < c else c
    if with_centre:
        _fold_into(out, centre)


@numba.njit(cache=True, nogil=True)
def _chord_erosion_cpu(image, out, y0, y1, schedule, step_first, step_dys, sentinel):
    """Output rows [y0, y1): fold each input row's chord minima into the output rows that use them."""
    height, width = image.shape
    widest = schedule[-1]
    reach = 0
    for dy in step_dys:
        reach = max(reach, abs(dy))
    padded = width + 2 * widest
    cur = np.empty(padded, image.dtype)
    nxt = np.empty(padded, image.dtype)
    for yi in range(max(0, y0 - reach), min(height, y1 + reach)):
        cur[:widest] = sentinel
        cur[widest:widest + width] = image[yi]
        cur[widest + width:] = sentinel
        built = 0
        for s in range(schedule.size):
            target = schedule[s]
            d = target - built
            if d > 0:
                # H_target from H_built on [target, padded - target), whose windows stay inside
                # the padded row; windows x-d, x+d touch when d <= built, else x is needed too
                lo, hi = target, padded - target
                _fold_shifted(nxt[lo:hi], cur[lo - d:hi - d], cur[lo + d:hi + d], cur[lo:hi], d > built)
                cur, nxt = nxt, cur
                built = target
            chords = cur[widest:widest + width]
            for j in range(step_first[s], step_first[s + 1]):
                y = yi - step_dys[j]
                if y0 <= y < y1:
                    _fold_into(out[y], chords)
    return out


# ----------------------------------------------------------------------------- GPU kernels (CUDA)


def _kernel(name, dtype):
    return cuda_kernel(CUDA_SOURCE, f"{name}<{_CUDA_TYPES[np.dtype(dtype)]}>", CUDA_INSTANTIATIONS)


def _launch(kernel, count, args):
    kernel(((count + _THREADS - 1) // _THREADS,), (_THREADS,), args)


def _line_erosion_gpu(image, radius, axis):
    """vHGW on the GPU: one thread per (line, block) for the scans, one per pixel for the combine."""
    xp = get_array_module(image)
    height, width = image.shape
    lines, length = (width, height) if axis == 0 else (height, width)
    line_stride, elem_stride = (1, width) if axis == 0 else (width, 1)
    size = 2 * radius + 1
    blocks = (length + 2 * radius + size - 1) // size
    prefix = xp.empty((blocks * size, lines), image.dtype)
    suffix = xp.empty_like(prefix)
    out = xp.empty_like(image)
    i32, i64 = np.int32, np.int64
    _launch(_kernel("vhgw_blocks", image.dtype), lines * blocks,
            (image, prefix, suffix, i32(lines), i32(length), i64(line_stride), i64(elem_stride), i32(radius),
             i32(blocks), never_wins(image.dtype, "min")))
    _launch(_kernel("vhgw_combine", image.dtype), lines * length,
            (prefix, suffix, out, i32(lines), i32(length), i64(line_stride), i64(elem_stride), i32(radius)))
    return out


def _chord_erosion_gpu(image, half):
    """Sparse table per row band, then 2 look-ups per chord (Urbach & Wilkinson), one thread per pixel."""
    xp = get_array_module(image)
    height, width = image.shape
    reach = (half.size - 1) // 2
    top_level = int(min(2 * int(half.max()) + 1, width)).bit_length() - 1  # windows up to 2^top_level
    row_bytes = max(1, top_level) * width * image.dtype.itemsize
    band = max(1, min(height, GPU_TABLE_BUDGET_BYTES // row_bytes - 2 * reach))
    half_gpu = xp.asarray(half, dtype=xp.int32)  # O(r) host-to-device copy of the footprint
    out = xp.empty_like(image)
    levels = xp.empty((max(1, top_level), min(height, band + 2 * reach), width), image.dtype)
    level_kernel = _kernel("sparse_table_level", image.dtype)
    i32 = np.int32
    for out0 in range(0, height, band):
        out1 = min(height, out0 + band)
        in0, in1 = max(0, out0 - reach), min(height, out1 + reach)
        rows_in = in1 - in0
        previous = image[in0:in1]
        for k in range(1, top_level + 1):
            _launch(level_kernel, rows_in * width,
                    (previous, levels[k - 1], i32(rows_in), i32(width), i32(1 << (k - 1))))
            previous = levels[k - 1]
        _launch(_kernel("chord_erosion", image.dtype), (out1 - out0) * width,
                (image, levels, out, i32(height), i32(width), i32(in0), i32(levels.shape[1]), i32(out0),
                 i32(out1 - out0), half_gpu, i32(reach)))
    return out
