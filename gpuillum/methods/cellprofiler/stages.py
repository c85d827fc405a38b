"""The stages of CorrectIlluminationCalculate after the average: float conversion, dilation,
smoothing (every method), rescaling; float32 planes on NumPy or CuPy (cellprofiler.md section 4)."""
from __future__ import annotations

import functools

import numpy as np

from ..._checks import check_choice, check_image
from ...backend import get_array_module, get_ndimage, same_backend, to_numpy
from ...filters.bands import lookup, with_halo
from .settings import INPUT_DTYPES, RESCALE_CHOICES, ROBUST_FACTOR, CalculateSettings, median_radius, smoothing_sigma
from ...errors import InvalidValue



def to_cellprofiler_float(image):
    """An image as CellProfiler holds it: float32, uint8 / 255, uint16 / 65535 (float32 arithmetic)."""
    image = check_image(image, "image", dtypes=INPUT_DTYPES, allow_nan=True)
    xp = get_array_module(image)
    if image.dtype.kind == "u":
        pixels = image.astype(xp.float32)
        pixels /= xp.float32(np.iinfo(image.dtype).max)
        return pixels
    return image.astype(xp.float32, copy=False)


def dilation_kernel(radius: int, reach: int | None = None) -> np.ndarray:
    """CellProfiler's ``circular_gaussian_kernel(sd=radius, radius=3 * radius)``, float64, sum 1.

    The kernel divides the coordinates by sd and the exponent by 2 sd^2 again, so its effective
    sigma is radius^2 (cellprofiler.md 4.3); kept for parity, evaluated in the same float64 order.
    ``reach``: cut the kernel to offsets within it (the same taps, renormalised), for an image
    whose pixels are never farther apart: a normalised convolution divides the renormalisation out.
    """
    extent = 3 * radius
    cut = extent if reach is None else max(1, min(extent, reach))
    unit = np.mgrid[-cut : cut + 1, -cut : cut + 1].astype(float) / extent
    inside = unit[0] ** 2 + unit[1] ** 2 <= 1
    rows = unit[0] * extent / radius
    cols = unit[1] * extent / radius
    kernel = np.zeros((2 * cut + 1, 2 * cut + 1))
    kernel[inside] = np.e ** (-(rows[inside] ** 2 + cols[inside] ** 2) / (2 * radius**2))
    return kernel / np.sum(kernel)


def _normalised_convolution(pixels, mask, kernel, xp):
    """convolve(pixels * mask) / (convolve(mask) + eps), zero padding, evaluated everywhere."""
    ndi = get_ndimage(xp)
    weights = xp.asarray(kernel)
    weight_image = xp.ones(pixels.shape, xp.float64) if mask is None else mask.astype(xp.float64)
    masked = pixels if mask is None else xp.where(mask, pixels, xp.float32(0))
    # in float64 then rounded once, as scipy does for a float32 image: cupyx would sum in float32
    def convolve(image):
        return ndi.convolve(image, weights, mode="constant", cval=0)

    halo = kernel.shape[0] // 2
    numerator = with_halo(convolve, masked.astype(xp.float64), halo).astype(xp.float32)
    denominator = with_halo(convolve, weight_image, halo)
    return (numerator / (denominator + np.finfo(np.float64).eps)).astype(xp.float32)


def dilate(pixels, mask, radius: int):
    """The "Dilate objects" stage: normalised convolution with ``dilation_kernel(radius)``, float32."""
    reach = max(pixels.shape) - 1  # a radius of 10^6 would otherwise make a 6e6^2 kernel
    return _normalised_convolution(pixels, mask, dilation_kernel(radius, reach), get_array_module(pixels))


def _median_quantise(pixels, xp, mask=None):
    """CellProfiler's median input ``uint16(x * 65535)``: float32 product, truncation, wrapping like x86.

    A value that would wrap (a float outside about [0, 1]) among the ``mask`` pixels (None: all) is
    a ValueError: CellProfiler silently turns 1.5 into 32766 there, a function no one wants (float
    images must be scaled to [0, 1], as CellProfiler assumes)."""
    scaled = pixels * xp.float32(65535)
    wraps = (scaled >= 65536) | (scaled <= -1)
    if mask is not None:
        wraps &= mask
    if bool(wraps.any()):
        checked = pixels if mask is None else pixels[mask]
        raise InvalidValue(f"images: float values span [{float(checked.min()):.6g}, {float(checked.max()):.6g}], "
                         "but the Median Filter quantises them as uint16(x * 65535) (CellProfiler), which wraps "
                         "values outside [0, 1]; scale float images to [0, 1]")
    return (scaled.astype(xp.int64) & 0xFFFF).astype(xp.uint16)


