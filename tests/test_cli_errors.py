"""Bad input: one line naming the file and the problem, exit code 2, no traceback, nothing written
inside INPUT; --on-error skip goes on and lists what it skipped; Ctrl-C exits 130 and leaves no
partial files."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from gpuillum.errors import InvalidType

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


def corrupt_pixels(path):
    """Garble a TIFF's compressed pixel data but not its header: discovery passes, decoding fails."""
    with tifffile.TiffFile(path) as tif:
        start, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    data = bytearray(path.read_bytes())
    data[start:start + count] = b"\x13" * count
    path.write_bytes(bytes(data))


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


@pytest.mark.parametrize("link, target", [("corrected", "."), ("corrected/P1", "P1"), ("illum", ".")],
                         ids=["corrected", "corrected-plate", "illum"])
def test_output_folder_linked_into_input_is_refused(tmp_path, capsys, link, target):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    before = {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()}
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True)
    (out / link).symlink_to((tmp_path / "in" / target).resolve(), target_is_directory=True)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(out), *ARGS)
    assert code == 2
    assert_one_line_error(err, str(out / link), "leads into the input folder")
    assert {p: p.read_bytes() for p in (tmp_path / "in").rglob("*") if p.is_file()} == before
    assert not (out / "manifest.json").exists()


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
    assert_one_line_error(err, "--resize-factor")
    assert "resize_factor" not in err
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
    # no empty path; the sites that lost a channel are left out of load_data.csv and listed with why
    assert "" not in skipped and {"P1/B02_s1_Actin.tif", "P1/C03_s2_DNA.tif"} <= skipped
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert "load_data.csv" in reasons["P1/B02_s1_Actin.tif"] and "DNA" in reasons["P1/B02_s1_Actin.tif"]
    import csv

    with open(tmp_path / "out" / "corrected" / "load_data.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(images) // 2 - 2
    assert all(row[key] for row in rows for key in row if key.startswith("FileName_"))


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
    # the unreadable file, then its site's other channel (left out of load_data.csv)
    assert [entry["path"] for entry in manifest["skipped"]] == ["P1/B03_s1_DNA.tif", "P1/B03_s1_Actin.tif"]


def test_ctrl_c_exits_130_without_partial_files(tmp_path, capsys, monkeypatch):
    write_plate(tmp_path / "in")
    import gpuillum.io.tiff as tiff

    real, calls = tiff.tifffile.imwrite, []

    def interrupted(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # mid-write: half a file exists under its temporary name
            path.write(b"II*\x00partial")  # write_tiff hands tifffile the temporary it created (O_EXCL)
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tiff.tifffile, "imwrite", interrupted)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1", *ARGS)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and ".tmp" in p.name]
    assert leftovers == []
    for path in (tmp_path / "out" / "corrected").rglob("*.tif"):
        tifffile.imread(path)  # every file present is complete


def test_sigterm_exits_143_without_partial_files_and_resumes(tmp_path, capsys, monkeypatch):
    import os
    import signal

    images = write_plate(tmp_path / "in")
    import gpuillum.io.tiff as tiff

    real, calls = tiff.tifffile.imwrite, []

    def terminated(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # what SLURM or docker stop sends, in the middle of the apply pass
            os.kill(os.getpid(), signal.SIGTERM)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(tiff.tifffile, "imwrite", terminated)
    previous = signal.getsignal(signal.SIGTERM)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1", *ARGS)
    assert code == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is only installed while a command runs
    assert [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name] == []
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["status"] == "failed"
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--resume", *ARGS)
    assert code == 0, err
    assert len(list((tmp_path / "out" / "corrected").rglob("*.tif"))) == len(images)


def test_a_ctrl_c_whose_exception_is_swallowed_still_stops_the_run(tmp_path, capsys, monkeypatch):
    # A KeyboardInterrupt raised inside a gc callback or __del__ (Dask installs a gc callback) is
    # printed and dropped by Python; the latched request stops the run at the next batch anyway.
    import os
    import signal

    from gpuillum.job import progress

    write_plate(tmp_path / "in")
    real, counts = progress.Progress.update, []

    def swallowing(bar, count=1):
        counts.extend([count] if bar.label.startswith("apply") else [])
        if len(counts) == 3 and bar.label.startswith("apply"):
            try:
                os.kill(os.getpid(), signal.SIGINT)  # its handler runs here, in the main thread
            except KeyboardInterrupt:
                pass  # what Python does to an exception raised in a gc callback
        return real(bar, count)

    monkeypatch.setattr(progress.Progress, "update", swallowing)
    previous = signal.getsignal(signal.SIGINT)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1", *ARGS)
    assert code == 130 and "interrupted" in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert len([name for name in manifest["files"] if name.startswith("corrected/")]) <= 3  # stopped there, not at the end
    assert signal.getsignal(signal.SIGINT) == previous


def test_a_stop_raised_inside_del_is_latched_and_not_reported_as_ignored(monkeypatch):
    import gc
    import os
    import signal
    import sys

    from gpuillum.job.stopping import raise_if_stop_requested, stop_on_signals

    class SignalsWhenCollected:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is raised inside __del__

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # what would print "Exception ignored in ..."
    with pytest.raises(KeyboardInterrupt):
        with stop_on_signals():
            SignalsWhenCollected()
            gc.collect()
            raise_if_stop_requested()
    assert reported == []
    assert sys.unraisablehook == reported.append  # restored
    raise_if_stop_requested()  # the latch is cleared when the command ends


@pytest.mark.parametrize("signal_name, stop", [("SIGINT", KeyboardInterrupt), ("SIGTERM", "Terminated")])
def test_a_signal_while_a_cluster_starts_acts_when_the_start_is_over(signal_name, stop):
    import os
    import signal

    from gpuillum.job.stopping import Terminated, deferred_stops, stop_on_signals

    stop = Terminated if stop == "Terminated" else stop
    finished = []
    with pytest.raises(stop):
        with stop_on_signals():
            with deferred_stops():
                os.kill(os.getpid(), getattr(signal, signal_name))  # noted, not raised half-way
                finished.append(True)
    assert finished == [True]


def test_ignored_signals_stay_ignored_while_a_command_runs():
    import signal

    from gpuillum.job.stopping import stop_on_signals

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, previous)


# ----------------------------------------------------------------------------- QA findings


def test_one_cellprofiler_option_modifies_the_jump_preset(tmp_path, capsys):
    from gpuillum.methods.cellprofiler import preset

    write_plate(tmp_path / "in", wells=("B02",), sites=2)
    code = main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--smoothing", "Fit Polynomial", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    expected = preset("jump").replace(smoothing="Fit Polynomial")
    assert manifest["settings"]["method"]["aggregation"] == expected.aggregation
    assert manifest["settings"]["method"]["resize_factor"] == expected.resize_factor
    line = "method: Regular, All: Across cycles, Fit Polynomial, rescale Yes, resize x0.2"
    assert line in out and manifest["method"] == line.removeprefix("method: ")


def test_each_without_smoothing_is_refused(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aggregation", "Each",
                        "--smoothing", "none", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "divides each image by itself", "--aggregation All")
    assert not (tmp_path / "out" / "corrected").exists()


def test_images_too_small_for_the_resize_factor_are_refused_before_writing(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1, shape=(30, 40))
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--resize-factor", "0.01",
                        "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "P1/B02_s1_", "are 30x40", "resize factor 0.01")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("rescale", ["Yes", "Median"])
def test_subtract_with_rescale_is_refused(tmp_path, capsys, rescale):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--intensity", "Background",
                        "--apply-method", "Subtract", "--rescale", rescale, "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "Subtract", f"rescale {rescale}", "--rescale No")


def test_subtract_with_rescale_no_runs(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--intensity", "Background",
                        "--rescale", "No", "--device", "cpu", "-q")
    assert code == 0, err


def test_out_with_a_different_run_is_refused_unless_overwrite(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    write_plate(tmp_path / "other", wells=("B03",), sites=1, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # unrelated file, no manifest: allowed
    assert main(["run", str(tmp_path / "in"), "-o", str(out), *ARGS]) == 0
    assert main(["run", str(tmp_path / "in"), "-o", str(out), *ARGS]) == 0  # the same run again: allowed
    # correcting again with the functions this run left in OUT/illum: allowed
    assert main(["apply", str(tmp_path / "in"), "-o", str(out), "--compression", "none", "--device", "cpu", "-q"]) == 0
    (out / "corrected" / "extra.txt").write_text("x")
    code, err = run_cli(capsys, "run", str(tmp_path / "other"), "-o", str(out), *ARGS)
    assert code == 2
    assert_one_line_error(err, "different run", "--overwrite")
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(out), *ARGS, "--rescale", "No")
    assert code == 2 and "different run" in err
    assert main(["run", str(tmp_path / "other"), "-o", str(out), *ARGS, "--overwrite"]) == 0
    assert sorted(p.relative_to(out / "corrected").as_posix() for p in (out / "corrected").rglob("*.tif")) == \
        ["P1/B03_s1_Actin.tif", "P1/B03_s1_DNA.tif"]
    assert (out / "corrected" / "extra.txt").read_text() == "x"  # not a gpuillum output: kept (issue 17, case 12)
    assert (out / "notes.txt").read_text() == "mine"


def test_bad_compression_is_refused_at_parsing(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--compression", "jpeg"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "zlib" in err and "jpeg" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, needle", [
    (["run", "IN", "-o", "OUT", "--intensity", "nope"], "'Background', got 'nope'"),
    (["run", "IN", "-o", "OUT", "--rescale", "maybe"], "'Median', got 'maybe'"),
    (["run", "IN"], "-o/--out"),
])
def test_argparse_errors_are_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()], err
    assert err.startswith(f"gpuillum {argv[0]}: error: ") and needle in err and "(see gpuillum run --help)" in err
    assert "(or )" not in err


def test_option_names_in_messages_and_single_preset_prefix(tmp_path, capsys):
    from gpuillum.job import JobError, run_plate

    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--filter-size", "-3", "--device", "cpu")
    assert code == 2 and "manual_size" not in err and "--filter-size" in err
    with pytest.raises(JobError) as info:
        run_plate(tmp_path / "in", tmp_path / "out2", preset="nosuch")
    assert str(info.value).count("preset:") == 1


def test_manifest_status_running_failed_complete_and_resume(tmp_path, capsys):
    images = write_plate(tmp_path / "in", wells=("B02", "B03"), sites=1)
    bad = tmp_path / "in" / "P1" / "B03_s1_DNA.tif"
    original = bad.read_bytes()
    corrupt_pixels(bad)  # found in pass 1 (a header problem is refused before any manifest is written)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "B03_s1_DNA.tif" in manifest["error"]
    assert manifest["error"] == err.strip().removeprefix("gpuillum: error: ")
    bad.write_bytes(original)
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS, "--resume"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["error"] is None
    assert sum(entry["role"] == "corrected" for entry in manifest["files"].values()) == len(images)


@pytest.mark.parametrize("failure", ["short-write", "enospc", "permission"])
def test_write_errors_name_the_file_and_leave_no_temporary(tmp_path, capsys, monkeypatch, failure):
    import errno

    import gpuillum.io.tiff as tiff_module

    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    real_imwrite = tiff_module.tifffile.imwrite

    def failing_imwrite(path, *args, **kwargs):
        real_imwrite(path, *args, **kwargs)  # a partial file exists when the disk fills up
        if failure == "short-write":
            raise OSError("262144 requested and 75744 written")
        if failure == "enospc":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tiff_module.tifffile, "imwrite", failing_imwrite)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    expected = "Permission denied" if failure == "permission" else "no space left on device"
    assert_one_line_error(err, "corrected/P1/B02_s1_", expected)
    assert "requested and" not in err
    leftovers = [p.name for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix not in (".npy", ".png", ".json")]
    assert leftovers == []


