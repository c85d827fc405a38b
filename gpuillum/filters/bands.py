"""Run SciPy filters on NumPy images in thread bands: every CPU core, the same bytes.

SciPy's ndimage filters release the GIL but use one thread. A 1-D filter along one axis treats
every line on its own, so splitting the image across the other axis changes nothing; a 2-D filter
gets the same result on a band of rows when the band carries ``halo`` extra rows of real pixels on
each side (the image's own edges still see the filter's boundary mode). CuPy arrays and small
images run the filter directly.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


def _run(jobs) -> None:
    if len(jobs) == 1:
        jobs[0]()
        return
    with ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()


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

    _run([lambda a=a, b=b: job(a, b) for a, b in zip(edges[:-1], edges[1:])])
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

    _run([lambda i=i, a=a, b=b: job(i, a, b) for i, (a, b) in enumerate(zip(edges[:-1], edges[1:]))])
    return np.concatenate(pieces)
