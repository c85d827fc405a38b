"""CellProfiler parity on real plates (GPUILLUM_DATA): BBBC013 against CellProfiler's own function,
BBBC016 against the CellProfiler 4.2 oracle (tests/cp_oracle.py)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from gpuillum.methods.cellprofiler import CalculateSettings, calculate, load_function

_spec = importlib.util.spec_from_file_location("cp_oracle", Path(__file__).with_name("cp_oracle.py"))
oracle = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("cp_oracle", oracle)
_spec.loader.exec_module(oracle)

tifffile = pytest.importorskip("tifffile")


def test_bbbc013_against_cellprofilers_function(data_set):
    """Channel 1 (GFP) with the settings of the plate's own pipeline vs the shipped Channel1ILLUM.mat.

    The .mat was made in 2014 by an older CellProfiler (octagon median on <= 255 levels, see
    cellprofiler.md section 4.5 history), so only the shape can agree: measured r = 0.941, max
    relative difference 0.23, median 0.13 (data README: r ~ 0.94, 11-24 %).
    """
    folder = data_set("bbbc013_plate")
    stack = tifffile.imread(folder / "Channel1_GFP_96wells.tif")
    assert stack.shape == (96, 640, 640) and stack.dtype == np.uint8
    settings = CalculateSettings.from_cppipe(folder / "ExampleSBSIllumination.cppipe", "IllumBlue")
    function = calculate(iter(stack), settings)
    reference = load_function(folder / "Channel1ILLUM.mat")
    assert function.shape == reference.shape and function.dtype == np.float32
    r = float(np.corrcoef(function.ravel(), reference.ravel())[0, 1])
    relative = np.abs(function - reference) / reference
    print(f"BBBC013 vs CellProfiler .mat: r = {r:.4f}, max rel diff = {relative.max():.3f}, median {np.median(relative):.3f}")
    assert r >= 0.92
    assert relative.max() <= 0.3
    assert function.min() == 1.0  # rescale "Yes": the 2 % order statistic becomes 1


@pytest.fixture(scope="module")
def bbbc016(data_set):
    files = sorted(data_set("bbbc016_gfp_f00_24wells").glob("*.TIF"))
    assert len(files) == 24
    return [tifffile.imread(path) for path in files]


@pytest.mark.parametrize(
    "settings",
    [
        CalculateSettings(aggregation="All: Across cycles", smoothing="Gaussian Filter"),
        CalculateSettings(aggregation="All: First cycle", intensity="Background", smoothing="Fit Polynomial", rescale="No"),
        CalculateSettings(aggregation="All: Across cycles", smoothing="Smooth to Average", dilate=True, rescale="Median"),
    ],
    ids=["gaussian-auto", "background-polynomial", "dilate-average"],
)
def test_bbbc016_all_modes_match_the_oracle(bbbc016, settings):
    function = calculate(bbbc016, settings)
    expected = oracle.calculate(settings, bbbc016)
    difference = np.max(np.abs(function.astype(np.float64) - expected)) / np.max(np.abs(expected))
    print(f"BBBC016 {settings.smoothing}: max relative difference {difference:.2e}")
    assert difference <= 1e-5