@pytest.mark.qc
def test_all_mode_from_few_images_warns_without_failing(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02", "B03"), sites=2)
    argv = ["--preset", "jump", "--resize-factor", "0.5", "--filter-size", "6", "--device", "cpu", "--no-progress"]
    code = main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    warnings = manifest["warnings"]
    few = [text for text in warnings if "only 4 images" in text]
    assert len(few) == 2 and "plate P1, channel DNA: only 4 images" in " ".join(few)
    assert all(f"warning: {text}" in err for text in warnings)
    # the QC turns it into a verdict (issue 20): the correction did not work, and why
    verdict = manifest["qc"]["plate P1, channel DNA"]
    assert verdict["worked"] is False and any("estimated from 4 image(s)" in flag for flag in verdict["flags"])
    wells = tuple(f"{row}{col:02d}" for row in "BC" for col in range(2, 12))  # 20 sites: enough
    write_plate(tmp_path / "many", wells=wells, sites=1, channels=("DNA",), shape=(32, 32))
    assert main(["run", str(tmp_path / "many"), "-o", str(tmp_path / "out2"), *argv, "--no-qc"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out2" / "manifest.json").read_text())["warnings"] == []


def test_unmatched_files_are_summarised_with_a_suggestion(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02", "B03"), sites=1)
    source = (tmp_path / "in" / "P1" / "B02_s1_DNA.tif").read_bytes()
    for index in range(8):
        (tmp_path / "in" / "P1" / f"junk{index}.tif").write_bytes(source)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, "P1/junk0.tif", "and 7 more problems", "gpuillum plan", "--on-error skip")
    argv = [a for a in ARGS if a != "-q"] + ["--no-progress"]
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip", *argv]) == 0
    out = capsys.readouterr().out
    assert "skipped 8 input(s)" in out and "... and 3 more" in out and "junk4.tif" in out and "junk5.tif" not in out


# ----------------------------------------------------------------------------- review findings


def test_calc_alone_is_not_refused_for_a_subtract_it_does_not_apply(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code, err = run_cli(capsys, "calc", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--intensity", "background", *ARGS)
    assert code == 0, err
    assert (tmp_path / "out" / "illum" / "P1_IllumDNA.npy").is_file()


def test_unsupported_dtype_is_a_plan_problem_a_one_line_error_or_skipped(tmp_path, capsys):
    write_plate(tmp_path / "in", plates=("P1",), wells=("B02",), sites=1)
    write_plate(tmp_path / "in", plates=("P2",), wells=("B02",), sites=1, dtype=np.int16)
    assert main(["plan", str(tmp_path / "in")]) == 2
    assert "dtype int16 is not supported" in capsys.readouterr().out
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, "P2/B02_s1_Actin.tif", "int16", "uint8, uint16, float32, float64")
    assert not (tmp_path / "out").exists()
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip", *ARGS)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert {"P2/B02_s1_Actin.tif", "P2/B02_s1_DNA.tif"} <= {entry["path"] for entry in manifest["skipped"]}
    assert sorted(p.name for p in (tmp_path / "out" / "corrected").rglob("*.tif")) == ["B02_s1_Actin.tif", "B02_s1_DNA.tif"]
    code, err = run_cli(capsys, "run", str(tmp_path / "in" / "P2"), "-o", str(tmp_path / "out2"), "--on-error", "skip", *ARGS)
    assert code == 2
    assert_one_line_error(err, "no usable images", "int16")


def test_float64_images_with_a_background_are_refused_by_name(tmp_path, capsys):
    for channel in ("DNA", "Actin"):
        path = tmp_path / "in" / "P1" / f"B02_s1_{channel}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, np.full((32, 40), 0.5))
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--background", "median",
                        "--background-radius", "3", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "B02_s1_Actin.tif", "float64 is not supported with --background", "uint8, uint16, float32")


@pytest.mark.parametrize("error, needles", [
    (InvalidType("image: dtype int16 is not supported; expected one of uint8"), ("image: dtype int16",)),
    (MemoryError("Unable to allocate 5.24 TiB for an array"), ("out of host memory", "5.24 TiB", "--dilation-radius")),
])
def test_type_and_memory_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch, error, needles):
    import gpuillum.job as job

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(job, "run", failing)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, *needles)


@pytest.mark.parametrize("error", [TypeError("unsupported operand type(s)"), ValueError("operands could not be broadcast"),
                                   IndexError("index 5 is out of bounds")])
def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path, capsys, monkeypatch, error):
    """Only UserError is the user's to fix: an error gpuillum did not raise on purpose is a bug, and
    the CLI lets it show where it happened instead of disguising it as a usage error."""
    import gpuillum.job as job

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(job, "run", failing)
    with pytest.raises(type(error)):
        main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS])


