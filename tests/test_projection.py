"""Projections over time: equal to NumPy's reductions, and bit-identical however the stack is
split into consecutive batches (frame by frame, in batches, through merges); the uint8 histogram
state; argument checks. Parity with ImageJ's Z Project is in tests/test_imagej_parity.py."""
from __future__ import annotations

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.filters import projection

STATISTICS = (("max", None), ("min", None), ("mean", None), ("median", None), ("percentile", 12.5), ("percentile", 90))


def random_stack(rng, frames, dtype, shape=(9, 11)):
    if dtype == np.float32:
        stack = (rng.standard_normal((frames,) + shape) * 1e3).astype(dtype)
        stack[:, 0, 0] = [1e-30 * (i + 1) if i % 2 else 1e7 for i in range(frames)]  # sums that round
        return stack
    return rng.integers(0, np.iinfo(dtype).max, (frames,) + shape, endpoint=True).astype(dtype)


def numpy_reference(stack, statistic, percentile):
    if statistic == "max":
        return stack.max(axis=0)
    if statistic == "min":
        return stack.min(axis=0)
    if statistic == "mean":
        if stack.dtype.kind == "u":
            return (stack.astype(np.int64).sum(axis=0) / stack.shape[0]).astype(np.float32)
        return None  # float sums: order-dependent, checked against float64 below
    q = 50 if statistic == "median" else percentile
    return np.percentile(stack.astype(np.float64), q, axis=0).astype(np.float32)


def split_reduce(rng, stack, statistic, percentile):
    """Random consecutive batches, frames added one by one or as batches, merged in order."""
    frames = stack.shape[0]
    cuts = sorted(rng.choice(np.arange(1, frames), size=min(frames - 1, int(rng.integers(0, 4))), replace=False)) if frames > 1 else []
    bounds = [0, *cuts, frames]
    reducers = []
    for first, stop in zip(bounds[:-1], bounds[1:]):
        reducer = gi.ProjectionReducer(statistic, percentile, start=first)
        i = first
        while i < stop:
            step = int(rng.integers(1, stop - i + 1))
            reducer.add(stack[i] if step == 1 and rng.random() < 0.5 else stack[i:i + step])
            i += step
        reducers.append(reducer)
    for other in reducers[1:]:
        reducers[0].merge(other)
    return reducers[0].result()


@pytest.mark.parametrize("statistic, percentile", STATISTICS)
@pytest.mark.parametrize("dtype", (np.uint8, np.uint16, np.float32), ids=lambda d: np.dtype(d).name)
def test_equals_numpy_and_any_split_gives_the_same_bytes(rng, dtype, statistic, percentile):
    for frames in (1, 2, 3, 8, 33):
        stack = random_stack(rng, frames, dtype)
        whole = gi.projection_background(stack, statistic, percentile)
        expected = numpy_reference(stack, statistic, percentile)
        if expected is None:
            np.testing.assert_allclose(whole, stack.astype(np.float64).mean(axis=0), rtol=1e-6)
        else:
            assert whole.dtype == expected.dtype and np.array_equal(whole, expected)
        for _ in range(6):
            split = split_reduce(rng, stack, statistic, percentile)
            assert split.dtype == whole.dtype and np.array_equal(split.view(np.uint8), whole.view(np.uint8))


def test_float_mean_is_split_invariant_where_a_running_sum_is_not(rng):
    """The data make a plain running float64 sum depend on where the batches start; the reducer's
    pairwise sums over aligned blocks of frame indices do not."""
    stack = np.array([[[1e16]], [[1.0]], [[1.0]], [[-1e16]], [[1.0]]], np.float32)
    running = [np.float64(0)]
    for frame in stack:
        running.append(running[-1] + np.float64(frame[0, 0]))
    batched = (np.float64(stack[0, 0, 0]) + np.float64(stack[1, 0, 0])) + (np.float64(stack[2, 0, 0]) + np.float64(stack[3, 0, 0]) + np.float64(stack[4, 0, 0]))
    assert running[-1] != batched  # the order matters for these values
    whole = gi.projection_background(stack, "mean")
    for cut in range(1, 5):
        first, second = gi.ProjectionReducer("mean"), gi.ProjectionReducer("mean", start=cut)
        first.add(stack[:cut])
        second.add(stack[cut:])
        first.merge(second)
        assert first.result().view(np.uint32) == whole.view(np.uint32)


