"""Reusable group reductions: streamed over a group's images, merged in a fixed order.

:class:`ExactSum` is the exact running sum behind every mean over a group (CellProfiler's
average image, a mean projection over time): integer images are summed as integers, so the sum
does not depend on how the images are split into batches or in which order partial sums are
merged, and the mean is as exact as float64 allows.
"""
from __future__ import annotations

from ..backend import get_array_module, same_backend, to_numpy

EXACT_LIMIT = 2**32  # a uint32 sum holds at most this; beyond, int64


class ExactSum:
    """Running pixel-wise sum of images: exact integers for integer input, float64 otherwise.

    Integer values are added with their unit ``scale`` (e.g. the dtype maximum when the caller
    wants CellProfiler's [0, 1] units, or 1 for raw counts) in a uint32 sum, widened to int64 once
    it could overflow; float values (``scale`` None) in a float64 sum. Mixing the two converts the
    exact sum to float64 in the float values' units. The sum lives on the values' backend and
    pickles with NumPy state (unpickled: on the CPU).

    Examples
    --------
    >>> total = ExactSum()
    >>> for image in images:                       # uint16
    ...     total.add(image, scale=1)
    >>> mean = total.in_units() / total.count      # float64, exact sum
    """

    def __init__(self):
        self.total = None  # the sum's array (uint32 / int64 / float64)
        self.scale = None  # integer sum: the unit that maps it to float values; None: a float64 sum
        self.count = 0  # images summed

    def add(self, values, scale: int | None, images: int = 1, *, keep: bool = False) -> None:
        """Add ``values`` (integers of unit ``scale``, or floats when ``scale`` is None) counting as
        ``images`` images. ``keep``: the first integer values become the sum without a copy (for a
        sum that is never added to again)."""
        xp = get_array_module(values)
        if self.total is None:
            self.scale = scale
        elif scale != self.scale:
            self.to_float()
            if scale is not None:
                values = values / float(scale)
        exact = self.scale is not None
        wide = exact and (self.count + images) * self.scale >= EXACT_LIMIT
        if self.total is None:
            self.total = values if keep and exact else values.astype(xp.float64 if not exact else xp.int64 if wide else xp.uint32)
        else:
            if wide and self.total.dtype == xp.uint32:
                self.total = self.total.astype(xp.int64)
            self.total += values
        self.count += images

    def merge(self, other: "ExactSum") -> "ExactSum":
        """Add another sum (moved to this one's backend); returns self."""
        if other.total is not None:
            like = other.total if self.total is None else self.total
            self.add(same_backend(other.total, like), other.scale, other.count)
        return self

    def in_units(self):
        """The float64 sum in the float values' units (integer sums divided by their scale)."""
        if self.scale is None:
            return self.total
        return self.total / float(self.scale)

    def to_float(self) -> None:
        """Make the sum a float64 sum in the float values' units."""
        self.total = self.in_units()
        self.scale = None

    def replace(self, total, scale: int | None = None) -> None:
        """Put ``total`` (the same images' sum, e.g. at another size) in place of the sum."""
        self.total, self.scale = total, scale

    def to(self, device) -> "ExactSum":
        """Move the sum to ``device`` (gpuillum.backend.Device); returns self."""
        if self.total is not None:
            self.total = device.asarray(self.total)
        return self

    def __getstate__(self):
        state = dict(self.__dict__)
        if state["total"] is not None:
            state["total"] = to_numpy(state["total"])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
