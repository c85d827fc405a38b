"""Image sets with a known flat field of any shape, depth, camera offset and cell density.

The QC metrics and the ``--method auto`` score are validated on these: each set follows the
camera model of gpuillum.demo.synthetic, ``image = dark + flat * (background + cells)`` with shot
and read noise, but the flat field's shape and depth (its max / min), the offset, the background
level and the share of the field covered by cells are chosen, so a metric can be checked across
all of them (and on a perfectly flat field, where it must say so).

Flat-field shapes: ``vignetting`` (the demo plate's off-centre, tilted cos^4 fall-off),
``gaussian`` (a broad off-centre bump), ``ramp`` (brighter towards one side, as in the blog's
Figure 1A), ``spot`` (a bright spot in a dimmer field, the blog's Figure 6), ``flat`` (none).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._checks import check_choice
from ..errors import InvalidValue
from .synthetic import CELL_BRIGHTNESS, _draw_cells, _draw_flat_params, _stamp, _vignetting, add_camera_noise

FLAT_SHAPES = ("vignetting", "gaussian", "ramp", "spot", "flat")
_SHAPE, _SITE, _NOISE, _LEVEL = 11, 12, 13, 14  # random-stream purposes


def _unit_shape(kind: str, shape, rng: np.random.Generator) -> np.ndarray:
    """The flat field's shape scaled to [0, 1] (1 at its peak), float64."""
    h, w = shape
    y = (np.arange(h)[:, None] - (h - 1) / 2) / min(h, w)
    x = (np.arange(w)[None, :] - (w - 1) / 2) / min(h, w)
    if kind == "flat":
        return np.zeros(shape)
    if kind == "vignetting":
        surface = _vignetting(_draw_flat_params(rng, shape), shape)
    elif kind == "ramp":
        angle = rng.uniform(0, 2 * math.pi)
        surface = y * math.sin(angle) + x * math.cos(angle)
    else:
        spread = rng.uniform(0.35, 0.6) if kind == "gaussian" else rng.uniform(0.12, 0.2)
        cy, cx = rng.uniform(-0.2, 0.2, size=2)
        surface = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * spread**2))
    return (surface - surface.min()) / (surface.max() - surface.min())


@dataclass(frozen=True)
class ShadingCase:
    """One image set with known illumination.

    Parameters
    ----------
    kind : one of FLAT_SHAPES
    depth : float
        The flat field's max / min (1: flat).
    dark : float
        The camera offset in counts (a constant darkfield).
    background : float
        The specimen's background before shading, in counts.
    coverage : (float, float)
        Range of the share of the field inside cells (drawn per image).
    spread : float
        Each image's specimen brightness (background and cells) is ``1 +- spread`` (uniform, drawn
        per image): the field-to-field and well-to-well variation of a plate. 0 (the default) makes
        every image equally bright, so a camera offset cannot be told from the flat field by the
        backgrounds alone.
    brightness : float
        The cells' brightness above the background, in counts.
    images, shape, seed : the set's size and random seed.

    Examples
    --------
    >>> case = ShadingCase("spot", depth=1.6, dark=200, coverage=(0.3, 0.4))
    >>> stack, flat = case.images_uint16(), case.flat()
    """

    kind: str = "vignetting"
    depth: float = 1.5
    dark: float = 100.0
    background: float = 400.0
    coverage: tuple = (0.10, 0.20)
    spread: float = 0.0
    brightness: float = CELL_BRIGHTNESS["cytoplasm"]
    images: int = 24
    shape: tuple = (192, 192)
    seed: int = 0

    def __post_init__(self):
        check_choice(self.kind, "kind", FLAT_SHAPES)
        if not self.depth >= 1:
            raise InvalidValue(f"depth: expected the flat field's max / min >= 1, got {self.depth!r}")
        if self.dark < 0 or self.background <= 0 or self.images < 1:
            raise InvalidValue("dark >= 0, background > 0 and images >= 1 expected")
        if not 0 <= self.spread < 1:
            raise InvalidValue(f"spread: expected 0 <= spread < 1, got {self.spread!r}")

    def flat(self) -> np.ndarray:
        """The true flat field: float32, mean 1, max / min = ``depth`` (1 everywhere for ``flat``)."""
        unit = _unit_shape(self.kind, self.shape, np.random.default_rng([self.seed, _SHAPE]))
        field = 1.0 + (self.depth - 1.0) * unit
        return (field / field.mean()).astype(np.float32)

    def darkfield(self) -> np.ndarray:
        return np.full(self.shape, self.dark, np.float32)

    def levels(self) -> np.ndarray:
        """Each image's brightness factor (float64, all 1 with ``spread=0``)."""
        if not self.spread:
            return np.ones(self.images)
        return np.random.default_rng([self.seed, _LEVEL]).uniform(1 - self.spread, 1 + self.spread, self.images)

    def images_uint16(self) -> list[np.ndarray]:
        """The set's images (uint16), each with its own cells and noise."""
        flat = self.flat()
        levels = self.levels()
        out = []
        for index in range(self.images):
            cells = _draw_cells(np.random.default_rng([self.seed, _SITE, index]), self.shape, self.coverage)
            values = cells.body * (1.0 - 0.4 * cells.nucleus) * cells.body_brightness[:, None, None]
            specimen = np.float32(self.background) + np.float32(self.brightness) * _stamp(cells, values, self.shape)
            if self.spread:
                specimen *= np.float32(levels[index])
            noisy = add_camera_noise(flat * specimen, np.random.default_rng([self.seed, _NOISE, index]))
            out.append(np.clip(np.rint(noisy + np.float32(self.dark)), 0, 65535).astype(np.uint16))
        return out
