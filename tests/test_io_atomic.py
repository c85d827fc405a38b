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


def test_remove_stale_temporaries_not_recursive(tmp_path):
    (tmp_path / "sub").mkdir()
    nested = tmp_path / "sub" / ".b.npy.tmp-99999999999-deadbeef"
    nested.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, recursive=False) == []
    assert nested.exists()


def test_remove_stale_temporaries_needs_a_folder(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        remove_stale_temporaries(tmp_path / "missing")


# ----------------------------------------------------------------------------- hostile inputs (issue 17)


def test_temporaries_of_the_longest_legal_names_fit_and_stay_recognisable(tmp_path):
    # case 5: ".<name>.tmp-<pid>-<hex>" adds ~20 bytes; a 236..255-byte name must still be writable
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    names = ["a" * limit, "é" * (limit // 2), "x" * (limit - 24) + ".tif", "short.tif"]  # "é" is 2 bytes in UTF-8
    for name in names:
        target = tmp_path / name
        temporary = temporary_name(target)
        assert len(os.fsencode(temporary.name)) <= limit and temporary.parent == tmp_path
        assert temporary.name.startswith("." + name[:8]) and ".tmp-" in temporary.name
        atomic_write_bytes(target, name.encode())
        assert target.read_bytes() == name.encode()
        temporary.write_bytes(b"left by a killed run")
        assert remove_stale_temporaries(tmp_path) == [temporary]
    assert temporary_name(tmp_path / "short.tif").name.startswith(".short.tif.tmp-")  # names that fit are unchanged


def test_remove_stale_temporaries_removes_those_named_with_live_pids(tmp_path):
    # case 11: the caller holds the folder's run lock, so no temporary there is in flight, even one
    # named with a live pid: pid 1 (a run that was a container's first process) or a recycled one
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / ".a.tif.tmp-1-0123abcd", tmp_path / "sub" / f".b.npy.tmp-{os.getpid()}-deadbeef",
             tmp_path / f".c.png.tmp-{os.getppid()}-00000000", tmp_path / "sub" / ".e.tif.tmp-99999999999-0123abcd"]
    keep = [tmp_path / "a.tif", tmp_path / ".hidden", tmp_path / ".d.tmp-notapid-0123abcd"]
    for path in stale + keep:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(path.exists() for path in keep)


def test_a_link_planted_at_the_temporary_name_is_never_written_through(tmp_path, monkeypatch):
    # case 1: temporaries are created with O_CREAT | O_EXCL | O_NOFOLLOW
    import gpuillum.io.atomic as atomic

    monkeypatch.setattr(atomic.secrets, "token_hex", lambda n: "0badf00d")
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"the user's file")
    target = tmp_path / "manifest.json"
    temporary_name(target).symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic_write_bytes(target, b"{}")
    assert victim.read_bytes() == b"the user's file" and not target.exists()


def test_a_write_error_names_the_final_file_not_the_temporary(tmp_path, monkeypatch):
    # cosmetic: a full disk while writing a PNG must name the PNG (the OSError carried no file name)
    import errno

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as caught:
        atomic_write_bytes(tmp_path / "P1_IllumDNA.png", b"png bytes")
    assert caught.value.filename == str(tmp_path / "P1_IllumDNA.png") and caught.value.errno == errno.ENOSPC
    assert _names(tmp_path) == []
