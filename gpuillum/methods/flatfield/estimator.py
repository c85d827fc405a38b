"""The flat + dark field fit on a stack of working-resolution images (NumPy or CuPy).

Model, per image n and working pixel x (the camera model of BaSiC, ``I = F * (b_n + cells) + D``)::

    X_n(x) = F(x) * B_n + D(x) + F(x) * R_n(x)

F is the flat field (mean 1), D the darkfield in counts, B_n the background level of image n in
corrected counts (the time-lapse baseline), R_n the objects (sparse, mostly positive).

The fit alternates four closed-form steps (no ADMM; passes of a few milliseconds each at 96^2,
by a fast or a careful schedule, see ``_Schedule`` and ``fit_working_stack``):

1. **levels** B_n: weighted least squares of ``X_n - D`` on F over image n's background pixels
   (the careful schedule starts from each image's median of ``(X_n - D) / F``: robust to objects
   on up to half of the field);
2. **weights**: Tukey's biweight of the residual ``X - F B - D`` at ``ROBUST_K`` robust standard
   deviations (per image; the careful schedule takes the scale from the residuals below the
   background, which the objects, brighter than it, do not reach, and widens the first passes'
   cut-off), so cells and debris drop out of every later sum;
3. **background map** G(x) = F(x) b + D(x): per pixel, the weighted least-squares slope of X on B
   through the origin, scaled to the mean level b (exact for any weights when D is right), then
   smoothed with a penalised DCT smoother (Neumann boundaries, a squared-Laplacian penalty whose
   strength is given per longest side, so it does not depend on the working size);
4. **darkfield** (when asked and not given): the per-pixel slope ``a(x)`` of X on B is the flat
   field free of any offset; regressing it on G (weights from its variance) gives the offset at
   which the contrast of the vignetting vanishes, ``d0 = -gamma/alpha`` in ``a = alpha G + gamma``,
   with a standard error from the same regression. The remaining smooth darkfield pattern is the
   residual of that regression, smoothed strongly. Then ``F = (G - D) / mean``.

What identifies the darkfield is the spread of the images' background levels B_n (a plate's
field-to-field and well-to-well brightness, a time-lapse's bleaching) together with a flat field
that is not flat: a darkfield shaped like the flat field itself cannot be told apart from it (no
method can), so the darkfield reported is the flattest one that fits. It is reported as **not
identifiable** (and the flat field refitted without it) when the regression carries too little
information (a large standard error: equal levels, one image) or when the data contradict the
model it rests on (``darkfield_verdict``): an offset above the darkest background, an offset
significantly below zero (a camera offset cannot be; it happens when objects grow as a time-lapse
bleaches), or even and odd images whose own fits (``SPLIT_PASSES`` passes each, from the whole
fit's state) disagree beyond their errors (the levels differ because of the images' content, as
in tissue tiles).

**The statistic** (``statistic="auto"``, the default) follows the same regression: a
contradiction means the images are not objects on a background whose brightness alone makes the
levels differ, which is what the robust mean relies on, so the flat field is then the per-pixel
median of the level-normalised images (dense content); otherwise the robust mean. Measured: every
synthetic plate (24-96 images, 128^2-512^2, bright and dim, 3-30 % level spread, a bleaching
time-lapse, up to 30 % cell cover) keeps the mean and its darkfield; BaSiC's three demo stacks
(a time-lapse with growing colonies, tissue tiles, dense cultures) get the median, which agrees
with PyBaSiC's flat fields to 1.2-1.5 % RMS where the mean is 2.8-15 % away.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ...backend import get_array_module, to_numpy

ROBUST_K = 3.0  # Tukey biweight cut-off, in robust standard deviations of each image's residual
FLAT_SMOOTHNESS = 1e-5  # penalty of the flat field's smoother (per longest side; a tenth of it let some fits diverge)
DARK_SMOOTHNESS = 4e-3  # the darkfield pattern's: passes ~2 cycles per field, a faint smooth offset map
FEW_IMAGES_ITERATIONS = 12  # below 16 images the cells leave the first estimate more slowly (and passes are cheap)
ITERATIONS = 6  # passes of the fast fit (measured: 6 and 10 agree within 0.003 % flat, 0.01 count dark)
CAREFUL_ITERATIONS = 40  # passes of the careful fit at most (measured: dense cells settle after 20-30)
CAREFUL_TOLERANCE = 1e-4  # ... which stops once the flat field moves less than this (RMS) per pass
CAREFUL_FILL_PASSES = 6  # ... with this many passes of the weighted smoother per fit pass
ANNEAL_K = 8.0  # the careful fit's first Tukey cut-off, halved each pass down to ROBUST_K
LOCK_RATIO = (0.97, 1.03)  # a fast fit whose mean level is outside this share of the median levels' let objects into its background (measured: 5-25 % cover 0.98-1.00, 30 % cover 0.94-0.95, fully locked fits 0.3-0.45)
ROBUST_ROUNDS = 4  # robust spatial smoothing of the first estimate
FEW_IMAGES_BOOST = 100.0  # fewer than 10 images: smoothing x 100 / N^2 (one image: cells only differ in shape)
FIRST_IMAGES = 32  # the first estimate's median takes at most ~this many evenly spread images
FIRST_SMOOTHNESS = 1e-3  # the first estimate (a median image, cells and all) is smoothed more
FILL_PASSES = 2  # passes of the weighted smoother (pixels without data filled from neighbours) per fit pass
ROBUST_FILL_PASSES = 5  # ... and per round of the first estimate's robust smoothing (one image: many gaps)
MIN_SLOPE_IMAGES = 3  # a pixel's slope needs this much weight (images) behind it
VARIANCE_FLOOR = 0.1  # ... and its variance at least this fraction of the median pixel's
SCALE_STRIDE = 7  # each image's robust residual scale from every 7th working pixel
MEDIAN_ITERATIONS = 10  # at most this many passes of the median statistic (levels and flat field), until it moves < FLAT_TOLERANCE
MEDIAN_SMOOTHNESS = 1e-5  # its smoother's penalty (1e-4 moved nanog 0.5 % further from BaSiC's reference)
FLAT_TOLERANCE = 1e-5  # stop when the flat field moves less than this (RMS) and the darkfield < 0.01 count
MAX_DARK_SE_FRACTION = 0.05  # darkfield identifiable: standard error <= 5 % of the background signal ...
MAX_FLAT_ERROR_FROM_DARK = 0.005  # ... and the flat-field error it implies <= 0.5 % RMS
NEGATIVE_Z = 3.0  # an offset below zero by more than this many standard errors (and by enough to move F by MAX_FLAT_ERROR_FROM_DARK) is impossible
SPLIT_MIN_IMAGES = 8  # the halves check needs this many images (4 per half)
SPLIT_PASSES = 2  # passes of each half's fit, started from the whole fit's weights (measured: 1-3 passes agree)
SPLIT_Z = 5.0  # halves disagree beyond this many combined standard errors (24 plates: at most 2.8; wsi_brain: 17)
STATISTICS = ("auto", "mean", "median")


@dataclass
class WorkingFit:
    """The fit at working resolution (arrays on the stack's backend).

    ``darkfield_status`` is "estimated", "given" (dark frames), "not identifiable" or "off";
    ``darkfield_reason`` says why in one sentence when it is not estimated; ``statistic`` is the
    statistic used ("mean" or "median"), ``statistic_reason`` why.
    """

    flatfield: object
    darkfield: object | None
    levels: np.ndarray
    darkfield_status: str
    darkfield_reason: str = ""
    offset: float | None = None
    offset_se: float | None = None
    statistic: str = "mean"
    statistic_reason: str = ""
    diagnostics: dict = field(default_factory=dict)


# -- smoothing


@functools.lru_cache(maxsize=32)
def _smoothing_transfer(shape: tuple[int, int], strength: float) -> np.ndarray:
    """The DCT-domain transfer function ``1 / (1 + strength * lap^2)`` of the penalised smoother, with
    the discrete Laplacian's eigenvalues in units of the longest side (float64, read-only)."""
    longest = max(shape)
    eigen = [(2.0 - 2.0 * np.cos(np.pi * np.arange(n) / n)) * (longest / np.pi) ** 2 for n in shape]
    laplacian = eigen[0][:, None] + eigen[1][None, :]
    transfer = 1.0 / (1.0 + strength * laplacian**2)
    transfer.flags.writeable = False
    return transfer


def _fft_module(xp):
    if xp is np:
        import scipy.fft as fft
    else:
        import cupyx.scipy.fft as fft
    return fft


def smooth(values, strength: float, weights=None, prior=0.0, passes: int = 1):
    """Penalised least-squares smoothing of a 2-D map by its DCT (Neumann boundaries).

    ``weights`` (same shape, >= 0; 1 = a typical pixel): each pass smooths ``trust * values +
    (1 - trust) * current`` with ``trust = clip(weights / median weight, 0, 1)``, starting from
    ``prior`` (a map or a number), so pixels without data take their neighbours' values instead
    of 0 (Garcia's iteration for weighted smoothing; ``passes`` of them). float64 on the values'
    backend.
    """
    xp = get_array_module(values)
    fft = _fft_module(xp)
    transfer = xp.asarray(_smoothing_transfer(tuple(values.shape), float(strength)))
    values = values.astype(xp.float64)

    def apply(v):
        return fft.idctn(fft.dctn(v, norm="ortho") * transfer, norm="ortho")

    if weights is None:
        return apply(values)
    positive = weights[weights > 0]
    typical = float(xp.median(positive)) if positive.size else 1.0
    trust = xp.clip(weights / typical, 0.0, 1.0)
    values = xp.where(weights > 0, values, 0.0)
    current = xp.zeros_like(values) + prior
    for _ in range(passes):
        current = apply(trust * values + (1.0 - trust) * current)
    return current


def robust_smooth(values, strength: float, rounds: int = ROBUST_ROUNDS):
    """Smooth a 2-D map while ignoring its outliers (cells in a single image): Tukey weights of the
    residual at ``ROBUST_K`` robust standard deviations, re-smoothed ``rounds`` times."""
    xp = get_array_module(values)
    current = smooth(values, strength)
    for _ in range(rounds):
        weights = _tukey_weights((values - current).reshape(1, -1), ROBUST_K).reshape(values.shape)
        current = smooth(values, strength, weights, current, passes=ROBUST_FILL_PASSES)
    return current


def smoothing_noise_gain(shape, strength: float) -> float:
    """How much the smoother scales the RMS of white noise (sqrt of the mean squared transfer)."""
    return float(np.sqrt(np.mean(_smoothing_transfer(tuple(shape), float(strength)) ** 2)))


# -- the steps


def _lower_scale(sample):
    """Each row's noise scale from its negative residuals only (1.4826 x their median magnitude):
    objects are brighter than the background, so the residuals below it are noise alone whatever
    share of the field the objects cover; rows with fewer than 8 negative residuals use all of them."""
    xp = get_array_module(sample)
    ordered = xp.sort(sample, axis=1)
    negatives = xp.sum(ordered < 0, axis=1, keepdims=True)
    middle = xp.take_along_axis(ordered, xp.maximum(negatives - 1, 0) // 2, axis=1)
    one_sided = 1.4826 * xp.abs(middle)
    if bool((negatives >= 8).all()):
        return one_sided
    return xp.where(negatives >= 8, one_sided, 1.4826 * xp.median(xp.abs(sample), axis=1, keepdims=True))


def _tukey_weights(residuals, k: float, one_sided: bool = False):
    """Tukey's biweight of each residual at ``k`` robust standard deviations of its image (row),
    computed in place in ``residuals`` (which it returns). The scale is the median absolute
    residual of every ``SCALE_STRIDE``-th pixel (a fixed sample: the same for any batch split), or
    with ``one_sided`` that of its negative residuals (``_lower_scale``: dense objects do not
    inflate it)."""
    xp = get_array_module(residuals)
    signed = residuals[:, ::SCALE_STRIDE] if residuals.shape[1] >= 64 * SCALE_STRIDE else residuals
    sample = xp.abs(signed)
    scale = _lower_scale(signed) if one_sided else 1.4826 * xp.median(sample, axis=1, keepdims=True)
    scale = xp.maximum(scale, 1e-6 * xp.maximum(sample.max(axis=1, keepdims=True), 1e-30))
    z = residuals
    z /= k * scale
    z *= z
    outside = z >= 1
    xp.subtract(1.0, z, out=z)
    z *= z
    z[outside] = 0.0
    return z


def _levels(weighted, weights, F, D):
    """Background level of each image: weighted least squares of ``X_n - D`` on F
    (``weighted`` = weights * X)."""
    xp = get_array_module(weights)
    image_sum = functools.partial(xp.einsum, "ij,j->i")  # einsum's own loops: BLAS gemv was 10-40x slower here
    return (image_sum(weighted, F) - image_sum(weights, D * F)) / xp.maximum(image_sum(weights, F * F), 1e-30)


@dataclass
class _PixelSums:
    """Per-pixel weighted sums over the images: of w, w B, w B^2, w X, w B X and w X^2."""

    w: object
    wb: object
    wbb: object
    wx: object
    wbx: object
    wxx: object

    @classmethod
    def of(cls, X, weights, weighted, levels):
        xp = get_array_module(X)
        pixel_sum = functools.partial(xp.einsum, "i,ij->j")
        return cls(w=weights.sum(axis=0), wb=pixel_sum(levels, weights), wbb=pixel_sum(levels * levels, weights),
                   wx=weighted.sum(axis=0), wbx=pixel_sum(levels, weighted), wxx=xp.einsum("ij,ij->j", weighted, X))


def _background_map(sums: _PixelSums, D):
    """G(x) = F(x) b + D(x) per pixel (the weighted slope of ``X - D`` on B through the origin, times
    the mean level b), its weight (the sum of w B^2) and b."""
    xp = get_array_module(D)
    mean_level = float(sums.wbb.sum()) / max(float(sums.wb.sum()), 1e-30)
    slope = (sums.wbx - D * sums.wb) / xp.maximum(sums.wbb, 1e-30)
    return mean_level * slope + D, sums.wbb, mean_level


def _offset_free_slope(sums: _PixelSums):
    """Per pixel: the weighted slope of X on the levels (the flat field, free of any offset) and its
    variance (inf where the levels have no spread among the pixel's weighted images)."""
    xp = get_array_module(sums.w)
    count = xp.maximum(sums.w, 1e-30)
    level_mean, value_mean = sums.wb / count, sums.wx / count
    spread = sums.wbb - count * level_mean * level_mean
    covariance = sums.wbx - count * level_mean * value_mean
    slope = covariance / xp.maximum(spread, 1e-30)
    residual_ss = xp.maximum(sums.wxx - count * value_mean * value_mean - slope * covariance, 0.0)
    noise = residual_ss / xp.maximum(sums.w - 2, 1)
    usable = (spread > 1e-12 * xp.maximum(sums.wbb, 1e-30)) & (sums.w >= MIN_SLOPE_IMAGES)
    variance = xp.where(usable, noise / xp.maximum(spread, 1e-30), xp.inf)
    finite = variance[xp.isfinite(variance)]
    if finite.size:  # a pixel whose few kept values happen to agree must not outweigh the others
        variance = xp.maximum(variance, VARIANCE_FLOOR * float(xp.median(finite)))
    return slope, variance


def _dark_offset(slope, variance, background):
    """Regress the offset-free slope on the background map: ``slope = alpha G + gamma``.

    Returns (offset d0 = -gamma/alpha, its standard error, alpha, gamma, weights) or None when the
    regression is singular (no spread in the levels, a flat flat field).
    """
    xp = get_array_module(slope)
    weights = xp.where(xp.isfinite(variance), 1.0 / xp.maximum(variance, 1e-30), 0.0)
    if not float(weights.sum()) > 0:
        return None
    g = background
    with np.errstate(all="ignore"):  # a degenerate fit (no spread in the levels) is refused below
        return _solve_dark_offset(slope, weights, g, xp)


def _solve_dark_offset(slope, weights, g, xp):
    m = np.array([[float((weights * g * g).sum()), float((weights * g).sum())],
                  [float((weights * g).sum()), float(weights.sum())]])
    rhs = np.array([float((weights * g * slope).sum()), float((weights * slope).sum())])
    try:
        covariance = np.linalg.inv(m)
    except np.linalg.LinAlgError:
        return None
    alpha, gamma = covariance @ rhs
    if not (np.isfinite(alpha) and np.isfinite(gamma)) or alpha <= 0:
        return None
    residual = slope - (alpha * g + gamma)
    dof = max(int(xp.count_nonzero(weights)) - 2, 1)
    chi2 = float((weights * residual * residual).sum()) / dof
    covariance = covariance * max(chi2, 1.0)
    jacobian = np.array([gamma / alpha**2, -1.0 / alpha])
    se = float(np.sqrt(max(jacobian @ covariance @ jacobian, 0.0)))
    return -gamma / alpha, se, alpha, gamma, weights


@dataclass
class DarkfieldCheck:
    """What the darkfield regression says about a stack.

    ``reason`` is "" when the offset can be trusted, else one sentence; ``contradicts`` is True
    when the data contradict the model the robust mean relies on (objects on a background whose
    brightness alone makes the images' levels differ), not merely carry too little information;
    ``halves`` holds the offsets (and standard errors) fitted to the even and to the odd images,
    ``sequence_halves`` those of the first and the second half (None where not fitted).
    """

    offset: float
    se: float
    reason: str = ""
    contradicts: bool = False
    halves: tuple | None = None
    sequence_halves: tuple | None = None


def darkfield_verdict(offset: float, se: float, signal: float, flat_spread: float, min_background: float,
                      halves=None, names=("even", "odd images")) -> tuple[str, bool]:
    """Why a fitted darkfield offset cannot be trusted ("" when it can), and whether the data
    contradict the model (True) rather than carry too little information (False).

    ``signal``: the mean background above the offset (counts); ``flat_spread``: the flat field's
    standard deviation (mean 1); ``min_background``: the darkest background of the smoothed map;
    ``halves``: ((offset, se), (offset, se)) of two halves of the images, or None; ``names``:
    what the halves are, for the message ("even", "odd images").
    Checked in this order: no information (no spread in the levels), an offset significantly
    above the darkest background (a contradiction, however uncertain), a large standard error (too
    little information), then the other contradictions: the offset above the darkest background,
    an offset significantly below zero (a camera offset cannot be), and halves that disagree
    beyond their errors.
    """
    if not np.isfinite(offset) or not np.isfinite(se):
        return "the images' background levels do not vary, so offset and flat field cannot be separated", False
    above = (f"the fitted offset ({offset:.1f} counts) is not below the darkest background ({min_background:.1f}), "
             "so the data do not fit a flat field plus darkfield")
    if signal <= 0 or offset - NEGATIVE_Z * se >= min_background:  # significantly above: a contradiction however uncertain
        return above, True
    if signal > 0 and (se > MAX_DARK_SE_FRACTION * signal or se * flat_spread / signal > MAX_FLAT_ERROR_FROM_DARK):
        return (f"the offset is uncertain by {se:.1f} counts ({100 * se / signal:.1f} % of the background signal): "
                "the images' background levels vary too little (or the flat field is nearly flat)"), False
    if offset >= min_background:
        return above, True
    if offset + NEGATIVE_Z * se < 0 and -offset * flat_spread / signal > MAX_FLAT_ERROR_FROM_DARK:
        return (f"the fitted offset is negative ({offset:.1f} +- {se:.1f} counts): the images' brightness does not "
                "scale with the flat field alone (e.g. objects that grow or spread as a time-lapse bleaches)"), True
    if halves is not None:
        (one, one_se), (other, other_se) = halves
        if np.isfinite([one, one_se, other, other_se]).all():
            gap = abs(one - other)
            if gap > SPLIT_Z * np.hypot(one_se, other_se) and 0.5 * gap * flat_spread / signal > MAX_FLAT_ERROR_FROM_DARK:
                return (f"the {names[0]} and the {names[1]} give offsets of {one:.0f} and {other:.0f} counts (+- "
                        f"{one_se:.0f}, {other_se:.0f}): the images' brightness differences come from their content, "
                        "not from the background's level"), True
    return "", False


# -- the fit


@dataclass(frozen=True)
class _Schedule:
    """How a robust-mean fit starts and runs.

    The **fast** schedule starts from least-squares levels over every pixel with the cut-off at
    ``ROBUST_K``: objects on a minority of the field (a plate's cells) inflate those levels, the
    first weights keep nearly everything, and the fit reaches the strongly vignetted corners in a
    few passes. The **careful** schedule starts from each image's median level and a wide cut-off
    (``ANNEAL_K``, halved each pass down to ``ROBUST_K``) with the scale from the residuals below
    the background: dense bright objects (a third of the field at 4x the background) raise
    least-squares levels to 1.6-2x the background, and a fast fit then takes the objects for the
    background. It needs more passes (and smoother fills) to reach the corners.
    """

    careful: bool
    iterations: int
    fill_passes: int
    tolerance: float

    def passes(self, index: int) -> tuple[float, bool]:
        """Pass ``index``'s Tukey cut-off and whether its scale is one-sided."""
        if not self.careful:
            return ROBUST_K, False
        return max(ROBUST_K, ANNEAL_K / 2**index), True


def _fast(n: int) -> _Schedule:
    """The fast schedule for ``n`` images (more passes below 16 images)."""
    return _Schedule(False, ITERATIONS if n >= 16 else FEW_IMAGES_ITERATIONS, FILL_PASSES, FLAT_TOLERANCE)


CAREFUL = _Schedule(True, CAREFUL_ITERATIONS, CAREFUL_FILL_PASSES, CAREFUL_TOLERANCE)


@dataclass
class _MeanFit:
    """The state of the robust-mean fit after its last pass (flattened working pixels)."""

    F: object
    D: object
    levels: object
    weights: object
    weighted: object
    dark: tuple | None  # the last pass's _dark_offset result (when the darkfield was estimated)


def _first_flat(X, D, shape, strength):
    """The first estimate of F: the robustly smoothed median of up to ``FIRST_IMAGES`` evenly spread images."""
    xp = get_array_module(X)
    first = X[:: max(1, X.shape[0] // FIRST_IMAGES)]
    F = robust_smooth(median_over_images(first).reshape(shape) - D.reshape(shape), max(strength, FIRST_SMOOTHNESS)).ravel()
    return _positive_mean_one(F, xp)


def _median_levels(X, F, D):
    """Each image's level as the median of ``(X_n - D) / F`` over every ``SCALE_STRIDE``-th pixel:
    on the background whenever the objects cover less than half of the image."""
    xp = get_array_module(X)
    return xp.median((X[:, ::SCALE_STRIDE] - D[::SCALE_STRIDE]) / F[::SCALE_STRIDE], axis=1)


def _locked_on_objects(X, fit: _MeanFit) -> bool:
    """Whether a fit let the objects into its background: its mean level is outside ``LOCK_RATIO``
    of the images' median levels under its own F and D (a fit on the background sits 0-2 % below
    them)."""
    median_mean = float(_median_levels(X, fit.F, fit.D).mean())
    level = float(fit.levels.mean())
    return not (median_mean > 0 and LOCK_RATIO[0] * median_mean <= level <= LOCK_RATIO[1] * median_mean)


def _mean_passes(X, shape, F, D, weights=None, *, estimate: bool, strength: float, schedule: _Schedule,
                 iterations: int | None = None) -> _MeanFit:
    """Passes of the robust-mean fit (steps 1-4 of the module docstring) from F and D, by
    ``schedule`` (``iterations`` passes at most, default the schedule's).

    ``weights``: the last per-pixel weights of a converged state (overwritten: the buffer is
    reused) to go on from, with their least-squares levels; None for a start from a first
    estimate, with the schedule's start levels (least-squares with unit weights, or medians).
    """
    xp = get_array_module(X)
    h, w = shape
    if weights is None and schedule.careful:
        weights = xp.empty_like(X)
        weighted = xp.empty_like(X)
        levels = _median_levels(X, F, D)
    else:
        weights = xp.ones_like(X) if weights is None else weights
        weighted = X * weights
        levels = _levels(weighted, weights, F, D)
    dark = None
    for index in range(iterations or schedule.iterations):
        xp.multiply(levels[:, None], F[None], out=weights)  # the residual, in the weights' buffer
        xp.subtract(X, weights, out=weights)
        weights -= D[None]
        weights = _tukey_weights(weights, *schedule.passes(index))
        xp.multiply(weights, X, out=weighted)
        levels = _levels(weighted, weights, F, D)
        sums = _PixelSums.of(X, weights, weighted, levels)
        background, pixel_weight, mean_level = _background_map(sums, D)
        previous = F * mean_level + D
        background = smooth(background.reshape(h, w), strength, pixel_weight.reshape(h, w), previous.reshape(h, w),
                            schedule.fill_passes).ravel()
        new_D = D
        if estimate:
            slope, variance = _offset_free_slope(sums)
            dark = _dark_offset(slope, variance, background)
            if dark is not None:
                offset, se, alpha, gamma, slope_weights = dark
                pattern = (background - offset) - slope / alpha  # in counts; zero mean and no G-part by construction
                pattern = smooth(pattern.reshape(h, w), DARK_SMOOTHNESS, slope_weights.reshape(h, w), 0.0,
                                 schedule.fill_passes).ravel()
                new_D = offset + pattern
        new_F = _positive_mean_one(background - new_D, xp)
        moved = float(xp.sqrt(xp.mean((new_F - F) ** 2)))
        dark_moved = float(xp.abs(new_D - D).max()) if estimate else 0.0
        F, D = new_F, new_D
        levels = _levels(weighted, weights, F, D)
        if moved < schedule.tolerance and dark_moved < 0.01:
            break
    return _MeanFit(F, D, levels, weights, weighted, dark)


def _check_darkfield(X, shape, fit: _MeanFit, strength: float, schedule: _Schedule) -> DarkfieldCheck:
    """The verdict on an estimated darkfield (see ``darkfield_verdict``); the halves (each refitted
    for ``SPLIT_PASSES`` passes from the whole fit's state) only when the other checks pass and
    there are at least ``SPLIT_MIN_IMAGES`` images: the even and the odd images (content that
    differs from image to image), then the first and the second half (content that changes along
    the series: a colony that grows as a time-lapse bleaches shifts the offset between them)."""
    xp = get_array_module(X)
    n = X.shape[0]
    if fit.dark is None:
        offset, se = float("nan"), float("inf")
    else:
        offset, se = float(fit.dark[0]), float(fit.dark[1])
    signal = float(fit.levels.mean())
    flat_spread = float(fit.F.std())
    min_background = float((fit.F * signal + fit.D).min()) if fit.dark is not None else 0.0
    reason, contradicts = darkfield_verdict(offset, se, signal, flat_spread, min_background)
    splits = {}
    for names, parts in ((("even", "odd images"), (slice(0, None, 2), slice(1, None, 2))),
                         (("first", "second half of the images"), (slice(0, n // 2), slice(n // 2, None)))):
        if reason or n < SPLIT_MIN_IMAGES:
            break
        halves = []
        for part in parts:
            half = _mean_passes(xp.ascontiguousarray(X[part]), shape, fit.F, fit.D, xp.ascontiguousarray(fit.weights[part]),
                                estimate=True, strength=strength, schedule=schedule, iterations=SPLIT_PASSES)
            halves.append((float("nan"), float("inf")) if half.dark is None else (float(half.dark[0]), float(half.dark[1])))
        splits[names[0]] = halves = tuple(halves)
        reason, contradicts = darkfield_verdict(offset, se, signal, flat_spread, min_background, halves, names)
    if n < 2:
        reason, contradicts = "one image has one background level, so offset and flat field cannot be separated", False
    return DarkfieldCheck(offset, se, reason, contradicts, splits.get("even"), splits.get("first"))


def fit_working_stack(stack, *, darkfield="estimate", statistic: str = "auto", smoothness: float = 1.0) -> WorkingFit:
    """Fit flat field, darkfield and per-image levels to a (N, h, w) float stack (NumPy or CuPy).

    The fast schedule runs first (see ``_Schedule``); when the data contradict its fit (see
    ``darkfield_verdict``) or its levels show objects in its background, the whole fit runs again
    by the careful schedule, whose result is kept (``diagnostics["careful"]`` gives the fast fit's
    reason): dense objects make a fast fit look contradictory. A darkfield that is merely not
    identifiable (equal levels, too little spread) is no reason: no schedule adds information.

    Parameters
    ----------
    stack : 3-D array
        Working-resolution images in counts.
    darkfield : "estimate", "off" or a 2-D array
        Estimate the darkfield, assume none, or use this one (counts, working resolution).
    statistic : {"auto", "mean", "median"}
        How the flat field is taken from the images once weights and levels are known: the
        robust weighted mean (objects on a background: plates, sparse cells), the per-pixel
        median of the level-normalised images (dense content: tissue tiles, confluent or growing
        cultures), or "auto": the mean unless the darkfield regression finds that the data
        contradict the mean's model (see ``darkfield_verdict``), then the median.
    smoothness : float
        Multiplies the flat field's smoothing penalty.

    Returns
    -------
    WorkingFit

    Examples
    --------
    >>> fit = fit_working_stack(small_stack)          # (N, h, w) counts at working resolution
    >>> fit.flatfield, fit.darkfield_status, fit.offset
    """
    xp = get_array_module(stack)
    n, h, w = stack.shape
    X = stack.reshape(n, h * w).astype(xp.float64, copy=False)
    strength = FLAT_SMOOTHNESS * float(smoothness) * max(1.0, FEW_IMAGES_BOOST / n**2)
    fixed = None if isinstance(darkfield, str) else xp.asarray(darkfield, dtype=xp.float64).reshape(h * w)
    estimate = isinstance(darkfield, str) and darkfield == "estimate"
    fast = _fit(X, (h, w), fixed, estimate, statistic, strength, _fast(n))
    doubt = fast.check.reason if fast.check is not None and fast.check.contradicts else ""
    if not doubt and _locked_on_objects(X, fast.fit):
        doubt = "its levels are more than 3 % from the images' median levels (objects in its background)"
    chosen = _fit(X, (h, w), fixed, estimate, statistic, strength, CAREFUL) if doubt else fast
    return chosen.result(h, w, estimate, careful=doubt)


@dataclass
class _Fitted:
    """One schedule's whole fit: the mean fit, the darkfield check, the statistic and flat field."""

    fit: _MeanFit
    check: DarkfieldCheck | None
    status: str
    statistic: str
    statistic_reason: str
    F: object
    levels: object
    strength: float

    def result(self, h: int, w: int, estimate: bool, careful: str) -> WorkingFit:
        xp = get_array_module(self.F)
        check = self.check
        offset = se = None
        reason = ""
        if estimate:
            offset, se, reason = check.offset, check.se, check.reason
        return WorkingFit(
            flatfield=self.F.reshape(h, w),
            darkfield=None if self.status in ("off", "not identifiable") else self.fit.D.reshape(h, w),
            levels=to_numpy(self.levels), darkfield_status=self.status, darkfield_reason=reason, offset=offset,
            offset_se=se, statistic=self.statistic, statistic_reason=self.statistic_reason,
            diagnostics={"rejected_fraction": float(xp.mean(self.fit.weights < 0.5)), "smoothness": self.strength,
                         "careful": careful,
                         "darkfield_offset_halves": None if check is None or check.halves is None
                         else [h_[0] for h_ in check.halves],
                         "darkfield_offset_sequence_halves": None if check is None or check.sequence_halves is None
                         else [h_[0] for h_ in check.sequence_halves]},
        )


def _fit(X, shape, fixed, estimate: bool, statistic: str, strength: float, schedule: _Schedule) -> _Fitted:
    """The whole fit by one schedule: the darkfield regression and its check (which also picks the
    statistic), the refit without a darkfield where it is not estimated, then the statistic."""
    xp = get_array_module(X)
    fit = check = None
    if estimate or statistic == "auto":  # the darkfield regression also tells which statistic suits the data
        zero = xp.zeros(X.shape[1])
        fit = _mean_passes(X, shape, _first_flat(X, zero, shape, strength), zero, estimate=True, strength=strength,
                           schedule=schedule)
        check = _check_darkfield(X, shape, fit, strength, schedule)
    chosen, statistic_reason = _choose_statistic(statistic, check)
    if estimate and not check.reason:
        status = "estimated"
    else:
        status = "given" if fixed is not None else ("not identifiable" if estimate else "off")
        D = fixed if fixed is not None else xp.zeros(X.shape[1])
        fit = _mean_passes(X, shape, _first_flat(X, D, shape, strength), D, estimate=False, strength=strength,
                           schedule=schedule)
    F, levels = fit.F, fit.levels
    if chosen == "median":
        F, levels = _median_flat(X, F, fit.D, fit.weighted, fit.weights, shape)
    return _Fitted(fit, check, status, chosen, statistic_reason, F, levels, strength)


def _choose_statistic(statistic: str, check: DarkfieldCheck | None) -> tuple[str, str]:
    """The statistic to use and why (one phrase)."""
    if statistic != "auto":
        return statistic, "as asked"
    if check.contradicts:
        return "median", f"dense content: {check.reason}"
    return "mean", "objects on a background (the darkfield regression found the images consistent with it)"


def _median_flat(X, F, D, weighted, weights, shape):
    """The flat field as the smoothed per-pixel median of ``(X_n - D) / B_n``, with each level B_n
    the median of ``(X_n - D) / F`` over its pixels (medians throughout: dense content has no
    background majority for the weights to find; images whose level is not positive are left out);
    passes until the flat field moves less than ``FLAT_TOLERANCE`` (at most ``MEDIAN_ITERATIONS``)."""
    xp = get_array_module(X)
    for _ in range(MEDIAN_ITERATIONS):
        levels = xp.median((X - D) / F, axis=1)
        usable = levels > 0
        if not bool(usable.any()):
            break
        if not bool(usable.all()):
            levels, values = levels[usable], X[usable]
        else:
            values = X
        ratios = (values - D) / levels[:, None]
        new_F = _positive_mean_one(smooth(median_over_images(ratios).reshape(shape), MEDIAN_SMOOTHNESS).ravel(), xp)
        moved = float(xp.sqrt(xp.mean((new_F - F) ** 2)))
        F = new_F
        if moved < FLAT_TOLERANCE:
            break
    return F, _levels(weighted, weights, F, D)


def median_over_images(values):
    """The median over the images (axis 0) of an (N, P) array, per pixel: each pixel's N values
    sorted in a contiguous (P, N) copy (on NumPy ~8x faster than a partition along axis 0 at
    N = 24; the same numbers as ``median(values, axis=0)``)."""
    xp = get_array_module(values)
    ordered = xp.sort(xp.ascontiguousarray(values.T), axis=1)
    n = ordered.shape[1]
    return 0.5 * (ordered[:, (n - 1) // 2] + ordered[:, n // 2])


def _positive_mean_one(F, xp):
    """F scaled to mean 1, with non-positive or non-finite values (no data) raised to a small floor."""
    F = xp.where(xp.isfinite(F), F, 0.0)
    mean = float(F.mean())
    if not mean > 0:
        return xp.ones_like(F)
    F = F / mean
    return xp.maximum(F, 1e-3)
