"""Synthetic plates with a known flat field and darkfield, for tests and benchmarks of the estimator.

Every image follows ``I_n = F * (b * u_n + cells_n) + D`` with Poisson shot noise (gain 1 count
per electron) and Gaussian read noise, rounded and clipped to uint16:

* F, one of ``SHAPES`` (mean 1): "gaussian" (off-centre anisotropic Gaussian, far corner ~0.45
  of the peak), "cos4" (off-centre, tilted cos^4 vignetting, max/min ~9, like BaSiC's demo
  stacks), "gradient" (a tilted, slightly curved ramp), "flattop" (a flat centre with a steep
  super-Gaussian fall-off to ~0.2 in the corners);
* D: a constant ``dark`` plus a faint smooth pattern of +-``dark_pattern`` counts (a camera's
  offset map);
* b: the background level in electrons ("bright": 300, "dim": 50); u_n: each image's brightness
  (uniform in 1 +- ``spread`` for a plate: field-to-field and well-to-well variation; a bleaching
  exponential for a time-lapse; 1 for every image with ``spread=0``);
* cells: soft-edged ellipses (semi-axes 6-19 px, lognormal brightness of mean ``cell_level``,
  default 4 b) covering about ``density`` of the field, drawn anew for every image.

Random numbers come from one generator seeded by ``seed``: a plate is the same for a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import InvalidValue

SHAPES = ("gaussian", "cos4", "gradient", "flattop")
READ_NOISE = 1.5
CELL_AREA = math.pi * 9.0**2 * 1.2  # mean area of a cell (pixels)


def flat_field(kind: str, shape) -> np.ndarray:
    """The true flat field ``kind`` (one of SHAPES) at ``shape``, float64, mean 1."""
    h, w = shape
    y = (np.arange(h) + 0.5)[:, None] / h
    x = (np.arange(w) + 0.5)[None, :] / w
    if kind == "gaussian":
        field = np.exp(-0.5 * (((y - 0.45) / 0.55) ** 2 + ((x - 0.55) / 0.65) ** 2))
    elif kind == "cos4":
        radius = np.hypot((y - 0.4) * 1.1, x - 0.58) + 0.12 * (0.6 * (y - 0.5) + 0.8 * (x - 0.5))
        field = 1.0 / (1.0 + (radius / 0.62) ** 2) ** 2
    elif kind == "gradient":
        field = 1.0 + 0.45 * (x - 0.5) + 0.2 * (y - 0.5) - 0.3 * ((x - 0.5) ** 2 + (y - 0.6) ** 2)
    elif kind == "flattop":
        field = np.exp(-(((y - 0.52) / 0.62) ** 2 + ((x - 0.47) / 0.7) ** 2) ** 2)
    else:
        raise InvalidValue(f"kind: expected one of {', '.join(SHAPES)}, got {kind!r}")
    field = field * np.ones((h, w))
    return field / field.mean()


def dark_field(offset: float, shape, rng: np.random.Generator, pattern: float) -> np.ndarray:
    """``offset`` plus a smooth cosine pattern of amplitude ``pattern`` (< 1 cycle per field)."""
    h, w = shape
    y = np.linspace(0, 1, h)[:, None]
    x = np.linspace(0, 1, w)[None, :]
    fy, fx, phase = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0, 2 * math.pi)
    return offset + pattern * np.cos(2 * math.pi * (fy * y + fx * x) + phase)


def draw_cells(rng: np.random.Generator, shape, density: float, level: float) -> np.ndarray:
    """Cell signal of one image (float64): soft ellipses covering about ``density`` of the field."""
    h, w = shape
    out = np.zeros((h, w))
    for _ in range(rng.poisson(density * h * w / CELL_AREA)):
        cy, cx = rng.uniform(-10, h + 10), rng.uniform(-10, w + 10)
        a = rng.uniform(6, 12)
        b = a * rng.uniform(1.0, 1.6)
        angle = rng.uniform(0, math.pi)
        amplitude = level * rng.lognormal(-0.125, 0.5)  # mean 1
        reach = int(b + 3)
        y0, y1 = max(0, int(cy) - reach), min(h, int(cy) + reach + 1)
        x0, x1 = max(0, int(cx) - reach), min(w, int(cx) + reach + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = np.arange(y0, y1)[:, None] - cy
        xx = np.arange(x0, x1)[None, :] - cx
        u = yy * math.cos(angle) + xx * math.sin(angle)
        v = -yy * math.sin(angle) + xx * math.cos(angle)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        out[y0:y1, x0:x1] += amplitude * 0.5 * (1 - np.tanh((rho - 1) / 0.15))
    return out


@dataclass
class TruthPlate:
    """Images and the truth they were made from."""

    images: np.ndarray  # (N, Y, X) uint16
    flatfield: np.ndarray  # float64, mean 1
    darkfield: np.ndarray  # float64 counts
    baseline: np.ndarray  # (N,) b * u_n, the background level of each image (corrected counts)


def make_plate(n: int, shape=(512, 512), *, kind: str = "gaussian", dark: float = 100.0, background: float = 300.0,
               density: float = 0.15, cell_level: float | None = None, spread: float = 0.1, timelapse: bool = False,
               dark_pattern: float = 1.0, seed: int = 0) -> TruthPlate:
    """``n`` images of a synthetic plate (see the module docstring) and its truth.

    Examples
    --------
    >>> plate = make_plate(24, (256, 256), kind="cos4", dark=400, background=50, seed=1)
    >>> plate.images.shape, plate.images.dtype
    ((24, 256, 256), dtype('uint16'))
    """
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    flat = flat_field(kind, shape)
    darkfield = dark_field(dark, shape, rng, dark_pattern)
    level = 4 * background if cell_level is None else cell_level
    if timelapse:
        brightness = np.exp(-np.arange(n) / max(n / 1.5, 1e-9))
    else:
        brightness = rng.uniform(1 - spread, 1 + spread, n)
    images = np.empty((n,) + shape, np.uint16)
    for i in range(n):
        cells = draw_cells(rng, shape, density, level * (brightness[i] if timelapse else 1.0))
        electrons = flat * (background * brightness[i] + cells)
        counts = rng.poisson(electrons) + READ_NOISE * rng.standard_normal(shape) + darkfield
        images[i] = np.clip(np.rint(counts), 0, 65535)
    return TruthPlate(images, flat, darkfield, background * brightness)


def flat_error_percent(estimate, truth, border: int | None = None) -> float:
    """RMS difference (percent) of the mean-normalised flat fields inside ``border`` pixels
    (default: 1/16 of the longest side)."""
    inner = _inner(np.asarray(truth).shape, border)
    a = np.asarray(estimate, dtype=np.float64)[inner]
    b = np.asarray(truth, dtype=np.float64)[inner]
    return float(100 * np.sqrt(np.mean((a / a.mean() - b / b.mean()) ** 2)))


def dark_error_counts(estimate, truth, border: int | None = None) -> float:
    """Mean absolute difference (counts) of the darkfields inside the border (None counts as 0)."""
    inner = _inner(np.asarray(truth).shape, border)
    estimate = np.zeros_like(truth) if estimate is None else np.asarray(estimate, dtype=np.float64)
    return float(np.mean(np.abs(estimate[inner] - np.asarray(truth)[inner])))


def _inner(shape, border):
    border = max(shape) // 16 if border is None else border
    return tuple(slice(border, max(border + 1, length - border)) for length in shape)
