"""CorrectIlluminationCalculate's settings: choices, validation, .cppipe reading, presets, filter sizes.

Every setting keeps CellProfiler's name and choice strings (docs/cellprofiler.md section 3);
``CalculateSettings.from_cppipe`` reads them from a pipeline, ``preset`` gives the production
configurations of section 12.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..._checks import check_choice, check_instance
from ...errors import InvalidType, InvalidValue

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


def _check_number(value, name: str, low: float, high: float = np.inf, integer: bool = False):
    """A ValueError naming ``name`` unless ``value`` is a finite number (an integer) in [low, high]."""
    kind = "an integer" if integer else "a finite number"
    bounds = f">= {low}" if high == np.inf else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        raise InvalidValue(f"{name}: expected {kind} {bounds}, got {value!r}")
    if not (low <= value <= high and math.isfinite(value)):
        raise InvalidValue(f"{name}: expected {kind} {bounds}, got {value!r}")


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
                raise InvalidValue(f"{name}: expected True or False, got {getattr(self, name)!r}")
        _check_number(self.dilation_radius, "dilation_radius", 0, integer=True)
        if self.dilate and self.dilation_radius < 1:
            raise InvalidValue(f"dilation_radius: expected an integer >= 1 when dilate is on, got {self.dilation_radius!r}")
        _check_number(self.block_size, "block_size", 1, integer=True)
        for name in ("object_width", "manual_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
                raise InvalidValue(f"{name}: expected a finite number > 0, got {value!r}")
        _check_number(self.spline_points, "spline_points", 4, integer=True)
        _check_number(self.spline_threshold, "spline_threshold", 0.1, 5.0)
        _check_number(self.spline_rescale, "spline_rescale", 1.0)
        _check_number(self.spline_max_iterations, "spline_max_iterations", 1, integer=True)
        _check_number(self.spline_convergence, "spline_convergence", 1e-5, 0.1)
        factor = self.resize_factor
        if isinstance(factor, bool) or not isinstance(factor, numbers.Real) or not 0 < factor <= 1:
            raise InvalidValue(f"resize_factor: expected a number in (0, 1], got {factor!r}")

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
            raise InvalidValue(f"{path}: no CorrectIlluminationCalculate module in the pipeline")
        available = ", ".join(
            f"module {m.number}" + (f" ({m.values[1]})" if len(m.values) > 1 else "") + ("" if m.enabled else " [disabled]")
            for m in calculators
        )
        if module is None:
            chosen = [m for m in calculators if m.enabled][:1]
            if not chosen:
                raise InvalidValue(f"{path}: every CorrectIlluminationCalculate module is disabled in the pipeline ({available})")
        elif isinstance(module, numbers.Integral) and not isinstance(module, bool):
            chosen = [m for m in calculators if m.number == module]
        elif isinstance(module, str):
            named = [m for m in calculators if len(m.values) > 1 and m.values[1] == module]
            chosen = [m for m in named if m.enabled] or named
        else:
            raise InvalidType(
                f"module: expected a module number, an output image name or None (the first), got {module!r}; "
                f"the CorrectIlluminationCalculate modules of {path} are {available}"
            )
        if not chosen:
            raise InvalidValue(
                f"module: {path} has no CorrectIlluminationCalculate module {module!r}; "
                f"its CorrectIlluminationCalculate modules are {available}"
            )
        if not chosen[0].enabled:
            raise InvalidValue(
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
        raise InvalidValue(f"{where}: CorrectIlluminationCalculate variable_revision_number {revision} is not supported (1-3)")
    if revision == 1:
        values = values + ["Yes", "auto", "5", "2", "2", "40", "0.001"]
    if len(values) != 23:
        raise InvalidValue(f"{where}: expected 23 settings for revision {revision}, found {len(values)}")
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
            raise InvalidValue(f"{where}: setting {index + 1} ({name}) is not a number: {values[index]!r}") from None

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
        raise InvalidValue(f"{where}: {error}") from None


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
        raise InvalidValue(
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
        raise InvalidValue(f"{source}, fed by Resize module #{upstream.number}; only a single Resize is emulated")
    method = resize.value("Resizing method") or resize.value("Select resizing method") or ""
    interpolation = resize.value("Interpolation method") or ""
    if not method.startswith("Resize by a fraction"):
        raise InvalidValue(f"{where}: input {image_name!r} comes from a Resize to fixed dimensions; only 'by factor' resizing is emulated")
    if interpolation != "Bilinear":
        raise InvalidValue(f"{where}: input {image_name!r} comes from a {interpolation!r} Resize; only 'Bilinear' is emulated")
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
            raise InvalidValue(f"{source}: {text!r} expected a number, got {value!r}")
        factors.append(factor)
    if not factors:
        raise InvalidValue(f"{source}: expected an 'X Resizing factor' and a 'Y Resizing factor' (or a 'Resizing factor') setting")
    if len(set(factors)) != 1:
        raise InvalidValue(f"{source}: different X and Y factors {sorted(set(factors))}; only equal factors are emulated")
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
        raise InvalidValue(f"preset: expected one of {', '.join(repr(n) for n in PRESETS)}, got {name!r}")
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
