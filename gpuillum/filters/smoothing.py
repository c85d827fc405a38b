"""Gaussian smoothing as CellProfiler does it: a normalised convolution with zero padding.

CellProfiler's "Gaussian Filter" smoothing (centrosome ``smooth_with_function_and_mask``) computes
``gaussian(x * m) / (gaussian(m) + eps)`` with ``scipy.ndimage.gaussian_filter(mode="constant",
cval=0)`` (truncate 4) even when the image has no mask, i.e. with an all-True mask: dividing by the
Gaussian of the mask undoes the darkening that zero padding causes near the borders. gpuillum keeps
that definition for ``mask=None`` too. As in CellProfiler the numerator is filtered in float32 and
the denominator in float64; the quotient is rounded once to float32.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_image, check_mask
from ..backend import get_array_module, get_ndimage, on_input_device
from .bands import along_axis
from ..errors import InvalidValue

SMOOTH_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
TRUNCATE = 4.0


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not np.isfinite(sigma) or sigma <= 0:
        raise InvalidValue(f"sigma: expected a finite number > 0, got {sigma!r}")
    return float(sigma)


def _truncate(sigma: float, length: int) -> float:
    """SciPy's ``truncate`` (kernel reach in sigmas) for a zero-padded pass along ``length`` pixels:
    4, or a reach of ``length`` pixels when 4 sigma is longer. Taps that far out never meet a pixel,
    so the cut only renormalises the kernel, which the normalised convolution divides out (to float
    rounding), and a huge sigma costs no more than the image (SciPy would allocate 8 sigma taps)."""
    return min(TRUNCATE, length / sigma)


def _gaussian_1d(ndi, sigma: float, dtype):
    """A zero-padded 1-D Gaussian pass ``(image, axis) -> image`` summing in float64, result in ``dtype``."""
    def gaussian(image, axis):
        truncate = _truncate(sigma, image.shape[axis])
        summed = ndi.gaussian_filter1d(image.astype(np.float64), sigma, axis=axis, mode="constant", cval=0, truncate=truncate)
        return summed.astype(dtype, copy=False)
    return gaussian


def gaussian_float64(image, sigma: float):
    """``scipy.ndimage.gaussian_filter(image, sigma, mode="constant")`` of a 2-D image in float64,
    the same bytes while 4 sigma fits in the image (else see ``_truncate``), with each pass split
    across the CPU cores (or on the GPU for CuPy)."""
    xp = get_array_module(image)
    ndi = get_ndimage(xp)
    gaussian = _gaussian_1d(ndi, sigma, np.float64)
    image = image.astype(xp.float64, copy=False)  # bands write into an array of the input dtype
    for axis in range(2):
        image = along_axis(gaussian, image, axis)
    return image


def _gaussian_float32(pixels, sigma: float, ndi):
    """SciPy's separable Gaussian of a float32 image on either backend: each 1-D pass sums in
    float64 and rounds to float32 (cupyx alone would sum a float32 input in float32)."""
    gaussian = _gaussian_1d(ndi, sigma, np.float32)
    for axis in range(pixels.ndim):
        pixels = along_axis(gaussian, pixels, axis)
    return pixels


@on_input_device
def gaussian_filter(image, sigma: float, *, mask=None):
    """Mask-normalised Gaussian smoothing of ``image`` (as float32), returned as float32.

    ``mask`` (None = every pixel) selects the pixels that contribute; the result is defined
    everywhere, masked pixels included, as in CellProfiler.
    """
    image = check_image(image, dtypes=SMOOTH_DTYPES)
    sigma = _check_sigma(sigma)
    mask = check_mask(mask, image)
    xp = get_array_module(image)
    ndi = get_ndimage(xp)
    pixels = image.astype(xp.float32)
    if mask is None:
        numerator = _gaussian_float32(pixels, sigma, ndi)
        # the Gaussian of an all-ones image is the outer product of the two 1-D edge profiles
        profiles = [
            ndi.gaussian_filter1d(xp.ones(n, dtype=xp.float64), sigma, mode="constant", cval=0, truncate=_truncate(sigma, n))
            for n in image.shape
        ]
        weight = profiles[0][:, None] * profiles[1][None, :]
    else:
        numerator = _gaussian_float32(xp.where(mask, pixels, np.float32(0)), sigma, ndi)
        weight = gaussian_float64(mask.astype(xp.float64), sigma)
    return (numerator / (weight + np.finfo(np.float64).eps)).astype(xp.float32)
