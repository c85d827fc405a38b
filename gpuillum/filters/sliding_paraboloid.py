"""ImageJ's Subtract Background with the sliding paraboloid, bit for bit.

ImageJ approximates a paraboloid of curvature 1/(2r) sliding under the image by parabolas slid
along lines in four directions (docs/imagej.md section 9): rows, columns, rows again, then the two
diagonal directions (curvature doubled: the step there is sqrt 2), each diagonal family in two
halves, the first two halves again: nine passes. One line (``lineSlideParabola``): points that can
touch a parabola from below (local curvature test ``(2 v[j] - v[j-1]) - v[j+1] < 1.999 c``) are
linked in a list; from the left end, the next touching point is the candidate with the smallest
``(v[j] - v[i]) / (j - i) + c (j - i)``, and the points in between are set to that parabola. The
result is the upper envelope of downward parabolas below the data. Before the passes, unless
smoothing is disabled, a 3x3 maximum (its mean upward shift is subtracted at the end) and ImageJ's
3x3 mean; and corner correction: the four corner pixels, which any parabola touches, are replaced
by estimates from the row, column and diagonal through each corner when they are brighter.

Versions (section 9.4): ImageJ 1.54t4 (April 2026) changed the corner correction (a line touched
only at its ends, or whose touching points span at most a quarter of it, gives no estimate; the
corner takes the mean of the estimates it has) and NaN handling. This module follows the current
ImageJ by default; ``legacy=True`` reproduces ImageJ before that change (1.53t, Fiji's 1.54f, ...):
every corner averages three estimates, the shift is ``sum / (W H)``, and NaN is refused (those
versions hang or return NaN everywhere). Where 1.53t would loop forever (no touching point found,
e.g. with sums overflowing to infinity) both modes end the line as the current ImageJ does.

All arithmetic is float32 in ImageJ's order (Java evaluates left to right, int operands converted
to float, no fused multiply-add); the smoothing shift is a double sum, taken in ImageJ's order on
the CPU. Lines of one pass never share a pixel, so they run in parallel: row bands of lines on CPU
threads (numba), one CUDA thread per line on the GPU (``cuda/sliding_paraboloid.cu``); the 3x3
filters and the frame are one xp code path.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from ..errors import InvalidValue
from ..backend import cuda_kernel, get_array_module, on_input_device
from .bands import cpu_threads, run_jobs
from .presmooth import COLUMN_GROUP, copy_columns, imagej_mean3x3, neighbours, resolve_presmooth, smooth_float
from .subtract_background import check_imagej_radius, check_stack, subtract_background

__all__ = ["sliding_paraboloid"]

f32 = np.float32
_INT_MAX = 2**31 - 1
CUDA_SOURCE = "sliding_paraboloid.cu"
_LINES_PER_BAND = 64
_GROUP = COLUMN_GROUP  # lines copied together: 16 float32 = one 64-byte cache line


@on_input_device
def sliding_paraboloid(image, radius, *, light_background=False, presmooth=True, create_background=False,
                       correct_corners=True, output_dtype=None, sigma=None, legacy=False):
    """ImageJ's Subtract Background with "Sliding paraboloid", identical to ImageJ.

    Parameters
    ----------
    image : NumPy or CuPy array, uint8, uint16 or float32
        A 2-D image, or a stack whose leading axes are slices (each processed on its own).
    radius : float
        ImageJ's "Rolling ball radius": the paraboloid's curvature at the apex is 1 / (2 radius).
    light_background : bool
        ImageJ's "Light background" (see ``rolling_ball_imagej``).
    presmooth : True / "mean" (ImageJ's 3x3 maximum, its shift, then 3x3 mean), False / "none"
        ("Disable smoothing"), or "gaussian" (not in ImageJ: a Gaussian of ``sigma`` pixels, no
        maximum and no shift).
    create_background : bool
        Return the background instead of subtracting it.
    correct_corners : bool
        ImageJ's corner correction (always on in ImageJ's command).
    output_dtype : None / "same" (ImageJ's types and rounding) or "float32" (unrounded).
    sigma : float, only with presmooth="gaussian".
    legacy : bool
        Corner rules and shift of ImageJ before 1.54t4 (1.53t, Fiji 1.54f); no NaN allowed.

    Returns
    -------
    Array of the image's shape and backend.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    >>> flat = gi.sliding_paraboloid(image, 20)      # run("Subtract Background...", "rolling=20 sliding")
    """
    image = check_stack(image)
    radius = check_imagej_radius(radius)
    smoothing, sigma = resolve_presmooth(presmooth, sigma)
    check_legacy_input(image, legacy)
    radius = f32(radius)  # ImageJ passes (float)radius

    def background_of(pixels):
        return paraboloid_background(pixels, radius, light_background, smoothing, sigma, correct_corners, legacy)

    return subtract_background(image, background_of, light_background=light_background,
                               create_background=create_background, output_dtype=output_dtype)


def check_legacy_input(image, legacy: bool) -> None:
    """Refuse NaN in a float32 image for ``legacy=True`` (ImageJ before 1.54t4 hangs on it or
    returns NaN everywhere)."""
    if legacy and image.dtype == np.float32 and bool(get_array_module(image).isnan(image).any()):
        raise InvalidValue("image: contains NaN, which ImageJ before 1.54t4 (legacy=True) does not handle "
                           "(it hangs or returns NaN everywhere); use legacy=False")


# (direction, diagonal?) of ImageJ's nine passes, in order
_PASSES = (("x", False), ("y", False), ("x", False), ("d1a", True), ("d1b", True), ("d2a", True), ("d2b", True),
           ("d1a", True), ("d1b", True))


def paraboloid_background(pixels, radius, light: bool, smoothing: str, sigma, correct_corners: bool, legacy: bool):
    """ImageJ's slidingParaboloidFloatBackground of one float32 slice (a new float32 array)."""
    xp = get_array_module(pixels)
    coeff2 = f32(0.5) / radius
    coeff2_diagonal = f32(1) / radius
    work = xp.negative(pixels) if light else pixels
    shift = f32(0)
    if smoothing == "mean":
        work, shift = maximum3x3(work, legacy)
        work = imagej_mean3x3(work)
    else:
        work = smooth_float(work, smoothing, sigma)
    work = xp.array(work, dtype=np.float32, order="C", copy=True)  # the passes work in place
    height, width = work.shape
    if correct_corners:
        correct_corner_pixels(work, coeff2, legacy)
    for direction, diagonal in _PASSES:
        slide_lines(work, line_layout(direction, height, width), coeff2_diagonal if diagonal else coeff2, legacy)
    offset = shift if legacy else f32(2) * shift
    if light:
        return xp.negative(xp.subtract(work, offset))
    if smoothing == "mean":
        return xp.subtract(work, offset)
    return work


def line_layout(direction: str, height: int, width: int):
    """(start, step, length) of every line of one pass over a row-major image (ImageJ's filter1D),
    as int64 arrays; pixels of line k are start[k] + i step[k], i < length[k]."""
    if direction == "x":
        index = np.arange(height)
        return index * width, np.full(height, 1), np.full(height, width)
    if direction == "y":
        index = np.arange(width)
        return index, np.full(width, width), np.full(width, height)
    if direction == "d1a":  # down-right diagonals from (x=i, y=0), i = 0 .. W-3
        index = np.arange(0, max(width - 2, 0))
        return index, np.full(index.size, width + 1), np.minimum(height, width - index)
    if direction == "d1b":  # down-right diagonals from (0, y=i), i = 1 .. H-3
        index = np.arange(1, max(height - 2, 1))
        return index * width, np.full(index.size, width + 1), np.minimum(width, height - index)
    if direction == "d2a":  # down-left diagonals from (x=i, 0), i = 2 .. W-1
        index = np.arange(2, max(width, 2))
        return index, np.full(index.size, width - 1), np.minimum(height, index + 1)
    index = np.arange(0, max(height - 2, 0))  # "d2b": down-left diagonals from (W-1, y=i), i = 0 .. H-3
    return index * width + width - 1, np.full(index.size, width - 1), np.minimum(width, height - index)


def maximum3x3(pixels, legacy: bool):
    """ImageJ's filter3x3(MAXIMUM): separable 3x3 maximum (rows, then columns, line ends
    replicated, NaN-aware as 1.54t4+) and the float32 shift ImageJ subtracts afterwards (the mean
    increase per pass; legacy: the summed increase of both passes over W H). The increases are
    summed in double in ImageJ's order (row pass row by row, then column pass column by column):
    on the CPU in the same loop as the maximum (numba); on the GPU with cupy's sum, which gives the
    same value whenever the increases are integers (8/16-bit images) and may differ in the last
    bit otherwise."""
    xp = get_array_module(pixels)
    height, width = pixels.shape
    if xp is np:
        larger = np.array(pixels, dtype=np.float32, order="C", copy=True)
        total, count = _maximum3x3_cpu(larger, legacy)
    else:
        larger, total, count = maximum3x3_xp(pixels)
    shift = f32(total / width / height) if legacy else f32(total / count)
    return larger, shift


def maximum3x3_xp(pixels):
    """The GPU's 3x3 maximum: (maximum, sum of the non-NaN increases, their count), whole-array
    operations (the sum in the backend's own order)."""
    xp = get_array_module(pixels)
    increases = []
    larger = pixels
    for axis in (1, 0):
        before, after = neighbours(larger, axis)
        bigger = xp.where((before > after) | xp.isnan(after), before, after)
        bigger = xp.where((larger > bigger) | xp.isnan(bigger), larger, bigger)
        increases.append(xp.subtract(bigger, larger).ravel())
        larger = bigger
    terms = xp.concatenate(increases).astype(np.float64)
    finite = ~xp.isnan(terms)
    return larger, float(xp.sum(terms[finite])), int(xp.count_nonzero(finite))


@numba.njit(cache=True, nogil=True, inline="always")
def _maximum3_line(line, total, count, per_line):
    """ImageJ's filter3(MAXIMUM) on one contiguous line, in place; returns the running double
    total and count of the increases (``per_line``: the line's own total added at its end)."""
    length = line.size
    v3 = line[0]
    v2 = v3
    line_total = 0.0
    for i in range(length):
        v1 = v2
        v2 = v3
        if i < length - 1:
            v3 = line[i + 1]
        larger = v1 if (v1 > v3 or np.isnan(v3)) else v3
        if v2 > larger or np.isnan(larger):
            larger = v2
        increase = larger - v2
        if not np.isnan(increase):
            if per_line:
                line_total += increase
            else:
                total += increase
            count += 1
        line[i] = larger
    if per_line:
        total += line_total
    return total, count


@numba.njit(cache=True, nogil=True)
def _maximum3x3_cpu(pixels, per_line):
    """The 3x3 maximum in place: rows, then columns copied 16 at a time into contiguous lines."""
    height, width = pixels.shape
    total = 0.0
    count = 0
    for y in range(height):
        total, count = _maximum3_line(pixels[y], total, count, per_line)
    columns = np.empty((_GROUP, height), np.float32)
    for x0 in range(0, width, _GROUP):
        n = copy_columns(pixels, x0, columns, True)
        for k in range(n):
            total, count = _maximum3_line(columns[k], total, count, per_line)
        copy_columns(pixels, x0, columns, False)
    return total, count


# ----------------------------------------------------------------------------- one line (numba)
# numba: sliding a parabola along a line is a sequential search; every float operation below is
# float32 in ImageJ's order (ints converted with f32 first: numba would otherwise promote to float64).


@numba.njit(cache=True, nogil=True, inline="always")
def _java_int(value):
    """Java's (int) cast of a double: truncation, NaN -> 0, saturation at the int range."""
    if value != value:
        return 0
    if value >= 2147483647.0:
        return 2147483647
    if value <= -2147483648.0:
        return -2147483648
    return int(value)


@numba.njit(cache=True, nogil=True, inline="always")
def _wrap_int(value):
    """A sum of two Java ints, wrapped to 32 bits as Java does."""
    return ((value + 2147483648) % 4294967296) - 2147483648


@numba.njit(cache=True, nogil=True, error_model="numpy")  # float / 0 is inf or NaN, as in Java
def _slide_line(line, length, coeff2, cache, next_point, edges, want_edges, legacy):
    """ImageJ's lineSlideParabola on line[:length] (in place). With
    ``want_edges``, ``edges[0:2]`` receives the two corner estimates (NaN: no estimate)."""
    min_value = f32(3.4028234663852886e38)
    last_point = 0
    previous1 = f32(0)
    previous2 = f32(0)
    curvature_test = f32(1.999) * coeff2
    for i in range(length):
        v = line[i]
        cache[i] = v
        if v < min_value:
            min_value = v
        if i >= 2:
            candidate = ((previous1 + previous1) - previous2) - v < curvature_test
            if not legacy and (np.isnan(previous2) or np.isnan(v)) and not np.isnan(previous1):
                candidate = True
            if candidate:
                next_point[last_point] = i - 1
                last_point = i - 1
        previous2 = previous1
        previous1 = v
    if not legacy and np.isnan(cache[length - 1]):
        next_point[last_point] = _INT_MAX
    else:
        next_point[last_point] = length - 1
        next_point[length - 1] = _INT_MAX
    first_corner = length - 1 if legacy else length
    last_corner = 0
    i1 = 0
    if not legacy and np.isnan(cache[i1]):
        i1 = next_point[i1]
    while i1 < length - 1:
        v1 = cache[i1]
        min_slope = f32(3.4028234663852886e38)
        i2 = 0
        search_to = length
        recalculate = 0
        j = next_point[i1]
        while j < search_to:
            v2 = cache[j]
            if not legacy and np.isnan(v2):
                i1 = length - 1
                break
            d = f32(j - i1)
            slope = (v2 - v1) / d + coeff2 * d
            if slope < min_slope:
                min_slope = slope
                i2 = j
                recalculate = -3
            if recalculate == 0:
                b = np.float64((f32(0.5) * min_slope) / coeff2)
                reach = b + math.sqrt(b * b + np.float64((v1 - min_value) / coeff2)) + 1.0
                max_search = _wrap_int(i1 + _java_int(reach))
                if max_search < search_to and max_search > 0:
                    search_to = max_search
            j = next_point[j]
            recalculate += 1
        if i2 <= i1:
            i2 = length - 1  # ImageJ 1.54t4+; before, the line would loop forever
        if legacy:
            if i1 == 0:
                first_corner = i2
            if i2 == length - 1:
                last_corner = i1
        else:
            if first_corner >= length and i1 > 0:
                first_corner = i1
            if i2 < length - 1:
                last_corner = i2
        for k in range(i1 + 1, i2):
            d = f32(k - i1)
            line[k] = v1 + d * (min_slope - d * coeff2)
        i1 = i2
    if want_edges:
        _corner_estimates(cache, length, coeff2, first_corner, last_corner, edges, legacy)


@numba.njit(cache=True, nogil=True, error_model="numpy")  # float / 0 is inf or NaN, as in Java
def _corner_estimates(cache, length, coeff2, first_corner, last_corner, edges, legacy):
    """The two edge values of a line without edge particles, allowing for vignetting with a
    6th-order polynomial (the end of ImageJ's lineSlideParabola)."""
    nan = f32(np.nan)
    if not legacy and first_corner > last_corner:
        edges[0] = nan
        edges[1] = nan
        return
    if 4 * first_corner >= length and (legacy or not np.isnan(cache[0])):
        first_corner = 0
    if 4 * (length - 1 - last_corner) >= length and (legacy or not np.isnan(cache[length - 1])):
        last_corner = length - 1
    v1 = cache[first_corner]
    v2 = cache[last_corner]
    span = f32(last_corner - first_corner)
    if legacy or last_corner - first_corner > length // 4 + 1:
        slope = (v2 - v1) / span
    else:
        slope = nan
    value0 = v1 - slope * f32(first_corner)
    coeff6 = f32(0)
    mid = f32(0.5) * f32(last_corner + first_corner)
    for i in range((length + 2) // 3, (2 * length) // 3 + 1):
        dx = (f32(i) - mid) * f32(2) / span
        poly6 = dx * dx * dx * dx * dx * dx - f32(1)
        if cache[i] < (value0 + slope * f32(i)) + coeff6 * poly6:
            coeff6 = -((value0 + slope * f32(i)) - cache[i]) / poly6
    dx = (f32(first_corner) - mid) * f32(2) / span
    edges[0] = (value0 + coeff6 * (dx * dx * dx * dx * dx * dx - f32(1))) + coeff2 * f32(first_corner) * f32(first_corner)
    dx = (f32(last_corner) - mid) * f32(2) / span
    far = f32(length - 1 - last_corner)
    edges[1] = ((value0 + f32(length - 1) * slope) + coeff6 * (dx * dx * dx * dx * dx * dx - f32(1))) + coeff2 * far * far


@numba.njit(cache=True, nogil=True, error_model="numpy")  # float / 0 is inf or NaN, as in Java
def _slide_lines_cpu(pixels, starts, steps, lengths, first, last, coeff2, legacy):
    """Lines [first, last) of one pass, in groups of ``_GROUP``: a group is copied into contiguous
    rows (neighbouring lines share cache lines, so the strided columns and diagonals are read and
    written a cache line at a time), slid, and copied back."""
    longest = 1
    for k in range(first, last):
        longest = max(longest, lengths[k])
    group = np.empty((_GROUP, longest), np.float32)
    cache = np.empty(longest, np.float32)
    next_point = np.empty(longest, np.int64)
    edges = np.empty(2, np.float32)
    for g in range(first, last, _GROUP):
        count = min(_GROUP, last - g)
        _copy_group(pixels, starts, steps, lengths, g, count, group, True)
        for k in range(count):
            _slide_line(group[k], lengths[g + k], coeff2, cache, next_point, edges, False, legacy)
        _copy_group(pixels, starts, steps, lengths, g, count, group, False)


@numba.njit(cache=True, nogil=True, inline="always")
def _copy_group(pixels, starts, steps, lengths, g, count, group, gather):
    """group[k, i] <-> pixels[starts[g + k] + i steps[g + k]], position by position across the lines."""
    longest = 0
    for k in range(count):
        longest = max(longest, lengths[g + k])
    for i in range(longest):
        for k in range(count):
            if i < lengths[g + k]:
                index = starts[g + k] + i * steps[g + k]
                if gather:
                    group[k, i] = pixels[index]
                else:
                    pixels[index] = group[k, i]


@numba.njit(cache=True, nogil=True, error_model="numpy")  # float / 0 is inf or NaN, as in Java
def _corner_lines_cpu(pixels, starts, steps, lengths, coeff2s, estimates, legacy):
    """The eight corner lines one after another (each changes pixels the next may read)."""
    longest = 1
    for k in range(lengths.size):
        longest = max(longest, lengths[k])
    line = np.empty((1, longest), np.float32)
    cache = np.empty(longest, np.float32)
    next_point = np.empty(longest, np.int64)
    for k in range(lengths.size):
        _copy_group(pixels, starts, steps, lengths, k, 1, line, True)
        _slide_line(line[0], lengths[k], coeff2s[k], cache, next_point, estimates[k], True, legacy)
        _copy_group(pixels, starts, steps, lengths, k, 1, line, False)


# ----------------------------------------------------------------------------- passes and corners


def slide_lines(work, lines, coeff2, legacy: bool):
    """Slide the parabola along every line of one pass (lines never share a pixel), in place."""
    starts, steps, lengths = (np.ascontiguousarray(a, dtype=np.int64) for a in lines)
    if starts.size == 0:
        return
    flat = work.reshape(-1)
    if get_array_module(work) is not np:
        _slide_lines_gpu(flat, starts, steps, lengths, coeff2, legacy)
        return
    n_bands = max(1, min(cpu_threads() * 4, starts.size // _LINES_PER_BAND))
    edges = [starts.size * b // n_bands for b in range(n_bands + 1)]
    run_jobs([lambda a=a, b=b: _slide_lines_cpu(flat, starts, steps, lengths, a, b, coeff2, legacy)
              for a, b in zip(edges[:-1], edges[1:])])


def correct_corner_pixels(work, coeff2, legacy: bool):
    """ImageJ's correctCorners, in place: the row, column and diagonal through each corner slid
    once (in ImageJ's order), their edge estimates averaged per corner, and a corner pixel brighter
    than its average (or NaN) replaced by it. Eight lines: on the GPU they run on a host copy."""
    xp = get_array_module(work)
    host = work if xp is np else work.get()
    height, width = host.shape
    diagonal = min(width, height)
    coeff2_diagonal = f32(2) * coeff2
    layout = [  # (start, step, length, curvature) in ImageJ's order
        (0, 1, width, coeff2), ((height - 1) * width, 1, width, coeff2),
        (0, width, height, coeff2), (width - 1, width, height, coeff2),
        (0, 1 + width, diagonal, coeff2_diagonal), (width - 1, width - 1, diagonal, coeff2_diagonal),
        ((height - 1) * width, 1 - width, diagonal, coeff2_diagonal),
        (width * height - 1, -1 - width, diagonal, coeff2_diagonal),
    ]
    starts, steps, lengths = (np.asarray([line[i] for line in layout], np.int64) for i in range(3))
    curvatures = np.asarray([line[3] for line in layout], np.float32)
    estimates = np.empty((8, 2), np.float32)
    flat = host.reshape(-1)
    _corner_lines_cpu(flat, starts, steps, lengths, curvatures, estimates, legacy)
    # (line, which estimate) feeding each corner: (0,0), (W-1,0), (0,H-1), (W-1,H-1)
    sources = (((0, 0), (2, 0), (4, 0)), ((0, 1), (3, 0), (5, 0)), ((1, 0), (2, 1), (6, 0)), ((1, 1), (3, 1), (7, 0)))
    for corner, pixel in enumerate((0, width - 1, (height - 1) * width, width * height - 1)):
        values = [estimates[line, end] for line, end in sources[corner]]
        if legacy:
            total = values[0] + values[1] + values[2]
            average = total / f32(3)
            if flat[pixel] > average:
                flat[pixel] = average
            continue
        total, count = f32(0), 0
        for value in values:
            if not np.isnan(value):
                total = total + value
                count += 1
        average = total / f32(count) if count else f32(np.nan)
        if flat[pixel] > average or np.isnan(flat[pixel]):
            flat[pixel] = average
    if xp is not np:
        work[...] = xp.asarray(host)


def _slide_lines_gpu(flat, starts, steps, lengths, coeff2, legacy: bool):
    """One CUDA thread per line, its cache and point list in global scratch memory."""
    import cupy as cp

    longest = int(lengths.max())
    count = starts.size
    cache = cp.empty(count * longest, dtype=cp.float32)
    next_point = cp.empty(count * longest, dtype=cp.int32)
    kernel = cuda_kernel(CUDA_SOURCE, "slide_parabola_lines")
    threads = 128
    kernel(((count + threads - 1) // threads,), (threads,),
           (flat, cp.asarray(starts), cp.asarray(steps), cp.asarray(lengths.astype(np.int32)), np.int32(count),
            f32(coeff2), cache, next_point, np.int32(longest), np.int32(bool(legacy))))
