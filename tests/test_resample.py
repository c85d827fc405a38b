import numpy as np
import pytest

from gpuillum.filters.blocks import block_reduce
from gpuillum.filters.resample import (
    cellprofiler_resize_shape,
    resize_bilinear,
    resize_mask,
    resize_operator,
    upsample,
    upsample_operator,
)

skimage_transform = pytest.importorskip("skimage.transform")
skimage_util = pytest.importorskip("skimage.util")


def cellprofiler_resize(pixels, new_shape):
    """The call CellProfiler 4.2's Resize module makes for Bilinear interpolation."""
    scale = np.abs(pixels).max()
    return skimage_transform.resize(pixels / scale, new_shape, order=1, mode="symmetric") * scale


@pytest.mark.parametrize(
    "shape, factor",
    [
        ((250, 250), 0.2),
        ((216, 216), 5.0),
        ((101, 77), 0.37),
        ((50, 64), 2.5),
        ((37, 53), 0.5),
        ((60, 61), 1.3),
        ((9, 200), 0.1),
        ((64, 64), 1.0),
    ],
)
def test_resize_by_factor_matches_cellprofiler(rng, shape, factor):
    image = rng.random(shape).astype(np.float32)
    new_shape = np.round(np.array(shape, dtype=float) * factor)  # CellProfiler's resized_shape
    expected = cellprofiler_resize(image, new_shape)
    out = resize_bilinear(image, factor)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape, new_shape", [((120, 90), (31, 200)), ((33, 33), (33, 10))])
def test_resize_to_shape_matches_cellprofiler(rng, shape, new_shape):
    image = rng.random(shape).astype(np.float32)
    np.testing.assert_allclose(resize_bilinear(image, new_shape), cellprofiler_resize(image, new_shape), atol=1e-6)


@pytest.mark.parametrize(
    "shape, new_shape",
    [((60, 80), (15, 20)), ((37, 53), (18, 26)), ((100, 100), (50, 50)), ((101, 257), (20, 51)),
     ((1080, 1080), (216, 216)), ((9, 200), (1, 20)), ((33, 33), (33, 10)), ((20, 30), (41, 61))],
)
def test_resize_mask_matches_cellprofiler(rng, shape, new_shape):
    # CellProfiler's Resize: img_as_bool(resize(mask, order=0, mode="constant")), ties included
    mask = rng.random(shape) > 0.5
    expected = skimage_util.img_as_bool(skimage_transform.resize(mask, new_shape, order=0, mode="constant"))
    out = resize_mask(mask, new_shape)
    assert out.dtype == bool
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("factor_or_shape", [0.2, 0.125, 0.1, 5.0, (13, 300), (150, 31), (100, 256), (7, 7)])
def test_resize_odd_shapes_match_cellprofiler(rng, factor_or_shape):
    image = rng.random((101, 257)).astype(np.float32)
    out = resize_bilinear(image, factor_or_shape)
    if isinstance(factor_or_shape, float):
        new_shape = np.round(np.array(image.shape, dtype=float) * factor_or_shape)
    else:
        new_shape = factor_or_shape
    expected = cellprofiler_resize(image, new_shape)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "in_len, out_len",
    [(1, 3), (3, 1), (9, 1), (7, 2), (2, 7), (10, 10), (13, 12), (101, 20), (257, 32), (20, 101), (64, 3)],
)
def test_resize_operator_is_skimage_resize_of_the_identity(in_len, out_len):
    # Resizing the identity along axis 0 only gives the 1-D operator column by column; the
    # cases include Gaussian radii larger than the line (repeated reflection) and length 1.
    expected = skimage_transform.resize(np.eye(in_len), (out_len, in_len), order=1, mode="symmetric")
    matrix = resize_operator(in_len, out_len)
    assert matrix.shape == (out_len, in_len) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix.toarray(), expected, rtol=0, atol=1e-7)


def test_resize_operator_is_sparse_and_cached():
    shrink = resize_operator(1080, 216)  # JUMP's 0.2: sigma 2, Gaussian radius 8
    assert np.diff(shrink.indptr).max() <= 2 * 8 + 2
    assert np.diff(resize_operator(216, 1080).indptr).max() <= 2
    assert resize_operator(1080, 216) is shrink
    assert not shrink.data.flags.writeable  # shared through the cache, so it must not be edited


def test_resize_reuses_cached_operators(rng):
    image = rng.random((123, 45)).astype(np.float32)
    resize_bilinear(image, (37, 19))
    before = resize_operator.cache_info()
    resize_bilinear(image + 1, (37, 19))
    after = resize_operator.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("factor", [0.2, 3.0])
