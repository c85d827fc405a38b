"""The non-flat erosion primitive against brute force: random kernels (singles and pairs),
monotone symmetric rows (windows), uint16 saturation, origins that extend or shift the grid."""
from __future__ import annotations

import numpy as np
import pytest

from gpuillum.filters import nonflat


def brute_force(src, values, inside, origin, out_shape, sentinel):
    height, width = src.shape
    rows, cols = values.shape
    out = np.full(out_shape, sentinel, src.dtype)
    for i, j in zip(*np.nonzero(inside)):
        for y in range(out_shape[0]):
            for x in range(out_shape[1]):
                iy, ix = y + origin[0] + i - rows // 2, x + origin[1] + j - cols // 2
                if 0 <= iy < height and 0 <= ix < width:
                    if src.dtype == np.uint16:
                        total = src.dtype.type(min(int(src[iy, ix]) + int(values[i, j]), 65535))
                    else:
                        total = src[iy, ix] + values[i, j]
                    out[y, x] = min(out[y, x], total)
    return out


def random_case(rng, dtype, monotone):
    height, width = rng.integers(1, 12, 2)
    if monotone:
        r = int(rng.integers(0, 5))
        rows = cols = 2 * r + 1
        yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
        squares = yy**2 + xx**2
        heights = r - np.sqrt(np.clip(r * r - squares, 0, None))
        values = np.floor(heights) if dtype == np.uint16 else heights
        inside = squares <= r * r
    else:
        rows, cols = rng.integers(1, 8, 2)
        values = rng.random((rows, cols)) * 10
        values = np.where(rng.random((rows, cols)) < 0.5, values, values[:, ::-1])  # some mirrored pairs
        if dtype == np.uint16:
            values = np.floor(values * 10)
        inside = rng.random((rows, cols)) < 0.8
    if dtype == np.uint16:
        src = rng.integers(0, 65536, (height, width)).astype(dtype)
    else:
        src = (rng.random((height, width)) * 100).astype(dtype)
    return src, values.astype(dtype), inside


@pytest.mark.parametrize("monotone", (False, True))
@pytest.mark.parametrize("dtype", (np.uint16, np.float32, np.float64), ids=lambda d: np.dtype(d).name)
def test_equals_brute_force(rng, dtype, monotone):
    sentinel = 65535 if dtype == np.uint16 else np.inf
    kinds = set()
    for _ in range(25):
        src, values, inside = random_case(rng, dtype, monotone)
        terms = nonflat.kernel_terms(values, inside)
        kinds |= set(terms.kind.tolist())
        origin = tuple(int(v) for v in rng.integers(-3, 3, 2))
        shape = (src.shape[0] + 2, src.shape[1] + 3)
        ours = nonflat.erode(src, terms, shape, origin, sentinel)
        assert np.array_equal(ours, brute_force(src, values, inside, origin, shape, sentinel))
    assert kinds == {nonflat.WINDOW} if monotone else kinds >= {nonflat.SINGLE, nonflat.PAIR}


def test_rows_become_windows_only_when_symmetric_and_non_decreasing():
    values = np.array([[3, 1, 0, 1, 3], [3, 1, 0, 2, 3], [1, 2, 0, 2, 1]], np.float32)
    terms = nonflat.kernel_terms(values, np.ones(values.shape, bool))
    by_row = {dy: set(terms.kind[terms.dy == dy].tolist()) for dy in (-1, 0, 1)}
    assert by_row == {-1: {nonflat.WINDOW}, 0: {nonflat.SINGLE, nonflat.PAIR}, 1: {nonflat.SINGLE, nonflat.PAIR}}
    window = terms.off[terms.dy == -1].tolist()
    assert window == [0, 1, 2]  # one term per distinct value, at its widest offset


def test_no_terms_give_the_sentinel():
    src = np.ones((3, 4), np.float32)
    terms = nonflat.kernel_terms(np.full((3, 3), np.inf, np.float32))
    assert np.all(nonflat.erode(src, terms, (3, 4), (0, 0), np.inf) == np.inf)
