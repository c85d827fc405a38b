"""Quality-control pictures: an illumination function in colour, and before/after montages.

People check a correction by eye: brighten the images and see whether one side stays brighter.
These pictures do that with fixed rules (same display scaling for both halves, column-mean
profiles under each half), written as PNG with the built-in encoder and annotated with a tiny
5x7 bitmap font, so no plotting package is needed. Large images are block-averaged to at most
``max_size`` pixels per side first; only that small copy leaves the GPU.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module, to_numpy
from .png import apply_colormap, display_limits, rescale01, write_png
from ..errors import InvalidValue

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (200, 200, 200)
PROFILE_BEFORE = (200, 60, 40)
PROFILE_AFTER = (30, 90, 200)
MARGIN = 12
GAP = 8

# 5x7 glyphs, one string of 7 rows of 5 pixels each ("#" = ink).
_GLYPHS = {
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    ".": "00000 00000 00000 00000 00000 01100 01100", "-": "00000 00000 00000 11111 00000 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000", ":": "00000 01100 01100 00000 01100 01100 00000",
    "/": "00000 00001 00010 00100 01000 10000 00000", "%": "11000 11001 00010 00100 01000 10011 00011",
    "=": "00000 00000 11111 00000 11111 00000 00000", " ": "00000 00000 00000 00000 00000 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010", ")": "01000 00100 00010 00010 00010 00100 01000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "A": "01110 10001 10001 10001 11111 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
}
GLYPH_H, GLYPH_W = 7, 5


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean ink mask of ``text``, 7 * ``scale`` pixels high (upper-cased; characters without a
    glyph are left blank)."""
    columns = []
    for char in text.upper():
        rows = _GLYPHS.get(char, _GLYPHS[" "]).split()
        glyph = np.array([[bit == "1" for bit in row] for row in rows], dtype=bool)
        columns += [glyph, np.zeros((GLYPH_H, 1), dtype=bool)]
    mask = np.concatenate(columns[:-1], axis=1) if columns else np.zeros((GLYPH_H, 0), dtype=bool)
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def _draw_text(canvas, text, top, left, scale, colour=BLACK, align="left"):
    """Paint ``text`` onto an RGB canvas; ``align`` says whether ``left`` is its left, centre or right."""
    mask = text_mask(text, scale)
    width = mask.shape[1]
    if align == "centre":
        left -= width // 2
    elif align == "right":
        left -= width
    left = max(0, min(left, canvas.shape[1] - width))
    region = canvas[top : top + mask.shape[0], left : left + width]
    region[mask[: region.shape[0], : region.shape[1]]] = colour


def _shrink(image, max_size):
    """Block-average ``image`` by the smallest integer factor that fits ``max_size``; float64 NumPy.

    A side shorter than that factor (a 16 x 10000 image) is averaged whole into one pixel instead
    of rounding to none, so any non-empty image has a preview."""
    xp = get_array_module(image)
    factor = max(1, math.ceil(max(image.shape) / max_size))
    rows, cols = (min(factor, side) for side in image.shape)
    h, w = image.shape[0] // rows, image.shape[1] // cols
    small = xp.asarray(image[: h * rows, : w * cols], dtype=xp.float64)
    small = small.reshape(h, rows, w, cols).mean(axis=(1, 3))
    return to_numpy(small)


def _check_2d(image, name):
    if not hasattr(image, "ndim") or image.ndim != 2 or image.size == 0:
        raise InvalidValue(f"{name}: expected a non-empty 2-D array, got {getattr(image, 'shape', type(image).__name__)}")


def _format(value: float) -> str:
    return f"{value:.4g}"


def _text_scale(width: int) -> int:
    return 2 if width >= 240 else 1


