"""CalculateSettings: CellProfiler defaults, validation, .cppipe reading, presets, filter sizes; file I/O."""
from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from gpuillum.methods import cellprofiler as cp
from gpuillum.methods.cellprofiler import (
    PRESETS,
    CalculateSettings,
    IlluminationAccumulator,
    median_radius,
    preset,
    smoothing_filter_size,
    smoothing_sigma,
)
from gpuillum.methods.cellprofiler import stages as cp_stages
from gpuillum.methods.cellprofiler.cppipe import parse_pipeline, unescape
from gpuillum.methods.cellprofiler.functions_io import function_filename, load_function, save_function


def test_defaults_are_cellprofilers():
    s = CalculateSettings()
    assert (s.intensity, s.dilate, s.dilation_radius, s.block_size) == ("Regular", False, 1, 60)
    assert (s.rescale, s.aggregation, s.smoothing) == ("Yes", "Each", "No smoothing")
    assert (s.filter_size_method, s.object_width, s.manual_size) == ("Automatic", 10, 10)
    assert (s.spline_automatic, s.spline_mode, s.spline_points, s.spline_threshold) == (True, "auto", 5, 2.0)
    assert (s.spline_rescale, s.spline_max_iterations, s.spline_convergence) == (2.0, 40, 0.001)
    assert (s.compat, s.resize_factor) == ("4.2", 1.0)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("intensity", "Dark", r"^intensity: expected one of 'Regular', 'Background', got 'Dark'$"),
        ("rescale", "yes", r"^rescale: expected one of 'Yes', 'No', 'Median'"),
        ("aggregation", "All", r"^aggregation: expected one of 'Each', 'All: First cycle', 'All: Across cycles'"),
        ("smoothing", "Median", r"^smoothing: expected one of 'No smoothing', 'Convex Hull', 'Fit Polynomial', 'Median Filter'"),
        ("filter_size_method", "Auto", r"^filter_size_method: expected one of 'Automatic', 'Object size', 'Manually'"),
        ("spline_mode", "light", r"^spline_mode: expected one of 'auto', 'dark', 'bright', 'gray'"),
        ("compat", "4", r"^compat: expected one of '4.2', '5'"),
        ("block_size", 0, r"^block_size: expected an integer >= 1, got 0$"),
        ("block_size", 2.5, r"^block_size: expected an integer"),
        ("manual_size", 0, r"^manual_size: expected a finite number > 0"),
        ("manual_size", float("inf"), r"^manual_size: expected a finite number > 0, got inf$"),
        ("object_width", float("nan"), r"^object_width: expected a finite number > 0, got nan$"),
        ("spline_rescale", float("inf"), r"^spline_rescale: expected a finite number >= 1.0, got inf$"),
        ("spline_points", 3, r"^spline_points: expected an integer >= 4"),
        ("spline_threshold", 6, r"^spline_threshold: expected a finite number in \[0.1, 5.0\]"),
        ("spline_convergence", 0.5, r"^spline_convergence: expected a finite number in"),
        ("resize_factor", 0, r"^resize_factor: expected a number in \(0, 1\]"),
        ("resize_factor", 2, r"^resize_factor: expected a number in \(0, 1\]"),
        ("dilate", "Yes", r"^dilate: expected True or False"),
    ],
)
def test_invalid_values_name_the_setting(field, value, message):
    with pytest.raises(ValueError, match=message):
        CalculateSettings(**{field: value})


def test_dilation_needs_a_positive_radius():
    CalculateSettings(dilation_radius=0)  # allowed while dilation is off (as in CP's example pipeline)
    with pytest.raises(ValueError, match=r"^dilation_radius: expected an integer >= 1 when dilate is on"):
        CalculateSettings(dilate=True, dilation_radius=0)


def test_settings_are_frozen_and_replace_validates():
    s = CalculateSettings()
    with pytest.raises(AttributeError):
        s.rescale = "No"
    assert s.replace(rescale="No").rescale == "No"
    with pytest.raises(ValueError, match="^rescale"):
        s.replace(rescale="Maybe")


# cellprofiler.md 4.4 table: (method, value, shape) -> size, sigma, median radius
@pytest.mark.parametrize(
    "method, value, shape, size, sigma, radius",
    [
        ("Automatic", None, (1080, 1080), 27, 11.489, 11),
        ("Automatic", None, (2160, 2160), 30, 12.766, 13),
        ("Manually", 10, (640, 640), 10, 4.255, 4),
        ("Manually", 20, (216, 216), 20, 8.511, 9),
        ("Object size", 10, (640, 640), 6.714, 2.857, 3),
        ("Object size", 100, (640, 640), 67.14, 28.57, 29),
        ("Manually", 200, (1080, 1080), 200, 85.1, 85),
        ("Manually", 500, (1080, 1080), 500, 212.8, 213),
    ],
)
def test_filter_size_table(method, value, shape, size, sigma, radius):
    kwargs = {"filter_size_method": method}
    if method == "Manually":
        kwargs["manual_size"] = value
    elif method == "Object size":
        kwargs["object_width"] = value
    s = CalculateSettings(**kwargs)
    assert smoothing_filter_size(s, shape) == pytest.approx(size, abs=5e-3)
    assert smoothing_sigma(s, shape) == pytest.approx(sigma, rel=1e-3)  # the table rounds
    assert median_radius(s, shape) == radius


