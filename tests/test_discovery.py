"""Plate discovery: layouts, user patterns, grouping and the problems a plate can have."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile

from gpuillum.inputs.discovery import discover
from gpuillum.inputs.records import ImageRecord, Plan, natural_key
from gpuillum.inputs.layouts import LAYOUTS, row_name

UUID = "A1B2C3D4-0000-1111-2222-333344445555"


def _tiff(root, relpath, shape=(8, 8), dtype=np.uint16):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros(shape, dtype))
    return path


def _fields(record: ImageRecord):
    return (record.plate, record.well, record.site, record.channel, record.z, record.t)


def _by_relpath(plan: Plan):
    return {record.relpath: _fields(record) for record in plan.records}


# --- built-in layouts -----------------------------------------------------------------------


def test_gpuillum_layout_auto_detected_and_grouped(tmp_path):
    names = [f"DEMO/{well}_s{site}_{channel}.tif" for well in ("B03", "A10", "A02") for site in (1, 2, 10) for channel in ("DNA", "Actin")]
    for name in names:
        _tiff(tmp_path, name)
    plan = discover(tmp_path)
    assert plan.layout == "gpuillum" and "auto-detected" in plan.source
    assert plan.problems == []
    assert plan.ok
    assert plan.plates == ["DEMO"] and plan.channels == ["Actin", "DNA"]
    assert _by_relpath(plan)["DEMO/B03_s2_DNA.tif"] == ("DEMO", "B03", "2", "DNA", None, None)
    groups = plan.groups()
    assert list(groups) == [("DEMO", "Actin"), ("DEMO", "DNA")]
    order = [(r.well, r.site) for r in groups[("DEMO", "DNA")]]
    assert order == [(w, s) for w in ("A02", "A10", "B03") for s in ("1", "2", "10")]
    assert all(r.path == tmp_path / r.relpath for r in plan.records)
    assert plan.shapes == {("DEMO", "Actin"): ((8, 8), "uint16"), ("DEMO", "DNA"): ((8, 8), "uint16")}


def test_imagexpress_layout(tmp_path):
    files = {
        f"Plate1/TimePoint_1/Plate1_B03_s2_w1{UUID}.tif": ("Plate1", "B03", "2", "1", None, "1"),
        f"Plate1/TimePoint_1/Plate1_B03_s2_w2{UUID}.tif": ("Plate1", "B03", "2", "2", None, "1"),
        "Plate1/TimePoint_2/ZStep_3/Plate1_B03_s2_w1.tif": ("Plate1", "B03", "2", "1", "3", "2"),
        "Plate1/TimePoint_2/ZStep_3/Plate1_B03_s2_w2.tif": ("Plate1", "B03", "2", "2", "3", "2"),
        "Plate2/2024-01-01/1234/My Screen_P24_w12.TIF": ("Plate2", "P24", "1", "12", None, None),
    }
    for name in files:
        _tiff(tmp_path, name)
    thumbnail = f"Plate1/TimePoint_1/Plate1_B03_s2_w1_thumb{UUID}.tif"
    _tiff(tmp_path, thumbnail)
    plan = discover(tmp_path, check_headers=False)
    assert plan.layout == "imagexpress"
    assert _by_relpath(plan) == files
    assert plan.skipped == [thumbnail]
    assert not any("thumb" in problem for problem in plan.problems)


@pytest.mark.parametrize("layout, relpath, fields", [
    ("gpuillum", "P1/B03_s2_DNA.ome.tif", ("P1", "B03", "2", "DNA", None, None)),
    ("imagexpress", "P1/TimePoint_1/P1_B03_s2_w1.ome.tiff", ("P1", "B03", "2", "1", None, "1")),
    ("operetta", "P1/Images/r02c03f02p01-ch1sk1fk1fl1.OME.TIFF", ("P1", "B03", "2", "1", "1", "1")),
])
def test_layouts_name_ome_tiff_files(tmp_path, layout, relpath, fields):
    _tiff(tmp_path, relpath)
    plan = discover(tmp_path, check_headers=False)
    assert plan.layout == layout and _by_relpath(plan) == {relpath: fields} and plan.problems == []


def test_imagexpress_single_wavelength_names_are_channel_1(tmp_path):
    # MetaXpress leaves out _w<n> when one wavelength was acquired
    files = {
        f"Plate1/TimePoint_1/Plate1_B03_s2{UUID}.tif": ("Plate1", "B03", "2", "1", None, "1"),
        "Plate1/TimePoint_1/Plate1_B04_s1.TIF": ("Plate1", "B04", "1", "1", None, "1"),
        "Plate1/TimePoint_1/Plate1_C05.tif": ("Plate1", "C05", "1", "1", None, "1"),
    }
    for name in files:
        _tiff(tmp_path, name)
    plan = discover(tmp_path, check_headers=False)
    assert plan.layout == "imagexpress" and _by_relpath(plan) == files and plan.problems == []


def test_only_thumbnails_is_a_problem(tmp_path):
    _tiff(tmp_path, f"P/P_B03_s1_w1_thumb{UUID}.tif")
    plan = discover(tmp_path, layout="imagexpress")
    assert plan.records == [] and len(plan.skipped) == 1
    assert plan.problems == [f"no TIFF files (*.tif, *.tiff) under {tmp_path.absolute()} (1 thumbnails skipped)"]


def test_imagexpress_files_directly_in_input_take_input_folder_name(tmp_path):
    _tiff(tmp_path / "Screen7", "TimePoint_1/Screen_C05_s1_w1.tif")
    plan = discover(tmp_path / "Screen7", layout="imagexpress", check_headers=False)
    assert [_fields(r) for r in plan.records] == [("Screen7", "C05", "1", "1", None, "1")]


@pytest.mark.parametrize("name", ["operetta", "opera", "phenix", "Phenix"])
def test_harmony_layout_and_aliases(tmp_path, name):
    files = {
        "Plate1/Images/r02c03f04p01-ch1sk1fk1fl1.tiff": ("Plate1", "B03", "4", "1", "1", "1"),
        "Plate1/Images/r02c03f04p01-ch2sk1fk1fl1.tiff": ("Plate1", "B03", "4", "2", "1", "1"),
        "Plate1/Images/r16c24f10p02-ch1sk3fk1fl1.tiff": ("Plate1", "P24", "10", "1", "2", "3"),
        "Plate1/Images/r16c24f10p02-ch2sk3fk1fl1.tiff": ("Plate1", "P24", "10", "2", "2", "3"),
    }
    for relpath in files:
        _tiff(tmp_path, relpath)
    plan = discover(tmp_path, layout=name, check_headers=False)
    assert plan.layout == "operetta"
    assert _by_relpath(plan) == files
    assert plan.problems == []
    assert discover(tmp_path, check_headers=False).layout == "operetta"


def test_harmony_images_folder_is_not_a_plate(tmp_path):
    _tiff(tmp_path / "Run_3", "Images/r01c01f01p01-ch1sk1fk1fl1.tiff")
    plan = discover(tmp_path / "Run_3", layout="operetta", check_headers=False)
    assert [_fields(r) for r in plan.records] == [("Run_3", "A01", "1", "1", "1", "1")]


def test_layout_examples_match_their_own_regex():
    for layout in LAYOUTS.values():
        assert layout.regex.fullmatch(layout.example), layout.name


@pytest.mark.parametrize("number, letters", [("1", "A"), ("2", "B"), ("26", "Z"), ("27", "AA"), ("32", "AF"), ("c", "C")])
def test_row_name(number, letters):
    assert row_name(number) == letters


def test_auto_detection_picks_the_layout_naming_most_files(tmp_path):
    for site in (1, 2, 3):
        _tiff(tmp_path, f"P/P_B03_s{site}_w1.tif")
    _tiff(tmp_path, "P/B03_s1_DNA.tif")
    plan = discover(tmp_path, check_headers=False)
    assert plan.layout == "imagexpress"
    assert plan.source.endswith("names 3 of 4 TIFF files")
    assert plan.problems == ["P/B03_s1_DNA.tif: not matched by the layout 'imagexpress'; left out"]


def test_a_folder_no_layout_names_is_read_as_images_of_one_kind(tmp_path):
    _tiff(tmp_path, "random_name.tif")
    _tiff(tmp_path, "other.tif")
    plan = discover(tmp_path)
    assert plan.layout is None and plan.problems == [] and plan.source.startswith("a folder of images without a plate layout")
    assert [(r.relpath, r.plate, r.channel, r.site, r.page) for r in plan.records] == [
        ("other.tif", tmp_path.name, "1", "other", None), ("random_name.tif", tmp_path.name, "1", "random_name", None)]


def test_no_tiff_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    plan = discover(tmp_path)
    assert plan.records == [] and not plan.ok
    assert plan.problems == [f"no TIFF files (*.tif, *.tiff) under {tmp_path.absolute()}"]


def test_hidden_files_and_excluded_folders_are_ignored(tmp_path):
    _tiff(tmp_path, "DEMO/B03_s1_DNA.tif")
    _tiff(tmp_path, "DEMO/._B03_s1_DNA.tif")
    _tiff(tmp_path, ".snapshot/DEMO/B03_s1_DNA.tif")
    _tiff(tmp_path, "out/DEMO/B03_s1_DNA.tif")
    plan = discover(tmp_path, exclude=[tmp_path / "out"])
    assert [r.relpath for r in plan.records] == ["DEMO/B03_s1_DNA.tif"]
    assert plan.problems == []


# --- user patterns ----------------------------------------------------------------------------


def test_pattern_full_relpath_with_all_groups(tmp_path):
    _tiff(tmp_path, "run1/PL7/t03/z02/B03-f01-GFP.tif")
    pattern = r"run1/(?P<plate>\w+)/t(?P<t>\d+)/z(?P<z>\d+)/(?P<well>[A-P]\d{2})-f(?P<site>\d+)-(?P<channel>\w+)\.tif"
    plan = discover(tmp_path, pattern=pattern)
    assert [_fields(r) for r in plan.records] == [("PL7", "B03", "1", "GFP", "2", "3")]
    assert plan.layout is None and plan.source == f"pattern {pattern}"


def test_pattern_defaults_plate_from_first_folder_or_input_name_and_site_one(tmp_path):
    root = tmp_path / "Exp2024"
    _tiff(root, "PlateA/sub/B03_DNA.tif")
    _tiff(root, "B04_DNA.tif")
    plan = discover(root, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>\w+)\.tif")
    assert _by_relpath(plan) == {
        "PlateA/sub/B03_DNA.tif": ("PlateA", "B03", "1", "DNA", None, None),
        "B04_DNA.tif": ("Exp2024", "B04", "1", "DNA", None, None),
    }


@pytest.mark.parametrize("folder, plate", [("My Plate #3", "My_Plate_3"), ("run.2-b", "run.2-b"), (".hidden plate!", "hidden_plate"), ("###", "plate")])
def test_input_folder_name_is_sanitised_into_the_plate_name(tmp_path, folder, plate):
    _tiff(tmp_path / folder, "B04_DNA.tif")
    plan = discover(tmp_path / folder, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>\w+)\.tif", check_headers=False)
    assert [r.plate for r in plan.records] == [plate]


def test_pattern_must_match_whole_path_or_whole_name(tmp_path):
    _tiff(tmp_path, "P/B03_DNA_extra.tif")
    plan = discover(tmp_path, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>[A-Z]+)")
    assert plan.records == []
    assert "P/B03_DNA_extra.tif: not matched by the pattern; left out" in plan.problems


def test_pattern_with_row_and_col_groups(tmp_path):
    _tiff(tmp_path / "P9", "r3c7_ch2.tif")
    plan = discover(tmp_path / "P9", pattern=r"r(?P<row>\d+)c(?P<col>\d+)_ch(?P<channel>\d)\.tif")
    assert [_fields(r) for r in plan.records] == [("P9", "C07", "1", "2", None, None)]


def test_optional_plate_group_not_taking_part_gives_input_folder_name(tmp_path):
    _tiff(tmp_path / "Batch1", "X/B03_DNA.tif")
    plan = discover(tmp_path / "Batch1", pattern=r"(?:(?P<plate>P\d)/)?.*?(?P<well>[A-P]\d{2})_(?P<channel>\w+)\.tif")
    assert [_fields(r) for r in plan.records] == [("Batch1", "B03", "1", "DNA", None, None)]


def test_ignore_unmatched_lets_a_pattern_select_a_subset(tmp_path):
    for name in ("P/B03_s1_DNA.tif", "P/B03_s1_Actin.tif", "P/B04_s1_DNA.tif", "P/B04_s1_Actin.tif"):
        _tiff(tmp_path, name)
    pattern = r"(?P<well>B\d\d)_s(?P<site>\d)_(?P<channel>DNA)\.tif"
    plan = discover(tmp_path, pattern=pattern, ignore_unmatched=True)
    assert plan.ok and plan.channels == ["DNA"] and len(plan.records) == 2
    assert plan.ignored == ["P/B03_s1_Actin.tif", "P/B04_s1_Actin.tif"] and plan.problems == []
    assert "2 files not named by the pattern, ignored as asked (--ignore-unmatched), such as P/B03_s1_Actin.tif" in plan.summary()
    strict = discover(tmp_path, pattern=pattern)
    assert strict.ignored == [] and strict.problems == [f"P/B0{w}_s1_Actin.tif: not matched by the pattern; left out" for w in (3, 4)]
    nothing = discover(tmp_path, pattern=r"(?P<well>Z\d\d)_s(?P<site>\d)_(?P<channel>\w+)\.tif", ignore_unmatched=True)
    assert nothing.problems == [f"the pattern names none of the 4 TIFF files under {tmp_path.absolute()}"]
    layout = discover(tmp_path, layout="imagexpress", ignore_unmatched=True)
    assert layout.records == [] and len(layout.ignored) == 4 and "not named by the layout" in layout.summary()
    with pytest.raises(ValueError, match=r"ignore_unmatched \(--ignore-unmatched\): a LoadData CSV names its files itself"):
        discover(tmp_path, loaddata=tmp_path / "load_data.csv", ignore_unmatched=True)


def test_site_numbers_lose_leading_zeros_and_duplicates_are_reported(tmp_path):
    _tiff(tmp_path, "P/B03_s1_DNA.tif")
    _tiff(tmp_path, "P/B03_s01_DNA.tif")
    plan = discover(tmp_path, layout="gpuillum")
    assert [r.relpath for r in plan.records] == ["P/B03_s01_DNA.tif"]
    assert plan.problems == [
        "P/B03_s1_DNA.tif: duplicate of P/B03_s01_DNA.tif (plate P, well B03, site 1, channel DNA); left out"
    ]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pattern": "(?P<well>[A-Z"}, "pattern: invalid regular expression"),
        ({"pattern": r"(?P<well>\w+)\.tif"}, "pattern: needs the named groups channel and well"),
        ({"pattern": r"(?P<row>\w)_(?P<channel>\w+)\.tif"}, "pattern: needs the named groups"),
        ({"layout": "metamorph"}, "layout: unknown layout 'metamorph'; expected one of gpuillum, imagexpress, operetta, opera, phenix"),
        ({"layout": "gpuillum", "pattern": "(?P<well>x)(?P<channel>y)"}, "give at most one of pattern, layout, loaddata"),
    ],
)
def test_bad_arguments_raise_one_line_value_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        discover(tmp_path, **kwargs)
    assert "\n" not in str(caught.value)


def test_input_must_be_a_directory(tmp_path):
    with pytest.raises(ValueError, match="input_dir: .* is not a directory"):
        discover(tmp_path / "missing")


# --- header checks and completeness -------------------------------------------------------------


def test_shape_and_dtype_mismatches_are_left_out(tmp_path):
    for site in (1, 2, 3):
        _tiff(tmp_path, f"P/B03_s{site}_DNA.tif")
    _tiff(tmp_path, "P/B03_s4_DNA.tif", shape=(16, 8))
    _tiff(tmp_path, "P/B03_s5_DNA.tif", dtype=np.uint8)
    plan = discover(tmp_path)
    assert [r.site for r in plan.records] == ["1", "2", "3"]
    assert plan.shapes[("P", "DNA")] == ((8, 8), "uint16")
    assert plan.problems == [
        "P/B03_s4_DNA.tif: 16x8 uint16 differs from the 3 other images of plate P, channel DNA (8x8 uint16); left out",
        "P/B03_s5_DNA.tif: 8x8 uint8 differs from the 3 other images of plate P, channel DNA (8x8 uint16); left out",
    ]


def test_unreadable_headers_are_reported_unless_headers_are_skipped(tmp_path):
    _tiff(tmp_path, "P/B03_s1_DNA.tif")
    (tmp_path / "P" / "B03_s2_DNA.tif").write_bytes(b"II*\x00garbage")
    plan = discover(tmp_path)
    assert [r.site for r in plan.records] == ["1"]
    assert len(plan.problems) == 1
    assert plan.problems[0].startswith("P/B03_s2_DNA.tif: unreadable (") and plan.problems[0].endswith("; left out")
    assert len(discover(tmp_path, check_headers=False).records) == 2


def test_missing_channels_are_reported(tmp_path):
    for plate in ("P1", "P2"):
        for site in (1, 2):
            _tiff(tmp_path, f"{plate}/B03_s{site}_DNA.tif")
    _tiff(tmp_path, "P1/B03_s1_Actin.tif")
    plan = discover(tmp_path)
    assert plan.problems == [
        "plate P2: no images of channel Actin (other plates have it)",
        "plate P1, well B03, site 2: missing channel Actin",
    ]
    assert len(plan.records) == 5


def test_every_image_bad_says_no_usable_images(tmp_path):
    (tmp_path / "P").mkdir()
    (tmp_path / "P" / "B03_s1_DNA.tif").write_bytes(b"not a tiff")
    plan = discover(tmp_path, layout="gpuillum")
    assert plan.records == []
    assert plan.problems[-1].startswith("no usable images under")


def test_summary_names_plates_channels_counts_shapes_and_problems(tmp_path):
    for well in ("B03", "B04"):
        for channel in ("DNA", "Actin"):
            _tiff(tmp_path, f"DEMO/{well}_s1_{channel}.tif", shape=(12, 10))
    _tiff(tmp_path, "DEMO/B05_s1_DNA.tif", shape=(4, 4))
    _tiff(tmp_path, "DEMO/stray.tif")
    plan = discover(tmp_path)
    text = plan.summary()
    assert "layout gpuillum" in text
    assert "4 images, 1 plate, 2 channels: Actin, DNA" in text
    assert "plate DEMO, channel DNA: 2 images, 2 wells x 1 site, 12x10 uint16" in text
    assert "2 problems:" in text
    for problem in plan.problems:
        assert problem in text
    short = plan.summary(max_problems=1)
    assert plan.problems[0] in short and plan.problems[1] not in short and "... and 1 more problem lines" in short


def test_summary_counts_uneven_sites_per_well(tmp_path):
    for well, sites in (("B03", 3), ("B04", 1)):
        for site in range(1, sites + 1):
            _tiff(tmp_path, f"DEMO/{well}_s{site}_DNA.tif")
    text = discover(tmp_path, check_headers=False).summary()
    assert "plate DEMO, channel DNA: 4 images, 4 sites in 2 wells" in text


def test_summary_groups_repeated_problems_but_plan_keeps_one_per_file(tmp_path):
    names = [f"stray{i:02d}.tif" for i in range(12)]
    for name in names:
        _tiff(tmp_path, f"P/{name}")
    _tiff(tmp_path, "P/B03_DNA.tif")
    plan = discover(tmp_path, pattern=r"(?P<well>[A-P]\d{2})_(?P<channel>\w+)\.tif", check_headers=False)
    assert plan.problems == [f"P/{name}: not matched by the pattern; left out" for name in names]
    text = plan.summary()
    assert text.count("not matched") == 1
    first = ", ".join(f"P/{name}" for name in names[:5])
    assert f"12 problems:\n  - 12 files: not matched by the pattern (first 5: {first}); left out" in text
    assert "P/stray05.tif" not in text


def test_summary_groups_duplicates_and_missing_channels(tmp_path):
    for site in (1, 2, 3):
        _tiff(tmp_path, f"P/B03_s{site}_DNA.tif")
        _tiff(tmp_path, f"P/B03_s0{site}_DNA.tif")
    _tiff(tmp_path, "P/B03_s1_Actin.tif")
    plan = discover(tmp_path, layout="gpuillum", check_headers=False)
    assert len(plan.problems) == 5
    lines = plan.summary().splitlines()
    assert "  - 3 files: duplicates of other files (same plate, well, site, channel) (first 3: P/B03_s1_DNA.tif, P/B03_s2_DNA.tif, P/B03_s3_DNA.tif); left out" in lines
    assert "  - 2 sites: missing channel Actin (first 2: plate P, well B03, site 2; plate P, well B03, site 3)" in lines


def test_natural_key_orders_numbers_by_value():
    assert sorted(["A10", "A2", "B1", None, "A1"], key=natural_key) == [None, "A1", "A2", "A10", "B1"]


# --- real plates ----------------------------------------------------------------------------------


@pytest.mark.data
def test_real_nf1_plate_with_a_pattern(data_set):
    plan = discover(data_set("nf1_cellpainting_plate2"), pattern=r"(?P<well>[A-P]\d+)_01_\d_\d_(?P<channel>[A-Z]+)_001\.tif")
    assert plan.problems == []
    assert plan.channels == ["DAPI", "GFP", "RFP"]
    groups = plan.groups()
    assert all(len(records) == 5 for records in groups.values())
    assert [r.well for r in groups[("nf1_cellpainting_plate2", "DAPI")]] == ["B7", "D6", "D7", "F7", "H12"]
    assert set(plan.shapes.values()) == {((904, 1224), "uint16")}


@pytest.mark.data
def test_real_bbbc016_plate_with_a_pattern(data_set):
    plan = discover(data_set("bbbc016_gfp_f00_24wells"), pattern=r"AS_09047_(?P<plate>\d+)_(?P<well>O\d{2})f(?P<site>\d+)d(?P<channel>\d)\.TIF")
    assert plan.problems == []
    assert list(plan.groups()) == [("050428030001", "2")]
    assert [r.well for r in plan.records] == [f"O{n:02d}" for n in range(1, 25)]
    assert all(r.site == "0" for r in plan.records)
    assert plan.shapes == {("050428030001", "2"): ((512, 512), "uint8")}


# --- hostile inputs (issue 17) ----------------------------------------------------------------


def test_a_fifo_named_like_an_image_is_a_problem_naming_it_not_a_hang(tmp_path):
    # case 2: opening a FIFO for reading blocks until a writer comes; only regular files are images
    import os

    from gpuillum.io.tiff import ImageReadError, read_tiff, read_tiff_info

    _tiff(tmp_path, "P1/B02_s1_DNA.tif")
    _tiff(tmp_path, "P1/B02_s2_DNA.tif")
    fifo = tmp_path / "P1" / "B02_s3_DNA.tif"
    os.mkfifo(fifo)
    plan = discover(tmp_path, layout="gpuillum")
    assert [r.relpath for r in plan.records] == ["P1/B02_s1_DNA.tif", "P1/B02_s2_DNA.tif"]
    assert plan.problems == ["P1/B02_s3_DNA.tif: unreadable (a FIFO, not a regular file); left out"]
    for read in (read_tiff, read_tiff_info):
        with pytest.raises(ImageReadError, match=re.escape(f"{fifo}: a FIFO, not a regular file")):
            read(fifo)
    with pytest.raises(ImageReadError, match="is a directory, not a TIFF file"):
        read_tiff(tmp_path / "P1")
