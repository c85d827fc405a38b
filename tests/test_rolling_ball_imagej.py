"""gi.rolling_ball_imagej beyond the ImageJ parity runs (tests/test_imagej_parity.py): the ball
table and measured outputs of docs/imagej.md, ImageJ's failure on narrow images, float32 output,
stacks, the Gaussian pre-smoothing option, argument errors, and the GPU path."""
from __future__ import annotations

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.filters.rolling_ball_imagej import ImageJBall, interpolation


@pytest.mark.parametrize("radius, shrink, width, zeros", [
    (1, 1, 3, 8), (3, 1, 7, 24), (5, 1, 9, 12), (10, 1, 17, 20), (10.5, 2, 9, 4), (20, 2, 17, 20), (30, 2, 25, 32),
    (30.5, 4, 13, 12), (50, 4, 19, 4), (100, 4, 35, 0), (100.5, 8, 17, 0), (200, 8, 31, 0), (400, 8, 61, 0),
])
def test_ball_shrink_width_and_zero_heights_follow_imagej(radius, shrink, width, zeros):
    """docs/imagej.md 3.1: shrink factor, patch width and the zero heights outside the sphere."""
    ball = ImageJBall.of(float(radius))
    assert (ball.shrink, ball.heights.shape) == (shrink, (width, width))
    assert int(np.sum(ball.heights == 0)) == zeros
    assert ball.heights[width // 2, width // 2] == np.float32(max(radius / shrink, 1.0))


def test_interpolation_indices_truncate_toward_zero_like_java():
    """docs/imagej.md 3.4: for s = 4, positions 0..5 use small pixel 0 and 6..9 use pixel 1."""
    index, weight = interpolation(12, 3, 4)
    assert index.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # the last pair clamped to small_length - 2
    assert weight.dtype == np.float32 and weight[0] > 1 and weight[-1] < 0  # extrapolation at both ends


def test_the_gpus_whole_array_steps_equal_the_cpu_kernels_on_numpy(rng):
    """The y-interpolation has a fused CPU kernel and a whole-array GPU version: run on NumPy they
    must give the same bytes."""
    from gpuillum.filters import rolling_ball_imagej as module

    small = rng.random((7, 9)).astype(np.float32)
    y_index, y_weight = interpolation(27, 7, 4)
    fused = module._enlarge(small, 4, (27, 30))
    x_index, x_weight = interpolation(30, 9, 4)
    rows = small[:, x_index] * x_weight + small[:, x_index + 1] * (np.float32(1) - x_weight)
    whole = module.blend_lines_xp(np.concatenate([np.zeros((1, 30), np.float32), rows]), y_index, y_weight)
    assert np.array_equal(fused.view(np.uint32), whole.view(np.uint32))


def test_measured_outputs_of_the_notes_are_reproduced():
    """docs/imagej.md 5: a 5x5 8-bit image with a 10-count border, measured in ImageJ 1.53t."""
    image = np.full((5, 5), 10, np.uint8)
    image[1:4, 1:4] = [[50, 80, 50], [80, 200, 80], [50, 80, 50]]
    assert gi.rolling_ball_imagej(image, 3)[2, 2] == 184
    assert gi.rolling_ball_imagej(image, 50)[2, 2] == 186
    assert gi.rolling_ball_imagej(image, 50, presmooth=False)[2, 2] == 190
    assert np.all(gi.rolling_ball_imagej(image, 50, create_background=True) == 14)
    assert np.all(gi.rolling_ball_imagej(image, 10, create_background=True, presmooth=False) == 10)
    assert np.all(gi.rolling_ball_imagej(image, 3)[0] == 0)  # the smoothed background lies above the border


def test_one_row_image_blends_with_imagejs_zero_line():
    """docs/imagej.md 3.5: a 1 x 11 image at r = 50 (s = 4): background (0.5 + 0.5/4) x the true one."""
    image = np.full((1, 11), 7, np.uint8)
    assert gi.rolling_ball_imagej(image, 50, create_background=True, presmooth=False).tolist() == [[4] * 11]


def test_images_at_most_the_shrink_factor_wide_are_left_as_imagej_leaves_them(rng):
    image = rng.integers(0, 200, (6, 4)).astype(np.uint8)
    with pytest.warns(RuntimeWarning, match="ArrayIndexOutOfBoundsException"):
        assert np.array_equal(gi.rolling_ball_imagej(image, 50), image)
    pixels = image.astype(np.float32)
    with pytest.warns(RuntimeWarning):
        negated = gi.rolling_ball_imagej(pixels, 50, light_background=True, presmooth=False)
    assert np.array_equal(negated, -pixels)  # ImageJ's float image stops negated
    with pytest.raises(ValueError, match="no background"):
        gi.rolling_ball_imagej(image, 50, output_dtype="float32")


def test_float32_output_is_the_unrounded_difference(rng):
    image = rng.integers(0, 4096, (40, 50)).astype(np.uint16)
    background = gi.rolling_ball_imagej(image, 12, create_background=True, output_dtype="float32")
    difference = gi.rolling_ball_imagej(image, 12, output_dtype="float32")
    assert background.dtype == difference.dtype == np.float32
    assert np.array_equal(difference, image.astype(np.float32) - background)
    assert difference.min() < 0  # the smoothed background lies above some pixels: kept
    rounded = gi.rolling_ball_imagej(image, 12)
    assert np.array_equal(rounded, np.clip(difference + np.float32(0.5), 0, 65535).astype(np.uint16))
    assert np.array_equal(gi.rolling_ball_imagej(image, 12, create_background=True),
                          np.clip(background + np.float32(0.5), 0, 65535).astype(np.uint16))


def test_light_background_maps_the_background_to_white(rng):
    image = (250 - rng.integers(0, 20, (60, 60))).astype(np.uint8)
    image[20:25, 30:35] = 40  # a dark object
    result = gi.rolling_ball_imagej(image, 10, light_background=True)
    assert np.median(result) >= 250 and result[22, 32] < 100


def test_stacks_are_processed_slice_by_slice(rng):
    stack = rng.integers(0, 4096, (2, 3, 30, 40)).astype(np.uint16)
    result = gi.rolling_ball_imagej(stack, 7, light_background=True)
    for index in np.ndindex(2, 3):
        assert np.array_equal(result[index], gi.rolling_ball_imagej(stack[index], 7, light_background=True))


def test_gaussian_presmoothing_replaces_the_3x3_mean(rng):
    image = rng.integers(0, 4096, (40, 50)).astype(np.uint16)
    smoothed = gi.gaussian_filter(image.astype(np.float32), 2.0)
    via_option = gi.rolling_ball_imagej(image, 12, presmooth="gaussian", sigma=2.0, create_background=True, output_dtype="float32")
    # the same background as rolling the unsmoothed ball over the smoothed image
    direct = gi.rolling_ball_imagej(smoothed, 12, presmooth=False, create_background=True)
    assert np.array_equal(via_option, direct)


@pytest.mark.parametrize("bad, error, match", [
    (dict(radius=0), ValueError, "radius"),
    (dict(radius=float("inf")), ValueError, "radius"),
    (dict(radius=True), ValueError, "radius"),
    (dict(presmooth="median"), ValueError, "presmooth"),
    (dict(presmooth="gaussian"), ValueError, "sigma"),
    (dict(sigma=2.0), ValueError, "sigma"),
    (dict(output_dtype="int16"), ValueError, "output_dtype"),
    (dict(image=np.zeros((4, 4), np.int16)), TypeError, "dtype"),
    (dict(image=np.zeros(4, np.uint8)), ValueError, "2-D"),
    (dict(image=np.zeros((0, 4), np.uint8)), ValueError, "non-empty"),
])
def test_bad_arguments_are_named(bad, error, match):
    arguments = dict(image=np.zeros((8, 8), np.uint8), radius=5)
    arguments.update(bad)
    with pytest.raises(error, match=match):
        gi.rolling_ball_imagej(arguments.pop("image"), **arguments)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.float32), ids=lambda d: np.dtype(d).name)
def test_gpu_equals_cpu(cupy, rng, dtype):
    image = (rng.random((3, 97, 131)) * 3000).astype(dtype)
    for radius, light, smooth in ((3, False, True), (25, True, True), (50, False, False), (150, True, False)):
        ours = gi.rolling_ball_imagej(cupy.asarray(image), radius, light_background=light, presmooth=smooth)
        assert isinstance(ours, cupy.ndarray)
        expected = gi.rolling_ball_imagej(image, radius, light_background=light, presmooth=smooth)
        assert np.array_equal(ours.get().view(np.uint8), expected.view(np.uint8))
