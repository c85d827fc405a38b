"""CellProfiler's "Splines" smoothing: iterative, outlier-rejecting cubic B-spline background.

Same result as ``centrosome.bg_compensate.backgr`` (the code CellProfiler calls), computed
independently:

1. crop to the mask's bounding box; resample image and mask to ``floor(size / scale)`` with
   ``scipy.ndimage.affine_transform(order=2)`` (the mask is thresholded at 0.5);
2. pick the mode (``auto`` compares MATLAB-style 1/20/80/99 percentile spreads);
3. repeat up to ``max_iterations`` times: least-squares fit of a ``points`` x ``points`` uniform
   cubic B-spline surface to the selected pixels; stop when the unbiased std of the change
   since the previous fit falls below ``convergence`` times the dynamic range; otherwise keep
   the pixels whose residual is within ``threshold`` sigma (one- or two-sided by mode) and stop
   early when fewer than 1 % remain;
4. resample the fit back with ``affine_transform(order=3)``; zero outside the mask.

The fit exploits the tensor-product structure: the design matrix is ``Bx (x) By``, so its
normal equations ``(By (x) By)^T W (Bx (x) Bx)`` cost one pass over the image per iteration
instead of a dense ``pixels x points^2`` least-squares solve. When few pixels are left
(at most 2 per control point) or the normal equations are ill-conditioned, the fit may
interpolate the pixels and backgr's next outlier cut then depends on rounding noise, so
those iterations repeat backgr's dense minimum-norm solve operation for operation.
Measured: within 6e-12 (float64) / one float32 rounding of backgr, every mode and setting.

The work is a ~200 x 200 problem (CellProfiler's automatic scale), so it runs on the CPU;
a CuPy image is copied to the host and the result copied back to its device.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

from ..._checks import check_choice, check_image, check_mask
from ...backend import same_backend, to_numpy
from ...errors import InvalidType, InvalidValue

MODES = ("auto", "dark", "bright", "gray")
_MODE_SIGN = {"dark": -1, "bright": 1, "gray": 0}
# Normal equations are trusted when their condition number stays below 1 / _MIN_RCOND;
# their error is then ~ cond * eps, far inside the 1e-5 parity target.
_MIN_RCOND = 1e-8
# Fits with at most this many selected pixels per control point take the dense path.
_DENSE_BELOW = 2


class ScaleTooLarge(InvalidValue):
    """``scale`` leaves fewer than 2 resampled pixels on a side of the fitted region."""

    def __init__(self, scale: float, region: tuple, name: str = "scale"):
        self.scale, self.region = scale, region
        super().__init__(f"{name}: {scale:g} shrinks the fitted region {region} below 2 pixels per side")


def automatic_spline_scale(shape) -> float:
    """CellProfiler's automatic resampling factor: shrink the shorter side to 200 pixels."""
    shortest = min(int(s) for s in shape[:2])
    return 1.0 if shortest < 200 else shortest / 200


def spline_background(
    image,
    mask=None,
    *,
    mode: str = "auto",
    threshold: float = 2.0,
    points: int = 5,
    scale: float = 1.0,
    max_iterations: int = 40,
    convergence: float = 0.001,
):
    """Spline background of ``image`` (float32 or float64; the same dtype comes back).

    Parameters follow CellProfiler's manual spline settings: ``mode`` (auto, dark: bright
    objects on a dark background, bright, gray), ``threshold`` (outlier cut in sigma),
    ``points`` (control points per axis, >= 4), ``scale`` (resampling factor),
    ``max_iterations`` and ``convergence`` (fraction of the dynamic range). Pixels outside
    ``mask`` are ignored and set to 0 in the result; an empty mask gives an all-zero result.
    CellProfiler then subtracts the masked mean; that step is not part of this function.
    """
    check_image(image, "image", dtypes=(np.float32, np.float64))
    mask = check_mask(mask, image)
    check_choice(mode, "mode", MODES)
    threshold = _positive_real(threshold, "threshold")
    scale = _positive_real(scale, "scale")
    convergence = _positive_real(convergence, "convergence", allow_zero=True)
    points = _integer_at_least(points, "points", 4)
    max_iterations = _integer_at_least(max_iterations, "max_iterations", 1)

    host = to_numpy(image)
    host_mask = None if mask is None else to_numpy(mask)
    background = _spline_background_host(
        host, host_mask, mode, threshold, points, scale, max_iterations, convergence
    )
    return same_backend(background, image)


