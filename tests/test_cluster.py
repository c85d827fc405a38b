"""Dask execution: a 2-worker LocalCluster writes the same bytes as one in-process run; results
come back in order with bounded tasks in flight; per-GPU worker specs pin one GPU each."""
from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")

from gpuillum.engine.cluster import map_in_order, open_client, per_gpu_worker_specs, visible_gpus  # noqa: E402
from gpuillum.engine.job import run_plate  # noqa: E402

from test_engine import FAST, write_plate  # noqa: E402
from test_resume import outputs  # noqa: E402


def _slow_square(value):
    import time

    time.sleep(0.01 * (value % 4))
    return value * value


def test_in_process_needs_no_client():
    with open_client(workers=1) as client:
        assert client is None


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    # 40 images per channel: three accumulation batches, computed on different workers
    write_plate(tmp_path / "in", wells=("B02", "B03", "B04", "B05", "C02", "C03", "C04", "C05", "D02", "D03"), sites=4)
    one = run_plate(tmp_path / "in", tmp_path / "one", settings=FAST, device="cpu")
    two = run_plate(tmp_path / "in", tmp_path / "two", settings=FAST, device="cpu", workers=2)
    assert len(two.written) == len(one.written) == 80
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    with open_client(workers=2) as client:
        # results in submission order with at most 3 tasks in flight
        assert list(map_in_order(client, _slow_square, range(12), in_flight=3)) == [v * v for v in range(12)]


@pytest.mark.slow
def test_per_gpu_workers_each_see_one_device(monkeypatch):
    """The fallback GPU cluster (no dask-cuda): one single-threaded worker per id in CUDA_VISIBLE_DEVICES."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    specs = per_gpu_worker_specs(visible_gpus())
    assert [spec["options"]["env"] for spec in specs.values()] == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    from distributed import Client, Scheduler, SpecCluster

    cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["3", "5"]
            assert all(info["nthreads"] == 1 for info in client.scheduler_info()["workers"].values())
    finally:
        cluster.close()
