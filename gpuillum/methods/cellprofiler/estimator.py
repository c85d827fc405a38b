"""CellProfiler's CorrectIlluminationCalculate, setting for setting, on NumPy or CuPy.

The parity target is CellProfiler 4.2 (``compat="4.2"``, the production version; the spec is
docs/cellprofiler.md sections 3-4): every stage re-cast to float32, the All-mode mask drop, the
dilation kernel's sigma^2 bug, the truncating ``uint16(x * 65535)`` median quantisation. With
``compat="5"`` the ``count > 0`` mask is kept through dilation, smoothing and rescaling, as
CellProfiler 5 does (intermediates stay float32 here; CP5 keeps some in float64, a difference at
float32 rounding level).

Pipeline: ``IlluminationAccumulator.add`` converts each image to float32 in [0, 1] like
CellProfiler's image container, optionally resizes it (``resize_factor``, an emulation of the
Resize module production pipelines put around the module), preprocesses it (Regular: masked
pixels -> 0; Background: CellProfiler block minima) and adds it to a sum (exact integers for
uint8/uint16 images, float64 otherwise) and a pixel count on the image's backend. ``finalize``
averages (valid = count > 0), dilates, smooths, rescales and resizes back. CuPy inputs stay on
the GPU for every stage except Splines and Convex Hull, whose kernels may round-trip through the
host (see their modules).

"All: First cycle" and "All: Across cycles" give the same function: both average the same images
of a group and smooth the average. In CellProfiler they differ only in *when* the work happens
(First cycle runs the upstream pipeline for the whole group before the first cycle so the
function is available to every cycle; Across cycles adds one image per cycle and computes at the
end). Here a group is always reduced first and smoothed once.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..._checks import check_image, check_mask, check_shape
from ...backend import device_of, get_array_module, is_cupy_array, same_backend, to_numpy
from ..reduce import ExactSum
from .settings import INPUT_DTYPES, CalculateSettings, check_settings
from .stages import dilate, median_radius, median_table, rescale, rescale_table, smooth, to_cellprofiler_float
from ...errors import InvalidType, InvalidValue



def _check_some_valid(valid) -> None:
    if valid is not None and not bool(valid.any()):
        raise InvalidValue("masks: every pixel is masked in every image; nothing to average")


class IlluminationAccumulator:
    """Streaming CorrectIlluminationCalculate for one group (plate) and channel.

    ``add`` images one at a time in constant memory, ``merge`` partial accumulators (exact
    elementwise adds), ``finalize`` once. The sum lives on the image's backend and is exact for
    integer images (the raw uint8/uint16 values in a uint32 sum, int64 once it could overflow;
    divided by the dtype maximum only in the average) and float64 otherwise (float input, or
    any ``resize_factor`` != 1); mixing kinds converts the exact sum to float64. CellProfiler
    itself sums float32, so these averages are at least as accurate. Pixel counts: a scalar for
    unmasked images plus an int32 array once a mask appears. With ``aggregation="Each"`` the
    accumulator holds exactly one image. Pickles with NumPy state (unpickled: on the CPU).

    With ``resize_factor`` != 1, unmasked Regular images are summed at full resolution and the
    average is resized once: CellProfiler's bilinear Resize is linear and its clip to the input
    range never binds, so resizing the average equals averaging the resized images up to float32
    rounding, for one integer add per image instead of one resize. The first masked image (or
    Background preprocessing, which is not linear) switches to resizing every image.
    """

    def __init__(self, settings: CalculateSettings | None = None):
        self.settings = check_settings(CalculateSettings() if settings is None else settings)
        self.shape = None  # shape of the input images
        # sum of preprocessed pixels (working shape): integers with the dtype maximum as their scale
        # (CellProfiler floats = sum / scale), or float64 CellProfiler floats
        self._total = ExactSum()
        self._unmasked = 0  # images added without a mask: they count at every pixel
        self._masked_count = None  # int32 per-pixel count from masked images (allocated on the first mask)
        self._deferred = False  # the sum is at full resolution; resize its average at the end

    # -- accumulation -------------------------------------------------------------------------
    def _prepare(self, image, mask):
        """Check and resize; returns (shape, pixels, mask, deferred). Pixels stay uint8/uint16 when the
        sum can be exact (no per-image resize), else become CellProfiler float32."""
        image = check_image(image, "image", dtypes=INPUT_DTYPES, allow_nan=True)
        xp = get_array_module(image)
        mask = check_mask(mask, image)
        shape = tuple(image.shape)
        if self.shape is not None:
            if shape != self.shape:
                raise InvalidValue(f"image: shape {shape} differs from the shape {self.shape} of the images already added")
            if is_cupy_array(image) != is_cupy_array(self._total.total):
                raise InvalidType("image: mixes NumPy and CuPy arrays; give every image as the same kind of array as the first")
        factor = self.settings.resize_factor
        if factor != 1.0 and self.shape is None:  # a setting too small for these images: say which
            from ...filters.resample import cellprofiler_resize_shape

            cellprofiler_resize_shape(shape, factor, "resize_factor")
        if image.dtype.kind == "f":
            image = _zero_masked_non_finite(image, mask, factor != 1.0, xp)
        linear = self.settings.intensity == "Regular" or self.settings.smoothing == "Splines"
        defer = factor != 1.0 and mask is None and linear and (self._total.total is None or self._deferred)
        if factor != 1.0 and not defer and self._deferred:
            self._undefer()
        if image.dtype.kind == "u" and (factor == 1.0 or defer):
            return shape, image, mask, defer
        pixels = to_cellprofiler_float(image)
        if factor != 1.0 and not defer:
            from ...filters.resample import resize_bilinear, resize_mask

            pixels = resize_bilinear(pixels, self.settings.resize_factor)
            if mask is not None:  # CellProfiler's Resize takes the mask's nearest neighbours
                mask = resize_mask(mask, tuple(pixels.shape))
        return shape, pixels, mask, defer

    def _preprocess(self, pixels, mask):
        """Regular: masked pixels -> 0. Background: CellProfiler block minima (masked -> 0).
        Either works on raw integers too: the /max scaling is monotonic and exact afterwards."""
        settings = self.settings
        if settings.intensity == "Regular" or settings.smoothing == "Splines":
            return pixels if mask is None else get_array_module(pixels).where(mask, pixels, pixels.dtype.type(0))
        from ...filters.blocks import block_minimum

        return block_minimum(pixels, settings.block_size, mask=mask)

    @property
    def count(self) -> int:
        """Number of images added."""
        return self._total.count

    def _float_sum(self):
        """The sum in CellProfiler float units, float64."""
        return self._total.in_units()

    def _working_sum(self):
        """The float64 sum at working (resized) size."""
        total = self._float_sum()
        if not self._deferred:
            return total
        from ...filters.resample import resize_bilinear

        xp = get_array_module(total)
        average = (total / self.count).astype(xp.float32)
        return resize_bilinear(average, self.settings.resize_factor).astype(xp.float64) * self.count

    def _undefer(self):
        """Switch a full-resolution sum to the resized working size (before a masked image)."""
        self._total.replace(self._working_sum())
        self._deferred = False

    def add(self, image, mask=None) -> "IlluminationAccumulator":
        """Add one 2-D image (uint8, uint16, float32 or float64; NumPy or CuPy) and its optional mask."""
        if not self.settings.is_all and self.count:
            raise InvalidValue("add: an 'Each' accumulator holds one image; use calculate() or one accumulator per image")
        with device_of(image):
            shape, pixels, mask, deferred = self._prepare(image, mask)
            self._deferred = deferred
            xp = get_array_module(pixels)
            processed = self._preprocess(pixels, mask)  # zero wherever the mask is False
            scale = int(np.iinfo(processed.dtype).max) if processed.dtype.kind == "u" else None
            self._total.add(processed, scale, keep=not self.settings.is_all)  # an "Each" sum is never added to: no copy
            if mask is None:
                self._unmasked += 1
            else:
                if self._masked_count is None:
                    self._masked_count = xp.zeros(processed.shape, xp.int32)
                self._masked_count += mask
            self.shape = shape
        return self

    def merge(self, other: "IlluminationAccumulator") -> "IlluminationAccumulator":
        """Add another accumulator's images to this one (same settings and shape); returns self.

        A partial from another backend is moved to this one's backend (one array copy).
        """
        if not isinstance(other, IlluminationAccumulator):
            raise InvalidType(f"other: expected an IlluminationAccumulator, got {type(other).__name__}")
        if other.settings != self.settings:
            raise InvalidValue("other: accumulators with different settings cannot be merged")
        if not self.settings.is_all and self.count + other.count > 1:
            raise InvalidValue("other: 'Each' accumulators hold one image each and cannot be merged")
        if other.count == 0:
            return self
        if self.count and other.shape != self.shape:
            raise InvalidValue(f"other: image shape {other.shape} differs from {self.shape}")
        like = other._total.total if self._total.total is None else self._total.total
        with device_of(like):  # partials summed in worker threads may arrive with another device current
            if self.count and self._deferred != other._deferred:
                if self._deferred:
                    self._undefer()
                self._total.add(same_backend(other._working_sum(), like), None, other.count)
            else:
                self._deferred = other._deferred
                self._total.merge(other._total)
            if other._masked_count is not None:
                counts = same_backend(other._masked_count, like)
                self._masked_count = counts.copy() if self._masked_count is None else self._masked_count + counts
        self._unmasked += other._unmasked
        self.shape = other.shape
        return self

    def to(self, device) -> "IlluminationAccumulator":
        """Move the state to ``device`` (a ``gpuillum.backend.Device`` or "cpu" / "gpu" / "cuda:N");
        returns self. Use it to finalize a merged (unpickled, NumPy) accumulator on a GPU."""
        from ...backend import resolve_device

        device = resolve_device(device)
        if self._total.total is not None:
            self._total.to(device)
            if self._masked_count is not None:
                self._masked_count = device.asarray(self._masked_count)
        return self

    # -- pickling with NumPy state --------------------------------------------------------------
    def __getstate__(self):
        state = dict(self.__dict__)
        if state["_masked_count"] is not None:
            state["_masked_count"] = to_numpy(state["_masked_count"])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)

    # -- the function ---------------------------------------------------------------------------
    @property
    def pixel_count(self):
        """Per-pixel number of unmasked contributions (int32, working shape), or None before the first add."""
        if self._total.total is None:
            return None
        xp = get_array_module(self._total.total)
        if self._masked_count is None:
            return xp.full(self._total.total.shape, self._unmasked, xp.int32)
        return self._masked_count + xp.int32(self._unmasked)

    def _valid_mask(self):
        """Pixels some image contributed to (count > 0); None when that is every pixel."""
        if self._masked_count is None or self._unmasked:
            return None
        valid = self._masked_count > 0
        return None if bool(valid.all()) else valid

    def average(self):
        """The averaged image (float32, 0 where no image contributed) and the valid mask (count > 0,
        None when every pixel has a contribution). The division is float64, as CellProfiler's."""
        if self.count == 0:
            raise InvalidValue("finalize: no images were added to this accumulator; add() at least one first")
        xp = get_array_module(self._total.total)
        total = self._float_sum()
        if self._deferred:  # unmasked images only
            from ...filters.resample import resize_bilinear

            return resize_bilinear((total / self.count).astype(xp.float32), self.settings.resize_factor), None
        if self._masked_count is None:
            return (total / self._unmasked).astype(xp.float32), None
        if self._unmasked:
            return (total / (self._masked_count + self._unmasked)).astype(xp.float32), None
        valid = self._valid_mask()
        average = total / xp.maximum(self._masked_count, 1)
        if valid is not None:
            average = xp.where(valid, average, 0.0)
        return average.astype(xp.float32), valid

    def finalize(self, shape=None):
        """The illumination function, float32 2-D on the accumulator's backend.

        average -> dilate -> smooth -> rescale -> resize back to ``shape`` (default: the input
        image shape). Mask rules (cellprofiler.md 4.2): "Each" and compat "5" use the valid mask
        at every stage; CellProfiler 4.2's All modes drop it after dilation or smoothing.
        """
        with device_of(self._total.total):
            if self._median_of_raw_values_applies():
                pixels = self._median_of_raw_values()
            else:
                pixels = self._function()
            xp = get_array_module(pixels)
            target = self.shape if shape is None else check_shape(shape)
            if tuple(pixels.shape) != target:
                from ...filters.resample import resize_bilinear

                pixels = resize_bilinear(pixels, target)
            return xp.ascontiguousarray(pixels, dtype=xp.float32)

    def _function(self):
        """average -> dilate -> smooth -> rescale, at working size."""
        settings = self.settings
        average, valid = self.average()  # valid None: every pixel (same results as an all-True mask)
        _check_some_valid(valid)
        keep_mask = settings.compat == "5" or not settings.is_all
        pixels = average
        if settings.dilate:
            pixels = dilate(pixels, valid, settings.dilation_radius)
        smooth_mask = valid if keep_mask or not settings.dilate else None
        pixels = smooth(pixels, smooth_mask, settings)
        no_smoothing = settings.smoothing == "No smoothing"
        rescale_mask = valid if keep_mask or (not settings.dilate and no_smoothing) else None
        return rescale(pixels, rescale_mask, settings.rescale)

    def _median_of_raw_values_applies(self) -> bool:
        """"Each" on an integer image, nothing between the average and the Median Filter but the
        float conversion (no dilation, no resize); every stage keeps the mask ("Each" rules)."""
        settings = self.settings
        return (not settings.is_all and self.count == 1 and self._total.scale is not None and not self._deferred
                and not settings.dilate and settings.smoothing == "Median Filter" and settings.resize_factor == 1.0)

    def _median_of_raw_values(self):
        """``_function`` for one integer image and Median Filter, bit-identical to the float path
        without its float passes (~8 of ~33 ms per 1080^2 image; "Each" mode runs it on every
        image): the raw value -> CellProfiler float -> uint16 quantisation chain is a
        non-decreasing map and a median commutes with such a map, so the exact median of the raw
        integers (masked pixels already 0, which maps to 0) is looked up in ``median_table`` and
        rescaled through it."""
        from ...filters.median import median_filter, median_filter_counted

        xp = get_array_module(self._total.total)
        valid = self._valid_mask()
        _check_some_valid(valid)
        raw = self._total.total.astype(xp.uint8 if self._total.scale <= 0xFF else xp.uint16, copy=False)
        radius = median_radius(self.settings, raw.shape)
        table = xp.asarray(median_table(self._total.scale))
        if valid is None and self.settings.rescale != "No":  # the kernel counts the statistic's pixels
            levels, counts = median_filter_counted(raw, radius, footprint="disk", mode="ignore")
            return rescale_table(levels, table, None, self.settings.rescale, counts)
        levels = median_filter(raw, radius, footprint="disk", mode="ignore")
        return rescale_table(levels, table, valid, self.settings.rescale)


