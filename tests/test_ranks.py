"""Dense ranks of float32 images: against numpy.unique(return_inverse=True)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gpuillum.filters.ranks import dense_ranks


def unique_reference(image):
    values, inverse = np.unique(image, return_inverse=True)
    return values, inverse.reshape(image.shape)


def assert_same_as_unique(image):
    values, ranks = dense_ranks(image)
    expected_values, expected_ranks = unique_reference(image)
    assert values.dtype == np.float32 and ranks.dtype == np.uint32 and ranks.shape == image.shape
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(ranks, expected_ranks)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (37, 41), (0, 4), (300, 257)])
def test_random_normals_match_unique(rng, shape):
    assert_same_as_unique((rng.standard_normal(shape) * 1000).astype(np.float32))


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: rng.integers(0, 4096, (64, 80)) / np.float32(4095),  # 12-bit data as CellProfiler floats
        lambda rng: rng.integers(0, 100, (64, 80)),  # small integers: low digits all zero (pass skipped)
        lambda rng: 1 + rng.integers(0, 2048, (64, 80)) / np.float32(2048),  # [1, 2): high digits shared
        lambda rng: rng.poisson(900, (32, 40, 16)).mean(-1),  # block means: few distinct values
        lambda rng: np.full((5, 9), -3.25),  # one value: every pass skipped
    ],
    ids=["12-bit", "small-integers", "one-exponent", "block-means", "constant"],
)
def test_structured_images_match_unique(rng, make):
    assert_same_as_unique(np.asarray(make(rng), dtype=np.float32))


def test_special_values_sort_like_floats_and_zeros_are_one_value():
    image = np.array([[0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45], [3.4e38, -3.4e38, 1.0, 1.0, -0.0, 2.5]], np.float32)
    values, ranks = dense_ranks(image)
    np.testing.assert_array_equal(values, np.array([-np.inf, -3.4e38, -1e-45, 0.0, 1e-45, 1.0, 2.5, 3.4e38, np.inf], np.float32))
    assert not np.signbit(values[3])  # -0.0 and +0.0 compare equal: one value, +0.0
    assert ranks[0, 0] == ranks[0, 1] == ranks[1, 4] == 3
    np.testing.assert_array_equal(values[ranks], np.where(image == 0, np.float32(0), image))


def test_non_contiguous_input(rng):
    image = rng.standard_normal((40, 30)).astype(np.float32)
    assert_same_as_unique(image.T[::2, 1:])


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=12),
                  elements=st.floats(allow_nan=False, width=32)))
def test_any_float32_image_matches_unique(image):
    values, ranks = dense_ranks(image)
    expected_values, expected_ranks = unique_reference(image)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(ranks, expected_ranks)


@pytest.mark.gpu
def test_gpu_matches_cpu(cupy, on_device, rng):
    image = (rng.integers(0, 4096, (200, 150)) / 4095).astype(np.float32)
    with on_device():
        values, ranks = dense_ranks(cupy.asarray(image))
    expected_values, expected_ranks = dense_ranks(image)
    assert isinstance(ranks, cupy.ndarray) and ranks.dtype == np.uint32
    np.testing.assert_array_equal(values.get(), expected_values)
    np.testing.assert_array_equal(ranks.get(), expected_ranks)
