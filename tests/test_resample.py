import numpy as np
import pytest

from gpuillum.filters.blocks import block_reduce
from gpuillum.filters.resample import cellprofiler_resize_shape, resize_bilinear, upsample

skimage_transform = pytest.importorskip("skimage.transform")


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


@pytest.mark.gpu
def test_resample_gpu_matches_cpu(cupy, rng):
    image = rng.random((250, 190)).astype(np.float32)
    for arg in (0.2, 3.0, (61, 400)):
        out = resize_bilinear(cupy.asarray(image), arg)
        assert isinstance(out, cupy.ndarray)
        np.testing.assert_allclose(out.get(), resize_bilinear(image, arg), rtol=1e-6, atol=1e-7)
    grid = rng.random((9, 11)).astype(np.float32)
    np.testing.assert_allclose(upsample(cupy.asarray(grid), (100, 80)).get(), upsample(grid, (100, 80)), rtol=1e-6)
