"""--resume: a crashed or interrupted run completes to the same bytes as an uninterrupted one,
redoing only what is missing or damaged."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from gpuillum.job import run_plate
from gpuillum.io.run_lock import LOCK_NAME

from test_cli import ARGS_RESUME, read_all
from test_engine import FAST, write_plate


def outputs(folder):
    """Every output's bytes except the manifest and the LoadData CSV (which name OUT itself)."""
    return {name: data for name, data in read_all(folder).items() if name.endswith((".tif", ".npy", ".png"))}


def wait_for_a_corrected_file(out, process, seconds: float) -> None:
    """Return once the manifest of a run in ``process`` lists a corrected image, or the run ended."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            files = json.loads((out / "manifest.json").read_text())["files"]
        except (OSError, ValueError, KeyError):
            files = {}
        if any(name.startswith("corrected/") for name in files):
            return
        time.sleep(0.02)


@pytest.fixture
def plate(tmp_path):
    write_plate(tmp_path / "in", plates=("P1", "P2"))
    run_plate(tmp_path / "in", tmp_path / "reference", settings=FAST, device="cpu")
    return tmp_path / "in", outputs(tmp_path / "reference")


def test_crash_after_k_files_then_resume_gives_identical_outputs(tmp_path, plate, monkeypatch):
    source, reference = plate
    import gpuillum.job.correct as apply_module

    real, count = apply_module.write_corrected, []

    def crashing(*args, **kwargs):
        if len(count) == 7:
            raise KeyboardInterrupt  # the process dies after 7 corrected files
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(apply_module, "write_corrected", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_plate(source, tmp_path / "out", settings=FAST, device="cpu", threads=1)
    monkeypatch.setattr(apply_module, "write_corrected", real)
    partial = outputs(tmp_path / "out")
    assert 0 < sum(name.startswith("corrected/") for name in partial) < sum(name.startswith("corrected/") for name in reference)
    result = run_plate(source, tmp_path / "out", settings=FAST, device="cpu", resume=True)
    assert len(result.reused) == 7 and len(result.written) == 32 - 7
    assert not result.functions  # all four functions were intact and reused
    assert outputs(tmp_path / "out") == reference


def test_resume_redoes_damaged_outputs_and_functions(tmp_path, plate):
    source, reference = plate
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu")
    damaged = tmp_path / "out" / "corrected" / "P1" / "B02_s1_DNA.tif"
    damaged.write_bytes(damaged.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "out" / "corrected" / "P2" / "C03_s2_Actin.tif").unlink()
    (tmp_path / "out" / "illum" / "P2_IllumDNA.npy").write_bytes(b"garbage")
    result = run_plate(source, tmp_path / "out", settings=FAST, device="cpu", resume=True)
    assert sorted(w.relpath for w in result.written) == ["P1/B02_s1_DNA.tif", "P2/C03_s2_Actin.tif"]
    assert list(result.functions) == [("P2", "DNA")]
    assert outputs(tmp_path / "out") == reference


def test_resume_with_other_settings_is_refused(tmp_path, plate, capsys):
    source, _ = plate
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu")
    code = main(["run", str(source), "-o", str(tmp_path / "out"), "--resume", "--preset", "jump", "--device", "cpu", "-q"])
    assert code == 2 and "different settings" in capsys.readouterr().err


HOLD_WRITES = """
import itertools
import pathlib
import threading

import gpuillum.job.correct as apply_module

_write, _calls = apply_module.write_corrected, itertools.count()


def _write_or_hold(*args, **kwargs):
    if next(_calls) >= {after}:  # the run stops here, its first {after} corrected images written, until it is killed
        pathlib.Path({marker!r}).touch()
        threading.Event().wait()
    return _write(*args, **kwargs)


