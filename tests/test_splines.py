"""Splines background: parity with CellProfiler's centrosome.bg_compensate.backgr."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

from gpuillum.methods.cellprofiler.splines import _auto_mode, automatic_spline_scale, spline_background

bg_compensate = pytest.importorskip("centrosome.bg_compensate")

MODES = ("auto", "dark", "bright", "gray")


def backgr(image, mask=None, mode="auto", threshold=2.0, points=5, scale=1.0, iterations=40, convergence=0.001):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # backgr warns when fewer than 1 % of pixels are left
        return bg_compensate.backgr(image, mask, mode, threshold, points, scale, iterations, convergence)


def assert_parity(out, expected, rtol=1e-6):
    assert out.dtype == expected.dtype and out.shape == expected.shape
    peak = np.abs(expected).max()
    assert np.abs(out.astype(np.float64) - expected).max() <= rtol * max(peak, 1e-30)


def make_image(kind, shape, rng, dtype=np.float32):
    h, w = shape
    if kind == "random":
        return rng.random(shape).astype(dtype)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    image = 0.4 * np.exp(-2 * (((y - cy) / h) ** 2 + ((x - cx) / w) ** 2)) + 0.1
    image += 0.01 * rng.standard_normal(shape)
    for _ in range(12):  # bright and dark "cells"
        i, j = rng.integers(0, h), rng.integers(0, w)
        image[max(0, i - 3) : i + 3, max(0, j - 3) : j + 3] += rng.choice([-0.15, 0.3])
    return image.astype(dtype)


def make_mask(kind, shape, rng):
    if kind is None:
        return None
    h, w = shape
    if kind == "random":
        mask = rng.random(shape) > 0.3
        mask[:3] = False  # shifts the bounding box
        return mask
    y, x = np.mgrid[0:h, 0:w]
    return ((y - h / 2) / h) ** 2 + ((x - w / 2.5) / w) ** 2 < 0.12


SETTINGS = [(5, 1.0), (4, 1.5), (7, 2.3), (6, 1.0)]  # (points, scale)


@pytest.mark.parametrize("shape", [(40, 55), (64, 64), (97, 61)])
@pytest.mark.parametrize("kind", ["random", "vignetted"])
@pytest.mark.parametrize("mask_kind", [None, "random", "disk"])
def test_matches_backgr_every_mode(shape, kind, mask_kind, rng):
    for k, mode in enumerate(MODES):
        dtype = np.float32 if k % 2 == 0 else np.float64
        image = make_image(kind, shape, rng, dtype)
        mask = make_mask(mask_kind, shape, rng)
        points, scale = SETTINGS[(k + len(mask_kind or "")) % len(SETTINGS)]
        out = spline_background(image, mask, mode=mode, points=points, scale=scale)
        assert_parity(out, backgr(image, mask, mode, 2.0, points, scale))
        if mask is not None:
            assert not out[~mask].any()


@pytest.mark.parametrize("mode", MODES)
def test_matches_backgr_when_fits_are_underdetermined(mode, rng):
    """Low thresholds leave fewer pixels than control points: backgr's next cut is then set
    by rounding noise, which the dense path reproduces operation for operation."""
    image = make_image("random", (40, 55), rng, np.float64) ** 3
    for threshold, points in ((0.3, 7), (0.5, 8), (1.0, 6)):
        out = spline_background(image, mode=mode, threshold=threshold, points=points)
        assert_parity(out, backgr(image, None, mode, threshold, points, 1.0))
    sparse = rng.random(image.shape) > 0.97
    out = spline_background(image, sparse, mode=mode)
    assert_parity(out, backgr(image, sparse, mode))


def test_iteration_and_convergence_settings(rng):
    image = make_image("vignetted", (64, 64), rng, np.float64)
    for iterations, convergence in ((1, 0.001), (3, 0.0), (40, 0.05)):
        out = spline_background(image, max_iterations=iterations, convergence=convergence, threshold=1.5)
        assert_parity(out, backgr(image, None, "auto", 1.5, 5, 1.0, iterations, convergence))


def test_auto_mode_matches_centrosome(rng):
    for k in range(30):
        values = rng.random(rng.integers(1, 400)) ** rng.uniform(0.2, 5)
        if k % 3 == 0:
            values = 1 - values
        values = values.astype(np.float32 if k % 2 else np.float64)
        assert _auto_mode(values) == bg_compensate.automode(values)


def test_constant_and_all_masked(rng):
    flat = np.full((30, 40), 0.25, np.float32)
    assert_parity(spline_background(flat), backgr(flat))
    image = make_image("random", (30, 40), rng)
    out = spline_background(image, np.zeros(image.shape, bool))
    assert out.dtype == np.float32 and not out.any()


def test_automatic_scale():
    assert automatic_spline_scale((150, 1000)) == 1.0
    assert automatic_spline_scale((199, 199)) == 1.0
    assert automatic_spline_scale((1080, 1280)) == pytest.approx(1080 / 200)
    assert automatic_spline_scale((400, 300)) == pytest.approx(1.5)


def test_timing_sanity(rng):
    """A 256x256 vignetted image with CellProfiler's automatic settings (times printed)."""
    image = make_image("vignetted", (256, 256), rng)
    scale = automatic_spline_scale(image.shape)
    start = time.perf_counter()
    out = spline_background(image, scale=scale)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    expected = backgr(image, None, "auto", 2.0, 5, scale)
    theirs = time.perf_counter() - start
    print(f"splines 256x256: gpuillum {ours * 1e3:.1f} ms, centrosome {theirs * 1e3:.1f} ms")
    assert_parity(out, expected)


def test_bad_input(rng):
    image = rng.random((30, 30)).astype(np.float32)
    with pytest.raises(ValueError, match="mode"):
        spline_background(image, mode="dim")
    with pytest.raises(ValueError, match="points"):
        spline_background(image, points=3)
    with pytest.raises(ValueError, match="scale"):
        spline_background(image, scale=0)
    with pytest.raises(ValueError, match="scale"):
        spline_background(image, scale=20.0)
    with pytest.raises(TypeError, match="max_iterations"):
        spline_background(image, max_iterations=2.5)
    with pytest.raises(TypeError, match="dtype"):
        spline_background(image.astype(np.uint16))
    with pytest.raises(ValueError, match="mask"):
        spline_background(image, np.ones((3, 3), bool))


@pytest.mark.gpu
def test_cupy_round_trip(cupy, on_device, rng):
    image = make_image("vignetted", (64, 64), rng)
    mask = make_mask("disk", image.shape, rng)
    with on_device() as host_steps:  # the fit runs on the host by design (README: GPU)
        out = spline_background(cupy.asarray(image), cupy.asarray(mask), scale=1.5)
    assert {copy.step for copy in host_steps} == {"gpuillum.methods.cellprofiler.splines.spline_background"}
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out.get(), spline_background(image, mask, scale=1.5))