def test_resize_dtypes_give_float32_matching_cellprofiler(rng, dtype, factor):
    if np.dtype(dtype).kind == "u":
        image = rng.integers(0, np.iinfo(dtype).max, (90, 70), endpoint=True).astype(dtype)
    else:
        image = (rng.random((90, 70)) * 1000 - 300).astype(dtype)
    original = image.copy()
    out = resize_bilinear(image, factor)
    expected = cellprofiler_resize(image.astype(np.float64), out.shape)
    assert out.dtype == np.float32 and np.array_equal(image, original)
    scale = np.abs(image.astype(np.float64)).max()
    np.testing.assert_allclose(out / scale, expected / scale, rtol=0, atol=1e-6)
    assert out.min() >= np.float32(image.min()) and out.max() <= np.float32(image.max())  # clipped


def test_resize_keeps_constant_images_constant():
    image = np.full((40, 60), 777, dtype=np.uint16)
    for arg in (0.2, 5.0, (13, 101)):
        out = resize_bilinear(image, arg)
        assert np.array_equal(out, np.full(out.shape, 777, dtype=np.float32))


def test_jump_round_trip_is_smooth_and_keeps_shape(rng):
    image = rng.random((250, 250)).astype(np.float32)
    small = resize_bilinear(image, 0.2)
    back = resize_bilinear(small, 5)
    assert small.shape == (50, 50) and back.shape == image.shape
    np.testing.assert_allclose(back, cellprofiler_resize(cellprofiler_resize(image, (50, 50)), (250, 250)), atol=1e-6)


def test_resize_shape_rounds_half_to_even():
    assert cellprofiler_resize_shape((25, 35), 0.1) == (2, 4)
    with pytest.raises(ValueError, match="factor"):
        cellprofiler_resize_shape((4, 4), 0.1)


def test_resize_rejects_bad_arguments(rng):
    image = rng.random((8, 8)).astype(np.float32)
    for bad in (0, -1.0, float("nan"), (3,), (2.0, 3.0), True):
        with pytest.raises(ValueError, match="factor_or_shape"):
            resize_bilinear(image, bad)


def test_upsample_reproduces_linear_fields_exactly():
    rows, cols = 97, 130
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    field = 3.0 + 0.02 * y - 0.01 * x
    row_samples = np.arange(7) * (rows - 1) / 6
    col_samples = np.arange(12) * (cols - 1) / 11
    grid = 3.0 + 0.02 * row_samples[:, None] - 0.01 * col_samples[None, :]
    out = upsample(grid, (rows, cols))
    assert out.dtype == np.float32 and out.shape == (rows, cols)
    np.testing.assert_allclose(out, field, rtol=2e-7)


def test_upsample_puts_grid_samples_on_their_pixels(rng):
    grid = rng.random((5, 7))
    out = upsample(grid, (9, 13))  # samples every 2 pixels
    np.testing.assert_allclose(out[::2, ::2], grid, rtol=1e-6)
    np.testing.assert_allclose(out[1, 0], (grid[0, 0] + grid[1, 0]) / 2, rtol=1e-6)


def test_block_means_upsampled_follow_linear_images():
    # Block means sit at their block centroids: within half a pixel of the sample in the interior,
    # a quarter block inward for the half-width border blocks; the error is bounded accordingly.
    y, x = np.mgrid[0:121, 0:91].astype(np.float32)
    slope = 0.5 + 0.25
    image = 100 + 0.5 * y + 0.25 * x
    out = upsample(block_reduce(image, 10, stat="mean"), image.shape)
    error = np.abs(out - image)
    assert error[10:-10, 10:-10].max() <= slope * 0.5 + 1e-4
    assert error.max() <= slope * (10 / 4 + 0.5) + 1e-4
    assert error.max() > slope * 1.5  # the border offset is real, not hidden by the bound


