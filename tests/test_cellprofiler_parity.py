"""Parity of gpuillum's CorrectIlluminationCalculate with CellProfiler 4.2 (tests/cp_oracle.py).

Tolerances (max |gpuillum - oracle| relative to max |oracle|):
* "Each" + Median Filter: bit-identical (same quantisation, exact median, same float32 division);
  so are "Each" + No smoothing, Gaussian Filter, Smooth to Average and Convex Hull (the same
  float32 stages on one image, nothing summed in another order).
* other methods: 1e-5 (fit solved in normalised coordinates, float32 rounding of each stage).
* Median Filter in All modes: at most ONE quantisation level, on a few % of the pixels.
  CellProfiler sums images in float32, gpuillum in float64; an average that differs in its last
  bit can fall on the other side of a truncation step of ``uint16(x * 65535)`` (averages of
  integer images often sit exactly on a step). The median is 1-Lipschitz in each input, so the
  function moves by at most one level = 1 / q_max of its maximum: ~1e-4 for float data spanning
  [0, 0.3], but 1.6e-3 for 12-bit data stored in uint16 (q_max ~ 620), so a fixed relative
  bound such as 2e-4 cannot hold for realistic 12-bit input; the level bound is the invariant.
  With rescale Yes or Median the divisor is itself such a level and can move by one too, which
  scales the whole function by (q +- 1) / q (test_all_median_on_dim_integers_moves_one_level).
"""
from __future__ import annotations

import functools
import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuillum.methods.cellprofiler import CalculateSettings, IlluminationAccumulator, calculate, preset

_spec = importlib.util.spec_from_file_location("cp_oracle", Path(__file__).with_name("cp_oracle.py"))
oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("cp_oracle", oracle)
_spec.loader.exec_module(oracle)

CHEAP_METHODS = ("No smoothing", "Fit Polynomial", "Median Filter", "Gaussian Filter", "Smooth to Average")
SHAPES = {"61x83": (61, 83), "96x96": (96, 96)}


def synthetic_images(shape, n, seed, integer):
    """Vignetted field + bright blobs + noise; 12-bit uint16 or float32 in about [0.01, 0.3]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    cy, cx = shape[0] * 0.45, shape[1] * 0.55
    vignette = 1.0 - 0.6 * ((yy - cy) ** 2 + (xx - cx) ** 2) / (cy**2 + cx**2)
    images = []
    for _ in range(n):
        blobs = np.zeros(shape)
        for _ in range(6):
            y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            blobs += rng.uniform(0.5, 1.5) * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * rng.uniform(2, 5) ** 2))
        image = 0.12 * vignette * (1 + blobs) + rng.normal(0, 0.01, shape)
        image = np.clip(image, 0.002, 0.3)
        images.append(np.round(image * 4095).astype(np.uint16) if integer else image.astype(np.float32))
    return images


def synthetic_masks(shape, n, seed):
    """Random masks with a rectangle masked in every image (pixels no image contributes to)."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n):
        mask = rng.random(shape) > 0.25
        mask[shape[0] // 4 : shape[0] // 4 + 12, 5:30] = False
        masks.append(mask)
    return masks


@functools.lru_cache(maxsize=None)
def dataset(shape_name, masked):
    shape = SHAPES[shape_name]
    images = synthetic_images(shape, 5, seed=len(shape_name) + shape[0], integer=shape_name == "96x96")
    return images, (synthetic_masks(shape, 5, seed=7) if masked else None)


def relative_difference(got, expected):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    assert got.shape == expected.shape
    return float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-30))


BIT_IDENTICAL_EACH = ("Median Filter", "No smoothing", "Gaussian Filter", "Smooth to Average", "Convex Hull")


def check(settings, images, masks):
    got = calculate(images, settings, masks)
    expected = oracle.calculate(settings, images, masks)
    assert got.dtype == np.float32
    difference = relative_difference(got, expected)
    median = settings.smoothing == "Median Filter"
    if settings.smoothing in BIT_IDENTICAL_EACH and not settings.is_all and settings.resize_factor == 1:
        np.testing.assert_array_equal(got, expected)
    elif difference > 1e-5:
        assert median, f"relative difference {difference:.3g} > 1e-5"
        distinct = np.unique(expected)
        level = float(np.min(np.diff(distinct))) if distinct.size > 1 else 0.0
        got = np.asarray(got, np.float64)
        assert np.max(np.abs(got - expected)) <= 1.001 * level
        assert np.mean(got != expected) <= 0.1
    return difference


