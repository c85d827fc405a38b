"""Run manifests: checksums, completeness after tampering, atomic JSON save/load."""
from __future__ import annotations

import hashlib
import json
import re
import pickle
import threading

import pytest

from gpuillum.io.manifest import Manifest, collect_versions, file_sha256, input_stamp


def _file(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_file_sha256_streams_large_files(tmp_path, rng):
    data = rng.integers(0, 256, 2_500_000, dtype="uint8").tobytes()  # more than two 1 MiB chunks
    assert file_sha256(_file(tmp_path / "big.bin", data)) == hashlib.sha256(data).hexdigest()


def test_record_file(tmp_path):
    path = _file(tmp_path / "P" / "a.tif", b"corrected pixels")
    manifest = Manifest()
    entry = manifest.record_file("P/a.tif", path, "corrected", source="P/a.tif", inputs="stamp")
    assert entry == {"sha256": hashlib.sha256(b"corrected pixels").hexdigest(), "bytes": 16, "role": "corrected",
                     "source": "P/a.tif", "inputs": "stamp"}
    assert manifest.files == {"P/a.tif": entry}


def test_record_file_rejects_unknown_roles(tmp_path):
    with pytest.raises(ValueError, match="role: expected one of corrected, illum, preview"):
        Manifest().record_file("a", _file(tmp_path / "a", b"x"), "output")


def test_is_complete_detects_tampering(tmp_path):
    path = _file(tmp_path / "a.tif", b"0123456789")
    manifest = Manifest()
    manifest.record_file("a.tif", path, "corrected")
    assert manifest.is_complete("a.tif", path)
    assert not manifest.is_complete("other.tif", path)
    path.write_bytes(b"0123456780")  # same size, different content
    assert not manifest.is_complete("a.tif", path)
    path.write_bytes(b"01234")  # truncated
    assert not manifest.is_complete("a.tif", path)
    path.unlink()
    assert not manifest.is_complete("a.tif", path)


def test_is_complete_compares_the_inputs_stamp_when_given(tmp_path):
    path = _file(tmp_path / "a.tif", b"0123456789")
    manifest = Manifest()
    manifest.record_file("a.tif", path, "corrected", inputs="made-from-A")
    assert manifest.is_complete("a.tif", path, "made-from-A") and manifest.is_complete("a.tif", path)
    assert not manifest.is_complete("a.tif", path, "made-from-B")


def test_input_stamp_follows_size_mtime_names_and_extra_not_path_spelling(tmp_path, monkeypatch):
    import os

    a, b = _file(tmp_path / "a.tif", b"aaaa"), _file(tmp_path / "b.tif", b"bb")
    stamp = input_stamp([("a.tif", a), ("b.tif", b)])
    assert stamp == input_stamp([("a.tif", a), ("b.tif", b)])
    monkeypatch.chdir(tmp_path)
    assert stamp == input_stamp([("a.tif", "a.tif"), ("b.tif", "./b.tif")])  # INPUT spelled otherwise
    assert stamp != input_stamp([("a.tif", a), ("b.tif", b)], extra="function sha")
    assert stamp != input_stamp([("a.tif", a)])
    assert stamp != input_stamp([("x.tif", a), ("b.tif", b)])
    status = b.stat()
    os.utime(b, ns=(status.st_atime_ns, status.st_mtime_ns + 1))  # touched: same bytes, new mtime
    assert stamp != input_stamp([("a.tif", a), ("b.tif", b)])
    touched = input_stamp([("a.tif", a), ("b.tif", b)])
    b.write_bytes(b"bbb")
    os.utime(b, ns=(status.st_atime_ns, status.st_mtime_ns + 1))  # same mtime, other size
    assert touched != input_stamp([("a.tif", a), ("b.tif", b)])
    assert input_stamp([("gone.tif", tmp_path / "gone.tif")]) == "unreadable"


def test_save_load_round_trip(tmp_path):
    manifest = Manifest(settings={"preset": "jump", "radius": 50}, versions=collect_versions(), devices=["cpu"])
    manifest.record_file("P/P_IllumDNA.npy", _file(tmp_path / "out" / "P" / "P_IllumDNA.npy", b"npy"), "illum")
    manifest.timings["reduce_s"] = 1.25
    manifest.add_skipped("P/bad.tif", "P/bad.tif: truncated")
    target = tmp_path / "out" / "manifest.json"
    manifest.save(target)
    loaded = Manifest.load(target)
    assert loaded == manifest
    assert loaded.is_complete("P/P_IllumDNA.npy", tmp_path / "out" / "P" / "P_IllumDNA.npy")
    assert json.loads(target.read_text())["format"] == "gpuillum-manifest"
    assert sorted(p.name for p in target.parent.iterdir()) == ["P", "manifest.json"]
    assert "numpy" in loaded.versions and "python" in loaded.versions


@pytest.mark.parametrize("text, message", [("{not json", "not a readable gpuillum manifest"), ('{"files": {}}', "not a gpuillum manifest"),
                                           ('{"format": "gpuillum-manifest", "format_version": 99}', "newer than this gpuillum reads")])
def test_load_refuses_other_files(tmp_path, text, message):
    (tmp_path / "m.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        Manifest.load(tmp_path / "m.json")


@pytest.mark.parametrize("change, message", [
    ({"files": [1, 2]}, '"files" is not a mapping'),
    ({"settings": None}, '"settings" is not a mapping'),
    ({"skipped": {}}, '"skipped" is not a list'),
    ({"files": {"corrected/a.tif": "x"}}, 'the entry of "corrected/a.tif" in "files" is not a file record'),
    ({"files": {"corrected/a.tif": {"sha256": "00", "bytes": "12", "role": "corrected"}}}, 'the entry of "corrected/a.tif"'),
    ({"files": {"corrected/a.tif": {"sha256": "00", "bytes": 12, "role": "other"}}}, 'the entry of "corrected/a.tif"'),
    ({"skipped": ["a.tif"]}, 'an entry of "skipped" is not a mapping'),
])
def test_load_refuses_a_manifest_of_the_wrong_shape(tmp_path, change, message):
    # a hand-edited or foreign file must be one line naming it, never an AttributeError later
    target = tmp_path / "manifest.json"
    data = {**Manifest(settings={"run": 1}).to_dict(), **change}
    target.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"^{re.escape(str(target))}: not a readable gpuillum manifest \\({re.escape(message)}"):
        Manifest.load(target)


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="no such manifest file"):
        Manifest.load(tmp_path / "m.json")