def test_demo_shape_too_large_is_refused_at_parsing(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", str(tmp_path / "demo"), "--shape", "200000x200000"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()] and "200000x200000" in err and "4096" in err
    assert not (tmp_path / "demo").exists()


def test_a_run_that_failed_before_any_output_does_not_block_the_next(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    assert main(["calc", str(tmp_path / "in"), "-o", str(tmp_path / "fn"), *ARGS]) == 0
    dna = ["--function", f"DNA={tmp_path / 'fn' / 'illum' / 'P1_IllumDNA.npy'}", "--device", "cpu", "-q"]
    out = tmp_path / "out"
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(out), *dna, "--function", f"Actin={tmp_path / 'missing.npy'}")
    assert code == 2
    assert_one_line_error(err, "missing.npy")
    assert not out.exists()  # refused before anything, manifest included, was written
    actin = ["--function", f"Actin={tmp_path / 'fn' / 'illum' / 'P1_IllumActin.npy'}"]
    assert main(["apply", str(tmp_path / "in"), "-o", str(out), *dna, *actin]) == 0
    # a calc that failed in pass 1, before writing anything, leaves a manifest that lists no output
    bad = tmp_path / "in" / "P1" / "B02_s1_Actin.tif"  # Actin: the first group
    original = bad.read_bytes()
    corrupt_pixels(bad)
    assert main(["calc", str(tmp_path / "in"), "-o", str(tmp_path / "c"), *ARGS]) == 2
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["files"] == {}
    bad.write_bytes(original)
    code, err = run_cli(capsys, "calc", str(tmp_path / "in"), "-o", str(tmp_path / "c"), *ARGS, "--filter-size", "8")
    assert code == 0, err
    # a failed run that did write outputs still protects them
    corrupt_pixels(tmp_path / "in" / "P1" / "B02_s1_DNA.tif")
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "r"), *ARGS]) == 2
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["files"]
    bad.write_bytes(original)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "r"), *ARGS, "--filter-size", "8")
    assert code == 2 and "different run" in err


