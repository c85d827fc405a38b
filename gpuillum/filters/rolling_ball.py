"""scikit-image's rolling ball (``skimage.restoration.rolling_ball``), exact and much faster.

What scikit-image computes: the background is the height of the ball's lowest point as it rolls
under the image surface, one grey-scale erosion by the ball's height differences,

    background(p) = min over offsets k in the kernel of  image(p + k) + d(k),
    d(k) = kernel[centre] - kernel[k]   (+inf outside the ball),

in the image's float type (float32 for float16/float32 images, float64 otherwise: every integer
image), pixels beyond the border ignored, the minimum cast back to the input dtype (integers
truncate). Its kernel loop visits all (2r+1)^2 offsets of every pixel, O(r^2) per pixel.

Choice of algorithm. "Equal to scikit-image" means the same floating-point minimum, and rounding is
monotone, so ``min fl(a_k) = fl(min a_k)``: any method that finds the true minimum of the exact
sums ``image(q) + d(k)`` (d as the float values scikit-image builds) is exact, any method that
re-associates the sums is not. That rules out the classic speed-ups, which are exact only in real
arithmetic, or not at all: decomposing the ball's umbra (balls are not Minkowski sums of smaller
lattice shapes), sliding parabolas or a distance-transform-style lower envelope (exact for a
paraboloid, which separates into x and y; the ball does not), or shrinking the image (ImageJ's
approximation). Envelope methods per kernel row (translates of a convex row profile cross once,
so a monotone-argmin search finds each row's minimum in O(log r) amortised steps) are exact with
exact comparisons, but at r = 50 their branchy per-pixel work costs more than the vectorised
brute force below; they only win for radii of several hundred.

So gpuillum evaluates the exact minimum with three reductions of the work, none of which changes
a single sum (``nonflat.py``): only offsets inside the ball are visited (pi r^2 instead of
(2r+1)^2); kernel rows are symmetric, so mirrored offsets share one sum after a pair minimum;
and for integer images the whole computation moves to integers. For an integer pixel value g and a
height difference d, ``trunc(fl64(g + d)) = g + floor(d)`` unless d lies within half a float64 ulp
below an integer (checked for every kernel entry; such kernels take the float path), so the
truncated background is an erosion by the integer kernel ``floor(d)``. Along a kernel row that
kernel is a staircase that does not decrease away from the centre, so each step needs one sum:
``step value + min over the window -w..w`` (the window minima of a source row are built once, one
distance at a time, and serve every kernel row), 1.7x fewer sums than pairs. Integer sums run in
saturating uint16 SIMD lanes (32 per AVX-512 vector). Cost stays O(r^2) per pixel, like the
reference, with a constant 50-100x smaller: measured in benchmarks/bench_background.py.

NaN follows scikit-image: ignored unless ``nansafe``, which makes every pixel whose kernel box
(the whole (2r+1)^2 square) holds a NaN NaN, as scikit-image's NaN-aware loop does; a -inf pixel
at an offset outside the ball gives ``-inf + inf = NaN`` there too. Kernels with NaN or -inf height
differences take a direct (slow) transcription of scikit-image's loop.
"""
from __future__ import annotations

import math
import numbers

import numba
import numpy as np

from ..errors import InvalidType, InvalidValue
from ..backend import get_array_module, get_ndimage, on_input_device, same_backend, to_numpy
from .nonflat import erode, kernel_terms

__all__ = ["rolling_ball", "ball_kernel"]

_UINT16_MAX = 65535


def ball_kernel(radius, ndim: int = 2) -> np.ndarray:
    """scikit-image's ``restoration.ball_kernel``: the heights of the ball's upper half on a
    (2 ceil(r) + 1)^ndim grid, +inf outside the ball (float64)."""
    reach = np.ceil(radius)
    axes = [np.arange(-reach, reach + 1)] * ndim
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    sum_of_squares = np.sum(coords**2, axis=-1)
    kernel = np.sqrt(np.clip(radius**2 - sum_of_squares, 0, None))
    kernel[np.sqrt(sum_of_squares) > radius] = np.inf
    return kernel


