"""The synthetic plate: layout, determinism, ground truth and noise statistics."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import tifffile

from gpuillum.demo.synthetic import (
    GAIN,
    READ_NOISE_ELECTRONS,
    SyntheticModel,
    add_camera_noise,
    make_plate_images,
    make_synthetic_plate,
    well_names,
)
from gpuillum.inputs.layouts import GPUILLUM

SMALL = dict(rows="B", cols=(2, 11), sites=2, channels=("DNA", "Actin"), shape=(64, 96))


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    return make_synthetic_plate(tmp_path_factory.mktemp("plate"), plate="P1", seed=3, **SMALL)


def _all_files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, plate):
    again = make_synthetic_plate(tmp_path / "again", plate="P1", seed=3, **SMALL)
    first, second = _all_files(plate.out_dir), _all_files(again.out_dir)
    assert first.keys() == second.keys()
    assert all(first[name] == second[name] for name in first)
    other = make_synthetic_plate(tmp_path / "other", plate="P1", seed=4, **SMALL)
    assert not np.array_equal(tifffile.imread(other.images[0]), tifffile.imread(plate.images[0]))


def test_layout_names_dtype_and_tags(plate):
    expected = {f"P1/{w}_s{s}_{c}.tif" for w in ("B02", "B11") for s in (1, 2) for c in ("DNA", "Actin")}
    written = {p.relative_to(plate.out_dir).as_posix() for p in plate.images}
    assert written == expected
    assert {p.relative_to(plate.out_dir).as_posix() for p in plate.out_dir.rglob("*.tif")} == expected
    assert plate.image_path("B11", 2, "Actin") in plate.images
    with tifffile.TiffFile(plate.images[0]) as tif:
        page = tif.pages[0]
        assert page.dtype == np.uint16 and page.shape == (64, 96)
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        num, den = page.tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / 0.65, rel=1e-6)  # 0.65 um pixels
    truth = json.loads(plate.truth_json.read_text())
    assert truth["images"] == [p.relative_to(plate.out_dir).as_posix() for p in plate.images]
    for channel in ("DNA", "Actin"):
        assert plate.flat_paths[channel].name == f"P1_flat_{channel}.npy"
        assert plate.dark_paths[channel].name == f"P1_dark_{channel}.npy"
        assert plate.flat(channel).dtype == np.float32 and plate.flat(channel).shape == (64, 96)


def test_written_images_equal_in_memory_generator(plate):
    for key, image in make_plate_images(plate="P1", seed=3, **SMALL):
        assert np.array_equal(tifffile.imread(plate.image_path(*key)), image)
    # Any image can be rendered on its own, independently of generation order.
    model = SyntheticModel("P1", seed=3, **SMALL)
    alone = model.site_images("B11", 2)["Actin"]
    assert np.array_equal(alone, tifffile.imread(plate.image_path("B11", 2, "Actin")))


@pytest.mark.parametrize("bit_depth, dtype", [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
def test_bit_depth_sets_dtype_and_range(bit_depth, dtype):
    images = [image for _, image in make_plate_images(seed=1, bit_depth=bit_depth, **SMALL)]
    assert all(image.dtype == dtype for image in images)
    assert max(int(image.max()) for image in images) <= 2**bit_depth - 1
    # The same electrons on a coarser converter: the dark offset scales with the full range.
    model = SyntheticModel(seed=1, bit_depth=bit_depth, **SMALL)
    assert float(model.dark("DNA").mean()) == pytest.approx(100 * (2**bit_depth - 1) / 65535, rel=0.05)


def test_flat_truth_mean_one_off_centre_peak_and_corner_falloff():
    shape = (96, 128)
    model = SyntheticModel(channels=("DNA", "Actin", "Mito"), shape=shape, seed=7)
    flats = []
    for channel in model.channels:
        flat = model.flat(channel)
        params = model.flat_params(channel)
        assert flat.dtype == np.float32
        assert float(flat.astype(np.float64).mean()) == pytest.approx(1.0, abs=1e-6)
        peak = np.unravel_index(np.argmax(flat), shape)
        assert math.dist(peak, params.centre_yx) <= 1.0
        offset = math.dist(params.centre_yx, ((shape[0] - 1) / 2, (shape[1] - 1) / 2))
        assert 0.08 * min(shape) - 1e-9 <= offset <= 0.15 * min(shape) + 1e-9
        corners = flat[[0, 0, -1, -1], [0, -1, 0, -1]]
        # Fall-off relative to the peak of the (un-normalised) vignetting: measured on the array.
        falloff = 1 - corners.mean() / flat.max()
        assert falloff == pytest.approx(params.corner_falloff, abs=2e-3)
        assert 0.25 <= falloff <= 0.40
        flats.append(flat)
    assert not np.allclose(flats[0], flats[1], atol=1e-3)


def test_dark_field_offset_and_faint_pattern():
    dark = SyntheticModel(**SMALL).dark("DNA")
    assert dark.dtype == np.float32
    assert 97 <= dark.min() < dark.max() <= 103
    assert dark.std() > 0.1  # a pattern, not a constant


def test_plate_noise_is_shot_plus_read_noise():
    model = SyntheticModel(seed=5, **SMALL)
    noisy = model.site_images("B02", 1)
    expected = model.site_images("B02", 1, noise=False)
    for channel in model.channels:
        dark = model.dark(channel)
        variance = GAIN * (expected[channel] - dark) + (GAIN * READ_NOISE_ELECTRONS) ** 2 + 1 / 12  # + rounding
        z = (noisy[channel].astype(np.float64) - expected[channel]) / np.sqrt(variance)
        assert abs(z.mean()) < 0.03
        assert z.var() == pytest.approx(1.0, abs=0.05)


def test_low_counts_are_exact_poisson():
    rng = np.random.default_rng(0)
    counts = add_camera_noise(np.full((200, 200), 3.0), rng, read_noise=0.0)
    assert np.array_equal(counts, np.rint(counts))
    assert counts.mean() == pytest.approx(3.0, abs=0.03)
    assert counts.var() == pytest.approx(3.0, abs=0.1)
    assert (counts == 0).mean() == pytest.approx(math.exp(-3.0), abs=0.005)


def test_high_counts_have_poisson_mean_and_variance():
    rng = np.random.default_rng(1)
    counts = add_camera_noise(np.full((200, 200), 900.0), rng, read_noise=0.0)
    assert counts.mean() == pytest.approx(900.0, abs=0.5)
    assert counts.var() / 900.0 == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cells_cover_a_realistic_fraction(seed):
    model = SyntheticModel(shape=(256, 256), seed=seed)
    bodies = model.cell_signal("B03", 1, "Actin")
    nuclei = model.cell_signal("B03", 1, "DNA")
    body_cover = (bodies > 0.1 * bodies.max()).mean()
    nucleus_cover = (nuclei > 0.1 * nuclei.max()).mean()
    assert 0.05 <= body_cover <= 0.22
    assert 0.01 <= nucleus_cover < body_cover
    # Nuclei lie inside cell bodies.
    inside = bodies[nuclei > 0.1 * nuclei.max()] > 0.1 * bodies.max()
    assert inside.mean() > 0.98


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(bit_depth=11), "bit_depth"),
        (dict(shape=(8, 64)), "shape"),
        (dict(channels=("DNA", "DNA")), "channels"),
        (dict(sites=0), "sites"),
        (dict(seed=-1), "seed"),
    ],
)
def test_bad_arguments_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        SyntheticModel(**kwargs)
    assert "\n" not in str(error.value)


WELL_96 = r"[A-H](0[1-9]|1[0-2])"
WELL_384 = r"[A-P](0[1-9]|1[0-9]|2[0-4])"


def test_default_and_in_plate_well_names_are_kept():
    assert SyntheticModel().wells == tuple(f"{r}{c:02d}" for r in "BC" for c in (3, 4, 5))
    assert well_names("B", (2, 11)) == ("B02", "B11")


@pytest.mark.parametrize("rows, cols, pattern", [
    ("B", range(2, 14), WELL_96),      # 12 columns from 2: B13 does not exist on a 96-well plate
    ("BC", range(1, 14), WELL_96),     # B13 must not collide with the requested C01
    ("H", range(1, 13), WELL_96),
    ("BCDEFGH", range(1, 21), WELL_384),  # 140 wells: a 384-well plate, columns up to 24 exist
    ("B", range(1, 300), WELL_384),
])
def test_any_number_of_wells_gets_valid_unique_names(rows, cols, pattern):
    names = well_names(rows, cols)
    assert len(names) == len(set(names)) == len(rows) * len(cols)
    assert all(re.fullmatch(pattern, name) for name in names), names
    assert all(GPUILLUM.regex.fullmatch(f"P/{name}_s1_DNA.tif") for name in names)
    assert names == well_names(rows, cols)
    kept = {f"{r}{c:02d}" for r in rows for c in cols if re.fullmatch(pattern, f"{r}{c:02d}")}
    assert kept <= set(names)  # wells that exist keep their names


def test_demo_sized_plate_wraps_past_column_12(tmp_path):
    plate = make_synthetic_plate(tmp_path, rows="B", cols=range(2, 14), sites=1, channels=("DNA",), shape=(16, 16))
    wells = sorted(p.name.split("_")[0] for p in plate.images)
    assert "B13" not in wells and wells[-1] == "C01" and len(wells) == 12


def test_wells_beyond_the_largest_plate_or_bad_rows_raise():
    with pytest.raises(ValueError, match="do not fit a 1536-well plate"):
        well_names("A", range(1, 1600))
    with pytest.raises(ValueError, match="rows: expected well-row letters"):
        well_names(["B2"], (1,))
    with pytest.raises(ValueError, match="cols: expected column numbers >= 1"):
        well_names("B", (0, 1))
