"""Test oracle: CellProfiler 4.2's CorrectIlluminationCalculate strung together from the real primitives.

The independent reference for gpuillum.methods.cellprofiler. It follows the CP4 module's
control flow (docs/cellprofiler.md sections 2-4), with CellProfiler's image container emulated
by ``CPImage`` so that float32 re-casts and mask inheritance (and with them the All-mode mask
drop) arise the way they do in CellProfiler rather than being restated. The numerical work is
done by the code CellProfiler itself runs: centrosome 1.3.4 (block, fit_polynomial,
smooth_with_function_and_mask, circular_gaussian_kernel, bg_compensate.backgr,
convex_hull_transform, grey_erosion/dilation, strel_disk), scikit-image's rank median and scipy.
Settings are read from a gpuillum ``CalculateSettings`` (plain attribute access only).
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.ndimage
import skimage.filters
import skimage.transform
import skimage.util
from centrosome import bg_compensate, cpmorphology, filter as cpfilter, smooth as cpsmooth


class CPImage:
    """CellProfiler's Image: float32 pixels, optional mask, mask inherited from a parent image."""

    def __init__(self, pixels, mask=None, parent=None):
        pixels = np.asanyarray(pixels)
        if pixels.dtype.kind == "u":
            scale = float(np.iinfo(pixels.dtype).max)
            pixels = pixels.astype(np.float32)
            pixels /= scale
        else:
            pixels = pixels.astype(np.float32)
        self.pixel_data = pixels
        self._mask = None if mask is None else np.asarray(mask, bool)
        self.parent = parent

    @property
    def has_mask(self) -> bool:
        return self._mask is not None or (self.parent is not None and self.parent.has_mask)

    @property
    def mask(self) -> np.ndarray:
        if self._mask is not None:
            return self._mask
        if self.parent is not None:
            return self.parent.mask
        return np.ones(self.pixel_data.shape, bool)


def filter_size(settings, shape) -> float:
    if settings.filter_size_method == "Manually":
        return settings.manual_size
    if settings.filter_size_method == "Object size":
        return settings.object_width * 2.35 / 3.5
    return min(30, float(np.max(shape)) / 40.0)


def preprocess(settings, orig: CPImage) -> CPImage:
    pixels = orig.pixel_data
    if settings.intensity == "Regular" or settings.smoothing == "Splines":
        if orig.has_mask:
            pixels = pixels.copy()  # CellProfiler zeroes the input in place; the oracle keeps the test data intact
            pixels[~orig.mask] = 0
            return CPImage(pixels, parent=orig)
        return orig
    labels, indexes = cpmorphology.block(pixels.shape, (settings.block_size, settings.block_size))
    if orig.has_mask:
        labels[~orig.mask] = -1
    min_block = np.zeros(pixels.shape)
    minima = cpmorphology.fixup_scipy_ndimage_result(scipy.ndimage.minimum(pixels, labels, indexes))
    min_block[labels != -1] = minima[labels[labels != -1]]
    return CPImage(min_block, parent=orig)


def apply_dilation(settings, image: CPImage, orig=None) -> CPImage:
    if not settings.dilate:
        return image
    radius = settings.dilation_radius
    kernel = cpsmooth.circular_gaussian_kernel(radius, radius * 3)

    def fn(x):
        return scipy.ndimage.convolve(x, kernel, mode="constant", cval=0)

    return CPImage(cpsmooth.smooth_with_function_and_mask(image.pixel_data, fn, image.mask), parent=orig)


def smooth_plane(settings, pixel_data, mask):
    sigma = filter_size(settings, pixel_data.shape) / 2.35
    method = settings.smoothing
    if method == "Fit Polynomial":
        return cpsmooth.fit_polynomial(pixel_data, mask)
    if method == "Gaussian Filter":

        def fn(x):
            return scipy.ndimage.gaussian_filter(x, sigma, mode="constant", cval=0)

        return cpsmooth.smooth_with_function_and_mask(pixel_data, fn, mask)
    if method == "Median Filter":
        radius = max(1, int(sigma + 0.5))
        strel = cpmorphology.strel_disk(radius)
        scaled = (pixel_data * 65535).astype(np.uint16)
        scaled *= mask
        with warnings.catch_warnings():  # skimage warns about 16-bit histograms: CellProfiler's cost
            warnings.simplefilter("ignore", UserWarning)
            return skimage.filters.median(scaled, strel, behavior="rank")
    if method == "Smooth to Average":
        mean = np.mean(pixel_data[mask])
        return np.ones(pixel_data.shape, pixel_data.dtype) * mean
    if method == "Splines":
        if settings.spline_automatic:
            shortest = min(pixel_data.shape)
            scale = 1 if shortest < 200 else float(shortest) / 200
            result = bg_compensate.backgr(pixel_data, mask, scale=scale)
        else:
            result = bg_compensate.backgr(
                pixel_data,
                mask,
                mode=settings.spline_mode,
                thresh=settings.spline_threshold,
                splinepoints=settings.spline_points,
                scale=settings.spline_rescale,
                maxiter=settings.spline_max_iterations,
                convergence=settings.spline_convergence,
            )
        result[mask] -= np.mean(result[mask])
        return result
    if method == "Convex Hull":
        image = cpmorphology.grey_erosion(pixel_data, 2, mask)
        image = cpfilter.convex_hull_transform(image, mask=mask)
        return cpmorphology.grey_dilation(image, 2, mask)
    raise ValueError(method)


