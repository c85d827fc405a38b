"""Least-squares polynomial surfaces (CellProfiler's "Fit Polynomial", extended).

The surface is a polynomial of total degree <= d in the row and column coordinates, both mapped to
[-1, 1], written in the Legendre basis P_a(u) P_b(v), a + b <= d. That basis keeps the normal
equations well conditioned up to degree 8 (cond(G) ~ 81 on a full grid, algorithms.md section 5),
so they are formed in float64 on the image's device and the small (<= 45 x 45) system is solved on
the host. Because the basis is separable, every sum over pixels is a pair of matrix products:
``G = R^T W C`` and ``b = P_r^T (W z) P_c`` with R, C the per-axis products P_a P_c, and the surface
is evaluated as ``P_r K P_c^T``.

Degree 2 without ``robust`` is the same least-squares problem as centrosome's
``smooth.fit_polynomial`` (monomials x, y, x^2, y^2, xy, 1 of the raw row/column indices span the
same space), so the surfaces agree to float64 rounding before the float32 cast.
"""
from __future__ import annotations

import numbers

import numpy as np

from .._checks import check_choice, check_image, check_mask
from ..backend import get_array_module, on_input_device, to_numpy
from .blocks import block_reduce
from ..errors import InvalidValue

MAX_DEGREE = 8
UNDETERMINED_CHOICES = ("minimum-norm", "raise")
FIT_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
TUKEY_C = 4.685
MAD_TO_SIGMA = 1.4826
ROBUST_ITERATIONS = 20


def legendre_columns(u, degree: int, xp):
    """(len(u), degree + 1) matrix of P_0(u) .. P_degree(u), by the three-term recurrence."""
    columns = [xp.ones_like(u), u]
    for n in range(1, degree):
        columns.append(((2 * n + 1) * u * columns[n] - n * columns[n - 1]) / (n + 1))
    return xp.stack(columns[: degree + 1], axis=1)


def _unit_coordinates(length: int, xp):
    """Pixel positions 0 .. length-1 mapped to [-1, 1] (a single pixel sits at 0)."""
    if length == 1:
        return xp.zeros(1, dtype=xp.float64)
    return xp.arange(length, dtype=xp.float64) * (2.0 / (length - 1)) - 1.0


def _terms(degree: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(degree + 1) for b in range(degree + 1 - a)]


def _pair_products(p):
    """(n, (d+1)^2) matrix of P_a * P_c for every (a, c), column index a * (d + 1) + c."""
    return (p[:, :, None] * p[:, None, :]).reshape(p.shape[0], -1)


def _normal_equations(values, weights, p_rows, p_cols, degree: int):
    """Weighted normal equations (G, b) of the Legendre fit, returned as host float64 arrays."""
    xp = get_array_module(values)
    k = degree + 1
    gram = to_numpy(_pair_products(p_rows).T @ weights @ _pair_products(p_cols))
    moments = to_numpy(p_rows.T @ (weights * values) @ p_cols)
    gram = gram.reshape(k, k, k, k)  # [a, c, b, e]
    terms = _terms(degree)
    rows_a = np.array([a for a, _ in terms])
    cols_b = np.array([b for _, b in terms])
    g = gram[rows_a[:, None], rows_a[None, :], cols_b[:, None], cols_b[None, :]]
    return g, moments[rows_a, cols_b]


class UndeterminedFit(InvalidValue):
    """The valid pixels do not fix every coefficient (they lie on a curve of the fit's degree, e.g.
    one row or two lines for a quadratic): many surfaces fit them equally well."""


# smallest / largest eigenvalue of the Legendre normal matrix below which the fit is undetermined:
# about 1e-16 when it is (rounding), and at least ~1 / (number of valid pixels) when one pixel off
# the curve fixes the last coefficient
_UNDETERMINED = 1e-9


def _solve(values, weights, p_rows, p_cols, degree: int, undetermined: str = "minimum-norm") -> np.ndarray:
    """Coefficients as a (d+1, d+1) host matrix K (K[a, b] = 0 for a + b > d); an undetermined fit
    gets the minimum-norm coefficients, or raises UndeterminedFit with ``undetermined="raise"``."""
    g, rhs = _normal_equations(values, weights, p_rows, p_cols, degree)
    if undetermined == "raise":
        eigenvalues = np.linalg.eigvalsh(g)
        if eigenvalues[0] <= _UNDETERMINED * eigenvalues[-1]:
            raise UndeterminedFit(f"mask: the valid pixels lie on a curve of degree {degree} (e.g. one row), so they do "
                                  "not fix a single polynomial surface")
    solution = np.linalg.lstsq(g, rhs, rcond=None)[0]  # minimum norm when the data cannot fix a term
    k = np.zeros((degree + 1, degree + 1))
    for (a, b), c in zip(_terms(degree), solution):
        k[a, b] = c
    return k


def _check_degree(degree) -> int:
    if isinstance(degree, bool) or not isinstance(degree, numbers.Integral) or not 0 <= degree <= MAX_DEGREE:
        raise InvalidValue(f"degree: expected an integer in [0, {MAX_DEGREE}], got {degree!r}")
    return int(degree)