def test_small_images_get_median_radius_at_least_one():
    assert median_radius(CalculateSettings(), (30, 30)) == 1


def test_presets():
    jump = preset("jump")
    assert (jump.intensity, jump.dilate, jump.rescale, jump.aggregation) == ("Regular", False, "Yes", "All: Across cycles")
    assert (jump.smoothing, jump.filter_size_method, jump.manual_size, jump.resize_factor) == ("Median Filter", "Manually", 20, 0.2)
    assert median_radius(jump, (216, 216)) == 9
    assert preset("cellpainting-2014").manual_size == 200 and preset("cellpainting-2014").resize_factor == 1.0
    assert (preset("cdrp").manual_size, preset("cdrp").resize_factor) == (10, 0.125)
    assert preset("broad-0.1x").resize_factor == 0.1
    assert all(isinstance(s, CalculateSettings) for s in PRESETS.values())
    with pytest.raises(ValueError, match=r"^preset: expected one of 'jump', 'cellpainting-2014'.*got 'JUMP'$"):
        preset("JUMP")


# ----------------------------------------------------------------------------------------------
# .cppipe


def test_from_cppipe_on_the_bbbc013_pipeline(data_set):
    path = data_set("bbbc013_plate") / "ExampleSBSIllumination.cppipe"
    first = CalculateSettings.from_cppipe(path, 5)
    second = CalculateSettings.from_cppipe(path, "IllumGreen")
    expected = CalculateSettings(
        aggregation="All: Across cycles",
        smoothing="Median Filter",
        filter_size_method="Object size",
        object_width=100,
        dilation_radius=0,
    )
    assert first == expected and second == expected
    assert median_radius(first, (640, 640)) == 29
    with pytest.raises(ValueError, match=r"CorrectIlluminationCalculate modules are module 5 \(IllumBlue\), module 6 \(IllumGreen\)$"):
        CalculateSettings.from_cppipe(path, 7)
    assert CalculateSettings.from_cppipe(path) == CalculateSettings.from_cppipe(path, "IllumBlue")
    assert CalculateSettings.from_cppipe(path, 6, resize_factor=0.5).resize_factor == 0.5


V2_VALUES = [
    "DNA", "IllumDNA", "Background", "No", "1", "50", "Median", "{agg}", "Gaussian Filter", "Manually",
    "10", "33", "No", "IllumBlueAvg", "No", "IllumBlueDilated", "No", "dark", "6", "3", "4", "20", "0.01",
]


def cppipe_text(revision: int, values, extra_modules: str = "", escape=True) -> str:
    def esc(value):
        return value.replace(":", "\\x3A").replace("[", "\\x5B") if escape else value

    texts = [f"Setting {i + 1}" for i in range(len(values))]
    lines = "\n".join(f"    {t}:{esc(v)}" for t, v in zip(texts, values))
    return (
        "CellProfiler Pipeline: http://www.cellprofiler.org\nVersion:5\nDateRevision:426\nModuleCount:3\n\n"
        + extra_modules
        + f"CorrectIlluminationCalculate:[module_num:4|svn_version:'Unknown'|variable_revision_number:{revision}|"
        "show_window:False|notes:[]|batch_state:array([], dtype=uint8)|enabled:True|wants_pause:False]\n"
        + lines
        + "\n"
    )


def write(tmp_path, text, name="p.cppipe"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_from_cppipe_revision_2_manual_values(tmp_path):
    values = [v.format(agg="All: Across cycles") for v in V2_VALUES]
    s = CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(2, values)), "IllumDNA")
    assert (s.intensity, s.block_size, s.rescale, s.aggregation) == ("Background", 50, "Median", "All: Across cycles")
    assert (s.smoothing, s.filter_size_method, s.object_width, s.manual_size) == ("Gaussian Filter", "Manually", 10, 33)
    assert (s.spline_automatic, s.spline_mode, s.spline_points, s.spline_threshold) == (False, "dark", 6, 3.0)
    assert (s.spline_rescale, s.spline_max_iterations, s.spline_convergence, s.compat) == (4.0, 20, 0.01, "4.2")


