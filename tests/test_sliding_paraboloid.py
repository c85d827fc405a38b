"""gi.sliding_paraboloid: the rules of the current ImageJ (1.54t4 and later, docs/imagej.md 9.4)
that the installed ImageJ 1.53t cannot check, the corner correction's purpose, NaN handling, and
the frame. Parity with ImageJ itself is in tests/test_imagej_parity.py."""
from __future__ import annotations

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.filters import sliding_paraboloid as sp


def corner_estimates(values, curvature=0.05, legacy=False):
    """The two edge estimates ImageJ's lineSlideParabola gives for one line (NaN: none)."""
    line = np.asarray(values, np.float32).copy()
    estimates = np.empty((1, 2), np.float32)
    sp._corner_lines_cpu(line, np.array([0]), np.array([1]), np.array([line.size]),
                         np.array([curvature], np.float32), estimates, legacy)
    return estimates[0]


def test_a_line_touched_only_at_its_ends_gives_no_estimate_now_and_the_whole_line_before():
    x = np.arange(40.0)
    dome = 100 - (x - 20) ** 2 * 0.2  # concave: the parabola touches the two ends only
    assert np.isnan(corner_estimates(dome)).all()
    assert np.isfinite(corner_estimates(dome, legacy=True)).all()


def test_touching_points_spanning_a_short_baseline_give_no_estimate_now():
    line = [10, 0, 5, 0, 10]  # interior touching points 1 and 3: span 2 <= 5 // 4 + 1
    assert np.isnan(corner_estimates(line)).all()
    assert np.isfinite(corner_estimates(line, legacy=True)).all()


def test_a_convex_line_gives_the_same_estimates_in_both_versions():
    x = np.arange(40.0)
    bowl = (x - 20) ** 2 * 0.05 + 10
    bowl[0] = 200  # a corner particle
    now, before = corner_estimates(bowl), corner_estimates(bowl, legacy=True)
    assert np.array_equal(now, before) and now[0] < 50  # the particle is not part of the estimate


def test_corners_average_only_the_estimates_they_have():
    """Corner (0, 0) of a bowl whose first row is a dome: the row gives no estimate, the column and
    the diagonal do, and the corner (bright: the dome's end) becomes their mean (ImageJ before
    1.54t4 divided the three estimates by 3)."""
    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    image = ((y - 24) ** 2 + (x - 32) ** 2) * np.float32(0.02) + 10
    image[0] = 500 - (x[0] - 32) ** 2 * np.float32(0.1)  # concave first row, 397.6 at its ends
    coeff2 = np.float32(0.5) / np.float32(30)
    # ImageJ's order: rows 0 and H-1, columns 0 and W-1 slide in place, then the diagonal
    edges = image.copy()
    estimates = np.empty((4, 2), np.float32)
    sp._corner_lines_cpu(edges.reshape(-1), np.array([0, 47 * 64, 0, 63]), np.array([1, 1, 64, 64]),
                         np.array([64, 64, 48, 48]), np.full(4, coeff2, np.float32), estimates, False)
    row, column = estimates[0, 0], estimates[2, 0]
    diagonal = corner_estimates([edges[i, i] for i in range(48)], np.float32(2) * coeff2)[0]
    assert np.isnan(row) and np.isfinite(column) and np.isfinite(diagonal)
    work = image.copy()
    sp.correct_corner_pixels(work, coeff2, legacy=False)
    assert image[0, 0] > column and image[0, 0] > diagonal
    assert work[0, 0] == ((np.float32(0) + column) + diagonal) / np.float32(2)


def test_a_corner_without_any_estimate_is_left_as_it_is():
    y, x = np.mgrid[0:40, 0:50].astype(np.float32)
    dome = 1000 - ((y - 20) ** 2 + (x - 25) ** 2) * np.float32(0.3)  # every corner line is concave
    work = dome.copy()
    sp.correct_corner_pixels(work, np.float32(0.5 / 20), legacy=False)
    corners = (0, 0), (0, -1), (-1, 0), (-1, -1)
    assert all(work[c] == dome[c] for c in corners)


def test_corner_correction_keeps_a_corner_particle_out_of_the_background(rng):
    image = (rng.random((80, 80)) * 4 + 20).astype(np.float32)
    image[:4, :4] = 500  # a particle in the corner
    corrected = gi.sliding_paraboloid(image, 20, presmooth=False)
    uncorrected = gi.sliding_paraboloid(image, 20, presmooth=False, correct_corners=False)
    assert corrected[0, 0] > 400  # the particle survives the subtraction
    assert uncorrected[0, 0] < 1  # without correction the paraboloid touches it: background
    assert np.abs(corrected[20:60, 20:60] - uncorrected[20:60, 20:60]).max() < 0.1  # far from the corners: about the same