def test_integer_means_move_partial_sums_to_int64_before_they_overflow(rng, monkeypatch):
    monkeypatch.setattr(projection, "_PARTIAL_LIMIT", 3 * 65535)  # flush every 3 uint16 frames
    stack = np.full((10, 4, 5), 65535, np.uint16)
    stack[::3] = rng.integers(0, 65536, (4, 4, 5))
    whole = gi.projection_background(stack, "mean")
    assert np.array_equal(whole, numpy_reference(stack, "mean", None))
    for _ in range(5):
        assert np.array_equal(split_reduce(rng, stack, "mean", None), whole)


def test_uint8_median_switches_to_histograms_and_stops_growing(rng, monkeypatch):
    monkeypatch.setattr(projection, "FRAMES_BEFORE_HISTOGRAM", 4)
    stack = random_stack(rng, 11, np.uint8)
    reducer = gi.ProjectionReducer("median")
    reducer.add(stack[:3])
    assert reducer._histogram is None and reducer.nbytes == stack[:3].nbytes
    reducer.add(stack[3:7])
    assert reducer._histogram is not None and reducer._frames == []
    size = reducer.nbytes
    reducer.add(stack[7:])
    assert reducer.nbytes == size == 256 * 9 * 11 * 2
    assert np.array_equal(reducer.result(), numpy_reference(stack, "median", None))
    # a histogram reducer merged with a frames reducer (and the other way round)
    left, right = gi.ProjectionReducer("median"), gi.ProjectionReducer("median", start=2)
    left.add(stack[:2])
    right.add(stack[2:])
    left.merge(right)
    assert np.array_equal(left.result(), numpy_reference(stack, "median", None))


def test_axis_and_the_lesson_foreground():
    stack = np.array([[[1, 5]], [[3, 2]], [[2, 9]]], np.uint8)
    assert gi.projection_background(np.moveaxis(stack, 0, 2), "max", axis=2).tolist() == [[3, 9]]
    foreground = stack.astype(np.int16) - gi.projection_background(stack, "max")
    assert foreground.max() == 0 and foreground.min() == -7


