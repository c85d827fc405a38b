"""Per-image background subtraction, done in the apply pass (no plate statistics needed).

``median``: subtract gpuillum.median_background (fast downsampled disk median, float32), rounded
and clamped to the image dtype. ``tophat``: gpuillum.white_tophat, the exact image minus its
grey opening, which stays in the image dtype. Both work on NumPy or CuPy images.
"""
from __future__ import annotations

from dataclasses import dataclass

from gpuillum._checks import check_choice, check_radius

BACKGROUND_METHODS = ("median", "tophat")


@dataclass(frozen=True)
class BackgroundSettings:
    """Which per-image background to subtract and its radius in pixels."""

    method: str
    radius: int

    def __post_init__(self):
        check_choice(self.method, "background", BACKGROUND_METHODS)
        check_radius(self.radius, "background_radius")


def cast_like(values, dtype, xp):
    """Float values to ``dtype``: round half to even and clamp for integer dtypes (never wrap)."""
    import numpy as np

    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return xp.clip(xp.rint(values), info.min, info.max).astype(dtype)


def subtract_background(image, settings: BackgroundSettings):
    """``image`` minus its background, same dtype and backend as ``image``."""
    from gpuillum.backend import get_array_module

    if settings.method == "tophat":
        from gpuillum.filters.morphology import white_tophat

        return white_tophat(image, settings.radius)
    from gpuillum.filters.median_background import median_background

    xp = get_array_module(image)
    background = median_background(image, settings.radius)
    return cast_like(image.astype(xp.float32) - background, image.dtype, xp)