def test_from_cppipe_module_defaults_to_the_first_and_errors_list_the_modules(tmp_path):
    first_values = [v.format(agg="Each") for v in V2_VALUES]
    first_values[1], first_values[5] = "IllumFirst", "30"
    first_module = cppipe_text(2, first_values).split("\n\n", 1)[1].replace("module_num:4", "module_num:3")
    values = [v.format(agg="All: Across cycles") for v in V2_VALUES]
    path = write(tmp_path, cppipe_text(2, values, extra_modules=first_module))
    default = CalculateSettings.from_cppipe(path)
    assert default == CalculateSettings.from_cppipe(path, 3) == CalculateSettings.from_cppipe(path, "IllumFirst")
    assert default != CalculateSettings.from_cppipe(path, 4) and default.block_size == 30
    listing = "its CorrectIlluminationCalculate modules are module 3 (IllumFirst), module 4 (IllumDNA)"
    with pytest.raises(ValueError, match=re.escape(listing)):
        CalculateSettings.from_cppipe(path, "IllumRed")
    with pytest.raises(TypeError, match=re.escape("modules of " + str(path) + " are module 3 (IllumFirst)")):
        CalculateSettings.from_cppipe(path, 2.5)


def test_calculate_without_images_says_so(rng):
    for aggregation in ("All: Across cycles", "Each"):
        with pytest.raises(ValueError, match=r"^images: no images given$"):
            cp.calculate([], CalculateSettings(aggregation=aggregation))
        with pytest.raises(ValueError, match=r"^images: no images given$"):
            cp.calculate(iter([]), CalculateSettings(aggregation=aggregation), masks=[])


@pytest.mark.parametrize("aggregation", ["All: Across cycles", "Each"])
def test_calculate_of_one_bare_2d_image_says_to_wrap_it(rng, aggregation):
    image = rng.random((20, 30)).astype(np.float32)
    settings = CalculateSettings(aggregation=aggregation, smoothing="Gaussian Filter")
    with pytest.raises(ValueError, match=r"^images: got one 2-D array of shape \(20, 30\);.*pass \[image\]$"):
        cp.calculate(image, settings)
    one_function = aggregation.startswith("All")  # All: one function for the stack; Each: one per image
    assert cp.calculate([image], settings).shape == ((20, 30) if one_function else (1, 20, 30))
    with pytest.raises(ValueError, match=r"^images: got one 4-D array of shape \(1, 2, 20, 30\); .*\(n, H, W\)$"):
        cp.calculate(image[None, None].repeat(2, axis=1), settings)
    assert cp.calculate(np.stack([image, image]), settings).shape == ((20, 30) if one_function else (2, 20, 30))


def test_from_cppipe_revision_1_gets_spline_defaults(tmp_path):
    values = [v.format(agg="Each") for v in V2_VALUES[:16]]
    s = CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(1, values, escape=False)), 4)
    defaults = CalculateSettings()
    assert s.aggregation == "Each"
    for name in ("spline_automatic", "spline_mode", "spline_points", "spline_threshold", "spline_rescale",
                 "spline_max_iterations", "spline_convergence"):
        assert getattr(s, name) == getattr(defaults, name)


def test_from_cppipe_legacy_all(tmp_path):
    values = [v.format(agg="All") for v in V2_VALUES]
    from_file = CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(2, values)), 4)
    assert from_file.aggregation == "All: First cycle"
    smoothed = (
        "Smooth:[module_num:2|svn_version:'Unknown'|variable_revision_number:2|show_window:False|notes:[]|enabled:True]\n"
        "    Select the input image:OrigDNA\n    Name the output image:DNA\n\n"
    )
    processed = CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(2, values, smoothed), "q.cppipe"), 4)
    assert processed.aggregation == "All: Across cycles"


def test_from_cppipe_revision_3_is_cellprofiler_5(tmp_path):
    values = [v.format(agg="All") for v in V2_VALUES]
    s = CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(3, values)), 4)
    assert (s.aggregation, s.compat) == ("All: Across cycles", "5")


def test_from_cppipe_takes_the_factor_of_a_bilinear_resize(tmp_path):
    values = [v.format(agg="All: Across cycles") for v in V2_VALUES]
    values[0] = "DownsampledDNA"
    resize = (
        "Resize:[module_num:2|svn_version:'Unknown'|variable_revision_number:5|show_window:False|notes:[]|enabled:True]\n"
        "    Select the input image:OrigDNA\n    Name the output image:DownsampledDNA\n"
        "    Resizing method:Resize by a fraction or multiple of the original size\n"
        "    X Resizing factor:0.2\n    Y Resizing factor:0.2\n    Z Resizing factor:1.0\n"
        "    Interpolation method:{interp}\n\n"
    )
    path = write(tmp_path, cppipe_text(2, values, resize.format(interp="Bilinear")))
    assert CalculateSettings.from_cppipe(path, 4).resize_factor == 0.2
    path = write(tmp_path, cppipe_text(2, values, resize.format(interp="Bicubic")), "b.cppipe")
    with pytest.raises(ValueError, match=r"'Bicubic' Resize; only 'Bilinear' is emulated"):
        CalculateSettings.from_cppipe(path, 4)


