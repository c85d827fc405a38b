"""Smoke runs of the benchmark scripts (tiny sizes): scripts/gpu_check.sh runs them on a lent GPU
with little device time, so a broken argument, field or file name must show up here first. The
timings themselves are not checked (speed is measured in benchmarks/, never asserted)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_cellprofiler, bench_kernels, bench_plate, common, summarize  # noqa: E402
from gpuillum.backend import gpu_available  # noqa: E402

needs_centrosome = pytest.mark.skipif(importlib.util.find_spec("centrosome") is None,
                                      reason="CellProfiler's reference path needs centrosome (pip install -e .[test])")


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS_DIR", folder)
    return folder


def _only_result(folder: Path, kind: str) -> dict:
    files = sorted(folder.glob(f"{kind}-*.json"))
    assert [p.name.endswith("-quick.json") for p in files] == [True], files
    return json.loads(files[0].read_text())


@needs_centrosome
def test_cellprofiler_benchmark_writes_every_field_and_summarises(results_dir, capsys):
    chosen = ["each-median-auto", "each-median-auto-16bit", "all-median-auto", "jump"]
    bench_cellprofiler.main(["--quick", "--only", *chosen])
    data = _only_result(results_dir, "cellprofiler")
    assert data["quick"] is True and [r["setting"] for r in data["results"]] == chosen
    for record in data["results"]:
        assert record["speedup_cpu"] == pytest.approx(record["cellprofiler_cpu_s"] / record["gpuillum_cpu_s"])
        assert record["median_radius"] >= 1 and record["gpuillum_cpu_threads"] >= 1
        if record["setting"].startswith("each-"):
            assert len(record["gpuillum_cpu_per_image_s"]) == len(record["cellprofiler_cpu_per_image_s"]) == record["cp_images_timed"] == 2
            assert isinstance(record["gpuillum_cpu_plate_s_per_image"], float)
            assert record["speedup_cpu_1thread"] == pytest.approx(record["cellprofiler_cpu_s"] / record["gpuillum_cpu_1thread_s"])
            assert record["thread_scaling"] == pytest.approx(record["gpuillum_cpu_1thread_s"] / record["gpuillum_cpu_s"])
        else:
            assert "gpuillum_cpu_per_image_s" not in record
    assert set(data["targets"]) == {"each-median-auto >= 50x on CPU", "each-median-auto-16bit >= 50x on CPU",
                                    "all-median-auto >= 1x on CPU", "jump >= 1x on CPU"}
    table = summarize.cellprofiler_table(sorted(results_dir.glob("cellprofiler-*.json"))[0])
    assert all(f"| {name} |" in table for name in chosen)
    assert "each-median-auto (12-bit, 6 images)" in table and "each-median-auto-16bit (16-bit, 2 images)" in table
    assert "gpuillum on one thread, per image: each-median-auto " in table


def test_cellprofiler_benchmark_names_an_unknown_setting(results_dir, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_cellprofiler.main(["--quick", "--only", "each-median-manual"])
    assert stopped.value.code == 2
    assert "unknown settings ['each-median-manual']" in capsys.readouterr().err
    assert not results_dir.exists()


def test_kernel_benchmark_smoke_run(results_dir):
    assert bench_kernels.main(["--sizes", "48", "--radii", "3", "--repeats", "1", "--kernels", "median_filter", "block_minimum"]) == 0
    files = sorted(results_dir.glob("kernels-*.json"))
    assert len(files) == 1 and not files[0].name.endswith("-quick.json")  # not --quick: a full-run name
    data = json.loads(files[0].read_text())
    assert {(r["kernel"], r["params"].get("footprint"), r["params"].get("dtype")) for r in data["results"]} == {
        ("median_filter", "disk", None), ("median_filter", "square", None), ("median_filter", "disk", "float32"),
        ("block_minimum", None, None)}
    assert all(isinstance(r["gpuillum"]["median_s"], float) for r in data["results"])
    assert "| median_filter | 48 |" in summarize.kernels_table(files)


@needs_centrosome
def test_plate_benchmark_smoke_run(results_dir):
    assert bench_plate.main(["--quick", "--workers", "1"]) == 0
    data = _only_result(results_dir, "plate")
    variants = [r["variant"] for r in data["results"]]
    assert ("gpuillum gpu" in variants) == gpu_available()
    assert [v for v in variants if v != "gpuillum gpu"] == ["io-floor", "gpuillum cpu workers=1", "cellprofiler path"]
    assert data["images"] == 32 and data["summary"]["best_cpu_variant"] == "gpuillum cpu workers=1"
    table = summarize.plate_table(sorted(results_dir.glob("plate-*.json"))[0])
    assert "| io-floor |" in table and table.startswith("32 images (sites x channels)")  # 16 sites x 2 channels


def test_background_benchmark_smoke_run(results_dir):
    from benchmarks import bench_background

    assert bench_background.main(["--quick"]) == 0
    data = _only_result(results_dir, "background")
    kernels = [r["kernel"] for r in data["results"]]
    assert kernels == ["rolling_ball_imagej", "sliding_paraboloid"] * 2 + ["rolling_ball"] + ["projection"] * 6
    for row in data["results"]:
        assert isinstance(row["gpuillum"]["median_s"], float)
        if row["kernel"] == "projection":
            assert row["ratio_to_read"] == pytest.approx(row["gpuillum"]["median_s"] / row["peer"]["median_s"])
        elif "median_s" in row["peer"]:  # ImageJ installed (CI): the outputs are ImageJ's
            assert row["speedup"] > 0 and row.get("identical", row.get("identical_on_crop")) is True
    assert "| rolling_ball_imagej | 192^2 uint16 | radius 12 |" in bench_background.markdown_table(data["results"])


def test_summary_leaves_out_quick_runs(tmp_path):
    for name in ("plate-cpu-20260101.json", "plate-cpu-20260102-quick.json", "kernels-cpu-20260101-quick.json"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in summarize.full_runs(tmp_path, "plate")] == ["plate-cpu-20260101.json"]
    assert summarize.full_runs(tmp_path, "kernels") == []


def test_summary_keeps_the_later_run_by_its_recorded_date_not_the_file_time(tmp_path):
    """A fresh clone gives every file the same modification time: the run's own date decides."""
    import os

    def run(date: str, ours_s: float) -> str:
        entry = {"kernel": "median_filter", "params": {"size": 48, "radius": 3}, "best_peer": "skimage",
                 "peers": {"skimage": {"median_s": 1.0}}, "gpuillum": {"median_s": ours_s}}
        return json.dumps({"machine": {"date": date, "cpu_count": 2}, "args": {}, "results": [entry]})

    newer = tmp_path / "kernels-cpu-20260102.json"
    older = tmp_path / "kernels-cpu-20260101.json"
    newer.write_text(run("2026-01-02T08:00:00+00:00", 0.5))
    older.write_text(run("2026-01-01T08:00:00+00:00", 0.25))
    os.utime(newer, (1_000, 1_000))  # the older run's file looks modified last
    table = summarize.kernels_table(summarize.full_runs(tmp_path, "kernels"))
    assert "| median_filter | 48 | 400 | radius 3 | 500.0 |" in table and "250.0" not in table


