"""Pre-smoothing: ImageJ's 3x3 mean against a line-by-line transcription of its loop (Java order,
float32), NaN kept, the Gaussian option and the argument rules."""
from __future__ import annotations

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.filters.presmooth import THIRD, mean3x3_xp, resolve_presmooth


def java_filter3_mean(pixels):
    """BackgroundSubtracter.filter3x3(MEAN) as ImageJ 1.54t4 writes it: each row in place, then
    each column, v1/v2/v3 the previous, current and next values read before the pass."""
    out = pixels.astype(np.float32).copy()
    height, width = out.shape
    for lines in ([out[y, :] for y in range(height)], [out[:, x] for x in range(width)]):
        for line in lines:
            v3 = line[0]
            v2 = v3
            for i in range(line.size):
                v1, v2 = v2, v3
                if i < line.size - 1:
                    v3 = line[i + 1]
                mean = np.float32(np.float32(np.float32(v1 + v2) + v3) * THIRD)
                if not np.isnan(mean):
                    line[i] = mean
    return out


def test_third_is_imagejs_float():
    assert THIRD.view(np.uint32) == 0x3EAAAAAB


@pytest.mark.parametrize("shape", ((1, 1), (1, 7), (6, 1), (9, 13)))
def test_mean3x3_equals_imagejs_loop(rng, shape):
    image = (rng.standard_normal(shape) * 1000).astype(np.float32)
    assert np.array_equal(gi.presmooth(image, "mean").view(np.uint32), java_filter3_mean(image).view(np.uint32))


def test_mean3x3_keeps_pixels_whose_mean_would_be_nan(rng):
    image = rng.random((8, 9)).astype(np.float32)
    image[2, 3] = np.nan
    ours = gi.presmooth(image, True)
    assert np.array_equal(np.isnan(ours), np.isnan(image))  # no spreading (ImageJ >= 1.54t4)
    assert np.array_equal(ours, java_filter3_mean(image), equal_nan=True)


def test_the_gpus_whole_array_mean_equals_the_cpu_kernel_on_numpy(rng):
    image = (rng.standard_normal((37, 41)) * 1000).astype(np.float32)
    image[5, 6] = np.nan
    cpu = gi.presmooth(image, "mean")
    assert np.array_equal(mean3x3_xp(image), cpu, equal_nan=True)


def test_gaussian_and_none(rng):
    image = rng.integers(0, 4096, (30, 40)).astype(np.uint16)
    assert np.array_equal(gi.presmooth(image, "gaussian", sigma=1.5), gi.gaussian_filter(image.astype(np.float32), 1.5))
    assert np.array_equal(gi.presmooth(image, False), image.astype(np.float32))


@pytest.mark.parametrize("presmooth, sigma, match", [
    ("median", None, "presmooth"), ("gaussian", None, "sigma"), ("gaussian", -1, "sigma"), ("mean", 2.0, "sigma"),
])
def test_bad_choices_are_named(presmooth, sigma, match):
    with pytest.raises(ValueError, match=match):
        resolve_presmooth(presmooth, sigma)
