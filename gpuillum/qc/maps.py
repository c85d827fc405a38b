"""Where the background and the cells are, block by block: the maps every QC metric is measured on.

An image is cut into a grid of blocks (GRID along its longer side). In each block:

* the **noise** is the robust standard deviation of differences between horizontal neighbours
  (MAD / 0.6745 / sqrt 2): cells are smooth at that scale, so they barely change it;
* the **background** is the median of the pixels no more than CLIP_SIGMAS noise above the block's
  10th percentile: cells, brighter than that, are left out, and the median of what is left is
  the background level itself (a low quantile alone would sit ~1.3 noise below it, a bias that
  grows where a correction amplifies the noise);
* the **foreground** is the median excess over that background of the pixels more than
  FOREGROUND_SIGMAS noise above it (the cells), when at least MIN_FOREGROUND of the block is
  such pixels; its level scales with the illumination's gain at that place, whatever the
  camera offset and however many cells there are.

Over a group of images the maps are combined by the median per block (a block that holds a
cluster of cells in one image holds background in most others), each image's background map
first divided by its own level so that exposure or staining differences between images do not
add noise. Everything runs on the images' backend (NumPy or CuPy); the maps are small.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from ..backend import get_array_module, to_numpy
from ..errors import InvalidValue

GRID = 16  # blocks along the longer side
MIN_BLOCK = 4  # pixels per block side, at least
LOW_QUANTILE = 10.0
CLIP_SIGMAS = 3.0
FOREGROUND_SIGMAS = 5.0
ACROSS_IMAGES = 25.0  # a block's background over the images: a low quantile (cells only ever raise it)
MIN_FOREGROUND = 0.005  # a block's foreground excess counts when at least 0.5 % of its pixels are cells
MAD_TO_SIGMA = 1.0 / (0.6745 * math.sqrt(2.0))  # robust sigma of a pixel from its neighbour differences
MAX_SIDE = 512  # QC pictures and maps are measured on images block-averaged to at most this side


def shrink(image, max_side: int = MAX_SIDE):
    """``image`` block-averaged by the smallest integer factor that fits ``max_side``, float32 on its backend.

    A side shorter than the factor is averaged whole (a 16 x 10000 image keeps one row), so any
    non-empty image has a small copy.

    Examples
    --------
    >>> shrink(np.ones((2160, 2160), np.uint16)).shape
    (432, 432)
    """
    xp = get_array_module(image)
    factor = max(1, math.ceil(max(image.shape) / max_side))
    if factor == 1:
        return xp.asarray(image, dtype=xp.float32)
    rows, cols = (min(factor, side) for side in image.shape)
    h, w = image.shape[0] // rows, image.shape[1] // cols
    small = xp.asarray(image[: h * rows, : w * cols], dtype=xp.float32).reshape(h, rows, w, cols)
    return small.mean(axis=(1, 3), dtype=xp.float64).astype(xp.float32)


def grid_shape(shape, grid: int = GRID) -> tuple[int, int]:
    """Blocks along each axis for an image of ``shape``: ``grid`` along the longer side, square
    blocks, each at least MIN_BLOCK pixels."""
    h, w = shape
    side = max(MIN_BLOCK, int(max(h, w) // grid))
    return max(1, h // side), max(1, w // side)


def _blocks(image, grid_yx, xp):
    """(by, bx, bh, bw) view of the image's pixels per block (trailing rows and columns dropped)."""
    by, bx = grid_yx
    bh, bw = image.shape[0] // by, image.shape[1] // bx
    values = xp.asarray(image[: by * bh, : bx * bw], dtype=xp.float32)
    return values.reshape(by, bh, bx, bw).transpose(0, 2, 1, 3)


@dataclass
class ImageMaps:
    """The block maps of one image (NumPy float64, shape = the grid): background level, noise,
    median foreground excess (NaN where too few cells) and the share of foreground pixels."""

    background: np.ndarray
    noise: np.ndarray
    foreground: np.ndarray
    coverage: np.ndarray

    @property
    def level(self) -> float:
        """The image's background level: the median of its block backgrounds."""
        return float(np.median(self.background))