def _zero_masked_non_finite(image, mask, resizing: bool, xp):
    """``image``, with NaN or infinite pixels under ``mask`` (False) set to 0, the value masked
    pixels take anyway; a ValueError when an unmasked pixel is not finite, or any pixel when the
    image is resized (CellProfiler's Resize would spread a masked NaN into valid pixels)."""
    finite = xp.isfinite(image)
    if bool(finite.all()):
        return image
    if mask is not None and resizing:
        raise InvalidValue("image: contains NaN or infinite values; with resize_factor != 1 masked pixels must be "
                         "finite too (the resize spreads them into valid pixels)")
    if mask is None or not bool((finite | ~mask).all()):
        where = "" if mask is None else " in unmasked pixels"
        raise InvalidValue(f"image: contains NaN or infinite values{where}; replace or mask those pixels first")
    return xp.where(finite, image, image.dtype.type(0))


def calculate(images, settings: CalculateSettings | None = None, masks=None):
    """Illumination function(s) of ``images`` (a sequence or iterator of 2-D arrays).

    All modes: one float32 (H, W) function from one streaming pass (constant memory).
    "Each": a float32 (n, H, W) array, one function per image. ``masks``: None, or one mask (or
    None) per image, in the same order.
    """
    settings = check_settings(CalculateSettings() if settings is None else settings)
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise InvalidType(f"images: expected a sequence of 2-D images or a 3-D stack (n, H, W), got {type(images).__name__}")
    dimensions = getattr(images, "ndim", None)
    if dimensions is not None and dimensions != 3:
        hint = ": for one image pass [image]" if dimensions == 2 else ""
        raise InvalidValue(f"images: got one {dimensions}-D array of shape {tuple(images.shape)}; expected a sequence of "
                         f"2-D images or a 3-D stack (n, H, W){hint}")
    pairs = _image_mask_pairs(images, masks)
    if settings.is_all:
        accumulator = IlluminationAccumulator(settings)
        for image, mask in pairs:
            accumulator.add(image, mask)
        if accumulator.count == 0:
            raise InvalidValue("images: no images given")
        return accumulator.finalize()
    return _calculate_each(pairs, settings, len(images) if hasattr(images, "__len__") else None)


