"""What every per-image background method shares: subtracting a background from its image.

A background method estimates the background of one image (a median, an opening, a rolling
ball, ...) in the image's raw units and subtracts it: ``image - background`` for bright objects
on a dark background, ``background - image`` with ``light_background`` (dark objects on a light
background, ImageJ's "light background"). The difference goes through the output dtype policy:
``same`` rounds and clamps it to the input type (negatives become 0 and are counted as clipped),
``signed`` keeps the negatives exactly, ``float32`` keeps everything.
"""
from __future__ import annotations

from ..backend import get_array_module
from ..output_dtype import OutputStats, cast_output


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
