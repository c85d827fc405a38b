"""One run at a time per OUT: the lock names its holder, goes away with its run (errors and Ctrl-C
included), and a lock whose process died on this host is taken over."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from gpuillum.cli import main
from gpuillum.engine.job import JobError, run_plate
from gpuillum.io.run_lock import LOCK_NAME, FolderLocked, folder_lock

from test_engine import FAST, write_plate


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder, host, pid):
    (folder / LOCK_NAME).write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00"}))


def test_lock_is_held_inside_the_block_and_removed_after(tmp_path):
    with folder_lock(tmp_path) as path:
        assert json.loads(path.read_text())["host"] == socket.gethostname()
        with pytest.raises(FolderLocked, match=f"{LOCK_NAME}: another gpuillum run"):
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_is_removed_when_the_block_raises(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with folder_lock(tmp_path):
            raise KeyboardInterrupt
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    write_lock(tmp_path, socket.gethostname(), dead_pid())
    with folder_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] != dead_pid()
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("host, pid", [("another-node", 12345), ("this", "live")])
def test_lock_of_a_live_or_unknowable_run_is_refused(tmp_path, host, pid):
    if host == "this":
        host, pid = socket.gethostname(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, host, pid if isinstance(pid, int) else pid.pid)
        with pytest.raises(FolderLocked, match=f"pid .* on {host}, started 2026-01-01.*delete this lock file"):
            with folder_lock(tmp_path):
                pass
        assert (tmp_path / LOCK_NAME).exists()  # another run's lock is never removed
    finally:
        if not isinstance(pid, int):
            pid.kill()
            pid.wait()


def test_a_run_into_a_locked_out_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    out = tmp_path / "out"
    out.mkdir()
    write_lock(out, "another-node", 4242)
    code = main(["run", str(tmp_path / "in"), "-o", str(out), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pid 4242 on another-node" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_run_plate_releases_the_lock_after_success_and_failure(tmp_path, monkeypatch):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu")
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    import gpuillum.engine.apply as apply_module

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device", "somewhere")

    monkeypatch.setattr(apply_module, "write_corrected", failing)
    with pytest.raises((JobError, OSError)):
        run_plate(tmp_path / "in", tmp_path / "out2", settings=FAST, device="cpu")
    assert not (tmp_path / "out2" / LOCK_NAME).exists()