_MISSING = object()  # the end of the masks, told apart from a None mask


def _image_mask_pairs(images, masks):
    """(image, mask) pairs; a one-line ValueError when there is not exactly one mask (or None)
    per image, before any work when both lengths are known."""
    if masks is None:
        yield from zip(images, itertools.repeat(None))
        return
    if getattr(masks, "ndim", None) == 2:
        raise InvalidValue("masks: got one 2-D array; expected one mask (or None) per image, e.g. [mask] * len(images)")
    if hasattr(images, "__len__") and hasattr(masks, "__len__") and len(images) != len(masks):
        raise InvalidValue(f"masks: {len(masks)} masks for {len(images)} images; expected one mask (or None) per image")
    remaining = iter(masks)
    count = 0
    for image in images:
        mask = next(remaining, _MISSING)
        if mask is _MISSING:
            raise InvalidValue(f"masks: ran out after {count} masks while images remained; expected one mask (or None) per image")
        yield image, mask
        count += 1
    if next(remaining, _MISSING) is not _MISSING:
        raise InvalidValue(f"masks: more masks than the {count} images; expected one mask (or None) per image")


def _calculate_each(pairs, settings: CalculateSettings, count: int | None):
    """"Each" functions stacked as they come: into one array allocated after the first when the
    number of images is known (a plate of 1080^2 images then skips a final stack copy, ~14 ms of
    page faults and copying per image on the 2-core VM), else collected and stacked at the end."""
    functions, stacked, first_shape = [], None, None
    for index, (image, mask) in enumerate(pairs):
        accumulator = IlluminationAccumulator(settings).add(image, mask)
        if mask is not None and not bool(accumulator._masked_count.any()):  # its mask (pixel_count would copy it)
            raise InvalidValue(f"masks: image {index} has every pixel masked; CellProfiler would give it an all-zero "
                             "function, which no image can be divided by")
        function = accumulator.finalize()
        if first_shape is None:
            first_shape = function.shape
        elif function.shape != first_shape:
            raise InvalidValue(f"images: image {index} has shape {function.shape}, image 0 has {first_shape}; "
                             "'Each' stacks one function per image, so every image needs the same shape")
        if count is None:
            functions.append(function)
            continue
        if index >= count:
            raise InvalidValue(f"images: len() says {count} images, iterating gave more")
        if stacked is None:
            with device_of(function):  # on the input's GPU, like the functions
                stacked = get_array_module(function).empty((count, *first_shape), dtype=np.float32)
        stacked[index] = function
    if first_shape is None:
        raise InvalidValue("images: no images given")
    if count is None:
        return get_array_module(functions[0]).stack(functions)
    if index + 1 != count:
        raise InvalidValue(f"images: len() says {count} images, iterating gave {index + 1}")
    return stacked
