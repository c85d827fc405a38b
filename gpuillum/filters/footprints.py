"""Flat structuring elements shared by the window kernels (median, morphology).

``"disk"`` is x^2 + y^2 <= r^2, the same set of pixels as ``skimage.morphology.disk(r)`` and
CellProfiler's ``strel_disk(r)``; ``"square"`` is the (2r+1)^2 box. Both are described by their
chords: for each row offset dy in [-r, r], the half-width of the footprint on that row.
ImageJ's RankFilters use their own circle, ``imagej_half_widths`` (docs/imagej.md section 11).
"""
from __future__ import annotations

import math

import numpy as np

from .._checks import check_choice, check_radius

FOOTPRINTS = ("disk", "square")


def covering_radius(radius: int, shape, footprint: str = "disk") -> int:
    """``radius``, or the smallest radius whose footprint already reaches every pixel of a ``shape``
    image from every other pixel, when that is smaller (at least 1).

    Where only in-bounds pixels count (the borders-ignored mode), a larger footprint sees the same
    pixels, so results are unchanged while a radius of 10^9 costs no more than the image's own size.
    """
    height, width = shape
    if footprint == "square":
        full = max(height, width) - 1
    else:  # the farthest offset is a corner to corner one: ceil(sqrt((H-1)^2 + (W-1)^2))
        farthest = (height - 1) ** 2 + (width - 1) ** 2
        full = math.isqrt(farthest - 1) + 1 if farthest else 0
    return max(1, min(int(radius), full))


def chord_half_widths(radius: int, footprint: str = "disk") -> np.ndarray:
    """Half-width of the footprint on each row offset dy = -r..r (int64 array of length 2r+1).

    The footprint covers (dy, dx) with |dx| <= half_width[dy + r]. Computed with integers, so the
    disk is exactly x^2 + y^2 <= r^2 with no floating-point rounding at the rim.
    """
    radius = check_radius(radius)
    check_choice(footprint, "footprint", FOOTPRINTS)
    dy = np.arange(-radius, radius + 1, dtype=np.int64)
    if footprint == "square":
        return np.full(dy.shape, radius, dtype=np.int64)
    remaining = radius * radius - dy * dy
    half = np.floor(np.sqrt(remaining.astype(np.float64))).astype(np.int64)
    # correct any off-by-one of the float square root so half^2 <= remaining < (half+1)^2
    half -= (half * half > remaining).astype(np.int64)
    half += ((half + 1) * (half + 1) <= remaining).astype(np.int64)
    return half


def footprint_array(radius: int, footprint: str = "disk") -> np.ndarray:
    """The footprint as a (2r+1, 2r+1) boolean array."""
    half = chord_half_widths(radius, footprint)
    dx = np.arange(-radius, radius + 1)
    return np.abs(dx)[None, :] <= half[:, None]


def imagej_half_widths(radius: float) -> np.ndarray:
    """Half-widths of ImageJ's circular kernel (RankFilters.makeLineRadii) for a real ``radius``
    >= 0, rows dy = -k..k: radii in [1.5, 1.75) become 1.75 and [2.5, 2.85) become 2.85, then
    r2 = int(radius^2) + 1, k = int(sqrt(r2 + 1e-10)), half-width int(sqrt(r2 - dy^2 + 1e-10)).
    The kernel is {x^2 + y^2 <= floor(radius^2) + 1}: 5 points for radius 0.5, 9 for 1, 13 for 1.5."""
    if 1.5 <= radius < 1.75:
        radius = 1.75
    elif 2.5 <= radius < 2.85:
        radius = 2.85
    r2 = int(radius * radius) + 1
    reach = int(math.sqrt(r2 + 1e-10))
    return np.asarray([int(math.sqrt(r2 - dy * dy + 1e-10)) for dy in range(-reach, reach + 1)], dtype=np.int64)
