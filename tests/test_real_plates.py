"""The plate job on the real plates of GPUILLUM_DATA, end to end through the CLI.

BBBC016 (strong shading, 24 wells, uint8) and the NF1 Cell Painting plate (uint16 deflate) are
found with a --pattern; BBBC013 ships as one multi-page TIFF, so its pages are written to single
TIFFs named from the sidecar and corrected with the settings of its own CellProfiler pipeline,
and the function is compared with CellProfiler's (a tolerance: the reference is CP 2014's).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.io
import scipy.ndimage
import tifffile

from device_guard import assert_stages_ran_on
from gpuillum.backend import to_numpy
from gpuillum.cli import main
from gpuillum.correct import apply
from gpuillum.job import BackgroundSettings
from test_engine import subtract_background
from gpuillum.filters.resample import resize_bilinear
from gpuillum.methods.cellprofiler import IlluminationAccumulator, preset
from gpuillum.io.manifest import Manifest
from gpuillum.qc.metrics import compare_to_truth, correction_report

pytestmark = pytest.mark.data

BBBC016_PATTERN = r"AS_\d+_(?P<plate>\d+)_(?P<well>[A-P]\d\d)f(?P<site>\d\d)d(?P<channel>\d)\.TIF"
NF1_PATTERN = r"(?P<well>[A-H]\d+)_01_\d_\d_(?P<channel>[A-Z]+)_001\.tif"
BBBC013_PATTERN = r"Channel(?P<channel>\d)-\d+-(?P<row>[A-H])-(?P<col>\d\d)\.tif"


def _pairs(source, out):
    for path in sorted(source.rglob("*.[tT][iI][fF]")):
        yield tifffile.imread(path), tifffile.imread(out / "corrected" / path.relative_to(source))


def test_bbbc016_shading_falls(tmp_path, data_set):
    source = data_set("bbbc016_gfp_f00_24wells")
    out = tmp_path / "out"
    assert main(["run", str(source), "-o", str(out), "--pattern", BBBC016_PATTERN, "--preset", "jump", "--device", "cpu", "-q"]) == 0
    assert [p.name for p in (out / "illum").glob("*.npy")] == ["050428030001_Illum2.npy"]
    before, after = zip(*_pairs(source, out))
    assert len(before) == 24 and all(a.dtype == np.uint8 for a in after)
    report = correction_report(list(before), list(after))
    assert report["cv_after"] < 0.6 * report["cv_before"], report
    assert report["after"]["centre_corner"] < report["before"]["centre_corner"]


def test_nf1_cellpainting_uint16_three_channels(tmp_path, data_set):
    source = data_set("nf1_cellpainting_plate2")
    out = tmp_path / "out"
    assert main(["run", str(source), "-o", str(out), "--pattern", NF1_PATTERN, "--preset", "jump", "--background", "median",
                 "--background-radius", "40", "--device", "cpu", "-q"]) == 0
    assert sorted(p.name for p in (out / "illum").glob("*.npy")) == [f"{source.name}_Illum{ch}.npy" for ch in ("DAPI", "GFP", "RFP")]
    pairs = list(_pairs(source, out))
    assert len(pairs) == 15
    for before, after in pairs:
        assert after.dtype == np.uint16 and after.shape == (904, 1224)
        # the function's minimum is 1 and the background is subtracted: nothing brightens, nothing wraps
        assert (after.astype(np.int64) <= before.astype(np.int64)).all()
        assert after.max() > 0


def test_bbbc013_with_its_cellprofiler_pipeline(tmp_path, data_set):
    folder = data_set("bbbc013_plate")
    stack = tifffile.imread(folder / "Channel1_GFP_96wells.tif")
    names = (folder / "Channel1_GFP_96wells.tif.files.txt").read_text().split()
    assert stack.shape[0] == len(names) == 96
    source = tmp_path / "bbbc013"
    source.mkdir()
    for page, name in zip(stack, names):
        tifffile.imwrite(source / name, page, compression="zlib")
    out = tmp_path / "out"
    assert main(["run", str(source), "-o", str(out), "--pattern", BBBC013_PATTERN, "--cppipe", str(folder / "ExampleSBSIllumination.cppipe"),
                 "--cppipe-module", "IllumGreen", "--device", "cpu", "-q"]) == 0
    function = np.load(out / "illum" / "bbbc013_Illum1.npy")  # plate = INPUT folder name
    reference = scipy.io.loadmat(folder / "Channel1ILLUM.mat")["Image"]
    assert function.min() == pytest.approx(1.0)
    assert compare_to_truth(function, reference)["pearson_r"] > 0.9
    before, after = zip(*_pairs(source, out))
    report = correction_report(list(before), list(after))
    assert report["cv_after"] < report["cv_before"], report


# How far a GPU run may be from the CPU run on a real plate: derived from the invariant the parity tests
# use, not measured. The JUMP recipe (resize x0.2, Median Filter, rescale Yes, resize back, divide) does
# float32 arithmetic in another order on the device, which moves an averaged pixel across one of the
# Median Filter's uint16(x * 65535) truncation steps at most (its values differ by a few float32 ulps,
# thousands of times less than a step). So, in uint16 levels at working size:
#  1. every quantised pixel differs by at most one level, hence so does every median (a median of
#     values each moved by at most 1 moves by at most 1): |m' - m| <= 1, asserted directly below;
#  2. the rescale divisor r (CellProfiler's element int(0.02 n) of the sorted positive medians,
#     cellprofiler.md 4.6) is an order statistic of them, so |r' - r| <= 1 (asserted), provided the
#     positive medians are the same pixels on both sides: every CPU median is >= 2 levels (asserted);
#  3. the function is F = max(m, r) / r, with max(m, r) >= r moving by at most 1, so
#     F' / F lies in [(r - 1) / (r + 1), (r + 1) / (r - 1)]:  |F' / F - 1| <= 2 / (r - 1);
#  4. resizing back to the image is bilinear, a weighted mean with weights >= 0, which keeps that
#     relative bound; float32 rounding adds a few 2^-24 per side (FLOAT32_SLACK counts 32 of them):
#     |F' / F - 1| <= eps = 2 / (r - 1) + FLOAT32_SLACK at every pixel of the saved functions;
#  5. apply divides: |I / F' - I / F| <= I * eps' with eps' = eps / (1 - eps), since F >= 1 (the
#     divisor's minimum), plus one float32 division rounding per side (<= 65535 * 2^-24); the integer
#     output is rint-ed, which adds at most one count: |c' - c| <= floor(I * eps' + 0.01) + 1;
#  6. the median background (block means, a median, a bilinear upsample: each a weighted mean or
#     an order statistic, so never moved by more than its input moves anywhere in its support) moves
#     by at most the largest |c' - c| within 2 * radius (its reach, for downsample f <= radius // 8),
#     and the subtraction is rint-ed once more: |out' - out| <= |c' - c| bound + that bound + 1.
# The CPU divisors give eps = 2.7e-4 (BBBC016) to 6.7e-4 (NF1 RFP) and 1 count for BBBC016's outputs. An
# H100 run behind 913f5f8 measured up to 3e-4 in the functions (the plate was not recorded): if that was
# BBBC016, step 1 or 2 did not hold there, and the level checks below say which.
FLOAT32_SLACK = 32 * 2.0**-24
PLATES = {
    "bbbc016_gfp_f00_24wells": (BBBC016_PATTERN, ["--preset", "jump"], None),
    "nf1_cellpainting_plate2": (NF1_PATTERN, ["--preset", "jump", "--background", "median", "--background-radius", "40"], 40),
}


def channel_images(source, pattern) -> dict:
    """{channel: {path: image}} of the plate's files that ``pattern`` names."""
    channels: dict = {}
    for path in sorted(source.rglob("*.[tT][iI][fF]")):
        match = re.fullmatch(pattern, path.name)
        if match:
            channels.setdefault(match["channel"], {})[path] = tifffile.imread(path)
    return channels


