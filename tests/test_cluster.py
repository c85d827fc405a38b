"""Dask execution: a 2-worker LocalCluster writes the same bytes as one in-process run; results
come back in order with bounded tasks in flight; per-GPU worker specs pin one GPU each."""
from __future__ import annotations

import pytest

distributed = pytest.importorskip("distributed")

from gpuillum.job.cluster import (  # noqa: E402
    ClusterLost,
    check_scheduler_address,
    map_in_order,
    open_client,
    per_gpu_worker_specs,
    visible_gpus,
)
from gpuillum.job import JobError, run_plate  # noqa: E402

from test_engine import FAST, write_plate  # noqa: E402
from test_resume import environment_running, outputs, wait_for_a_corrected_file  # noqa: E402


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
def test_two_workers_apply_identical_functions_of_two_channels(tmp_path):
    # Both channels' functions are equal (Actin is a copy of DNA): scattered under one content-hashed
    # key, the first group's release used to cancel the second group's tasks ("lost dependencies").
    import shutil

    write_plate(tmp_path / "in", wells=("B02", "B03", "C02", "C03"), sites=4, channels=("DNA",))
    for path in list((tmp_path / "in").rglob("*_DNA.tif")):
        shutil.copy(path, path.with_name(path.name.replace("_DNA", "_Actin")))
    one = run_plate(tmp_path / "in", tmp_path / "one", settings=FAST, device="cpu")
    for attempt in range(3):  # the failure depended on timing; it took 3 of 4 runs before the fix
        two = run_plate(tmp_path / "in", tmp_path / f"two{attempt}", settings=FAST, device="cpu", workers=2)
        assert len(two.written) == len(one.written) == 32
        assert outputs(tmp_path / "one") == outputs(tmp_path / f"two{attempt}")


@pytest.mark.slow
def test_per_gpu_workers_each_see_one_device(monkeypatch):
    """The fallback GPU cluster (no dask-cuda): one single-threaded worker per id in CUDA_VISIBLE_DEVICES."""
    with monkeypatch.context() as env:  # only while the ids are read: the in-process scheduler keeps this machine's
        env.setenv("CUDA_VISIBLE_DEVICES", "3,5")
        assert visible_gpus() == ["3", "5"]
        specs = per_gpu_worker_specs(visible_gpus())
    assert [spec["options"]["env"] for spec in specs.values()] == [{"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    # ids 3 and 5 need not exist: on a machine with NVML, distributed's GPU monitor would open them in the
    # workers, which take their dask config from the nanny's (this process's), not from their environment
    import dask
    from distributed import Client, Scheduler, SpecCluster

    with dask.config.set({"distributed.diagnostics.nvml": False}):
        cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}})
    try:
        with Client(cluster) as client:
            seen = client.run(lambda: __import__("os").environ.get("CUDA_VISIBLE_DEVICES"))
            assert sorted(seen.values()) == ["3", "5"]
            assert all(info["nthreads"] == 1 for info in client.scheduler_info()["workers"].values())
    finally:
        cluster.close()


SLOW_WRITES = """
import time
import gpuillum.job.correct as apply_module

_write = apply_module.write_corrected


def _slow_write(*args, **kwargs):
    time.sleep(0.1)
    return _write(*args, **kwargs)


apply_module.write_corrected = _slow_write
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_name, exit_code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_to_the_whole_process_group_stops_a_dask_run_in_one_line(tmp_path, signal_name, exit_code, word):
    # Ctrl-C reaches every process of the terminal's group, scancel every process of the job:
    # the workers must leave the stop to the client (no traceback each, no restarts).
    import json
    import os
    import signal
    import subprocess
    import sys

    from gpuillum.io.run_lock import LOCK_NAME

    from test_cli import ARGS_RESUME

    write_plate(tmp_path / "in", wells=("B02", "B03", "B04", "C02", "C03", "C04"), sites=4)
    reference = tmp_path / "reference"
    run_plate(tmp_path / "in", reference, settings=FAST, device="cpu")
    env = environment_running(tmp_path, SLOW_WRITES)  # every process, workers included, writes slowly
    out = tmp_path / "out"
    command = [sys.executable, "-m", "gpuillum", "run", str(tmp_path / "in"), "-o", str(out), *ARGS_RESUME, "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    wait_for_a_corrected_file(out, process, seconds=120)
    assert process.poll() is None, "the run ended before it could be stopped"
    os.killpg(process.pid, getattr(signal, signal_name))
    err = process.communicate(timeout=60)[1]
    assert process.returncode == exit_code, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip().splitlines()[-1].startswith(f"gpuillum: {word}"), err
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name] and not (out / LOCK_NAME).exists()
    from gpuillum.cli import main

    assert main(["run", str(tmp_path / "in"), "-o", str(out), *ARGS_RESUME, "--resume"]) == 0
    assert outputs(out) == outputs(reference)


def _die(value):
    import os

    os._exit(3)


@pytest.mark.slow
def test_a_task_whose_workers_keep_dying_is_one_line_not_a_dask_traceback():
    from gpuillum.job.cluster import WorkerLost

    with open_client(workers=2) as client:
        with pytest.raises(WorkerLost, match=r"died \d+ times running task .*out of memory") as caught:
            list(map_in_order(client, _die, range(2)))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("address", ["tcp://node7:8786", "node7:8786", "tls://10.0.0.2:8786", "tcp://[::1]:8786", "inproc://x/1/2"])
def test_scheduler_addresses_dask_accepts_pass(address):
    check_scheduler_address(address)


@pytest.mark.parametrize("address, expected", [
    ("node7", "missing port number"),
    ("tcp://node7:x", "invalid literal"),
    ("tcp://node7:99999", "a port from 1 to 65535"),
    ("udp://node7:8786", "unknown address scheme 'udp'"),
])
def test_a_malformed_scheduler_address_is_refused_before_out_exists(tmp_path, address, expected):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    with pytest.raises(JobError, match=f"^scheduler: expected .*{expected}") as caught:
        run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu", scheduler=address)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_cli_names_a_malformed_scheduler_address_in_one_line(tmp_path, capsys):
    from gpuillum.cli import main

    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scheduler", "node7"]) == 2
    assert capsys.readouterr().err.strip() == ("gpuillum: error: scheduler: expected an address like tcp://host:8786, "
                                               "got 'node7' (missing port number in address 'node7')")


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_scheduler_that_does_not_answer_is_one_line():
    import dask

    address = f"tcp://127.0.0.1:{_closed_port()}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(ClusterLost, match=f"^scheduler {address}: cannot connect \\(Timed out trying to connect to {address} after 1 s\\)$") as caught:
            with open_client(scheduler=address):
                pass
    assert "\n" not in str(caught.value)


SCHEDULER_SCRIPT = """
import sys, time
from distributed import LocalCluster

