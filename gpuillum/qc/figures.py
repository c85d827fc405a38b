"""QC pictures (matplotlib, headless): the checks a person makes by eye, drawn with axes, colour bars and legends.

* :func:`before_after`: the same image before and after correction, each **brightened** on its
  own background (the display range spans the background's blocks, so shading fills the grey
  range and the cells saturate, as a person does with Fiji's Brightness/Contrast), then both at
  **one shared range**, and a line profile across the field (the median of a band of rows
  through the centre, relative to each image's background level);
* :func:`function_preview` / :func:`model_figure`: the model (flat field, darkfield) in colour with
  a colour bar, the flat field's maximum marked;
* :func:`profiles_figure`: radial, row and column profiles of the background map before/after;
* :func:`plate_heatmap`: per-site background level over the plate layout, before/after;
* :func:`methods_panel`: each method's corrected image at matched brightness (the blog's Figure 6);
* :func:`background_figure`: a background method's before / background / after, with a line
  profile across all three on shared axes (the lesson's check);
* :func:`profile_plot`: line profiles of images on shared axes (``gpuillum profile``, ImageJ's
  Plot Profile).

Every function writes one PNG atomically and touches no global matplotlib state (a Figure with
its own Agg canvas), so it is safe in threads. Images are block-averaged to at most ``max_size``
pixels a side first; only that small copy leaves a GPU.
"""
from __future__ import annotations

import io
import math

import numpy as np

from ..backend import to_numpy
from ..errors import InvalidValue
from ..io.atomic import atomic_write_bytes
from .maps import image_maps, shrink

BEFORE_COLOUR, AFTER_COLOUR = "#c8553d", "#1f6fb2"
DPI = 100
PROFILE_BAND = 0.05  # the line profile: the median of this share of the rows around the centre


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(path, buffer.getvalue())


def _check_2d(image, name):
    if not hasattr(image, "ndim") or image.ndim != 2 or image.size == 0:
        raise InvalidValue(f"{name}: expected a non-empty 2-D array, got {getattr(image, 'shape', type(image).__name__)}")


def _small(image, max_size: int) -> np.ndarray:
    return to_numpy(shrink(image, max_size)).astype(np.float64)


def brightened_limits(image) -> tuple[float, float]:
    """The display range that brightens ``image`` on its own background: Tukey's fences of its block
    backgrounds (quartiles -/+ 1.5 interquartile ranges, so blocks full of cells do not count), within
    the blocks' range, widened by 2 noise standard deviations below and 3 above.

    Examples
    --------
    >>> lo, hi = brightened_limits(raw)        # cells saturate, the background's shading fills the range
    """
    maps = image_maps(image)
    noise = float(np.median(maps.noise))
    q1, q3 = (float(q) for q in np.percentile(maps.background, [25, 75]))
    spread = q3 - q1
    lo = max(float(maps.background.min()), q1 - 1.5 * spread) - 2 * noise
    hi = min(float(maps.background.max()), q3 + 1.5 * spread) + 3 * noise
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _line_profile(image: np.ndarray, level: float) -> np.ndarray:
    h = image.shape[0]
    band = max(1, int(round(h * PROFILE_BAND)))
    rows = image[max(0, h // 2 - band): h // 2 + band + 1]
    profile = np.median(rows, axis=0)
    return profile / level if level > 0 else profile


def _show(axes, image, limits, title):
    shown = axes.imshow(image, cmap="gray", vmin=limits[0], vmax=limits[1], interpolation="nearest")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])
    return shown


