import numpy as np
import pytest
import scipy.ndimage as ndi

from gpuillum.filters.smoothing import gaussian_filter

smooth = pytest.importorskip("centrosome.smooth")


def cellprofiler_gaussian(image, sigma, mask):
    """CellProfiler's Gaussian Filter smoothing (CorrectIlluminationCalculate), cast to float32."""
    function = lambda x: ndi.gaussian_filter(x, sigma, mode="constant", cval=0)  # noqa: E731
    return smooth.smooth_with_function_and_mask(image, function, mask).astype(np.float32)


@pytest.mark.parametrize("shape", [(64, 80), (1, 50), (7, 3), (200, 256)])
@pytest.mark.parametrize("sigma", [0.7, 2.5, 8.511, 11.489])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_cellprofiler(rng, shape, sigma, masked):
    image = rng.random(shape).astype(np.float32)
    mask = rng.random(shape) < 0.6 if masked else None
    expected = cellprofiler_gaussian(image, sigma, np.ones(shape, bool) if mask is None else mask)
    out = gaussian_filter(image, sigma, mask=mask)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)


def test_constant_image_stays_constant_up_to_the_border():
    # the normalisation removes the darkening that zero padding would cause
    image = np.full((40, 60), 0.25, np.float32)
    np.testing.assert_allclose(gaussian_filter(image, 6.0), 0.25, rtol=1e-6)
    plain = ndi.gaussian_filter(image, 6.0, mode="constant", cval=0)
    assert plain[0, 0] < 0.2


def test_masked_pixels_do_not_contribute():
    image = np.full((30, 30), 1.0, np.float32)
    image[10:20, 10:20] = 100.0
    mask = np.ones(image.shape, bool)
    mask[10:20, 10:20] = False
    np.testing.assert_allclose(gaussian_filter(image, 3.0, mask=mask), 1.0, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float64])
def test_other_dtypes_are_smoothed_as_float32(rng, dtype):
    image = (rng.random((20, 30)) * 200).astype(dtype)
    expected = cellprofiler_gaussian(image.astype(np.float32), 2.0, np.ones(image.shape, bool))
    np.testing.assert_allclose(gaussian_filter(image, 2.0), expected, rtol=1e-6)


def test_rejects_bad_input(rng):
    image = rng.random((10, 10)).astype(np.float32)
    for bad in (0, -1.0, float("inf"), "2", True):
        with pytest.raises(ValueError, match="sigma"):
            gaussian_filter(image, bad)
    with pytest.raises(ValueError, match="mask"):
        gaussian_filter(image, 1.0, mask=np.ones((10, 11), bool))
    with pytest.raises(TypeError, match="dtype"):
        gaussian_filter(image.astype(np.int16), 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("masked", [False, True])
def test_gpu_matches_cpu(cupy, on_device, rng, masked):
    image = rng.random((203, 180)).astype(np.float32)
    mask = rng.random(image.shape) < 0.7 if masked else None
    expected = gaussian_filter(image, 8.5, mask=mask)
    with on_device():
        out = gaussian_filter(cupy.asarray(image), 8.5, mask=None if mask is None else cupy.asarray(mask))
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out.get(), expected, rtol=1e-5, atol=1e-7)


def reference_normalised_gaussian(image, sigma, mask):
    """CellProfiler's normalised convolution with SciPy's full (uncut) kernel."""
    weights = np.ones(image.shape) if mask is None else mask.astype(np.float64)
    values = image.astype(np.float64) * weights
    return ndi.gaussian_filter(values, sigma, mode="constant") / (ndi.gaussian_filter(weights, sigma, mode="constant") + np.finfo(float).eps)


@pytest.mark.parametrize("masked", [False, True])
def test_a_kernel_longer_than_the_image_is_cut_without_changing_the_result(masked):
    rng = np.random.default_rng(5)
    image = (rng.random((23, 31)) * 1000).astype(np.float32)
    mask = rng.random(image.shape) > 0.3 if masked else None
    for sigma in (7.0, 20.0, 300.0):  # 4 sigma from 28 (longer than 23 rows) to 1200 pixels
        got = gaussian_filter(image, sigma, mask=mask)
        np.testing.assert_allclose(got, reference_normalised_gaussian(image, sigma, mask), rtol=1e-6)
    # a sigma of 1e9 (8e9 kernel taps in SciPy) is flat over the image: the (masked) mean everywhere
    flat = gaussian_filter(image, 1e9, mask=mask)
    mean = image.mean(dtype=np.float64) if mask is None else image[mask].mean(dtype=np.float64)
    np.testing.assert_allclose(flat, mean, rtol=1e-6)
