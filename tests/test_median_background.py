import numpy as np
import pytest

from gpuillum.filters.median import median_filter
from gpuillum.filters.median_background import auto_downsample, median_background


def synthetic_field(rng, shape=(256, 256), n_cells=30):
    """Off-centre vignetting (35% fall-off) on 400 counts, bright Gaussian cells, Poisson noise."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    distance = (y - 0.42 * height) ** 2 + (x - 0.58 * width) ** 2
    truth = 400 * (1 - 0.35 * distance / distance.max())
    signal = truth.copy()
    for _ in range(n_cells):
        cy, cx, sigma = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(3, 6)
        signal += 2000 * truth / 400 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    return rng.poisson(signal).astype(np.uint16), truth


def test_auto_factor_keeps_low_resolution_radius_between_6_and_12():
    for radius in (8, 16, 25, 50, 64, 100, 150):
        factor = auto_downsample(radius, (2160, 2160))
        assert 6 <= radius / factor <= 12.5
    assert auto_downsample(7, (512, 512)) == 1
    assert auto_downsample(250, (64, 64)) == 4  # the grid keeps 16 samples on the short side


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_factor_one_is_the_exact_median(rng, dtype):
    image = (rng.random((60, 45)) * 1000).astype(dtype)
    out = median_background(image, 5, downsample=1)
    assert out.dtype == np.float32
    assert np.array_equal(out, median_filter(image, 5).astype(np.float32))


@pytest.mark.parametrize("radius, downsample", [(24, "auto"), (24, 2), (32, 4)])
def test_downsampled_background_stays_close_to_the_exact_median(rng, radius, downsample):
    # Bounds from measurements on 5 seeds (mean 0.7-1.1 %, max 7-13 %), with margin.
    image, truth = synthetic_field(rng)
    exact = median_filter(image, radius).astype(np.float64)
    background = median_background(image, radius, downsample=downsample)
    assert background.dtype == np.float32 and background.shape == image.shape
    error = np.abs(background - exact) / exact
    assert error.mean() < 0.015
    assert error.max() < 0.2
    # and it estimates the true background at least as well as the exact median does
    assert np.mean(np.abs(background / truth - 1)) <= 1.02 * np.mean(np.abs(exact / truth - 1))


def test_too_coarse_factor_is_visibly_worse(rng):
    image, _ = synthetic_field(rng)
    exact = median_filter(image, 32).astype(np.float64)
    good = np.abs(median_background(image, 32, downsample=4) - exact).mean()
    coarse = np.abs(median_background(image, 32, downsample=16) - exact).mean()
    assert coarse > 2 * good


def test_square_footprint_and_constant_image():
    image = np.full((40, 50), 321, np.uint16)
    for footprint in ("disk", "square"):
        np.testing.assert_array_equal(median_background(image, 16, downsample=4, footprint=footprint), 321)


def test_rejects_bad_arguments(rng):
    image = rng.random((20, 20)).astype(np.float32)
    for bad in (0, -2, 1.5, "fast", True):
        with pytest.raises(ValueError, match="downsample"):
            median_background(image, 8, downsample=bad)
    with pytest.raises(ValueError, match="radius"):
        median_background(image, 0)
    with pytest.raises(ValueError, match="footprint"):
        median_background(image, 8, footprint="octagon")
    with pytest.raises(TypeError, match="dtype"):
        median_background(image.astype(np.float64), 8)


@pytest.mark.gpu
def test_gpu_matches_cpu(cupy, on_device, rng):
    image, _ = synthetic_field(rng)
    expected = median_background(image, 24, downsample=3)
    with on_device():
        out = median_background(cupy.asarray(image), 24, downsample=3)
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out.get(), expected, rtol=1e-6)