def test_summary_keeps_cpu_and_gpu_kernel_runs_apart(tmp_path):
    entry = {"kernel": "median_filter", "params": {"size": 48, "radius": 3}, "best_peer": None, "peers": {}, "gpuillum": {"median_s": 0.5}}
    for name, gpu, date in [("kernels-gpu-H100-20260102.json", {"name": "H100"}, "2026-01-02"), ("kernels-cpu-20260101.json", None, "2026-01-01")]:
        (tmp_path / name).write_text(json.dumps({"machine": {"date": date, "gpu": gpu}, "args": {}, "results": [entry]}))
    groups = summarize.by_device(summarize.full_runs(tmp_path, "kernels"))
    assert {device: [p.name for p in files] for device, files in groups.items()} == {
        "CPU": ["kernels-cpu-20260101.json"], "GPU: H100": ["kernels-gpu-H100-20260102.json"]}
    assert list(groups) == ["CPU", "GPU: H100"]


def test_cellprofiler_summary_shows_the_gpu_time_with_the_upload_first(tmp_path):
    row = {"setting": "jump", "images": 96, "timing": "whole plate", "gpuillum_cpu_s": 0.08, "cellprofiler_cpu_s": 2.5,
           "speedup_cpu": 31.25, "gpu_s": 0.005, "gpu_with_upload_s": 0.04, "speedup_gpu": 500.0}
    each = {key: value for key, value in row.items() if key != "gpu_with_upload_s"} | {"setting": "each-median-auto"}
    machine = {"date": "2026-01-02", "gpu": {"name": "H100"}, "commit": "abc1234"}
    path = tmp_path / "cellprofiler-gpu-H100-20260102.json"
    path.write_text(json.dumps({"machine": machine, "arguments": {"size": 1080}, "results": [row, each]}))
    table = summarize.cellprofiler_table(path)
    assert "| speed-up | GPU s, images uploaded | GPU s, images already on the GPU |" in table
    assert "| 31.2x | 0.0400 (62x) | 0.0050 (500x) |" in table and "| 31.2x | - | 0.0050 (500x) |" in table
    assert "gpuillum at abc1234" in table