def test_interrupted_save_keeps_previous_manifest(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    Manifest(settings={"run": 1}).save(target)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Manifest(settings={"run": 2}).save(target)
    assert Manifest.load(target).settings == {"run": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_pickles_and_records_from_threads(tmp_path):
    paths = [_file(tmp_path / f"{i}.tif", bytes([i]) * (i + 1)) for i in range(16)]
    manifest = Manifest()
    threads = [threading.Thread(target=manifest.record_file, args=(p.name, p, "corrected")) for p in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(manifest.files) == sorted(p.name for p in paths)
    clone = pickle.loads(pickle.dumps(manifest))
    assert clone == manifest
    clone.add_skipped("x", "y")  # the lock survives pickling
    assert clone.skipped == [{"path": "x", "reason": "y"}]


def test_record_entry_checks_the_role_and_matches_record_file(tmp_path):
    from gpuillum.io.manifest import Manifest, file_sha256

    path = tmp_path / "a.bin"
    path.write_bytes(b"abc")
    first, second = Manifest(), Manifest()
    first.record_file("a.bin", path, "corrected", "in/a.tif")
    second.record_entry("a.bin", file_sha256(path), 3, "corrected", "in/a.tif")
    assert first.files == second.files
    with pytest.raises(ValueError, match="role"):
        second.record_entry("b.bin", "0" * 64, 1, "bogus")


def test_remove_outputs_deletes_listed_outputs_by_place_and_kind_only(tmp_path):
    # issue 17, case 12: what --overwrite deletes
    from gpuillum.io.manifest import is_output, remove_outputs

    out = tmp_path / "out"
    outputs = ["illum/P1_IllumDNA.npy", "illum/P1_IllumDNA.png", "corrected/P1/a/B02_s1_DNA.tif", "corrected/load_data.csv"]
    others = ["notes.txt", "illum/notes.txt", "corrected/P1/keep.tif", "corrected/x.csv"]
    for relpath in outputs + others:
        (out / relpath).parent.mkdir(parents=True, exist_ok=True)
        (out / relpath).write_bytes(b"x")
    (tmp_path / "victim.tif").write_bytes(b"the user's")
    (out / "corrected" / "P1" / "link.tif").symlink_to(tmp_path / "victim.tif")
    (out / "corrected" / "linked").symlink_to(out / "corrected" / "P1", target_is_directory=True)
    listed = outputs[:3] + ["notes.txt", "illum/notes.txt", "corrected/x.csv", "corrected/P1/link.tif", "corrected/linked/keep.tif", "corrected/../notes.txt",
                                     str(out / "notes.txt"), "corrected/P1/missing.tif"]
    removed = remove_outputs(out, listed, fixed=("corrected/load_data.csv",))
    assert sorted(p.relative_to(out).as_posix() for p in removed) == sorted(outputs)
    assert all((out / relpath).read_bytes() == b"x" for relpath in others)
    assert (tmp_path / "victim.tif").read_bytes() == b"the user's" and (out / "corrected" / "P1" / "link.tif").is_symlink()
    assert not (out / "corrected" / "P1" / "a").exists() and (out / "illum").is_dir()  # emptied folders go, others stay
    assert [is_output(r) for r in ("illum/a.npy", "illum/sub/a.png", "corrected/a.TIF", "illum/a.tif", "x.npy", "/illum/a.npy",
                                   "corrected\\..\\a.tif")] == [True, True, True, False, False, False, False]
