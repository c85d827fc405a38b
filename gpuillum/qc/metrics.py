"""Numbers that say whether illumination correction worked.

* :func:`flatfield_cv` measures the shading left in a set of images with the retrospective flat
  field of the test-data catalogue (data/README.md section 2): 4x block-mean binning, per-pixel
  median across the images, the set's dark offset subtracted, Gaussian smoothing with sigma = 1/16
  of the short side, normalised to mean 1. Its coefficient of variation is near 0 for an evenly lit
  set and 0.1-0.4 for typical vignetting. Single images mix shading with where the cells are; the
  median over many images does not.
* :func:`compare_to_truth` scores a recovered illumination function against a known one.
* :func:`correction_report` is the flat-field CV before and after a correction.

One code path for NumPy and CuPy inputs; results are plain Python floats (JSON-ready).
"""
from __future__ import annotations

from ..backend import get_array_module, same_backend
from ..filters.smoothing import gaussian_float64
from ..errors import InvalidValue

BIN = 4
DARK_PERCENTILE = 0.1
SIGMA_FRACTION = 1 / 16
CENTRE_FRACTION = 0.2
CORNER_FRACTION = 0.1


def _as_images(images) -> list:
    """A list of 2-D arrays from a 3-D stack or an iterable of 2-D arrays (all the same shape)."""
    if hasattr(images, "ndim") and images.ndim == 3:
        images = list(images)
    elif hasattr(images, "ndim"):
        raise InvalidValue(f"images: expected a 3-D stack or a sequence of 2-D arrays, got {images.ndim}-D")
    else:
        images = list(images)
    if not images:
        raise InvalidValue("images: expected at least one image, got none")
    shape = tuple(images[0].shape)
    for index, image in enumerate(images):
        if image.ndim != 2 or tuple(image.shape) != shape:
            raise InvalidValue(f"images: image {index} has shape {tuple(image.shape)}, expected 2-D {shape} like image 0")
    if min(shape) < 2 * BIN:
        raise InvalidValue(f"images: expected images of at least {2 * BIN}x{2 * BIN} pixels, got {shape}")
    return images


