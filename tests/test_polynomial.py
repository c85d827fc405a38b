import numpy as np
import pytest

from gpuillum.filters.polynomial import UndeterminedFit, fit_polynomial, legendre_columns

smooth = pytest.importorskip("centrosome.smooth")


def vignetting(shape, fall_off=0.35):
    """Off-centre radial fall-off, a smooth field that no low-degree polynomial fits exactly."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    distance = (y - 0.4 * height) ** 2 + (x - 0.6 * width) ** 2
    return 1 - fall_off * (distance / distance.max()) ** 1.5


def noisy_field(rng, shape):
    return (0.5 * vignetting(shape) + rng.normal(0, 0.02, shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(64, 80), (200, 256), (1, 50), (50, 1), (3, 3), (2, 7)])
@pytest.mark.parametrize("masked", [False, True])
def test_degree_2_matches_cellprofiler(rng, shape, masked):
    image = noisy_field(rng, shape)
    image[rng.random(shape) < 0.1] = 0  # zeros are excluded, as in CellProfiler
    mask = rng.random(shape) < 0.7 if masked else np.ones(shape, bool)
    expected = smooth.fit_polynomial(image, mask, clip=False)
    out = fit_polynomial(image, 2, mask=mask if masked else None)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5)


def test_cellprofiler_clip_equals_clip_0_1(rng):
    shape = (60, 90)
    image = (1.3 * vignetting(shape, 0.9) + rng.normal(0, 0.05, shape)).astype(np.float32)
    expected = smooth.fit_polynomial(image, np.ones(shape, bool), clip=True)
    assert expected.max() == 1 and (smooth.fit_polynomial(image, np.ones(shape, bool), clip=False) > 1).any()
    np.testing.assert_allclose(fit_polynomial(image, clip=(0, 1)), expected, atol=1e-5)


def test_zeros_can_be_included(rng):
    image = noisy_field(rng, (40, 50))
    image[:, :10] = 0
    with_zeros = fit_polynomial(image, 2, exclude_zeros=False)
    without = fit_polynomial(image, 2)
    expected = smooth.fit_polynomial(image, image > 0, clip=False)
    np.testing.assert_allclose(without, expected, atol=1e-5)
    assert with_zeros[:, :10].mean() < 0.5 * without[:, :10].mean()


def test_nothing_valid_returns_the_input_as_float32():
    image = np.zeros((6, 7), np.uint16)
    out = fit_polynomial(image)
    assert out.dtype == np.float32 and np.array_equal(out, image)
    image = np.arange(42, dtype=np.float32).reshape(6, 7)
    assert np.array_equal(fit_polynomial(image, mask=np.zeros((6, 7), bool)), image)


@pytest.mark.parametrize("degree", [0, 1, 4, 6, 8])
def test_recovers_a_polynomial_surface_exactly(rng, degree):
    shape = (97, 131)
    u = np.linspace(-1, 1, shape[0])
    v = np.linspace(-1, 1, shape[1])
    coefficients = np.zeros((degree + 1, degree + 1))
    for a in range(degree + 1):
        coefficients[a, : degree + 1 - a] = rng.normal(0, 0.1, degree + 1 - a)
    coefficients[0, 0] = 5.0  # keep the surface positive
    surface = (legendre_columns(u, degree, np) @ coefficients @ legendre_columns(v, degree, np).T).astype(np.float32)
    # independent evaluation of the same surface with numpy's Legendre module
    np.testing.assert_allclose(surface, np.polynomial.legendre.leggrid2d(u, v, coefficients), rtol=1e-6)
    out = fit_polynomial(surface, degree)
    np.testing.assert_allclose(out, surface, rtol=2e-6)
    if degree >= 1:
        lower = fit_polynomial(surface, degree - 1)
        assert np.abs(lower - surface).max() > 1e-3  # the top-degree terms matter


def test_higher_degree_fits_vignetting_better(rng):
    field = vignetting((128, 160)).astype(np.float32)
    errors = [np.abs(fit_polynomial(field, d) / field - 1).max() for d in (2, 4, 6, 8)]
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.2 * errors[0]


def test_robust_fit_ignores_bright_objects(rng):
    shape = (256, 256)
    truth = 0.3 * vignetting(shape)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = truth.copy()
    for _ in range(15):  # bright cells over ~12% of the field
        cy, cx, sigma = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(4, 9)
        image += 1.5 * truth * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
    image = rng.poisson(image * 2000).astype(np.float32) / 2000
    plain = fit_polynomial(image, 6)
    robust = fit_polynomial(image, 6, robust=True)
    plain_error = np.abs(plain / truth - 1).mean()
    robust_error = np.abs(robust / truth - 1).mean()
    # measured on this scene (12 % of pixels in cells): plain 11 %, robust 0.24 % mean error
    assert robust_error < 0.015
    assert robust_error < 0.1 * plain_error


def test_robust_fit_respects_the_mask(rng):
    shape = (128, 128)
    truth = (0.4 * vignetting(shape)).astype(np.float32)
    image = truth.copy()
    image[30:60, 40:90] = 5.0  # a bright artefact, masked out
    mask = np.ones(shape, bool)
    mask[30:60, 40:90] = False
    out = fit_polynomial(image, 4, mask=mask, robust=True)
    assert np.abs(out / truth - 1).max() < 0.05


def test_rejects_bad_input(rng):
    image = rng.random((10, 12)).astype(np.float32)
    for bad in (-1, 9, 2.0, True):
        with pytest.raises(ValueError, match="degree"):
            fit_polynomial(image, bad)
    with pytest.raises(ValueError, match="mask"):
        fit_polynomial(image, mask=np.ones((12, 10), bool))
    with pytest.raises(ValueError, match="clip"):
        fit_polynomial(image, clip=(1, 0))
    with pytest.raises(ValueError, match="clip"):
        fit_polynomial(image, clip=True)
    with pytest.raises(ValueError, match="2-D"):
        fit_polynomial(image[0])
    with pytest.raises(ValueError, match="NaN"):
        fit_polynomial(np.full((4, 4), np.nan, np.float32))


@pytest.mark.parametrize("degree, rows", [(2, [4]), (2, [2, 9]), (1, [6]), (4, [0, 3, 6, 9])])
def test_pixels_on_a_curve_of_the_degree_leave_the_fit_undetermined(rng, degree, rows):
    image = rng.random((12, 15)).astype(np.float32) + 0.1
    mask = np.zeros(image.shape, bool)
    mask[rows, :] = True
    with pytest.raises(UndeterminedFit, match=f"curve of degree {degree}"):
        fit_polynomial(image, degree, mask=mask, undetermined="raise")
    surface = fit_polynomial(image, degree, mask=mask)  # default: the minimum-norm coefficients
    assert np.isfinite(surface).all()
    mask[1, 1] = mask[11, 3] = mask[7, 13] = mask[10, 10] = True  # off the curve: determined again
    if degree < 4:
        np.testing.assert_array_equal(fit_polynomial(image, degree, mask=mask, undetermined="raise"),
                                      fit_polynomial(image, degree, mask=mask))
    with pytest.raises(ValueError, match="undetermined: expected one of 'minimum-norm', 'raise'"):
        fit_polynomial(image, degree, undetermined="ignore")


@pytest.mark.gpu
@pytest.mark.parametrize("robust", [False, True])
def test_gpu_matches_cpu(cupy, on_device, rng, robust):
    image = noisy_field(rng, (203, 180))
    mask = rng.random(image.shape) < 0.8
    expected = fit_polynomial(image, 6, mask=mask, robust=robust)
    with on_device():  # only the normal equations (and the robust fit's block grid) reach the host
        out = fit_polynomial(cupy.asarray(image), 6, mask=cupy.asarray(mask), robust=robust)
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out.get(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["one row", "three pixels"])
def test_gpu_cellprofiler_fit_on_an_undetermined_mask_matches_cpu(cupy, on_device, rng, kind):
    from gpuillum.methods.cellprofiler import CalculateSettings, calculate

    image = rng.random((23, 31)).astype(np.float32) + 0.05
    mask = np.zeros(image.shape, bool)
    if kind == "one row":
        mask[7, :] = True
    else:
        mask[[1, 5, 9], [3, 20, 7]] = True
    settings = CalculateSettings(smoothing="Fit Polynomial", aggregation="Each", rescale="No")
    expected = calculate([image], settings, masks=[mask])
    with on_device():  # the few valid pixels are fitted on the host, by design
        out = calculate([cupy.asarray(image)], settings, masks=[cupy.asarray(mask)])
    assert isinstance(out, cupy.ndarray)
    np.testing.assert_allclose(out.get(), expected, rtol=1e-6, atol=1e-7)