def apply_smoothing(settings, image: CPImage, orig=None) -> CPImage:
    if settings.smoothing == "No smoothing":
        return image
    return CPImage(smooth_plane(settings, image.pixel_data, image.mask), parent=orig)


def apply_scaling(settings, image: CPImage, orig=None) -> CPImage:
    if settings.rescale == "No":
        return image
    pixel_data = image.pixel_data
    if image.has_mask:
        values = pixel_data[(pixel_data > 0) & image.mask]
    else:
        values = pixel_data[pixel_data > 0]
    if values.shape[0] == 0:
        return CPImage(pixel_data, parent=orig)
    values.sort()
    if settings.rescale == "Yes":
        robust_minimum = values[int(values.shape[0] * 0.02)]
        pixel_data = pixel_data.copy()
        pixel_data[pixel_data < robust_minimum] = robust_minimum
    else:
        robust_minimum = values[int(values.shape[0] / 2)]
    if robust_minimum == 0:
        return CPImage(pixel_data, parent=orig)
    return CPImage(pixel_data / robust_minimum, parent=orig)


def each_function(settings, pixels, mask=None) -> np.ndarray:
    """CellProfiler's "Each" run for one image (uint or float array, optional bool mask)."""
    orig = CPImage(pixels, mask)
    avg = preprocess(settings, orig)
    dilated = apply_dilation(settings, avg, orig)
    smoothed = apply_smoothing(settings, dilated, orig)
    return apply_scaling(settings, smoothed, orig).pixel_data


class Provider:
    """CellProfiler's CorrectIlluminationImageProvider: float32 sum, int32 count, compute on demand."""

    def __init__(self, settings):
        self.settings = settings
        self.image_sum = None
        self.mask_count = None

    def add_image(self, pixels, mask=None):
        image = CPImage(pixels, mask)
        pixel_data = preprocess(self.settings, image).pixel_data
        if self.image_sum is None:
            self.image_sum = np.zeros(pixel_data.shape, pixel_data.dtype)
            self.mask_count = np.zeros(pixel_data.shape, np.int32)
        if image.has_mask:
            m = image.mask
            self.image_sum[m] = self.image_sum[m] + pixel_data[m]
            self.mask_count[m] = self.mask_count[m] + 1
        else:
            self.image_sum = self.image_sum + pixel_data
            self.mask_count = self.mask_count + 1

    def calculate_image(self, keep_mask: bool = False) -> np.ndarray:
        """CP4: the stages get no parent image, so the count > 0 mask is lost after dilation or
        smoothing. ``keep_mask`` passes the average as parent instead: CellProfiler 5's semantics."""
        pixel_data = np.zeros(self.image_sum.shape, self.image_sum.dtype)
        mask = self.mask_count > 0
        pixel_data[mask] = self.image_sum[mask] / self.mask_count[mask]
        avg = CPImage(pixel_data, mask)
        parent = avg if keep_mask else None
        dilated = apply_dilation(self.settings, avg, parent)
        smoothed = apply_smoothing(self.settings, dilated, parent)
        return apply_scaling(self.settings, smoothed, parent).pixel_data


def all_function(settings, images, masks=None) -> np.ndarray:
    """CellProfiler's All-mode function over ``images`` (CP4 mask drop, or CP5 with compat "5")."""
    provider = Provider(settings)
    for index, pixels in enumerate(images):
        provider.add_image(pixels, None if masks is None else masks[index])
    return provider.calculate_image(keep_mask=settings.compat == "5")


def cp_resize(pixels, factor_or_shape) -> np.ndarray:
    """CellProfiler 4.2's Resize module, Bilinear (skimage.transform.resize order 1, symmetric edges)."""
    pixels = np.asarray(pixels, np.float32)
    if isinstance(factor_or_shape, tuple):
        shape = factor_or_shape
    else:
        shape = tuple(int(n) for n in np.round(np.array(pixels.shape) * factor_or_shape))
    top = np.max(np.abs(pixels))
    scaled = pixels / top if top > 0 else pixels
    out = skimage.transform.resize(scaled, shape, order=1, mode="symmetric")
    return (out * top if top > 0 else out).astype(np.float32)


def cp_resize_mask(mask, shape) -> np.ndarray:
    """CellProfiler 4.2's Resize of an image's mask (resize.py: order 0, mode "constant", img_as_bool)."""
    return skimage.util.img_as_bool(skimage.transform.resize(mask, shape, order=0, mode="constant"))


def calculate(settings, images, masks=None) -> np.ndarray:
    """The oracle's counterpart of gpuillum's ``calculate``: (n, H, W) for Each, (H, W) for All.

    ``settings.resize_factor`` != 1 wraps the module in CellProfiler Resize modules (the images
    and their masks).
    """
    factor = settings.resize_factor
    if factor != 1:
        shape = images[0].shape
        images = [cp_resize(CPImage(image).pixel_data, factor) for image in images]
        if masks is not None:
            masks = [None if mask is None else cp_resize_mask(mask, images[0].shape) for mask in masks]
    if settings.aggregation == "Each":
        out = np.stack([each_function(settings, image, None if masks is None else masks[i]) for i, image in enumerate(images)])
        return np.stack([cp_resize(f, shape) for f in out]) if factor != 1 else out
    out = all_function(settings, images, masks)
    return cp_resize(out, shape) if factor != 1 else out