@on_input_device
def rolling_ball(image, radius=100, *, kernel=None, nansafe=False):
    """The rolling-ball background of ``skimage.restoration.rolling_ball``, exactly, faster.

    The background is the lowest point of a ball of ``radius`` rolled under the image surface
    (dark background; for a light one, invert the image first). The result equals scikit-image's
    pixel for pixel, on every dtype it accepts; see the module docstring for why and how.

    Parameters
    ----------
    image : 2-D NumPy or CuPy array
        bool, any integer type, float16, float32, float64 (and longdouble, computed in float64).
    radius : float
        Radius of the ball (>= 0), used when ``kernel`` is None.
    kernel : 2-D array, optional
        Any kernel of heights instead of the ball (e.g. ``skimage.restoration.ellipsoid_kernel``),
        centre at ``shape // 2``, +inf marking offsets outside it.
    nansafe : bool
        False: NaN pixels are ignored. True: a pixel whose kernel box holds a NaN becomes NaN.

    Returns
    -------
    background : array of the input dtype and backend.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> image = np.random.default_rng(0).integers(0, 4096, (256, 256)).astype(np.uint16)
    >>> background = gi.rolling_ball(image, radius=50)
    >>> foreground = image.astype(np.int32) - background
    """
    xp = get_array_module(image)
    _check_2d(image)
    if image.dtype.kind == "c":
        raise InvalidType("image: complex valued input is not supported (as in scikit-image)")
    if image.dtype.kind not in "biuf":
        raise InvalidType(f"image: expected a real-valued array, got dtype {image.dtype}")
    float_type = np.float32 if image.dtype in (np.float16, np.float32) else np.float64
    if kernel is None:
        if isinstance(radius, bool) or not isinstance(radius, numbers.Real) or not math.isfinite(radius) or radius < 0:
            raise InvalidValue(f"radius: expected a finite number >= 0, got {radius!r}")
        kernel = ball_kernel(radius, 2)
    kernel = to_numpy(kernel)
    if kernel.ndim != 2 or kernel.size == 0:
        raise InvalidValue(f"kernel: expected a non-empty 2-D array (as the image), got shape {kernel.shape}")
    kernel = kernel.astype(float_type)
    center = tuple(np.asarray(kernel.shape) // 2)
    with np.errstate(invalid="ignore"):
        difference = kernel[center] - kernel
    difference[kernel == np.inf] = np.inf
    if np.isnan(difference).any() or np.isneginf(difference).any():
        return same_backend(_skimage_loop(to_numpy(image), difference, nansafe), image)

    inside = ~np.isposinf(difference)
    integer_kernel = _integer_kernel(image, difference, inside, center, xp)
    if integer_kernel is not None:
        terms = kernel_terms(integer_kernel, inside)
        background = erode(image.astype(np.uint16), terms, image.shape, (0, 0), _UINT16_MAX)
        return background.astype(image.dtype, copy=False)

    pixels = image.astype(float_type)
    nan = xp.isnan(pixels)
    has_nan = bool(nan.any())
    if has_nan:
        pixels[nan] = np.inf  # a NaN sum never wins scikit-image's minimum; +inf never does either
    background = erode(pixels, kernel_terms(difference, inside), image.shape, (0, 0), np.inf)
    if nansafe:
        poisoned = _poisoned(nan if has_nan else None, pixels, difference, xp)
        if poisoned is not None:
            background[poisoned] = np.nan
    return background.astype(image.dtype, copy=False)


def _check_2d(image):
    if not hasattr(image, "ndim") or not hasattr(image, "dtype"):
        raise InvalidType(f"image: expected a 2-D NumPy or CuPy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise InvalidValue(f"image: expected a 2-D array, got {image.ndim}-D with shape {tuple(image.shape)} "
                         "(scikit-image would roll an N-D ball; process the planes one by one for a stack)")
    if image.size == 0:
        raise InvalidValue(f"image: expected a non-empty array, got shape {tuple(image.shape)}")


def _integer_kernel(image, difference, inside, center, xp):
    """``floor(difference)`` as uint16 when the truncated float64 background of this integer image
    equals the uint16 erosion by it (see the module docstring), else None."""
    if image.dtype.kind not in "iu" or not inside[center] or difference[center] != 0:  # bool casts by != 0
        return None
    low, high = (int(v) for v in (xp.min(image), xp.max(image)))  # two scalars read back on the GPU
    heights = difference[inside]
    if low < 0 or high > _UINT16_MAX or heights.min() < 0:
        return None
    steps = np.floor(heights)
    if steps.max() > _UINT16_MAX:
        return None
    fraction = heights - steps
    # fl64(g + d) must not round up to the next integer for any g <= high: 1 - frac(d) must
    # exceed the rounding error of the sums, at most half the spacing of floats near high + max(d)
    if not np.all((fraction == 0) | (1 - fraction > np.spacing(np.float64(high) + heights.max()))):
        return None
    result = np.zeros(difference.shape, np.uint16)
    result[inside] = steps.astype(np.uint16)
    return result


def _poisoned(nan, pixels, difference, xp):
    """Pixels that scikit-image's NaN-aware loop makes NaN: a NaN anywhere in the kernel box, or a
    -inf pixel at an offset outside the kernel (``-inf + inf``); None when there are none."""
    ndi = get_ndimage(xp)

    def reaches(mask, footprint):  # pixels whose footprint (centre shape // 2) holds a true pixel
        return ndi.maximum_filter(mask.astype(np.uint8), footprint=xp.asarray(footprint), mode="constant", cval=0) > 0

    poisoned = None if nan is None else reaches(nan, np.ones(difference.shape, bool))
    negative_infinity = xp.isneginf(pixels)
    outside = np.isposinf(difference)
    if outside.any() and bool(negative_infinity.any()):
        more = reaches(negative_infinity, outside)
        poisoned = more if poisoned is None else poisoned | more
    return poisoned


def _skimage_loop(image, difference, nansafe):
    """scikit-image's kernel loop itself (2-D), for kernels with NaN or -inf height differences."""
    float_type = difference.dtype
    pixels = image.astype(float_type)
    rows, cols = difference.shape
    padded = np.pad(pixels, ((rows // 2, rows - 1 - rows // 2), (cols // 2, cols - 1 - cols // 2)),
                    constant_values=np.inf)
    out = np.empty(image.shape, float_type)
    _loop(padded, difference, out, nansafe)
    return out.astype(image.dtype, copy=False)


@numba.njit(cache=True, nogil=True)
def _loop(padded, difference, out, nansafe):
    rows, cols = difference.shape
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            lowest = np.inf
            for i in range(rows):
                for j in range(cols):
                    value = padded[y + i, x + j] + difference[i, j]
                    if lowest > value or (nansafe and np.isnan(value)):
                        lowest = value
                if nansafe and np.isnan(lowest):
                    break
            out[y, x] = lowest
