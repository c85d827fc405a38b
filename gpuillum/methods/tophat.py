"""The ``tophat`` and ``black-tophat`` methods: subtract each image's morphological background.

The background is the grey opening (bright objects smaller than the disk removed) and the
foreground the white top-hat ``image - opening``; with ``--light-background`` (the
``black-tophat`` method's default) the background is the grey closing and the foreground the
black top-hat ``closing - image``, for dark objects on a light background. Both are exact flat
morphology with a disk of radius R, out-of-bounds pixels ignored (scikit-image's
``mode="ignore"``); ``--footprint imagej`` takes ImageJ's circle instead, which makes ``tophat``
ImageJ's Process > Filters > Top Hat... (with "light background" ImageJ writes
``image - closing + max`` for 8/16-bit, dark objects on white: the dtype's maximum minus the
black top-hat). A top-hat is never negative, so ``same`` loses nothing. ``--presmooth`` computes
the opening (closing) of a smoothed copy, subtracted from the original.
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

@dataclass(frozen=True)
class TophatSettings:
    """The disk radius, which objects are kept, the footprint and the pre-smoothing."""

    radius: int = radius_setting("disk radius in pixels (larger than the objects to keep)")
    light_background: bool = setting(False, help="dark objects on a light background: the black top-hat (closing minus image)")
    footprint: str = footprint_setting()
    presmooth: str = presmooth_setting("none")
    sigma: float | None = sigma_setting()

    def __post_init__(self):
        check_window(self.radius, self.footprint)
        check_presmooth(self)


@dataclass(frozen=True)
class BlackTophatSettings(TophatSettings):
    light_background: bool = setting(True, help="dark objects on a light background (default for black-tophat); "
                                     "--no-light-background gives the white top-hat")


class TophatMethod(Method):
    name = "tophat"
    aliases = ("white-tophat",)
    summary = "subtract each image's grey opening: the white top-hat (bright objects smaller than the disk)"
    Settings = TophatSettings

    def scope(self, settings) -> str:
        return "image"

    def describe(self, settings: TophatSettings) -> str:
        kind = "black" if settings.light_background else "white"
        window = ", ImageJ's circle" if settings.footprint == "imagej" else ""
        return f"{kind} top-hat background subtraction, radius {settings.radius:g}{window}{describe_presmooth(settings)}"

    def background(self, settings: TophatSettings, image, model=None):
        """The grey opening (closing with a light background) of ``image``, or of its smoothed
        copy, in the image's dtype (float32 when smoothed)."""
        from ..filters.morphology import grey_closing, grey_opening

        morphology = grey_closing if settings.light_background else grey_opening
        return morphology(smoothed(image, settings), settings.radius, footprint=settings.footprint)

    def correct(self, settings: TophatSettings, image, *, output_dtype: str = "same", stats=None):
        if output_dtype == "same" and image.dtype.kind == "u" and settings.presmooth == "none":
            # never negative: the top-hat in the image's dtype
            from ..filters.morphology import black_tophat, white_tophat

            tophat = (black_tophat if settings.light_background else white_tophat)(image, settings.radius,
                                                                                    footprint=settings.footprint)
            if stats is not None:
                stats.pixels += int(image.size)
            return tophat
        return subtract_background(image, self.background(settings, image), light_background=settings.light_background,
                                   output_dtype=output_dtype, stats=stats)


class BlackTophatMethod(TophatMethod):
    name = "black-tophat"
    aliases = ()
    summary = "subtract each image from its grey closing: the black top-hat (dark objects on a light background)"
    Settings = BlackTophatSettings


register(TophatMethod())
register(BlackTophatMethod())
