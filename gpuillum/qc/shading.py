"""How uneven a block map is: the numbers a person reads off a brightened image, measured.

:func:`shading` takes a block map (gpuillum.qc.maps: the background level, or the cells'
foreground excess, per block) and returns, relative to the map's mean:

* ``cv``: standard deviation over mean (0 for an evenly lit field);
* ``peak_to_valley``: (max - min) / mean of a smooth surface (a 2-D polynomial of degree up to
  FIT_DEGREE, least squares) fitted to the map, so one noisy block does not set it;
* ``centre_corner``: the mean of the central blocks over the mean of the four corners' blocks
  (> 1: the centre is brighter, vignetting; < 1: the corners are, an over-correction);
* ``radial``, ``rows``, ``columns``: the map's profiles (mean per ring of distance from the
  centre, per row, per column), each relative to the mean, for plots and reports.

A map whose mean is not clearly above zero (a subtracted background) has no relative shading:
every number is None and ``reason`` says why.
"""
from __future__ import annotations

import math

import numpy as np

FIT_DEGREE = 4
RADIAL_BINS = 8
CENTRE_FRACTION = 0.25  # the central box: a quarter of each side
CORNER_FRACTION = 0.125  # each corner box: an eighth of each side


def _box(shape, fraction, anchor):
    slices = []
    for axis, size in enumerate(shape):
        n = max(1, int(round(size * fraction)))
        start = (size - n) // 2 if anchor == "centre" else (0 if anchor[axis] == 0 else size - n)
        slices.append(slice(start, start + n))
    return tuple(slices)


def _coordinates(shape):
    """Block centres scaled to [-1, 1] along each axis."""
    h, w = shape
    y = (np.arange(h) + 0.5) / h * 2 - 1
    x = (np.arange(w) + 0.5) / w * 2 - 1
    return np.meshgrid(y, x, indexing="ij")


def smooth_fit(values) -> np.ndarray:
    """A 2-D polynomial surface (degree up to FIT_DEGREE, fewer terms than finite blocks) fitted by
    least squares to the finite blocks of ``values``; evaluated on every block.

    Examples
    --------
    >>> surface = smooth_fit(maps.background)
    """
    values = np.asarray(values, dtype=np.float64)
    y, x = _coordinates(values.shape)
    finite = np.isfinite(values)
    count = int(finite.sum())
    degree = FIT_DEGREE
    while degree > 0 and (degree + 1) * (degree + 2) // 2 > max(1, count // 2):
        degree -= 1
    terms = [y**i * x**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    design = np.stack([t[finite] for t in terms], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, values[finite], rcond=None)
    return sum(c * t for c, t in zip(coefficients, terms))


def radial_profile(values, bins: int = RADIAL_BINS) -> list:
    """Mean of ``values`` per ring of distance from the centre (0 = centre, 1 = a corner); None for an empty ring."""
    y, x = _coordinates(values.shape)
    radius = np.sqrt(y * y + x * x) / math.sqrt(2.0)
    index = np.minimum((radius * bins).astype(int), bins - 1)
    out = []
    for ring in range(bins):
        chosen = values[(index == ring) & np.isfinite(values)]
        out.append(float(chosen.mean()) if chosen.size else None)
    return out


def _rounded(values) -> list:
    return [None if v is None or not np.isfinite(v) else round(float(v), 4) for v in values]


def shading(values, *, floor: float = 0.0) -> dict:
    """The relative unevenness of a block map (see the module docstring).

    Parameters
    ----------
    values : 2-D array
        A block map; NaN blocks are left out.
    floor : float
        The map's mean must exceed this (e.g. a few noise standard deviations) for relative
        numbers to mean anything.

    Returns
    -------
    dict with cv, peak_to_valley, centre_corner, radial, rows, columns, mean (JSON types), and
    ``reason`` (None, or why the numbers are None).

    Examples
    --------
    >>> shading(maps.background)["peak_to_valley"]          # 0.3: the fit varies by 30 % of the mean
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    empty = {"cv": None, "peak_to_valley": None, "centre_corner": None, "radial": [], "rows": [], "columns": [], "mean": None}
    if int(finite.sum()) < 4:
        return {**empty, "reason": "too few blocks with a value"}
    mean = float(values[finite].mean())
    if not mean > floor:
        return {**empty, "mean": mean, "reason": f"the level ({mean:.4g}) is not above the noise ({floor:.3g}): nothing to divide by"}
    relative = values / mean
    surface = smooth_fit(relative)
    centre = relative[_box(values.shape, CENTRE_FRACTION, "centre")]
    corners = np.concatenate([relative[_box(values.shape, CORNER_FRACTION, c)].ravel() for c in ((0, 0), (0, 1), (1, 0), (1, 1))])
    centre_mean, corner_mean = np.nanmean(centre) if np.isfinite(centre).any() else np.nan, \
        np.nanmean(corners) if np.isfinite(corners).any() else np.nan
    with np.errstate(all="ignore"):
        rows = [np.nanmean(r) if np.isfinite(r).any() else np.nan for r in relative]
        columns = [np.nanmean(c) if np.isfinite(c).any() else np.nan for c in relative.T]
    return {
        "cv": round(float(np.std(relative[finite])), 6),
        "peak_to_valley": round(float(surface.max() - surface.min()), 6),
        "centre_corner": None if not np.isfinite(centre_mean / corner_mean) else round(float(centre_mean / corner_mean), 6),
        "radial": _rounded(radial_profile(relative)),
        "rows": _rounded(rows),
        "columns": _rounded(columns),
        "mean": mean,
        "reason": None,
    }
