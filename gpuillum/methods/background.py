"""What every per-image background method shares: its radius and pre-smoothing options, and
subtracting a background from its image.

A background method estimates the background of one image (a median, an opening, a rolling
ball, ...) in the image's raw units and subtracts it: ``image - background`` for bright objects
on a dark background, ``background - image`` with ``light_background`` (dark objects on a light
background) for the median and the top-hats; ImageJ's methods (rolling-ball,
sliding-paraboloid) keep ImageJ's own convention (gpuillum.methods.imagej_background). The
difference goes through the output dtype policy: ``same`` rounds and clamps it to the input type
(negatives become 0 and are counted as clipped), ``signed`` keeps the negatives exactly,
``float32`` keeps everything.

Pre-smoothing (``--presmooth mean|gaussian|none``, ``--sigma``): the background is computed from
a smoothed copy of the image and subtracted from the original, as ImageJ's Subtract Background
does with its 3x3 mean (gpuillum.filters.presmooth); noise then no longer pulls a background that
follows the darkest pixels (a rolling ball, an opening) below the noise-free level.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..errors import InvalidValue
from ..output_dtype import OutputStats, cast_output
from .base import choice_parser, setting

PRESMOOTH_HELP = ("smooth the image the background is computed from (it is subtracted from the original): mean (ImageJ's "
                  "3x3 mean), gaussian (with --sigma), none; default: none for median and the top-hats, ImageJ's 3x3 mean "
                  "for rolling-ball and sliding-paraboloid (none: ImageJ's 'disable smoothing')")


def radius_value(text: str):
    """``--radius``: an integer when the text is one ("15"), else a real number ("10.5"); the
    methods check what they accept (the median and the top-hats an integer, ImageJ's methods any
    number > 0.0001)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise InvalidValue(f"expected a number, got {text!r}") from None


def radius_setting(help: str):
    """The ``--radius R`` setting (required), shared by every per-image background method."""
    return setting(help=help, metavar="R", parse=radius_value)


WINDOW_FOOTPRINTS = ("disk", "imagej")
FOOTPRINT_HELP = ("disk: x^2 + y^2 <= R^2 (scikit-image's disk(R), default); imagej: ImageJ's circle "
                  "x^2 + y^2 <= floor(R^2) + 1, R may be fractional")


def footprint_setting(more_help: str = ""):
    """The ``--footprint disk|imagej`` setting of the median and the top-hats."""
    return setting("disk", choices=WINDOW_FOOTPRINTS, help=FOOTPRINT_HELP + more_help)


def check_window(radius, footprint: str) -> None:
    """The footprint (one of ``WINDOW_FOOTPRINTS``) and its radius: an integer >= 1 for a disk, a
    number in (0, 1000] (ImageJ's limit) for ImageJ's circle; a one-line error otherwise."""
    from .._checks import check_choice, check_radius

    check_choice(footprint, "footprint", WINDOW_FOOTPRINTS)
    if footprint != "imagej":
        check_radius(radius, "radius")
    elif isinstance(radius, bool) or not isinstance(radius, (int, float)) or not 0 < radius <= 1000:
        raise InvalidValue(f"radius: expected a number in (0, 1000] with footprint imagej, got {radius!r}")


def presmooth_setting(default):
    """The ``--presmooth mean|gaussian|none`` setting (``default`` None: the method decides)."""
    from ..filters.presmooth import PRESMOOTH

    return setting(default, help=PRESMOOTH_HELP, metavar="|".join(PRESMOOTH), parse=choice_parser(PRESMOOTH))


def sigma_setting():
    """The ``--sigma S`` setting of ``--presmooth gaussian``."""
    return setting(None, metavar="S", help="standard deviation in pixels of the Gaussian of --presmooth gaussian")


def check_presmooth(settings) -> None:
    """Check the ``presmooth`` and ``sigma`` fields of frozen settings (in ``__post_init__``); a
    one-line ValueError naming the options otherwise."""
    from ..filters.presmooth import PRESMOOTH, resolve_presmooth

    presmooth, sigma = settings.presmooth, settings.sigma
    if presmooth not in PRESMOOTH:
        raise InvalidValue(f"presmooth: expected one of {', '.join(map(repr, PRESMOOTH))}, got {presmooth!r}")
    if presmooth == "gaussian" and sigma is None:
        raise InvalidValue("sigma: presmooth 'gaussian' needs the Gaussian's sigma in pixels (--sigma S)")
    if presmooth != "gaussian" and sigma is not None:
        raise InvalidValue(f"sigma: only used with presmooth 'gaussian' (--presmooth gaussian), got sigma {sigma!r} "
                           f"with presmooth {presmooth!r}")
    resolve_presmooth(presmooth, sigma)  # sigma finite and > 0


def describe_presmooth(settings) -> str:
    """", presmoothed by ..." for a method's description, "" without pre-smoothing."""
    if settings.presmooth == "none":
        return ""
    return ", after a 3x3 mean" if settings.presmooth == "mean" else f", after a Gaussian of sigma {settings.sigma:g}"


def smoothed(image, settings):
    """The image a background is computed from: ``image`` itself, or its float32 pre-smoothed copy."""
    if settings.presmooth == "none":
        return image
    from ..filters.presmooth import presmooth

    return presmooth(image, settings.presmooth, sigma=settings.sigma)


def subtract_background(image, background, *, light_background: bool = False, output_dtype: str = "same",
                        stats: OutputStats | None = None):
    """``image - background`` (or ``background - image``) in float32, cast by the output dtype policy.

    Parameters
    ----------
    image : 2-D NumPy or CuPy array
    background : array of the image's shape and backend, in the image's units
    light_background : bool
        Dark objects on a light background: the foreground is ``background - image``.
    output_dtype : {"same", "float32", "signed"}
    stats : OutputStats, optional
        Counts the pixels the cast clips.

    Returns
    -------
    The foreground, on the image's backend.

    Examples
    --------
    >>> foreground = subtract_background(image, gi.median_filter(image, 15), output_dtype="signed")
    """
    xp = get_array_module(image)
    values = image.astype(xp.float32)
    values = background.astype(xp.float32, copy=False) - values if light_background else values - background
    return cast_output(values, image.dtype, output_dtype, stats=stats)