def function_preview(function, path, *, title: str | None = None, max_size: int = 512) -> None:
    """A colour-mapped picture of an illumination function with a colour bar, its min, mean and max.

    Colours run from the function's minimum (dark violet) to its maximum (yellow); a white cross
    marks where the maximum is, so an off-centre optical axis is easy to see.
    """
    _check_2d(function, "function")
    small = _shrink(function, max_size)
    finite = np.isfinite(small)
    if not finite.any():
        raise InvalidValue("function: has no finite values")
    lo, hi = float(small[finite].min()), float(small[finite].max())
    image = apply_colormap(rescale01(small, (lo, hi)))
    h, w = small.shape
    scale = _text_scale(w)
    text_h = GLYPH_H * scale
    bar_h = 6 * scale + 4

    title_h = text_h + GAP if title else 0
    canvas_h = MARGIN + title_h + h + GAP + bar_h + GAP // 2 + text_h + MARGIN
    canvas = np.full((canvas_h, w + 2 * MARGIN, 3), 255, dtype=np.uint8)
    top = MARGIN
    if title:
        _draw_text(canvas, title, top, MARGIN, scale)
        top += title_h
    canvas[top : top + h, MARGIN : MARGIN + w] = image
    peak_y, peak_x = np.unravel_index(np.nanargmax(small), small.shape)
    arm = max(3, w // 40)
    canvas[top + peak_y, MARGIN + max(0, peak_x - arm) : MARGIN + min(w, peak_x + arm + 1)] = WHITE
    canvas[top + max(0, peak_y - arm) : top + min(h, peak_y + arm + 1), MARGIN + peak_x] = WHITE
    top += h + GAP

    ramp = apply_colormap(np.linspace(0.0, 1.0, w))
    canvas[top : top + bar_h, MARGIN : MARGIN + w] = ramp[None, :, :]
    canvas[top - 1, MARGIN - 1 : MARGIN + w + 1] = BLACK
    canvas[top + bar_h, MARGIN - 1 : MARGIN + w + 1] = BLACK
    canvas[top - 1 : top + bar_h + 1, MARGIN - 1] = BLACK
    canvas[top - 1 : top + bar_h + 1, MARGIN + w] = BLACK
    top += bar_h + GAP // 2
    mean = float(small[finite].mean())
    _draw_text(canvas, f"MIN {_format(lo)}", top, MARGIN, scale)
    _draw_text(canvas, f"MEAN {_format(mean)}", top, MARGIN + w // 2, scale, align="centre")
    _draw_text(canvas, f"MAX {_format(hi)}", top, MARGIN + w, scale, align="right")
    write_png(path, canvas)


def _profile_strip(profile, limits, width, height, colour, thickness):
    """An RGB strip with ``profile`` (one value per column) drawn as a connected line."""
    strip = np.full((height, width, 3), 245, dtype=np.uint8)
    strip[[0, -1], :] = GREY
    lo, hi = limits
    span = hi - lo if hi > lo else 1.0
    rows = np.rint((1.0 - (profile - lo) / span) * (height - 5) + 2).astype(int)
    rows = np.clip(rows, 1, height - 3)
    for x in range(width):
        neighbour = rows[x - 1] if x else rows[x]
        a, b = sorted((rows[x], neighbour))
        strip[a : b + thickness, x] = colour
    return strip


def before_after(before, after, path, *, low: float = 0.5, high: float = 95.0, profile: bool = True,
                 labels: tuple[str, str] = ("BEFORE", "AFTER"), max_size: int = 512) -> None:
    """Side-by-side montage of one image before and after correction, with identical display scaling.

    The grey levels map the ``low``..``high`` percentiles of both images together; the default
    ``high`` saturates the brightest cells so that the background, where shading shows, fills
    the grey range (the "brighten it and look" check; raise ``high`` to see the cells). With ``profile``, a strip under each half plots the mean of each
    column, on one shared vertical scale: a curved line before, a flat one after.
    """
    _check_2d(before, "before")
    _check_2d(after, "after")
    if tuple(before.shape) != tuple(after.shape):
        raise InvalidValue(f"after: shape {tuple(after.shape)} does not match before's {tuple(before.shape)}")
    halves = [_shrink(image, max_size) for image in (before, after)]
    limits = display_limits(np.concatenate([half.ravel() for half in halves]), low, high)
    greys = [np.rint(np.nan_to_num(rescale01(half, limits)) * 255).astype(np.uint8) for half in halves]
    h, w = halves[0].shape
    scale = _text_scale(w)
    text_h = GLYPH_H * scale
    strip_h = max(32, h // 6) if profile else 0

    width = 2 * w + 2 * MARGIN + GAP // 2
    height = MARGIN + text_h + GAP + h + (GAP + strip_h if profile else 0) + MARGIN
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    lefts = (MARGIN, MARGIN + w + GAP // 2)
    image_top = MARGIN + text_h + GAP
    for left, label, grey in zip(lefts, labels, greys):
        _draw_text(canvas, label, MARGIN, left + w // 2, scale, align="centre")
        canvas[image_top : image_top + h, left : left + w] = grey[:, :, None]
    if profile:
        profiles = [np.nanmedian(half, axis=0) for half in halves]
        finite = np.concatenate([p[np.isfinite(p)] for p in profiles])
        lo, hi = float(finite.min()), float(finite.max())
        pad = 0.1 * (hi - lo) if hi > lo else max(abs(hi), 1.0) * 0.1
        strip_top = image_top + h + GAP
        for left, values, colour in zip(lefts, profiles, (PROFILE_BEFORE, PROFILE_AFTER)):
            strip = _profile_strip(np.nan_to_num(values, nan=lo), (lo - pad, hi + pad), w, strip_h, colour, scale)
            _draw_text(strip, "COLUMN MEDIAN", 3, 3, 1, colour=(120, 120, 120))
            canvas[strip_top : strip_top + strip_h, left : left + w] = strip
    write_png(path, canvas)
