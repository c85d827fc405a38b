"""The output dtype policy: which dtype a corrected image is written in, and what the cast loses.

A correction computes float32 values in the input's units. The policy turns them into pixels:

* ``same`` (the default): the input's dtype. Integers are rounded half to even and clamped to the
  dtype's range, never wrapped; float input gives float32. What the clamp and the rounding lose
  is counted (:class:`OutputStats`): pixels clipped below 0 or above the maximum, and the share
  of the input's grey levels that no longer exist in the output (a division by a function above
  1 merges neighbouring levels). Lost levels are worth a warning where the input has few of
  them (at most FEW_LEVELS, 8-bit content): there merged levels show as contour bands, while
  merging neighbouring levels of 16-bit data moves a value by one count.
* ``float32``: the values as they are, negatives and fractions kept.
* ``signed``: a signed type wide enough for the input's range, so ``raw - background`` keeps its
  negatives exactly: int16 for uint8, int32 for uint16, float32 for float input. Values are
  rounded half to even (exact for differences of integers) and clamped to the signed range.

Every operation is one NumPy/CuPy call on the values' backend, so CPU and GPU results are equal.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ._checks import check_choice
from .backend import get_array_module, to_numpy

OUTPUT_DTYPES = ("same", "float32", "signed")
SIGNED = {np.dtype(np.uint8): np.dtype(np.int16), np.dtype(np.uint16): np.dtype(np.int32)}
CLIPPED_WARNING = 0.01  # warn when more than 1 % of the pixels are clipped
LOST_LEVELS_WARNING = 0.25  # warn when more than a quarter of the input's grey levels are lost ...
FEW_LEVELS = 256  # ... from an input with so few levels that merged ones show as contour bands (8-bit content)


def output_dtype(input_dtype, policy: str = "same") -> np.dtype:
    """The dtype a corrected image of ``input_dtype`` is written in under ``policy``.

    Parameters
    ----------
    input_dtype : dtype
        The input image's dtype (uint8, uint16, float32 or float64).
    policy : {"same", "float32", "signed"}

    Returns
    -------
    numpy.dtype

    Examples
    --------
    >>> output_dtype("uint16", "signed")
    dtype('int32')
    """
    check_choice(policy, "output_dtype", OUTPUT_DTYPES)
    input_dtype = np.dtype(input_dtype)
    if input_dtype.kind == "f" or policy == "float32":
        return np.dtype(np.float32)
    if policy == "signed":
        return SIGNED.get(input_dtype, np.dtype(np.int64))
    return input_dtype


@dataclass
class OutputStats:
    """What the casts of one group of images lost: clipped pixels and grey levels (mergeable).

    ``levels_in`` / ``levels_out`` mark the grey levels present in the inputs and in the ``same``
    outputs of integer images (None otherwise); ``lost_levels`` is the share of the input's levels
    that have no distinct output level any more.
    """

    pixels: int = 0
    below: int = 0
    above: int = 0
    levels_in: np.ndarray | None = field(default=None, repr=False)
    levels_out: np.ndarray | None = field(default=None, repr=False)

    @property
    def clipped(self) -> int:
        return self.below + self.above

    @property
    def clipped_fraction(self) -> float:
        return self.clipped / self.pixels if self.pixels else 0.0

    @property
    def levels_used(self) -> int:
        """Distinct grey levels of the inputs (0 when not counted)."""
        return 0 if self.levels_in is None else int(np.count_nonzero(self.levels_in))

    @property
    def lost_levels(self) -> float:
        if self.levels_in is None or self.levels_out is None:
            return 0.0
        used = self.levels_used
        return max(0.0, 1.0 - int(np.count_nonzero(self.levels_out)) / used) if used else 0.0

    def merge(self, other: "OutputStats") -> "OutputStats":
        """Add ``other``'s counts to these (in place); returns self."""
        self.pixels += other.pixels
        self.below += other.below
        self.above += other.above
        for name in ("levels_in", "levels_out"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs.copy() if mine is None else mine | theirs)
        return self

    def to_dict(self) -> dict:
        """The counts for a manifest or a summary (JSON types)."""
        return {"pixels": self.pixels, "clipped_below": self.below, "clipped_above": self.above,
                "clipped_fraction": round(self.clipped_fraction, 6), "grey_levels_in": self.levels_used,
                "lost_grey_levels": round(self.lost_levels, 4)}

    def warnings(self, label: str, remedy: str = "") -> list[str]:
        """One line per loss over its threshold, naming ``label`` (e.g. "plate P1, channel DNA")
        and the remedies: --output-dtype float32 or signed, plus the method's own ``remedy``."""
        lines = []
        also = f" or {remedy}" if remedy else ""
        if self.clipped_fraction > CLIPPED_WARNING:
            lines.append(f"{label}: {100 * self.clipped_fraction:.1f} % of the pixels were clipped to the output type's range "
                         f"({self.below} below 0, {self.above} above the maximum); --output-dtype signed or float32 keeps "
                         f"them{also}")
        if self.lost_levels > LOST_LEVELS_WARNING and self.levels_used <= FEW_LEVELS:
            lines.append(f"{label}: {100 * self.lost_levels:.0f} % of the input's grey levels were merged by rounding to the "
                         f"input's type; --output-dtype float32 keeps them{also}")
        return lines


