"""gi.rolling_ball against skimage.restoration.rolling_ball: equal, bit for bit, on every dtype
scikit-image accepts, with its ball and custom kernels, NaN ignored or poisoning, radii from 0 to
beyond the image."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from skimage.restoration import ball_kernel as skimage_ball_kernel
from skimage.restoration import ellipsoid_kernel
from skimage.restoration import rolling_ball as skimage_rolling_ball

import gpuillum as gi
from gpuillum.filters import rolling_ball as rb

DTYPES = (bool, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64,
          np.float16, np.float32, np.float64)
SHAPES = ((1, 40), (40, 1), (37, 53))
RADII = (0, 1, 1.5, 3, 7.3, 20, 60)


def random_image(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    if dtype is bool:
        return rng.random(shape) < 0.5
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -10**6), min(info.max, 10**6), shape, endpoint=True).astype(dtype)


def assert_identical(ours, theirs):
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    if ours.dtype.kind == "f":
        bits = f"u{ours.dtype.itemsize}"
        nan = np.isnan(theirs)
        assert np.array_equal(np.isnan(ours), nan)
        assert np.array_equal(ours[~nan].view(bits), theirs[~nan].view(bits))
    else:
        assert np.array_equal(ours, theirs)


def skimage_quietly(image, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN kernels: invalid values in subtract / cast
        return skimage_rolling_ball(image, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_equals_skimage_with_the_ball_on_every_dtype(rng, dtype):
    for shape in SHAPES:
        for radius in RADII:
            image = random_image(rng, shape, dtype)
            assert_identical(gi.rolling_ball(image, radius), skimage_rolling_ball(image, radius=radius))


def test_ball_kernel_is_skimages(rng):
    for radius in (0, 1, 2.5, 10, 33.3):
        assert np.array_equal(rb.ball_kernel(radius), skimage_ball_kernel(radius, 2))


@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.int32, np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_equals_skimage_with_custom_kernels(rng, dtype):
    image = (rng.random((33, 41)) * 200).astype(dtype)
    kernels = [ellipsoid_kernel(shape, height) for shape, height in (((5, 7), 3), ((10, 10), 5), ((21, 9), 40.5))]
    asymmetric = rng.random((5, 6)) * 10
    asymmetric[rng.random((5, 6)) < 0.3] = np.inf
    kernels.append(asymmetric)
    with_nan = asymmetric.copy()
    with_nan[0, 0] = np.nan  # NaN height differences: scikit-image's own loop
    kernels.append(with_nan)
    kernels.append(np.full((3, 3), np.inf))  # nothing inside: +inf everywhere
    for kernel in kernels:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            assert_identical(gi.rolling_ball(image, kernel=kernel), skimage_quietly(image, kernel=kernel))


@pytest.mark.parametrize("nansafe", (False, True))
@pytest.mark.parametrize("dtype", (np.float16, np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_equals_skimage_with_nan_and_infinities(rng, dtype, nansafe):
    image = (rng.random((40, 50)) * 200).astype(dtype)
    image[rng.random(image.shape) < 0.02] = np.nan
    image[3, 4], image[30, 7], image[20, 49] = -np.inf, np.inf, -np.inf
    for radius in (2, 5.5, 12):
        assert_identical(gi.rolling_ball(image, radius, nansafe=nansafe),
                         skimage_quietly(image, radius=radius, nansafe=nansafe))


def test_equals_skimage_with_nan_and_random_even_kernels(rng):
    """Kernel boxes of any (even) shape decide which pixels a NaN or an outside -inf poisons."""
    for _ in range(20):
        image = (rng.random((30, 31)) * 100).astype(np.float64)
        image[rng.random(image.shape) < 0.01] = np.nan
        image[rng.integers(0, 30), rng.integers(0, 31)] = -np.inf
        kernel = rng.random(tuple(int(n) for n in rng.integers(1, 7, 2))) * 10
        kernel[rng.random(kernel.shape) < 0.3] = np.inf
        for nansafe in (False, True):
            assert_identical(gi.rolling_ball(image, kernel=kernel, nansafe=nansafe),
                             skimage_quietly(image, kernel=kernel, nansafe=nansafe))


def test_nansafe_without_nan_is_the_plain_result(rng):
    image = rng.random((30, 30)).astype(np.float32)
    assert_identical(gi.rolling_ball(image, 6, nansafe=True), gi.rolling_ball(image, 6))


def test_integer_images_take_the_integer_path_and_it_is_exact(rng, monkeypatch):
    """uint16 images with the ball run in integer lanes; the float path gives the same bytes."""
    image = rng.integers(0, 65536, (64, 80)).astype(np.uint16)
    image[0, 0], image[-1, -1] = 65535, 0  # saturating sums at the top of the range
    difference = rb.ball_kernel(9)[9, 9] - rb.ball_kernel(9)
    inside = ~np.isposinf(rb.ball_kernel(9))
    assert rb._integer_kernel(image, difference, inside, (9, 9), np) is not None
    fast = gi.rolling_ball(image, 9)
    monkeypatch.setattr(rb, "_integer_kernel", lambda *args: None)
    assert np.array_equal(fast, gi.rolling_ball(image, 9))
    assert np.array_equal(fast, skimage_rolling_ball(image, radius=9))


def test_integer_path_is_refused_where_float_rounding_could_round_up(rng):
    """A height difference within a float64 ulp below an integer would make fl64(g + d) round up:
    that kernel is not turned into integers (the float path stays exact)."""
    image = rng.integers(0, 1000, (9, 9)).astype(np.uint16)
    difference = np.zeros((3, 3))
    difference[0, 1] = np.nextafter(3.0, 0)  # 3 - 4.4e-16
    inside = np.ones((3, 3), bool)
    assert rb._integer_kernel(image, difference, inside, (1, 1), np) is None
    kernel = 10 - difference  # heights whose differences are exactly these
    assert_identical(gi.rolling_ball(image, kernel=kernel), skimage_rolling_ball(image, kernel=kernel))


def test_radius_beyond_the_image_and_a_wide_ball(rng):
    image = rng.integers(0, 4096, (12, 300)).astype(np.uint16)
    for radius in (150, 400):
        assert_identical(gi.rolling_ball(image, radius), skimage_rolling_ball(image, radius=radius))


def test_background_lies_below_the_image_and_a_flat_image_is_its_own_background(rng):
    image = rng.integers(0, 4096, (50, 60)).astype(np.uint16)
    background = gi.rolling_ball(image, 10)
    assert np.all(background <= image)
    flat = np.full((20, 30), 77, np.uint8)
    assert np.array_equal(gi.rolling_ball(flat, 5), flat)


@pytest.mark.parametrize("bad, error, match", [
    (dict(image=np.zeros((4, 4, 4))), ValueError, "2-D"),
    (dict(image=np.zeros((4, 4), np.complex64)), TypeError, "complex"),
    (dict(image=[[1, 2]]), TypeError, "array"),
    (dict(radius=-1), ValueError, "radius"),
    (dict(radius=float("nan")), ValueError, "radius"),
    (dict(kernel=np.ones(3)), ValueError, "kernel"),
])
def test_bad_arguments_are_named(bad, error, match):
    arguments = dict(image=np.zeros((4, 4), np.uint8), radius=3)
    arguments.update(bad)
    with pytest.raises(error, match=match):
        gi.rolling_ball(arguments.pop("image"), **arguments)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.int32, np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_gpu_equals_cpu(cupy, rng, dtype):
    image = random_image(rng, (67, 91), dtype)
    for radius in (1, 4.5, 20):
        result = gi.rolling_ball(cupy.asarray(image), radius)
        assert isinstance(result, cupy.ndarray)
        assert_identical(result.get(), gi.rolling_ball(image, radius))
    if np.dtype(dtype).kind == "f":
        image[5, 5] = np.nan
        assert_identical(gi.rolling_ball(cupy.asarray(image), 6, nansafe=True).get(), gi.rolling_ball(image, 6, nansafe=True))
