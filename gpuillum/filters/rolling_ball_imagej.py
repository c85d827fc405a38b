"""ImageJ's Process > Subtract Background with the rolling ball, bit for bit.

The steps and their float32 arithmetic are docs/imagej.md sections 3-5 (ImageJ 1.53t and
1.54u agree on every image without NaN; with NaN this follows 1.54t4 and later):

1. negate the slice for a light background; 3x3 mean unless smoothing is disabled (presmooth.py);
2. shrink by the block minimum over s x s blocks (partial blocks at the right and bottom edges,
   NaN ignored), s = 1, 2, 4 or 8 for radii up to 10, 30, 100 and above;
3. roll a patch of a ball of radius r / s (at least 1) over the shrunk image: trimmed to a square
   of half-width ``round(r/s - floor(trim * r/s) / 100)`` (trim 24, 24, 32, 40 %), heights
   ``(float)sqrt(r^2 - dx^2 - dy^2)`` and 0 where the argument is not positive. ImageJ places the
   ball centre at every position of the image extended by the half-width, lowers it until it
   touches (``z(c) = min g(c + o) - zb(o)``, from Float.MAX_VALUE), then raises every pixel under
   it to ``z(c) + zb(o)`` (from -Float.MAX_VALUE): an erosion over the extended grid and a
   dilation, both done by ``nonflat.erode`` (the dilation as the negated erosion of the negation,
   which is exact because IEEE negation is);
4. enlarge back with ImageJ's bilinear interpolation and extrapolation at the edges: Java integer
   division for the indices, float32 weights, each product rounded before the sum (no FMA);
5. negate back for a light background, then subtract from the original (subtract_background.py).

Cost: the ball patch has width 2h + 1 <= ~0.9 r / s + 1 on an image shrunk s^2 times, so the
work per full-size pixel is at most ~(r / s)^2 / s^2: small for every radius (ImageJ's own choice
of s; section 10 of the notes). The erosions run in SIMD lanes on the CPU and one thread per
pixel on the GPU; everything else is one xp code path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np

from ..backend import get_array_module, on_input_device
from .bands import cpu_threads, run_jobs
from .nonflat import Terms, erode, kernel_terms
from .presmooth import resolve_presmooth, smooth_float
from .subtract_background import ImageJFailure, check_imagej_radius, check_stack, subtract_background

__all__ = ["rolling_ball_imagej", "ImageJBall"]

FLOAT_MAX = np.float32(np.finfo(np.float32).max)  # Java's Float.MAX_VALUE
_SHRINK_AND_TRIM = ((10, 1, 24), (30, 2, 24), (100, 4, 32), (math.inf, 8, 40))  # radius up to, s, trim %


@dataclass(frozen=True)
class ImageJBall:
    """ImageJ's ``RollingBall`` for a radius: the shrink factor and the trimmed patch of heights."""

    shrink: int
    half_width: int
    heights: np.ndarray  # float32, (2 half_width + 1) squared
    terms: Terms  # the additive kernel -heights, for nonflat.erode

    @classmethod
    @lru_cache(maxsize=64)
    def of(cls, radius: float) -> "ImageJBall":
        shrink, trim = next((s, t) for limit, s, t in _SHRINK_AND_TRIM if radius <= limit)
        small = max(radius / shrink, 1.0)
        xtrim = int(trim * small) // 100
        half = math.floor(small - xtrim + 0.5)  # Java's Math.round
        offsets = np.arange(-half, half + 1, dtype=np.int64)
        # Java: rsquare - xval*xval - yval*yval, x along the row, in double
        squares = (small * small - offsets[None, :] ** 2) - offsets[:, None] ** 2
        heights = np.where(squares > 0, np.sqrt(np.maximum(squares, 0)), 0).astype(np.float32)
        heights.flags.writeable = False
        return cls(shrink, half, heights, kernel_terms(np.negative(heights)))