def test_splines_are_subtracted_and_dividing_by_them_is_refused(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=2)
    splines = ["--smoothing", "splines", "--rescale", "no", *ARGS]
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *splines)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["apply"]["method"] == "Subtract"
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), *splines, "--apply-method", "divide")
    assert code == 2
    assert_one_line_error(err, "Splines", "--apply-method Subtract")
    # the apply pass refuses to divide by the zero-mean function the run left in OUT/illum
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out3"), "--functions",
                        str(tmp_path / "out" / "illum"), "--apply-method", "divide", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "P1_IllumActin.npy", "negative", "--apply-method Subtract")
    assert not (tmp_path / "out3").exists()


@pytest.mark.parametrize("key", ["DAPI", ("P9", "DNA")])
def test_a_function_for_a_channel_the_input_lacks_is_refused(tmp_path, capsys, key):
    from gpuillum.job import JobError, run_plate

    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    function = tmp_path / "flat.npy"
    np.save(function, np.ones((64, 80), np.float32))
    given = {"DNA": function, "Actin": function, key: function}
    listed = "Actin, DNA" if isinstance(key, str) else "P1/Actin, P1/DNA"  # channels, or plate/channel pairs
    with pytest.raises(JobError, match=rf"function given for .*(DAPI|P9).*: INPUT has no such channel; it has {listed}$"):
        run_plate(tmp_path / "in", tmp_path / "out", functions=given, passes=("apply",), device="cpu")
    if isinstance(key, str):  # the CLI's --function CHANNEL=FILE
        code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--function", f"DNA={function}",
                            "--function", f"Actin={function}", "--function", f"{key}={function}", "--device", "cpu", "-q")
        assert code == 2
        assert_one_line_error(err, f"function given for channel '{key}' (--function {key}=FILE)")
    assert not (tmp_path / "out").exists()


