"""Grey-scale erosion by a non-flat (additive) structuring element: the rolling-ball primitive.

``out(y, x) = min over kernel terms (dy, dx, v) of  src(y + oy + dy, x + ox + dx) + v``

with out-of-image pixels ignored. Every rolling ball in gpuillum is this one operation:
scikit-image's ``rolling_ball`` is one erosion by the ball's height differences; ImageJ's rolling
ball is an erosion by ``-ball`` over the extended grid of ball centres followed by a dilation,
which is the negated erosion of the negated result by the same (symmetric) kernel.

Exactness: each sum is formed in the working dtype (float32, float64, or saturating uint16 for
integer images whose kernel is an integer) and min is exact, so the result equals any
implementation that forms the same sums and takes their minimum, whatever the order. Rounding is
monotone (``min fl(a_i) = fl(min a_i)`` and ``a <= b`` implies ``fl(a + v) <= fl(b + v)``), so
two kinds of sharing keep the minimum unchanged:

* pairs: where a kernel row holds the same value (bit for bit) at -dx and +dx, one sum
  ``min(src[x - w], src[x + w]) + v`` stands for both;
* windows: where a kernel row is a run -w..w whose values do not decrease away from the centre
  (every ball), one sum per distinct value, ``v + min(src[x - w .. x + w])`` with w the widest
  offset holding v: the inner offsets also get v, at least their own value, so they never undercut.

The pair and window minima of a source row are built once (windows one distance at a time) and
serve every kernel row. Offsets outside the kernel (+inf in scikit-image's kernels) are never
visited.

CPU: numba, per source row: the row padded with a sentinel that never wins, its pair and window
minima, then each term folded into its output row as a vectorised loop (LLVM emits SIMD adds and
minima: 8-32 lanes). Row bands run on the shared thread pool. GPU: one CUDA thread per output
pixel loops over the terms (``cuda/nonflat.cu``), extending one running window per kernel row;
additions use ``__fadd_rn``/``__dadd_rn``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba.extending import overload

from ..backend import cuda_kernel, get_array_module
from .bands import cpu_threads, run_jobs

CUDA_SOURCE = "nonflat.cu"
_CUDA_TYPES = {np.dtype(np.uint16): "unsigned short", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
CUDA_INSTANTIATIONS = tuple(f"nonflat_erosion<{t}>" for t in _CUDA_TYPES.values())
_THREADS = 256
_MIN_ROWS_PER_BAND = 16


SINGLE, PAIR, WINDOW = 0, 1, 2


@dataclass(frozen=True)
class Terms:
    """A non-flat kernel as a list of terms, sorted by row offset ``dy``. By ``kind``:

    * SINGLE: the offset (dy, off);
    * PAIR: the offsets (dy, -off) and (dy, +off), which carry the same value;
    * WINDOW: every offset (dy, -off..+off). Exact where the kernel row's values do not decrease
      away from the centre column: an inner offset then has a value <= this term's, so the larger
      sum it gets here never undercuts the minimum.

    ``values`` are in the working dtype.
    """

    dy: np.ndarray
    off: np.ndarray
    kind: np.ndarray
    values: np.ndarray

    @property
    def reach(self) -> int:
        """The largest |dx| of any term."""
        return int(np.abs(self.off).max()) if self.off.size else 0


def kernel_terms(values: np.ndarray, inside=None, center=None) -> Terms:
    """The terms of a 2-D kernel of additive ``values`` at the offsets where ``inside`` is true
    (default: where the value is not +inf, scikit-image's mark for offsets outside the kernel).

    ``center`` (row, col) defaults to ``shape // 2``, as scikit-image's. A kernel row that is one
    run of offsets -w..w, symmetric bit for bit and non-decreasing away from the centre becomes one
    WINDOW term per distinct value (the widest offset holding it); other rows become PAIR terms
    where two entries mirror each other bit for bit about the centre column, else SINGLE terms.
    """
    values = np.asarray(values)
    rows, cols = values.shape
    if inside is None:
        inside = ~np.isposinf(values) if values.dtype.kind == "f" else np.ones(values.shape, bool)
    inside = np.asarray(inside, bool)
    cy, cx = (rows // 2, cols // 2) if center is None else center
    dx = np.arange(cols) - cx
    mirror = cx - dx
    has_mirror = (mirror >= 0) & (mirror < cols)
    mirror = np.where(has_mirror, mirror, 0)
    bits = values.view(f"u{values.dtype.itemsize}")
    mirrored = has_mirror[None, :] & inside & inside[:, mirror] & (bits == bits[:, mirror])
    dys, offs, kinds, vals = [], [], [], []
    for i in range(rows):
        window = _window_levels(values[i], inside[i], mirrored[i], cx)
        if window is not None:
            widths, levels = window
            dys += [i - cy] * widths.size
            offs += widths.tolist()
            kinds += [WINDOW] * widths.size
            vals += levels.tolist()
            continue
        pair = mirrored[i] & (dx > 0)
        keep = pair | inside[i] & ~(mirrored[i] & (dx < 0))
        for j in np.flatnonzero(keep):
            dys.append(i - cy)
            offs.append(int(dx[j]))
            kinds.append(PAIR if pair[j] else SINGLE)
            vals.append(values[i, j])
    return Terms(np.asarray(dys, np.int64), np.asarray(offs, np.int64), np.asarray(kinds, np.int8),
                 np.asarray(vals, values.dtype))


def _window_levels(row, inside, mirrored, cx):
    """(widths, values) of the WINDOW terms of one kernel row, or None when the row is not a
    symmetric run that is non-decreasing away from the centre."""
    inner = np.flatnonzero(inside)
    if inner.size == 0 or not inside[cx]:
        return None
    half = cx - inner[0]
    if inner[-1] - cx != half or inner.size != 2 * half + 1 or not mirrored[inner].all():
        return None
    right = row[cx:cx + half + 1]
    if np.any(right[1:] < right[:-1]) or np.any(np.isnan(right)):
        return None
    last_of_level = np.append(right[1:] != right[:-1], True)  # the widest offset of each value
    widths = np.flatnonzero(last_of_level)
    return widths, right[widths]


def erode(src, terms: Terms, out_shape, origin, sentinel):
    """``out(y, x) = min_t src(y + oy + dy_t, x + ox + dx_t) + v_t`` over the in-image terms;
    ``sentinel`` (a value that never wins, e.g. +inf or 65535 with saturating adds) where none is.

    ``src`` is uint16 (the additions saturate at 65535), float32 or float64, NumPy or CuPy,
    without NaN (callers map NaN to +inf where NaN terms are to be ignored).
    """
    xp = get_array_module(src)
    if terms.dy.size == 0:
        return xp.full(out_shape, sentinel, dtype=src.dtype)
    if xp is not np:
        return _erode_gpu(src, terms, out_shape, origin, sentinel)
    src = np.ascontiguousarray(src)
    height_out = out_shape[0]
    out = np.empty(out_shape, dtype=src.dtype)
    values = terms.values.astype(src.dtype)
    n_bands = max(1, min(cpu_threads(), height_out // _MIN_ROWS_PER_BAND))
    edges = [height_out * b // n_bands for b in range(n_bands + 1)]
    oy, ox = origin
    def band(b):
        _erode_rows(src, out, oy, ox, terms.dy, terms.off, terms.kind, values, edges[b], edges[b + 1], src.dtype.type(sentinel))

    run_jobs([lambda b=b: band(b) for b in range(n_bands)])
    return out


# ----------------------------------------------------------------------------- CPU kernels (numba)
# numba: the per-term folding of shifted source rows into output rows is a loop over (row, term)
# pairs that NumPy could only express with one temporary image per term.


@numba.njit(cache=True, nogil=True, inline="always")
def _prepare_row(src, iy, ox, reach, sentinel, padded, pairs, windows, pairs_used, widest_window):
    """For source row ``iy``: ``padded[j] = src[iy, j - reach + ox]`` (sentinel outside), the
    pair minima ``pairs[w][x] = min(padded[x + reach - w], padded[x + reach + w])`` where
    ``pairs_used[w]``, and the window minima ``windows[w][x] = min(padded[x + reach - w ..
    x + reach + w])`` for w <= ``widest_window`` (built from the pairs, one distance at a time)."""
    width = src.shape[1]
    for j in range(padded.size):
        x = j - reach + ox
        padded[j] = src[iy, x] if 0 <= x < width else sentinel
    width_out = pairs.shape[1]
    if widest_window >= 0:
        windows[0][:] = padded[reach:reach + width_out]
    for w in range(1, pairs.shape[0]):
        if not pairs_used[w] and w > widest_window:
            continue
        left = padded[reach - w:reach - w + width_out]
        right = padded[reach + w:reach + w + width_out]
        row = pairs[w]
        for x in range(width_out):
            a = left[x]
            b = right[x]
            row[x] = a if a < b else b
        if w <= widest_window:
            wider = windows[w]
            narrower = windows[w - 1]
            for x in range(width_out):
                a = row[x]
                b = narrower[x]
                wider[x] = a if a < b else b


@numba.njit(cache=True, nogil=True, inline="always")
def _source(kind, off, reach, width_out, padded, pairs, windows):
    if kind == 0:
        return padded[reach + off:reach + off + width_out]
    if kind == 1:
        return pairs[off]
    return windows[off]


@numba.njit(cache=True, nogil=True, inline="always")
def _scratch(src, dys, offs, kinds, width_out):
    reach = 0
    for t in range(offs.size):
        reach = max(reach, abs(offs[t]))
    padded = np.empty(width_out + 2 * reach, src.dtype)
    pairs = np.empty((reach + 1, width_out), src.dtype)
    windows = np.empty((reach + 1, width_out), src.dtype)
    pairs_used = np.zeros(reach + 1, np.bool_)
    widest_window = -1
    for t in range(offs.size):
        if kinds[t] == 1:
            pairs_used[offs[t]] = True
        elif kinds[t] == 2:
            widest_window = max(widest_window, offs[t])
    return reach, padded, pairs, windows, pairs_used, widest_window


@numba.njit(cache=True, nogil=True)
def _erode_rows(src, out, oy, ox, dys, offs, kinds, values, y0, y1, sentinel):
    """Output rows [y0, y1) of the erosion."""
    height, width_out = src.shape[0], out.shape[1]
    reach, padded, pairs, windows, pairs_used, widest_window = _scratch(src, dys, offs, kinds, width_out)
    out[y0:y1] = sentinel
    for iy in range(max(0, y0 + oy + dys.min()), min(height, y1 + oy + dys.max())):
        _prepare_row(src, iy, ox, reach, sentinel, padded, pairs, windows, pairs_used, widest_window)
        for t in range(dys.size):
            y = iy - oy - dys[t]
            if y0 <= y < y1:
                _fold(out[y], _source(kinds[t], offs[t], reach, width_out, padded, pairs, windows), values[t])


def _fold(target, source, value):
    """target = min(target, source + value), elementwise over 1-D views (numba only)."""
    raise NotImplementedError  # compiled through the overload below


@overload(_fold, inline="always")
def _fold_for(target, source, value):
    if target.dtype == numba.types.uint16:
        def fold_saturating(target, source, value):  # uint16 sums saturate at 65535: a saturated
            for x in range(target.size):  # sum never undercuts a true minimum <= 65535
                a = source[x]
                s = np.uint16(a + value)
                s = s if s >= a else np.uint16(65535)
                m = target[x]
                target[x] = s if s < m else m
        return fold_saturating

    def fold(target, source, value):
        for x in range(target.size):
            s = source[x] + value
            m = target[x]
            target[x] = s if s < m else m
    return fold


# ----------------------------------------------------------------------------- GPU kernel (CUDA)


def _erode_gpu(src, terms: Terms, out_shape, origin, sentinel):
    import cupy as cp

    src = cp.ascontiguousarray(src)
    out = cp.empty(out_shape, dtype=src.dtype)
    kernel = cuda_kernel(CUDA_SOURCE, f"nonflat_erosion<{_CUDA_TYPES[src.dtype]}>", CUDA_INSTANTIATIONS)
    i32 = np.int32
    count = out.size
    args = (src, out, i32(src.shape[0]), i32(src.shape[1]), i32(out_shape[0]), i32(out_shape[1]),
            i32(origin[0]), i32(origin[1]), cp.asarray(terms.dy, dtype=cp.int32), cp.asarray(terms.off, dtype=cp.int32),
            cp.asarray(terms.kind, dtype=cp.int32), cp.asarray(terms.values.astype(src.dtype)), i32(terms.dy.size),
            src.dtype.type(sentinel))
    kernel(((count + _THREADS - 1) // _THREADS,), (_THREADS,), args)
    return out