def test_benchmarks_record_the_commit_they_measure(monkeypatch):
    monkeypatch.setenv("GPUILLUM_COMMIT", "abc1234-dirty")
    assert common.machine_description()["commit"] == "abc1234-dirty"
    monkeypatch.delenv("GPUILLUM_COMMIT")
    described = common.source_commit()  # this checkout's commit, "-dirty" with changes; None without git
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert described is None or (len(described) >= 7 and head.startswith(described.removesuffix("-dirty")))


def test_median_background_accuracy_smoke_run(results_dir):
    from benchmarks import accuracy_median_background

    assert accuracy_median_background.main(["--quick"]) == 0
    data = _only_result(results_dir, "accuracy-median-background")
    assert [(r["radius"], r["downsample"]) for r in data["results"]] == list(accuracy_median_background.CASES)
    for row in data["results"]:
        assert len(row["per_field"]) == 2 and 0 < row["mean_vs_exact"] <= row["max_vs_exact"]
    path = sorted(results_dir.glob("accuracy-median-background-*.json"))[0]
    assert "| 16 | 2 (auto) |" in summarize.accuracy_table(path)


def test_cell_field_covers_the_requested_share():
    from benchmarks.accuracy_median_background import cell_field

    image, truth = cell_field(np.random.default_rng(0), 96, 0.2)
    assert image.dtype == np.uint16 and image.shape == truth.shape == (96, 96)
    assert 0.15 < np.mean(image > 1.5 * truth) < 0.3  # noise blurs the 1.5x edge a little


def test_flatfield_benchmarks_smoke_run(results_dir):
    from benchmarks import accuracy_flatfield, bench_flatfield

    assert accuracy_flatfield.main(["--quick", "--no-demos", "--shapes", "gaussian"]) == 0
    data = _only_result(results_dir, "accuracy-flatfield")
    assert {r["method"] for r in data["synthetic"]} == {"gpuillum", "jump", "polynomial"}
    assert "| gpuillum |" in data["table"] and all(np.isfinite(r["flat_error_percent"]) for r in data["synthetic"])
    assert bench_flatfield.main(["--quick"]) == 0
    speed = _only_result(results_dir, "flatfield")
    assert speed["results"][0]["gpuillum_s_per_image"] > 0 and "speedup_vs_basicpy" not in speed["results"][0]
