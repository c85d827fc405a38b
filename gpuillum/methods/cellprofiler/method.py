"""CellProfiler's CorrectIlluminationCalculate + Apply as the engine's ``cellprofiler`` method.

The settings are a :class:`CalculateSettings` plus the apply method (Divide or Subtract). On the
command line they start from a base configuration, ``--preset NAME``, ``--cppipe FILE`` or by
default the jump preset, which every other option modifies (``--smoothing``, ``--aggregation``,
...), so a user never gets CellProfiler's bare defaults by accident. "All" aggregation reduces a
group (plate x channel) with the streaming accumulator and finishes into a CellProfiler function
(an IlluminationModel in CellProfiler's units, saved as ``<Plate>_Illum<Channel>.npy``); "Each"
computes the function of every image from the image itself.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from ...correct import APPLY_METHODS, apply
from .. import register
from ..base import CliOption, GroupInfo, Method, choice_parser
from ...errors import InvalidType, InvalidValue
from .settings import (
    AGGREGATION_CHOICES,
    COMPAT_CHOICES,
    FILTER_SIZE_CHOICES,
    INTENSITY_CHOICES,
    PRESETS,
    RESCALE_CHOICES,
    SMOOTHING_CHOICES,
    CalculateSettings,
    preset,
)

DEFAULT_PRESET = "jump"
SMOOTHING_ALIASES = {
    "none": "No smoothing", "convex-hull": "Convex Hull", "polynomial": "Fit Polynomial", "median": "Median Filter",
    "gaussian": "Gaussian Filter", "average": "Smooth to Average", "splines": "Splines",
}
FILTER_SIZE_ALIASES = {"automatic": "Automatic", "object": "Object size", "object-size": "Object size", "manual": "Manually",
                       "manually": "Manually"}
AGGREGATION_ALIASES = {"each": "Each", "all": "All: Across cycles", "all-first": "All: First cycle", "all-across": "All: Across cycles"}
# the CalculateSettings fields an option sets directly (the others: --filter-size, --dilate, --preset, --cppipe)
DIRECT_FIELDS = ("intensity", "smoothing", "filter_size_method", "object_width", "rescale", "aggregation", "dilation_radius",
                 "block_size", "resize_factor", "compat")
# setting names that can reach a message -> the options the user typed
OPTION_NAMES = {
    "resize_factor": "--resize-factor", "manual_size": "--filter-size", "object_width": "--object-width",
    "filter_size_method": "--filter-size-method", "dilation_radius": "--dilation-radius", "block_size": "--block-size",
    "intensity": "--intensity", "smoothing": "--smoothing", "rescale": "--rescale", "aggregation": "--aggregation",
    "compat": "--compat", "apply_method": "--apply-method",
}


def default_apply_method(calculate: CalculateSettings) -> str:
    """Subtract a background, divide by anything else: a Background function (block minima) and a
    Splines one (a zero-mean background fit, cellprofiler.md 4.5) are subtracted, a Regular one divides."""
    return "Subtract" if calculate.intensity == "Background" or calculate.smoothing == "Splines" else "Divide"


@dataclass(frozen=True)
class CellProfilerSettings:
    """The CorrectIlluminationCalculate settings and how the function is applied (None: the default
    for those settings, see :func:`default_apply_method`)."""

    calculate: CalculateSettings = field(default_factory=lambda: preset(DEFAULT_PRESET))
    apply_method: str | None = None

    def __post_init__(self):
        if not isinstance(self.calculate, CalculateSettings):
            raise InvalidType(f"calculate: expected a CalculateSettings, got {type(self.calculate).__name__}")
        if self.apply_method is None:
            object.__setattr__(self, "apply_method", default_apply_method(self.calculate))
        if self.apply_method not in APPLY_METHODS:
            raise InvalidValue(f"apply_method: expected Divide or Subtract, got {self.apply_method!r}")


def option_names(text: str) -> str:
    """``text`` with setting names (resize_factor, manual_size, ...) replaced by their options."""
    # not inside a quoted choice such as 'No smoothing'
    return re.sub(r"(?<![-\w])(" + "|".join(OPTION_NAMES) + r")(?![\w'\"])", lambda m: OPTION_NAMES[m.group(1)], text)


def describe_calculation(settings: CalculateSettings) -> str:
    """The settings that shape the function, in one line (run summary and manifest)."""
    parts = [settings.intensity]
    if settings.intensity == "Background":
        parts.append(f"block size {settings.block_size:g}")
    parts.append(settings.aggregation)
    smoothing = settings.smoothing
    if smoothing in ("Median Filter", "Gaussian Filter"):
        if settings.filter_size_method == "Manually":
            smoothing += f" size {settings.manual_size:g}"
        elif settings.filter_size_method == "Object size":
            smoothing += f" (object width {settings.object_width:g})"
        else:
            smoothing += " (automatic size)"
    parts.append(smoothing)
    if settings.dilate:
        parts.append(f"dilation radius {settings.dilation_radius}")
    parts.append(f"rescale {settings.rescale}")
    if settings.resize_factor != 1:
        parts.append(f"resize x{settings.resize_factor:g}")
    return ", ".join(parts)


def settings_from_cppipe(path, module=None) -> CalculateSettings:
    """The CorrectIlluminationCalculate settings of a pipeline's module (a number, an output image
    name, or None: the first such module)."""
    from .cppipe import read_pipeline

    if module is None:
        numbers = [m.number for m in read_pipeline(path) if m.name == "CorrectIlluminationCalculate"]
        module = numbers[0] if numbers else 1
    elif isinstance(module, str) and module.isdigit():
        module = int(module)
    return CalculateSettings.from_cppipe(path, module)


class CellProfilerMethod(Method):
    name = "cellprofiler"
    aliases = ("cp",)
    summary = ("CellProfiler's CorrectIlluminationCalculate + Apply, setting for setting (default: the JUMP recipe); "
               "one function per plate x channel, or per image")
    Settings = CellProfilerSettings
    remedy = "--rescale Median"
    unit_floats = True

    def scope(self, settings: CellProfilerSettings) -> str:
        return "group" if settings.calculate.is_all else "image"

    def cli_options(self) -> list[CliOption]:
        return [
            CliOption("--preset", "preset", "base configuration (default: jump, JUMP Cell Painting)", choices=tuple(sorted(PRESETS)),
                      parse=str),
            CliOption("--cppipe", "cppipe", "take the settings from a CellProfiler pipeline", metavar="FILE", parse=str),
            CliOption("--cppipe-module", "cppipe_module", "which CorrectIlluminationCalculate module of --cppipe (module "
                      "number or output image name; default: the first)", metavar="N|NAME", parse=str),
            CliOption("--intensity", "intensity", "Regular or Background (default: Regular)", parse=choice_parser(INTENSITY_CHOICES)),
            CliOption("--smoothing", "smoothing", "No smoothing, Convex Hull, Fit Polynomial, Median Filter, Gaussian Filter, "
                      "Smooth to Average, Splines (or none, convex-hull, polynomial, median, gaussian, average, splines; "
                      "default: Median Filter)", parse=choice_parser(SMOOTHING_CHOICES, SMOOTHING_ALIASES)),
            CliOption("--filter-size-method", "filter_size_method", "Automatic, Object size or Manually (default: Manually)",
                      parse=choice_parser(FILTER_SIZE_CHOICES, FILTER_SIZE_ALIASES)),
            CliOption("--filter-size", "filter_size", "smoothing filter size in pixels of the resized image (implies "
                      "Manually; default: 20)", metavar="N", parse=float),
            CliOption("--object-width", "object_width", "approximate object diameter (implies Object size; default: 10)",
                      metavar="N", parse=float),
            CliOption("--rescale", "rescale", "Yes, No or Median (default: Yes; Subtract needs No)", parse=choice_parser(RESCALE_CHOICES)),
            CliOption("--aggregation", "aggregation", "Each (a function per image) or All (one per plate and channel; also "
                      "all-first, all-across; default: All: Across cycles)",
                      parse=choice_parser(AGGREGATION_CHOICES, AGGREGATION_ALIASES)),
            CliOption("--dilate", "dilate", "dilate objects in the averaged image", kind="flag"),
            CliOption("--dilation-radius", "dilation_radius", "dilation radius (implies --dilate; default: 1)", metavar="R",
                      parse=int),
            CliOption("--block-size", "block_size", "block size of the Background method (default: 60)", metavar="N", parse=int),
            CliOption("--resize-factor", "resize_factor", "shrink images by F (0 < F <= 1) before the module, enlarge the "
                      "function back after it (default: 0.2, as JUMP)", metavar="F", parse=float),
            CliOption("--compat", "compat", "CellProfiler 4.2 or 5 semantics (default: 4.2)", choices=COMPAT_CHOICES, parse=str),
            CliOption("--apply-method", "apply_method", "Divide or Subtract the function (default: Subtract for Background or "
                      "Splines, else Divide)", parse=choice_parser(APPLY_METHODS)),
        ]

    def settings_from_options(self, values: dict) -> CellProfilerSettings:
        """The base configuration (--cppipe, --preset, or the jump preset) modified by the other options."""
        changes = {name: values[name] for name in DIRECT_FIELDS if values.get(name) is not None}
        if values.get("filter_size") is not None:
            changes["manual_size"] = values["filter_size"]
            changes.setdefault("filter_size_method", "Manually")
        if "object_width" in changes:
            changes.setdefault("filter_size_method", "Object size")
        if values.get("dilate") or "dilation_radius" in changes:
            changes["dilate"] = True
        if values.get("preset") and values.get("cppipe"):
            raise InvalidValue("--preset and --cppipe: give one of them")
        if values.get("cppipe_module") and not values.get("cppipe"):
            raise InvalidValue("--cppipe-module needs --cppipe")
        if values.get("cppipe"):
            base = settings_from_cppipe(values["cppipe"], values.get("cppipe_module"))  # errors in the pipeline's own terms
        else:
            base = preset(values.get("preset") or DEFAULT_PRESET)
        try:
            calculate = base.replace(**changes) if changes else base
            return CellProfilerSettings(calculate, values.get("apply_method"))
        except (ValueError, TypeError) as error:
            raise InvalidValue(option_names(str(error).splitlines()[0])) from None

    def describe(self, settings: CellProfilerSettings) -> str:
        return describe_calculation(settings.calculate)

    def manifest_settings(self, settings: CellProfilerSettings) -> dict:
        return dataclasses.asdict(settings.calculate)

    def input_dtypes(self, settings) -> tuple[str, ...]:
        return ("uint8", "uint16", "float32", "float64")

    def check_settings(self, settings: CellProfilerSettings, *, estimating: bool, correcting: bool) -> None:
        """Refuse settings and an apply method that together destroy the images (one line naming the fix);
        only for a run that both estimates and corrects (an apply pass checks the function it is given)."""
        calculate, apply_method = settings.calculate, settings.apply_method
        if not (estimating and correcting):
            return
        if not calculate.is_all and calculate.smoothing == "No smoothing" and calculate.intensity == "Regular":
            raise InvalidValue("aggregation Each with smoothing 'No smoothing' divides each image by itself (every image "
                             "becomes flat); use --aggregation All or a --smoothing method (e.g. Median Filter)")
        if apply_method == "Subtract" and calculate.rescale != "No":
            raise InvalidValue(f"apply method Subtract with rescale {calculate.rescale}: the rescaled function (>= 1) is "
                             "subtracted in 0..1 units and blackens every image; use --rescale No")
        if apply_method == "Divide" and calculate.smoothing == "Splines" and calculate.rescale != "Yes":
            raise InvalidValue(f"apply method Divide with smoothing Splines and rescale {calculate.rescale}: the spline function "
                             "is a zero-mean background (negative in places) and dividing by it blackens the images; use "
                             "--apply-method Subtract")

    def check(self, settings: CellProfilerSettings, group: GroupInfo) -> None:
        """Refuse images that the resize factor shrinks to nothing."""
        factor = settings.calculate.resize_factor
        if factor == 1:
            return
        from ...filters.resample import cellprofiler_resize_shape

        try:
            cellprofiler_resize_shape(group.shape, factor)
        except ValueError:
            raise InvalidValue(f"images of {group.label} are {group.shape[0]}x{group.shape[1]}, too small for resize factor "
                             f"{factor:g} (it leaves no pixel on an axis); use a larger resize factor or 1") from None

    def reduction(self, settings: CellProfilerSettings, group: GroupInfo, start: int = 0):
        from .estimator import IlluminationAccumulator

        return IlluminationAccumulator(settings.calculate)

    def finish(self, settings: CellProfilerSettings, reduction, group: GroupInfo, device):
        from ...backend import to_numpy
        from ...model import IlluminationModel

        if device.is_gpu:
            reduction.to(device)  # Dask partials arrive as NumPy: finalize on the job's device
        with device.activate():
            function = to_numpy(reduction.finalize(group.shape))
        return IlluminationModel.from_function(function, settings.apply_method, settings=self.manifest_settings(settings),
                                               info={"images": reduction.count})

    def correct(self, settings: CellProfilerSettings, image, *, output_dtype: str = "same", stats=None):
        """"Each": the image's own function, applied to it."""
        from .estimator import IlluminationAccumulator

        function = IlluminationAccumulator(settings.calculate).add(image).finalize()
        return apply(image, function, settings.apply_method, on_invalid="ignore", units="cellprofiler",
                     output_dtype=output_dtype, stats=stats)


register(CellProfilerMethod())