def median_levels(images, xp) -> np.ndarray:
    """The JUMP recipe's Median Filter output for ``images`` at working size, in uint16 levels (before
    the rescale), computed on ``xp``'s device."""
    accumulator = IlluminationAccumulator(preset("jump").replace(rescale="No"))
    for image in images:
        accumulator.add(xp.asarray(image))
    levels = to_numpy(accumulator.finalize(accumulator.average()[0].shape)).astype(np.float64) * 65535
    assert np.abs(levels - np.rint(levels)).max() < 0.01  # m / 65535 in float32
    return np.rint(levels)


def rescale_divisor(levels) -> float:
    """Rescale "Yes"'s divisor: element int(0.02 n) of the n sorted positive values (cellprofiler.md 4.6)."""
    positive = np.sort(levels[levels > 0], axis=None)
    return float(positive[int(positive.size * 0.02)])


def function_bound(divisor: float) -> float:
    """Steps 3-4: the largest |F' / F - 1| one level in every median and in the divisor allow."""
    return 2 / (divisor - 1) + FLOAT32_SLACK


def output_bound(image, epsilon: float, background_radius) -> np.ndarray:
    """Steps 5-6: the largest |out' - out| per pixel, in counts, for functions within ``epsilon``."""
    divided = np.floor(image * (epsilon / (1 - epsilon)) + 0.01) + 1
    if background_radius is None:
        return divided
    reach = scipy.ndimage.maximum_filter(image, size=4 * background_radius + 1, mode="nearest")
    return divided + np.floor(reach * (epsilon / (1 - epsilon)) + 0.01) + 1 + 1


