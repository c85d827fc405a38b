"""Line profiles: the values of an image along a row, a column or a straight line (ImageJ's Plot Profile).

A row or a column gives the pixels themselves. A line from (x0, y0) to (x1, y1) (x to the right,
y down, in pixels) is sampled as ImageJ's ``ImageProcessor.getLine`` samples a straight line
selection for Plot Profile: n = round(length) steps of length / n from the start (n + 1 points,
n for a full-width row or full-height column), each point's value interpolated bilinearly
between its four pixels (``getInterpolatedValue``: beyond the edge the nearest edge pixel, a
point more than a pixel outside the image reads 0). tests/test_profile.py compares both with ImageJ's
``getProfile()``.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy
from ..errors import InvalidType, InvalidValue


@dataclass(frozen=True)
class LineProfile:
    """Where a profile runs: the sample points (``x``, ``y``, float64 pixel coordinates), their
    ``distance`` from the start, and a ``description`` such as "row 128"."""

    x: np.ndarray
    y: np.ndarray
    distance: np.ndarray
    description: str
    on_pixels: bool  # a row or a column: the samples are pixels, no interpolation

    def values(self, image) -> np.ndarray:
        """The float64 values of a 2-D ``image`` (NumPy or CuPy) at the sample points.

        Examples
        --------
        >>> profile = line_profile(image.shape, row=128)
        >>> before, after = profile.values(raw), profile.values(corrected)
        """
        if getattr(image, "ndim", None) != 2:
            raise InvalidValue(f"image: expected a 2-D array, got shape {getattr(image, 'shape', None)}")
        pixels = to_numpy(image)
        if self.on_pixels:
            return pixels[self.y.astype(np.intp), self.x.astype(np.intp)].astype(np.float64)
        return _interpolated(pixels.astype(np.float64), self.x, self.y)


def line_profile(shape, *, row=None, column=None, line=None) -> LineProfile:
    """The profile along ``row`` N, ``column`` N or ``line`` (x0, y0, x1, y1) of an image of ``shape``.

    Parameters
    ----------
    shape : (height, width) of the image.
    row, column : int, a row (y) or column (x) index inside the image.
    line : four numbers x0, y0, x1, y1 (pixels; x to the right, y down).

    Returns
    -------
    LineProfile

    Examples
    --------
    >>> profile = line_profile((256, 256), line=(0, 0, 255, 255))
    >>> len(profile.distance)
    362
    """
    height, width = (int(side) for side in shape)
    given = [name for name, value in (("row", row), ("column", column), ("line", line)) if value is not None]
    if len(given) != 1:
        raise InvalidValue(f"profile: give exactly one of row, column, line, got {', '.join(given) or 'none'}")
    if row is not None or column is not None:
        index, name, limit = (row, "row", height) if row is not None else (column, "column", width)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= index < limit:
            raise InvalidValue(f"{name}: expected an integer in [0, {limit - 1}] (the image is {height} x {width}), got {index!r}")
        along = np.arange(width if row is not None else height, dtype=np.float64)
        fixed = np.full(along.shape, float(index))
        x, y = (along, fixed) if row is not None else (fixed, along)
        return LineProfile(x, y, along.copy(), f"{name} {index}", True)
    if isinstance(line, (str, bytes)) or not hasattr(line, "__len__") or len(line) != 4:
        raise InvalidType(f"line: expected four numbers x0, y0, x1, y1, got {line!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in line):
        raise InvalidValue(f"line: expected four finite numbers x0, y0, x1, y1, got {line!r}")
    x0, y0, x1, y1 = (float(v) for v in line)
    dx, dy = x1 - x0, y1 - y0
    steps = math.floor(math.hypot(dx, dy) + 0.5)  # Java's Math.round
    x_step, y_step = (dx / steps, dy / steps) if steps else (0.0, 0.0)
    count = steps if (x_step == 0 and steps == height) or (y_step == 0 and steps == width) else steps + 1
    # ImageJ adds the step to a running coordinate: cumulative sums reproduce its roundings
    x = np.cumsum(np.concatenate([[x0], np.full(count - 1, x_step)]))
    y = np.cumsum(np.concatenate([[y0], np.full(count - 1, y_step)]))
    distance = np.arange(count, dtype=np.float64) * math.hypot(x_step, y_step)
    text = f"line ({x0:g}, {y0:g}) - ({x1:g}, {y1:g})"
    return LineProfile(x, y, distance, text, False)


def _interpolated(pixels: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ImageJ's getInterpolatedValue at every (x, y): 0 more than a pixel outside the image, else
    bilinear interpolation between the four pixels around the point (upper row first), those
    beyond the edge replaced by the nearest edge pixel."""
    height, width = pixels.shape
    outside = (x < -1) | (x >= width) | (y < -1) | (y >= height)
    x_base, y_base = np.floor(x), np.floor(y)
    x_fraction, y_fraction = x - x_base, y - y_base
    left, right = (np.clip(x_base + k, 0, width - 1).astype(np.intp) for k in (0, 1))
    upper, lower = (np.clip(y_base + k, 0, height - 1).astype(np.intp) for k in (0, 1))
    upper_values = pixels[upper, left] + x_fraction * (pixels[upper, right] - pixels[upper, left])
    lower_values = pixels[lower, left] + x_fraction * (pixels[lower, right] - pixels[lower, left])
    return np.where(outside, 0.0, upper_values + y_fraction * (lower_values - upper_values))
