"""The ``median`` method: subtract each image's median-filtered background (the lesson's first recipe).

By default the background is the exact disk median of radius R (in-bounds pixels only at the
edges), equal to scikit-image's ``filters.rank.median(image, disk(R))`` and ImageJ's Process >
Filters > Median... for the same disk; ``--downsample auto|N`` takes the fast approximate median
of gpuillum.median_background instead (block means, the median at low resolution, bilinear back),
which ``--background median`` has always used.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import register
from .background import subtract_background
from .base import Method, setting
from ..errors import InvalidValue


@dataclass(frozen=True)
class MedianSettings:
    """The disk radius, and the median's resolution."""

    radius: int = setting(help="disk radius of the median in pixels (about 3x the radius of the objects to keep)", metavar="R")
    downsample: str = setting("exact", help="exact (default: the exact disk median) or auto / N: the fast approximate "
                              "median on an image shrunk N times (gpuillum.median_background)", metavar="exact|auto|N")
    light_background: bool = setting(False, help="dark objects on a light background: subtract the image from its background")

    def __post_init__(self):
        from .._checks import check_radius

        check_radius(self.radius, "radius")
        object.__setattr__(self, "downsample", _downsample(self.downsample))


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
        how = "" if settings.downsample == "auto" else " (exact disk median)" if settings.downsample == "exact" else \
            f" (downsampled x{settings.downsample})"
        light = ", light background" if settings.light_background else ""
        return f"median background subtraction, radius {settings.radius}{how}{light}"

    def background(self, settings: MedianSettings, image):
        """The background of ``image`` in its units (the exact median keeps the image's dtype)."""
        if settings.downsample == "exact":
            from ..filters.median import median_filter

            return median_filter(image, settings.radius, footprint="disk", mode="ignore")
        from ..filters.median_background import median_background

        factor = settings.downsample if settings.downsample == "auto" else int(settings.downsample)
        return median_background(image, settings.radius, downsample=factor)

    def correct(self, settings: MedianSettings, image, *, output_dtype: str = "same", stats=None):
        return subtract_background(image, self.background(settings, image), light_background=settings.light_background,
                                   output_dtype=output_dtype, stats=stats)


register(MedianMethod())