def one_level_apart(levels) -> np.ndarray:
    """The levels moved by one each, the worst way for the rescaled function: the divisor's side
    down, the rest up (so the divisor drops by one level and the pixels just above it rise)."""
    divisor = rescale_divisor(levels)
    return np.where(levels <= divisor, levels - 1, levels + 1)


@pytest.mark.parametrize("folder", PLATES)
def test_the_real_plate_gpu_bounds_hold_for_one_level_apart(data_set, folder):
    # the derivation above, checked on the CPU with gpuillum's own resize, apply and background: the
    # plate's medians moved by one level the worst way stay within the bounds, and come close to them
    pattern, _, background_radius = PLATES[folder]
    for channel, images in channel_images(data_set(folder), pattern).items():
        levels = median_levels(images.values(), np)
        moved = one_level_apart(levels)
        divisor, moved_divisor = rescale_divisor(levels), rescale_divisor(moved)
        assert levels.min() >= 2 and moved_divisor == divisor - 1
        epsilon = function_bound(divisor)
        shape = next(iter(images.values())).shape
        function = resize_bilinear((np.maximum(levels, divisor) / divisor).astype(np.float32), shape)
        near = resize_bilinear((np.maximum(moved, moved_divisor) / moved_divisor).astype(np.float32), shape)
        ratio = np.abs(near.astype(np.float64) / function - 1)
        assert 0.9 * (epsilon - FLOAT32_SLACK) < ratio.max() <= epsilon, (channel, ratio.max(), epsilon)
        for image in images.values():
            corrected = [apply(image, f) for f in (function, near)]
            if background_radius is not None:
                corrected = [subtract_background(c, BackgroundSettings("median", background_radius)) for c in corrected]
            difference = np.abs(corrected[1].astype(np.int64) - corrected[0])
            assert (difference <= output_bound(image, epsilon, background_radius)).all(), channel


@pytest.mark.gpu
@pytest.mark.parametrize("folder", PLATES)
def test_real_plate_gpu_matches_cpu(tmp_path, data_set, stage_inputs, cupy, folder):
    source = data_set(folder)
    pattern, options, background_radius = PLATES[folder]
    stages = ("accumulate", "finalize", "apply") + (() if background_radius is None else ("median background",))
    for device, where, recorded in (("cpu", "host", "cpu"), ("gpu", "device", "cuda:0")):
        assert main(["run", str(source), "-o", str(tmp_path / device), "--pattern", pattern, *options, "--device", device, "-q"]) == 0
        assert_stages_ran_on(stage_inputs.take(), where, stages)  # no stage of the GPU run fell back to the host
        assert Manifest.load(tmp_path / device / "manifest.json").devices == [recorded]
    functions = sorted(p.name for p in (tmp_path / "cpu" / "illum").glob("*.npy"))
    assert functions == sorted(p.name for p in (tmp_path / "gpu" / "illum").glob("*.npy")) and functions
    channels = channel_images(source, pattern)
    assert len(functions) == len(channels)
    for channel, images in channels.items():
        levels = {device: median_levels(images.values(), xp) for device, xp in (("cpu", np), ("gpu", cupy))}
        assert levels["cpu"].min() >= 2 and np.abs(levels["gpu"] - levels["cpu"]).max() <= 1  # steps 1-2
        divisor = rescale_divisor(levels["cpu"])
        assert abs(rescale_divisor(levels["gpu"]) - divisor) <= 1
        epsilon = function_bound(divisor)
        (name,) = [name for name in functions if name.endswith(f"_Illum{channel}.npy")]
        cpu = np.load(tmp_path / "cpu" / "illum" / name).astype(np.float64)
        relative = np.abs(np.load(tmp_path / "gpu" / "illum" / name) / cpu - 1)
        assert relative.max() <= epsilon, (name, relative.max(), epsilon)
        for path, image in images.items():
            relpath = path.relative_to(source)
            cpu, gpu = (tifffile.imread(tmp_path / device / "corrected" / relpath).astype(np.int64) for device in ("cpu", "gpu"))
            excess = np.abs(gpu - cpu) - output_bound(image, epsilon, background_radius)
            assert excess.max() <= 0, (relpath, excess.max())
