"""The ``median`` method: subtract each image's median-filtered background (the lesson's first recipe).

By default the background is the exact disk median of radius R (in-bounds pixels only at the
edges), equal to scikit-image's ``filters.rank.median(image, disk(R))`` and CellProfiler's;
``--edges nearest`` repeats the edge pixels instead (scikit-image's ``filters.median``, the
lesson's Python recipe, and scipy), and ``--footprint imagej`` takes ImageJ's circle of radius R
({x^2 + y^2 <= floor(R^2) + 1}, R may be fractional) with ImageJ's nearest edges: ImageJ's
Process > Filters > Median..., the lesson's ImageJ recipe. ``--downsample auto|N`` takes the fast
approximate median of gpuillum.median_background instead (block means, the median at low
resolution, bilinear back), which ``--background median`` has always used. ``--presmooth``
computes the median of a smoothed copy (gpuillum.methods.background).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import register
from .background import (
    check_presmooth,
    check_window,
    describe_presmooth,
    footprint_setting,
    presmooth_setting,
    radius_setting,
    sigma_setting,
    smoothed,
    subtract_background,
)
from .base import Method, setting
from ..errors import InvalidValue

EDGES = ("ignore", "nearest")


@dataclass(frozen=True)
class MedianSettings:
    """The median's window (radius, footprint, edges), its resolution, and the pre-smoothing."""

    radius: int = radius_setting("disk radius of the median in pixels (about 3x the radius of the objects to keep)")
    downsample: str = setting("exact", help="exact (default: the exact disk median) or auto / N: the fast approximate "
                              "median on an image shrunk N times (gpuillum.median_background)", metavar="exact|auto|N")
    light_background: bool = setting(False, help="dark objects on a light background: subtract the image from its background")
    footprint: str = footprint_setting(" (Process > Filters > Median..., with --edges nearest by default)")
    edges: str | None = setting(None, choices=EDGES, help="ignore: only the pixels inside the image count (scikit-image's "
                                "filters.rank.median, CellProfiler; default for --footprint disk); nearest: the edge pixels "
                                "repeat (scikit-image's filters.median, scipy, ImageJ; default for --footprint imagej)")
    presmooth: str = presmooth_setting("none")
    sigma: float | None = sigma_setting()

    def __post_init__(self):
        from .._checks import check_choice

        check_window(self.radius, self.footprint)
        if self.edges is None:
            object.__setattr__(self, "edges", "nearest" if self.footprint == "imagej" else "ignore")
        check_choice(self.edges, "edges", EDGES)
        object.__setattr__(self, "downsample", _downsample(self.downsample))
        if self.downsample != "exact" and (self.footprint, self.edges) != ("disk", "ignore"):
            raise InvalidValue(f"downsample: the approximate median ({self.downsample}) has a disk footprint and ignores the "
                               "edges; footprint imagej and edges nearest need downsample exact")
        check_presmooth(self)


def _downsample(value) -> str:
    """"exact", "auto" or a factor >= 2 as text (1, or "1", is the exact median)."""
    text = str(value).strip().lower()
    if text in ("exact", "auto"):
        return text
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise InvalidValue(f"downsample: expected exact, auto or an integer >= 1, got {value!r}")
    return "exact" if int(text) == 1 else str(int(text))


class MedianMethod(Method):
    name = "median"
    summary = "subtract each image's median-filtered background (exact disk median; --downsample for the fast one)"
    Settings = MedianSettings

    def scope(self, settings) -> str:
        return "image"

    def describe(self, settings: MedianSettings) -> str:
        if settings.downsample == "exact":
            window = "ImageJ's circle" if settings.footprint == "imagej" else "disk"
            how = f" (exact {window} median" + (", edges repeated)" if settings.edges == "nearest" else ")")
        else:
            how = "" if settings.downsample == "auto" else f" (downsampled x{settings.downsample})"
        light = ", light background" if settings.light_background else ""
        return f"median background subtraction, radius {settings.radius:g}{how}{describe_presmooth(settings)}{light}"

    def background(self, settings: MedianSettings, image, model=None):
        """The background of ``image`` in its units (the exact median of an unsmoothed image keeps its dtype)."""
        source = smoothed(image, settings)
        if settings.downsample == "exact":
            from ..filters.median import median_filter

            return median_filter(source, settings.radius, footprint=settings.footprint, mode=settings.edges)
        from ..filters.median_background import median_background

        factor = settings.downsample if settings.downsample == "auto" else int(settings.downsample)
        return median_background(source, settings.radius, downsample=factor)

    def correct(self, settings: MedianSettings, image, *, output_dtype: str = "same", stats=None):
        return subtract_background(image, self.background(settings, image), light_background=settings.light_background,
                                   output_dtype=output_dtype, stats=stats)


register(MedianMethod())
