"""gpuillum against the real ImageJ: Subtract Background (rolling ball, sliding paraboloid), Mean,
Top Hat and Z Project, on random images of awkward shapes, the NEUBIAS lesson images, every option
and radii from 1 to beyond the image.

All jobs of this module run in ONE ImageJ process (tests/imagej_oracle.py, ~10-30 s); the tests
then compare category by category. 8/16-bit outputs must be identical; 32-bit outputs must be
identical for the rolling ball and the paraboloid as well (both are bit-exact by construction),
within 1e-5 relative for the Mean filter (ImageJ sums floats in a running double). The tests skip
with the oracle's reason where ImageJ or xvfb is missing (CI installs both: .ci/run).
"""
from __future__ import annotations

import itertools
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile

import gpuillum as gi
from imagej_oracle import Job, paraboloid_is_legacy, run_jobs, skip_reason

NEUBIAS = ("neubias/xy_8bit__some_spots_with_uneven_bg.tif", "neubias/xyt_8bit_polyp.tif")
SHAPES = ((1, 40), (40, 1), (37, 53), (256, 255))
RADII = (1, 3, 10.5, 20, 50, 100.5, 250, 1000)  # 1000: beyond every image here
OPTIONS = tuple(itertools.product((False, True), (True, False), (False, True)))  # light, smooth, create


@dataclass
class Case:
    """One ImageJ job and what gpuillum computes for it (``ours()``)."""

    category: str
    image: np.ndarray
    command: str
    options: str
    ours: object  # callable: () -> array
    exact: bool = True
    notes: dict = field(default_factory=dict)


def random_image(rng, shape, dtype):
    if dtype == np.float32:
        return (rng.standard_normal(shape) * 300 + 1000).astype(np.float32)
    top = np.iinfo(dtype).max
    image = rng.integers(0, top // 2, shape)
    # a bright blob and a ramp, so that backgrounds are not flat noise
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    image = image // 4 + (x * top // (8 * max(shape[1], 1))) + top // 4 * (((y - shape[0] // 2) ** 2 + (x - shape[1] // 3) ** 2) < 30)
    return np.clip(image, 0, top).astype(dtype)


def option_string(radius, light, smooth, create, sliding=False, stack=False):
    words = [f"rolling={radius}"]
    words += ["light"] * light + ["create"] * create + ["sliding"] * sliding + ["disable"] * (not smooth) + ["stack"] * stack
    return " ".join(words)


def subtract_background_cases(rng, data_dir):
    cases = []
    for dtype, shape, radius, (light, smooth, create) in itertools.product((np.uint8, np.uint16, np.float32), SHAPES, RADII, OPTIONS):
        image = random_image(rng, shape, dtype)
        cases.append(Case("rolling ball, random", image, "Subtract Background...", option_string(radius, light, smooth, create),
                          lambda im=image, r=radius, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                              im, r, light_background=l, presmooth=s, create_background=c)))
    for dtype, radius, (light, smooth, create) in itertools.product((np.uint8, np.uint16, np.float32), (5, 50, 150), OPTIONS[::3]):
        image = random_image(rng, (1024, 1023), dtype)
        cases.append(Case("rolling ball, 1024 x 1023", image, "Subtract Background...", option_string(radius, light, smooth, create),
                          lambda im=image, r=radius, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                              im, r, light_background=l, presmooth=s, create_background=c)))
    # ImageJ's ArrayIndexOutOfBoundsException (an image at most s pixels wide) and one-row shrunk images
    for dtype, shape, (light, smooth, create) in itertools.product((np.uint8, np.float32), ((6, 4), (4, 9), (3, 3)), OPTIONS):
        image = random_image(rng, shape, dtype)
        cases.append(Case("rolling ball, degenerate", image, "Subtract Background...", option_string(50, light, smooth, create),
                          lambda im=image, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                              im, 50, light_background=l, presmooth=s, create_background=c)))
    stack = np.stack([random_image(rng, (30, 40), np.uint16) for _ in range(3)])
    for radius, (light, smooth, create) in itertools.product((4, 25), OPTIONS[::2]):
        cases.append(Case("rolling ball, stack", stack, "Subtract Background...", option_string(radius, light, smooth, create, stack=True),
                          lambda r=radius, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                              stack, r, light_background=l, presmooth=s, create_background=c)))
    # the sliding paraboloid: every option, compared as the installed ImageJ's version computes it
    yy, xx = np.mgrid[0:60, 0:50]
    dome = (1000 - ((yy - 30) ** 2 + (xx - 25) ** 2) * 0.3).astype(np.float32)  # no interior touching points
    for dtype, shape, radius, (light, smooth, create) in itertools.product(
            (np.uint8, np.uint16, np.float32), ((1, 40), (40, 1), (2, 2), (37, 53), (128, 127), "dome"), (1, 3, 10.5, 50, 250), OPTIONS):
        image = dome.astype(dtype) if shape == "dome" else random_image(rng, shape, dtype)
        cases.append(Case("sliding paraboloid", image, "Subtract Background...", option_string(radius, light, smooth, create, sliding=True),
                          None, notes={"radius": radius, "light": light, "smooth": smooth, "create": create}))
    if data_dir is not None:
        spots = tifffile.imread(data_dir / NEUBIAS[0])
        polyp = tifffile.imread(data_dir / NEUBIAS[1])
        for radius, (light, smooth, create) in itertools.product((5, 15, 50, 120), OPTIONS):
            cases.append(Case("NEUBIAS rolling ball", spots, "Subtract Background...", option_string(radius, light, smooth, create),
                              lambda r=radius, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                                  spots, r, light_background=l, presmooth=s, create_background=c)))
            cases.append(Case("NEUBIAS sliding paraboloid", spots, "Subtract Background...",
                              option_string(radius, light, smooth, create, sliding=True), None,
                              notes={"radius": radius, "light": light, "smooth": smooth, "create": create}))
        for radius, (light, smooth, create) in itertools.product((15, 50), OPTIONS[::2]):
            cases.append(Case("NEUBIAS rolling ball, stack", polyp, "Subtract Background...",
                              option_string(radius, light, smooth, create, stack=True),
                              lambda r=radius, l=light, s=smooth, c=create: gi.rolling_ball_imagej(
                                  polyp, r, light_background=l, presmooth=s, create_background=c)))
    return cases