def _median_dequantise(filtered, xp):
    """The median output back to CellProfiler floats: / 65535 in float32."""
    return filtered.astype(xp.float32) / xp.float32(65535)


def _median_smooth(pixels, mask, radius: int, xp):
    """CellProfiler >= 4.2 Median Filter: quantise, masked pixels -> 0 but still counted, exact
    in-bounds disk median, dequantise."""
    from ...filters.median import median_filter

    quantised = _median_quantise(pixels, xp, mask)
    if mask is not None:
        quantised = xp.where(mask, quantised, xp.uint16(0))
    filtered = median_filter(quantised, radius, footprint="disk", mode="ignore")
    return _median_dequantise(filtered, xp)


@functools.lru_cache(maxsize=None)
def median_table(scale: int) -> np.ndarray:
    """Median Filter output for each raw value 0..scale of a single integer image: the image's
    CellProfiler float (float64 division by ``scale``, one float32 rounding, as ``average``),
    quantised and dequantised. Non-decreasing in the raw value (every step is monotone)."""
    average = (np.arange(scale + 1) / float(scale)).astype(np.float32)
    table = _median_dequantise(_median_quantise(average, np), np)
    table.flags.writeable = False  # shared by every later call
    return table


def _spline_smooth(pixels, mask, settings: CalculateSettings):
    """Splines run on the host (gpuillum.methods.cellprofiler.splines): the fit and its zero-mean step stay
    there, and the result goes to the device of ``pixels`` once."""
    from .splines import ScaleTooLarge, automatic_spline_scale, spline_background

    like = pixels
    pixels = to_numpy(pixels)
    mask = None if mask is None else to_numpy(mask)
    try:
        if settings.spline_automatic:
            background = spline_background(pixels, mask, scale=automatic_spline_scale(pixels.shape))
        else:
            background = spline_background(
                pixels,
                mask,
                mode=settings.spline_mode,
                threshold=settings.spline_threshold,
                points=settings.spline_points,
                scale=settings.spline_rescale,
                max_iterations=settings.spline_max_iterations,
                convergence=settings.spline_convergence,
            )
    except ScaleTooLarge as error:  # say which setting (or mask) to change
        if not settings.spline_automatic:
            raise ScaleTooLarge(error.scale, error.region, "spline_rescale") from None
        raise InvalidValue(f"masks: the valid pixels span only {error.region}, which the automatic spline scale "
                         f"{error.scale:g} (shortest image side / 200) shrinks below 2 pixels per side; "
                         "set spline_automatic=False with a smaller spline_rescale") from None
    # zero-mean over the mask (the background is meant for Subtract), in the background's float32
    # as CellProfiler does: with rescale the 2 % divisor sits near 0, where a float64 mean moves
    # the function by up to ~1e-4 of its maximum. NumPy's mean on the host for both paths: a device
    # reduction sums in another order and moved the GPU function by ~3e-5 (seen on an H100).
    if mask is None:
        return same_backend(background - np.mean(background), like)
    return same_backend(np.where(mask, background - np.mean(background[mask]), background), like)


def _fit_polynomial(pixels, mask, xp):
    """centrosome's ``fit_polynomial`` (clip=True) in float32.

    The same least squares as gpuillum's degree-2 fit. Where the valid pixels (mask, and > 0) do
    not fix every coefficient, e.g. a mask of one row or two lines, many surfaces fit equally well
    and CellProfiler's is scipy's minimum-norm ``lstsq`` solution in its own basis (x, y, x^2, y^2,
    xy, 1 of the raw row and column indices): that case is solved as it does, on the host, from
    the valid pixels, which lie on at most two lines.
    """
    import scipy.linalg

    from ...filters.polynomial import UndeterminedFit, fit_polynomial

    try:
        return fit_polynomial(pixels, 2, mask=mask, exclude_zeros=True, clip=(0, 1), undetermined="raise")
    except UndeterminedFit:
        pass
    valid = pixels > 0 if mask is None else mask & (pixels > 0)
    rows, cols = (to_numpy(index).astype(np.float64) for index in xp.nonzero(valid))
    values = to_numpy(pixels[valid]).astype(np.float64)
    design = np.stack([rows, cols, rows * rows, cols * cols, rows * cols, np.ones_like(rows)], axis=1)
    coefficients = scipy.linalg.lstsq(design, values)[0]
    x, y = (index.astype(xp.float64) for index in xp.meshgrid(xp.arange(pixels.shape[0]), xp.arange(pixels.shape[1]),
                                                               indexing="ij"))
    surface = sum(float(c) * term for c, term in zip(coefficients, (x, y, x * x, y * y, x * y, xp.ones_like(x))))
    return xp.clip(surface, 0, 1).astype(xp.float32)


