"""Where the plate tasks run: in this process, a local Dask cluster, or an existing scheduler.

* ``workers <= 1`` and no scheduler: in-process (threads decode; no Dask at all).
* CPU, ``workers = N``: ``distributed.LocalCluster(n_workers=N, threads_per_worker=1,
  processes=True, dashboard_address=None)``.
* GPU, ``workers = N``: ``dask_cuda.LocalCUDACluster`` when dask-cuda imports, otherwise one
  ``distributed`` worker process per visible GPU, each with its own ``CUDA_VISIBLE_DEVICES`` (so
  every worker computes on its "cuda:0").
* ``scheduler = ADDRESS``: connect to a running cluster (SLURM/PBS through dask-jobqueue, ...).

Results come back in submission order with a bounded number of tasks in flight, so the client
merges partial sums in a fixed order and holds only a few of them at a time. A cluster that
cannot be reached or is lost raises ``ClusterLost``, workers that keep dying ``WorkerLost``: one
line each, never Dask's tracebacks.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque

from .stopping import deferred_stops
from ..errors import InvalidType, InvalidValue


def visible_gpus() -> list[str]:
    """The CUDA device ids this process may hand out, one worker each."""
    from gpuillum.backend import gpu_count

    listed = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if listed:
        return [item.strip() for item in listed.split(",") if item.strip()]
    return [str(index) for index in range(gpu_count())]


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_workers(workers: int, *, gpu: bool, scheduler: str | None = None) -> int:
    """Refuse, before anything is written, more local workers than this machine can start: more
    worker processes than CPU cores, or more GPU workers than visible GPUs (one worker each).
    Each worker is a Python process that takes about a second to start (longer on a busy
    machine); a local cluster the machine cannot hold stalls until Dask's start timeout. With a
    ``scheduler`` the cluster has its own size and ``workers`` is not used. Returns ``workers``.

    >>> check_workers(2, gpu=False)  # doctest: +SKIP
    2
    """
    if scheduler is not None or workers <= 1:
        return workers
    if gpu:
        gpus = visible_gpus()
        if workers > len(gpus):
            listed = f" (CUDA_VISIBLE_DEVICES {os.environ['CUDA_VISIBLE_DEVICES']})" if os.environ.get("CUDA_VISIBLE_DEVICES") else ""
            raise InvalidValue(f"workers: {workers} GPU workers, but {len(gpus)} GPU{' is' if len(gpus) == 1 else 's are'} "
                             f"visible{listed}; use --workers {max(1, len(gpus))} (one worker per GPU)")
        return workers
    cores = usable_cores()
    if workers > cores:
        raise InvalidValue(f"workers: {workers} worker processes, but this machine has {cores} CPU cores; use --workers "
                         f"{cores} or fewer (each worker is a Python process that takes about a second to start, longer "
                         "on a busy machine), or a larger cluster with --scheduler")
    return workers


# Clusters this module starts keep their logs to themselves: what goes wrong in a task comes back to
# the client as its result or exception, and shutting down can log harmless races (a heartbeat to a
# scheduler that already closed) that would read like failures.
CLUSTER_LOG_LEVEL = logging.CRITICAL
# No dashboard; the scheduler's HTTP endpoints (health, metrics) take a free port instead of trying
# 8787 and warning when another cluster on the host has it.
SCHEDULER_HTTP = {"dashboard": False, "dashboard_address": ":0"}
WORKER_PRELOAD = "gpuillum.job.worker_signals"  # workers leave SIGINT and SIGTERM to the client


class WorkerLost(InvalidValue):
    """A worker process died while running a task (killed for memory, or crashed); one line."""


class ClusterLost(InvalidValue):
    """The job could not reach its Dask cluster, or lost it (the scheduler stopped, the connection
    broke, the scheduler cancelled the job's tasks); one line."""


_HOST_PORT_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")


def check_scheduler_address(address: str) -> None:
    """Refuse an ``address`` that cannot name a Dask scheduler (no port, a port out of range, an
    unknown scheme) before anything is written; ``host:port`` means tcp, as for Dask's Client."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend

    if not isinstance(address, str):
        raise InvalidType(f"scheduler: expected an address like tcp://host:8786, got {address!r}")
    try:
        scheme, location = parse_address(address, strict=False)
        get_backend(scheme)
        port = parse_host_port(location)[1] if scheme in _HOST_PORT_SCHEMES else 1
    except ValueError as error:
        raise InvalidValue(f"scheduler: expected an address like tcp://host:8786, got {address!r} ({error})") from None
    if not 0 < port < 65536:
        raise InvalidValue(f"scheduler: expected a port from 1 to 65535 in {address!r}")


def _cluster_errors() -> tuple[type[BaseException], ...]:
    """Exceptions by which Dask reports a cluster gone, as opposed to an error of the job's own."""
    from concurrent.futures import CancelledError  # the base of Dask's FutureCancelledError

    from distributed.comm.core import CommClosedError

    return CancelledError, CommClosedError


def _cluster_error_text(error: BaseException) -> str:
    """What happened, without Dask's connection-object repr ("in <TCP (closed) ...>: ")."""
    from concurrent.futures import CancelledError

    if isinstance(error, CancelledError):
        reason = getattr(error, "reason", None)  # FutureCancelledError: "scheduler-connection-lost", ...
        return "its tasks were cancelled" + (f" ({reason})" if reason and reason != "unknown" else "")
    lines = str(error).strip().splitlines()
    return (lines[0].rpartition(">: ")[2] if lines else "") or type(error).__name__


@contextlib.contextmanager
def _quiet_dask_logs():
    """Silence Dask's loggers in this process while the job's client is open: what goes wrong
    reaches the job as an exception and is said in one line, and a lost scheduler would
    otherwise also be logged ("Failed to reconnect", a cancelled reconnection's traceback)."""
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.split(".")[0] == "distributed"]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(CLUSTER_LOG_LEVEL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def per_gpu_worker_specs(gpu_ids) -> dict:
    """SpecCluster worker specs: one single-threaded Nanny per GPU, pinned with CUDA_VISIBLE_DEVICES."""
    from distributed import Nanny

    return {
        f"gpu-{gpu}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": str(gpu)},
                                                 "silence_logs": CLUSTER_LOG_LEVEL, "preload": [WORKER_PRELOAD]}}
        for gpu in gpu_ids
    }