def before_after(before, after, path, *, labels: tuple[str, str] = ("before", "after"), title: str | None = None,
                 max_size: int = 384) -> None:
    """One image before and after correction: brightened each on its own background, then at one
    shared range, and a line profile across the field relative to each background level.

    Examples
    --------
    >>> before_after(raw, corrected, "OUT/qc/DNA_before_after.png", title="plate P1, channel DNA")
    """
    _check_2d(before, "before")
    _check_2d(after, "after")
    if tuple(before.shape) != tuple(after.shape):
        raise InvalidValue(f"after: shape {tuple(after.shape)} does not match before's {tuple(before.shape)}")
    images = [_small(image, max_size) for image in (before, after)]
    own = [brightened_limits(image) for image in images]
    shared = (min(limits[0] for limits in own), max(limits[1] for limits in own))
    aspect = images[0].shape[0] / images[0].shape[1]
    figure = _figure(8.0, 8.0 * aspect + 3.0)
    grid = figure.add_gridspec(3, 2, height_ratios=[aspect * 4, aspect * 4, 2.2])
    for column, (image, limits, label) in enumerate(zip(images, own, labels)):
        shown = _show(figure.add_subplot(grid[0, column]), image, limits, f"{label}: brightened on its background\n"
                      f"[{limits[0]:.4g}, {limits[1]:.4g}]")
        figure.colorbar(shown, ax=shown.axes, shrink=0.8)
        shown = _show(figure.add_subplot(grid[1, column]), image, shared, f"{label}: shared range [{shared[0]:.4g}, {shared[1]:.4g}]")
        figure.colorbar(shown, ax=shown.axes, shrink=0.8)
    axes = figure.add_subplot(grid[2, :])
    for image, label, colour in zip(images, labels, (BEFORE_COLOUR, AFTER_COLOUR)):
        level = image_maps(image).level
        axes.plot(_line_profile(image, level), color=colour, label=f"{label} (background level {level:.4g})", linewidth=1)
    axes.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
    axes.set_xlabel("column (pixels of the picture)")
    axes.set_ylabel("relative to the\nbackground level")
    axes.set_title("line profile through the centre (median of the central rows)", fontsize=9)
    axes.legend(fontsize=8, loc="upper right")
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)


def _field(axes, figure, values, title, cmap="viridis", mark_max=False, label=""):
    shown = axes.imshow(values, cmap=cmap, interpolation="nearest")
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("x (pixels)")
    axes.set_ylabel("y (pixels)")
    bar = figure.colorbar(shown, ax=axes, shrink=0.85)
    bar.set_label(label)
    if mark_max and np.isfinite(values).any():
        y, x = np.unravel_index(np.nanargmax(values), values.shape)
        axes.plot([x], [y], marker="+", color="white", markersize=14, markeredgewidth=2, label="maximum")
        axes.legend(fontsize=7, loc="lower right")


def function_preview(function, path, *, title: str | None = None, max_size: int = 512) -> None:
    """An illumination function (a flat field or a background) in colour with a colour bar, its
    maximum marked and its min / mean / max in the title.

    Examples
    --------
    >>> function_preview(np.load("OUT/illum/P1_IllumDNA.npy"), "OUT/illum/P1_IllumDNA.png", title="P1 DNA")
    """
    _check_2d(function, "function")
    small = to_numpy(shrink(function, max_size)).astype(np.float64)
    finite = np.isfinite(small)
    if not finite.any():
        raise InvalidValue("function: has no finite values")
    aspect = small.shape[0] / small.shape[1]
    figure = _figure(5.5, 4.5 * aspect + 0.8)
    values = small[finite]
    text = f"min {values.min():.4g}, mean {values.mean():.4g}, max {values.max():.4g}"
    _field(figure.add_subplot(), figure, small, f"{title}\n{text}" if title else text, mark_max=True, label="value")
    _save(figure, path)


def model_figure(model, path, *, title: str | None = None, max_size: int = 512) -> None:
    """The model's flat field (and darkfield, when it has one) side by side, each with a colour bar."""
    parts = [(name, to_numpy(getattr(model, name))) for name in ("flatfield", "darkfield") if getattr(model, name) is not None]
    if not parts:
        raise InvalidValue("model: has no flat field or darkfield to show")
    small = [(name, to_numpy(shrink(array, max_size)).astype(np.float64)) for name, array in parts]
    aspect = small[0][1].shape[0] / small[0][1].shape[1]
    figure = _figure(5.2 * len(small), 4.5 * aspect + 1.0)
    units = "CellProfiler units (1 = dtype maximum)" if model.units == "cellprofiler" else "counts"
    for index, (name, values) in enumerate(small):
        finite = values[np.isfinite(values)]
        head = "flat field (gain)" if name == "flatfield" else f"darkfield ({units})"
        stats = f"min {finite.min():.4g}, mean {finite.mean():.4g}, max {finite.max():.4g}" if finite.size else "no finite values"
        if name == "flatfield" and finite.size and finite.min() > 0:
            stats += f"; max/min {finite.max() / finite.min():.3f}"
        _field(figure.add_subplot(1, len(small), index + 1), figure, values, f"{head}\n{stats}", mark_max=name == "flatfield",
               label="gain" if name == "flatfield" else units)
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)


