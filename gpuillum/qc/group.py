"""One group's QC: the metrics before and after a correction, and the verdicts drawn from them.

:func:`measure` turns a set of images (a sample of one group: plate x channel, a stack, a
series) into numbers: the background map's shading (gpuillum.qc.shading), the cells' gain
map's shading (a coarse map of the foreground excess, whose shape is the illumination's gain
whatever the camera offset), the contrast, the noise floor of the shading and each image's own
residual shading. :func:`model_metrics` describes a model (vignetting depth, darkfield level and
share, roughness: how much of it is not a smooth surface, i.e. follows the cells).
:func:`group_qc` puts them together with the output dtype losses and answers the blog's two
questions (gpuillum.qc.verdicts).
"""
from __future__ import annotations

import numpy as np

from ..backend import to_numpy
from .maps import GroupMaps, group_maps, grid_shape, shrink
from .shading import shading, smooth_fit

GAIN_GRID = 4  # the gain map's blocks along the longer side: pooled cells over the whole sample
FLOOR_SIGMAS = 3.0  # a map's level must exceed this many noise standard deviations for relative numbers


def _gain_map(images, maps: GroupMaps) -> np.ndarray:
    """The median foreground excess of the pooled cell pixels of every image, per coarse block."""
    by, bx = grid_shape(images[0].shape, GAIN_GRID)
    pools = [[[] for _ in range(bx)] for _ in range(by)]
    for image, image_map in zip(images, maps.per_image):
        image = to_numpy(image).astype(np.float32, copy=False)
        gy, gx = image_map.background.shape
        bh, bw = image.shape[0] // gy, image.shape[1] // gx
        area = image[: gy * bh, : gx * bw]
        background = np.repeat(np.repeat(image_map.background, bh, 0), bw, 1)
        noise = np.repeat(np.repeat(image_map.noise, bh, 0), bw, 1)
        excess = area - background
        cells = excess > 5.0 * np.maximum(noise, 1e-6)
        height, width = area.shape
        for i in range(by):
            for j in range(bx):
                rows, cols = slice(i * height // by, (i + 1) * height // by), slice(j * width // bx, (j + 1) * width // bx)
                pools[i][j].append(excess[rows, cols][cells[rows, cols]])
    out = np.full((by, bx), np.nan)
    for i in range(by):
        for j in range(bx):
            values = np.concatenate(pools[i][j])
            if values.size >= 50:
                out[i, j] = float(np.median(values))
    return out


def _contrast(maps: GroupMaps) -> float | None:
    """The cells' median excess over the background in units of the background's variation across
    the field (the standard deviation of the group's background map plus the pixel noise): how well
    one global threshold separates the cells from the background."""
    if not np.isfinite(maps.signal):
        return None
    spread = float(np.std(maps.background)) + maps.noise
    return round(maps.signal / max(spread, 1e-12), 4)


def _noise_floor(maps: GroupMaps) -> float | None:
    """The peak-to-valley a smooth fit finds in the background map from noise and cells alone: that
    of half the difference between the maps of the even and of the odd images (None for one image)."""
    if not maps.halves or not maps.level > 0:
        return None
    difference = (maps.halves[0][0] - maps.halves[1][0]) / (2.0 * maps.level)
    surface = smooth_fit(difference)
    return round(float(surface.max() - surface.min()), 6)


def measure(images, names=None) -> dict:
    """The QC metrics of a set of images of one group (a sample; any real dtype, NumPy or CuPy).

    Images are block-averaged to at most 512 pixels a side first (gpuillum.qc.maps.shrink).

    Returns
    -------
    dict (JSON types): ``background`` (shading of the background map, with ``level``),
    ``gain`` (shading of the cells' gain map, None-valued with too few cells), ``contrast``,
    ``noise_floor``, ``signal`` (the cells' median excess), ``noise`` (the pixel noise),
    ``images`` and ``per_image`` (each image's own background peak-to-valley).

    Examples
    --------
    >>> measure(raw_images)["background"]["peak_to_valley"]      # 0.28: 28 % brighter at the peak
    """
    small = [shrink(image) for image in images]
    maps = group_maps(small)
    floor = FLOOR_SIGMAS * maps.noise
    background = shading(maps.background, floor=floor)
    background["level"] = round(maps.level, 4)
    gain = shading(_gain_map(small, maps), floor=floor)
    names = list(names) if names is not None else [str(i) for i in range(len(small))]
    per_image = []
    for name, image_map in zip(names, maps.per_image):
        own = shading(image_map.background, floor=floor)
        per_image.append({"image": name, "peak_to_valley": own["peak_to_valley"]})
    return {"background": background, "gain": gain, "contrast": _contrast(maps), "noise_floor": _noise_floor(maps),
            "signal": None if not np.isfinite(maps.signal) else round(maps.signal, 4), "noise": round(maps.noise, 4),
            "images": len(small), "per_image": per_image, "_maps": maps}


def model_metrics(model, raw_level: float | None = None) -> dict:
    """What a model says about the illumination: ``vignetting_depth`` (flat field max / min),
    ``darkfield_level`` (its mean, in counts) and ``darkfield_share`` (of ``raw_level``, the raw
    images' background level), ``roughness`` (standard deviation of the flat field's block map
    around a smooth surface, relative to its mean: optics make smooth fields, a function that
    follows the cells is rough), ``images`` (how many images it was estimated from, when known).

    Examples
    --------
    >>> model_metrics(gi.IlluminationModel(flatfield=flat))["vignetting_depth"]
    """
    from .maps import _blocks

    out: dict = {"method": model.method or None, "images": model.info.get("images")}
    flat = None if model.flatfield is None else to_numpy(model.flatfield).astype(np.float64)
    if flat is not None and np.isfinite(flat).all() and flat.min() > 0:
        out["vignetting_depth"] = round(float(flat.max() / flat.min()), 4)
        small = shrink(flat)
        block = _blocks(small, grid_shape(small.shape), np).mean(axis=(2, 3))
        relative = block / block.mean()
        out["roughness"] = round(float(np.std(relative - smooth_fit(relative))), 6)
        out["shading"] = {k: v for k, v in shading(block).items() if k in ("peak_to_valley", "centre_corner", "cv")}
    else:
        out.update(vignetting_depth=None, roughness=None, shading=None)
    if model.darkfield is not None:
        dark = to_numpy(model.darkfield).astype(np.float64)
        level = float(dark.mean())
        out["darkfield_units"] = model.units
        out["darkfield_level"] = round(level, 6)
        out["darkfield_share"] = None if not raw_level or model.units != "counts" else round(level / raw_level, 4)
    else:
        out.update(darkfield_level=None, darkfield_share=None)
    return out


def _strip(metrics: dict | None) -> dict | None:
    return None if metrics is None else {k: v for k, v in metrics.items() if not k.startswith("_")}


def group_qc(label: str, before, after=None, *, names=None, model=None, output: dict | None = None,
             min_images: int | None = None, group_size: int | None = None) -> dict:
    """The QC of one group: metrics before (and after) a correction, the model's, the output's, and the verdicts.

    Parameters
    ----------
    label : str
        The group's name (e.g. "plate P1, channel DNA").
    before, after : sequences of 2-D arrays
        A sample of the group's raw images and the same images corrected (or None).
    names : the images' names, for the per-image residuals
    model : IlluminationModel, optional
    output : dict, optional
        What the output dtype cast lost (OutputStats.to_dict()).
    min_images : int, optional
        Fewer images behind a model is flagged (default: gpuillum.job.groups.MIN_IMAGES).
    group_size : int, optional
        The group's number of images (the sample may hold fewer).

    Returns
    -------
    dict: ``group``, ``needed``, ``worked`` (None without corrected images), ``evidence``
    ({needed, worked}: one sentence each), ``flags`` ([{kind, text}]), ``metrics``
    ({before, after, model, output, images_sampled, images_in_group}); the key ``_measured``
    holds the maps for the figures and is not JSON.

    Examples
    --------
    >>> qc = group_qc("plate P1, channel DNA", raw_sample, corrected_sample, model=model)
    >>> qc["needed"], qc["worked"], [f["text"] for f in qc["flags"]]
    """
    from ..job.groups import MIN_IMAGES
    from . import verdicts

    before_metrics = measure(before, names)
    after_metrics = None if after is None else measure(after, names)
    if after_metrics is not None and after_metrics["background"]["peak_to_valley"] is None and before_metrics["_maps"].level > 0:
        surface = smooth_fit(after_metrics["_maps"].background)
        after_metrics["absolute_peak_to_valley"] = round(float(surface.max() - surface.min()) / before_metrics["_maps"].level, 6)
    model_info = None if model is None else model_metrics(model, before_metrics["_maps"].level)
    needed, needed_why = verdicts.needed(before_metrics)
    problems = verdicts.flags(before_metrics, after_metrics, model_info, output, MIN_IMAGES if min_images is None else min_images)
    worked, worked_why = verdicts.worked(before_metrics, after_metrics, problems)
    if after_metrics is not None:
        for entry, corrected in zip(before_metrics["per_image"], after_metrics["per_image"]):
            entry["after"] = corrected["peak_to_valley"]
    return {
        "group": label, "needed": needed, "worked": worked, "evidence": {"needed": needed_why, "worked": worked_why},
        "flags": problems,
        "metrics": {"before": _strip(before_metrics), "after": _strip(after_metrics), "model": model_info, "output": output,
                    "images_sampled": before_metrics["images"], "images_in_group": group_size or before_metrics["images"]},
        "_measured": (before_metrics, after_metrics),
    }