apply_module.write_corrected = _write_or_hold
"""


def environment_running(tmp_path, sitecustomize: str) -> dict:
    """os.environ for a gpuillum process that runs ``sitecustomize`` first (test-only behaviour, such as
    slow or held writes, in every Python process it starts), with the GPU switched off."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(sitecustomize)
    site = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))  # keeps a caller's packages
    return dict(os.environ, PYTHONPATH=site, GPUILLUM_DISABLE_GPU="1")


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path, plate):
    source, reference = plate
    out, held, after = tmp_path / "out", tmp_path / "held", 7
    env = environment_running(tmp_path, HOLD_WRITES.format(after=after, marker=str(held)))
    command = [sys.executable, "-m", "gpuillum", "run", str(source), "-o", str(out), *ARGS_RESUME, "--threads", "1"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not held.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert held.exists() and process.poll() is None, "the run did not reach its held write"
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the kill landed mid-run: the manifest still says running, 7 of the 32 images exist, and it lists
    # no image that is not there
    manifest = json.loads((out / "manifest.json").read_text())
    written = {path.relative_to(out).as_posix() for path in (out / "corrected").rglob("*.tif")}
    assert manifest["status"] == "running" and len(written) == after < sum(name.startswith("corrected/") for name in reference)
    assert {name for name in manifest["files"] if name.startswith("corrected/")} <= written
    assert main(["run", str(source), "-o", str(out), *ARGS_RESUME, "--resume"]) == 0
    assert outputs(out) == reference
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not (out / LOCK_NAME).exists()  # the killed run's lock was taken over, then released


def test_a_plain_rerun_removes_temporaries_a_killed_run_left(tmp_path, plate):
    source, reference = plate
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu")
    leftovers = [tmp_path / "out" / "corrected" / "P1" / ".B02_s1_DNA.tif.tmp-999999-0badf00d",
                 tmp_path / "out" / ".manifest.json.tmp-999999-deadbeef"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a file")
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu")  # same run, no --resume
    assert not [path for path in leftovers if path.exists()]
    assert outputs(tmp_path / "out") == reference


def test_temporaries_are_cleared_only_where_runs_write(tmp_path):
    # OUT may hold INPUT (run plate -o .) and other folders: files there that merely look like
    # temporaries of a dead process are not gpuillum's to delete
    work = tmp_path / "work"
    write_plate(work / "plate", wells=("B02",), sites=1)
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    lookalikes = [work / "plate" / "P1" / f".B02_s1_DNA.tif.tmp-{finished.pid}-0badf00d",
                  work / "other" / f".x.npy.tmp-{finished.pid}-cafebabe"]
    stale = work / "corrected" / "P1" / f".B02_s1_DNA.tif.tmp-{finished.pid}-deadbeef"
    for path in lookalikes + [stale]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"somebody else's bytes")
    run_plate(work / "plate", work, settings=FAST, device="cpu")
    assert all(path.exists() for path in lookalikes) and not stale.exists()


def test_an_unreadable_manifest_protects_the_outputs_unless_overwrite(tmp_path, plate, capsys):
    source, reference = plate
    out = tmp_path / "out"
    run_plate(source, out, settings=FAST, device="cpu")
    (out / "manifest.json").write_text("{ not json")
    code = main(["run", str(source), "-o", str(out), *ARGS_RESUME])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "manifest.json: unreadable" in err and "--overwrite" in err and err.count("manifest.json") == 1
    assert outputs(out) == reference  # nothing removed
    assert main(["run", str(source), "-o", str(out), *ARGS_RESUME, "--resume"]) == 2
    assert "cannot resume from this manifest" in capsys.readouterr().err.replace("\n", " ").replace("  ", " ")
    assert main(["run", str(source), "-o", str(out), *ARGS_RESUME, "--overwrite"]) == 0
    assert outputs(out) == reference
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("change", [{"files": [1, 2]}, {"settings": None}, {"files": {"corrected/x.tif": "x"}}])
def test_a_manifest_of_the_wrong_shape_is_unreadable_not_a_traceback(tmp_path, plate, capsys, change):
    source, reference = plate
    out = tmp_path / "out"
    run_plate(source, out, settings=FAST, device="cpu")
    (out / "manifest.json").write_text(json.dumps({**json.loads((out / "manifest.json").read_text()), **change}))
    for extra, expected in (([], "manifest.json: unreadable"), (["--resume"], "cannot resume from this manifest")):
        assert main(["run", str(source), "-o", str(out), *ARGS_RESUME, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and expected in err and "not a readable gpuillum manifest" in err, err
    assert outputs(out) == reference


def test_an_unreadable_manifest_alone_does_not_block_a_run(tmp_path, plate):
    source, reference = plate
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("{ not json")
    run_plate(source, out, settings=FAST, device="cpu")
    assert outputs(out) == reference


def test_resume_redoes_what_a_changed_input_feeds_and_keeps_the_rest(tmp_path, plate):
    source, _ = plate
    out = tmp_path / "out"
    run_plate(source, out, settings=FAST, device="cpu")
    changed = source / "P1" / "B02_s1_DNA.tif"
    image = tifffile.imread(changed)
    tifffile.imwrite(changed, (image // 2).astype(image.dtype), compression="zlib")  # e.g. re-exported
    result = run_plate(source, out, settings=FAST, device="cpu", resume=True)
    # the P1/DNA function is recomputed, so every P1/DNA image is redone; nothing else is
    redone = sorted(w.relpath for w in result.written)
    assert redone == sorted(name for name in read_all(source) if name.startswith("P1/") and name.endswith("_DNA.tif"))
    assert list(result.functions) == [("P1", "DNA")]
    assert result.reused and not [name for name in result.reused if name in redone]
    run_plate(source, tmp_path / "fresh", settings=FAST, device="cpu")
    assert outputs(out) == outputs(tmp_path / "fresh")


def test_resume_redoes_images_corrected_with_a_function_that_changed(tmp_path, plate):
    source, _ = plate
    out = tmp_path / "out"
    run_plate(source, tmp_path / "functions", settings=FAST, device="cpu", passes=("calc",))
    functions = tmp_path / "functions" / "illum"
    run_plate(source, out, functions=functions, device="cpu", passes=("apply",))
    first = outputs(out)
    scaled = np.load(functions / "P2_IllumActin.npy") * np.float32(1.5)
    np.save(functions / "P2_IllumActin.npy", scaled)
    result = run_plate(source, out, functions=functions, device="cpu", passes=("apply",), resume=True)
    assert {w.relpath.split("/")[0] + "/" + w.relpath.rsplit("_", 1)[1] for w in result.written} == {"P2/Actin.tif"}
    assert outputs(out) != first


@pytest.mark.parametrize("resume", [True, False])
def test_outputs_of_inputs_that_are_gone_leave_the_manifest_but_stay_on_disk(tmp_path, plate, resume):
    # the raw images of a well were deleted (or archived) after a run: a rerun must not list their
    # corrected copies as this run's outputs, nor delete them (they may be the only copies left)
    source, _ = plate
    out = tmp_path / "out"
    run_plate(source, out, settings=FAST, device="cpu")
    gone = sorted(source.glob("P1/B02_*"))
    assert gone
    for path in gone:
        path.unlink()
    result = run_plate(source, out, settings=FAST, device="cpu", resume=resume)
    manifest = json.loads((out / "manifest.json").read_text())
    relpaths = {path.relative_to(source).as_posix() for path in gone}
    orphaned = {entry["source"] for entry in manifest["orphaned"]}
    assert orphaned == relpaths
    assert all((out / entry["path"]).is_file() for entry in manifest["orphaned"])
    assert not {entry["source"] for entry in manifest["files"].values()} & relpaths
    corrected = {entry["source"] for entry in manifest["files"].values() if entry["role"] == "corrected"}
    assert corrected == set(read_all(source))
    set_aside = [text for text in result.warnings if "output(s) of the earlier run" in text]
    assert manifest["status"] == "complete" and len(set_aside) == 1
    assert set_aside[0].startswith(f"{len(gone)} output(s) of the earlier run have no usable input")
    # the next run finds nothing more to set aside
    again = run_plate(source, out, settings=FAST, device="cpu", resume=True)
    assert not [text for text in again.warnings if "output(s) of the earlier run" in text]
    assert len(json.loads((out / "manifest.json").read_text())["orphaned"]) == len(gone)


def test_the_function_and_preview_of_a_channel_that_is_gone_are_orphaned(tmp_path, plate):
    source, _ = plate
    out = tmp_path / "out"
    run_plate(source, out, settings=FAST, device="cpu")
    for path in source.rglob("*_Actin.tif"):
        path.unlink()
    run_plate(source, out, settings=FAST, device="cpu", resume=True)
    manifest = json.loads((out / "manifest.json").read_text())
    orphaned = {entry["path"] for entry in manifest["orphaned"]}
    assert {"illum/P1_IllumActin.npy", "illum/P1_IllumActin.png"} <= orphaned
    assert not any("Actin" in name for name in manifest["files"])
    assert any("DNA" in name for name in manifest["files"])


def test_a_rerun_removes_temporaries_named_with_a_live_pid(tmp_path, plate):
    # issue 17, case 11: a run that was a container's pid 1 (or a pid recycled after a reboot) left
    # these; the rerun holds OUT's lock, so they are stale whatever process has that pid now
    source, reference = plate
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu")
    leftovers = [tmp_path / "out" / "corrected" / "P1" / ".B02_s1_DNA.tif.tmp-1-0badf00d",
                 tmp_path / "out" / "illum" / f".P1_IllumDNA.npy.tmp-{os.getpid()}-deadbeef",
                 tmp_path / "out" / ".manifest.json.tmp-1-cafebabe"]
    for leftover in leftovers:
        leftover.write_bytes(b"half a file")
    run_plate(source, tmp_path / "out", settings=FAST, device="cpu", resume=True)
    assert not [path for path in leftovers if path.exists()]
    assert outputs(tmp_path / "out") == reference
