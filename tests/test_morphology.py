"""Grey-scale morphology: exact against scikit-image (mode="ignore"), scipy.ndimage and brute force."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.ndimage as ndi
from skimage import morphology as skm

from gpuillum.filters import morphology
from gpuillum.filters.footprints import footprint_array

OPERATIONS = {
    "grey_erosion": skm.erosion,
    "grey_dilation": skm.dilation,
    "grey_opening": skm.opening,
    "grey_closing": skm.closing,
    "white_tophat": skm.white_tophat,
    "black_tophat": skm.black_tophat,
}
DTYPES = (np.uint8, np.uint16, np.float32)
FOOTPRINTS = ("disk", "square")
SHAPES = ((1, 23), (23, 1), (7, 3), (37, 41), (64, 129))
RADII = (1, 2, 3, 7, 15, 40)


def random_image(rng, shape, dtype):
    """Full-range integers (both extremes present) or signed floats with a wide spread."""
    if np.dtype(dtype).kind == "f":
        return (rng.standard_normal(shape) * 1000).astype(dtype)
    info = np.iinfo(dtype)
    image = rng.integers(0, int(info.max) + 1, shape).astype(dtype)
    image.flat[0], image.flat[-1] = info.max, info.min
    return image


def skimage_footprint(radius, footprint):
    if footprint == "disk":
        return skm.disk(radius)
    return skm.footprint_rectangle((2 * radius + 1, 2 * radius + 1))


def brute_force_erosion(image, radius, footprint, reduce=np.minimum):
    """Minimum (or maximum) over every in-bounds footprint offset, one shifted view per offset."""
    height, width = image.shape
    result = image.copy()
    mask = footprint_array(radius, footprint)
    for dy, dx in np.argwhere(mask) - radius:
        y0, y1, x0, x1 = max(0, -dy), min(height, height - dy), max(0, -dx), min(width, width - dx)
        if y0 < y1 and x0 < x1:
            reduce(result[y0:y1, x0:x1], image[y0 + dy:y1 + dy, x0 + dx:x1 + dx], out=result[y0:y1, x0:x1])
    return result


@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_erosion_and_dilation_match_skimage_ignore_mode(rng, dtype, footprint):
    for shape in SHAPES:
        for radius in RADII:
            image = random_image(rng, shape, dtype)
            reference = skimage_footprint(radius, footprint)
            for name in ("grey_erosion", "grey_dilation"):
                got = getattr(morphology, name)(image, radius, footprint=footprint)
                assert got.dtype == image.dtype and got.shape == image.shape
                expected = OPERATIONS[name](image, reference, mode="ignore")
                np.testing.assert_array_equal(got, expected, err_msg=f"{name} {shape} r={radius}")


@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opening_closing_and_tophats_match_skimage_ignore_mode(rng, dtype, footprint):
    for shape, radius in (((1, 23), 2), ((23, 1), 3), ((7, 3), 1), ((37, 41), 3), ((37, 41), 15), ((64, 129), 7),
                          ((41, 37), 40)):
        image = random_image(rng, shape, dtype)
        reference = skimage_footprint(radius, footprint)
        for name in ("grey_opening", "grey_closing", "white_tophat", "black_tophat"):
            got = getattr(morphology, name)(image, radius, footprint=footprint)
            assert got.dtype == image.dtype
            expected = OPERATIONS[name](image, reference, mode="ignore")
            np.testing.assert_array_equal(got, expected, err_msg=f"{name} {shape} r={radius}")


@pytest.mark.parametrize("footprint", FOOTPRINTS)
def test_interior_matches_scipy_ndimage(rng, footprint):
    image = random_image(rng, (96, 80), np.uint16)
    for radius in (2, 11):
        mask = footprint_array(radius, footprint)
        inner = (slice(radius, -radius), slice(radius, -radius))
        for ours, theirs in ((morphology.grey_erosion, ndi.grey_erosion), (morphology.grey_dilation, ndi.grey_dilation)):
            got = ours(image, radius, footprint=footprint)
            np.testing.assert_array_equal(got[inner], theirs(image, footprint=mask)[inner])


@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_edges_match_brute_force_in_bounds_reference(rng, dtype, footprint):
    image = random_image(rng, (19, 26), dtype)
    for radius in (1, 4, 9, 13, 30):
        np.testing.assert_array_equal(morphology.grey_erosion(image, radius, footprint=footprint),
                                      brute_force_erosion(image, radius, footprint))
        np.testing.assert_array_equal(morphology.grey_dilation(image, radius, footprint=footprint),
                                      brute_force_erosion(image, radius, footprint, np.maximum))


@pytest.mark.parametrize("footprint", FOOTPRINTS)
def test_radius_beyond_the_image_reaches_everything(rng, footprint):
    image = random_image(rng, (5, 8), np.uint16)
    for name, expected in (("grey_erosion", image.min()), ("grey_dilation", image.max()),
                           ("grey_opening", image.min()), ("grey_closing", image.max())):
        got = getattr(morphology, name)(image, 1000, footprint=footprint)
        np.testing.assert_array_equal(got, np.full_like(image, expected))
    single = np.array([[7]], dtype=np.uint8)
    assert morphology.grey_opening(single, 3, footprint=footprint)[0, 0] == 7


def test_float_infinities_and_negative_values(rng):
    image = random_image(rng, (31, 33), np.float32) - 500
    image[3, 4], image[20, 7], image[30, 32] = np.inf, -np.inf, np.inf
    for footprint in FOOTPRINTS:
        reference = skimage_footprint(4, footprint)
        for name, function in OPERATIONS.items():
            # a top-hat of an infinite pixel is inf - inf = NaN (NumPy's "invalid value" warning,
            # expected here), in scikit-image too
            with np.errstate(invalid="ignore"):
                got = getattr(morphology, name)(image, 4, footprint=footprint)
                expected = function(image, reference, mode="ignore")
            np.testing.assert_array_equal(got, expected, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tophats_are_non_negative_and_inputs_untouched(rng, dtype):
    image = random_image(rng, (40, 50), dtype)
    view = image[::2, ::3]  # non-contiguous input is accepted
    copy = view.copy()
    for name in ("white_tophat", "black_tophat"):
        got = getattr(morphology, name)(view, 3)
        assert isinstance(got, np.ndarray) and got.dtype == image.dtype
        assert (got >= 0).all()
        np.testing.assert_array_equal(got, OPERATIONS[name](copy, skm.disk(3), mode="ignore"))
    np.testing.assert_array_equal(view, copy)


def test_disk_width_schedule_steps_are_reachable():
    for radius in (1, 2, 7, 50, 250):
        half = morphology._clipped_chords(radius, 10_000, 10_000)
        widths, first, dys = morphology._width_schedule(half)
        steps = np.diff(np.concatenate([[0], widths]))
        previous = np.concatenate([[0], widths[:-1]])
        assert (steps[1:] > 0).all() and (steps <= 2 * previous + 1).all()
        assert sorted(dys) == list(range(-radius, radius + 1))
        for i, width in enumerate(widths):
            assert (half[dys[first[i]:first[i + 1]] + radius] == width).all()


@pytest.mark.parametrize(
    ("image", "radius", "footprint", "error", "name"),
    [
        (np.zeros((4, 4, 3), np.uint8), 2, "disk", ValueError, "image"),
        (np.zeros(5, np.uint8), 2, "disk", ValueError, "image"),
        (np.zeros((4, 4), np.int32), 2, "disk", TypeError, "image"),
        (np.zeros((4, 4), np.float64), 2, "disk", TypeError, "image"),
        (np.array([[1.0, np.nan]], np.float32), 2, "disk", ValueError, "image"),
        ([[1, 2], [3, 4]], 2, "disk", TypeError, "image"),
        (np.zeros((4, 4), np.uint8), 0, "disk", ValueError, "radius"),
        (np.zeros((4, 4), np.uint8), 1.5, "disk", TypeError, "radius"),
        (np.zeros((4, 4), np.uint8), True, "disk", TypeError, "radius"),
        (np.zeros((4, 4), np.uint8), 2, "diamond", ValueError, "footprint"),
    ],
)
def test_bad_input_raises_one_line_message(image, radius, footprint, error, name):
    for function_name in OPERATIONS:
        with pytest.raises(error) as caught:
            getattr(morphology, function_name)(image, radius, footprint=footprint)
        message = str(caught.value)
        assert message.startswith(name) and "\n" not in message


def test_cuda_instantiations_match_the_source():
    """The Python side asks for exactly the template instantiations the .cu file lists; CI's
    scripts/check_cuda.py compiles those listed ones with NVRTC (no test here needs CuPy to import,
    so .ci/run and scripts/test.sh run the same tests)."""
    from gpuillum.backend import cuda_source

    text = cuda_source(morphology.CUDA_SOURCE)
    listed = [line.split(":", 1)[1] for line in text.splitlines() if line.startswith("// instantiations:")]
    assert [n.strip() for n in ";".join(listed).split(";")] == list(morphology.CUDA_INSTANTIATIONS)
    kernels = set(re.findall(r"__global__\s+void\s+(\w+)", text))
    assert {name.split("<")[0] for name in morphology.CUDA_INSTANTIATIONS} <= kernels


@pytest.mark.gpu
@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cupy_matches_numpy_bit_for_bit(cupy, on_device, rng, dtype, footprint):
    for shape, radius in (((97, 130), 1), ((97, 130), 7), ((64, 129), 40), ((1, 50), 3), ((50, 1), 3), ((300, 257), 60)):
        image = random_image(rng, shape, dtype)
        device_image = cupy.asarray(image)
        for name in OPERATIONS:
            with on_device():
                got = getattr(morphology, name)(device_image, radius, footprint=footprint)
            assert isinstance(got, cupy.ndarray) and got.dtype == image.dtype
            expected = getattr(morphology, name)(image, radius, footprint=footprint)
            np.testing.assert_array_equal(cupy.asnumpy(got), expected, err_msg=f"{name} {shape} r={radius}")


@pytest.mark.gpu
def test_cupy_disk_in_several_row_bands_is_exact(cupy, on_device, rng, monkeypatch):
    monkeypatch.setattr(morphology, "GPU_TABLE_BUDGET_BYTES", 40_000)  # a few rows per band
    image = random_image(rng, (120, 90), np.uint16)
    for radius in (1, 5, 17):
        with on_device():
            got = morphology.grey_erosion(cupy.asarray(image), radius)
        np.testing.assert_array_equal(cupy.asnumpy(got), morphology.grey_erosion(image, radius))


@pytest.mark.parametrize("footprint", FOOTPRINTS)
def test_a_radius_beyond_the_image_opens_to_the_global_minimum(rng, footprint):
    image = random_image(rng, (17, 29), np.uint16)
    for radius in (40, 10**9):
        assert (morphology.grey_opening(image, radius, footprint=footprint) == image.min()).all()
        np.testing.assert_array_equal(morphology.white_tophat(image, radius, footprint=footprint), image - image.min())
