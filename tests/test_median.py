"""Exact median filter: against skimage's rank median, scipy.ndimage.median_filter and brute force."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.filters.rank import median as rank_median

import gpuillum.filters.median as median_module
from gpuillum.filters.footprints import footprint_array
from gpuillum.filters.median import median_filter, median_filter_counted

pytestmark = pytest.mark.filterwarnings("ignore:Bad rank filter performance:UserWarning")

PADDED_MODES = ("reflect", "nearest", "mirror", "constant")
NUMPY_PAD = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge"}
SHAPES = [(1, 23), (23, 1), (7, 3), (37, 41), (64, 129)]


def random_image(rng, shape, dtype, high=None):
    """Random test image: integers in [0, high] (dtype maximum by default) or float32 normals."""
    if np.dtype(dtype) == np.float32:
        return (rng.standard_normal(shape) * 100).astype(np.float32)
    high = np.iinfo(dtype).max if high is None else high
    return rng.integers(0, high, shape, endpoint=True).astype(dtype)


def sorted_windows(padded, radius, footprint, shape):
    """Every footprint offset of ``padded`` (NaN = outside), stacked and sorted along axis 0."""
    height, width = shape
    fp = footprint_array(radius, footprint)
    views = [padded[dy:dy + height, dx:dx + width] for dy, dx in zip(*np.nonzero(fp))]
    return np.sort(np.stack(views), axis=0)  # NaN sorts last


def brute_force_ignore(image, radius, footprint="disk"):
    """Median of the in-bounds pixels of each window: element n // 2 of their sorted values."""
    padded = np.pad(image.astype(np.float64), radius, mode="constant", constant_values=np.nan)
    stack = sorted_windows(padded, radius, footprint, image.shape)
    n = np.sum(~np.isnan(stack), axis=0)
    return np.take_along_axis(stack, (n // 2)[None], axis=0)[0].astype(image.dtype)


def brute_force_padded(image, radius, footprint, numpy_mode):
    """Median over full windows of the image padded with ``numpy.pad(mode=numpy_mode)``."""
    padded = np.pad(image.astype(np.float64), radius, mode=numpy_mode)
    stack = sorted_windows(padded, radius, footprint, image.shape)
    return stack[stack.shape[0] // 2].astype(image.dtype)


def skimage_footprint(radius, footprint):
    return footprint_array(radius, footprint).astype(np.uint8)


# ---------------------------------------------------------------- ignore mode: skimage rank median


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("radius", [1, 2, 3, 7, 15])
@pytest.mark.parametrize("footprint", ["disk", "square"])
def test_uint8_matches_skimage_rank_median(rng, shape, radius, footprint):
    image = random_image(rng, shape, np.uint8)
    expected = rank_median(image, skimage_footprint(radius, footprint))
    result = median_filter(image, radius, footprint=footprint)
    assert result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("shape", [(1, 40), (40, 1), (7, 3), (37, 41), (64, 129)])
@pytest.mark.parametrize("radius", [1, 3, 7, 15])
@pytest.mark.parametrize("footprint", ["disk", "square"])
def test_uint16_12bit_matches_skimage_rank_median(rng, shape, radius, footprint):
    image = random_image(rng, shape, np.uint16, high=4095)
    expected = rank_median(image, skimage_footprint(radius, footprint))
    result = median_filter(image, radius, footprint=footprint)
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result, expected)


def test_uint16_full_range_matches_skimage_rank_median(rng):
    image = random_image(rng, (48, 53), np.uint16)
    image[::7, ::5] = 65535
    image[3::11, ::3] = 0
    expected = rank_median(image, skimage_footprint(5, "disk"))
    np.testing.assert_array_equal(median_filter(image, 5), expected)


@pytest.mark.parametrize("footprint", ["disk", "square"])
def test_radius_larger_than_image_matches_skimage(rng, footprint):
    image = random_image(rng, (13, 17), np.uint8)
    expected = rank_median(image, skimage_footprint(40, footprint))
    np.testing.assert_array_equal(median_filter(image, 40, footprint=footprint), expected)


def test_row_bands_on_threads_match_skimage(rng, monkeypatch):
    # small images run as one band; force the banded, threaded path (each band starts afresh)
    monkeypatch.setattr(median_module, "_THREADED_UPDATES", 0)
    monkeypatch.setattr(median_module.numba, "get_num_threads", lambda: 3)
    image = random_image(rng, (45, 61), np.uint16, high=4095)
    np.testing.assert_array_equal(median_filter(image, 6), rank_median(image, skimage_footprint(6, "disk")))


@pytest.mark.parametrize(
    "dtype, shift, n_tiers",
    # uint16 levels never take three tiers (see _tiers), float ranks take every layout
    [(np.uint16, 3, 1), (np.uint16, 2, 2), (np.uint16, 5, 2)]
    + [(np.float32, shift, n_tiers) for shift, n_tiers in [(3, 1), (2, 2), (5, 2), (2, 3), (3, 3)]],
)
def test_every_histogram_layout_is_exact(rng, monkeypatch, dtype, shift, n_tiers):
    # the layout is chosen from the level count and window area; each must give the same medians
    monkeypatch.setattr(median_module, "_tiers", lambda n_levels, window_area: (shift, n_tiers))
    image = random_image(rng, (31, 37), dtype)
    image[10:20, 5:25] = image.max()  # a plateau: the median jumps across many levels at its edges
    for radius in (1, 4):
        np.testing.assert_array_equal(median_filter(image, radius), brute_force_ignore(image, radius))


def test_huge_radius_is_the_upper_median_of_the_whole_image(rng):
    image = random_image(rng, (13, 17), np.uint16)
    whole = np.sort(image, axis=None)[image.size // 2]
    result = median_filter(image, 250)
    np.testing.assert_array_equal(result, np.full(image.shape, whole, dtype=np.uint16))


# ---------------------------------------------------------------- ignore mode: brute force


@pytest.mark.parametrize("shape", [(1, 30), (30, 1), (7, 3), (37, 41), (13, 17)])
@pytest.mark.parametrize("radius", [1, 2, 3, 7, 15])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_full_range_matches_brute_force(rng, shape, radius, dtype):
    image = random_image(rng, shape, dtype)
    result = median_filter(image, radius)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, brute_force_ignore(image, radius))


@pytest.mark.parametrize("footprint", ["disk", "square"])
def test_float32_with_ties_and_infinities_matches_brute_force(rng, footprint):
    image = rng.integers(-3, 4, (29, 31)).astype(np.float32) * np.float32(0.1)
    image[5, 5] = np.inf
    image[9, ::4] = -np.inf
    np.testing.assert_array_equal(median_filter(image, 4, footprint=footprint), brute_force_ignore(image, 4, footprint))


def test_many_distinct_float_values_match_brute_force(rng):
    # > 65536 distinct values: the rank histogram takes more than two tiers
    image = rng.random((300, 256), dtype=np.float32)
    window = (slice(100, 140), slice(50, 90))
    result = median_filter(image, 3)[window]
    expected = brute_force_ignore(image[94:146, 44:96], 3)[6:-6, 6:-6]
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", ("ignore",) + PADDED_MODES)
def test_constant_image_is_unchanged(dtype, mode):
    image = np.full((19, 23), 200, dtype=dtype)
    np.testing.assert_array_equal(median_filter(image, 6, mode=mode, cval=200), image)


@pytest.mark.parametrize("value", [0, 65535])
def test_extreme_uint16_values(value):
    image = np.full((9, 12), value, dtype=np.uint16)
    image[4, 6] = 65535 - value
    np.testing.assert_array_equal(median_filter(image, 2), np.full_like(image, value))


@given(
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    radius=st.integers(1, 14),
    footprint=st.sampled_from(["disk", "square"]),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None)
def test_random_small_cases_match_brute_force(height, width, radius, footprint, seed):
    image = np.random.default_rng(seed).integers(0, 6, (height, width)).astype(np.uint16) * 9000
    np.testing.assert_array_equal(median_filter(image, radius, footprint=footprint), brute_force_ignore(image, radius, footprint))


# ---------------------------------------------------------------- padded modes: scipy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", PADDED_MODES)
@pytest.mark.parametrize("footprint", ["disk", "square"])
@pytest.mark.parametrize("shape, radius", [((37, 41), 3), ((64, 129), 7), ((1, 23), 2), ((23, 1), 5), ((7, 3), 1)])
def test_padded_modes_match_scipy(rng, dtype, mode, footprint, shape, radius):
    image = random_image(rng, shape, dtype)
    cval = 17.5 if dtype == np.float32 else 17
    expected = ndi.median_filter(image, footprint=footprint_array(radius, footprint), mode=mode, cval=cval)
    result = median_filter(image, radius, footprint=footprint, mode=mode, cval=cval)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", PADDED_MODES)
@pytest.mark.parametrize("shape", [(5, 7), (4, 9), (1, 6), (6, 1), (1, 1)])
def test_padded_modes_with_radius_beyond_the_image_match_scipy(rng, dtype, mode, shape):
    # radius 12 stays below 4x every axis longer than one pixel: from there on scipy's 2-D rank
    # filter reads outside the image in "reflect" mode (an offset of exactly -4n maps to -1);
    # those radii are checked against numpy.pad("symmetric") below
    image = random_image(rng, shape, dtype)
    for footprint in ("disk", "square"):
        expected = ndi.median_filter(image, footprint=footprint_array(12, footprint), mode=mode, cval=3)
        np.testing.assert_array_equal(median_filter(image, 12, footprint=footprint, mode=mode, cval=3), expected)


@pytest.mark.parametrize("mode", ["reflect", "mirror", "nearest"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3), (1, 4)])
def test_padding_repeats_past_the_image_like_numpy_pad(rng, mode, shape):
    image = random_image(rng, shape, np.uint16)
    expected = brute_force_padded(image, 23, "disk", NUMPY_PAD[mode])
    np.testing.assert_array_equal(median_filter(image, 23, mode=mode), expected)


@pytest.mark.parametrize("cval, stored", [(0.5, 0), (1.7, 1), (255.9, 255), (-0.5, 0)])
def test_constant_cval_is_truncated_like_scipy(rng, cval, stored):
    image = random_image(rng, (6, 5), np.uint8)
    fp = footprint_array(4, "square")
    expected = ndi.median_filter(image, footprint=fp, mode="constant", cval=cval)
    np.testing.assert_array_equal(median_filter(image, 4, footprint="square", mode="constant", cval=cval), expected)
    np.testing.assert_array_equal(expected, ndi.median_filter(image, footprint=fp, mode="constant", cval=stored))


def test_cval_is_ignored_outside_constant_mode_like_scipy(rng):
    image = random_image(rng, (9, 11), np.uint8)
    expected = ndi.median_filter(image, footprint=footprint_array(2, "disk"), mode="nearest", cval=300)
    np.testing.assert_array_equal(median_filter(image, 2, mode="nearest", cval=300), expected)


def test_non_contiguous_input(rng):
    image = random_image(rng, (40, 30), np.uint16, high=4095)
    view = image.T[::2, 1:]
    np.testing.assert_array_equal(median_filter(view, 3), rank_median(np.ascontiguousarray(view), skimage_footprint(3, "disk")))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("mode", ["ignore", "reflect", "constant"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("high", [50, 200])
def test_counted_median_returns_the_median_and_its_histogram(rng, monkeypatch, dtype, mode, threads, high):
    # with 3 threads there are 12 row bands, each counting its own rows into its own histogram;
    # 12 x 251 levels outnumber the 45 x 61 pixels, and then the result is counted after instead
    monkeypatch.setattr(median_module, "_THREADED_UPDATES", 0)
    monkeypatch.setattr(median_module, "cpu_threads", lambda: threads)
    image = random_image(rng, (45, 61), dtype, high=high)
    result, counts = median_filter_counted(image, 5, mode=mode, cval=250)  # cval above every pixel
    np.testing.assert_array_equal(result, median_filter(image, 5, mode=mode, cval=250))
    assert counts.dtype == np.int64 and counts.size > result.max()
    np.testing.assert_array_equal(counts, np.bincount(result.ravel(), minlength=counts.size))


def test_counted_median_takes_integer_images_only():
    with pytest.raises(TypeError, match="float32") as info:
        median_filter_counted(np.zeros((4, 4), np.float32), 1)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        ({"image": np.zeros((3, 4, 2), np.uint8)}, ValueError, "2-D"),
        ({"image": np.zeros(5, np.uint8)}, ValueError, "2-D"),
        ({"image": np.zeros((4, 4), np.int32)}, TypeError, "int32"),
        ({"image": np.zeros((4, 4), np.float64)}, TypeError, "float64"),
        ({"image": np.array([[1.0, np.nan]], np.float32)}, ValueError, "NaN"),
        ({"radius": 0}, ValueError, "radius"),
        ({"radius": -2}, ValueError, "radius"),
        ({"radius": 2.0}, TypeError, "radius"),
        ({"radius": True}, TypeError, "radius"),
        ({"footprint": "diamond"}, ValueError, "footprint"),
        ({"mode": "wrap"}, ValueError, "mode"),
        ({"mode": "constant", "cval": 300}, ValueError, "cval"),
        ({"mode": "constant", "cval": -1}, ValueError, "cval"),
        ({"mode": "constant", "cval": float("nan")}, ValueError, "cval"),
        ({"mode": "constant", "cval": "0"}, TypeError, "cval"),
    ],
)
def test_bad_input_raises_one_line_message(kwargs, error, words):
    arguments = {"image": np.zeros((4, 4), np.uint8), "radius": 1, **kwargs}
    image = arguments.pop("image")
    radius = arguments.pop("radius")
    with pytest.raises(error) as info:
        median_filter(image, radius, **arguments)
    message = str(info.value)
    assert words in message and "\n" not in message


# ---------------------------------------------------------------- GPU: bit-identical to the CPU


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("mode", ("ignore",) + PADDED_MODES)
@pytest.mark.parametrize("footprint", ["disk", "square"])
@pytest.mark.parametrize("shape, radius", [((64, 129), 7), ((37, 41), 1), ((1, 50), 3), ((50, 1), 4), ((13, 17), 40)])
def test_gpu_matches_cpu(cupy, on_device, rng, dtype, mode, footprint, shape, radius):
    image = random_image(rng, shape, dtype)
    expected = median_filter(image, radius, footprint=footprint, mode=mode, cval=9)
    with on_device():
        result = median_filter(cupy.asarray(image), radius, footprint=footprint, mode=mode, cval=9)
    assert isinstance(result, cupy.ndarray) and result.dtype == dtype
    np.testing.assert_array_equal(result.get(), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("high", [255, 4095, 65535])
@pytest.mark.parametrize("radius", [25, 120])
def test_gpu_large_radius_matches_cpu(cupy, on_device, rng, high, radius):
    # 4095 keeps the fine counts in shared memory, 65535 moves them to global scratch
    image = random_image(rng, (256, 200), np.uint16, high=high)
    with on_device():
        result = median_filter(cupy.asarray(image), radius)
    np.testing.assert_array_equal(result.get(), median_filter(image, radius))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_gpu_counted_median_matches_cpu(cupy, on_device, rng, dtype):
    image = random_image(rng, (200, 150), dtype, high=3000 if dtype == np.uint16 else None)
    expected, expected_counts = median_filter_counted(image, 11)
    with on_device():
        result, counts = median_filter_counted(cupy.asarray(image), 11)
    assert isinstance(result, cupy.ndarray) and isinstance(counts, cupy.ndarray)
    np.testing.assert_array_equal(result.get(), expected)
    np.testing.assert_array_equal(counts.get(), expected_counts)


@pytest.mark.gpu
def test_gpu_many_distinct_float_values_match_cpu(cupy, on_device, rng):
    image = rng.random((256, 256), dtype=np.float32)
    with on_device():
        result = median_filter(cupy.asarray(image), 9)
    np.testing.assert_array_equal(result.get(), median_filter(image, 9))


@pytest.mark.gpu
def test_gpu_rejects_nan(cupy, on_device):
    with on_device(), pytest.raises(ValueError, match="NaN"):
        median_filter(cupy.asarray(np.array([[1.0, np.nan]], np.float32)), 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("footprint", ["disk", "square"])
def test_a_radius_beyond_the_image_is_the_median_of_every_pixel(rng, dtype, footprint):
    # every window holds the whole image: each output is element n // 2 of all the sorted pixels
    image = (rng.random((23, 31)) * 1000).astype(dtype)
    expected = np.sort(image, axis=None)[image.size // 2]
    for radius in (39, 40, 10**9):  # 10**9 would need 2e9 chords if it were not cut to the image
        assert (median_filter(image, radius, footprint=footprint) == expected).all()


def test_covering_radius_is_the_smallest_disk_reaching_every_pixel():
    from gpuillum.filters.footprints import covering_radius

    for shape in [(1, 1), (1, 7), (5, 1), (4, 4), (23, 31), (100, 3)]:
        dy, dx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        farthest = int((dy**2 + dx**2).max())
        covering = covering_radius(10**12, shape)
        assert covering**2 >= farthest and (covering == 1 or (covering - 1) ** 2 < farthest), shape
        assert covering_radius(3, shape) == min(3, covering)
        assert covering_radius(10**12, shape, "square") == max(1, max(shape) - 1)