def cast_output(values, input_dtype, policy: str = "same", *, stats: OutputStats | None = None, source=None):
    """Float32 ``values`` (input units) as pixels of ``output_dtype(input_dtype, policy)``.

    Integer outputs: round half to even, NaN -> 0, clamp to the type's range (never wrap).
    ``stats``: counts the pixels clipped and, for ``same`` integer outputs, the grey levels of the
    ``source`` image (the input) and of the output.

    Parameters
    ----------
    values : NumPy or CuPy float array
    input_dtype : dtype of the image the values were computed from
    policy : {"same", "float32", "signed"}
    stats : OutputStats, optional
        Updated in place.
    source : array, optional
        The input image, for the grey-level count.

    Returns
    -------
    array of the output dtype, on ``values``' backend

    Examples
    --------
    >>> cast_output(np.array([-3.0, 2.5, 70000.0], np.float32), np.uint16)
    array([    0,     2, 65535], dtype=uint16)
    """
    target = output_dtype(input_dtype, policy)
    xp = get_array_module(values)
    if target.kind == "f":
        if stats is not None:
            stats.pixels += int(values.size)
        return values.astype(target, copy=False)
    rounded = xp.rint(values)
    info = np.iinfo(target)
    low, high = xp.float32(info.min), xp.float32(info.max)
    if stats is not None:
        stats.pixels += int(values.size)
        stats.below += int(xp.count_nonzero(~(rounded >= low)))  # NaN counts as clipped to 0
        stats.above += int(xp.count_nonzero(rounded > high))
    out = xp.clip(xp.where(xp.isnan(rounded), xp.float32(0), rounded), low, high).astype(target)
    if stats is not None and policy == "same" and source is not None:
        count_levels(stats, source, out)
    return out


def count_levels(stats: OutputStats, source, out) -> None:
    """Mark the grey levels of ``source`` and ``out`` (both uint8 or uint16) in ``stats``."""
    if source.dtype not in SIGNED or out.dtype != source.dtype:
        return
    size = np.iinfo(source.dtype).max + 1
    if stats.levels_in is None:
        stats.levels_in = np.zeros(size, bool)
        stats.levels_out = np.zeros(size, bool)
    for image, seen in ((source, stats.levels_in), (out, stats.levels_out)):
        xp = get_array_module(image)
        if xp is np:
            _mark_levels(np.ascontiguousarray(image).ravel(), seen)
        else:
            marks = xp.zeros(size, bool)
            marks[image.ravel()] = True
            seen |= to_numpy(marks)


@numba.njit(cache=True, nogil=True)
def _mark_levels(flat, seen):
    """seen[v] = True for every value v of ``flat`` (one pass; NumPy's fancy indexing is 10x slower)."""
    for value in flat:
        seen[value] = True
