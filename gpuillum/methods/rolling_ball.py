"""The ``rolling-ball`` method: ImageJ's Process > Subtract Background with the rolling ball.

``gpuillum run INPUT -o OUT --method rolling-ball --radius 50`` writes what ImageJ's
``run("Subtract Background...", "rolling=50")`` writes, bit for bit (8, 16 and 32-bit, every
option: ``--light-background``, ``--create-background``, ``--presmooth none`` for ImageJ's
"disable smoothing"); the output conventions are gpuillum.methods.imagej_background's.

``--ball skimage`` rolls scikit-image's ball instead (``skimage.restoration.rolling_ball``,
gi.rolling_ball): the exact ball at full resolution, where ImageJ shrinks the image and trims
the ball for radii above 10. It is offered because the lesson names both and Python users expect
scikit-image's numbers: with ``--presmooth none`` (its default) and ``--output-dtype float32``
the output is ``image - rolling_ball(image, radius)`` exactly; a light background inverts the
image as scikit-image's documentation does (``max - rolling_ball(max - image)``). Its cost grows
with radius^2 (~0.5 s for a 2160^2 image at radius 50 on one core, ~10x ImageJ's ball), which is
why ImageJ's ball stays the default.
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
from .._checks import check_choice

BALLS = ("imagej", "skimage")


@dataclass(frozen=True)
class RollingBallSettings:
    """ImageJ's dialog (radius, light background, smoothing, create background) and which ball rolls."""

    radius: float = radius_setting(RADIUS_HELP)
    light_background: bool = light_setting()
    presmooth: str | None = presmooth_setting(None)
    sigma: float | None = sigma_setting()
    create_background: bool = create_setting()
    ball: str = setting("imagej", choices=BALLS, help="imagej: ImageJ's ball (shrunk image, trimmed ball; default), bit for "
                        "bit ImageJ's Subtract Background; skimage: scikit-image's restoration.rolling_ball, the exact ball "
                        "at full resolution (no pre-smoothing by default; slower, its cost grows with radius^2)")

    def __post_init__(self):
        check_choice(self.ball, "ball", BALLS)
        check_imagej_settings(self, "mean" if self.ball == "imagej" else "none")


class RollingBallMethod(Method):
    name = "rolling-ball"
    aliases = ("rollingball", "subtract-background")
    summary = "subtract each image's rolling-ball background: ImageJ's Subtract Background bit for bit (or scikit-image's ball)"
    Settings = RollingBallSettings

    def scope(self, settings) -> str:
        return "image"

    def describe(self, settings: RollingBallSettings) -> str:
        what = "ImageJ rolling ball" if settings.ball == "imagej" else "scikit-image rolling ball"
        return describe_imagej(settings, what)

    def background_function(self, settings: RollingBallSettings, dtype):
        """``background_of(float32 slice) -> float32 background`` for images of ``dtype``."""
        from ..filters.presmooth import smooth_float

        if settings.ball == "imagej":
            from ..filters.rolling_ball_imagej import ImageJBall, rolling_ball_background

            ball = ImageJBall.of(float(settings.radius))
            return lambda pixels: rolling_ball_background(pixels, ball, settings.light_background, settings.presmooth,
                                                          settings.sigma)
        from ..filters.rolling_ball import rolling_ball

        dtype = np.dtype(dtype)
        exact_integers = settings.presmooth == "none" and dtype.kind == "u"

        def background_of(pixels):
            if exact_integers:  # scikit-image's own arithmetic on the integer image (its background truncates)
                source = pixels.astype(dtype)
                top = dtype.type(np.iinfo(dtype).max)
                background = top - rolling_ball(top - source, settings.radius) if settings.light_background else \
                    rolling_ball(source, settings.radius)
                return background.astype(np.float32)
            source = smooth_float(pixels, settings.presmooth, settings.sigma)
            if settings.light_background:
                return -rolling_ball(-source, settings.radius)
            return rolling_ball(source, settings.radius)

        return background_of

    def background(self, settings: RollingBallSettings, image, model=None):
        return imagej_background(image, self.background_function(settings, image.dtype))

    def correct(self, settings: RollingBallSettings, image, *, output_dtype: str = "same", stats=None):
        return imagej_correct(image, self.background_function(settings, image.dtype), settings, output_dtype, stats)


register(RollingBallMethod())