def _spline_background_host(image, mask, mode, threshold, points, scale, max_iterations, convergence):
    output = np.zeros(image.shape, image.dtype)
    if mask is None:
        rows, cols = slice(0, image.shape[0]), slice(0, image.shape[1])
    else:
        if not mask.any():
            return output
        row_hits = np.flatnonzero(mask.any(axis=1))
        col_hits = np.flatnonzero(mask.any(axis=0))
        rows = slice(row_hits[0], row_hits[-1] + 1)
        cols = slice(col_hits[0], col_hits[-1] + 1)
    crop_shape = np.array([rows.stop - rows.start, cols.stop - cols.start])
    small_shape = (crop_shape / scale).astype(int)
    if small_shape.min() < 2:
        raise ScaleTooLarge(scale, tuple(crop_shape.tolist()))
    ratio = (crop_shape - 1.0) / (small_shape - 1.0)

    small = _resample(image[rows, cols], ratio, small_shape, order=2)
    if mask is None:
        crop_mask = np.ones(tuple(crop_shape), np.float64)
    else:
        crop_mask = mask[rows, cols].astype(np.float64)
    region = _resample(crop_mask, ratio, small_shape, order=2) > 0.5
    if not region.any():
        return output

    fit = _iterative_fit(small, region, mode, threshold, points, max_iterations, convergence)
    output[rows, cols] = _resample(fit, 1.0 / ratio, crop_shape, order=3)
    if mask is not None:
        output[~mask] = 0
    return output


def _resample(array, step, shape, order):
    """Sample ``array`` at ``step * output index`` per axis (scipy spline interpolation).

    The diagonal is passed as a vector (scipy's zoom path): the same samples as backgr's
    diagonal-matrix call, faster.
    """
    step = np.asarray(step, dtype=np.float64)
    return ndimage.affine_transform(array, step, output_shape=tuple(int(s) for s in shape), order=order)


def _iterative_fit(image, region, mode, threshold, points, max_iterations, convergence):
    """backgr's outlier-rejecting fit loop on the resampled image; returns the float64 fit."""
    sign = _auto_mode(image[region]) if mode == "auto" else _MODE_SIGN[mode]
    # In the image's dtype, as backgr computes it; compared in float64.
    stop = float(max((image.max() - image.min()) * convergence, np.finfo(image.dtype).eps))
    basis_rows = _cubic_bspline_basis(image.shape[0], points)
    basis_cols = _cubic_bspline_basis(image.shape[1], points)
    region_size = np.count_nonzero(region)

    selected = region
    previous = np.zeros(image.shape)
    for _ in range(max_iterations):
        fit = _fit_surface(image, selected, basis_rows, basis_cols)
        if _unbiased_std(fit[region] - previous[region]) < stop:
            break
        previous = fit
        residual = image - fit
        cut = _unbiased_std(residual[selected]) * threshold
        if sign < 0:
            selected = residual < cut
        elif sign > 0:
            selected = residual > -cut
        else:
            selected = np.abs(residual) < cut
        selected &= region
        if np.count_nonzero(selected) < 0.01 * region_size:
            break
    return fit


def _auto_mode(values) -> int:
    """-1 (bright objects on dark), 1 (dark objects on bright) or 0, from percentile spreads."""
    p1, p20, p80, p99 = _matlab_percentiles(values, (1, 20, 80, 99))
    upper_wide = (p99 - p80) > (p80 - p20)
    lower_wide = (p20 - p1) > (p80 - p20)
    if upper_wide and not lower_wide:
        return -1
    if lower_wide and not upper_wide:
        return 1
    return 0


def _matlab_percentiles(values, percents):
    """MATLAB ``prctile``: sorted sample k sits at percentile 100 (k + 0.5) / n, linear in
    between, clamped outside; the arithmetic stays in the values' dtype, as backgr's does."""
    ordered = np.sort(values.ravel())
    n = ordered.size
    ranks = 100 * ((0.5 + np.arange(n)) / n)
    dtype = ordered.dtype.type
    result = []
    for p in percents:
        if p < ranks[0]:
            result.append(ordered[0])
        elif p > ranks[-1]:
            result.append(ordered[-1])
        else:
            k = max(int(np.searchsorted(ranks, p, side="left")) - 1, 0)
            slope = (ordered[k + 1] - ordered[k]) / dtype(ranks[k + 1] - ranks[k])
            result.append(slope * dtype(p - ranks[k]) + ordered[k])
    return result