def _bin(image, xp):
    """Mean of each 4x4 block (trailing rows/columns that do not fill a block are dropped), float32."""
    h, w = (s // BIN for s in image.shape)
    blocks = xp.asarray(image[: h * BIN, : w * BIN], dtype=xp.float32).reshape(h, BIN, w, BIN)
    return blocks.mean(axis=(1, 3), dtype=xp.float64).astype(xp.float32)


def _bin_mask(mask, xp):
    """A binned pixel is valid when all 16 of its pixels are."""
    h, w = (s // BIN for s in mask.shape)
    return mask[: h * BIN, : w * BIN].reshape(h, BIN, w, BIN).all(axis=(1, 3))


def _box(shape, fraction, anchor):
    """Slices of a box ``fraction`` of each side, centred ("centre") or at corner (ry, rx) in {0, 1}."""
    slices = []
    for axis, size in enumerate(shape):
        n = max(1, int(round(size * fraction)))
        if anchor == "centre":
            start = (size - n) // 2
        else:
            start = 0 if anchor[axis] == 0 else size - n
        slices.append(slice(start, start + n))
    return tuple(slices)


def _smooth(image, valid, sigma, xp):
    """Normalised Gaussian convolution: only valid pixels contribute, zero padding at the edges."""
    numerator = gaussian_float64(xp.where(valid, image, 0.0).astype(xp.float64), sigma)
    denominator = gaussian_float64(valid.astype(xp.float64), sigma)
    return xp.where(denominator > 0, numerator / xp.maximum(denominator, 1e-300), xp.nan)


def flatfield_cv(images, mask=None, *, dark="auto", return_field: bool = False) -> dict:
    """The retrospective flat field of a set of images and how uneven it is.

    ``images``: a 3-D stack or a sequence of same-shape 2-D arrays (NumPy or CuPy). ``mask``:
    optional boolean array of the image shape, True where pixels count (e.g. inside a field stop).
    ``dark``: the offset to subtract, in image units; "auto" is the catalogue's rule (minimum over
    the images of their 0.1st percentile). The rule assumes some pixels are nearly dark: on images
    whose background never gets close to the camera offset it also removes most of the background,
    which inflates the CV (use it to compare sets, or pass the known offset, e.g. 0 after a
    dark-subtracting correction).
    Returns ``cv`` (std/mean of the flat field), ``centre_corner`` (mean of the central 20 % box over
    the mean of the four 10 % corner boxes), ``max_min``, ``dark_offset`` (the offset used),
    ``n_images``; with ``return_field=True`` also ``field``, the flat field itself (float64, at 1/4
    resolution, NaN outside the mask).
    """
    images = _as_images(images)
    xp = get_array_module(images[0])
    if mask is not None:
        if tuple(mask.shape) != tuple(images[0].shape):
            raise InvalidValue(f"mask: shape {tuple(mask.shape)} does not match the image shape {tuple(images[0].shape)}")
        mask = same_backend(mask, images[0]).astype(bool)
        if not bool(mask.any()):
            raise InvalidValue("mask: selects no pixels")
    if isinstance(dark, str):
        if dark != "auto":
            raise InvalidValue(f"dark: expected 'auto' or a number, got {dark!r}")
        dark = min(float(xp.percentile(image if mask is None else image[mask], DARK_PERCENTILE)) for image in images)
    dark = float(dark)
    binned = xp.stack([_bin(image, xp) for image in images])
    median = xp.median(binned, axis=0).astype(xp.float64) - dark
    valid = xp.ones(median.shape, dtype=bool) if mask is None else _bin_mask(mask, xp)
    if not bool(valid.any()):
        raise InvalidValue(f"mask: no complete {BIN}x{BIN} block of valid pixels")
    sigma = min(median.shape) * SIGMA_FRACTION
    field = _smooth(median, valid, sigma, xp)
    field = xp.where(valid, field / field[valid].mean(), xp.nan)

    values = field[valid]
    corners = [field[_box(field.shape, CORNER_FRACTION, corner)] for corner in ((0, 0), (0, 1), (1, 0), (1, 1))]
    corner_values = xp.concatenate([c.ravel() for c in corners])
    centre_values = field[_box(field.shape, CENTRE_FRACTION, "centre")].ravel()
    result = {
        "cv": float(values.std() / values.mean()),
        "centre_corner": float(xp.nanmean(centre_values) / xp.nanmean(corner_values)),
        "max_min": float(values.max() / values.min()),
        "dark_offset": dark,
        "n_images": len(images),
    }
    if return_field:
        result["field"] = field
    return result


def compare_to_truth(recovered, truth, *, border: int = 0) -> dict:
    """How close a recovered illumination function is to the true one.

    Both are normalised to mean 1 over the compared region (the image less ``border`` pixels on
    each side), so only the shape counts. Returns ``pearson_r``, ``max_rel_error``,
    ``mean_rel_error`` and ``rms_rel_error``, where the relative error is
    ``recovered / truth - 1``. ``truth`` is moved to ``recovered``'s backend (one image, once).
    """
    xp = get_array_module(recovered)
    if recovered.ndim != 2 or tuple(recovered.shape) != tuple(truth.shape):
        raise InvalidValue(f"recovered: shape {tuple(recovered.shape)} does not match the truth's {tuple(truth.shape)}")
    border = int(border)
    if border < 0 or 2 * border >= min(recovered.shape):
        raise InvalidValue(f"border: expected 0 <= border < {min(recovered.shape) / 2:g}, got {border}")
    region = (slice(border, recovered.shape[0] - border), slice(border, recovered.shape[1] - border))
    rec = xp.asarray(recovered[region], dtype=xp.float64)
    tru = xp.asarray(same_backend(truth, recovered)[region], dtype=xp.float64)
    if not (bool(xp.isfinite(rec).all()) and bool(xp.isfinite(tru).all())):
        raise InvalidValue("recovered/truth: contain NaN or infinite values")
    if float(tru.min()) <= 0 or float(tru.mean()) <= 0 or float(rec.mean()) <= 0:
        raise InvalidValue("truth: expected a positive illumination function (and a recovered one of positive mean)")
    rec = rec / rec.mean()
    tru = tru / tru.mean()
    rel = rec / tru - 1.0
    rd, td = rec - 1.0, tru - 1.0
    denominator = float(xp.sqrt((rd * rd).sum() * (td * td).sum()))
    return {
        "pearson_r": float((rd * td).sum()) / denominator if denominator > 0 else float("nan"),
        "max_rel_error": float(xp.abs(rel).max()),
        "mean_rel_error": float(xp.abs(rel).mean()),
        "rms_rel_error": float(xp.sqrt((rel * rel).mean())),
    }


def correction_report(before_images, after_images, mask=None, *, dark_before="auto", dark_after="auto") -> dict:
    """Flat-field CV (and centre/corner, max/min) of a set before and after correction.

    ``dark_before`` / ``dark_after``: the offsets of the two sets (see :func:`flatfield_cv`; a
    correction that subtracts the dark field leaves an offset of 0). ``cv_improvement`` is
    cv_before / cv_after: how many times less shading is left.
    """
    before = flatfield_cv(before_images, mask, dark=dark_before)
    after = flatfield_cv(after_images, mask, dark=dark_after)
    return {
        "cv_before": before["cv"],
        "cv_after": after["cv"],
        "cv_improvement": before["cv"] / after["cv"] if after["cv"] > 0 else float("inf"),
        "before": before,
        "after": after,
    }