@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("dilate", [False, True], ids=["", "dilate"])
@pytest.mark.parametrize("rescale", ["Yes", "No", "Median"])
@pytest.mark.parametrize("aggregation", ["Each", "All: Across cycles"])
@pytest.mark.parametrize("intensity", ["Regular", "Background"])
@pytest.mark.parametrize("smoothing", CHEAP_METHODS)
def test_matches_cellprofiler(smoothing, intensity, aggregation, rescale, dilate, masked, shape_name):
    # 61x83 uses the automatic filter size (median radius 1); 96x96 a manual size 10 (radius 4)
    size = {"filter_size_method": "Automatic"} if shape_name == "61x83" else {"filter_size_method": "Manually", "manual_size": 10}
    settings = CalculateSettings(
        intensity=intensity, aggregation=aggregation, rescale=rescale, smoothing=smoothing,
        dilate=dilate, dilation_radius=1 if shape_name == "61x83" else 2, block_size=20, **size,
    )
    images, masks = dataset(shape_name, masked)
    check(settings, images, masks)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("aggregation", ["Each", "All: Across cycles"])
@pytest.mark.parametrize(
    "variant",
    [
        dict(smoothing="Splines"),
        dict(smoothing="Splines", intensity="Background"),  # Splines forces Regular preprocessing
        dict(smoothing="Convex Hull", rescale="Yes"),
    ],
    ids=["splines", "splines-background", "convex-hull"],
)
def test_slow_methods_match_cellprofiler(variant, aggregation, masked):
    settings = CalculateSettings(aggregation=aggregation, **{"rescale": "No", **variant})
    images, masks = dataset("61x83", masked)
    check(settings, images[:3], None if masks is None else masks[:3])


