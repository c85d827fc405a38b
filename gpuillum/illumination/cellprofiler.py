"""CellProfiler's CorrectIlluminationCalculate, setting for setting, on NumPy or CuPy.

The parity target is CellProfiler 4.2 (``compat="4.2"``, the production version; the spec is
docs/cellprofiler.md sections 3-4): every stage re-cast to float32, the All-mode mask drop, the
dilation kernel's sigma^2 bug, the truncating ``uint16(x * 65535)`` median quantisation. With
``compat="5"`` the ``count > 0`` mask is kept through dilation, smoothing and rescaling, as
CellProfiler 5 does (intermediates stay float32 here; CP5 keeps some in float64, a difference at
float32 rounding level).

Pipeline: ``IlluminationAccumulator.add`` converts each image to float32 in [0, 1] like
CellProfiler's image container, optionally resizes it (``resize_factor``, an emulation of the
Resize module production pipelines put around the module), preprocesses it (Regular: masked
pixels -> 0; Background: CellProfiler block minima) and adds it to a sum (exact integers for
uint8/uint16 images, float64 otherwise) and a pixel count on the image's backend. ``finalize``
averages (valid = count > 0), dilates, smooths, rescales and resizes back. CuPy inputs stay on
the GPU for every stage except Splines and Convex Hull, whose kernels may round-trip through the
host (see their modules).

"All: First cycle" and "All: Across cycles" give the same function: both average the same images
of a group and smooth the average. In CellProfiler they differ only in *when* the work happens
(First cycle runs the upstream pipeline for the whole group before the first cycle so the
function is available to every cycle; Across cycles adds one image per cycle and computes at the
end). Here a group is always reduced first and smoothed once.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._checks import check_choice, check_image, check_instance, check_mask, check_shape
from ..backend import device_of, get_array_module, get_ndimage, is_cupy_array, same_backend, to_numpy
from ..correct import apply  # re-exported: CorrectIlluminationApply
from ..filters.bands import lookup, with_halo
from .functions_io import function_filename, load_function, save_function  # re-exported

INTENSITY_CHOICES = ("Regular", "Background")
RESCALE_CHOICES = ("Yes", "No", "Median")
AGGREGATION_CHOICES = ("Each", "All: First cycle", "All: Across cycles")
SMOOTHING_CHOICES = (
    "No smoothing",
    "Convex Hull",
    "Fit Polynomial",
    "Median Filter",
    "Gaussian Filter",
    "Smooth to Average",
    "Splines",
)
FILTER_SIZE_CHOICES = ("Automatic", "Object size", "Manually")
SPLINE_MODES = ("auto", "dark", "bright", "gray")
COMPAT_CHOICES = ("4.2", "5")
YES_NO = ("Yes", "No")
ROBUST_FACTOR = 0.02  # CellProfiler's rescale "Yes" takes the 2 % order statistic
INPUT_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)

__all__ = [
    "CalculateSettings",
    "IlluminationAccumulator",
    "PRESETS",
    "apply",
    "calculate",
    "dilate",
    "dilation_kernel",
    "function_filename",
    "load_function",
    "median_radius",
    "preset",
    "rescale",
    "save_function",
    "smooth",
    "smoothing_filter_size",
    "smoothing_sigma",
    "to_cellprofiler_float",
]


def _check_number(value, name: str, low: float, high: float = np.inf, integer: bool = False):
    """A ValueError naming ``name`` unless ``value`` is a finite number (an integer) in [low, high]."""
    kind = "an integer" if integer else "a finite number"
    bounds = f">= {low}" if high == np.inf else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise ValueError(f"{name}: expected {kind} {bounds}, got {value!r}")
    if not (low <= value <= high and math.isfinite(value)):
        raise ValueError(f"{name}: expected {kind} {bounds}, got {value!r}")


@dataclass(frozen=True)
class CalculateSettings:
    """Every CorrectIlluminationCalculate setting with CellProfiler's defaults and choice strings.

    Field <- CellProfiler setting: intensity <- "Select how the illumination function is
    calculated"; dilate / dilation_radius <- "Dilate objects ..." / "Dilation radius" (applied
    whenever dilate is on, as CellProfiler does, although its UI shows it only for Regular);
    block_size (Background); rescale; aggregation <- "Calculate function for each image
    individually, or based on all images?"; smoothing; filter_size_method, object_width,
    manual_size (Gaussian/Median size); spline_* (Splines; spline_rescale is "Image resampling
    factor"). ``compat`` picks CellProfiler 4.2 or 5 semantics (module docstring).
    ``resize_factor`` (gpuillum extension) shrinks every image with CellProfiler's bilinear
    Resize before the module and enlarges the function back afterwards, like the JUMP pipeline.
    """

    intensity: str = "Regular"
    dilate: bool = False
    dilation_radius: int = 1
    block_size: int = 60
    rescale: str = "Yes"
    aggregation: str = "Each"
    smoothing: str = "No smoothing"
    filter_size_method: str = "Automatic"
    object_width: float = 10
    manual_size: float = 10
    spline_automatic: bool = True
    spline_mode: str = "auto"
    spline_points: int = 5
    spline_threshold: float = 2.0
    spline_rescale: float = 2.0
    spline_max_iterations: int = 40
    spline_convergence: float = 0.001
    compat: str = "4.2"
    resize_factor: float = 1.0

    def __post_init__(self):
        check_choice(self.intensity, "intensity", INTENSITY_CHOICES)
        check_choice(self.rescale, "rescale", RESCALE_CHOICES)
        check_choice(self.aggregation, "aggregation", AGGREGATION_CHOICES)
        check_choice(self.smoothing, "smoothing", SMOOTHING_CHOICES)
        check_choice(self.filter_size_method, "filter_size_method", FILTER_SIZE_CHOICES)
        check_choice(self.spline_mode, "spline_mode", SPLINE_MODES)
        check_choice(self.compat, "compat", COMPAT_CHOICES)
        for name in ("dilate", "spline_automatic"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        _check_number(self.dilation_radius, "dilation_radius", 0, integer=True)
        if self.dilate and self.dilation_radius < 1:
            raise ValueError(f"dilation_radius: expected an integer >= 1 when dilate is on, got {self.dilation_radius!r}")
        _check_number(self.block_size, "block_size", 1, integer=True)
        for name in ("object_width", "manual_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
                raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
        _check_number(self.spline_points, "spline_points", 4, integer=True)
        _check_number(self.spline_threshold, "spline_threshold", 0.1, 5.0)
        _check_number(self.spline_rescale, "spline_rescale", 1.0)
        _check_number(self.spline_max_iterations, "spline_max_iterations", 1, integer=True)
        _check_number(self.spline_convergence, "spline_convergence", 1e-5, 0.1)
        factor = self.resize_factor
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor <= 1:
            raise ValueError(f"resize_factor: expected a number in (0, 1], got {factor!r}")

    @property
    def is_all(self) -> bool:
        """True for the two All modes (one function per group)."""
        return self.aggregation != "Each"

    def replace(self, **changes) -> "CalculateSettings":
        """A copy with some settings changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_cppipe(cls, path, module=None, **overrides) -> "CalculateSettings":
        """Settings of one CorrectIlluminationCalculate module of a ``.cppipe`` file.

        ``module`` is the module number (int) or the name of the module's output image (str);
        None (default) takes the pipeline's first enabled CorrectIlluminationCalculate module.
        A module disabled in the pipeline (``enabled:False``, which CellProfiler skips) is a
        ValueError when named, and disabled modules make no image for the others.
        Revision 1 modules get the spline defaults appended, revision 2 legacy "All" becomes
        "All: First cycle" when the input comes straight from an input module and "All: Across
        cycles" otherwise, revision 3 (CellProfiler 5) "All" becomes "All: Across cycles" with
        ``compat="5"``. When the input image is made by a bilinear "by factor" Resize module,
        its factor becomes ``resize_factor``. ``overrides`` replace settings afterwards.
        """
        from .cppipe import read_pipeline

        modules = read_pipeline(path, exclude_disabled=False)
        calculators = [m for m in modules if m.name == "CorrectIlluminationCalculate"]
        if not calculators:
            raise ValueError(f"{path}: no CorrectIlluminationCalculate module in the pipeline")
        available = ", ".join(
            f"module {m.number}" + (f" ({m.values[1]})" if len(m.values) > 1 else "") + ("" if m.enabled else " [disabled]")
            for m in calculators
        )
        if module is None:
            chosen = [m for m in calculators if m.enabled][:1]
            if not chosen:
                raise ValueError(f"{path}: every CorrectIlluminationCalculate module is disabled in the pipeline ({available})")
        elif isinstance(module, numbers.Integral) and not isinstance(module, bool):
            chosen = [m for m in calculators if m.number == module]
        elif isinstance(module, str):
            named = [m for m in calculators if len(m.values) > 1 and m.values[1] == module]
            chosen = [m for m in named if m.enabled] or named
        else:
            raise TypeError(
                f"module: expected a module number, an output image name or None (the first), got {module!r}; "
                f"the CorrectIlluminationCalculate modules of {path} are {available}"
            )
        if not chosen:
            raise ValueError(
                f"module: {path} has no CorrectIlluminationCalculate module {module!r}; "
                f"its CorrectIlluminationCalculate modules are {available}"
            )
        if not chosen[0].enabled:
            raise ValueError(
                f"module: CorrectIlluminationCalculate module {module!r} of {path} is disabled in the pipeline "
                f"(CellProfiler does not run it); enable it there or pick another of {available}"
            )
        settings = _settings_from_module(chosen[0], modules, str(path))
        return settings.replace(**overrides) if overrides else settings


def _settings_from_module(module, modules, source: str) -> CalculateSettings:
    """Translate a CIC module's positional setting values (cellprofiler.md section 3)."""
    values = module.values
    where = f"{source}: module #{module.number}"
    revision = module.revision
    if revision not in (1, 2, 3):
        raise ValueError(f"{where}: CorrectIlluminationCalculate variable_revision_number {revision} is not supported (1-3)")
    if revision == 1:
        values = values + ["Yes", "auto", "5", "2", "2", "40", "0.001"]
    if len(values) != 23:
        raise ValueError(f"{where}: expected 23 settings for revision {revision}, found {len(values)}")
    image_name = values[0]
    aggregation = values[7]
    compat = "4.2"
    if revision == 3:
        compat = "5"
        if aggregation == "All":
            aggregation = "All: Across cycles"
    elif aggregation == "All":
        aggregation = "All: Across cycles" if _made_by_processing(image_name, module, modules, where) else "All: First cycle"

    def number(index, cast, name):
        try:
            return cast(float(values[index])) if cast is int else cast(values[index])
        except ValueError:
            raise ValueError(f"{where}: setting {index + 1} ({name}) is not a number: {values[index]!r}") from None

    def yes_no(index, name):
        check_choice(values[index], f"{where}: {name}", YES_NO)
        return values[index] == "Yes"

    try:
        return CalculateSettings(
            intensity=values[2],
            dilate=yes_no(3, "dilate"),
            dilation_radius=number(4, int, "dilation_radius"),
            block_size=number(5, int, "block_size"),
            rescale=values[6],
            aggregation=aggregation,
            smoothing=values[8],
            filter_size_method=values[9],
            object_width=number(10, float, "object_width"),
            manual_size=number(11, float, "manual_size"),
            spline_automatic=yes_no(16, "spline_automatic"),
            spline_mode=values[17],
            spline_points=number(18, int, "spline_points"),
            spline_threshold=number(19, float, "spline_threshold"),
            spline_rescale=number(20, float, "spline_rescale"),
            spline_max_iterations=number(21, int, "spline_max_iterations"),
            spline_convergence=number(22, float, "spline_convergence"),
            compat=compat,
            resize_factor=_resize_factor_for(image_name, module, modules, where),
        )
    except ValueError as error:
        if str(error).startswith(source):
            raise
        raise ValueError(f"{where}: {error}") from None


_INPUT_MODULES = ("Images", "Metadata", "NamesAndTypes", "Groups", "LoadData", "LoadImages", "LoadSingleImage")


def _output_index(module, image_name: str) -> int | None:
    """Index of the "Name ..." setting of ``module`` that names ``image_name`` as an output, or None."""
    return next((i for i, (text, value) in enumerate(module.settings)
                 if value == image_name and text.lower().startswith("name")), None)


def _producer(image_name: str, module, modules, where: str):
    """The last enabled module before ``module`` that names ``image_name`` as an output, or None.

    Any "Name ..." setting is an output (a Resize's primary and additional images alike); a
    ValueError when only disabled modules make the image, as CellProfiler would not have it.
    """
    makers = [other for other in modules if other.number < module.number and _output_index(other, image_name) is not None]
    enabled = [other for other in makers if other.enabled]
    if makers and not enabled:
        raise ValueError(
            f"{where}: input {image_name!r} is made only by {makers[-1].name} module #{makers[-1].number}, "
            "which is disabled in the pipeline"
        )
    return enabled[-1] if enabled else None


def _made_by_processing(image_name: str, module, modules, where: str) -> bool:
    """True when the enabled module that makes ``image_name`` before ``module`` is not an input module."""
    producer = _producer(image_name, module, modules, where)
    return producer is not None and producer.name not in _INPUT_MODULES


def _resize_factor_for(image_name: str, module, modules, where: str) -> float:
    """The factor of the Resize module that makes the module's input, or 1.0 when no Resize does."""
    resize = _producer(image_name, module, modules, where)
    if resize is None or resize.name != "Resize":
        return 1.0
    source = f"{where}: input {image_name!r} comes from Resize module #{resize.number}"
    output = _output_index(resize, image_name)
    upstream = _producer(resize.values[output - 1], resize, modules, where) if output else None
    if upstream is not None and upstream.name == "Resize":
        raise ValueError(f"{source}, fed by Resize module #{upstream.number}; only a single Resize is emulated")
    method = resize.value("Resizing method") or resize.value("Select resizing method") or ""
    interpolation = resize.value("Interpolation method") or ""
    if not method.startswith("Resize by a fraction"):
        raise ValueError(f"{where}: input {image_name!r} comes from a Resize to fixed dimensions; only 'by factor' resizing is emulated")
    if interpolation != "Bilinear":
        raise ValueError(f"{where}: input {image_name!r} comes from a {interpolation!r} Resize; only 'Bilinear' is emulated")
    factors = []
    for text in ("Resizing factor", "X Resizing factor", "Y Resizing factor"):
        value = resize.value(text)
        if value is None:
            continue
        try:
            factor = float(value)
        except ValueError:
            factor = np.nan
        if not np.isfinite(factor):
            raise ValueError(f"{source}: {text!r} expected a number, got {value!r}")
        factors.append(factor)
    if not factors:
        raise ValueError(f"{source}: expected an 'X Resizing factor' and a 'Y Resizing factor' (or a 'Resizing factor') setting")
    if len(set(factors)) != 1:
        raise ValueError(f"{source}: different X and Y factors {sorted(set(factors))}; only equal factors are emulated")
    return factors[0]


# ---------------------------------------------------------------------------------------------
# Presets: production configurations (cellprofiler.md section 12)

_PRODUCTION = dict(intensity="Regular", dilate=False, rescale="Yes", aggregation="All: Across cycles",
                   smoothing="Median Filter", filter_size_method="Manually")

PRESETS: dict[str, CalculateSettings] = {
    # JUMP production (JUMP_illum_LoadData_v1.cppipe): Resize x0.2 -> median size 20 (r 9) -> x5
    "jump": CalculateSettings(**_PRODUCTION, manual_size=20, resize_factor=0.2),
    # original Cell Painting pipeline (2014-2016): full resolution, median size 200 (r 85)
    "cellpainting-2014": CalculateSettings(**_PRODUCTION, manual_size=200),
    # Broad Phenix / ImageXpress pipelines (2016-2022, incl. the iPSC bin1 CP4 pipeline): x0.1, size 20
    "broad-0.1x": CalculateSettings(**_PRODUCTION, manual_size=20, resize_factor=0.1),
    # the same pipelines' size-10 variant at x0.1
    "broad-0.1x-size10": CalculateSettings(**_PRODUCTION, manual_size=10, resize_factor=0.1),
    # CDRP illum_8x.cppipe (2017): x0.125, size 10
    "cdrp": CalculateSettings(**_PRODUCTION, manual_size=10, resize_factor=0.125),
}


def check_settings(settings, name: str = "settings") -> CalculateSettings:
    """Check that ``settings`` is a CalculateSettings (one line saying how to make one if not)."""
    hint = ""
    if isinstance(settings, str):
        hint = f" (preset({settings!r}) makes one from a preset name)"
    elif isinstance(settings, dict):
        hint = " (CalculateSettings(**mapping) or preset('jump').replace(**mapping) makes one from a mapping)"
    return check_instance(settings, name, CalculateSettings, hint)


def preset(name: str) -> CalculateSettings:
    """The settings of a named production configuration (see ``PRESETS``)."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {', '.join(repr(n) for n in PRESETS)}, got {name!r}")
    return PRESETS[name]


# ---------------------------------------------------------------------------------------------
# Filter sizes (cellprofiler.md 4.4)


def smoothing_filter_size(settings: CalculateSettings, shape) -> float:
    """CellProfiler's smoothing filter size (a FWHM) for a plane of ``shape`` (after any resize)."""
    if settings.filter_size_method == "Manually":
        return float(settings.manual_size)
    if settings.filter_size_method == "Object size":
        return settings.object_width * 2.35 / 3.5
    return min(30, float(max(shape)) / 40.0)


def smoothing_sigma(settings: CalculateSettings, shape) -> float:
    """Gaussian sigma = filter size / 2.35."""
    return smoothing_filter_size(settings, shape) / 2.35


def median_radius(settings: CalculateSettings, shape) -> int:
    """Median Filter disk radius = max(1, int(sigma + 0.5))."""
    return max(1, int(smoothing_sigma(settings, shape) + 0.5))


# ---------------------------------------------------------------------------------------------
# Stages


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
        raise ValueError(f"images: float values span [{float(checked.min()):.6g}, {float(checked.max()):.6g}], "
                         "but the Median Filter quantises them as uint16(x * 65535) (CellProfiler), which wraps "
                         "values outside [0, 1]; scale float images to [0, 1]")
    return (scaled.astype(xp.int64) & 0xFFFF).astype(xp.uint16)


def _median_dequantise(filtered, xp):
    """The median output back to CellProfiler floats: / 65535 in float32."""
    return filtered.astype(xp.float32) / xp.float32(65535)


def _median_smooth(pixels, mask, radius: int, xp):
    """CellProfiler >= 4.2 Median Filter: quantise, masked pixels -> 0 but still counted, exact
    in-bounds disk median, dequantise."""
    from ..filters.median import median_filter

    quantised = _median_quantise(pixels, xp, mask)
    if mask is not None:
        quantised = xp.where(mask, quantised, xp.uint16(0))
    filtered = median_filter(quantised, radius, footprint="disk", mode="ignore")
    return _median_dequantise(filtered, xp)


@functools.lru_cache(maxsize=None)
def _median_table(scale: int) -> np.ndarray:
    """Median Filter output for each raw value 0..scale of a single integer image: the image's
    CellProfiler float (float64 division by ``scale``, one float32 rounding, as ``average``),
    quantised and dequantised. Non-decreasing in the raw value (every step is monotone)."""
    average = (np.arange(scale + 1) / float(scale)).astype(np.float32)
    table = _median_dequantise(_median_quantise(average, np), np)
    table.flags.writeable = False  # shared by every later call
    return table


def _spline_smooth(pixels, mask, settings: CalculateSettings):
    """Splines run on the host (gpuillum.illumination.splines): the fit and its zero-mean step stay
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
        raise ValueError(f"masks: the valid pixels span only {error.region}, which the automatic spline scale "
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

    from ..filters.polynomial import UndeterminedFit, fit_polynomial

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
        from ..filters.smoothing import gaussian_filter

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


def _rescale_table(levels, table, mask, option: str, counts=None):
    """``rescale(table[levels], mask, option)`` for an image given as integer ``levels`` into a
    non-decreasing float32 ``table``: the order statistic comes from a level histogram (sorted
    levels give sorted values), and the division runs once per table entry, not per pixel.
    ``counts``: the histogram of all the levels when the caller has it and there is no mask (no
    more than ``table.size`` bins), else it is counted here."""
    check_choice(option, "rescale", RESCALE_CHOICES)
    if counts is not None and mask is not None:
        raise ValueError("counts: a histogram of every pixel cannot serve a masked rescale")
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


# ---------------------------------------------------------------------------------------------
# Accumulator


def _check_some_valid(valid) -> None:
    if valid is not None and not bool(valid.any()):
        raise ValueError("masks: every pixel is masked in every image; nothing to average")


class IlluminationAccumulator:
    """Streaming CorrectIlluminationCalculate for one group (plate) and channel.

    ``add`` images one at a time in constant memory, ``merge`` partial accumulators (exact
    elementwise adds), ``finalize`` once. The sum lives on the image's backend and is exact for
    integer images (the raw uint8/uint16 values in a uint32 sum, int64 once it could overflow;
    divided by the dtype maximum only in the average) and float64 otherwise (float input, or
    any ``resize_factor`` != 1); mixing kinds converts the exact sum to float64. CellProfiler
    itself sums float32, so these averages are at least as accurate. Pixel counts: a scalar for
    unmasked images plus an int32 array once a mask appears. With ``aggregation="Each"`` the
    accumulator holds exactly one image. Pickles with NumPy state (unpickled: on the CPU).

    With ``resize_factor`` != 1, unmasked Regular images are summed at full resolution and the
    average is resized once: CellProfiler's bilinear Resize is linear and its clip to the input
    range never binds, so resizing the average equals averaging the resized images up to float32
    rounding, for one integer add per image instead of one resize. The first masked image (or
    Background preprocessing, which is not linear) switches to resizing every image.
    """

    def __init__(self, settings: CalculateSettings | None = None):
        self.settings = check_settings(CalculateSettings() if settings is None else settings)
        self.count = 0  # number of images added
        self.shape = None  # shape of the input images
        self._sum = None  # sum of preprocessed pixels (working shape)
        self._scale = None  # integer sum: the dtype maximum that maps it to CellProfiler floats; None: float64 sum
        self._unmasked = 0  # images added without a mask: they count at every pixel
        self._masked_count = None  # int32 per-pixel count from masked images (allocated on the first mask)
        self._deferred = False  # the sum is at full resolution; resize its average at the end

    # -- accumulation -------------------------------------------------------------------------
    def _prepare(self, image, mask):
        """Check and resize; returns (shape, pixels, mask, deferred). Pixels stay uint8/uint16 when the
        sum can be exact (no per-image resize), else become CellProfiler float32."""
        image = check_image(image, "image", dtypes=INPUT_DTYPES, allow_nan=True)
        xp = get_array_module(image)
        mask = check_mask(mask, image)
        shape = tuple(image.shape)
        if self.shape is not None:
            if shape != self.shape:
                raise ValueError(f"image: shape {shape} differs from the shape {self.shape} of the images already added")
            if is_cupy_array(image) != is_cupy_array(self._sum):
                raise TypeError("image: mixes NumPy and CuPy arrays; give every image as the same kind of array as the first")
        factor = self.settings.resize_factor
        if factor != 1.0 and self.shape is None:  # a setting too small for these images: say which
            from ..filters.resample import cellprofiler_resize_shape

            cellprofiler_resize_shape(shape, factor, "resize_factor")
        if image.dtype.kind == "f":
            image = _zero_masked_non_finite(image, mask, factor != 1.0, xp)
        linear = self.settings.intensity == "Regular" or self.settings.smoothing == "Splines"
        defer = factor != 1.0 and mask is None and linear and (self._sum is None or self._deferred)
        if factor != 1.0 and not defer and self._deferred:
            self._undefer()
        if image.dtype.kind == "u" and (factor == 1.0 or defer):
            return shape, image, mask, defer
        pixels = to_cellprofiler_float(image)
        if factor != 1.0 and not defer:
            from ..filters.resample import resize_bilinear, resize_mask

            pixels = resize_bilinear(pixels, self.settings.resize_factor)
            if mask is not None:  # CellProfiler's Resize takes the mask's nearest neighbours
                mask = resize_mask(mask, tuple(pixels.shape))
        return shape, pixels, mask, defer

    def _preprocess(self, pixels, mask):
        """Regular: masked pixels -> 0. Background: CellProfiler block minima (masked -> 0).
        Either works on raw integers too: the /max scaling is monotonic and exact afterwards."""
        settings = self.settings
        if settings.intensity == "Regular" or settings.smoothing == "Splines":
            return pixels if mask is None else get_array_module(pixels).where(mask, pixels, pixels.dtype.type(0))
        from ..filters.blocks import block_minimum

        return block_minimum(pixels, settings.block_size, mask=mask)

    def _float_sum(self):
        """The sum in CellProfiler float units, float64."""
        if self._scale is None:
            return self._sum
        return self._sum / float(self._scale)

    def _make_float(self):
        self._sum = self._float_sum()
        self._scale = None

    def _working_sum(self):
        """The float64 sum at working (resized) size."""
        total = self._float_sum()
        if not self._deferred:
            return total
        from ..filters.resample import resize_bilinear

        xp = get_array_module(total)
        average = (total / self.count).astype(xp.float32)
        return resize_bilinear(average, self.settings.resize_factor).astype(xp.float64) * self.count

    def _undefer(self):
        """Switch a full-resolution sum to the resized working size (before a masked image)."""
        self._sum = self._working_sum()
        self._scale = None
        self._deferred = False

    def _add_sum(self, values, scale, images: int):
        """Add ``values`` (integers of dtype maximum ``scale``, or CellProfiler floats when None)."""
        xp = get_array_module(values)
        if self._sum is None:
            self._scale = scale
        elif scale != self._scale:
            self._make_float()
            if scale is not None:
                values = values / float(scale)
        exact = self._scale is not None
        wide = exact and (self.count + images) * self._scale >= 2**32
        if self._sum is None:  # the first values: one copy in the sum's dtype
            if exact and not self.settings.is_all:  # an "Each" sum is never added to: no copy
                self._sum = values
            else:
                self._sum = values.astype(xp.float64 if not exact else xp.int64 if wide else xp.uint32)
            return
        if wide and self._sum.dtype == xp.uint32:
            self._sum = self._sum.astype(xp.int64)
        self._sum += values

    def add(self, image, mask=None) -> "IlluminationAccumulator":
        """Add one 2-D image (uint8, uint16, float32 or float64; NumPy or CuPy) and its optional mask."""
        if not self.settings.is_all and self.count:
            raise ValueError("add: an 'Each' accumulator holds one image; use calculate() or one accumulator per image")
        with device_of(image):
            shape, pixels, mask, deferred = self._prepare(image, mask)
            self._deferred = deferred
            xp = get_array_module(pixels)
            processed = self._preprocess(pixels, mask)  # zero wherever the mask is False
            scale = int(np.iinfo(processed.dtype).max) if processed.dtype.kind == "u" else None
            self._add_sum(processed, scale, 1)
            if mask is None:
                self._unmasked += 1
            else:
                if self._masked_count is None:
                    self._masked_count = xp.zeros(processed.shape, xp.int32)
                self._masked_count += mask
            self.shape = shape
            self.count += 1
        return self

    def merge(self, other: "IlluminationAccumulator") -> "IlluminationAccumulator":
        """Add another accumulator's images to this one (same settings and shape); returns self.

        A partial from another backend is moved to this one's backend (one array copy).
        """
        if not isinstance(other, IlluminationAccumulator):
            raise TypeError(f"other: expected an IlluminationAccumulator, got {type(other).__name__}")
        if other.settings != self.settings:
            raise ValueError("other: accumulators with different settings cannot be merged")
        if not self.settings.is_all and self.count + other.count > 1:
            raise ValueError("other: 'Each' accumulators hold one image each and cannot be merged")
        if other.count == 0:
            return self
        if self.count and other.shape != self.shape:
            raise ValueError(f"other: image shape {other.shape} differs from {self.shape}")
        like = other._sum if self._sum is None else self._sum
        with device_of(like):  # partials summed in worker threads may arrive with another device current
            if self.count and self._deferred != other._deferred:
                if self._deferred:
                    self._undefer()
                self._add_sum(same_backend(other._working_sum(), like), None, other.count)
            else:
                self._deferred = other._deferred
                self._add_sum(same_backend(other._sum, like), other._scale, other.count)
            if other._masked_count is not None:
                counts = same_backend(other._masked_count, like)
                self._masked_count = counts.copy() if self._masked_count is None else self._masked_count + counts
        self._unmasked += other._unmasked
        self.shape = other.shape
        self.count += other.count
        return self

    def to(self, device) -> "IlluminationAccumulator":
        """Move the state to ``device`` (a ``gpuillum.backend.Device`` or "cpu" / "gpu" / "cuda:N");
        returns self. Use it to finalize a merged (unpickled, NumPy) accumulator on a GPU."""
        from ..backend import resolve_device

        device = resolve_device(device)
        if self._sum is not None:
            self._sum = device.asarray(self._sum)
            if self._masked_count is not None:
                self._masked_count = device.asarray(self._masked_count)
        return self

    # -- pickling with NumPy state --------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        if state["_sum"] is not None:
            state["_sum"] = to_numpy(state["_sum"])
            if state["_masked_count"] is not None:
                state["_masked_count"] = to_numpy(state["_masked_count"])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # -- the function ---------------------------------------------------------------------------
    @property
    def pixel_count(self):
        """Per-pixel number of unmasked contributions (int32, working shape), or None before the first add."""
        if self._sum is None:
            return None
        xp = get_array_module(self._sum)
        if self._masked_count is None:
            return xp.full(self._sum.shape, self._unmasked, xp.int32)
        return self._masked_count + xp.int32(self._unmasked)

    def _valid_mask(self):
        """Pixels some image contributed to (count > 0); None when that is every pixel."""
        if self._masked_count is None or self._unmasked:
            return None
        valid = self._masked_count > 0
        return None if bool(valid.all()) else valid

    def average(self):
        """The averaged image (float32, 0 where no image contributed) and the valid mask (count > 0,
        None when every pixel has a contribution). The division is float64, as CellProfiler's."""
        if self.count == 0:
            raise ValueError("finalize: no images were added to this accumulator; add() at least one first")
        xp = get_array_module(self._sum)
        total = self._float_sum()
        if self._deferred:  # unmasked images only
            from ..filters.resample import resize_bilinear

            return resize_bilinear((total / self.count).astype(xp.float32), self.settings.resize_factor), None
        if self._masked_count is None:
            return (total / self._unmasked).astype(xp.float32), None
        if self._unmasked:
            return (total / (self._masked_count + self._unmasked)).astype(xp.float32), None
        valid = self._valid_mask()
        average = total / xp.maximum(self._masked_count, 1)
        if valid is not None:
            average = xp.where(valid, average, 0.0)
        return average.astype(xp.float32), valid

    def finalize(self, shape=None):
        """The illumination function, float32 2-D on the accumulator's backend.

        average -> dilate -> smooth -> rescale -> resize back to ``shape`` (default: the input
        image shape). Mask rules (cellprofiler.md 4.2): "Each" and compat "5" use the valid mask
        at every stage; CellProfiler 4.2's All modes drop it after dilation or smoothing.
        """
        with device_of(self._sum):
            if self._median_of_raw_values_applies():
                pixels = self._median_of_raw_values()
            else:
                pixels = self._function()
            xp = get_array_module(pixels)
            target = self.shape if shape is None else check_shape(shape)
            if tuple(pixels.shape) != target:
                from ..filters.resample import resize_bilinear

                pixels = resize_bilinear(pixels, target)
            return xp.ascontiguousarray(pixels, dtype=xp.float32)

    def _function(self):
        """average -> dilate -> smooth -> rescale, at working size."""
        settings = self.settings
        average, valid = self.average()  # valid None: every pixel (same results as an all-True mask)
        _check_some_valid(valid)
        keep_mask = settings.compat == "5" or not settings.is_all
        pixels = average
        if settings.dilate:
            pixels = dilate(pixels, valid, settings.dilation_radius)
        smooth_mask = valid if keep_mask or not settings.dilate else None
        pixels = smooth(pixels, smooth_mask, settings)
        no_smoothing = settings.smoothing == "No smoothing"
        rescale_mask = valid if keep_mask or (not settings.dilate and no_smoothing) else None
        return rescale(pixels, rescale_mask, settings.rescale)

    def _median_of_raw_values_applies(self) -> bool:
        """"Each" on an integer image, nothing between the average and the Median Filter but the
        float conversion (no dilation, no resize); every stage keeps the mask ("Each" rules)."""
        settings = self.settings
        return (not settings.is_all and self.count == 1 and self._scale is not None and not self._deferred
                and not settings.dilate and settings.smoothing == "Median Filter" and settings.resize_factor == 1.0)

    def _median_of_raw_values(self):
        """``_function`` for one integer image and Median Filter, bit-identical to the float path
        without its float passes (~8 of ~33 ms per 1080^2 image; "Each" mode runs it on every
        image): the raw value -> CellProfiler float -> uint16 quantisation chain is a
        non-decreasing map and a median commutes with such a map, so the exact median of the raw
        integers (masked pixels already 0, which maps to 0) is looked up in ``_median_table`` and
        rescaled through it."""
        from ..filters.median import median_filter, median_filter_counted

        xp = get_array_module(self._sum)
        valid = self._valid_mask()
        _check_some_valid(valid)
        raw = self._sum.astype(xp.uint8 if self._scale <= 0xFF else xp.uint16, copy=False)
        radius = median_radius(self.settings, raw.shape)
        table = xp.asarray(_median_table(self._scale))
        if valid is None and self.settings.rescale != "No":  # the kernel counts the statistic's pixels
            levels, counts = median_filter_counted(raw, radius, footprint="disk", mode="ignore")
            return _rescale_table(levels, table, None, self.settings.rescale, counts)
        levels = median_filter(raw, radius, footprint="disk", mode="ignore")
        return _rescale_table(levels, table, valid, self.settings.rescale)


def _zero_masked_non_finite(image, mask, resizing: bool, xp):
    """``image``, with NaN or infinite pixels under ``mask`` (False) set to 0, the value masked
    pixels take anyway; a ValueError when an unmasked pixel is not finite, or any pixel when the
    image is resized (CellProfiler's Resize would spread a masked NaN into valid pixels)."""
    finite = xp.isfinite(image)
    if bool(finite.all()):
        return image
    if mask is not None and resizing:
        raise ValueError("image: contains NaN or infinite values; with resize_factor != 1 masked pixels must be "
                         "finite too (the resize spreads them into valid pixels)")
    if mask is None or not bool((finite | ~mask).all()):
        where = "" if mask is None else " in unmasked pixels"
        raise ValueError(f"image: contains NaN or infinite values{where}; replace or mask those pixels first")
    return xp.where(finite, image, image.dtype.type(0))


def calculate(images, settings: CalculateSettings | None = None, masks=None):
    """Illumination function(s) of ``images`` (a sequence or iterator of 2-D arrays).

    All modes: one float32 (H, W) function from one streaming pass (constant memory).
    "Each": a float32 (n, H, W) array, one function per image. ``masks``: None, or one mask (or
    None) per image, in the same order.
    """
    settings = check_settings(CalculateSettings() if settings is None else settings)
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError(f"images: expected a sequence of 2-D images or a 3-D stack (n, H, W), got {type(images).__name__}")
    dimensions = getattr(images, "ndim", None)
    if dimensions is not None and dimensions != 3:
        hint = ": for one image pass [image]" if dimensions == 2 else ""
        raise ValueError(f"images: got one {dimensions}-D array of shape {tuple(images.shape)}; expected a sequence of "
                         f"2-D images or a 3-D stack (n, H, W){hint}")
    pairs = _image_mask_pairs(images, masks)
    if settings.is_all:
        accumulator = IlluminationAccumulator(settings)
        for image, mask in pairs:
            accumulator.add(image, mask)
        if accumulator.count == 0:
            raise ValueError("images: no images given")
        return accumulator.finalize()
    return _calculate_each(pairs, settings, len(images) if hasattr(images, "__len__") else None)


_MISSING = object()  # the end of the masks, told apart from a None mask


def _image_mask_pairs(images, masks):
    """(image, mask) pairs; a one-line ValueError when there is not exactly one mask (or None)
    per image, before any work when both lengths are known."""
    if masks is None:
        yield from zip(images, itertools.repeat(None))
        return
    if getattr(masks, "ndim", None) == 2:
        raise ValueError("masks: got one 2-D array; expected one mask (or None) per image, e.g. [mask] * len(images)")
    if hasattr(images, "__len__") and hasattr(masks, "__len__") and len(images) != len(masks):
        raise ValueError(f"masks: {len(masks)} masks for {len(images)} images; expected one mask (or None) per image")
    remaining = iter(masks)
    count = 0
    for image in images:
        mask = next(remaining, _MISSING)
        if mask is _MISSING:
            raise ValueError(f"masks: ran out after {count} masks while images remained; expected one mask (or None) per image")
        yield image, mask
        count += 1
    if next(remaining, _MISSING) is not _MISSING:
        raise ValueError(f"masks: more masks than the {count} images; expected one mask (or None) per image")


def _calculate_each(pairs, settings: CalculateSettings, count: int | None):
    """"Each" functions stacked as they come: into one array allocated after the first when the
    number of images is known (a plate of 1080^2 images then skips a final stack copy, ~14 ms of
    page faults and copying per image on the 2-core VM), else collected and stacked at the end."""
    functions, stacked, first_shape = [], None, None
    for index, (image, mask) in enumerate(pairs):
        accumulator = IlluminationAccumulator(settings).add(image, mask)
        if mask is not None and not bool(accumulator._masked_count.any()):  # its mask (pixel_count would copy it)
            raise ValueError(f"masks: image {index} has every pixel masked; CellProfiler would give it an all-zero "
                             "function, which no image can be divided by")
        function = accumulator.finalize()
        if first_shape is None:
            first_shape = function.shape
        elif function.shape != first_shape:
            raise ValueError(f"images: image {index} has shape {function.shape}, image 0 has {first_shape}; "
                             "'Each' stacks one function per image, so every image needs the same shape")
        if count is None:
            functions.append(function)
            continue
        if index >= count:
            raise ValueError(f"images: len() says {count} images, iterating gave more")
        if stacked is None:
            with device_of(function):  # on the input's GPU, like the functions
                stacked = get_array_module(function).empty((count, *first_shape), dtype=np.float32)
        stacked[index] = function
    if first_shape is None:
        raise ValueError("images: no images given")
    if count is None:
        return get_array_module(functions[0]).stack(functions)
    if index + 1 != count:
        raise ValueError(f"images: len() says {count} images, iterating gave {index + 1}")
    return stacked