def test_a_function_for_a_channel_whose_files_were_all_skipped_is_not_called_unknown(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=2)
    for path in (tmp_path / "in").rglob("*_Actin.tif"):
        corrupt(path)
    function = tmp_path / "flat.npy"
    np.save(function, np.ones((64, 80), np.float32))
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--function", f"DNA={function}",
                        "--function", f"Actin={function}", "--on-error", "skip", "--device", "cpu", "-q")
    assert code == 0, err
    assert len(list((tmp_path / "out" / "corrected").rglob("*_DNA.tif"))) == 2


def test_apply_refuses_to_subtract_a_rescaled_function(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    assert main(["calc", str(tmp_path / "in"), "-o", str(tmp_path / "fn"), *ARGS]) == 0  # jump: rescale Yes, values >= 1
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--functions",
                        str(tmp_path / "fn" / "illum"), "--apply-method", "subtract", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "P1_IllumActin.npy", ">= 1", "--rescale No")
    assert not (tmp_path / "out").exists()


def write_float_plate(root, scale: float):
    """P1 with 3 sites x 2 channels of float32 images: the test plate's counts times ``scale``."""
    images = write_plate(root, wells=("B02",), sites=3)
    for relpath, image in images.items():
        tifffile.imwrite(root / relpath, (image * scale).astype(np.float32))
    return images


