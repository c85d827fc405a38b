"""Atomic writes: the target is either untouched or complete, and no temporary file survives."""
from __future__ import annotations

import os

import numpy as np
import pytest

from gpuillum.io.atomic import atomic_path, atomic_save_npy, atomic_write_bytes, remove_stale_temporaries, temporary_name


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_renames_on_success(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.startswith(".out.bin.tmp-")
        temporary.write_bytes(b"complete")
        assert not target.exists()
    assert target.read_bytes() == b"complete"
    assert _names(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_atomic_path_cleans_up_and_reraises(tmp_path, exception):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(exception)):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half writ")
            raise exception
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["out.bin"]


def test_atomic_path_without_a_written_file_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "never.bin"):
            pass
    assert _names(tmp_path) == []


def test_atomic_path_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c.bin"
    atomic_write_bytes(target, b"x")
    assert target.read_bytes() == b"x"


def test_temporary_names_are_unique_and_hidden(tmp_path):
    names = {temporary_name(tmp_path / "x.tif").name for _ in range(50)}
    assert len(names) == 50
    assert all(name.startswith(".x.tif.tmp-") for name in names)


def test_atomic_write_bytes_overwrites(tmp_path):
    target = tmp_path / "f.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two, longer")
    assert target.read_bytes() == b"two, longer"
    assert _names(tmp_path) == ["f.json"]


def test_atomic_save_npy_round_trip(tmp_path, rng):
    array = rng.random((7, 5)).astype(np.float32)
    atomic_save_npy(tmp_path / "f.npy", array)
    loaded = np.load(tmp_path / "f.npy")
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, array)


def test_atomic_save_npy_refuses_non_numpy(tmp_path):
    with pytest.raises(TypeError, match="array: expected a NumPy array"):
        atomic_save_npy(tmp_path / "f.npy", [[1, 2]])
    assert _names(tmp_path) == []


def test_atomic_save_npy_interrupted_leaves_nothing(tmp_path, monkeypatch):
    def interrupted_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        atomic_save_npy(tmp_path / "f.npy", np.zeros(3))
    assert _names(tmp_path) == []


def test_remove_stale_temporaries_keeps_those_of_live_processes(tmp_path):
    import subprocess
    import sys

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "sub").mkdir()
        stale = [tmp_path / f".a.tif.tmp-{finished.pid}-0123abcd", tmp_path / "sub" / f".b.npy.tmp-{finished.pid}-deadbeef",
                 tmp_path / ".e.tif.tmp-99999999999-0123abcd"]
        own = tmp_path / f".c.tif.tmp-{os.getpid()}-00000000"
        other_live_run = tmp_path / "sub" / f".f.tif.tmp-{running.pid}-00000000"
        keep = [tmp_path / "a.tif", tmp_path / ".hidden", tmp_path / ".d.tmp-notapid-0123abcd", own, other_live_run]
        for path in stale + keep:
            path.write_bytes(b"x")
        removed = remove_stale_temporaries(tmp_path)
        assert sorted(removed) == sorted(stale)
        assert all(path.exists() for path in keep)
        assert not any(path.exists() for path in stale)
    finally:
        running.kill()
        running.wait()


def test_remove_stale_temporaries_not_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    nested = tmp_path / "sub" / ".b.npy.tmp-99999999999-deadbeef"
    nested.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, recursive=False) == []
    assert nested.exists()


def test_remove_stale_temporaries_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        remove_stale_temporaries(tmp_path / "missing")