def smooth(pixels, mask, settings: CalculateSettings):
    """The smoothing stage on a float32 plane; ``mask`` None means every pixel. Returns float32."""
    xp = get_array_module(pixels)
    method = settings.smoothing
    if method == "No smoothing":
        return pixels
    if method == "Fit Polynomial":
        out = _fit_polynomial(pixels, mask, xp)
    elif method == "Gaussian Filter":
        from ...filters.smoothing import gaussian_filter

        out = gaussian_filter(pixels, smoothing_sigma(settings, pixels.shape), mask=mask)
    elif method == "Median Filter":
        out = _median_smooth(pixels, mask, median_radius(settings, pixels.shape), xp)
    elif method == "Smooth to Average":
        values = pixels.ravel() if mask is None else pixels[mask]
        out = xp.zeros(pixels.shape, xp.float32) + xp.mean(values)
    elif method == "Splines":
        out = _spline_smooth(pixels, mask, settings)
    else:  # Convex Hull
        from .convex_hull import convex_hull_smooth

        out = convex_hull_smooth(pixels, mask)
    return xp.asarray(out).astype(xp.float32, copy=False)


def _order_statistic(values, index: int, xp):
    """Element ``index`` of the sorted positive float ``values`` (CellProfiler's ``s[index]``),
    without sorting: the IEEE bit patterns of positive numbers order like the numbers, so a
    65,536-bin histogram of their high halves finds the bin holding it, and a partition of that
    bin alone finishes (2.5x faster than partitioning everything at 1080^2)."""
    width = values.dtype.itemsize * 8  # float32 or float64
    high = (values.view(xp.uint32 if width == 32 else xp.uint64) >> (width - 16)).astype(xp.intp)
    before = xp.cumsum(xp.bincount(high, minlength=1 << 16))
    bin_index = int(xp.searchsorted(before, index, side="right"))
    rank = index - (int(before[bin_index - 1]) if bin_index else 0)
    return xp.partition(values[high == bin_index], rank)[rank]


def _robust_index(count: int, option: str) -> int:
    """Sorted position, among ``count`` positive values, of the value rescale "Yes" (2 %) or
    "Median" (upper median) divides by."""
    return int(count * ROBUST_FACTOR) if option == "Yes" else int(count / 2)


def _divide_by_robust(values, robust, option: str, xp):
    """"Yes" raises values below ``robust`` to it; then both options divide by it, in float32."""
    if option == "Yes":
        values = xp.maximum(values, robust)
    return (values / robust).astype(xp.float32, copy=False)


def rescale_table(levels, table, mask, option: str, counts=None):
    """``rescale(table[levels], mask, option)`` for an image given as integer ``levels`` into a
    non-decreasing float32 ``table``: the order statistic comes from a level histogram (sorted
    levels give sorted values), and the division runs once per table entry, not per pixel.
    ``counts``: the histogram of all the levels when the caller has it and there is no mask (no
    more than ``table.size`` bins), else it is counted here."""
    check_choice(option, "rescale", RESCALE_CHOICES)
    if counts is not None and mask is not None:
        raise InvalidValue("counts: a histogram of every pixel cannot serve a masked rescale")
    xp = get_array_module(levels)
    if option != "No":
        if counts is None:
            counts = xp.bincount((levels if mask is None else levels[mask]).ravel(), minlength=table.size)
        counts = xp.where(table[: counts.size] > 0, counts, 0)  # only positive values count
        count = int(counts.sum())
        if count:
            robust = table[int(xp.searchsorted(xp.cumsum(counts), _robust_index(count, option), side="right"))]
            table = _divide_by_robust(table, robust, option, xp)
    return lookup(table, levels)


def rescale(pixels, mask, option: str):
    """The rescale stage: "Yes" divides by the 2 % order statistic of the positive (masked) pixels
    after raising smaller values to it, "Median" divides by the upper median, "No" passes through."""
    check_choice(option, "rescale", RESCALE_CHOICES)
    if option == "No":
        return pixels
    xp = get_array_module(pixels)
    positive = pixels > 0
    if mask is not None:
        positive &= mask
    values = pixels[positive]
    count = int(values.size)
    if count == 0:
        return pixels
    robust = _order_statistic(values, _robust_index(count, option), xp)
    return _divide_by_robust(pixels, robust, option, xp)