def profiles_figure(before: dict, after: dict | None, path, *, title: str | None = None) -> None:
    """Radial, row and column profiles of the background map (relative to its mean), before and after."""
    figure = _figure(11.0, 3.4)
    for index, (key, xlabel) in enumerate((("radial", "distance from the centre (0 = centre, 1 = corner)"),
                                           ("rows", "row block (top to bottom)"), ("columns", "column block (left to right)"))):
        axes = figure.add_subplot(1, 3, index + 1)
        for metrics, label, colour in ((before, "before", BEFORE_COLOUR), (after, "after", AFTER_COLOUR)):
            if metrics is None:
                continue
            values = [np.nan if v is None else v for v in metrics["background"][key]]
            if values:
                positions = (np.arange(len(values)) + 0.5) / len(values) if key == "radial" else np.arange(len(values))
                axes.plot(positions, values, marker="o", markersize=3, color=colour, label=label)
        axes.axhline(1.0, color="0.5", linewidth=0.8, linestyle="--")
        axes.set_xlabel(xlabel, fontsize=8)
        axes.set_ylabel("background / its mean", fontsize=8)
        axes.set_title(f"{key} profile", fontsize=9)
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)


def plate_heatmap(levels: dict, path, *, title: str | None = None) -> None:
    """Per-site background level over the plate layout, before and after, each relative to its median.

    ``levels``: {"before": {(well, site): level}, "after": {...}} (after may be missing); wells
    like "B03". Each well is drawn as a small grid of its sites (1, 2, ... row by row).
    """
    from .plate import layout_grid

    panels = [(name, values) for name, values in (("before", levels.get("before")), ("after", levels.get("after"))) if values]
    if not panels:
        raise InvalidValue("levels: expected per-site levels before (and after)")
    grid, _ticks = layout_grid(panels[0][1])
    figure = _figure(5.5 * len(panels), 1.0 + 4.5 * grid.shape[0] / grid.shape[1])
    for index, (name, values) in enumerate(panels):
        placed, ticks = layout_grid(values)
        finite = placed[np.isfinite(placed)]
        relative = placed / np.median(finite) if finite.size else placed
        axes = figure.add_subplot(1, len(panels), index + 1)
        shown = axes.imshow(relative, cmap="magma", interpolation="nearest")
        axes.set_title(f"{name}: background level per site / plate median", fontsize=9)
        (row_ticks, row_labels), (col_ticks, col_labels) = ticks
        axes.set_yticks(row_ticks, row_labels, fontsize=7)
        axes.set_xticks(col_ticks, col_labels, fontsize=7)
        axes.set_xlabel("column")
        axes.set_ylabel("row")
        figure.colorbar(shown, ax=axes, shrink=0.85).set_label("relative level")
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)


def methods_panel(images: dict, path, *, title: str | None = None, max_size: int = 384) -> None:
    """Each method's corrected image (``{label: image}``, the raw one first) at matched brightness:
    each brightened on its own background, so the same display rule applies to all (the blog's Figure 6)."""
    if not images:
        raise InvalidValue("images: expected at least one image")
    count = len(images)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    first = _small(next(iter(images.values())), max_size)
    aspect = first.shape[0] / first.shape[1]
    figure = _figure(3.2 * columns, 3.2 * aspect * rows + 0.6)
    for index, (label, image) in enumerate(images.items()):
        small = _small(image, max_size)
        limits = brightened_limits(small)
        _show(figure.add_subplot(rows, columns, index + 1), small, limits, f"{label}\n[{limits[0]:.4g}, {limits[1]:.4g}]")
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)