def _cubic_bspline_basis(length: int, points: int) -> np.ndarray:
    """(length, points) uniform cubic B-spline basis on pixel centres 0..length-1.

    The knots run one step past both ends: ``linspace(-step, length - 1 + step, points)``
    with ``step = (length - 1) / (points - 3)``; each pixel uses the four basis functions
    of its knot interval (interval index clamped to the inner ``points - 3`` intervals).
    """
    x = np.arange(length, dtype=np.float64)
    step = (length - 1) / (points - 3.0)
    knots = np.linspace(-step, length - 1 + step, points)
    interval = np.clip(np.searchsorted(knots, x, side="right") - 1, 1, points - 3)
    u = (x - knots[interval]) / (knots[interval + 1] - knots[interval])
    weights = np.array(
        [(1.0 - u) ** 3, 4 - 6.0 * u**2 + 3.0 * u**3, 1.0 + 3.0 * u + 3.0 * u**2 - 3.0 * u**3, u**3]
    ) * (1.0 / 6)
    basis = np.zeros((length, points))
    pixel = np.arange(length)
    for offset in range(4):
        basis[pixel, interval - 1 + offset] = weights[offset]
    return basis


def _fit_surface(image, selected, basis_rows, basis_cols):
    """Least-squares tensor B-spline fit to ``image[selected]``, evaluated on the whole grid."""
    n = basis_rows.shape[1]
    selected_count = np.count_nonzero(selected)
    if selected_count > _DENSE_BELOW * n * n:
        weight = selected.astype(np.float64)
        # Normal matrix entry ((a, b), (c, d)) = sum_ij w_ij By[i,a] By[i,c] Bx[j,b] Bx[j,d].
        row_products = (basis_rows[:, :, None] * basis_rows[:, None, :]).reshape(-1, n * n)
        col_products = (basis_cols[:, :, None] * basis_cols[:, None, :]).reshape(-1, n * n)
        normal = (row_products.T @ weight @ col_products).reshape(n, n, n, n)
        normal = normal.transpose(0, 2, 1, 3).reshape(n * n, n * n)
        eigenvalues = np.linalg.eigvalsh(normal)
        if eigenvalues[0] > _MIN_RCOND * eigenvalues[-1]:
            rhs = (basis_rows.T @ (weight * image) @ basis_cols).ravel()
            coefficients = np.linalg.solve(normal, rhs)
            return basis_rows @ coefficients.reshape(n, n) @ basis_cols.T
    return _dense_min_norm_fit(image, selected, basis_rows, basis_cols)


def _dense_min_norm_fit(image, selected, basis_rows, basis_cols):
    """Minimum-norm least squares on the explicit Kronecker design, for nearly or exactly
    underdetermined fits.

    There the fit interpolates the selected pixels, the next outlier cut is set by rounding
    noise, and only the same floating-point operations as backgr reproduce its choices: the
    design is laid out as backgr's (pixels in column-major order, column-basis-major
    coefficients), solved with the same ``lstsq`` call and evaluated with the same product.
    """
    rows, cols = basis_rows.shape[0], basis_cols.shape[0]
    design = np.kron(basis_cols.T, basis_rows.T)
    pixels = np.flatnonzero(selected.T.ravel())
    values = image.T.ravel()[pixels]
    coefficients = np.linalg.lstsq(design.T[pixels], values, rcond=-1)[0]
    return np.dot(coefficients.reshape(1, -1), design).reshape(cols, rows).T


def _unbiased_std(values) -> float:
    """Standard deviation with the n - 1 denominator (MATLAB ``std``); NaN below 2 values."""
    if values.size < 2:
        return np.nan
    return float(np.sqrt(((values - values.mean()) ** 2).sum() / (values.size - 1)))


def _positive_real(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InvalidType(f"{name}: expected a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidValue(f"{name}: expected a number {bound}, got {value!r}")
    return float(value)


def _integer_at_least(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidValue(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)
