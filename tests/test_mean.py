"""gi.mean_filter: exact means against brute force (exact fractions for integer images), the
slice-based GPU path run on NumPy, ImageJ's circle, edge modes and errors. Parity with ImageJ's
Mean is in tests/test_imagej_parity.py."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.filters import mean
from gpuillum.filters.footprints import chord_half_widths, imagej_half_widths

CASES = (("disk", 1), ("disk", 3), ("square", 2), ("imagej", 0.5), ("imagej", 1.5), ("imagej", 2.6), ("imagej", 4), ("disk", 30))
SHAPES = ((1, 9), (7, 1), (6, 11), (13, 8))


def brute_force(image, half, mode):
    """Mean over every footprint pixel by explicit loops: exact Fractions for integers."""
    height, width = image.shape
    reach = (half.size - 1) // 2
    out = np.empty(image.shape, np.float32)
    for y in range(height):
        for x in range(width):
            values = []
            for j, w in enumerate(half):
                for dx in range(-w, w + 1):
                    yy, xx = y + j - reach, x + dx
                    if mode == "nearest":
                        values.append(image[min(max(yy, 0), height - 1), min(max(xx, 0), width - 1)])
                    elif 0 <= yy < height and 0 <= xx < width:
                        values.append(image[yy, xx])
            if image.dtype.kind == "u":
                exact = Fraction(sum(int(v) for v in values), len(values))
                out[y, x] = np.float32(float(exact))  # float(Fraction) is correctly rounded
            else:
                out[y, x] = np.float32(np.sum(np.asarray(values, np.float64)) / len(values))
    return out


def half_widths(footprint, radius):
    return imagej_half_widths(radius) if footprint == "imagej" else chord_half_widths(radius, footprint)


@pytest.mark.parametrize("mode", ("ignore", "nearest"))
@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.float32), ids=lambda d: np.dtype(d).name)
def test_equals_brute_force(rng, dtype, mode):
    for shape in SHAPES:
        for footprint, radius in CASES:
            if dtype == np.float32:
                image = rng.standard_normal(shape).astype(dtype)
            else:
                image = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
            ours = gi.mean_filter(image, radius, footprint=footprint, mode=mode)
            expected = brute_force(image, half_widths(footprint, radius), mode)
            assert ours.dtype == np.float32
            if dtype == np.float32:
                np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)
            else:
                assert np.array_equal(ours, expected), (shape, footprint, radius)


def test_the_gpu_slice_path_gives_the_same_sums_on_numpy(rng, monkeypatch):
    """_window_sums_gpu is plain xp code: run on NumPy it must give the CPU kernel's bytes."""
    images = [rng.integers(0, 255, (13, 8)).astype(np.uint8), rng.standard_normal((6, 11)).astype(np.float32)]
    for image in images:
        for footprint, radius in CASES:
            for mode in ("ignore", "nearest"):
                cpu = gi.mean_filter(image, radius, footprint=footprint, mode=mode)
                with monkeypatch.context() as patch:
                    patch.setattr(mean, "_window_sums_cpu", mean._window_sums_gpu)
                    sliced = gi.mean_filter(image, radius, footprint=footprint, mode=mode)
                assert np.array_equal(cpu, sliced)


def test_imagej_circle_point_counts():
    """docs/imagej.md 11: points of ImageJ's kernel by radius (measured with Maximum in 1.53t)."""
    counts = {0.5: 5, 1: 9, 1.4: 9, 1.5: 13, 1.7: 13, 2: 21, 2.5: 29, 2.8: 29, 2.9: 29, 3: 37, 4.5: 69, 5: 89, 10: 325, 15.3: 749}
    for radius, points in counts.items():
        assert int(np.sum(2 * imagej_half_widths(radius) + 1)) == points


def test_a_huge_radius_is_the_image_mean(rng):
    image = rng.integers(0, 4096, (20, 30)).astype(np.uint16)
    result = gi.mean_filter(image, 10**6)
    assert np.all(result == np.float32(image.astype(np.int64).sum() / image.size))


def test_nearest_mode_repeats_the_edge():
    image = np.array([[0, 0, 9]], np.uint8)
    assert gi.mean_filter(image, 1, footprint="square", mode="nearest").tolist() == [[0, 3, 6]]
    assert gi.mean_filter(image, 1, footprint="square", mode="ignore").tolist() == [[0, 3, 4.5]]


@pytest.mark.parametrize("bad, error, match", [
    (dict(radius=0), ValueError, "radius"),
    (dict(radius=1.5), TypeError, "radius"),
    (dict(footprint="imagej", radius=-1), ValueError, "radius"),
    (dict(footprint="circle"), ValueError, "footprint"),
    (dict(mode="reflect"), ValueError, "mode"),
    (dict(image=np.zeros((4, 4), np.int32)), TypeError, "dtype"),
])
def test_bad_arguments_are_named(bad, error, match):
    arguments = dict(image=np.zeros((8, 8), np.uint8), radius=2)
    arguments.update(bad)
    with pytest.raises(error, match=match):
        gi.mean_filter(arguments.pop("image"), **arguments)


@pytest.mark.gpu
def test_gpu_equals_cpu(cupy, rng):
    for image in (rng.integers(0, 65535, (67, 91)).astype(np.uint16), rng.standard_normal((40, 33)).astype(np.float32)):
        for footprint, radius in CASES:
            ours = gi.mean_filter(cupy.asarray(image), radius, footprint=footprint, mode="nearest")
            assert np.array_equal(ours.get(), gi.mean_filter(image, radius, footprint=footprint, mode="nearest"))
