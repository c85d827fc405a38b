"""gpuillum.demo.variants: image sets of known illumination (the QC and --method auto validation sets)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuillum.demo.variants import ShadingCase
from gpuillum.errors import InvalidValue


def test_spread_scales_each_image_and_leaves_equal_sets_unchanged():
    equal = ShadingCase("ramp", depth=1.5, dark=100, coverage=(0.03, 0.05), images=6, shape=(96, 96), seed=2)
    assert np.array_equal(equal.levels(), np.ones(6))
    spread = ShadingCase("ramp", depth=1.5, dark=100, coverage=(0.03, 0.05), spread=0.2, images=6, shape=(96, 96), seed=2)
    levels = spread.levels()
    assert np.array_equal(levels, spread.levels()) and np.all(np.abs(levels - 1) <= 0.2) and levels.std() > 0.02
    # the specimen (background and cells) scales, the camera offset does not
    for a, b, level in zip(equal.images_uint16(), spread.images_uint16(), levels):
        above = (np.median(b.astype(float)) - 100) / (np.median(a.astype(float)) - 100)
        assert above == pytest.approx(level, rel=0.02)


def test_spread_outside_zero_to_one_is_refused():
    with pytest.raises(InvalidValue, match="spread"):
        ShadingCase(spread=1.5)
