"""The lesson's recipes through ``gpuillum run`` against the real ImageJ (not only the kernels).

One ImageJ process runs every recipe as the lesson and ImageJ's users write it (Subtract
Background with its options, Z Project + Image Calculator "Subtract create 32-bit stack", Median +
Image Calculator "Subtract create 32-bit", Top Hat) on the NEUBIAS images; each test runs the
equivalent gpuillum command on the same files and compares the pixels: identical, float32
included. Skips with the oracle's reason where ImageJ or xvfb is missing (CI installs both), and
without GPUILLUM_DATA.
"""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from imagej_oracle import paraboloid_is_legacy, run_macro, skip_reason

SPOTS, POLYP = "neubias/xy_8bit__some_spots_with_uneven_bg.tif", "neubias/xyt_8bit_polyp.tif"

# name: (input, ImageJ macro lines on the opened image, gpuillum run options)
RECIPES = {
    "rolling50": (SPOTS, 'run("Subtract Background...", "rolling=50");', ["--method", "rolling-ball", "--radius", "50"]),
    "rolling15_light": (SPOTS, 'run("Subtract Background...", "rolling=15 light");',
                        ["--method", "rolling-ball", "--radius", "15", "--light-background"]),
    "rolling15_create_disable": (SPOTS, 'run("Subtract Background...", "rolling=15 create disable");',
                                 ["--method", "rolling-ball", "--radius", "15", "--create-background", "--presmooth", "none"]),
    "rolling50_light_32bit": (SPOTS, 'run("32-bit"); run("Subtract Background...", "rolling=50 light");',
                              ["--method", "rolling-ball", "--radius", "50", "--light-background", "--output-dtype", "float32"]),
    "rolling7_5_32bit": (SPOTS, 'run("32-bit"); run("Subtract Background...", "rolling=7.5");',
                         ["--method", "rolling-ball", "--radius", "7.5", "--output-dtype", "float32"]),
    "rolling15_stack": (POLYP, 'run("Subtract Background...", "rolling=15 stack");',
                        ["--method", "rolling-ball", "--radius", "15"]),
    "paraboloid30": (SPOTS, 'run("Subtract Background...", "rolling=30 sliding");',
                     ["--method", "sliding-paraboloid", "--radius", "30"]),
    "paraboloid30_light_disable": (SPOTS, 'run("Subtract Background...", "rolling=30 sliding light disable");',
                                   ["--method", "sliding-paraboloid", "--radius", "30", "--light-background",
                                    "--presmooth", "none"]),
    # the lesson's second activity: the maximum projection over time subtracted from every frame, 32-bit
    "max_projection": (POLYP, 'name = getTitle(); run("Z Project...", "projection=[Max Intensity]"); '
                              'imageCalculator("Subtract create 32-bit stack", name, "MAX_" + name);',
                       ["--method", "projection", "--statistic", "max", "--output-dtype", "float32"]),
    "median_projection": (POLYP, 'name = getTitle(); run("Z Project...", "projection=[Median]"); '
                                 'imageCalculator("Subtract create 32-bit stack", name, "MED_" + name);',
                          ["--method", "projection", "--statistic", "median", "--output-dtype", "float32"]),
    # the lesson's first activity: Median radius 15 as the background, Image Calculator 32-bit
    "median15": (SPOTS, 'rename("input"); run("Duplicate...", "title=background"); run("Median...", "radius=15"); '
                        'imageCalculator("Subtract create 32-bit", "input", "background");',
                 ["--method", "median", "--radius", "15", "--footprint", "imagej", "--output-dtype", "float32"]),
    # the alternatives: ImageJ's Top Hat
    "tophat15": (SPOTS, 'run("Top Hat...", "radius=15");', ["--method", "tophat", "--radius", "15", "--footprint", "imagej"]),
}


@pytest.fixture(scope="module")
def imagej(data_set):
    """{recipe: ImageJ's output} and ImageJ's version, from one ImageJ process."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    inputs = {"spots": tifffile.imread(data_set(SPOTS)), "polyp": tifffile.imread(data_set(POLYP))}
    lines = []
    for name, (source, commands, _options) in RECIPES.items():
        stem = "spots" if source == SPOTS else "polyp"
        lines.append(f'open(FOLDER + "{stem}.tif"); {commands} saveAs("Tiff", FOLDER + "out_{name}.tif"); run("Close All");')
    log, saved = run_macro('print("version=" + getVersion());\n' + "\n".join(lines) + '\nprint("finished");\n', inputs)
    version = next(line.split("=", 1)[1] for line in log.splitlines() if line.startswith("version="))
    return {name.removeprefix("out_"): image for name, image in saved.items()}, version


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_the_cli_writes_what_imagej_writes(tmp_path, data_set, imagej, recipe):
    outputs, version = imagej
    source, _commands, options = RECIPES[recipe]
    if "sliding-paraboloid" in options and paraboloid_is_legacy(version):
        options = [*options, "--legacy"]  # the installed ImageJ predates 1.54t4's corner rules
    path = data_set(source)
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--device", "cpu", "-q", *options]) == 0
    got = tifffile.imread(tmp_path / "out" / "corrected" / path.name)
    expected = outputs[recipe]
    assert got.dtype == expected.dtype, f"ImageJ {version} wrote {expected.dtype}"
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_the_lessons_signed_median_foreground_is_imagejs_32_bit_result(tmp_path, data_set, imagej):
    """--output-dtype signed: the lesson's int16 foreground, the same numbers as ImageJ's 32-bit image."""
    outputs, _version = imagej
    path = data_set(SPOTS)
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--device", "cpu", "-q", "--method", "median",
                 "--radius", "15", "--footprint", "imagej", "--output-dtype", "signed"]) == 0
    got = tifffile.imread(tmp_path / "out" / "corrected" / path.name)
    assert got.dtype == np.int16 and (got < 0).any()
    np.testing.assert_array_equal(got, outputs["median15"].astype(np.int16))