def test_upsample_single_sample_axes():
    assert np.array_equal(upsample(np.full((1, 1), 2.5), (4, 3)), np.full((4, 3), 2.5, np.float32))
    grid = np.array([[1.0, 3.0]])
    np.testing.assert_allclose(upsample(grid, (2, 3)), [[1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="shape"):
        upsample(grid, (0, 3))


def interp_upsample(grid, shape):
    """Reference: numpy.interp along columns, then along rows, in float64, samples at k*(L-1)/(n-1)."""
    grid = np.asarray(grid, dtype=np.float64)

    def along(values, length, axis):
        n = values.shape[axis]
        if n == 1 or length == 1:  # a single sample, or a single pixel taking the first sample
            return np.repeat(np.take(values, [0], axis=axis), length, axis=axis)
        samples = np.arange(n) * (length - 1) / (n - 1)
        pixels = np.arange(length, dtype=np.float64)
        return np.apply_along_axis(lambda v: np.interp(pixels, samples, v), axis, values)

    return along(along(grid, shape[1], 1), shape[0], 0)


@pytest.mark.parametrize(
    "grid_shape, shape",
    [((36, 37), (108, 108)), ((5, 7), (9, 13)), ((1, 6), (3, 41)), ((6, 1), (41, 3)), ((2, 2), (2, 2)),
     ((9, 11), (4, 30)), ((3, 4), (1, 1)), ((13, 17), (200, 7))],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_upsample_matches_numpy_interp(rng, grid_shape, shape, dtype):
    grid = (rng.random(grid_shape) * 250).astype(dtype)
    out = upsample(grid, shape)
    assert out.dtype == np.float32 and out.shape == shape and out.flags.c_contiguous
    np.testing.assert_allclose(out, interp_upsample(grid, shape), rtol=2e-7, atol=250 * 1e-7)


@pytest.mark.parametrize("value", [321, 0.1, 65535, 1e-30])
def test_upsample_keeps_constant_grids_constant(value):
    for grid_shape, shape in (((361, 361), (1080, 1080)), ((7, 3), (101, 257)), ((1, 1), (5, 5))):
        grid = np.full(grid_shape, value, np.float32)
        assert np.array_equal(upsample(grid, shape), np.full(shape, np.float32(value)))


def test_upsample_nan_spreads_only_within_one_spacing():
    grid = np.zeros((5, 5), np.float32)
    grid[2, 2] = np.nan
    out = upsample(grid, (9, 9))  # samples every 2 pixels: the NaN sample sits at pixel (4, 4)
    expected = np.zeros((9, 9), bool)
    expected[3:6, 3:6] = True  # strictly less than one spacing away; neighbour samples stay finite
    np.testing.assert_array_equal(np.isnan(out), expected)


def test_upsample_operator_is_sparse_cached_and_read_only():
    matrix = upsample_operator(361, 1080)
    assert matrix.shape == (1080, 361) and np.diff(matrix.indptr).max() == 2
    np.testing.assert_allclose(matrix.sum(axis=1), 1, rtol=1e-15)
    assert upsample_operator(361, 1080) is matrix and not matrix.data.flags.writeable


@pytest.mark.gpu
def test_resample_gpu_matches_cpu(cupy, on_device, rng):
    image = rng.random((250, 190)).astype(np.float32)
    for arg in (0.2, 3.0, (61, 400)):
        with on_device():
            out = resize_bilinear(cupy.asarray(image), arg)
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_allclose(out.get(), resize_bilinear(image, arg), rtol=1e-6, atol=1e-7)
    grid = rng.random((9, 11)).astype(np.float32)
    for shape in ((100, 80), (5, 200), (1, 1)):
        with on_device():
            out = upsample(cupy.asarray(grid), shape)
        assert isinstance(out, cupy.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out.get(), upsample(grid, shape), rtol=1e-6)


@pytest.mark.gpu
def test_resize_gpu_matches_cpu_for_integer_images_and_caches_per_device(cupy, on_device, rng):
    from gpuillum.filters.resample import _device_operator, resize_operator

    image = rng.integers(0, 65535, (101, 257), endpoint=True).astype(np.uint16)
    for arg in (0.2, 5.0, (150, 31)):
        with on_device():
            out = resize_bilinear(cupy.asarray(image), arg)
        assert isinstance(out, cupy.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
        np.testing.assert_allclose(out.get() / 65535, resize_bilinear(image, arg) / 65535, rtol=0, atol=1e-6)
    before = _device_operator.cache_info()
    resize_bilinear(cupy.asarray(image), 0.2)
    after = _device_operator.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 2


@pytest.mark.gpu
def test_resize_mask_gpu_matches_cpu(cupy, on_device, rng):
    mask = rng.random((101, 257)) > 0.5
    with on_device():
        out = resize_mask(cupy.asarray(mask), (20, 51))
    assert isinstance(out, cupy.ndarray) and out.dtype == bool
    np.testing.assert_array_equal(out.get(), resize_mask(mask, (20, 51)))