@on_input_device
def rolling_ball_imagej(image, radius, *, light_background=False, presmooth=True, create_background=False,
                        output_dtype=None, sigma=None):
    """ImageJ's Subtract Background (rolling ball), identical to ImageJ on 8/16-bit images.

    Parameters
    ----------
    image : NumPy or CuPy array, uint8, uint16 or float32
        A 2-D image, or a stack whose leading axes are slices (each processed on its own).
    radius : float
        ImageJ's "Rolling ball radius" in pixels (> 0.0001, may be fractional).
    light_background : bool
        ImageJ's "Light background": the background is the upper hull; 8/16-bit outputs are
        ``max + (orig - bg)``, so the background becomes white and objects dark.
    presmooth : True / "mean" (ImageJ's 3x3 mean), False / "none" ("Disable smoothing"), or
        "gaussian" (not in ImageJ: a Gaussian of ``sigma`` pixels instead).
    create_background : bool
        ImageJ's "Create background (don't subtract)": return the background.
    output_dtype : None / "same" or "float32"
        "same" (default): the image's dtype with ImageJ's rounding, clamping and light-background
        offset. "float32": the unrounded ``orig - background`` (negatives kept) or background.
    sigma : float, only with presmooth="gaussian".

    Returns
    -------
    Array of the image's shape and backend.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> image = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8)
    >>> flat = gi.rolling_ball_imagej(image, 15)                      # run("Subtract Background...", "rolling=15")
    >>> background = gi.rolling_ball_imagej(image, 15, create_background=True, output_dtype="float32")
    """
    image = check_stack(image)
    smoothing, sigma = resolve_presmooth(presmooth, sigma)
    ball = ImageJBall.of(check_imagej_radius(radius))

    def background_of(pixels):
        return rolling_ball_background(pixels, ball, light_background, smoothing, sigma)

    return subtract_background(image, background_of, light_background=light_background,
                               create_background=create_background, output_dtype=output_dtype)


def rolling_ball_background(pixels, ball: ImageJBall, light: bool, smoothing: str, sigma):
    """ImageJ's rolling-ball background (float32) of one float32 slice."""
    xp = get_array_module(pixels)
    work = xp.negative(pixels) if light else pixels
    work = smooth_float(work, smoothing, sigma)
    height, width = work.shape
    if ball.shrink > 1 and width <= ball.shrink:
        raise ImageJFailure(work, f"image {width} pixel(s) wide at radius with shrink factor {ball.shrink} "
                                  "(ImageJ's ArrayIndexOutOfBoundsException in enlargeImage)")
    small = _shrink(work, ball.shrink) if ball.shrink > 1 else _without_nan(work)
    rolled = _roll(small, ball)
    background = _enlarge(rolled, ball.shrink, (height, width)) if ball.shrink > 1 else rolled
    return xp.negative(background) if light else background


def _without_nan(pixels):
    """NaN as +inf: ImageJ skips NaN in its minima (strict comparisons); +inf never wins them."""
    xp = get_array_module(pixels)
    nan = xp.isnan(pixels)
    return xp.where(nan, np.float32(np.inf), pixels) if bool(nan.any()) else pixels


