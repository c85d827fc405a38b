"""Identity values of min / max reductions, used to pad or mask pixels out of them."""
from __future__ import annotations

import numpy as np


def never_wins(dtype, op: str):
    """The ``dtype`` value that never wins an ``op`` ("min" or "max") reduction: +-inf or the
    integer limit. Padding with it makes borders and masked pixels drop out of the result."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return dtype.type(np.inf if op == "min" else -np.inf)
    limits = np.iinfo(dtype)
    return dtype.type(limits.max if op == "min" else limits.min)