def filter_cases(rng, data_dir):
    cases = []
    for dtype, radius in itertools.product((np.uint8, np.uint16, np.float32), (0.5, 1, 1.5, 1.7, 2, 2.5, 2.8, 3, 4.5, 10.3)):
        image = random_image(rng, (37, 53), dtype)
        cases.append(Case("Mean", image, "Mean...", f"radius={radius}",
                          lambda im=image, r=radius: gi.mean_filter(im, r, footprint="imagej", mode="nearest"),
                          exact=dtype != np.float32))
    # Top Hat with ImageJ's circle equal to gpuillum's disk r: floor(R^2) + 1 = r^2
    for dtype, r, light in itertools.product((np.uint8, np.uint16, np.float32), (4, 9), (False, True)):
        image = random_image(rng, (37, 53), dtype)
        imagej_radius = math.sqrt(r * r - 0.5)
        cases.append(Case("Top Hat", image, "Top Hat...", f"radius={imagej_radius:.6f}" + " light" * light,
                          lambda im=image, r=r, light=light: _imagej_top_hat(im, r, light)))
    for dtype, frames in itertools.product((np.uint8, np.uint16), (3, 4)):
        stack = np.stack([random_image(rng, (20, 30), dtype) for _ in range(frames)])
        for projection, statistic in (("Max Intensity", "max"), ("Min Intensity", "min"), ("Average Intensity", "mean"), ("Median", "median")):
            cases.append(Case("Z Project", stack, "Z Project...", f"projection=[{projection}]",
                              lambda s=stack, st=statistic: gi.projection_background(s, st)))
    if data_dir is not None:
        polyp = tifffile.imread(data_dir / NEUBIAS[1])
        cases.append(Case("NEUBIAS Z Project", polyp, "Z Project...", "projection=[Max Intensity]",
                          lambda: gi.projection_background(polyp, "max")))
    return cases


def _imagej_top_hat(image, radius, light):
    """ImageJ's Top Hat from gpuillum's top-hats: orig - opened, or with a light background
    orig - closed (+ the type's maximum on 8/16-bit), as ImageJ writes them."""
    if not light:
        return gi.white_tophat(image, radius)
    if image.dtype == np.float32:
        return image - gi.grey_closing(image, radius)  # -black_tophat, but with ImageJ's +0.0 for equal values
    dark = gi.black_tophat(image, radius)
    return (np.iinfo(image.dtype).max - dark.astype(np.int64)).astype(image.dtype)


@pytest.fixture(scope="module")
def oracle():
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    value = os.environ.get("GPUILLUM_DATA")
    data_dir = Path(value) if value and all((Path(value) / name).is_file() for name in NEUBIAS) else None
    rng = np.random.default_rng(20261205)
    cases = subtract_background_cases(rng, data_dir) + filter_cases(rng, data_dir)
    results, info = run_jobs([Job(c.image, c.command, c.options) for c in cases], timeout=900)
    return {"cases": cases, "results": results, "version": info["version"], "data": data_dir is not None}


def _compare(case, theirs, ours):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours.shape, ours.dtype, theirs.shape, theirs.dtype)
    if case.exact:
        bits = f"u{ours.dtype.itemsize}"
        return np.array_equal(ours.view(bits), theirs.view(bits))
    return np.allclose(ours, theirs, rtol=1e-5, atol=1e-5 * float(np.abs(theirs).max()))