@pytest.mark.parametrize("passes", [("run",), ("calc",)])
def test_float_images_outside_0_1_are_refused_by_name(tmp_path, capsys, passes):
    write_float_plate(tmp_path / "in", 1.0)  # raw counts stored as float32: CellProfiler would wrap and clip them
    code, err = run_cli(capsys, *passes, str(tmp_path / "in"), "-o", str(tmp_path / "out"), *ARGS)
    assert code == 2
    assert_one_line_error(err, "P1/B02_s1_", ".tif: float pixel values span [", "scaled to [0, 1]")


def test_bad_float_images_are_skipped_by_name_and_the_rest_corrected(tmp_path, capsys):
    images = write_float_plate(tmp_path / "in", 1 / 65535)  # scaled like CellProfiler's floats
    bad = {"P1/B02_s2_DNA.tif": np.float32(np.nan), "P1/B02_s3_Actin.tif": np.float32(1.5)}
    for relpath, value in bad.items():
        image = tifffile.imread(tmp_path / "in" / relpath)
        image[3, 4] = value
        tifffile.imwrite(tmp_path / "in" / relpath, image)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "fail"), *ARGS)
    assert code == 2
    assert_one_line_error(err)
    assert "P1/B02_s3_Actin.tif: float pixel values span [" in err or "P1/B02_s2_DNA.tif: contains NaN or infinite" in err
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip", *ARGS)
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    reasons = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert "NaN or infinite" in reasons["P1/B02_s2_DNA.tif"] and "span [" in reasons["P1/B02_s3_Actin.tif"]
    written = {p.relative_to(tmp_path / "out" / "corrected").as_posix() for p in (tmp_path / "out" / "corrected").rglob("*.tif")}
    assert written == set(images) - set(bad)


def test_a_background_alone_takes_float_counts(tmp_path, capsys):
    images = write_float_plate(tmp_path / "in", 1.0)
    code, err = run_cli(capsys, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--background", "tophat",
                        "--background-radius", "4", "--device", "cpu", "-q")
    assert code == 0, err
    corrected = tifffile.imread(tmp_path / "out" / "corrected" / "P1" / "B02_s1_DNA.tif")
    assert corrected.dtype == np.float32 and corrected.max() > 100  # counts kept, nothing clipped to [0, 1]
    assert len(images) == 6