def test_from_cppipe_errors(tmp_path):
    values = [v.format(agg="Each") for v in V2_VALUES]
    with pytest.raises(ValueError, match=r"expected 23 settings for revision 2, found 22"):
        CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(2, values[:-1])), 4)
    bad = list(values)
    bad[8] = "Blur"
    with pytest.raises(ValueError, match=r"module #4: smoothing: expected one of"):
        CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(2, bad), "c.cppipe"), 4)
    with pytest.raises(ValueError, match=r"variable_revision_number 9 is not supported"):
        CalculateSettings.from_cppipe(write(tmp_path, cppipe_text(9, values), "d.cppipe"), 4)
    with pytest.raises(ValueError, match=r"not a CellProfiler text pipeline"):
        CalculateSettings.from_cppipe(write(tmp_path, "hello\n", "e.cppipe"), 4)
    with pytest.raises(ValueError, match=r"format version '1' is not supported"):
        parse_pipeline("CellProfiler Pipeline: http://www.cellprofiler.org\nVersion:1\n")
    with pytest.raises(ValueError, match=r"no CorrectIlluminationCalculate module"):
        CalculateSettings.from_cppipe(write(tmp_path, "CellProfiler Pipeline: x\nVersion:3\n", "f.cppipe"), 1)


def test_unescape():
    assert unescape("All\\x3A Across cycles") == "All: Across cycles"
    assert unescape("\\x5B\\x5D\\x7C") == "[]|"


# ----------------------------------------------------------------------------------------------
# file naming and I/O


def test_function_filename():
    assert function_filename("BR00116991", "DNA") == "BR00116991_IllumDNA.npy"
    with pytest.raises(ValueError, match=r"^plate: must not contain a path separator"):
        function_filename("a/b", "DNA")
    with pytest.raises(ValueError, match=r"^channel: expected a non-empty string"):
        function_filename("P", "")


def test_save_and_load_roundtrip(tmp_path, rng):
    function = rng.random((12, 17))
    path = save_function(tmp_path / "out" / function_filename("P1", "ER"), function)
    loaded = load_function(path)
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, function.astype(np.float32))
    assert sorted(p.name for p in path.parent.iterdir()) == ["P1_IllumER.npy"]  # no temporary left


def test_save_to_a_directory_names_it_and_suggests_a_file_name(tmp_path):
    for name in ("illum.npy", "illum"):
        (tmp_path / name).mkdir()
        with pytest.raises(ValueError, match=rf"{name}: is a directory; expected the function's file name"):
            save_function(tmp_path / name, np.ones((3, 3)))
    assert [p.name for p in (tmp_path / "illum.npy").iterdir()] == []


