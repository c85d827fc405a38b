"""Per-pixel projections over time as a background: max, min, mean, median, a percentile.

A time-lapse whose objects move leaves each pixel's background visible in some frames: the
projection over time of a dark background with bright moving objects is its minimum (or a low
percentile), the lesson's maximum projection suits objects darker than the background, the median
resists both. ``ProjectionReducer`` computes them streaming: ``add`` frames (or batches of frames)
as they are read (``add_all`` reads ahead in a thread while it folds), ``merge`` the reducer of
the batch that follows, ``result`` at the end. The
result is bit-identical however the stack is split into consecutive batches, in any number of
workers:

* max, min: exact whatever the order. State: one frame of the input dtype.
* mean of uint8/uint16: int64 sums, exact whatever the order; the result ``float32(sum / n)`` is
  the correctly rounded mean. State: one int64 frame.
* mean of float32: float64 sums are not associative, so the order is fixed by the frame indices,
  not by the batches: pairwise summation over the aligned dyadic blocks of frame indices
  (``T(block) = T(left half) + T(right half)``, a frame is a block of one). A reducer keeps the
  sums of the maximal aligned blocks of the frames it has seen (at most 2 log2 n frames of
  float64), ``merge`` joins sibling blocks across the seam, and the result adds the blocks of
  [0, n) from the left. Needs the frames' positions: ``ProjectionReducer(start=k)`` for a batch
  whose first frame is frame k of the series; ``merge`` takes the batches in order (frames left
  out between two batches are a gap: the others keep their positions).
* median and percentile (numpy's "linear" definition: the median of an even count is the mean of
  the two middle values) need every value. uint8: the frames themselves until there are 512 of
  them, then per-pixel histograms (256 counts of 16 bits, 512 bytes a pixel; 32 bits past 65,535
  frames), so memory stops growing; uint16 and float32: the frames (the whole series: n x H x W x
  itemsize bytes). ``nbytes`` reports the state's size.

Results: max and min in the input dtype, the others float32 (computed in float64 and rounded
once). Everything is ``xp`` code: frames on the GPU stay there.
"""
from __future__ import annotations

import numbers

import numba
import numpy as np

from ..errors import InvalidType, InvalidValue
from .._checks import ORDER_DTYPES, check_choice
from ..backend import get_array_module, to_numpy
from .bands import cpu_threads, run_jobs

__all__ = ["projection_background", "ProjectionReducer"]

STATISTICS = ("max", "min", "mean", "median", "percentile")
FRAMES_BEFORE_HISTOGRAM = 512  # uint8: frames cost 1 byte a pixel each, histograms 512 bytes
_HISTOGRAM_CHUNK = 1 << 24
_PIXELS_PER_BAND = 1 << 19  # below ~this a thread costs more than it saves
_PARTIAL_LIMIT = 2**32 - 1  # the largest uint32 partial sum


