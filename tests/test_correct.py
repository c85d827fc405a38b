"""gpuillum.correct.apply: CellProfiler's CorrectIlluminationApply semantics and the integer dtype policy."""
from __future__ import annotations

import numpy as np
import pytest

from gpuillum.correct import apply, invalid_function_pixels


def cp_apply(image, function, method, clip_low, clip_high):
    """CellProfiler's formulas (cellprofiler.md section 5), written out in NumPy float32."""
    image = np.asarray(image, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        if method == "Divide":
            out = image / function
        else:
            out = image - function
            out[out < 0] = 0
    if clip_low:
        out[out < 0] = 0
    if clip_high:
        out[out > 1] = 1
    return out


@pytest.fixture
def pair(rng):
    image = (rng.random((37, 53)) * 1.4 - 0.1).astype(np.float32)
    function = (rng.random((37, 53)) * 1.5 + 0.25).astype(np.float32)
    return image, function


@pytest.mark.parametrize("method", ["Divide", "Subtract"])
@pytest.mark.parametrize("clip_low", [True, False])
@pytest.mark.parametrize("clip_high", [True, False])
def test_float_matches_cellprofiler(pair, method, clip_low, clip_high):
    image, function = pair
    function = function if method == "Divide" else function * np.float32(0.3)
    got = apply(image, function, method, clip_low, clip_high)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, cp_apply(image, function, method, clip_low, clip_high))


def test_subtract_always_clamps_negatives(pair):
    image, function = pair
    got = apply(image, function, "Subtract", clip_low=False, clip_high=False)
    assert got.min() == 0 and (image - function < 0).any()


def test_float64_image_is_computed_as_float32(pair):
    image, function = pair
    got = apply(image.astype(np.float64), function)
    np.testing.assert_array_equal(got, apply(image, function))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_divide_rounds_half_even_and_clamps(rng, dtype):
    top = np.iinfo(dtype).max
    image = rng.integers(0, top + 1, (41, 29), dtype=dtype)
    function = (rng.random((41, 29)) * 1.6 + 0.2).astype(np.float32)
    got = apply(image, function, "Divide")
    assert got.dtype == dtype
    exact = image.astype(np.float32) / function
    expected = np.clip(np.rint(exact), 0, top).astype(dtype)
    np.testing.assert_array_equal(got, expected)
    # dividing by < 1 overflows the dtype for bright pixels: those saturate, never wrap
    assert (got[exact > top] == top).all() and (exact > top).any()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_subtract_uses_cellprofiler_float_units(rng, dtype):
    top = np.iinfo(dtype).max
    image = rng.integers(0, top + 1, (23, 31), dtype=dtype)
    function = (rng.random((23, 31)) * 0.5).astype(np.float32)  # 0.5 == half the dtype range
    got = apply(image, function, "Subtract")
    reference = cp_apply(image.astype(np.float64) / top, function.astype(np.float64), "Subtract", True, True) * top
    assert got.dtype == dtype
    # float32 arithmetic: one rounding of f * M and one of the difference (each <= M * 2**-24)
    assert np.abs(got.astype(np.float64) - reference).max() <= 0.5 + 2 * top * 2.0**-24
    assert (got[reference == 0] == 0).all()


def test_integer_rounding_is_half_to_even():
    image = np.array([[1, 3, 5, 7]], np.uint8)
    # units given: a constant 2 on pixels of 1..7 could as well be a background in counts ("auto" refuses it)
    got = apply(image, np.full((1, 4), 2.0, np.float32), units="cellprofiler")
    np.testing.assert_array_equal(got, [[0, 2, 2, 4]])


@pytest.mark.parametrize("bad", [0.0, -0.5, np.inf, np.nan])
def test_zero_negative_or_non_finite_function_raises(pair, bad):
    image, function = pair
    function = function.copy()
    function[3, 4] = bad
    function[5, 6] = bad
    with pytest.raises(ValueError, match=r"^function: 2 pixels are zero, negative or not finite"):
        apply(image, function)
    assert apply(image, function, on_invalid="ignore").shape == image.shape  # CellProfiler's unguarded arithmetic


