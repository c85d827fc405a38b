"""Where a pass's tasks run: threads of this process, or a Dask cluster, behind one ordered map.

Every pass cuts its work into items (batches of images to reduce, files to correct), hands a
task and the items to :meth:`Executor.map`, and reads the results back **in item order**, with a
bounded number of tasks in flight. The order makes group reductions bit-identical for any number
of workers (partials are merged in batch order) and lets the manifest record outputs as they
complete; the bound keeps memory independent of the plate size. A task that raises stops the
pass: the tasks not started yet are cancelled and the error propagates.
"""
from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from .cluster import map_in_order, open_client, worker_count

BATCH_SIZE = 16  # images per batch of a group reduction: the determinism unit


def fixed_batches(items, size: int = BATCH_SIZE) -> list:
    """Consecutive slices of ``size`` items (the last may be shorter)."""
    items = list(items)
    return [items[start:start + size] for start in range(0, len(items), size)]


def ordered_map(function, items, pool, depth: int):
    """Yield ``(item, function(item))`` in item order, running up to ``depth`` calls ahead in ``pool``.

    At most ``depth`` results wait in memory. An exception of a call propagates when its turn
    comes; calls not yet started are cancelled when the consumer stops early.
    """
    items = list(items)
    pending: deque = deque()
    position = 0
    try:
        while position < len(items) or pending:
            while position < len(items) and len(pending) < max(1, depth):
                pending.append((items[position], pool.submit(function, items[position])))
                position += 1
            item, future = pending.popleft()
            yield item, future.result()
    finally:
        for _item, future in pending:
            future.cancel()


class Executor:
    """Runs tasks in this process (``client`` None: ``threads`` threads) or on a Dask client.

    ``device_spec`` is the device tasks compute on as they see it ("gpu" on a GPU worker, which
    sees its own GPU as its first device); ``batch_size`` how many files a correction task takes
    (one in this process, where a task is cheap; BATCH_SIZE on a cluster).
    """

    def __init__(self, client, threads: int, device):
        self.client, self.threads, self.device = client, max(1, threads), device
        self.device_spec = ("gpu" if device.is_gpu else "cpu") if client is not None else device
        self.batch_size = 1 if client is None else BATCH_SIZE

    @property
    def in_process(self) -> bool:
        return self.client is None

    def map(self, task, items, *args, depth: int | None = None):
        """Yield ``(item, task(item, *args))`` in item order (see the module docstring)."""
        if self.client is not None:
            # closing: tasks still queued are cancelled on an error while the client is still open
            with contextlib.closing(map_in_order(self.client, task, items, *args)) as results:
                yield from zip(items, results)
            return
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="gpuillum") as pool:
            yield from ordered_map(lambda item: task(item, *args), items, pool, depth or self.threads)

    def share(self, value):
        """``value`` as tasks receive it: itself in this process; on a cluster, scattered once to
        every worker (under a key of its own: two equal values must not share a content-hashed key,
        which releasing the first one's future could drop while the second's tasks need it)."""
        if self.client is None or value is None:
            return value
        return self.client.scatter(value, broadcast=True, hash=False)

    @property
    def workers(self) -> int:
        return 1 if self.client is None else worker_count(self.client)


@contextlib.contextmanager
def open_executor(*, workers: int, scheduler: str | None, threads: int, device):
    """The run's Executor: in this process for one worker and no scheduler, else on a Dask cluster
    (job.cluster.open_client starts or joins it and closes it on exit)."""
    with open_client(workers=workers, scheduler=scheduler, gpu=device.is_gpu) as client:
        yield Executor(client, threads, device)
