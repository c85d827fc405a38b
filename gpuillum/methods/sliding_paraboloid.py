"""The ``sliding-paraboloid`` method: ImageJ's Subtract Background with "sliding paraboloid".

``--method sliding-paraboloid --radius R`` is ``run("Subtract Background...", "rolling=R sliding")``
of the current ImageJ (1.54t4 and later: its corner correction and NaN handling);
``--legacy`` gives ImageJ's results before 1.54t4 (1.53t, Fiji 1.54f), bit for bit. The 3x3
pre-smoothing is ImageJ's (a 3x3 maximum, its mean shift, then the 3x3 mean); ``--presmooth
none`` is "disable smoothing", ``--presmooth gaussian --sigma S`` a Gaussian instead (no maximum,
no shift). The output conventions are gpuillum.methods.imagej_background's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import register
from .background import presmooth_setting, radius_setting, sigma_setting
from .base import Method, setting
from .imagej_background import (
    RADIUS_HELP,
    check_imagej_settings,
    create_setting,
    describe_imagej,
    imagej_background,
    imagej_correct,
    light_setting,
)


@dataclass(frozen=True)
class SlidingParaboloidSettings:
    """ImageJ's dialog with "sliding paraboloid", the corner correction and the ImageJ version's rules."""

    radius: float = radius_setting(RADIUS_HELP + "; the paraboloid's curvature at its apex is 1 / (2 R)")
    light_background: bool = light_setting()
    presmooth: str = presmooth_setting("mean")
    sigma: float | None = sigma_setting()
    create_background: bool = create_setting()
    correct_corners: bool = setting(True, help="ImageJ's corner correction (always on in ImageJ; --no-correct-corners: off)")
    legacy: bool = setting(False, help="the corner rules of ImageJ before 1.54t4 (1.53t, Fiji 1.54f), bit for bit; "
                                       "default: the current ImageJ's")

    def __post_init__(self):
        check_imagej_settings(self, "mean")


class SlidingParaboloidMethod(Method):
    name = "sliding-paraboloid"
    summary = "subtract each image's sliding-paraboloid background: ImageJ's Subtract Background with 'sliding paraboloid'"
    Settings = SlidingParaboloidSettings

    def scope(self, settings) -> str:
        return "image"

    def describe(self, settings: SlidingParaboloidSettings) -> str:
        text = describe_imagej(settings, "ImageJ sliding paraboloid")
        text += ", corners not corrected" * (not settings.correct_corners)
        return text + (", ImageJ before 1.54t4" if settings.legacy else "")

    def background_function(self, settings: SlidingParaboloidSettings):
        """``background_of(float32 slice) -> float32 background``."""
        from ..filters.sliding_paraboloid import paraboloid_background

        radius = np.float32(settings.radius)  # ImageJ passes (float)radius
        return lambda pixels: paraboloid_background(pixels, radius, settings.light_background, settings.presmooth,
                                                    settings.sigma, settings.correct_corners, settings.legacy)

    def background(self, settings: SlidingParaboloidSettings, image, model=None):
        return imagej_background(image, self.background_function(settings))

    def correct(self, settings: SlidingParaboloidSettings, image, *, output_dtype: str = "same", stats=None):
        from ..filters.sliding_paraboloid import check_legacy_input

        check_legacy_input(image, settings.legacy)
        return imagej_correct(image, self.background_function(settings), settings, output_dtype, stats)


register(SlidingParaboloidMethod())