def _shrink(pixels, shrink: int):
    """Block minimum over shrink x shrink blocks, partial blocks at the far edges, NaN skipped,
    Float.MAX_VALUE where a block has no smaller value (ImageJ's shrinkImage). Minima are exact in
    any order. CPU: one numba pass in row bands; GPU: the block's columns folded as strided
    slices, then its rows."""
    xp = get_array_module(pixels)
    height, width = pixels.shape
    rows, cols = -(-height // shrink), -(-width // shrink)
    if xp is np:
        small = np.empty((rows, cols), np.float32)
        bands = max(1, min(cpu_threads(), rows // 16))
        edges = [rows * b // bands for b in range(bands + 1)]
        run_jobs([lambda a=a, b=b: _block_minimum(pixels, shrink, small, a, b) for a, b in zip(edges[:-1], edges[1:])])
        return small
    pixels = _without_nan(pixels)
    if (rows * shrink, cols * shrink) != (height, width):
        padded = xp.full((rows * shrink, cols * shrink), np.inf, dtype=np.float32)
        padded[:height, :width] = pixels
        pixels = padded
    narrow = xp.minimum(pixels[:, 0::shrink], pixels[:, 1::shrink])
    for k in range(2, shrink):
        xp.minimum(narrow, pixels[:, k::shrink], out=narrow)
    small = xp.minimum(narrow[0::shrink], narrow[1::shrink])
    for k in range(2, shrink):
        xp.minimum(small, narrow[k::shrink], out=small)
    return xp.minimum(small, FLOAT_MAX, out=small)


@numba.njit(cache=True, nogil=True)
def _block_minimum(pixels, shrink, small, r0, r1):
    """Small rows [r0, r1) of ImageJ's shrinkImage: from Float.MAX_VALUE, strict < (NaN skipped)."""
    height, width = pixels.shape
    top = np.float32(3.4028234663852886e38)
    for i in range(r0, r1):
        out = small[i]
        out[:] = top
        for y in range(i * shrink, min(i * shrink + shrink, height)):
            line = pixels[y]
            for j in range(out.size):
                lowest = out[j]
                for x in range(j * shrink, min(j * shrink + shrink, width)):
                    value = line[x]
                    if value < lowest:
                        lowest = value
                out[j] = lowest


def _roll(small, ball: ImageJBall):
    """ImageJ's rollBall: erosion by -zb over the grid of ball centres (the image extended by the
    half-width), then the dilation back onto the image, with ImageJ's start values +-MAX_VALUE."""
    xp = get_array_module(small)
    half = ball.half_width
    height, width = small.shape
    terms = ball.terms
    touching = erode(small, terms, (height + 2 * half, width + 2 * half), (-half, -half), np.inf)
    touching = xp.minimum(touching, FLOAT_MAX)
    lowered = erode(xp.negative(touching), terms, (height, width), (half, half), np.inf)
    return xp.maximum(xp.negative(lowered), -FLOAT_MAX)


def interpolation(length: int, small_length: int, shrink: int):
    """ImageJ's makeInterpolationArrays: index of the left/upper small pixel and its float32 weight
    for every full-size position (Java integer division truncates toward zero)."""
    position = np.arange(length, dtype=np.int64)
    index = np.maximum(position - shrink // 2, 0) // shrink
    index = np.where(index >= small_length - 1, small_length - 2, index)
    distance = ((position.astype(np.float32) + np.float32(0.5)) / np.float32(shrink)
                - (index.astype(np.float32) + np.float32(0.5)))
    return index, np.float32(1) - distance.astype(np.float32)


def _enlarge(small, shrink: int, shape):
    """ImageJ's enlargeImage: x-interpolation of each small row, then y-interpolation of two of
    those lines; products rounded to float32 before each sum. A shrunk image one row high makes
    ImageJ blend with an all-zero line (section 3.5): kept. CPU: numba (both steps fused loops,
    the second in row bands); GPU: whole-array operations."""
    xp = get_array_module(small)
    height, width = shape
    x_index, x_weight = interpolation(width, small.shape[1], shrink)
    y_index, y_weight = interpolation(height, small.shape[0], shrink)
    # row 0 of `lines` is ImageJ's initial all-zero line, used only when y_index is -1
    if xp is np:
        lines = np.zeros((small.shape[0] + 1, width), np.float32)
        _interpolate_rows(small, x_index, x_weight, lines[1:])
        background = np.empty((height, width), np.float32)
        edges = [height * b // cpu_threads() for b in range(cpu_threads() + 1)]
        run_jobs([lambda a=a, b=b: _blend_lines(lines, y_index, y_weight, background, a, b) for a, b in zip(edges[:-1], edges[1:])])
        return background
    x_index, x_weight = xp.asarray(x_index), xp.asarray(x_weight)
    rows = xp.multiply(small[:, x_index], x_weight)
    rows = xp.add(rows, xp.multiply(small[:, x_index + 1], xp.subtract(np.float32(1), x_weight)), out=rows)
    return blend_lines_xp(xp.concatenate([xp.zeros((1, width), np.float32), rows]), y_index, y_weight)


@numba.njit(cache=True, nogil=True)
def _interpolate_rows(small, x_index, x_weight, rows):
    """ImageJ's x-interpolation of every small row: s[k] w + s[k + 1] (1 - w), float32 products."""
    for i in range(small.shape[0]):
        line = small[i]
        row = rows[i]
        for x in range(row.size):
            weight = x_weight[x]
            k = x_index[x]
            row[x] = line[k] * weight + line[k + 1] * (np.float32(1) - weight)


def blend_lines_xp(lines, y_index, y_weight):
    """The GPU's y-interpolation, as whole-array operations (the same roundings as _blend_lines)."""
    xp = get_array_module(lines)
    upper = lines[xp.asarray(y_index + 1)]
    lower = lines[xp.asarray(y_index + 2)]
    y_weight = xp.asarray(y_weight)[:, None]
    background = xp.multiply(upper, y_weight)
    return xp.add(background, xp.multiply(lower, xp.subtract(np.float32(1), y_weight)), out=background)


@numba.njit(cache=True, nogil=True)
def _blend_lines(lines, y_index, y_weight, out, y0, y1):
    """Rows [y0, y1) of ImageJ's y-interpolation: lines[k + 1] w + lines[k + 2] (1 - w), k =
    y_index[y], each product rounded to float32 before the sum (numba does not fuse them)."""
    for y in range(y0, y1):
        weight = y_weight[y]
        other = np.float32(1) - weight
        upper = lines[y_index[y] + 1]
        lower = lines[y_index[y] + 2]
        row = out[y]
        for x in range(row.size):
            row[x] = upper[x] * weight + lower[x] * other
