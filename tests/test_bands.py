"""Thread bands give the same bytes as one SciPy call, for any number of bands."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from scipy import ndimage

from gpuillum.filters import bands
from gpuillum.filters.smoothing import gaussian_filter, gaussian_float64
from gpuillum.methods.cellprofiler import dilate


@pytest.fixture(params=[1, 2, 5, 64], ids=lambda n: f"{n}-bands")
def many_bands(request, monkeypatch):
    """Split even small images into ``n`` bands (at most one line each)."""
    monkeypatch.setattr(bands, "cpu_threads", lambda: request.param)
    monkeypatch.setattr(bands, "_MIN_PIXELS_PER_BAND", 1)
    return request.param


@pytest.mark.parametrize("shape", [(37, 53), (61, 8), (3, 45)])
@pytest.mark.parametrize("axis", [0, 1])
def test_along_axis_equals_one_call(many_bands, rng, shape, axis):
    image = rng.random(shape)

    def filter_1d(part, along):
        return ndimage.gaussian_filter1d(part, 3.7, axis=along, mode="constant", truncate=4.0)

    np.testing.assert_array_equal(bands.along_axis(filter_1d, image, axis), filter_1d(image, axis))


@pytest.mark.parametrize("shape", [(37, 53), (9, 30), (2, 40)])
@pytest.mark.parametrize("mode", ["constant", "reflect", "nearest"])
def test_with_halo_equals_one_call(many_bands, rng, shape, mode):
    image = rng.random(shape)
    kernel = rng.random((11, 7))

    def filter_2d(part):
        return ndimage.convolve(part, kernel, mode=mode)

    np.testing.assert_array_equal(bands.with_halo(filter_2d, image, 5), filter_2d(image))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.uint8])
def test_gaussian_float64_is_scipys_gaussian(many_bands, rng, dtype):
    image = (rng.random((45, 38)) * 200).astype(dtype)
    expected = ndimage.gaussian_filter(image.astype(np.float64), 4.2, mode="constant", truncate=4.0)
    got = gaussian_float64(image, 4.2)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


def test_banded_filters_do_not_depend_on_the_band_count(rng, monkeypatch):
    image = rng.random((57, 44)).astype(np.float32)
    mask = rng.random((57, 44)) > 0.3
    monkeypatch.setattr(bands, "_MIN_PIXELS_PER_BAND", 1)
    results = []
    for threads in (1, 3, 57):
        monkeypatch.setattr(bands, "cpu_threads", lambda threads=threads: threads)
        results.append((gaussian_filter(image, 5.0), gaussian_filter(image, 5.0, mask=mask), dilate(image, mask, 2)))
    for result in results[1:]:
        for got, expected in zip(result, results[0]):
            np.testing.assert_array_equal(got, expected)


def test_numba_thread_count_limits_the_bands():
    numba = pytest.importorskip("numba")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert bands.cpu_threads() == 1
        assert bands._band_edges(1080, 1080 * 1080) == [0, 1080]
    finally:
        numba.set_num_threads(before)


def test_small_images_stay_in_one_band(monkeypatch):
    monkeypatch.setattr(bands, "cpu_threads", lambda: 8)
    assert bands._band_edges(1080, 1080 * 1080) == [1080 * b // 8 for b in range(9)]
    assert bands._band_edges(100, 100 * 100) == [0, 100]  # ~1 ms of work: not worth a thread


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [(37, 53), (1, 5), (0, 4)])
def test_lookup_is_the_table_at_the_indices(many_bands, rng, dtype, shape):
    table = rng.random(int(np.iinfo(dtype).max) + 1).astype(np.float32)
    indices = rng.integers(0, table.size, shape).astype(dtype)
    got = bands.lookup(table, indices)
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, table[indices])


def test_lookup_reads_non_contiguous_indices(rng):
    table = rng.random(300)
    indices = rng.integers(0, 300, (40, 30)).astype(np.uint16)
    np.testing.assert_array_equal(bands.lookup(table, indices.T[::2]), table[indices.T[::2]])


def test_run_jobs_runs_every_job_and_raises_their_errors(monkeypatch):
    monkeypatch.setattr(bands, "cpu_threads", lambda: 3)
    done = []
    bands.run_jobs([lambda i=i: done.append(i) for i in range(10)])
    assert sorted(done) == list(range(10))

    def fail():
        raise RuntimeError("band 2 failed")

    with pytest.raises(RuntimeError, match="band 2 failed"):
        bands.run_jobs([lambda: None, fail])


def test_jobs_that_run_jobs_do_not_wait_on_the_pool(monkeypatch):
    # two pool threads, each running a job that itself submits two jobs: inline, never a deadlock
    monkeypatch.setattr(bands, "cpu_threads", lambda: 2)
    results = []

    def outer(i):
        bands.run_jobs([lambda: results.append((i, 0)), lambda: results.append((i, 1))])

    caller = threading.Thread(target=bands.run_jobs, args=([lambda: outer(0), lambda: outer(1)],), daemon=True)
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "nested run_jobs deadlocked"
    assert sorted(results) == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_an_error_reaches_the_caller_after_every_job_has_stopped(monkeypatch):
    monkeypatch.setattr(bands, "cpu_threads", lambda: 2)
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)

    def fail():
        raise RuntimeError("bad band")

    with pytest.raises(RuntimeError, match="bad band"):
        bands.run_jobs([fail, slow])
    assert finished == [True]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_gets_a_pool_of_its_own(monkeypatch):
    monkeypatch.setattr(bands, "cpu_threads", lambda: 2)
    bands.run_jobs([lambda: None, lambda: None])  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # child: the parent's pool threads are gone; a new pool must run the jobs
        try:
            done = []
            bands.run_jobs([lambda: done.append(1), lambda: done.append(2)])
            os._exit(0 if sorted(done) == [1, 2] else 1)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_pool_follows_the_thread_count(monkeypatch):
    names = set()

    def record():
        names.add(threading.current_thread().name)

    monkeypatch.setattr(bands, "cpu_threads", lambda: 2)
    bands.run_jobs([record] * 2)
    first = bands._pool
    bands.run_jobs([record] * 2)
    assert bands._pool is first  # made once, used again
    monkeypatch.setattr(bands, "cpu_threads", lambda: 4)
    bands.run_jobs([record] * 4)
    assert bands._pool is not first and bands._pool_threads == 4
    assert all(name.startswith("gpuillum-bands") for name in names)