@pytest.mark.parametrize("call, error, match", [
    (lambda: gi.ProjectionReducer("mode"), ValueError, "statistic"),
    (lambda: gi.ProjectionReducer("percentile"), ValueError, "percentile"),
    (lambda: gi.ProjectionReducer("percentile", 101), ValueError, "percentile"),
    (lambda: gi.ProjectionReducer("max", 50), ValueError, "percentile"),
    (lambda: gi.ProjectionReducer("max", start=-1), ValueError, "start"),
    (lambda: gi.ProjectionReducer("max").result(), ValueError, "no frames"),
    (lambda: gi.ProjectionReducer("max").add(np.zeros((2, 2), np.int32)), TypeError, "dtype"),
    (lambda: gi.ProjectionReducer("max").add(np.zeros(4, np.uint8)), ValueError, "2-D"),
    (lambda: gi.ProjectionReducer("mean").add(np.full((2, 2), np.nan, np.float32)), ValueError, "NaN"),
    (lambda: gi.projection_background(np.zeros((4, 4), np.uint8)), ValueError, "3-D"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_merges_must_be_in_order_and_alike():
    first, overlapping = gi.ProjectionReducer("max"), gi.ProjectionReducer("max", start=2)
    first.add(np.zeros((3, 2, 2), np.uint8))
    overlapping.add(np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="before this reducer's frames end \\(3\\)"):
        first.merge(overlapping)
    other = gi.ProjectionReducer("min", start=3)
    with pytest.raises(ValueError, match="same statistic"):
        first.merge(other)
    wrong_shape = gi.ProjectionReducer("max", start=3)
    wrong_shape.add(np.zeros((1, 3, 2), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        first.merge(wrong_shape)
    with pytest.raises(ValueError, match="differ"):
        first.add(np.zeros((3, 2), np.uint8))


@pytest.mark.parametrize("statistic", ["mean", "median", "max"])
def test_frames_left_out_keep_the_others_positions_whatever_the_batches(rng, statistic):
    """Frames 3 and 4 are missing (unreadable): the others keep their positions, and any split into
    batches at those positions gives the same bytes (the engine's batches start at fixed positions)."""
    stack = rng.normal(100, 30, (10, 9, 7)).astype(np.float32)
    present = [0, 1, 2, 5, 6, 7, 8, 9]

    def reduce(batches):
        total = None
        for start, stop in batches:
            part = gi.ProjectionReducer(statistic, start=start)
            part.add(stack[[i for i in present if start <= i < stop]])
            total = part if total is None else total.merge(part)
        return total

    one, other = reduce([(0, 3), (5, 10)]), reduce([(0, 2), (2, 3), (5, 8), (8, 10)])
    assert one.count == other.count == 8 and one.stop == other.stop == 10
    np.testing.assert_array_equal(one.result(), other.result())
    reference = {"mean": np.mean, "median": np.median, "max": np.max}[statistic](stack[present].astype(np.float64), axis=0)
    np.testing.assert_allclose(one.result(), reference, rtol=1e-6)


@pytest.mark.parametrize("statistic", ["max", "mean", "median"])
def test_add_all_folds_an_iterable_read_ahead_in_a_thread(rng, statistic):
    stack = rng.integers(0, 4000, (9, 12, 10)).astype(np.uint16)
    reducer = gi.ProjectionReducer(statistic).add_all((frame for frame in stack), prefetch=3)
    assert reducer.count == 9
    np.testing.assert_array_equal(reducer.result(), gi.projection_background(stack, statistic))


def test_add_all_stops_both_sides_on_an_error(rng):
    stack = rng.integers(0, 255, (4, 6, 5)).astype(np.uint8)

    def unreadable():
        yield stack[0]
        raise OSError("page 1: truncated")

    with pytest.raises(OSError, match="truncated"):
        gi.ProjectionReducer("max").add_all(unreadable())
    endless = (stack[0][: 6 - (i > 0)] for i in range(10**9))  # the second frame has another shape
    with pytest.raises(ValueError, match="differ from the first frames"):
        gi.ProjectionReducer("max").add_all(endless)  # returns: the reader thread stops too
    with pytest.raises(ValueError, match="prefetch: expected an integer >= 1"):
        gi.ProjectionReducer("max").add_all([], prefetch=0)


def test_a_reducer_pickles_with_numpy_state_and_goes_on_after(rng):
    import pickle

    stack = rng.normal(100, 30, (6, 5, 4)).astype(np.float32)
    reducer = gi.ProjectionReducer("mean")
    reducer.add(stack[:3])
    copy = pickle.loads(pickle.dumps(reducer))
    copy.add(stack[3:])
    reducer.add(stack[3:])
    np.testing.assert_array_equal(copy.result(), reducer.result())


@pytest.mark.gpu
@pytest.mark.parametrize("statistic, percentile", STATISTICS)
def test_gpu_equals_cpu(cupy, rng, statistic, percentile, monkeypatch):
    monkeypatch.setattr(projection, "FRAMES_BEFORE_HISTOGRAM", 4)
    for dtype in (np.uint8, np.uint16, np.float32):
        stack = random_stack(rng, 9, dtype)
        ours = gi.projection_background(cupy.asarray(stack), statistic, percentile)
        assert isinstance(ours, cupy.ndarray)
        expected = gi.projection_background(stack, statistic, percentile)
        assert np.array_equal(ours.get(), expected)