@pytest.mark.parametrize("command", [["run", "IN", "-o", ""], ["run", "", "-o", "OUT"], ["apply", "IN", "-o", " "], ["demo", ""]])
def test_an_empty_path_is_refused_not_taken_for_the_current_folder(tmp_path, monkeypatch, capsys, command):
    # -o "$OUTDIR" with OUTDIR unset must not write illum/, corrected/ and a manifest where the shell is
    write_plate(tmp_path / "IN", wells=("B02",), sites=1)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gpuillum: error: ") and err.endswith("expected a folder, got an empty path"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_the_plan_hint_repeats_the_discovery_options(tmp_path, capsys):
    # the suggested command must list the same problems, so it carries --pattern (quoted for the shell)
    import shlex

    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    pattern = r"(?P<plate>P\d)/(?P<well>B\d\d)_s(?P<site>\d)_(?P<channel>DNA)\.tif"
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--pattern", pattern]) == 2
    err = capsys.readouterr().err
    hint = err.split("see them all with: ")[1].split(", or leave")[0]
    assert shlex.split(hint) == ["gpuillum", "plan", str(tmp_path / "in"), "--pattern", pattern]
    assert main(shlex.split(hint)[1:]) == 2  # the hint runs, and lists the same problem
    assert "B02_s1_Actin.tif: not matched by the pattern" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_a_plate_name_with_a_path_separator_is_refused_before_out_exists(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    pattern = r"(?P<plate>P\d/)(?P<well>B\d\d)_s(?P<site>\d)_(?P<channel>\w+)\.tif"
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--pattern", pattern]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("plate: must not contain a path separator, got 'P1/'; it names the illumination function file "
                        "<plate>_Illum<channel>.npy"), err
    assert not (tmp_path / "out").exists()


def test_a_functions_folder_without_the_file_says_where_it_looked(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    (tmp_path / "functions").mkdir()
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--functions",
                        str(tmp_path / "functions"), "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "P1_IllumActin.npy: illumination function for P1/Actin not found",
                          f"looked for .npy, .npz, .mat in {tmp_path / 'functions'}")
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "not found (run calc first, or pass --functions DIR)")


@pytest.mark.parametrize("command", [["plan"], ["run", "--on-error", "skip"], ["run"]])
def test_a_fifo_named_tif_is_a_problem_not_a_hang(tmp_path, capsys, command):
    # issue 17, case 2: plan and run used to block for ever opening it
    import os

    write_plate(tmp_path / "in", wells=("B02", "B03"), sites=1)
    fifo = tmp_path / "in" / "P1" / "B02_s1_DNA.tif"
    fifo.unlink()
    os.mkfifo(fifo)
    argv = [command[0], str(tmp_path / "in")] + (["-o", str(tmp_path / "out"), *ARGS] if command[0] == "run" else [])
    code = main(argv + command[1:])
    out, err = capsys.readouterr()
    problem = "P1/B02_s1_DNA.tif: unreadable (a FIFO, not a regular file)"
    if command == ["plan"]:
        assert code == 2 and problem in out
    elif command == ["run"]:
        assert code == 2
        assert_one_line_error(err, problem)
    else:
        assert code == 0, err
        skipped = json.loads((tmp_path / "out" / "manifest.json").read_text())["skipped"]
        assert {"path": "P1/B02_s1_DNA.tif", "reason": problem + "; left out"} in skipped