@pytest.mark.parametrize("presmooth", (True, False))
def test_nan_stays_where_it_was_and_everything_else_is_finite(rng, presmooth):
    image = (rng.random((50, 60)) * 100 + 500).astype(np.float32)
    image[rng.random(image.shape) < 0.03] = np.nan
    image[:, 0] = np.nan  # NaN at every line start of the rows
    image[17] = np.nan  # a full NaN row
    image[-1, -1] = np.nan
    result = gi.sliding_paraboloid(image, 15, presmooth=presmooth)
    assert np.array_equal(np.isnan(result), np.isnan(image))
    background = gi.sliding_paraboloid(image, 15, presmooth=presmooth, create_background=True)
    assert np.isfinite(background[~np.isnan(image)]).all()


def test_the_gpus_3x3_maximum_equals_imagejs_loop_on_numpy(rng):
    """The whole-array maximum the GPU uses, run on NumPy, against the CPU's ImageJ-order loop:
    the same maximum, and the same shift sum for integer-valued images (any order is exact)."""
    for image in (rng.integers(0, 65535, (37, 53)).astype(np.float32), (rng.random((20, 30)) * 100).astype(np.float32)):
        image[3, 4] = np.nan
        larger, shift = sp.maximum3x3(image, legacy=False)
        larger_xp, total, count = sp.maximum3x3_xp(image)
        assert np.array_equal(larger, larger_xp, equal_nan=True)
        assert count == 2 * image.size - 1  # the NaN pixel: NaN in the row pass, then its neighbours' maximum
        if np.all(image[~np.isnan(image)] == np.round(image[~np.isnan(image)])):
            assert shift == np.float32(total / count)
        else:
            assert abs(shift - total / count) <= 1e-6 * abs(shift)


def test_legacy_mode_refuses_nan():
    image = np.ones((10, 10), np.float32)
    image[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gi.sliding_paraboloid(image, 5, legacy=True)


def test_background_follows_a_smooth_illumination_and_lies_below_the_objects(rng):
    y, x = np.mgrid[0:120, 0:150].astype(np.float32)
    # curvature at the peak 300 / 40000 < the paraboloid's 1 / (2 r): it can follow the illumination
    illumination = 1000 + 300 * np.exp(-((y - 60) ** 2 + (x - 75) ** 2) / 40000)
    image = illumination + rng.normal(0, 5, illumination.shape).astype(np.float32)
    image[30:36, 40:46] += 800
    background = gi.sliding_paraboloid(image.astype(np.uint16), 30, create_background=True, output_dtype="float32")
    away = np.ones(image.shape, bool)
    away[25:41, 35:51] = False
    assert np.abs(background - illumination)[away].max() < 25
    assert background[33, 43] < illumination[33, 43] + 100


def test_stacks_are_processed_slice_by_slice(rng):
    stack = rng.integers(0, 255, (3, 25, 35)).astype(np.uint8)
    result = gi.sliding_paraboloid(stack, 8, light_background=True)
    for i in range(3):
        assert np.array_equal(result[i], gi.sliding_paraboloid(stack[i], 8, light_background=True))


def test_float32_output_is_the_unrounded_difference(rng):
    image = rng.integers(0, 4096, (40, 50)).astype(np.uint16)
    background = gi.sliding_paraboloid(image, 12, create_background=True, output_dtype="float32")
    assert np.array_equal(gi.sliding_paraboloid(image, 12, output_dtype="float32"), image.astype(np.float32) - background)
    assert np.array_equal(gi.sliding_paraboloid(image, 12, create_background=True),
                          np.clip(background + np.float32(0.5), 0, 65535).astype(np.uint16))


@pytest.mark.parametrize("bad, error, match", [
    (dict(radius=0), ValueError, "radius"),
    (dict(presmooth="max"), ValueError, "presmooth"),
    (dict(output_dtype="uint8"), ValueError, "output_dtype"),
    (dict(image=np.zeros((4, 4), np.float64)), TypeError, "dtype"),
])
def test_bad_arguments_are_named(bad, error, match):
    arguments = dict(image=np.zeros((8, 8), np.uint8), radius=5)
    arguments.update(bad)
    with pytest.raises(error, match=match):
        gi.sliding_paraboloid(arguments.pop("image"), **arguments)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.float32), ids=lambda d: np.dtype(d).name)
def test_gpu_equals_cpu(cupy, rng, dtype):
    image = (rng.random((2, 97, 131)) * 3000).astype(dtype)
    for radius, light, smooth, legacy in ((3, False, True, False), (25, True, True, True), (50, False, False, False)):
        ours = gi.sliding_paraboloid(cupy.asarray(image), radius, light_background=light, presmooth=smooth, legacy=legacy)
        assert isinstance(ours, cupy.ndarray)
        expected = gi.sliding_paraboloid(image, radius, light_background=light, presmooth=smooth, legacy=legacy)
        if dtype == np.float32:  # the smoothing shift is summed in another order on the GPU
            np.testing.assert_allclose(ours.get(), expected, rtol=1e-5, atol=1e-3)
        else:
            assert np.array_equal(ours.get(), expected)