def image_maps(image, grid_yx=None) -> ImageMaps:
    """The block maps of one 2-D image (see the module docstring).

    Parameters
    ----------
    image : 2-D NumPy or CuPy array, any real dtype
    grid_yx : (int, int), optional
        Blocks along each axis (default: :func:`grid_shape`).

    Returns
    -------
    ImageMaps

    Examples
    --------
    >>> maps = image_maps(raw)
    >>> maps.background / maps.level          # the background's shape, 1 at its median
    """
    if getattr(image, "ndim", None) != 2 or min(image.shape) < 2 * MIN_BLOCK:
        raise InvalidValue(f"image: expected a 2-D array of at least {2 * MIN_BLOCK}x{2 * MIN_BLOCK} pixels, "
                           f"got shape {getattr(image, 'shape', None)}")
    xp = get_array_module(image)
    grid_yx = grid_shape(image.shape) if grid_yx is None else grid_yx
    blocks = _blocks(image, grid_yx, xp)
    by, bx, bh, bw = blocks.shape
    flat = blocks.reshape(by, bx, bh * bw)
    diffs = xp.abs(xp.diff(blocks, axis=3)).reshape(by, bx, -1)
    noise = xp.median(diffs, axis=2) * xp.float32(MAD_TO_SIGMA)
    low = xp.percentile(flat, LOW_QUANTILE, axis=2)
    cutoff = low + xp.float32(CLIP_SIGMAS) * noise
    kept = xp.where(flat <= cutoff[..., None], flat, xp.nan)
    background = xp.nanmedian(kept, axis=2)
    excess = flat - background[..., None]
    cells = excess > xp.float32(FOREGROUND_SIGMAS) * xp.maximum(noise, xp.float32(1e-6))[..., None]
    coverage = cells.mean(axis=2)
    foreground = _nanmedian(xp.where(cells, excess, xp.nan), xp)
    foreground = xp.where(coverage >= MIN_FOREGROUND, foreground, xp.nan)
    as_host = (lambda a: to_numpy(a).astype(np.float64))
    return ImageMaps(as_host(background), as_host(noise), as_host(foreground), as_host(coverage))


@dataclass
class GroupMaps:
    """A group's maps: the median over its images, per block.

    ``background``: the background level per block (the images' maps each scaled to the group's
    median level first); ``foreground``: the median foreground excess (NaN where no image had
    cells there); ``level``: the median background level of the images; ``signal``: the median
    foreground excess over all blocks (the cells' brightness above the background);
    ``noise``: the median noise; ``per_image``: each image's ImageMaps; ``halves``: the
    background and foreground maps of the even and of the odd images (for the noise floor).
    """

    background: np.ndarray
    foreground: np.ndarray
    level: float
    signal: float
    noise: float
    per_image: list
    halves: tuple


def _nanmedian(values, xp, axis: int = -1):
    """The median of the finite values along ``axis``; NaN (and no warning) where there are none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return xp.nanmedian(values, axis=axis)


def _combine(maps: list[ImageMaps], level: float):
    scaled = [m.background * (level / m.level) if m.level > 0 else m.background for m in maps]
    background = np.percentile(np.stack(scaled), ACROSS_IMAGES, axis=0)
    foreground = _nanmedian(np.stack([m.foreground for m in maps]), np, axis=0)
    return background, foreground


def group_maps(images, grid_yx=None) -> GroupMaps:
    """The maps of a group of same-shape images (a list or a 3-D stack; see :class:`GroupMaps`).

    Examples
    --------
    >>> maps = group_maps(stack)
    >>> maps.background.max() / maps.background.min()     # the background's peak-to-valley ratio
    """
    images = list(images)
    if not images:
        raise InvalidValue("images: expected at least one image, got none")
    shape = tuple(images[0].shape)
    for index, image in enumerate(images):
        if tuple(image.shape) != shape:
            raise InvalidValue(f"images: image {index} has shape {tuple(image.shape)}, expected {shape} like image 0")
    grid_yx = grid_shape(shape) if grid_yx is None else grid_yx
    maps = [image_maps(image, grid_yx) for image in images]
    level = float(np.median([m.level for m in maps]))
    background, foreground = _combine(maps, level)
    halves = tuple(_combine(part, level) for part in (maps[0::2], maps[1::2])) if len(maps) >= 2 else ()
    finite = foreground[np.isfinite(foreground)]
    signal = float(np.median(finite)) if finite.size else float("nan")
    noise = float(np.median([np.median(m.noise) for m in maps]))
    return GroupMaps(background, foreground, level, signal, noise, maps, halves)
