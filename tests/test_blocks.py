from fractions import Fraction

import numpy as np
import pytest
import scipy.ndimage as ndi

from gpuillum.filters.blocks import (
    block_minimum,
    block_reduce,
    cellprofiler_block_labels,
    edge_anchored_count,
)

cpmorphology = pytest.importorskip("centrosome.cpmorphology")

# (H, B) pairs where CellProfiler's float64 label formula differs from integer arithmetic
# (cellprofiler.md 4.1), plus regular, stretched and smaller-than-a-block cases.
IRREGULAR = [(142, 10), (282, 30), (478, 100), (506, 30), (506, 60), (604, 20), (618, 50), (730, 60), (940, 60)]
SHAPES = [(H, 37, B) for H, B in IRREGULAR] + [
    (120, 180, 60),
    (100, 100, 60),
    (50, 70, 60),
    (1, 9, 4),
    (61, 119, 60),
    (256, 255, 17),
]


def cellprofiler_block_minimum(image, block_size, mask=None):
    """CellProfiler's Background preprocessing: centrosome block labels + ndimage.minimum."""
    labels, indexes = cpmorphology.block(image.shape, (block_size, block_size))
    if mask is not None:
        labels = np.where(mask, labels, -1)
    minima = np.asarray(ndi.minimum(image, labels, indexes))
    out = np.zeros(image.shape)
    keep = labels != -1
    out[keep] = minima[labels[keep]]
    return out.astype(image.dtype)


@pytest.mark.parametrize("length, block_size", IRREGULAR + [(1080, 60), (1000, 60), (5, 60)])
def test_labels_match_centrosome(length, block_size):
    labels, _ = cpmorphology.block((length, 3), (block_size, block_size))
    assert np.array_equal(cellprofiler_block_labels(length, block_size), labels[:, 0])


def test_float_formula_differs_from_integer_formula():
    labels = cellprofiler_block_labels(506, 60)
    assert labels[253] == 3 and (253 * 8) // 506 == 4


