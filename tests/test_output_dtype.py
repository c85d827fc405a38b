"""gpuillum.output_dtype: the dtypes of each policy, the cast's rounding and clamping, and the
counts of what it loses (clipped pixels, merged grey levels), against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from gpuillum.output_dtype import OutputStats, cast_output, count_levels, output_dtype


@pytest.mark.parametrize("dtype, policy, expected", [
    ("uint8", "same", "uint8"), ("uint16", "same", "uint16"), ("float32", "same", "float32"), ("float64", "same", "float32"),
    ("uint8", "signed", "int16"), ("uint16", "signed", "int32"), ("float32", "signed", "float32"),
    ("uint8", "float32", "float32"), ("uint16", "float32", "float32"),
])
def test_output_dtypes(dtype, policy, expected):
    assert output_dtype(dtype, policy) == np.dtype(expected)


def test_unknown_policy_is_one_line():
    with pytest.raises(ValueError, match=r"^output_dtype: expected one of 'same', 'float32', 'signed', got 'int8'$"):
        output_dtype("uint8", "int8")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("policy", ["same", "signed"])
def test_cast_rounds_half_even_clamps_and_never_wraps(rng, dtype, policy):
    top = np.iinfo(dtype).max
    values = np.concatenate([rng.uniform(-2.0 * top, 3.0 * top, 5000), np.arange(-4.5, 5.0, 0.5), [np.nan]]).astype(np.float32)
    stats = OutputStats()
    got = cast_output(values, dtype, policy, stats=stats)
    target = np.dtype(output_dtype(dtype, policy))
    info = np.iinfo(target)
    rounded = np.array([round(float(v)) if np.isfinite(v) else 0 for v in values])  # Python's round: half to even
    expected = np.clip(rounded, info.min, info.max)
    np.testing.assert_array_equal(got, expected.astype(target))
    assert stats.pixels == values.size
    assert stats.below == int(np.sum(rounded < info.min)) + 1  # the NaN counts as clipped to 0
    assert stats.above == int(np.sum(rounded > info.max))


def test_signed_subtraction_is_exact(rng):
    raw = rng.integers(0, 65536, (40, 50), dtype=np.uint16)
    background = rng.integers(0, 65536, (40, 50), dtype=np.uint16)
    values = raw.astype(np.float32) - background.astype(np.float32)
    np.testing.assert_array_equal(cast_output(values, np.uint16, "signed"), raw.astype(np.int32) - background)


def test_levels_lost_by_a_division_are_counted(rng):
    raw = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    stats = OutputStats()
    out = cast_output(raw.astype(np.float32) / np.float32(1.6), np.uint8, stats=stats, source=raw)
    lost = 1 - len(np.unique(out)) / len(np.unique(raw))
    assert stats.lost_levels == pytest.approx(lost) and lost > 0.3
    assert any("grey levels were merged" in line for line in stats.warnings("plate P, channel DNA"))


def test_merge_adds_counts_and_unites_levels():
    a, b = OutputStats(), OutputStats()
    count_levels(a, np.array([1, 2], np.uint8), np.array([1, 1], np.uint8))
    count_levels(b, np.array([3, 4], np.uint8), np.array([3, 4], np.uint8))
    a.pixels, a.below, b.pixels, b.above = 2, 1, 2, 1
    merged = a.merge(b)
    assert (merged.pixels, merged.below, merged.above) == (4, 1, 1)
    assert merged.lost_levels == pytest.approx(1 - 3 / 4)
    lines = merged.warnings("stack S", remedy="--rescale Median")
    assert len(lines) == 1 and "50.0 % of the pixels were clipped" in lines[0] and lines[0].endswith("or --rescale Median")


def test_float_output_keeps_values(rng):
    values = rng.normal(0, 1000, 100).astype(np.float32)
    np.testing.assert_array_equal(cast_output(values, np.uint16, "float32"), values)
