"""Thread bands for CPU work on NumPy images: every core, the same bytes as one call.

SciPy's ndimage filters release the GIL but use one thread. A 1-D filter along one axis treats
every line on its own, so splitting the image across the other axis changes nothing; a 2-D filter
gets the same result on a band of rows when the band carries ``halo`` extra rows of real pixels on
each side (the image's own edges still see the filter's boundary mode). CuPy arrays and small
images run the filter directly. ``lookup`` gathers a table in bands, and every banded CPU kernel
of the package (these, the median, the morphology) runs its bands through ``run_jobs``, on one
process-wide pool of ``cpu_threads()`` threads.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numba
import numpy as np

_MIN_PIXELS_PER_BAND = 1 << 17  # below ~this (~1 ms of filtering) a thread costs more than it saves


def cpu_threads() -> int:
    """Threads for CPU kernels: numba's thread count (``NUMBA_NUM_THREADS`` sets it), at most the
    cores this process may use (the affinity mask where the OS has one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, min(cores, numba.get_num_threads()))


def _band_edges(length: int, pixels: int) -> list[int]:
    bands = max(1, min(cpu_threads(), length, pixels // _MIN_PIXELS_PER_BAND))
    return [length * b // bands for b in range(bands + 1)]


_pool: ThreadPoolExecutor | None = None
_pool_threads = 0
_pool_lock = threading.Lock()
_in_pool = threading.local()


def run_jobs(jobs) -> None:
    """Run the callables ``jobs`` (which release the GIL) to completion on one process-wide pool of
    ``cpu_threads()`` threads: no per-call thread start-up (~0.35 ms), and callers in several
    threads at once share the cores instead of oversubscribing them. A job that itself calls
    ``run_jobs`` runs its jobs inline, so the pool never waits on itself."""
    if len(jobs) == 1 or getattr(_in_pool, "active", False):
        for job in jobs:
            job()
        return
    threads = cpu_threads()
    with _pool_lock:  # no other caller can swap the pool between getting it and submitting
        futures = [_shared_pool(threads).submit(job) for job in jobs]
    wait(futures)  # every band has stopped writing before an error reaches the caller
    for future in futures:
        future.result()


def _mark_pool_thread() -> None:
    _in_pool.active = True


def _shared_pool(threads: int) -> ThreadPoolExecutor:
    """The pool of ``threads`` threads, made again when a caller's count differs (numba's thread
    count is per thread: NUMBA_NUM_THREADS, numba.set_num_threads). Call with ``_pool_lock`` held."""
    global _pool, _pool_threads
    if _pool is None or _pool_threads != threads:
        if _pool is not None:
            _pool.shutdown(wait=False)  # jobs already submitted still run; idle threads exit
        _pool = ThreadPoolExecutor(threads, thread_name_prefix="gpuillum-bands", initializer=_mark_pool_thread)
        _pool_threads = threads
    return _pool


def _forget_pool() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool on first use."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX only
    os.register_at_fork(after_in_child=_forget_pool)


def along_axis(filter_1d, image, axis: int):
    """``filter_1d(image, axis)`` (a 1-D filter along ``axis`` of a 2-D image that returns the
    same shape and dtype), with the lines split into thread bands on NumPy."""
    if not isinstance(image, np.ndarray):
        return filter_1d(image, axis)
    other = 1 - axis
    edges = _band_edges(image.shape[other], image.size)
    if len(edges) == 2:
        return filter_1d(image, axis)
    out = np.empty_like(image)

    def job(start, stop):
        band = (slice(None), slice(start, stop)) if other == 1 else (slice(start, stop), slice(None))
        out[band] = filter_1d(image[band], axis)

    run_jobs([lambda a=a, b=b: job(a, b) for a, b in zip(edges[:-1], edges[1:])])
    return out


def with_halo(filter_2d, image, halo: int):
    """``filter_2d(image)`` (a 2-D filter reaching ``halo`` rows from each pixel, same shape out)
    on row bands that carry ``halo`` rows above and below, on NumPy."""
    if not isinstance(image, np.ndarray):
        return filter_2d(image)
    height = image.shape[0]
    edges = _band_edges(height, image.size)
    if len(edges) == 2:
        return filter_2d(image)
    pieces = [None] * (len(edges) - 1)

    def job(index, start, stop):
        top, bottom = max(0, start - halo), min(height, stop + halo)
        pieces[index] = filter_2d(image[top:bottom])[start - top : stop - top]

    run_jobs([lambda i=i, a=a, b=b: job(i, a, b) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))])
    return np.concatenate(pieces)


def lookup(table, indices):
    """``table[indices]`` for a 1-D ``table`` and integer ``indices`` (any shape, every one in
    range: unchecked), the gather split into thread bands on NumPy (np.take uses one thread)."""
    if not isinstance(indices, np.ndarray):
        return table[indices]
    flat = np.ascontiguousarray(indices).reshape(-1)
    out = np.empty(flat.size, dtype=table.dtype)
    edges = _band_edges(flat.size, flat.size)
    run_jobs([lambda a=a, b=b: _gather(table, flat[a:b], out[a:b]) for a, b in zip(edges[:-1], edges[1:])])
    return out.reshape(indices.shape)


@numba.njit(cache=True, nogil=True)
def _gather(table, indices, out):
    for i in range(indices.size):
        out[i] = table[indices[i]]
