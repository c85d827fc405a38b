"""What the ``rolling-ball`` and ``sliding-paraboloid`` methods share: ImageJ's Subtract Background
frame under the output dtype policy, and the options ImageJ's dialog has.

Output conventions (ImageJ's, docs/imagej.md sections 4-5), for an image of any type:

* ``same``: what ImageJ writes. 8/16-bit: ``(image - background) + 0.5`` (``+ max + 0.5`` with a
  light background, so the background becomes white and objects dark), clamped to the type's
  range and truncated; ``--create-background``: ``background + 0.5``, clamped, truncated.
  32-bit: the float32 difference (or background), unrounded.
* ``float32``: ``image - background`` (or the background) unrounded: ImageJ's 32-bit result,
  what ImageJ gives for the image converted to 32-bit first. Negatives are kept, also with a
  light background (dark objects below 0, the background near 0, no offset).
* ``signed``: that float32 rounded half to even into int16 (8-bit input) or int32 (16-bit).

Pixels clamped by ``same`` are counted like every method's (gpuillum.output_dtype.OutputStats).
"""
from __future__ import annotations

from ..backend import get_array_module
from ..output_dtype import OutputStats, cast_output
from .base import setting

LIGHT_HELP = ("ImageJ's 'light background': dark objects on a light background; the background is found from above and "
              "8/16-bit outputs are max + image - background (objects dark on white), as ImageJ writes them")
CREATE_HELP = "write the background instead of subtracting it (ImageJ's 'create background (don't subtract)')"
RADIUS_HELP = ("ImageJ's 'rolling ball radius' in pixels (> 0.0001, may be fractional): at least the radius of the largest "
               "object to keep")


def light_setting():
    return setting(False, help=LIGHT_HELP)


def create_setting():
    return setting(False, help=CREATE_HELP)


def check_imagej_settings(settings, default_presmooth: str) -> None:
    """Check the radius and pre-smoothing of ImageJ's dialog (in frozen settings' ``__post_init__``);
    a ``presmooth`` of None becomes ``default_presmooth``."""
    from ..filters.subtract_background import check_imagej_radius
    from .background import check_presmooth

    check_imagej_radius(settings.radius)
    if settings.presmooth is None:
        object.__setattr__(settings, "presmooth", default_presmooth)
    check_presmooth(settings)


def describe_imagej(settings, what: str) -> str:
    """The description of an ImageJ method's settings: ``what``, radius, smoothing, options."""
    smoothing = ("ImageJ's 3x3 mean" if settings.presmooth == "mean" else "no smoothing" if settings.presmooth == "none"
                 else f"Gaussian sigma {settings.sigma:g}")
    parts = [f"{what}, radius {settings.radius:g}", smoothing]
    parts += ["light background"] * settings.light_background + ["creates the background"] * settings.create_background
    return ", ".join(parts)


def imagej_correct(image, background_of, settings, output_dtype: str, stats: OutputStats | None):
    """``image`` through ImageJ's frame (gpuillum.filters.subtract_background) with
    ``background_of(float32 slice) -> float32 background``, cast by the output dtype policy (see
    the module docstring)."""
    from ..filters.subtract_background import subtract_background

    frame = dict(light_background=settings.light_background, create_background=settings.create_background)
    if output_dtype == "same":
        return subtract_background(image, background_of, output_dtype="same", stats=stats, **frame)
    values = subtract_background(image, background_of, output_dtype="float32", **frame)
    return cast_output(values, image.dtype, output_dtype, stats=stats)


def imagej_background(image, background_of):
    """The float32 background ``background_of`` computes for a 2-D ``image`` (None where ImageJ
    computes none: an image too narrow for the shrunk ball)."""
    from ..filters.subtract_background import ImageJFailure

    try:
        return background_of(image.astype(get_array_module(image).float32))
    except ImageJFailure:
        return None