@pytest.mark.parametrize("command", [["run"], ["calc"], ["apply"]])
def test_a_run_with_nothing_left_to_process_is_an_error(tmp_path, capsys, command):
    # issue 17, case 4: float32 raw counts with --on-error skip were all skipped, yet the run said
    # "complete" with exit 0 and wrote only a manifest; like a dtype refused at plan time, exit 2
    write_float_plate(tmp_path / "in", 1.0)
    extra = ARGS if command != ["apply"] else ["--function", f"DNA={tmp_path / 'flat.npy'}", "--function",
                                               f"Actin={tmp_path / 'flat.npy'}", "--device", "cpu", "-q"]
    np.save(tmp_path / "flat.npy", np.ones((64, 80), np.float32))
    code, err = run_cli(capsys, *command, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--on-error", "skip", *extra)
    assert code == 2
    assert_one_line_error(err, f"{tmp_path / 'in'}: no usable images found (", " skipped, e.g. ", "/P1/B02_s1_", "float pixel values span [")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == err.strip().removeprefix("gpuillum: error: ")
    assert len(manifest["skipped"]) >= 6


def test_a_channel_given_twice_with_function_is_refused(tmp_path, capsys):
    # issue 17, case 8: the last one was silently used
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.ones((64, 80), np.float32))
    code, err = run_cli(capsys, "apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--function",
                        f"DNA={tmp_path / 'a.npy'}", "--function", f"Actin={tmp_path / 'a.npy'}", "--function",
                        f"DNA={tmp_path / 'b.npy'}", "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, "--function: channel 'DNA' given twice", "a.npy", "b.npy")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, needle", [
    (["--sites", "1000000000000"], "sites: at most 100, got 1000000000000"),  # issue 17, case 10: wrote until the disk filled
    (["--wells", "1000"], "wells: at most 168, got 1000"),
    (["--seed", "-1"], "seed: expected an integer >= 0, got -1"),  # cosmetic: OUT was created before the refusal
])
def test_demo_options_out_of_bounds_are_refused_before_out_exists(tmp_path, capsys, option, needle):
    code, err = run_cli(capsys, "demo", str(tmp_path / "demo"), *option, "--device", "cpu", "-q")
    assert code == 2
    assert_one_line_error(err, needle)
    assert not (tmp_path / "demo").exists()


def test_demo_sizes_are_bounded_in_the_api_too(tmp_path):
    from gpuillum.demo.run import DEMO_MAX_SIDE, run_demo

    for size, needle in [(dict(sites=10**12), "sites: at most"), (dict(shape=(16, DEMO_MAX_SIDE + 1)), "shape: expected"),
                         (dict(shape=(8, 8)), "shape: expected"), (dict(sites=0), "sites: expected an integer >= 1")]:
        with pytest.raises(ValueError, match=needle):
            run_demo(tmp_path / "demo", device="cpu", **size)
    assert not (tmp_path / "demo").exists()


def test_overwrite_deletes_only_gpuillum_outputs_its_manifest_lists(tmp_path, capsys):
    # issue 17, case 12: a manifest listing OUT/user_notes.txt made --overwrite delete it
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    write_plate(tmp_path / "other", wells=("B03",), sites=1, seed=1)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "in"), "-o", str(out), *ARGS]) == 0
    victim = tmp_path / "victim.tif"
    victim.write_bytes(b"the user's image")
    users = {out / "user_notes.txt": b"mine", out / "illum" / "notes.txt": b"mine", out / "corrected" / "extra.txt": b"x",
             out / "corrected" / "P1" / "unlisted.tif": b"not the run's", tmp_path / "outside.tif": b"not in OUT"}
    for path, data in users.items():
        path.write_bytes(data)
    (out / "corrected" / "P1" / "link.tif").symlink_to(victim)
    manifest = json.loads((out / "manifest.json").read_text())
    earlier = set(manifest["files"])
    entry = {"sha256": "0" * 64, "bytes": 4, "role": "corrected", "source": None, "inputs": None}
    for relpath in ("user_notes.txt", "illum/notes.txt", "corrected/extra.txt", "corrected/../user_notes.txt",
                    "corrected/../../outside.tif", str(tmp_path / "outside.tif"), "corrected/P1/link.tif"):
        manifest["files"][relpath] = entry
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["run", str(tmp_path / "other"), "-o", str(out), *ARGS, "--overwrite"]) == 0
    assert {path: path.read_bytes() for path in users} == users  # none of them is a gpuillum output
    assert victim.read_bytes() == b"the user's image" and (out / "corrected" / "P1" / "link.tif").is_symlink()
    assert not [relpath for relpath in earlier if "B02" in relpath and (out / relpath).exists()]  # the earlier run's are gone
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
