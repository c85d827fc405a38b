"""Plate pass 1: stream images into partial accumulators and combine them in a fixed order.

Determinism rule: the images of a plate x channel are cut into consecutive batches of
``BATCH_SIZE`` records (by position in the sorted record list, whatever gets skipped). Each batch
is summed into a fresh ``IlluminationAccumulator`` in record order, and the batch partials are
merged strictly in batch order (``total = p0; total.merge(p1); total.merge(p2) ...``). The same
arithmetic runs whether one process streams every batch or many Dask workers compute one batch
each, so the function is bit-identical for any number of workers.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from .reading import ordered_map

BATCH_SIZE = 16


def fixed_batches(items, size: int = BATCH_SIZE) -> list:
    """Consecutive slices of ``size`` items (the last may be shorter)."""
    items = list(items)
    return [items[start:start + size] for start in range(0, len(items), size)]


class OrderedMerge:
    """Merge partial accumulators in batch-index order, whatever order they arrive in.

    ``push(index, partial)`` keeps out-of-order partials until their turn; a batch whose images
    were all skipped pushes None. ``result()`` is the merged accumulator (None when empty).
    """

    def __init__(self):
        self._next = 0
        self._waiting: dict[int, object] = {}
        self.total = None

    def push(self, index: int, partial) -> None:
        if index < self._next or index in self._waiting:
            raise ValueError(f"batch {index} was merged already")
        self._waiting[index] = partial
        while self._next in self._waiting:
            part = self._waiting.pop(self._next)
            if part is not None:
                self.total = part if self.total is None else self.total.merge(part)
            self._next += 1

    def result(self):
        if self._waiting:
            raise ValueError(f"batches {sorted(self._waiting)} arrived but batch {self._next} is missing")
        return self.total


class _BatchSum:
    """Sum one batch into a fresh accumulator, in record order (a thread-pool task, or a Dask task's body)."""

    def __init__(self, settings, device, read, on_error):
        self.settings, self.device, self.read, self.on_error = settings, device, read, on_error

    def __call__(self, batch):
        from gpuillum.methods.cellprofiler import IlluminationAccumulator

        skipped: list[tuple[str, str]] = []
        images = self._read_batch(batch, skipped)
        if self.device.is_gpu:  # the whole batch crosses to the device in one pinned transfer
            images = _upload_batch(list(images), self.device)
        partial = None
        for image in images:
            if partial is None:
                partial = IlluminationAccumulator(self.settings)
            with self.device.activate():
                partial.add(self.device.asarray(image))
        return partial, skipped

    def _read_batch(self, batch, skipped):
        """The batch's decoded images, one at a time; a file that cannot be read raises, or with
        on_error="skip" is appended to ``skipped`` as (relpath, reason) and left out."""
        for record in batch:
            try:
                yield self.read(record)
            except ValueError as error:
                if self.on_error != "skip":
                    raise
                skipped.append((record.relpath, str(error)))


def _upload_batch(images: list, device):
    """Stack ``images`` (NumPy) into a pinned host buffer and copy it to ``device`` in one transfer."""
    if not images:
        return []
    import cupyx

    with device.activate():
        pinned = cupyx.empty_pinned((len(images), *images[0].shape), images[0].dtype)
        for index, image in enumerate(images):
            pinned[index] = image
        on_device = device.xp.empty(pinned.shape, pinned.dtype)
        on_device.set(pinned)  # synchronous on the current stream: the pinned buffer can be dropped
        return list(on_device)


def accumulate_records(records, settings, device, read, *, threads: int = 1, on_error: str = "fail", tick=None):
    """Sum ``records`` batch by batch and merge the partials in order; returns (accumulator or None, skipped).

    ``read(record)`` returns the image (NumPy) or raises ValueError naming the file; with
    ``on_error="skip"`` such files are listed in ``skipped`` as (relpath, reason) and left out.
    Batches are summed in parallel in ``threads`` threads (each batch by one thread, in record
    order), at most ``threads`` batches ahead of the merge, so host memory holds about ``threads``
    decoded images and partial sums (on a GPU: ``threads`` pinned batches of BATCH_SIZE images,
    each uploaded in one transfer). ``tick(n)`` is called as each batch of n records is merged.
    """
    threads = max(1, threads)
    merged = OrderedMerge()
    skipped: list[tuple[str, str]] = []
    task = _BatchSum(settings, device, read, on_error)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="gpuillum-calc") as pool:
        for index, (batch, result, error) in enumerate(ordered_map(task, fixed_batches(records), pool, depth=threads)):
            if error is not None:
                raise error
            partial, batch_skipped = result
            skipped.extend(batch_skipped)
            merged.push(index, partial)
            if tick is not None:
                tick(len(batch))
    return merged.result(), skipped