@pytest.mark.parametrize("height, width, block_size", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_block_minimum_matches_cellprofiler(rng, height, width, block_size, dtype):
    image = (rng.random((height, width)) * 250).astype(dtype)
    out = block_minimum(image, block_size)
    assert out.dtype == image.dtype
    assert np.array_equal(out, cellprofiler_block_minimum(image, block_size))


@pytest.mark.parametrize("height, width, block_size", SHAPES)
@pytest.mark.parametrize("keep", [0.5, 0.01])
def test_block_minimum_with_mask_matches_cellprofiler(rng, height, width, block_size, keep):
    image = (rng.random((height, width)) * 60000 + 1).astype(np.uint16)
    mask = rng.random(image.shape) < keep  # 1% kept: many blocks end up empty
    assert np.array_equal(block_minimum(image, block_size, mask=mask), cellprofiler_block_minimum(image, block_size, mask))


def test_block_minimum_empty_block_and_masked_pixels_are_zero(rng):
    image = (rng.random((120, 120)) + 1).astype(np.float32)
    mask = np.ones(image.shape, bool)
    mask[:60, :60] = False  # the whole first block
    out = block_minimum(image, 60, mask=mask)
    assert (out[:60, :60] == 0).all()
    assert out[60:, 60:].min() == image[60:, 60:].min()


def test_block_minimum_rejects_bad_input(rng):
    image = rng.random((10, 10)).astype(np.float32)
    with pytest.raises(TypeError, match="block_size"):
        block_minimum(image, 2.5)
    with pytest.raises(ValueError, match="block_size"):
        block_minimum(image, 0)
    with pytest.raises(ValueError, match="mask"):
        block_minimum(image, 4, mask=np.ones((9, 10), bool))
    with pytest.raises(TypeError, match="dtype"):
        block_minimum(image.astype(np.int32), 4)


def sample_count(length, block_size):
    """Samples per axis of the edge-anchored layout, from its definition (gpuillum.filters.blocks'
    docstring) in exact fractions: the number of intervals is the integer nearest to
    (length - 1) / block_size, a tie going to the even one, and at least one; one sample when length == 1."""
    if length == 1:
        return 1
    exact = Fraction(length - 1, block_size)
    below = exact.numerator // exact.denominator
    nearest = min((below, below + 1), key=lambda k: (abs(exact - k), k % 2))
    return max(1, nearest) + 1


def brute_force_reduce(image, block_size, stat, q=None, mask=None):
    """Loop over pixels: assign each to its nearest edge-anchored sample, then reduce with numpy."""
    height, width = image.shape
    counts = [sample_count(height, block_size), sample_count(width, block_size)]

    def nearest(i, length, n):
        if n == 1:
            return 0
        spacing = (length - 1) / (n - 1)
        k = int(np.floor(i / spacing))
        # half-way pixels go to the later sample; compare distances exactly in integers
        if 2 * i * (n - 1) >= (2 * k + 1) * (length - 1):
            k += 1
        return min(k, n - 1)

    groups = {}
    for i in range(height):
        for j in range(width):
            if mask is None or mask[i, j]:
                key = (nearest(i, height, counts[0]), nearest(j, width, counts[1]))
                groups.setdefault(key, []).append(float(image[i, j]))
    out = np.full(counts, np.nan)
    reducer = {
        "min": np.min,
        "max": np.max,
        "mean": np.mean,
        "median": np.median,
        "percentile": lambda v: np.percentile(v, q),
    }[stat]
    for key, values in groups.items():
        out[key] = reducer(np.array(values))
    return out.astype(np.float32)


REDUCE_SHAPES = [(40, 33, 8), (37, 64, 10), (17, 5, 4), (1, 21, 5), (25, 25, 30), (60, 49, 16)]
REDUCE_STATS = [("min", None), ("max", None), ("mean", None), ("median", None)]
REDUCE_STATS += [("percentile", 0), ("percentile", 10), ("percentile", 62.5), ("percentile", 100)]


@pytest.mark.parametrize("height, width, block_size", REDUCE_SHAPES)
@pytest.mark.parametrize("stat, q", REDUCE_STATS)
@pytest.mark.parametrize("masked", [False, True])
def test_block_reduce_matches_brute_force(rng, height, width, block_size, stat, q, masked):
    image = (rng.random((height, width)) * 1000).astype(np.uint16)
    mask = rng.random(image.shape) < 0.3 if masked else None
    out = block_reduce(image, block_size, stat=stat, q=q, mask=mask)
    expected = brute_force_reduce(image, block_size, stat, q, mask)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_allclose(out, expected, rtol=1e-6, equal_nan=True)


SEPARABLE_SHAPES = [(1, 1, 3), (1, 37, 4), (29, 1, 6), (2, 2, 1), (3, 50, 2), (31, 17, 3), (45, 61, 7), (13, 9, 40)]


@pytest.mark.parametrize("height, width, block_size", SEPARABLE_SHAPES)
@pytest.mark.parametrize("stat", ["min", "max", "mean"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("keep", [None, 0.6, 0.05])
def test_separable_stats_match_brute_force(rng, height, width, block_size, stat, dtype, keep):
    # odd shapes, single rows/columns, blocks larger than the image, sparse masks (empty blocks);
    # integer images span the whole dtype so the fill values of masked pixels are real values too
    if np.dtype(dtype).kind == "u":
        image = rng.integers(0, np.iinfo(dtype).max, (height, width), endpoint=True).astype(dtype)
        image.flat[:: 3] = np.iinfo(dtype).max
        image.flat[1:: 5] = 0
    else:
        image = (rng.standard_normal((height, width)) * 1e4).astype(dtype)
    mask = None if keep is None else rng.random(image.shape) < keep
    out = block_reduce(image, block_size, stat=stat, mask=mask)
    expected = brute_force_reduce(image, block_size, stat, mask=mask)
    assert out.dtype == np.float32 and out.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    if stat == "mean":
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6 * float(np.abs(image).max()), equal_nan=True)
    else:
        np.testing.assert_array_equal(out, expected)  # exact: the input values, rounded once


def test_separable_stats_keep_infinities_and_ignore_masked_ones():
    image = np.arange(60, dtype=np.float32).reshape(6, 10)
    image[0, 0], image[5, 9] = np.inf, -np.inf
    for stat in ("min", "max", "mean"):
        expected = brute_force_reduce(image, 4, stat)
        np.testing.assert_array_equal(block_reduce(image, 4, stat=stat), expected)
    mask = np.isfinite(image)
    for stat in ("min", "max", "mean"):
        out = block_reduce(image, 4, stat=stat, mask=mask)
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out, brute_force_reduce(image, 4, stat, mask=mask), rtol=1e-6)


def test_fully_masked_image_gives_all_nan(rng):
    image = rng.integers(0, 100, (20, 30)).astype(np.uint16)
    for stat in ("min", "max", "mean"):
        assert np.isnan(block_reduce(image, 5, stat=stat, mask=np.zeros(image.shape, np.uint8))).all()


def test_sums_switch_to_float64_before_uint32_could_overflow():
    from gpuillum.filters.blocks import _sum_dtype

    assert _sum_dtype(np.dtype(np.uint16), 65537) == np.uint32  # 65537 * 65535 < 2**32
    assert _sum_dtype(np.dtype(np.uint16), 65538) == np.float64
    assert _sum_dtype(np.dtype(np.uint32), 2) == np.float64
    assert _sum_dtype(np.dtype(np.float32), 1) == np.float64
    assert _sum_dtype(np.dtype(bool), 1000) == np.uint32


def test_block_reduce_layout_counts_and_half_border_blocks():
    # L=101, B=10: 11 samples 10 px apart; the first/last block hold 6 pixels, the others 10.
    image = np.ones((101, 1), np.float32)
    assert block_reduce(image, 10, stat="mean").shape == (11, 1)
    index = np.arange(101, dtype=np.float32)[:, None]
    minima = block_reduce(index, 10, stat="min")[:, 0]
    maxima = block_reduce(index, 10, stat="max")[:, 0]
    assert minima[0] == 0 and maxima[0] == 4 and minima[1] == 5 and maxima[1] == 14 and maxima[-1] == 100
    assert edge_anchored_count(2, 100) == 2 and edge_anchored_count(1, 5) == 1


def test_edge_anchored_count_follows_its_definition():
    # 30/20 = 1.5 and 10/20 = 0.5 are ties (to 2 and to 0, raised to 1 interval); 100/20 = 5 exactly
    assert [sample_count(length, 20) for length in (31, 11, 101, 1)] == [3, 2, 6, 1]
    for length in range(1, 300):
        for block_size in (1, 2, 3, 7, 10, 16, 20, 60, 500):
            assert edge_anchored_count(length, block_size) == sample_count(length, block_size), (length, block_size)


def test_block_reduce_median_of_even_count_is_numpy_median():
    image = np.array([[1, 2, 10, 20]], dtype=np.float32)
    assert block_reduce(image, 3, stat="median")[0, 0] == np.median([1, 2])


def test_block_reduce_rejects_bad_arguments(rng):
    image = rng.random((10, 10)).astype(np.float32)
    with pytest.raises(ValueError, match="stat"):
        block_reduce(image, 4, stat="mode")
    with pytest.raises(ValueError, match="q"):
        block_reduce(image, 4, stat="percentile", q=101)
    with pytest.raises(ValueError, match="q"):
        block_reduce(image, 4, stat="percentile")
    with pytest.raises(ValueError, match="q"):
        block_reduce(image, 4, stat="mean", q=50)
    with pytest.raises(ValueError, match="NaN"):
        block_reduce(np.full((4, 4), np.nan, np.float32), 2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_block_minimum_gpu_matches_cpu(cupy, on_device, rng, dtype):
    image = (rng.random((506, 301)) * 250).astype(dtype)
    mask = rng.random(image.shape) < 0.2
    for m in (None, mask):
        expected = block_minimum(image, 60, mask=m)
        with on_device():
            out = block_minimum(cupy.asarray(image), 60, mask=None if m is None else cupy.asarray(m))
        assert isinstance(out, cupy.ndarray) and out.dtype == dtype
        assert np.array_equal(out.get(), expected)


@pytest.mark.gpu
@pytest.mark.parametrize("stat, q", [("min", None), ("max", None), ("mean", None), ("median", None), ("percentile", 20)])
def test_block_reduce_gpu_matches_cpu(cupy, on_device, rng, stat, q):
    image = (rng.random((203, 157)) * 4000).astype(np.uint16)
    mask = rng.random(image.shape) < 0.5
    expected = block_reduce(image, 16, stat=stat, q=q, mask=mask)
    with on_device():
        out = block_reduce(cupy.asarray(image), 16, stat=stat, q=q, mask=cupy.asarray(mask))
    np.testing.assert_allclose(out.get(), expected, rtol=1e-6, equal_nan=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("stat", ["min", "max", "mean"])
def test_separable_stats_gpu_match_cpu(cupy, on_device, rng, dtype, stat):
    image = (rng.random((1, 97)) * 250).astype(dtype), (rng.random((161, 203)) * 250).astype(dtype)
    for picture in image:
        mask = rng.random(picture.shape) < 0.3
        for m, block_size in ((None, 3), (mask, 8), (mask, 500)):
            expected = block_reduce(picture, block_size, stat=stat, mask=m)
            with on_device():
                out = block_reduce(cupy.asarray(picture), block_size, stat=stat, mask=None if m is None else cupy.asarray(m))
            assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
            np.testing.assert_allclose(out.get(), expected, rtol=1e-6, equal_nan=True)
