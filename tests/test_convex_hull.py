"""Convex Hull smoothing: bit-identical to CellProfiler's centrosome chain."""
from __future__ import annotations

import time

import numpy as np
import pytest

from gpuillum.methods.cellprofiler.convex_hull import _hull, convex_hull_smooth, convex_hull_transform

centrosome_filter = pytest.importorskip("centrosome.filter")
cpmorphology = pytest.importorskip("centrosome.cpmorphology")


def centrosome_smooth(image, mask):
    """What CellProfiler's smooth_with_convex_hull runs, cast to float32."""
    eroded = cpmorphology.grey_erosion(image, 2, mask)
    transformed = centrosome_filter.convex_hull_transform(eroded, mask=mask)
    return cpmorphology.grey_dilation(transformed, 2, mask).astype(np.float32)


def make_image(kind, shape, rng):
    h, w = shape
    if kind == "random":
        return rng.random(shape).astype(np.float32)
    if kind == "vignetted":
        y, x = np.mgrid[0:h, 0:w]
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        flat = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.5 * h * w))
        return (0.4 * flat + 0.05 + 0.02 * rng.random(shape)).astype(np.float32)
    # few distinct values: many ties between levels and collinear hull points
    return (rng.integers(0, 4, shape) / 3.0).astype(np.float32)


def make_mask(kind, shape, rng):
    if kind is None:
        return None
    if kind == "random":
        return rng.random(shape) > 0.3
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    return ((y - h / 2) / h) ** 2 + ((x - w / 3) / w) ** 2 < 0.15


@pytest.mark.parametrize("shape", [(40, 55), (64, 64), (97, 61)])
@pytest.mark.parametrize("kind", ["random", "vignetted", "levels"])
@pytest.mark.parametrize("mask_kind", [None, "random", "disk"])
def test_smooth_matches_centrosome(shape, kind, mask_kind, rng):
    image = make_image(kind, shape, rng)
    mask = make_mask(mask_kind, shape, rng)
    out = convex_hull_smooth(image, mask)
    assert out.dtype == np.float32 and out.shape == shape
    np.testing.assert_array_equal(out, centrosome_smooth(image, mask))


@pytest.mark.parametrize("levels", [256, 16, 7])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transform_matches_centrosome(levels, dtype, rng):
    for seed in range(3):
        image = (rng.random((45, 38)) ** (seed + 1)).astype(dtype)
        mask = None if seed == 0 else rng.random(image.shape) > 0.2
        expected = centrosome_filter.convex_hull_transform(image.copy(), levels, mask)
        out = convex_hull_transform(image, levels, mask)
        assert out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)


def test_hull_vertices_match_centrosome(rng):
    """Same strictly convex vertices, same order and start as centrosome's convex_hull_ijv."""
    for _ in range(400):
        h, w = rng.integers(1, 12, 2)
        points = rng.random((h, w)) < rng.uniform(0.02, 0.6)
        if not points.any():
            continue
        ii, jj = np.nonzero(points)
        expected, _ = cpmorphology.convex_hull_ijv(np.column_stack((ii, jj, np.ones_like(ii))), [1])
        present = points.any(axis=0)
        first = np.where(present, points.argmax(axis=0), h).astype(np.int32)
        last = np.where(present, h - 1 - points[::-1].argmax(axis=0), -1).astype(np.int32)
        hull_i = np.empty(2 * w + 2, np.int64)
        hull_j = np.empty(2 * w + 2, np.int64)
        count = _hull(first, last, hull_i, hull_j)
        np.testing.assert_array_equal(np.column_stack((hull_i[:count], hull_j[:count])), expected[:, 1:])


def test_all_masked_and_constant(rng):
    image = rng.random((40, 55)).astype(np.float32)
    nothing = np.zeros(image.shape, bool)
    np.testing.assert_array_equal(convex_hull_smooth(image, nothing), centrosome_smooth(image, nothing))
    assert not convex_hull_smooth(image, nothing).any()
    flat = np.full((40, 55), 0.3, np.float32)
    np.testing.assert_array_equal(convex_hull_smooth(flat), centrosome_smooth(flat, None))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 2), (3, 30)])
def test_tiny_images(shape, rng):
    image = rng.random(shape).astype(np.float32)
    mask = rng.random(shape) > 0.3
    np.testing.assert_array_equal(convex_hull_smooth(image), centrosome_smooth(image, None))
    np.testing.assert_array_equal(convex_hull_smooth(image, mask), centrosome_smooth(image, mask))


def test_integer_image(rng):
    image = (rng.random((50, 60)) * 4000).astype(np.uint16)
    np.testing.assert_array_equal(convex_hull_smooth(image), centrosome_smooth(image, None))


def test_hull_raises_pixels_to_enclosing_level():
    """Two bright spots: the segment between them is inside their hull and is raised."""
    image = np.zeros((21, 21), np.float32)
    image[10, 3] = image[10, 17] = 1.0
    out = convex_hull_transform(image, 256)
    assert (out[10, 3:18] == 1.0).all()
    assert (out[9] == 0).all() and (out[11] == 0).all()


def test_timing_sanity(rng):
    """Runs a 256x256 vignetted image through both (times printed, not asserted)."""
    image = make_image("vignetted", (256, 256), rng)
    convex_hull_smooth(image[:32, :32])  # numba compile / cache load
    start = time.perf_counter()
    out = convex_hull_smooth(image)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    expected = centrosome_smooth(image, None)
    theirs = time.perf_counter() - start
    print(f"convex hull 256x256: gpuillum {ours * 1e3:.1f} ms, centrosome {theirs * 1e3:.1f} ms")
    np.testing.assert_array_equal(out, expected)


def test_bad_input(rng):
    image = rng.random((20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="image"):
        convex_hull_smooth(np.zeros((4, 4, 2), np.float32))
    with pytest.raises(ValueError, match="mask"):
        convex_hull_smooth(image, np.ones((5, 5), bool))
    with pytest.raises(ValueError, match="NaN"):
        convex_hull_smooth(np.full((5, 5), np.nan, np.float32))
    with pytest.raises(TypeError, match="dtype"):
        convex_hull_smooth(image.astype(np.int32))
    with pytest.raises(ValueError, match="levels"):
        convex_hull_transform(image, 1)


@pytest.mark.gpu
def test_cupy_round_trip(cupy, on_device, rng):
    image = make_image("vignetted", (64, 64), rng)
    mask = make_mask("disk", image.shape, rng)
    with on_device() as host_steps:  # the hull runs on the host by design (README: GPU)
        out = convex_hull_smooth(cupy.asarray(image), cupy.asarray(mask))
    assert {copy.step for copy in host_steps} == {"gpuillum.methods.cellprofiler.convex_hull.convex_hull_smooth"}
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out.get(), convex_hull_smooth(image, mask))
