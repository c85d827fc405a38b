"""Bad input: one line naming the file and the problem, exit code 2, no traceback, nothing written
inside INPUT; --on-error skip goes on and lists what it skipped; Ctrl-C exits 130 and leaves no
partial files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main

from test_engine import write_plate

ARGS = ["--preset", "jump", "--resize-factor", "0.5", "--filter-size", "6", "--device", "cpu", "-q"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def assert_one_line_error(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gpuillum: error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def corrupt(path):
    path.write_bytes(b"II*\x00" + b"\x13" * 40)


@pytest.mark.parametrize("problem, needles", [
    ("corrupt", ("P1/B02_s1_DNA.tif", "unreadable")),
    ("truncated", ("P1/B02_s1_DNA.tif",)),
    ("shape", ("P1/B02_s1_DNA.tif", "60x80", "differs")),
    ("dtype", ("P1/B02_s1_DNA.tif", "uint8", "differs")),
    ("empty channel", ("channel Actin",)),
    ("missing file", ("well B02, site 1", "missing channel")),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, problem, needles):
    write_plate(tmp_path / "in", plates=("P1", "P2"))
    target = tmp_path / "in" / "P1" / "B02_s1_DNA.tif"
    if problem == "corrupt":
        corrupt(target)
    elif problem == "truncated":
        target.write_bytes(target.read_bytes()[:-200])
    elif problem == "shape":
        tifffile.imwrite(target, np.zeros((60, 80), np.uint16))
    elif problem == "dtype":
        tifffile.imwrite(target, np.zeros((64, 80), np.uint8))
    elif problem == "empty channel":
        for path in (tmp_path / "in" / "P1").glob("*_Actin.tif"):
            path.unlink()
    elif problem == "missing file":
        (tmp_path / "in" / "P1" / "B02_s1_Actin.tif").unlink()
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, *needles)
    assert not (tmp_path / "out" / "corrected").exists()


def test_missing_loaddata_csv_and_missing_listed_file(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--loaddata", str(tmp_path / "nope.csv"), *ARGS)
    assert code == 2
    assert_one_line_error(err, "nope.csv", "no such file")
    csv = tmp_path / "list.csv"
    folder = tmp_path / "in" / "P1"
    csv.write_text("FileName_DNA,PathName_DNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
                   f"B02_s1_DNA.tif,{folder},P1,B02,1\nB09_s1_DNA.tif,{folder},P1,B09,1\n")
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--loaddata", str(csv), *ARGS)
    assert code == 2
    assert_one_line_error(err, "B09_s1_DNA.tif", "missing")


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_inside_or_equal_to_input_is_refused(tmp_path, capsys, where):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    before = sorted(p.name for p in (tmp_path / "in").rglob("*"))
    out = tmp_path / "in" if where == "same" else tmp_path / "in" / "P1" / "out"
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(out), *ARGS)
    assert code == 2
    assert_one_line_error(err, str(out))
    assert sorted(p.name for p in (tmp_path / "in").rglob("*")) == before


def test_unwritable_out(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(blocker / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, str(blocker / "out"), "cannot create")


def test_bad_option_values_exit_2(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--resize-factor", "3", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "resize_factor")
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--background", "median", *ARGS)
    assert code == 2
    assert_one_line_error(err, "--background-radius")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--smoothing", "wobbly"])
    assert exit_info.value.code == 2


def test_on_error_skip_lists_skipped_files(tmp_path, capsys):
    images = write_plate(tmp_path / "in")
    corrupt(tmp_path / "in" / "P1" / "B02_s1_DNA.tif")
    tifffile.imwrite(tmp_path / "in" / "P1" / "C03_s2_Actin.tif", np.zeros((64, 81), np.uint16))
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip", *ARGS)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    skipped = {entry["path"] for entry in manifest["skipped"]}
    assert {"P1/B02_s1_DNA.tif", "P1/C03_s2_Actin.tif"} <= skipped
    written = {p.relative_to(tmp_path / "out" / "corrected").as_posix() for p in (tmp_path / "out" / "corrected").rglob("*.tif")}
    assert written == set(images) - {"P1/B02_s1_DNA.tif", "P1/C03_s2_Actin.tif"}


def test_decode_failure_after_discovery_is_named(tmp_path, capsys, monkeypatch):
    """A file whose header is fine but whose pixels cannot be decoded stops the pass with its name."""
    write_plate(tmp_path / "in", wells=("B02", "B03"), sites=1)
    import gpuillum.io.tiff as tiff

    real = tiff.read_tiff

    def failing(path):
        if str(path).endswith("B03_s1_DNA.tif"):
            raise tiff.ImageReadError(path, "corrupt or unreadable TIFF (decode error)")
        return real(path)

    monkeypatch.setattr(tiff, "read_tiff", failing)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, "B03_s1_DNA.tif", "decode error")
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--on-error", "skip", *ARGS)
    assert code == 0
    manifest = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert [entry["path"] for entry in manifest["skipped"]] == ["P1/B03_s1_DNA.tif"]


def test_ctrl_c_exits_130_without_partial_files(tmp_path, capsys, monkeypatch):
    write_plate(tmp_path / "in")
    import gpuillum.io.tiff as tiff

    real, calls = tiff.tifffile.imwrite, []

    def interrupted(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # mid-write: half a file exists under its temporary name
            with open(path, "wb") as handle:
                handle.write(b"II*\x00partial")
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tiff.tifffile, "imwrite", interrupted)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1", *ARGS)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
    for path in (tmp_path / "out" / "corrected").rglob("*.tif"):
        tifffile.imread(path)  # every file present is complete