def test_save_is_atomic_on_failure(tmp_path):
    target = tmp_path / "P_IllumDNA.npy"
    save_function(target, np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"^function: expected a non-empty 2-D"):
        save_function(target, np.ones((3, 3, 3)))
    np.testing.assert_array_equal(np.load(target), np.ones((3, 3), np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["P_IllumDNA.npy"]


def test_load_mat(tmp_path, rng):
    import scipy.io

    image = rng.random((9, 8))
    scipy.io.savemat(tmp_path / "f.mat", {"Image": image})
    np.testing.assert_array_equal(load_function(tmp_path / "f.mat"), image.astype(np.float32))
    scipy.io.savemat(tmp_path / "g.mat", {"Other": image})
    with pytest.raises(ValueError, match=r"no variable 'Image' in the .mat file \(found \['Other'\]\)"):
        load_function(tmp_path / "g.mat")


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no such illumination function file"):
        load_function(tmp_path / "missing.npy")
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match=r"broken.npy: cannot read the illumination function"):
        load_function(tmp_path / "broken.npy")
    with pytest.raises(ValueError, match=r"expected a .npy or .mat illumination function"):
        load_function(tmp_path / "x.tif")
    np.save(tmp_path / "objects.npy", np.array([{"function": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects.npy: cannot read the illumination function \(it holds pickled Python objects, "
                                         r"not a float array; gpuillum never unpickles a file, which could run code\)$"):
        load_function(tmp_path / "objects.npy")
    # issue 17, cosmetic: random bytes are not "pickled Python objects"
    (tmp_path / "random.npy").write_bytes(np.random.default_rng(0).bytes(300))
    for name in ("random.npy", "broken.npy"):
        with pytest.raises(ValueError, match=rf"{name}: cannot read the illumination function \(not a NumPy \.npy file: it does "
                                             r"not start with the \.npy signature\)$"):
            load_function(tmp_path / name)


def test_float64_values_beyond_float32_are_refused_not_saved_as_inf(tmp_path):
    function = np.ones((4, 5))
    function[1, 2] = -1e300
    with pytest.raises(ValueError, match=r"^function: 1 pixel is finite but beyond float32's range"):
        save_function(tmp_path / "f.npy", function)
    assert not (tmp_path / "f.npy").exists()
    np.save(tmp_path / "big.npy", function)  # e.g. written by another tool
    with pytest.raises(ValueError, match=r"big.npy: 1 pixel is finite but beyond float32's range"):
        load_function(tmp_path / "big.npy")
    function[1, 2] = np.inf  # already not finite: loaded as it is, the apply pass reports it
    np.save(tmp_path / "inf.npy", function)
    assert np.isinf(load_function(tmp_path / "inf.npy")[1, 2])


def test_load_the_cellprofiler_mat(data_set):
    function = load_function(data_set("bbbc013_plate") / "Channel1ILLUM.mat")
    assert function.shape == (640, 640) and function.dtype == np.float32
    assert function.min() == pytest.approx(1.0, abs=1e-3)


# ----------------------------------------------------------------------------------------------
# accumulator mechanics


def _accumulated(settings, images, masks):
    """An accumulator that was given ``images`` with their ``masks``, one add() each."""
    accumulator = IlluminationAccumulator(settings)
    for image, mask in zip(images, masks, strict=True):
        accumulator.add(image, mask)
    return accumulator


def test_accumulator_merge_and_pickle_are_exact(rng):
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Gaussian Filter")
    images = [rng.random((30, 40)).astype(np.float32) for _ in range(6)]
    masks = [rng.random((30, 40)) > 0.3 for _ in range(6)]
    whole = _accumulated(settings, images, masks)
    left = _accumulated(settings, images[:4], masks[:4])
    right = _accumulated(settings, images[4:], masks[4:])
    right = pickle.loads(pickle.dumps(right))
    merged = IlluminationAccumulator(settings).merge(left).merge(right)
    assert merged.count == 6
    np.testing.assert_array_equal(merged.pixel_count, whole.pixel_count)
    np.testing.assert_allclose(merged.finalize(), whole.finalize(), rtol=1e-6)


@pytest.mark.parametrize("intensity", ["Regular", "Background"])
def test_non_finite_pixels_under_the_mask_count_as_masked(rng, intensity):
    # CellProfiler never reads a masked pixel, so a NaN there changes nothing
    image = rng.random((30, 40)).astype(np.float32)
    mask = rng.random((30, 40)) > 0.2
    poisoned = image.copy()
    poisoned[~mask] = np.nan
    poisoned[0, 0], mask[0, 0] = np.inf, False
    for aggregation in ("Each", "All: Across cycles"):
        settings = CalculateSettings(intensity=intensity, aggregation=aggregation, smoothing="Gaussian Filter", block_size=10)
        clean = cp.calculate([image], settings, [mask])
        np.testing.assert_array_equal(cp.calculate([poisoned], settings, [mask]), clean)
        assert np.isnan(poisoned).sum() == np.count_nonzero(~mask) - 1  # the input is left as it was
    with pytest.raises(ValueError, match=r"^image: contains NaN or infinite values in unmasked pixels; replace or mask"):
        cp.calculate([poisoned], CalculateSettings(), [np.ones((30, 40), bool)])
    with pytest.raises(ValueError, match=r"^image: contains NaN or infinite values; with resize_factor != 1 masked"):
        cp.calculate([poisoned], CalculateSettings(resize_factor=0.5), [mask])


def test_calculate_input_errors_are_one_line_and_early(rng):
    images = [rng.random((20, 20)).astype(np.float32) for _ in range(3)]
    with pytest.raises(TypeError, match=r"^settings: expected a CalculateSettings, got str \(preset\('jump'\) makes one"):
        cp.calculate(images, "jump")
    with pytest.raises(ValueError, match=r"^masks: 2 masks for 3 images; expected one mask \(or None\) per image$"):
        cp.calculate(images, CalculateSettings(), [None, None])
    with pytest.raises(ValueError, match=r"^masks: got one 2-D array; expected one mask \(or None\) per image"):
        cp.calculate(images, CalculateSettings(), np.ones((20, 20), bool))
    with pytest.raises(ValueError, match=r"^masks: ran out after 2 masks while images remained"):
        cp.calculate(iter(images), CalculateSettings(aggregation="All: Across cycles"), iter([None, None]))
    with pytest.raises(ValueError, match=r"^masks: more masks than the 3 images"):
        cp.calculate(iter(images), CalculateSettings(), iter([None] * 4))
    with pytest.raises(ValueError, match=r"^resize_factor: 0.01 shrinks shape \(20, 20\) to \(0, 0\)"):
        cp.calculate(images, CalculateSettings(resize_factor=0.01))
    stacked = np.ones((3, 20, 20), bool)  # a 3-D array is one mask per image
    np.testing.assert_array_equal(cp.calculate(images, CalculateSettings(), stacked), cp.calculate(images, CalculateSettings()))


def test_a_spline_scale_too_large_names_the_setting_or_the_mask(rng):
    image = rng.random((40, 50)).astype(np.float32)
    manual = CalculateSettings(smoothing="Splines", spline_automatic=False, spline_rescale=25.0)
    with pytest.raises(ValueError, match=r"^spline_rescale: 25 shrinks the fitted region \(40, 50\) below 2 pixels"):
        cp.calculate([image], manual)
    large = rng.random((400, 420)).astype(np.float32)
    mask = np.zeros(large.shape, bool)
    mask[100:103, 50:300] = True  # 3 rows / automatic scale 2 -> 1 resampled row
    with pytest.raises(ValueError, match=r"^masks: the valid pixels span only \(3, 250\), which the automatic spline "
                                         r"scale 2 \(shortest image side / 200\) shrinks below 2 pixels per side; set "
                                         r"spline_automatic=False with a smaller spline_rescale$"):
        cp.calculate([large], CalculateSettings(smoothing="Splines"), [mask])
    smaller = CalculateSettings(smoothing="Splines", spline_automatic=False, spline_rescale=1.0)
    assert np.isfinite(cp.calculate([large], smaller, [mask])).all()


def test_each_names_the_image_that_is_fully_masked(rng):
    # CellProfiler would return an all-zero function for it; no image can be divided by that
    images = [rng.random((20, 20)).astype(np.float32) for _ in range(3)]
    masks = [None, np.zeros((20, 20), bool), None]
    with pytest.raises(ValueError, match=r"^masks: image 1 has every pixel masked; CellProfiler would give it an all-zero"):
        cp.calculate(images, CalculateSettings(smoothing="Gaussian Filter"), masks)
    cp.calculate(images, CalculateSettings(smoothing="Gaussian Filter", aggregation="All: Across cycles"), masks)


def test_accumulator_errors(rng):
    image = rng.random((20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match=r"^finalize: no images were added to this accumulator"):
        IlluminationAccumulator(CalculateSettings(aggregation="All: Across cycles")).finalize()
    acc = IlluminationAccumulator(CalculateSettings(aggregation="All: Across cycles")).add(image)
    with pytest.raises(ValueError, match=r"^image: shape \(10, 20\) differs from the shape \(20, 20\) of the images already added$"):
        acc.add(image[:10])
    with pytest.raises(ValueError, match=r"^image: contains NaN or infinite"):
        acc.add(np.full((20, 20), np.inf, np.float32))
    with pytest.raises(TypeError, match=r"^image: dtype int32"):
        acc.add(image.astype(np.int32))
    each = IlluminationAccumulator(CalculateSettings()).add(image)
    with pytest.raises(ValueError, match=r"^add: an 'Each' accumulator holds one image"):
        each.add(image)
    with pytest.raises(ValueError, match=r"^other: accumulators with different settings"):
        acc.merge(each)
    masked = IlluminationAccumulator(CalculateSettings(aggregation="All: Across cycles"))
    with pytest.raises(ValueError, match=r"^masks: every pixel is masked"):
        masked.add(image, np.zeros((20, 20), bool)).finalize()


def test_integer_inputs_are_scaled_like_cellprofiler(rng):
    settings = CalculateSettings(rescale="No")
    image16 = rng.integers(0, 65536, (15, 18), dtype=np.uint16)
    np.testing.assert_array_equal(cp.calculate([image16], settings)[0], image16.astype(np.float32) / np.float32(65535))
    image8 = rng.integers(0, 256, (15, 18), dtype=np.uint8)
    np.testing.assert_array_equal(cp.to_cellprofiler_float(image8), image8.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("smoothing", ["No smoothing", "Median Filter", "Gaussian Filter", "Fit Polynomial"])
def test_each_leaves_integer_images_as_they_were(rng, dtype, smoothing):
    # an "Each" accumulator keeps an integer image as its sum without a copy; nothing may write to it
    settings = CalculateSettings(smoothing=smoothing, rescale="No")
    image = rng.integers(1, np.iinfo(dtype).max, (23, 31), dtype=dtype)
    before = image.copy()
    function = cp.calculate([image], settings)[0]
    merged = IlluminationAccumulator(settings).merge(IlluminationAccumulator(settings).add(image)).finalize()
    np.testing.assert_array_equal(image, before)
    np.testing.assert_array_equal(merged, function)
    expected = cp.smooth(cp.to_cellprofiler_float(before), None, settings)
    np.testing.assert_allclose(function, expected, rtol=1e-6)


def test_calculate_each_and_all_shapes(rng):
    images = [rng.random((16, 21)).astype(np.float32) for _ in range(3)]
    each = cp.calculate(iter(images), CalculateSettings(smoothing="Gaussian Filter"))
    assert each.shape == (3, 16, 21) and each.dtype == np.float32
    first = cp.calculate(images, CalculateSettings(aggregation="All: First cycle", smoothing="Gaussian Filter"))
    across = cp.calculate(iter(images), CalculateSettings(aggregation="All: Across cycles", smoothing="Gaussian Filter"))
    assert first.shape == (16, 21) and first.dtype == np.float32
    np.testing.assert_array_equal(first, across)
    with pytest.raises(ValueError):
        cp.calculate(images, CalculateSettings(), masks=[None])  # one mask per image


def test_calculate_each_stacks_sequences_and_iterators_alike(rng):
    images = [rng.integers(0, 4096, (23, 19), dtype=np.uint16) for _ in range(4)]
    settings = CalculateSettings(smoothing="Median Filter", filter_size_method="Manually", manual_size=6)
    from_list = cp.calculate(images, settings)
    from_iterator = cp.calculate(iter(images), settings)
    assert from_list.shape == (4, 23, 19) and from_list.dtype == np.float32
    np.testing.assert_array_equal(from_list, from_iterator)
    for index, image in enumerate(images):
        np.testing.assert_array_equal(from_list[index], cp.calculate([image], settings)[0])


class _Miscounted:
    """A sized collection whose len() disagrees with what iterating it gives."""

    def __init__(self, images, claimed):
        self.images, self.claimed = images, claimed

    def __len__(self):
        return self.claimed

    def __iter__(self):
        return iter(self.images)


@pytest.mark.parametrize("claimed, given", [(3, 2), (2, 3)])
def test_calculate_each_refuses_a_len_that_iteration_contradicts(rng, claimed, given):
    images = [rng.random((9, 11)).astype(np.float32) for _ in range(given)]
    message = rf"^images: len\(\) says {claimed} images, iterating gave {given if given < claimed else 'more'}$"
    with pytest.raises(ValueError, match=message):
        cp.calculate(_Miscounted(images, claimed), CalculateSettings(smoothing="Gaussian Filter"))


@pytest.mark.parametrize("as_iterator", [False, True])
def test_calculate_each_names_the_image_of_another_shape(rng, as_iterator):
    images = [rng.random((16, 21)).astype(np.float32), rng.random((16, 21)).astype(np.float32), rng.random((21, 16)).astype(np.float32)]
    message = r"^images: image 2 has shape \(21, 16\), image 0 has \(16, 21\); 'Each' stacks one function per image"
    with pytest.raises(ValueError, match=message):
        cp.calculate(iter(images) if as_iterator else images, CalculateSettings(smoothing="Gaussian Filter"))


def test_resize_factor_restores_the_input_shape(rng):
    images = [rng.random((50, 70)).astype(np.float32) for _ in range(3)]
    out = cp.calculate(images, preset("jump").replace(manual_size=5))
    assert out.shape == (50, 70) and out.dtype == np.float32
    assert out.min() >= 1.0 - 1e-6


def test_integer_images_are_summed_exactly_and_mix_with_floats(rng):
    settings = CalculateSettings(aggregation="All: Across cycles", rescale="No")
    images = [rng.integers(0, 65536, (12, 9), dtype=np.uint16) for _ in range(5)]
    exact = np.sum(images, axis=0, dtype=np.float64) / 5 / 65535
    np.testing.assert_array_equal(cp.calculate(images, settings), exact.astype(np.float32))
    # a float image after integer ones: the exact sum becomes float64 CellProfiler units
    floats = [cp.to_cellprofiler_float(image) for image in images]
    mixed = cp.calculate(images[:3] + floats[3:], settings)
    reference = np.mean([f.astype(np.float64) for f in floats], axis=0)
    np.testing.assert_allclose(mixed, reference, rtol=1e-6)
    eight = rng.integers(0, 256, (12, 9), dtype=np.uint8)
    both = cp.calculate([images[0], eight], settings)
    np.testing.assert_allclose(both, (images[0] / 65535 + eight / 255) / 2, rtol=1e-6)


def test_integer_sum_widens_before_it_could_overflow():
    settings = CalculateSettings(aggregation="All: Across cycles", rescale="No")
    image = np.full((3, 4), 65535, np.uint16)
    accumulator = IlluminationAccumulator(settings).add(image)
    for _ in range(17):  # 2**17 images of 65535 exceed uint32
        accumulator.merge(pickle.loads(pickle.dumps(accumulator)))
    assert accumulator.count == 2**17
    np.testing.assert_array_equal(accumulator.finalize(), np.ones((3, 4), np.float32))
    fresh = IlluminationAccumulator(settings).merge(accumulator)  # a wide partial into an empty sum
    np.testing.assert_array_equal(fresh.pixel_count, np.full((3, 4), 2**17))
    np.testing.assert_array_equal(fresh.finalize(), np.ones((3, 4), np.float32))
    assert int(fresh._float_sum()[0, 0]) == 2**17


def test_to_cpu_keeps_the_result(rng):
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Gaussian Filter")
    images = [rng.random((20, 24)).astype(np.float32) for _ in range(3)]
    masks = [rng.random((20, 24)) > 0.2 for _ in range(3)]
    accumulator = _accumulated(settings, images, masks)
    np.testing.assert_array_equal(accumulator.to("cpu").finalize(), cp.calculate(images, settings, masks))


@pytest.mark.gpu
def test_to_gpu_finalizes_on_the_device(cupy, on_device, rng):
    settings = CalculateSettings(aggregation="All: Across cycles", smoothing="Median Filter")
    images = [rng.integers(0, 4096, (40, 44), dtype=np.uint16) for _ in range(3)]
    accumulator = pickle.loads(pickle.dumps(IlluminationAccumulator(settings).add(images[0]).add(images[1])))
    accumulator.add(images[2]).to("gpu")
    with on_device():
        function = accumulator.finalize()
    assert isinstance(function, cupy.ndarray)
    np.testing.assert_array_equal(function.get(), cp.calculate(images, settings))


@pytest.mark.gpu
@pytest.mark.parametrize("as_iterator", [False, True])
def test_gpu_each_stack_matches_cpu(cupy, on_device, rng, as_iterator):
    settings = CalculateSettings(smoothing="Median Filter", filter_size_method="Manually", manual_size=6)
    images = [rng.integers(0, 4096, (23, 19), dtype=np.uint16) for _ in range(3)]
    device_images = [cupy.asarray(image) for image in images]
    with on_device():
        functions = cp.calculate(iter(device_images) if as_iterator else device_images, settings)
    assert isinstance(functions, cupy.ndarray) and functions.shape == (3, 23, 19) and functions.dtype == np.float32
    np.testing.assert_array_equal(functions.get(), cp.calculate(images, settings))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rescale_order_statistic_equals_sorting(dtype):
    from gpuillum.methods.cellprofiler.stages import _order_statistic

    rng = np.random.default_rng(7)
    samples = [
        rng.random(2001) + 1e-6,                                  # spread values
        rng.integers(1, 40, 1500) / 65535,                        # few levels, many ties (quantised medians)
        np.exp(rng.normal(0, 15, 999)),                           # many binades
        np.array([np.inf, 1.0, 2.0, 1e-30]),                      # extremes
    ]
    for values in samples:
        values = values.astype(dtype)
        ordered = np.sort(values)
        for index in (0, 1, int(values.size * 0.02), values.size // 2, values.size - 1):
            assert _order_statistic(values, index, np) == ordered[index]


def test_rescale_table_refuses_an_unmasked_histogram_with_a_mask():
    levels = np.arange(12, dtype=np.uint16).reshape(3, 4)
    table = np.linspace(0, 1, 16, dtype=np.float32)
    with pytest.raises(ValueError, match="counts"):
        cp_stages.rescale_table(levels, table, levels > 2, "Yes", counts=np.bincount(levels.ravel()))
    with_counts = cp_stages.rescale_table(levels, table, None, "Yes", counts=np.bincount(levels.ravel()))
    np.testing.assert_array_equal(with_counts, cp_stages.rescale_table(levels, table, None, "Yes"))


def test_median_filter_refuses_float_images_that_would_wrap(rng):
    counts = (rng.random((40, 50)) * 4000 + 300).astype(np.float32)  # raw counts stored as float
    for aggregation in ("Each", "All: Across cycles"):
        settings = CalculateSettings(smoothing="Median Filter", aggregation=aggregation)
        with pytest.raises(ValueError, match=r"float values span \[300.*wraps values outside \[0, 1\]"):
            cp.calculate([counts], settings)
        cp.calculate([counts / np.float32(4400)], settings)  # scaled to [0, 1]: fine
    mask = np.ones(counts.shape, bool)
    mask[5, 6] = False
    image = counts / np.float32(4400)
    image[5, 6] = 7.0  # under the mask: set to 0 before the median, never quantised
    cp.calculate([image], CalculateSettings(smoothing="Median Filter"), masks=[mask])
    # a hair above 1 truncates to 65535 without wrapping, as in CellProfiler
    cp.calculate([np.full((20, 20), 1.00001, np.float32)], CalculateSettings(smoothing="Median Filter", rescale="No"))
    # methods without the quantisation take float counts (the function is relative anyway)
    function = cp.calculate([counts], CalculateSettings(smoothing="Gaussian Filter", aggregation="All: Across cycles"))
    assert function.min() == 1.0


@pytest.mark.parametrize("shape", ["x", (20,), (20.5, 30), (0, 30), (True, 30)])
def test_finalize_names_a_bad_shape(rng, shape):
    accumulator = cp.IlluminationAccumulator(CalculateSettings(resize_factor=0.5))
    accumulator.add(rng.random((20, 30)).astype(np.float32))
    with pytest.raises(ValueError, match=r"^shape: expected two integers >= 1 \(rows, cols\)"):
        accumulator.finalize(shape)
    assert accumulator.finalize([40, 60]).shape == (40, 60)
    assert accumulator.finalize(np.array([40, 60])).shape == (40, 60)  # e.g. np.array(image.shape)