PROFILE_COLOURS = (BEFORE_COLOUR, "#6a994e", AFTER_COLOUR, "#7b2cbf", "#e09f3e")


def _display_limits(image: np.ndarray) -> tuple[float, float]:
    """The 0.5th-99.5th percentile of the finite values (a range that a few spots do not take over)."""
    finite = image[np.isfinite(image)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _profile_axes(axes, profile, series: dict, *, title: str | None = None, colours=PROFILE_COLOURS) -> None:
    """Each of ``series`` ({label: values}) along ``profile`` (a gpuillum.qc.profile.LineProfile)."""
    for (label, values), colour in zip(series.items(), colours):
        axes.plot(profile.distance, values, color=colour, label=label, linewidth=1)
    axes.set_xlabel("distance along the profile (pixels)")
    axes.set_ylabel("grey value")
    axes.set_title(title or f"profile: {profile.description}", fontsize=9)
    axes.legend(fontsize=8, loc="best")
    axes.grid(True, linewidth=0.4, alpha=0.5)


def profile_plot(profile, series: dict, path, *, title: str | None = None) -> None:
    """Line profiles of one or more images on shared axes, as ImageJ's Plot Profile draws one.

    Parameters
    ----------
    profile : gpuillum.qc.profile.LineProfile
    series : {label: float values along the profile}, e.g. {"input": ..., "corrected": ...}
    path : where the PNG goes.

    Examples
    --------
    >>> profile = line_profile(raw.shape, row=128)
    >>> profile_plot(profile, {"input": profile.values(raw), "corrected": profile.values(flat)}, "row128.png")
    """
    if not series:
        raise InvalidValue("series: expected at least one {label: values}")
    figure = _figure(7.5, 3.6)
    colours = (BEFORE_COLOUR, AFTER_COLOUR) if len(series) == 2 else PROFILE_COLOURS  # an image and its corrected copy
    _profile_axes(figure.add_subplot(), profile, series, title=title, colours=colours)
    _save(figure, path)


def background_figure(before, background, after, path, *, title: str | None = None, max_size: int = 256) -> None:
    """A background method on one image: before, the background, after, and their profiles along
    the middle row on shared axes (before and background at one display range, so the background
    shows what it takes away; after at its own).

    Examples
    --------
    >>> background_figure(raw, gi.rolling_ball_imagej(raw, 50, create_background=True, output_dtype="float32"),
    ...                   gi.rolling_ball_imagej(raw, 50), "OUT/qc/spots_background.png")
    """
    from .profile import line_profile

    images = {"before": before, "background": background, "after": after}
    for name, image in images.items():
        _check_2d(image, name)
        if tuple(image.shape) != tuple(before.shape):
            raise InvalidValue(f"{name}: shape {tuple(image.shape)} does not match before's {tuple(before.shape)}")
    row = before.shape[0] // 2
    profile = line_profile(before.shape, row=row)
    series = {name: profile.values(image) for name, image in images.items()}
    small = {name: _small(image, max_size) for name, image in images.items()}
    shared = _display_limits(small["before"])
    limits = {"before": shared, "background": shared, "after": _display_limits(small["after"])}
    aspect = small["before"].shape[0] / small["before"].shape[1]
    figure = _figure(10.0, 10.0 / 3 * aspect + 3.4)
    grid = figure.add_gridspec(2, 3, height_ratios=[aspect * 3.2, 2.6])
    marked = (row + 0.5) * small["before"].shape[0] / before.shape[0] - 0.5
    for column, name in enumerate(images):
        shown = _show(figure.add_subplot(grid[0, column]), small[name], limits[name],
                      f"{name} [{limits[name][0]:.4g}, {limits[name][1]:.4g}]")
        shown.axes.axhline(marked, color=PROFILE_COLOURS[column], linewidth=0.8, linestyle="--")
        figure.colorbar(shown, ax=shown.axes, shrink=0.8)
    _profile_axes(figure.add_subplot(grid[1, :]), profile, series,
                  title=f"profile along row {row} (dashed line), full resolution")
    if title:
        figure.suptitle(title, fontsize=11)
    _save(figure, path)