def _check_clip(clip):
    if clip is None:
        return None
    if (
        not isinstance(clip, (tuple, list))
        or len(clip) != 2
        or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in clip)
        or not clip[0] <= clip[1]
    ):
        raise InvalidValue(f"clip: expected None or a (low, high) pair with low <= high, got {clip!r}")
    return float(clip[0]), float(clip[1])


def robust_block_size(shape) -> int:
    """Block size of the robust fit: 1/64 of the longer side, within [16, 32] pixels."""
    return int(min(32, max(16, max(shape) // 64)))


def _robust_coefficients(image, valid, degree: int) -> np.ndarray:
    """IRLS (Tukey biweight, MAD scale) fit to block medians of the valid pixels, on the host."""
    grid = to_numpy(block_reduce(image, robust_block_size(image.shape), stat="median", mask=valid)).astype(np.float64)
    present = np.isfinite(grid)  # blocks without a valid pixel are NaN and get no weight
    values = np.where(present, grid, 0.0)
    p_rows = legendre_columns(_unit_coordinates(grid.shape[0], np), degree, np)
    p_cols = legendre_columns(_unit_coordinates(grid.shape[1], np), degree, np)
    weights = present.astype(np.float64)
    coefficients = _solve(values, weights, p_rows, p_cols, degree)
    for _ in range(ROBUST_ITERATIONS):
        residual = (values - p_rows @ coefficients @ p_cols.T)[present]
        scale = MAD_TO_SIGMA * np.median(np.abs(residual - np.median(residual)))
        if not scale > 0:
            break
        ratio = np.zeros_like(grid)
        ratio[present] = residual / (TUKEY_C * scale)
        weights = np.where(present & (np.abs(ratio) < 1), (1 - ratio**2) ** 2, 0.0)
        updated = _solve(values, weights, p_rows, p_cols, degree)
        converged = np.max(np.abs(updated - coefficients)) <= 1e-9 * max(1.0, np.max(np.abs(updated)))
        coefficients = updated
        if converged:
            break
    return coefficients


@on_input_device
def fit_polynomial(image, degree: int = 2, *, mask=None, robust: bool = False, exclude_zeros: bool = True, clip=None,
                   undetermined: str = "minimum-norm"):
    """Least-squares polynomial surface of total degree ``degree`` (0..8) fitted to ``image``, float32.

    Valid pixels: ``mask`` (all when None) and, with ``exclude_zeros``, pixels > 0 (CellProfiler
    ignores zero and negative pixels). If no pixel is valid the input is returned as float32,
    as CellProfiler returns it unchanged. ``clip=(low, high)`` clips the surface; ``(0, 1)`` is
    CellProfiler's clip=True. Without ``robust``, every valid pixel counts equally (degree 2 ==
    centrosome ``fit_polynomial``). With ``robust=True`` the fit runs on per-block medians
    (``robust_block_size``) with Tukey biweight IRLS (c = 4.685, MAD scale, up to 20 iterations,
    stopping early when the coefficients settle), so bright objects covering part of the field do
    not pull the surface up; the block grid (O(H W / 256) values) is copied to the host for the
    solve. Measured on 256x256 vignetting fields with bright cells: with cells on 15-20 % of the
    pixels the robust degree-4/6 fit is within 0.3-0.7 % (mean) of the true field, where plain
    least squares is off by ~10-25 %; once cells cover ~35 % or more, many block medians are
    cells themselves and the robust fit degrades to 3-9 %.

    When the valid pixels do not fix every coefficient (all on one row, one line, or, for degree 2,
    two lines) the fit takes the coefficients of minimum norm in its Legendre basis, or, without
    ``robust`` and with ``undetermined="raise"``, raises :class:`UndeterminedFit` (for a caller
    that follows another convention).
    """
    image = check_image(image, dtypes=FIT_DTYPES)
    degree = _check_degree(degree)
    mask = check_mask(mask, image)
    clip = _check_clip(clip)
    check_choice(undetermined, "undetermined", UNDETERMINED_CHOICES)
    xp = get_array_module(image)
    valid = xp.ones(image.shape, dtype=bool) if mask is None else mask
    if exclude_zeros:
        valid = valid & (image > 0)
    if not bool(valid.any()):
        return image.astype(xp.float32)
    p_rows = legendre_columns(_unit_coordinates(image.shape[0], xp), degree, xp)
    p_cols = legendre_columns(_unit_coordinates(image.shape[1], xp), degree, xp)
    if robust:
        coefficients = _robust_coefficients(image, valid, degree)
    else:
        coefficients = _solve(image.astype(xp.float64), valid.astype(xp.float64), p_rows, p_cols, degree, undetermined)
    surface = p_rows @ xp.asarray(coefficients) @ p_cols.T
    if clip is not None:
        surface = xp.clip(surface, clip[0], clip[1])
    return surface.astype(xp.float32)