@pytest.mark.parametrize("method", ["Divide", "Subtract"])
def test_float64_function_beyond_float32_range_is_named(pair, method):
    image, function = pair
    function = function.astype(np.float64)
    function[2, 3] = 1e300
    with pytest.raises(ValueError, match=r"^function: 1 pixel is finite but beyond float32's range"):
        apply(image, function, method)
    function[2, 3] = 3e38  # still a float32 value: accepted
    assert np.isfinite(apply(image, function, method)).all()


def test_subtract_accepts_zero_but_not_nan(pair):
    image, function = pair
    function = function.copy()
    function[0, 0] = 0
    apply(image, function, "Subtract")
    function[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"^function: 1 pixel is not finite"):
        apply(image, function, "Subtract")


def test_ignore_gives_cellprofiler_unguarded_division(pair):
    image, function = pair
    image = image.copy()
    function = function.copy()
    function[0, :3] = 0
    image[0, :3] = [0.5, 0.0, -0.2]
    got = apply(image, function, on_invalid="ignore")
    assert got[0, 0] == 1.0  # +inf clipped to 1
    assert np.isnan(got[0, 1])  # 0/0 survives both clips
    assert got[0, 2] == 0.0  # -inf clipped to 0
    ints = apply(np.array([[10, 0]], np.uint8), np.zeros((1, 2), np.float32), on_invalid="ignore")
    np.testing.assert_array_equal(ints, [[255, 0]])  # +inf saturates, NaN -> 0


def test_invalid_function_pixels_counts_per_method():
    function = np.array([[0.0, np.inf, 1.0, np.nan, -1.0]], np.float32)
    assert invalid_function_pixels(function, "Divide") == 4
    assert invalid_function_pixels(function, "Subtract") == 2


def test_bad_arguments(pair):
    image, function = pair
    with pytest.raises(ValueError, match=r"^method: expected one of 'Divide', 'Subtract'"):
        apply(image, function, "Multiply")
    with pytest.raises(ValueError, match=r"^function: shape \(3, 3\) does not match"):
        apply(image, np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match=r"^image: dtype int16"):
        apply(image.astype(np.int16), function)
    with pytest.raises(ValueError, match=r"^on_invalid"):
        apply(image, function, on_invalid="warn")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("method", ["Divide", "Subtract"])
def test_gpu_fused_kernel_matches_numpy(cupy, on_device, rng, dtype, method):
    if dtype == np.float32:
        image = (rng.random((64, 70)) * 1.2).astype(np.float32)
    else:
        image = rng.integers(0, np.iinfo(dtype).max + 1, (64, 70), dtype=dtype)
    function = (rng.random((64, 70)) * 1.5 + 0.2).astype(np.float32)
    if method == "Subtract":
        function *= np.float32(0.3)
    for clip_low, clip_high in [(True, True), (False, False)]:
        expected = apply(image, function, method, clip_low, clip_high)
        with on_device():
            got = apply(cupy.asarray(image), cupy.asarray(function), method, clip_low, clip_high)
        assert isinstance(got, cupy.ndarray) and got.dtype == expected.dtype
        np.testing.assert_array_equal(got.get(), expected)


@pytest.mark.parametrize("flag", ["clip_low", "clip_high"])
def test_clip_flags_must_be_booleans(flag):
    # "no" is truthy: accepting it would clip where the caller asked for no clipping
    image = np.full((4, 5), 0.5, np.float32)
    with pytest.raises(TypeError, match=rf"^{flag}: expected True or False, got 'no'$"):
        apply(image, np.ones_like(image), **{flag: "no"})
    apply(image, np.ones_like(image), **{flag: np.bool_(False)})