class ProjectionReducer:
    """Streaming, mergeable per-pixel projection over time (see the module docstring).

    Parameters
    ----------
    statistic : "max", "min", "mean", "median" or "percentile".
    percentile : float in [0, 100], only (and necessarily) with statistic="percentile".
    start : int, index of the first frame this reducer will see within the series.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> stack = np.random.default_rng(0).integers(0, 256, (10, 32, 32)).astype(np.uint8)
    >>> first, second = gi.ProjectionReducer("mean"), gi.ProjectionReducer("mean", start=4)
    >>> first.add(stack[:4]); second.add(stack[4:])
    >>> first.merge(second)
    >>> np.array_equal(first.result(), gi.projection_background(stack, "mean"))
    True
    """

    def __init__(self, statistic: str = "max", percentile=None, *, start: int = 0):
        self.statistic = check_choice(statistic, "statistic", STATISTICS)
        self.percentile = _check_percentile(statistic, percentile)
        if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
            raise InvalidValue(f"start: expected an integer >= 0, got {start!r}")
        self.start = int(start)
        self.stop = self.start  # index after the last frame seen
        self.count = 0
        self.shape = self.dtype = None
        self._value = None  # max / min: the running extreme; mean of integers: the int64 sum
        self._partial, self._partial_count = None, 0  # mean of integers: uint32 sums not yet in _value
        self._blocks = []  # mean of float32: [(first frame, size, float64 sum)], maximal aligned blocks
        self._frames = []  # median / percentile: frames (or batches of frames), in order
        self._histogram = None  # median / percentile of uint8: per-pixel counts, shape (256, H, W)


    @property
    def nbytes(self) -> int:
        """Bytes of state held."""
        arrays = [self._value, self._partial, self._histogram] + [b[2] for b in self._blocks] + self._frames
        return sum(int(a.nbytes) for a in arrays if a is not None)

    def add(self, frames) -> None:
        """Add one frame (2-D) or a batch of consecutive frames (3-D, time first)."""
        frames = self._checked(frames)
        xp = get_array_module(frames)
        batch = frames[None] if frames.ndim == 2 else frames
        if self.statistic in ("max", "min"):
            fold = xp.maximum if self.statistic == "max" else xp.minimum
            if self._value is None:
                self._value = xp.array(batch[0], copy=True)
            for frame in batch:  # in place, frame by frame: no temporary the size of the batch
                _in_bands(fold, self._value, frame)
        elif self.statistic == "mean" and self.dtype.kind == "u":
            # uint32 partial sums (half the memory traffic of int64), moved into the int64 total
            # before they could overflow: after 65,537 uint16 or 16.8 million uint8 frames
            room = _PARTIAL_LIMIT // np.iinfo(self.dtype).max
            for frame in batch:
                if self._partial is None:
                    self._partial, self._partial_count = xp.zeros(self.shape, dtype=np.uint32), 0
                _in_bands(_accumulate if xp is np else xp.add, self._partial, frame)
                self._partial_count += 1
                if self._partial_count == room:
                    self._flush()
        elif self.statistic == "mean":
            for i in range(batch.shape[0]):
                self._push((self.stop + i, 1, batch[i].astype(np.float64)))
        else:
            self._frames.append(xp.array(batch, copy=True))  # a reader may reuse its buffer
            if self.dtype == np.uint8 and (self._histogram is not None or self.count + batch.shape[0] > FRAMES_BEFORE_HISTOGRAM):
                self._to_histogram(self.count + batch.shape[0])
        self.count += batch.shape[0]
        self.stop += batch.shape[0]

    def add_all(self, frames, *, prefetch: int = 2) -> "ProjectionReducer":
        """Add every frame (or batch) of the iterable ``frames``, in order; returns self.

        The iterable is advanced in a background thread, at most ``prefetch`` frames ahead, while
        this thread folds the frames it has: decoding a file's pages overlaps the fold, so
        projecting a compressed stack costs little more than reading it
        (benchmarks/bench_background.py). An error on either side stops both and is raised here.

        Examples
        --------
        >>> with tifffile.TiffFile("time-lapse.tif") as tif:
        ...     background = gi.ProjectionReducer("mean").add_all(page.asarray() for page in tif.pages).result()
        """
        import queue
        import threading

        if isinstance(prefetch, bool) or not isinstance(prefetch, numbers.Integral) or prefetch < 1:
            raise InvalidValue(f"prefetch: expected an integer >= 1, got {prefetch!r}")
        ready, stop, failure, done = queue.Queue(maxsize=int(prefetch)), threading.Event(), [], object()

        def hand_over(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for frame in frames:
                    if not hand_over(frame):
                        return
            except BaseException as error:  # raised in the caller's thread below
                failure.append(error)
            hand_over(done)

        producer = threading.Thread(target=produce, name="gpuillum-projection-reader", daemon=True)
        producer.start()
        try:
            while (item := ready.get()) is not done:
                self.add(item)
        finally:
            stop.set()
            producer.join()
        if failure:
            raise failure[0]
        return self

    def merge(self, other: "ProjectionReducer") -> "ProjectionReducer":
        """Take in ``other``, the reducer of the frames that follow this one's; returns self.

        Frames between the two (``other.start > self.stop``: frames left out, e.g. unreadable) are
        a gap that changes nothing but the positions: the result is the same whatever the batches,
        as long as each frame keeps its position."""
        if not isinstance(other, ProjectionReducer) or (other.statistic, other.percentile) != (self.statistic, self.percentile):
            raise InvalidValue("other: expected a ProjectionReducer with the same statistic and percentile")
        if other.start < self.stop:
            raise InvalidValue(f"other: starts at frame {other.start}, before this reducer's frames end ({self.stop}) "
                               "(merge consecutive batches in order)")
        if other.count == 0:
            self.stop = other.stop
            return self
        if self.count == 0:
            self.__dict__.update({k: v for k, v in other.__dict__.items() if k != "start"})
            return self
        if (other.shape, other.dtype) != (self.shape, self.dtype):
            raise InvalidValue(f"other: frames of shape {other.shape} and dtype {other.dtype}, expected {self.shape} {self.dtype}")
        xp = get_array_module(self._any_state())
        if self.statistic in ("max", "min"):
            self._value = (xp.maximum if self.statistic == "max" else xp.minimum)(self._value, other._value)
        elif self.statistic == "mean" and self.dtype.kind == "u":
            self._flush()
            other._flush()
            self._value = self._value + other._value
        elif self.statistic == "mean":
            for block in other._blocks:
                self._push(block)
        else:
            self._frames += other._frames
            if self._histogram is not None or other._histogram is not None:
                self._to_histogram(self.count + other.count, other._histogram)
        self.count += other.count
        self.stop = other.stop
        return self

    def to(self, device) -> "ProjectionReducer":
        """Move the state to ``device`` (gpuillum.backend.Device); returns self."""
        self._map_state(device.asarray)
        return self

    def __getstate__(self):
        """Pickled with NumPy state (Dask ships partial reducers between processes)."""
        copy = ProjectionReducer.__new__(ProjectionReducer)
        copy.__dict__.update(self.__dict__)
        copy._blocks, copy._frames = list(self._blocks), list(self._frames)
        copy._map_state(to_numpy)
        return copy.__dict__

    def result(self):
        """The projection: max/min in the input dtype, the other statistics as float32."""
        if self.count == 0:
            raise InvalidValue("no frames added: a projection needs at least one frame")
        if self.statistic in ("max", "min"):
            return self._value.copy()
        if self.statistic == "mean" and self.dtype.kind == "u":
            self._flush()
            return (self._value.astype(np.float64) / self.count).astype(np.float32)
        if self.statistic == "mean":
            total = None
            for _, _, block_sum in self._blocks:
                total = block_sum if total is None else total + block_sum
            return (total / self.count).astype(np.float32)
        q = 50.0 if self.statistic == "median" else self.percentile
        if self._histogram is not None:
            return _histogram_percentile(self._histogram, self.count, q)
        xp = get_array_module(self._frames[0])
        stack = xp.concatenate(self._frames) if len(self._frames) > 1 else self._frames[0]
        below, above, fraction = _order_statistics(self.count, q)
        ordered = xp.sort(stack, axis=0)  # the same arithmetic on both backends (cupy.percentile's differs)
        return _lerp(ordered[below].astype(np.float64), ordered[above].astype(np.float64), fraction).astype(np.float32)

    # ------------------------------------------------------------------------------------------

    def _checked(self, frames):
        if not hasattr(frames, "ndim") or frames.ndim not in (2, 3) or frames.size == 0:
            raise InvalidValue(f"frames: expected a non-empty 2-D frame or 3-D batch (time first), got shape {getattr(frames, 'shape', None)}")
        if frames.dtype not in tuple(np.dtype(d) for d in ORDER_DTYPES):
            raise InvalidType(f"frames: dtype {frames.dtype} is not supported; expected uint8, uint16 or float32")
        shape = tuple(frames.shape[-2:])
        if self.shape is None:
            self.shape, self.dtype = shape, frames.dtype
        elif (shape, frames.dtype) != (self.shape, self.dtype):
            raise InvalidValue(f"frames: shape {shape} and dtype {frames.dtype} differ from the first frames' {self.shape} {self.dtype}")
        if self.statistic == "mean" and frames.dtype == np.float32 and bool(get_array_module(frames).isnan(frames).any()):
            raise InvalidValue("frames: contain NaN; a mean over time needs finite values")
        return frames

    def _any_state(self):
        return next(a for a in [self._value, self._partial, self._histogram] + [b[2] for b in self._blocks] + self._frames
                    if a is not None)

    def _map_state(self, convert) -> None:
        """Replace every state array by ``convert(array)``."""
        for name in ("_value", "_partial", "_histogram"):
            if getattr(self, name) is not None:
                setattr(self, name, convert(getattr(self, name)))
        self._blocks = [(first, size, convert(total)) for first, size, total in self._blocks]
        self._frames = [convert(frames) for frames in self._frames]

    def _flush(self):
        """Move the uint32 partial sums into the int64 total."""
        if self._partial is None:
            return
        total = self._partial.astype(np.int64)
        self._value = total if self._value is None else self._value + total
        self._partial, self._partial_count = None, 0

    def _push(self, block):
        """Append an aligned dyadic block and join sibling blocks (pairwise summation)."""
        self._blocks.append(block)
        while len(self._blocks) >= 2:
            (lo_a, size_a, sum_a), (lo_b, size_b, sum_b) = self._blocks[-2:]
            if size_a != size_b or lo_a % (2 * size_a) != 0 or lo_b != lo_a + size_a:
                break
            self._blocks[-2:] = [(lo_a, 2 * size_a, sum_a + sum_b)]

    def _to_histogram(self, count, more=None):
        """Move the frames held into the per-pixel histograms of uint8 values (adding ``more``)."""
        xp = get_array_module(self._any_state())
        counts_dtype = np.uint16 if count <= np.iinfo(np.uint16).max else np.uint32
        if self._histogram is None:
            histogram = xp.zeros((256,) + self.shape, dtype=counts_dtype)
        else:
            histogram = self._histogram.astype(counts_dtype, copy=False)
        if more is not None:
            histogram += more.astype(counts_dtype, copy=False)
        flat = histogram.reshape(256, -1)
        pixels = flat.shape[1]
        chunk = max(1, _HISTOGRAM_CHUNK // 256)  # bincount's int64 counts stay ~_HISTOGRAM_CHUNK long
        for batch in self._frames:
            values = batch.reshape(batch.shape[0], -1)
            for first in range(0, pixels, chunk):
                part = values[:, first:first + chunk].astype(np.int64)
                width = part.shape[1]
                keys = part * width + xp.arange(width)  # value-major, like the histogram
                flat[:, first:first + width] += xp.bincount(keys.ravel(), minlength=256 * width).reshape(256, width).astype(counts_dtype)
        self._histogram = histogram
        self._frames = []


def _in_bands(ufunc, target, frame):
    """``ufunc(target, frame, out=target)``, split into row bands on the shared CPU threads for
    large NumPy frames (NumPy's ufuncs release the GIL but use one core)."""
    rows = target.shape[0]
    bands = min(cpu_threads(), rows, target.size // _PIXELS_PER_BAND) if isinstance(target, np.ndarray) else 1
    if bands <= 1:
        ufunc(target, frame, out=target)
        return
    edges = [rows * b // bands for b in range(bands + 1)]
    run_jobs([lambda a=a, b=b: ufunc(target[a:b], frame[a:b], out=target[a:b]) for a, b in zip(edges[:-1], edges[1:])])


def _accumulate(total, frame, out):
    """``out = total + frame`` for a uint32 ``total`` and a uint8/uint16 frame (NumPy's mixed-type
    ufunc loop casts through a buffer; this one is a plain vectorised loop)."""
    _add_widening(total.reshape(-1), frame.reshape(-1), out.reshape(-1))


@numba.njit(cache=True, nogil=True)
def _add_widening(total, frame, out):
    for i in range(out.size):
        out[i] = total[i] + np.uint32(frame[i])


def _histogram_percentile(histogram, count: int, q: float):
    """numpy's linear percentile from per-pixel counts of the values 0..255: the order statistics
    at floor and ceil of q/100 (n - 1), interpolated as numpy's _lerp does."""
    xp = get_array_module(histogram)
    below, above, fraction = _order_statistics(count, q)
    cumulative = xp.cumsum(histogram, axis=0, dtype=np.int64)
    lower = (cumulative <= below).sum(axis=0).astype(np.float64)  # the value holding order statistic `below`
    upper = (cumulative <= above).sum(axis=0).astype(np.float64)
    return _lerp(lower, upper, fraction).astype(np.float32)


def _order_statistics(count: int, q: float):
    """numpy's "linear" percentile: the two order statistics around q/100 (n - 1) and the weight."""
    position = float(np.float64(q) / 100 * (count - 1))
    below = int(np.floor(position))
    return below, min(below + 1, count - 1), position - below


def _lerp(a, b, t: float):
    """numpy's _lerp (numpy/lib/_function_base_impl.py): a + (b - a) t, or b - (b - a)(1 - t) for t >= 0.5."""
    difference = b - a
    return b - difference * (1 - t) if t >= 0.5 else a + difference * t


def _check_percentile(statistic, percentile):
    if statistic == "percentile":
        if isinstance(percentile, bool) or not isinstance(percentile, numbers.Real) or not 0 <= percentile <= 100:
            raise InvalidValue(f"percentile: statistic='percentile' needs a number in [0, 100], got {percentile!r}")
        return float(percentile)
    if percentile is not None:
        raise InvalidValue(f"percentile: only used with statistic='percentile', got {percentile!r} with statistic={statistic!r}")
    return None


def projection_background(stack, statistic="max", percentile=None, axis=0):
    """The per-pixel projection of ``stack`` along ``axis`` (time), as a background image.

    Parameters
    ----------
    stack : 3-D NumPy or CuPy array (uint8, uint16, float32).
    statistic : "max" (the lesson's), "min", "mean", "median" or "percentile".
    percentile : float in [0, 100] with statistic="percentile" (numpy's linear definition).
    axis : the time axis.

    Returns
    -------
    2-D array: max/min in the stack's dtype, the other statistics float32.

    Examples
    --------
    >>> import numpy as np, gpuillum as gi
    >>> stack = np.array([[[1, 5]], [[3, 2]], [[2, 9]]], np.uint8)
    >>> gi.projection_background(stack, "max")
    array([[3, 9]], dtype=uint8)
    >>> foreground = stack.astype(np.int16) - gi.projection_background(stack, "max")
    """
    if getattr(stack, "ndim", None) != 3:
        raise InvalidValue(f"stack: expected a 3-D array (time and two image axes), got shape {getattr(stack, 'shape', None)}")
    xp = get_array_module(stack)
    reducer = ProjectionReducer(statistic, percentile)
    reducer.add(xp.moveaxis(stack, axis, 0))
    return reducer.result()