def _gpu_cluster(workers: int):
    gpu_ids = visible_gpus()[:workers]
    if not gpu_ids:
        raise InvalidValue("workers: no visible CUDA GPU to start GPU workers on")
    try:
        from dask_cuda import LocalCUDACluster
    except Exception:  # not installed, or installed without its cuda bindings (see ci-and-gpu.md 6)
        from distributed import Scheduler, SpecCluster

        return SpecCluster(
            workers=per_gpu_worker_specs(gpu_ids),
            scheduler={"cls": Scheduler, "options": SCHEDULER_HTTP},
        )
    return LocalCUDACluster(CUDA_VISIBLE_DEVICES=",".join(gpu_ids), threads_per_worker=1, dashboard_address=None,
                            scheduler_kwargs=SCHEDULER_HTTP, silence_logs=CLUSTER_LOG_LEVEL, preload=[WORKER_PRELOAD])


def _local_cluster(workers: int, gpu: bool):
    """A started local cluster of ``workers`` processes; ClusterLost (one line) if they do not start in time."""
    import distributed

    try:
        if gpu:
            return _gpu_cluster(workers)
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                        scheduler_kwargs=SCHEDULER_HTTP, silence_logs=CLUSTER_LOG_LEVEL,
                                        preload=[WORKER_PRELOAD])
    except (TimeoutError, asyncio.TimeoutError) as error:  # one class since Python 3.11
        raise ClusterLost(f"the local Dask cluster did not start its {workers} workers ({_cluster_error_text(error)}); "
                          "use fewer --workers") from None


@contextlib.contextmanager
def open_client(*, workers: int = 1, scheduler: str | None = None, gpu: bool = False):
    """A dask.distributed Client for the job, or None to run in-process; closed on exit.

    A cluster that cannot be reached, or is lost while the body runs (Dask's CommClosedError or
    cancelled futures), raises :class:`ClusterLost`; the body's own errors pass unchanged."""
    if scheduler is None and workers <= 1:
        yield None
        return
    from distributed import Client

    cluster = None
    where = f"the Dask scheduler at {scheduler}" if scheduler is not None else "the local Dask cluster"
    with _quiet_dask_logs():
        try:
            if scheduler is not None:
                try:
                    client = Client(scheduler)
                except OSError as error:  # refused, unknown host, timed out (distributed.comm.timeouts.connect)
                    raise ClusterLost(f"scheduler {scheduler}: cannot connect ({_cluster_error_text(error)})") from None
            else:
                with deferred_stops():  # a Ctrl-C while the cluster starts stops the run once it is up
                    cluster = _local_cluster(workers, gpu)
                client = Client(cluster)
            try:
                yield client
            except _cluster_errors() as error:
                raise ClusterLost(f"lost {where}: {_cluster_error_text(error)}; finished files are kept "
                                  "(rerun with --resume)") from None
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


def worker_count(client) -> int:
    """Number of workers the client can use (at least 1)."""
    return max(1, len(client.scheduler_info().get("workers", {})))


def map_in_order(client, function, items, *args, in_flight: int | None = None, **kwargs):
    """Yield ``function(item, *args, **kwargs)`` for each item, in item order, computed on the cluster.

    At most ``in_flight`` tasks are submitted at a time (default: twice the workers), which bounds
    the results waiting on the client. Remaining tasks are cancelled if the caller stops early.
    A task whose workers kept dying raises :class:`WorkerLost`.
    """
    from distributed import KilledWorker

    items = list(items)
    limit = in_flight or 2 * worker_count(client)
    pending: deque = deque()
    position = 0
    try:
        while position < len(items) or pending:
            while position < len(items) and len(pending) < limit:
                pending.append(client.submit(function, items[position], *args, pure=False, **kwargs))
                position += 1
            try:
                result = pending.popleft().result()
            except KilledWorker as error:
                raise WorkerLost(f"Dask worker processes died {error.allowed_failures + 1} times running task {error.task}; "
                                 "they may have run out of memory: use fewer --workers, or smaller images") from None
            yield result
    finally:
        if pending:
            client.cancel(list(pending))