def _check(oracle, category_prefix, ours_of=None, minimum=1):
    """Compare every case of a category; ``ours_of(case, imagej_dtype)`` replaces ``case.ours()``
    (returning None skips the case). Returns the number compared."""
    failures, checked = [], 0
    for case, result in zip(oracle["cases"], oracle["results"]):
        if not case.category.startswith(category_prefix):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # ImageJ's failure on narrow images, reproduced
            ours = ours_of(case, result.output.dtype) if ours_of else case.ours()
        if ours is None:
            continue
        checked += 1
        if not _compare(case, result.output, ours):
            difference = np.abs(ours.astype(np.float64) - result.output.astype(np.float64))
            failures.append(f"{case.category} {case.image.dtype} {case.image.shape} {case.command} {case.options}: "
                            f"{int(np.sum(difference > 0))} pixels differ, max {difference.max():.6g}")
    assert not failures, f"{len(failures)} of {checked} differ from ImageJ {oracle['version']}:\n" + "\n".join(failures[:20])
    assert checked >= minimum, f"only {checked} {category_prefix!r} cases compared"
    return checked


def test_imagej_version_is_reported(oracle):
    assert re.match(r"\d+\.\d+", oracle["version"]), oracle["version"]
    print(f"compared with ImageJ {oracle['version']}")


def test_rolling_ball_matches_imagej_on_random_images(oracle):
    _check(oracle, "rolling ball, random", minimum=3 * len(SHAPES) * len(RADII) * len(OPTIONS))


def test_rolling_ball_matches_imagej_on_large_images(oracle):
    _check(oracle, "rolling ball, 1024 x 1023", minimum=18)


def test_rolling_ball_reproduces_imagej_on_images_narrower_than_the_shrink_factor(oracle):
    _check(oracle, "rolling ball, degenerate", minimum=48)


def test_rolling_ball_processes_stacks_slice_by_slice_like_imagej(oracle):
    _check(oracle, "rolling ball, stack", minimum=8)


def test_rolling_ball_matches_imagej_on_the_neubias_images(oracle):
    if not oracle["data"]:
        pytest.skip("GPUILLUM_DATA is unset or lacks the NEUBIAS images")
    _check(oracle, "NEUBIAS rolling ball", minimum=32 + 8)


def _paraboloid(case, legacy):
    n = case.notes
    return gi.sliding_paraboloid(case.image, n["radius"], light_background=n["light"], presmooth=n["smooth"],
                                 create_background=n["create"], legacy=legacy)


def test_sliding_paraboloid_matches_the_installed_imagej(oracle):
    """Every option on every image: the mode of the installed version (1.53t: legacy=True)."""
    legacy = paraboloid_is_legacy(oracle["version"])
    _check(oracle, "sliding paraboloid", lambda case, _: _paraboloid(case, legacy), minimum=720)
    if oracle["data"]:
        _check(oracle, "NEUBIAS sliding paraboloid", lambda case, _: _paraboloid(case, legacy), minimum=32)


def test_current_sliding_paraboloid_matches_imagej_where_the_versions_agree(oracle):
    """The current rules (legacy=False) give ImageJ's result wherever they coincide with the old
    ones, which covers the 3x3 filters, the nine passes and the frame; where they differ, only the
    corner estimates (section 9.4) and the float shift's last bit can be the cause."""
    if not paraboloid_is_legacy(oracle["version"]):
        pytest.skip("the installed ImageJ already has the current rules: the previous test covers them")

    def current_where_versions_agree(case, _):
        current = _paraboloid(case, legacy=False)
        return current if np.array_equal(current, _paraboloid(case, legacy=True)) else None

    checked = _check(oracle, "sliding paraboloid", current_where_versions_agree, minimum=200)
    assert checked < 720, "no case differs between the versions: the corner-rule tests would prove nothing"


def test_mean_filter_with_imagejs_circle_matches_imagej_mean(oracle):
    def rounded_like_imagej(case, _):
        mean = case.ours()
        if case.image.dtype == np.float32:
            return mean
        return (mean + np.float32(0.5)).astype(case.image.dtype)  # (int)(v + 0.5f)

    _check(oracle, "Mean", rounded_like_imagej, minimum=30)


def test_top_hats_match_imagej_top_hat_with_the_same_circle(oracle):
    _check(oracle, "Top Hat", minimum=12)


def test_projections_match_imagej_z_project(oracle):
    """ImageJ 1.53t writes some average and median projections in the stack's type, rounded
    (v + 0.5, truncated: 8-bit average and median, 16-bit average), the others as 32-bit;
    gpuillum returns float32, rounded here where ImageJ rounds. Max and min keep the type in both."""
    def as_imagej(case, imagej_dtype):
        ours = case.ours()
        if ours.dtype == np.float32 and imagej_dtype != np.float32:
            return (ours + np.float32(0.5)).astype(imagej_dtype)
        return ours

    _check(oracle, "Z Project", as_imagej, minimum=16)
    if oracle["data"]:
        _check(oracle, "NEUBIAS Z Project")