def test_rescaled_splines_match_cellprofiler():
    # the zero-mean background's 2 % divisor sits near 0: its mean must be subtracted in float32
    # as CellProfiler does (a float64 mean gave up to 1.6e-5 on these images)
    rng = np.random.default_rng(1)
    settings = CalculateSettings(smoothing="Splines", aggregation="All: Across cycles")
    for shape in [(37, 53), (20, 31), (50, 50)] * 2:
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        spread = 2 * (max(shape) / 2) ** 2
        image = 0.1 + 0.2 * np.exp(-((yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2) / spread) + 0.02 * rng.random(shape)
        images = [image.astype(np.float32)]
        assert relative_difference(calculate(images, settings), oracle.calculate(settings, images)) <= 1e-6


def test_manual_splines_match_cellprofiler():
    settings = CalculateSettings(
        aggregation="All: Across cycles", smoothing="Splines", rescale="No", spline_automatic=False,
        spline_mode="bright", spline_points=6, spline_threshold=1.5, spline_rescale=2.0,
        spline_max_iterations=10, spline_convergence=0.01,
    )
    images, masks = dataset("96x96", True)
    check(settings, images, masks)


@pytest.mark.parametrize("smoothing", ["Gaussian Filter", "Fit Polynomial", "No smoothing"])
@pytest.mark.parametrize("dilate", [False, True], ids=["", "dilate"])
def test_compat_5_keeps_the_mask(smoothing, dilate):
    images, masks = dataset("61x83", True)
    cp4 = CalculateSettings(aggregation="All: Across cycles", smoothing=smoothing, dilate=dilate)
    cp5 = cp4.replace(compat="5")
    check(cp5, images, masks)
    if smoothing != "No smoothing" or dilate:
        # the CP4 mask drop changes masked All-mode results (cellprofiler.md 4.2)
        assert relative_difference(calculate(images, cp4, masks), calculate(images, cp5, masks)) > 1e-4


def _degenerate_mask(shape, kind):
    mask = np.zeros(shape, bool)
    if kind == "one row":
        mask[shape[0] // 3, :] = True
    elif kind == "one column":
        mask[:, 2] = True
    elif kind == "diagonal":
        mask = np.eye(*shape, dtype=bool)
    elif kind == "two rows":
        mask[[1, shape[0] - 4], :] = True
    elif kind == "three pixels":
        mask[[1, 5, 9], [3, 20, 7]] = True
    return mask


@pytest.mark.parametrize("kind", ["one row", "one column", "diagonal", "two rows", "three pixels"])
@pytest.mark.parametrize("aggregation", ["Each", "All: Across cycles"])
@pytest.mark.parametrize("rescale", ["Yes", "No"])
@pytest.mark.parametrize("compat", ["4.2", "5"])
def test_fit_polynomial_on_a_mask_that_does_not_fix_the_surface(kind, aggregation, rescale, compat):
    # Many quadratics fit pixels on one line or two equally well; CellProfiler's is scipy's
    # minimum-norm lstsq in its x, y, x^2, y^2, xy, 1 basis, which gpuillum reproduces.
    shape = (23, 31)
    images = synthetic_images(shape, 3, seed=5, integer=False)
    masks = [_degenerate_mask(shape, kind)] * len(images)
    settings = CalculateSettings(smoothing="Fit Polynomial", aggregation=aggregation, rescale=rescale, compat=compat)
    check(settings, images, masks)  # within 1e-5 of the function maximum (the parity tolerance)


def test_some_images_masked_in_all_mode():
    images, masks = dataset("96x96", True)
    masks = [masks[0], None, masks[2], None, masks[4]]
    check(CalculateSettings(aggregation="All: First cycle", smoothing="Gaussian Filter"), images, masks)


def test_uint8_input_and_background_median():
    rng = np.random.default_rng(3)
    images = [(rng.random((64, 70)) * 60 + 20).astype(np.uint8) for _ in range(4)]
    settings = CalculateSettings(intensity="Background", block_size=16, smoothing="Median Filter",
                                 filter_size_method="Object size", object_width=15)
    check(settings, images, None)
    check(settings.replace(aggregation="All: Across cycles"), images, None)


def test_all_median_on_dim_integers_moves_one_level():
    # dim 12-bit data (raw 41..245 in uint16, q_max ~ 245): averages of 3 images sit on truncation
    # steps for a third of the pixels, so one level is ~4e-3 of the maximum. The invariant: the
    # unrescaled functions differ by at most one level, and the rescaled ones by one level of the
    # smoothed average and of the divisor at most
    rng = np.random.default_rng(8)
    images = [np.round(rng.uniform(0.01, 0.06, (48, 48)) * 4095).astype(np.uint16) for _ in range(3)]
    level = 1 / 65535
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Median Filter",
                                 filter_size_method="Manually", manual_size=5, rescale="No")
    got_raw = calculate(images, settings).astype(np.float64)
    expected_raw = oracle.calculate(settings, images).astype(np.float64)
    assert 0 < np.max(np.abs(got_raw - expected_raw)) <= 1.001 * level
    for rescale in ("Yes", "Median"):
        rescaled = settings.replace(rescale=rescale)
        got_divisor = np.median(got_raw / calculate(images, rescaled))
        expected_divisor = np.median(expected_raw / oracle.calculate(rescaled, images))
        assert abs(got_divisor - expected_divisor) <= 1.001 * level
        raised = np.maximum(got_raw, got_divisor) if rescale == "Yes" else got_raw  # Yes lifts values below it
        np.testing.assert_allclose(calculate(images, rescaled), raised / got_divisor, rtol=1e-6)


@pytest.mark.parametrize("scale", [0xFF, 0xFFFF])
def test_median_table_is_non_decreasing(scale):
    # the raw-value median path relies on it: a median commutes only with a monotone map
    from gpuillum.methods.cellprofiler.stages import median_table as _median_table

    table = _median_table(scale)
    assert table.dtype == np.float32 and table.shape == (scale + 1,)
    assert table[0] == 0 and table[-1] == 1
    assert np.all(np.diff(table) >= 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("rescale", ["Yes", "No", "Median"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_each_median_on_full_range_integers_is_bit_identical(dtype, rescale, masked):
    # every raw value, including those whose uint16(x * 65535) truncates one level down
    rng = np.random.default_rng(11)
    top = np.iinfo(dtype).max
    images = [rng.integers(0, top + 1, (47, 53), dtype=dtype) for _ in range(3)]
    images[1][:, :9] = top  # saturated columns and a black corner
    images[2][:6, :6] = 0
    masks = [rng.random((47, 53)) > 0.3 for _ in range(3)] if masked else None
    for intensity in ("Regular", "Background"):
        settings = CalculateSettings(intensity=intensity, block_size=10, smoothing="Median Filter", rescale=rescale,
                                     filter_size_method="Manually", manual_size=12)
        check(settings, images, masks)


@pytest.mark.parametrize("rescale", ["Yes", "Median"])
@pytest.mark.parametrize("aggregation, count", [("Each", 1), ("Each", 3), ("All: Across cycles", 1)])
def test_median_of_raw_values_matches_the_float_path(aggregation, count, rescale):
    # the same images as float32 holding CellProfiler's values take the general path; one masked
    # image in an All mode must keep the All-mode mask rules (several differ: exact integer sums)
    images, masks = dataset("96x96", True)
    images, masks = images[:count], masks[:count]
    settings = CalculateSettings(smoothing="Median Filter", filter_size_method="Manually", manual_size=10,
                                 aggregation=aggregation, rescale=rescale)
    as_floats = [(image / 65535.0).astype(np.float32) for image in images]
    np.testing.assert_array_equal(calculate(images, settings, masks), calculate(as_floats, settings, masks))


def test_median_of_raw_values_is_resized_to_the_requested_shape():
    images, masks = dataset("96x96", True)
    settings = CalculateSettings(smoothing="Median Filter", filter_size_method="Manually", manual_size=10)
    raw = IlluminationAccumulator(settings).add(images[0], masks[0])
    floats = IlluminationAccumulator(settings).add((images[0] / 65535.0).astype(np.float32), masks[0])
    got = raw.finalize((120, 75))
    assert got.shape == (120, 75)
    np.testing.assert_array_equal(got, floats.finalize((120, 75)))


def test_jump_preset_matches_resize_median_resize():
    images, _ = dataset("96x96", False)
    settings = preset("jump").replace(manual_size=5)
    check(settings, images, None)


@pytest.mark.parametrize("aggregation", ["Each", "All: Across cycles"])
@pytest.mark.parametrize("smoothing", ["Median Filter", "Gaussian Filter", "Fit Polynomial"])
def test_masked_images_are_resized_like_cellprofiler(aggregation, smoothing):
    # the Resize module shrinks the image bilinearly and its mask by nearest neighbour
    images, masks = dataset("96x96", True)
    settings = CalculateSettings(aggregation=aggregation, smoothing=smoothing, resize_factor=0.25, rescale="No",
                                 filter_size_method="Manually", manual_size=6)
    check(settings, images[:3], masks[:3])


def test_resizing_the_average_equals_resizing_every_image():
    images, _ = dataset("96x96", False)
    settings = preset("jump").replace(smoothing="Gaussian Filter", manual_size=5)
    expected = oracle.calculate(settings, images)
    full = [np.ones(images[0].shape, bool)] * len(images)  # any mask forces the per-image resize
    results = {
        "deferred": calculate(images, settings),
        "per-image": calculate(images, settings, full),
        "switch-midway": calculate(images, settings, [None, None, full[2], None, full[4]]),
    }
    deferred_part = IlluminationAccumulator(settings)
    masked_part = IlluminationAccumulator(settings)
    for image in images[:3]:
        deferred_part.add(image)
    for image in images[3:]:
        masked_part.add(image, full[0])
    results["merge-deferred-first"] = IlluminationAccumulator(settings).merge(deferred_part).merge(masked_part).finalize()
    results["merge-masked-first"] = IlluminationAccumulator(settings).merge(masked_part).merge(deferred_part).finalize()
    for name, got in results.items():
        assert got.shape == images[0].shape, name
        assert relative_difference(got, expected) <= 1e-5, name


def test_accumulator_partials_reduce_to_the_single_pass_result():
    images, masks = dataset("61x83", True)
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Median Filter", dilate=True)
    single = calculate(images, settings, masks)
    parts = [IlluminationAccumulator(settings) for _ in range(3)]
    for index, (image, mask) in enumerate(zip(images, masks)):
        parts[index % 3].add(image, mask)
    merged = IlluminationAccumulator(settings)
    for part in parts:
        merged.merge(part)
    np.testing.assert_array_equal(merged.finalize(), single)  # a few float32 values sum exactly in float64


@pytest.mark.gpu
@pytest.mark.parametrize(
    "smoothing, intensity, aggregation, dilate",
    list(itertools.product(CHEAP_METHODS + ("Splines", "Convex Hull"), ["Regular", "Background"], ["Each", "All: Across cycles"], [False, True])),
)
def test_gpu_matches_cpu(cupy, on_device, smoothing, intensity, aggregation, dilate):
    images, masks = dataset("96x96", True)
    settings = CalculateSettings(intensity=intensity, aggregation=aggregation, smoothing=smoothing, dilate=dilate,
                                 block_size=20, filter_size_method="Manually", manual_size=10)
    expected = calculate(images, settings, masks)
    with on_device():  # Splines and Convex Hull copy their input to the host, by design; no other stage may
        got = calculate([cupy.asarray(i) for i in images], settings, [cupy.asarray(m) for m in masks])
    assert isinstance(got, cupy.ndarray) and got.dtype == np.float32
    if smoothing == "Median Filter" and aggregation == "Each":
        np.testing.assert_array_equal(got.get(), expected)
    elif smoothing == "Median Filter":  # float64 sums on both sides; the device may round the mean differently
        level = float(np.min(np.diff(np.unique(expected))))
        assert np.max(np.abs(got.get().astype(np.float64) - expected)) <= 1.001 * level
    else:
        assert relative_difference(got.get(), expected) <= 1e-5


def test_a_dilation_kernel_larger_than_the_image_is_cut_to_the_same_function():
    # radius 30: CellProfiler's kernel spans 181^2 pixels, gpuillum's stops at the 83-pixel image side
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Gaussian Filter", dilate=True, dilation_radius=30)
    images, masks = dataset("61x83", True)
    assert relative_difference(calculate(images[:3], settings, masks[:3]), oracle.calculate(settings, images[:3], masks[:3])) <= 1e-6
