"""One run at a time per OUT: a second run is refused naming the first; the lock goes away with its
run however the run ends (errors, Ctrl-C, SIGKILL), so a leftover lock file never blocks anyone."""
from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from gpuillum.cli import main
from gpuillum.job import JobError, run_plate
from gpuillum.io.run_lock import LOCK_NAME, FolderLocked, folder_lock

from test_engine import FAST, write_plate

HOLD = """
import sys, time
from gpuillum.io.run_lock import folder_lock
with folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held_by_another_process(tmp_path):
    """A folder whose lock a live process holds; yields (folder, that process's pid)."""
    folder = tmp_path / "held"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield folder, holder.pid
    holder.kill()
    holder.wait()


def test_lock_records_its_run_and_is_removed_after(tmp_path):
    with folder_lock(tmp_path) as path:
        record = json.loads(path.read_text())
        assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
        with folder_lock(tmp_path) as nested:  # the same thread again: a nested block goes ahead
            assert nested == path
        assert path.exists()
    assert not (tmp_path / LOCK_NAME).exists()


def test_another_thread_of_the_same_process_is_refused(tmp_path):
    caught = []

    def second():
        try:
            with folder_lock(tmp_path):
                pass
        except FolderLocked as error:
            caught.append(error)

    with folder_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(caught) == 1 and f"pid {os.getpid()}" in str(caught[0])


def test_lock_is_removed_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with folder_lock(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("content", ["", "{not json", None])
def test_a_lock_file_nobody_holds_is_taken_over(tmp_path, content):
    # left by a run killed outright (even one with this very pid, as a restarted container's pid 1)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(record) if content is None else content)
    with folder_lock(tmp_path) as path:
        assert json.loads(path.read_text())["started"] != "2026-01-01T00:00:00"
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_is_refused_by_name_and_keeps_its_lock(held_by_another_process):
    folder, pid = held_by_another_process
    with pytest.raises(FolderLocked, match=f"{LOCK_NAME}: another gpuillum run \\(pid {pid} on .*\\) is writing"):
        with folder_lock(folder):
            pass
    assert json.loads((folder / LOCK_NAME).read_text())["pid"] == pid


def test_a_run_into_a_locked_out_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, held_by_another_process):
    out, pid = held_by_another_process
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    code = main(["run", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"pid {pid} on" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_run_plate_releases_the_lock_after_success_and_failure(tmp_path, monkeypatch):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu")
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    import gpuillum.job.correct as apply_module

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device", "somewhere")

    monkeypatch.setattr(apply_module, "write_corrected", failing)
    with pytest.raises((JobError, OSError)):
        run_plate(tmp_path / "in", tmp_path / "out2", settings=FAST, device="cpu")
    assert not (tmp_path / "out2" / LOCK_NAME).exists()


def test_a_lock_that_cannot_be_written_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    real_write = os.write

    def full(descriptor, data):
        if os.fstat(descriptor).st_ino == os.stat(tmp_path / LOCK_NAME).st_ino:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(descriptor, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left") as caught:
        with folder_lock(tmp_path):
            pass
    assert caught.value.filename == str(tmp_path / LOCK_NAME)
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_file_system_without_locks_runs_unlocked_with_a_warning(tmp_path, monkeypatch):
    import fcntl

    def unsupported(descriptor, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", unsupported)
    with folder_lock(tmp_path) as lock:
        assert lock is None
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu")
    assert any("cannot lock files" in warning for warning in result.warnings)


# ----------------------------------------------------------------------------- links planted in OUT (issue 17, case 1)


def _snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_a_lock_file_linked_to_a_users_file_is_refused_and_never_written(tmp_path, how):
    victim = tmp_path / "precious.tif"
    victim.write_bytes(b"the user's image")
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK_NAME).symlink_to(victim) if how == "symlink" else os.link(victim, folder / LOCK_NAME)
    with pytest.raises(ValueError, match=f"{LOCK_NAME}: is .*: remove (it|the link) or choose another -o OUT"):
        with folder_lock(folder):
            pass
    assert victim.read_bytes() == b"the user's image"
    assert os.path.lexists(folder / LOCK_NAME)  # left as it was


@pytest.mark.parametrize("entry", [LOCK_NAME, "manifest.json", "illum", "corrected", "corrected/P1", "corrected/load_data.csv"])
def test_an_out_whose_own_entries_are_links_is_refused_in_one_line_touching_nothing(tmp_path, capsys, entry):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    is_folder = entry in ("illum", "corrected", "corrected/P1")
    target = elsewhere if is_folder else tmp_path / "in" / "P1" / "B02_s1_DNA.tif"  # an input image as the victim
    out = tmp_path / "out"
    (out / entry).parent.mkdir(parents=True)
    (out / entry).symlink_to(target, target_is_directory=is_folder)
    before_input, before_out = _snapshot(tmp_path / "in"), sorted(p.name for p in out.rglob("*"))
    code = main(["run", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{out / entry}: is a symbolic link" in err and "Traceback" not in err
    assert _snapshot(tmp_path / "in") == before_input
    assert sorted(p.name for p in out.rglob("*")) == before_out
    assert list(elsewhere.iterdir()) == []
