"""CellProfiler LoadData CSVs: reading, writing, and discovery from a CSV."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from gpuillum.inputs.discovery import discover
from gpuillum.inputs.loaddata import loaddata_rows, read_loaddata, write_loaddata_csv


def _tiff(root, relpath):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.zeros((4, 4), np.uint16))
    return path


def _fields(record):
    return (record.relpath, record.plate, record.well, record.site, record.channel, record.z, record.t)


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_round_trip_through_discovery(tmp_path):
    for plate in ("P1", "P2"):
        for well in ("B03", "B10"):
            for site in (1, 2):
                for channel in ("DNA", "Actin"):
                    _tiff(tmp_path / "in", f"{plate}/{well}_s{site}_{channel}.tif")
    plan = discover(tmp_path / "in")
    rows = loaddata_rows(plan.records)
    assert len(rows) == 2 * 2 * 2  # one row per site, channels as columns
    csv_path = tmp_path / "load_data.csv"
    write_loaddata_csv(csv_path, rows)
    records = read_loaddata(csv_path, base_dir=tmp_path / "in")
    assert sorted(map(_fields, records)) == sorted(map(_fields, plan.records))
    assert {r.path for r in records} == {r.path for r in plan.records}
    again = discover(tmp_path / "in", loaddata=csv_path)
    assert again.problems == [] and again.source.startswith("LoadData CSV")
    assert [_fields(r) for r in again.records] == [_fields(r) for r in plan.records]


def test_written_csv_is_cellprofiler_shaped(tmp_path):
    _tiff(tmp_path, "P/B03_s1_DNA.tif")
    _tiff(tmp_path, "P/B03_s1_Actin.tif")
    plan = discover(tmp_path)
    out = tmp_path / "out" / "corrected.csv"
    write_loaddata_csv(out, loaddata_rows(plan.records, path_of=lambda r: tmp_path / "out" / r.relpath))
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{
        "Metadata_Plate": "P", "Metadata_Well": "B03", "Metadata_Site": "1",
        "FileName_Actin": "B03_s1_Actin.tif", "PathName_Actin": str(tmp_path / "out" / "P"),
        "FileName_DNA": "B03_s1_DNA.tif", "PathName_DNA": str(tmp_path / "out" / "P"),
    }]
    assert sorted(p.name for p in out.parent.iterdir()) == ["corrected.csv"]


def test_z_and_t_columns_only_when_present(tmp_path):
    _tiff(tmp_path, "Plate1/Images/r02c03f01p02-ch1sk3fk1fl1.tiff")
    plan = discover(tmp_path)
    rows = loaddata_rows(plan.records)
    assert rows[0]["Metadata_Z"] == "2" and rows[0]["Metadata_T"] == "3"
    write_loaddata_csv(tmp_path / "l.csv", rows)
    assert [(r.z, r.t) for r in read_loaddata(tmp_path / "l.csv", base_dir=tmp_path)] == [("2", "3")]


def test_relative_paths_resolve_against_the_csv_folder_by_default(tmp_path):
    _tiff(tmp_path, "images/a.tif")
    csv_path = _write_csv(tmp_path / "l.csv", ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "FileName_DNA", "PathName_DNA"],
                          [["P", "A01", "03", "a.tif", "images"]])
    (record,) = read_loaddata(csv_path)
    assert record.path == tmp_path / "images" / "a.tif"
    assert _fields(record) == ("images/a.tif", "P", "A01", "3", "DNA", None, None)


def test_defaults_row_col_wells_urls_and_empty_cells(tmp_path):
    a = _tiff(tmp_path, "PlateX/a.tif")
    b = _tiff(tmp_path, "PlateX/b.tif")
    csv_path = _write_csv(
        tmp_path / "l.csv",
        ["Metadata_Row", "Metadata_Column", "FileName_DNA", "PathName_DNA", "URL_GFP"],
        [["2", "3", "a.tif", str(tmp_path / "PlateX"), b.as_uri()], ["C", "4", "", "", a.as_uri()]],
    )
    records = read_loaddata(csv_path)
    assert [_fields(r) for r in records] == [
        ("PlateX/a.tif", "PlateX", "B03", "1", "DNA", None, None),
        ("PlateX/b.tif", "PlateX", "B03", "1", "GFP", None, None),
        ("PlateX/a.tif", "PlateX", "C04", "1", "GFP", None, None),
    ]


def test_other_metadata_columns_are_carried_into_the_written_rows(tmp_path):
    for name in ("a", "b", "c"):
        _tiff(tmp_path, f"P/{name}.tif")
    header = ["Metadata_Plate", "Metadata_Row", "Metadata_Col", "Metadata_Compound", "FileName_DNA", "PathName_DNA", "FileName_GFP", "PathName_GFP"]
    csv_path = _write_csv(tmp_path / "l.csv", header, [["P", "B", "3", "DMSO", "a.tif", "P", "b.tif", "P"],
                                                       ["P", "B", "4", "taxol, 1 uM", "c.tif", "P", "", ""]])
    records = read_loaddata(csv_path)
    expected = {"B03": {"Metadata_Row": "B", "Metadata_Col": "3", "Metadata_Compound": "DMSO"},
                "B04": {"Metadata_Row": "B", "Metadata_Col": "4", "Metadata_Compound": "taxol, 1 uM"}}
    assert [(r.relpath, dict(r.metadata)) for r in records] == [("P/a.tif", expected["B03"]), ("P/b.tif", expected["B03"]),
                                                                ("P/c.tif", expected["B04"])]
    rows = loaddata_rows(records)
    assert [list(row)[:6] for row in rows] == [["Metadata_Plate", "Metadata_Well", "Metadata_Site", *expected["B03"]]] * 2
    write_loaddata_csv(tmp_path / "out.csv", rows)
    again = read_loaddata(tmp_path / "out.csv", base_dir=tmp_path)
    assert [dict(r.metadata) for r in again] == [dict(r.metadata) for r in records]  # Metadata_Well written, Row/Col kept


def test_excel_bom_is_accepted(tmp_path):
    _tiff(tmp_path, "a.tif")
    (tmp_path / "l.csv").write_bytes("Metadata_Well,FileName_DNA\nA01,a.tif\n".encode("utf-8-sig"))
    (record,) = read_loaddata(tmp_path / "l.csv")
    assert (record.plate, record.well, record.channel) == (tmp_path.name, "A01", "DNA")


def test_plates_without_metadata_are_named_after_their_folder(tmp_path):
    base = tmp_path / "Screen 7 (day 2)"
    _tiff(base, "a.tif")
    _tiff(base / "Plate #4", "b.tif")
    (base / "l.csv").write_text("Metadata_Well,FileName_DNA,PathName_DNA\nA01,a.tif,\nA02,b.tif,Plate #4\n")
    first, second = read_loaddata(base / "l.csv")
    assert (first.plate, second.plate) == ("Screen_7_day_2", "Plate_4")


@pytest.mark.parametrize(
    "header, rows, message",
    [
        (["Metadata_Well", "Image_Count"], [["A01", "1"]], "no FileName_<channel> or URL_<channel> columns"),
        (["Metadata_Plate", "FileName_DNA"], [["P", "a.tif"]], "needs a Metadata_Well column"),
        (["Metadata_Well", "FileName_DNA"], [["", "a.tif"]], "line 2: empty well"),
        (["Metadata_Well", "URL_DNA"], [["A01", "https://example.org/a.tif"]], "is not a file: URL"),
    ],
)
def test_malformed_csv_raises_one_line_value_error(tmp_path, header, rows, message):
    csv_path = _write_csv(tmp_path / "l.csv", header, rows)
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        read_loaddata(csv_path)
    assert "\n" not in str(caught.value) and str(csv_path) in str(caught.value)


def test_missing_csv(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_loaddata(tmp_path / "missing.csv")


def test_discovery_reports_missing_and_outside_files(tmp_path):
    inside = _tiff(tmp_path / "in", "P/a.tif")
    outside = _tiff(tmp_path, "elsewhere/b.tif")
    csv_path = _write_csv(
        tmp_path / "l.csv",
        ["Metadata_Plate", "Metadata_Well", "FileName_DNA", "PathName_DNA"],
        [["P", "A01", inside.name, str(inside.parent)], ["P", "A02", "gone.tif", str(inside.parent)],
         ["P", "A03", outside.name, str(outside.parent)]],
    )
    plan = discover(tmp_path / "in", loaddata=csv_path)
    assert [r.well for r in plan.records] == ["A01"]
    assert plan.problems[0] == "P/gone.tif: listed in l.csv but missing; left out"
    assert plan.problems[1].startswith("../elsewhere/b.tif: listed in l.csv but outside INPUT")


def test_loaddata_with_pattern_is_refused(tmp_path):
    with pytest.raises(ValueError, match="give at most one of pattern, layout, loaddata"):
        discover(tmp_path, loaddata=tmp_path / "l.csv", pattern="(?P<well>x)(?P<channel>y)")


def test_write_needs_rows(tmp_path):
    with pytest.raises(ValueError, match="rows: expected at least one"):
        write_loaddata_csv(tmp_path / "l.csv", [])
    assert not Path(tmp_path / "l.csv").exists()


def test_write_fills_missing_keys_in_first_seen_column_order(tmp_path):
    write_loaddata_csv(tmp_path / "l.csv", [{"Metadata_Well": "A01", "FileName_DNA": "a.tif"}, {"Metadata_Well": "A02", "Extra": 5}])
    assert (tmp_path / "l.csv").read_text() == "Metadata_Well,FileName_DNA,Extra\nA01,a.tif,\nA02,,5\n"


def test_a_fifo_as_csv_or_listed_image_is_refused_not_a_hang(tmp_path):
    # issue 17, case 2: only regular files are read
    import os

    image = _tiff(tmp_path / "in", "P/a.tif")
    os.mkfifo(tmp_path / "in" / "P" / "b.tif")
    csv_path = _write_csv(tmp_path / "l.csv", ["Metadata_Plate", "Metadata_Well", "FileName_DNA", "PathName_DNA"],
                          [["P", "A01", "a.tif", str(image.parent)], ["P", "A02", "b.tif", str(image.parent)]])
    plan = discover(tmp_path / "in", loaddata=csv_path)
    assert [r.well for r in plan.records] == ["A01"]
    assert plan.problems == ["P/b.tif: listed in l.csv but a FIFO, not a regular file; left out"]
    os.mkfifo(tmp_path / "fifo.csv")
    with pytest.raises(ValueError, match=re.escape(f"loaddata: {tmp_path / 'fifo.csv'}: cannot read (") + ".*a FIFO"):
        read_loaddata(tmp_path / "fifo.csv")


def test_a_field_over_the_csv_field_limit_is_one_line_naming_the_file_and_line(tmp_path, capsys):
    # issue 17, case 6: "_csv.Error: field larger than field limit" ended in a traceback
    from gpuillum.cli import main

    _tiff(tmp_path / "in", "P/a.tif")
    csv_path = _write_csv(tmp_path / "l.csv", ["Metadata_Plate", "Metadata_Well", "FileName_DNA", "Metadata_Note"],
                          [["P", "A01", "P/a.tif", "x"], ["P", "A02", "P/a.tif", "y" * 200_000]])
    with pytest.raises(ValueError) as caught:
        read_loaddata(csv_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"loaddata: {csv_path}: line 3: ") and "field larger than field limit" in message
    assert main(["plan", str(tmp_path / "in"), "--loaddata", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"gpuillum: error: {message}"


def test_one_file_listed_under_two_sites_or_channels_is_a_problem(tmp_path):
    # issue 17, case 7: it counted twice in the function and load_data.csv named one corrected file for both
    a, b = _tiff(tmp_path / "in", "P/a.tif"), _tiff(tmp_path / "in", "P/b.tif")
    header = ["Metadata_Plate", "Metadata_Well", "Metadata_Site", "FileName_DNA", "FileName_Actin"]
    two_sites = _write_csv(tmp_path / "sites.csv", header, [["P", "A01", "1", "P/a.tif", "P/b.tif"], ["P", "A01", "2", "P/a.tif", "P/b.tif"]])
    plan = discover(tmp_path / "in", loaddata=two_sites)
    assert sorted((r.relpath, r.site) for r in plan.records) == [("P/a.tif", "1"), ("P/b.tif", "1")]
    assert sorted(plan.problems[:2]) == [
        "P/a.tif: listed twice, as plate P, well A01, site 1, channel DNA and as plate P, well A01, site 2, channel DNA; "
        "one file is one image; left out",
        "P/b.tif: listed twice, as plate P, well A01, site 1, channel Actin and as plate P, well A01, site 2, channel Actin; "
        "one file is one image; left out"]
    two_channels = _write_csv(tmp_path / "channels.csv", header, [["P", "A01", "1", "P/a.tif", "P/a.tif"]])
    plan = discover(tmp_path / "in", loaddata=two_channels)
    assert [(r.relpath, r.channel) for r in plan.records] == [("P/a.tif", "Actin")]
    assert plan.problems[0].startswith("P/a.tif: listed twice, as plate P, well A01, site 1, channel Actin and as plate P, "
                                       "well A01, site 1, channel DNA;")
    assert not plan.ok
    assert a.is_file() and b.is_file()
