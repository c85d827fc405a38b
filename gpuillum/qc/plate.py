"""Plate layout for heatmaps: per-site values placed where their wells sit on the plate."""
from __future__ import annotations

import math
import re

import numpy as np

from ..demo.synthetic import _row_letters

WELL = re.compile(r"^([A-Za-z]{1,2})0*(\d{1,3})$")


def parse_well(well) -> tuple[int, int] | None:
    """(row, column), both from 0, of a well name like "B03" or "AA12"; None for anything else."""
    match = WELL.match(str(well or ""))
    if not match:
        return None
    row = 0
    for letter in match.group(1).upper():
        row = row * 26 + ord(letter) - ord("A") + 1
    return row - 1, int(match.group(2)) - 1


def has_layout(keys) -> bool:
    """Whether (well, site) keys name plate wells (a heatmap can be drawn)."""
    return bool(keys) and all(parse_well(well) is not None for well, _site in keys)


def layout_grid(values: dict):
    """``values`` {(well, site): number} as a 2-D array: the plate's rows x columns (from the first
    to the last used), each well a small square grid of its sites (NaN where nothing was measured).

    Returns (grid, ticks) where ticks = ((row positions, row labels), (column positions, column
    labels)); the same keys give the same layout, so before and after line up.

    Examples
    --------
    >>> grid, ticks = layout_grid({("B03", 1): 410.0, ("B03", 2): 400.0, ("C04", 1): 380.0})
    """
    wells = {key: parse_well(key[0]) for key in values}
    rows = [position[0] for position in wells.values()]
    cols = [position[1] for position in wells.values()]
    sites = max(int(site) for _well, site in values) if values else 1
    side = max(1, math.ceil(math.sqrt(sites)))
    top, left = min(rows), min(cols)
    n_rows, n_cols = max(rows) - top + 1, max(cols) - left + 1
    grid = np.full((n_rows * side, n_cols * side), np.nan)
    for (well, site), value in values.items():
        row, col = wells[(well, site)]
        index = int(site) - 1 if int(site) >= 1 else 0
        grid[(row - top) * side + index // side, (col - left) * side + index % side] = value
    letters = [_row_letters(top + r) for r in range(n_rows)]
    row_ticks = ([r * side + (side - 1) / 2 for r in range(n_rows)], letters)
    col_ticks = ([c * side + (side - 1) / 2 for c in range(n_cols)], [str(left + c + 1) for c in range(n_cols)])
    return grid, (row_ticks, col_ticks)