if __name__ == "__main__":
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, scheduler_port=0, dashboard_address=None)
    print(cluster.scheduler_address, flush=True)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_scheduler_lost_mid_run_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    # An external cluster (e.g. dask-jobqueue whose allocation ended) dies after the first channel's
    # function: one line naming the scheduler, the manifest says failed, a resumed run finishes in-process.
    import json
    import os
    import signal
    import subprocess
    import sys

    import dask

    from gpuillum.io.run_lock import LOCK_NAME
    from gpuillum.job import estimate as estimate_module

    write_plate(tmp_path / "in", wells=("B02", "B03", "C02"), sites=2)
    run_plate(tmp_path / "in", tmp_path / "reference", settings=FAST, device="cpu")
    (tmp_path / "scheduler.py").write_text(SCHEDULER_SCRIPT)
    cluster = subprocess.Popen([sys.executable, str(tmp_path / "scheduler.py")], stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.DEVNULL, start_new_session=True,
                               env=dict(os.environ, GPUILLUM_DISABLE_GPU="1"))
    calculated = []
    calculate = estimate_module.estimate_group

    def calculate_then_lose_the_cluster(job, group):
        if calculated and cluster.poll() is None:  # the second channel: scheduler and worker die first
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
        calculate(job, group)
        calculated.append(group.channel)

    monkeypatch.setattr(estimate_module, "estimate_group", calculate_then_lose_the_cluster)
    try:
        address = cluster.stdout.readline().strip()
        assert address.startswith("tcp://"), "the test cluster did not start"
        # the client waits this long for the scheduler to come back (30 s by default)
        with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
            with pytest.raises(ClusterLost, match=f"^lost the Dask scheduler at {address}: .*rerun with --resume") as caught:
                run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu", scheduler=address)
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()
    assert "\n" not in str(caught.value)
    assert len(calculated) == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == str(caught.value)
    assert [name for name in manifest["files"] if name.endswith(".npy")] == [f"illum/P1_Illum{calculated[0]}.npy"]
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp-" in p.name]
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    monkeypatch.undo()  # GPUILLUM_QC too (conftest): this run says it
    resumed = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu", resume=True, qc=False)
    assert len(resumed.written) == 12
    assert outputs(tmp_path / "out") == outputs(tmp_path / "reference")


# ----------------------------------------------------------------------------- worker caps (issue 17, case 9)


@pytest.mark.parametrize("command", ["run", "demo"])
def test_more_cpu_workers_than_cores_are_refused_before_out_exists(tmp_path, capsys, command):
    # --workers 100 on a 2-core machine stalled for 5 minutes, then printed "TimeoutError"
    from gpuillum.cli import main
    from gpuillum.job.cluster import usable_cores

    cores = usable_cores()
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    where = [str(tmp_path / "in"), "-o", str(tmp_path / "out")] if command == "run" else [str(tmp_path / "out")]
    assert main([command, *where, "--workers", str(cores + 1), "--device", "cpu", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpuillum: error: workers: {cores + 1} worker processes, but this machine has {cores} CPU cores; "
                   f"use --workers {cores} or fewer (each worker is a Python process that takes about a second to "
                   "start, longer on a busy machine), or a larger cluster with --scheduler")
    assert not (tmp_path / "out").exists()
    with pytest.raises(JobError, match=f"^workers: {cores + 1} worker processes"):
        run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu", workers=cores + 1)


def test_more_gpu_workers_than_visible_gpus_are_refused(monkeypatch):
    from gpuillum.job import cluster

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError, match=r"^workers: 2 GPU workers, but 1 GPU is visible \(CUDA_VISIBLE_DEVICES 3\); "
                                         r"use --workers 1 \(one worker per GPU\)"):
        cluster.check_workers(2, gpu=True)
    assert cluster.check_workers(1, gpu=True) == 1
    assert cluster.check_workers(10**6, gpu=False, scheduler="tcp://node7:8786") == 10**6  # the cluster's own size


def test_a_local_cluster_that_does_not_start_in_time_is_one_line(monkeypatch):
    import distributed as dd

    def slow(*args, **kwargs):
        raise TimeoutError("Nanny start timed out after 60s.")

    monkeypatch.setattr(dd, "LocalCluster", slow)
    with pytest.raises(ClusterLost, match=r"^the local Dask cluster did not start its 2 workers \(Nanny start timed out "
                                          r"after 60s\.\); use fewer --workers") as caught:
        with open_client(workers=2):
            pass
    assert "\n" not in str(caught.value)
