"""The blog's two questions, answered per group: is correction needed, and did it work?

**Needed** when the background's shading (the peak-to-valley of a smooth surface fitted to
its block map, relative to its level) exceeds NEEDED_PEAK_TO_VALLEY *and* NOISE_MULTIPLE times
the noise floor (what the same fit finds in the difference between the even and the odd images:
cells and noise alone). The threshold was calibrated on synthetic plates of known flat field
(benchmarks/qc_calibration.py, results in benchmarks/results/): on flat fields of every density
and offset tried the shading stays below it, and every field whose true peak-to-valley is 10 %
or more is found.

**Worked** (given the corrected images): the shading left after the correction is below the
"needed" threshold or at most half what it was, and nothing got worse. Each of these is a
*flag*, printed loudly, in the report in red, and an exit code with ``--strict``:

* the background is more uneven after than before (``worse``);
* the corners are brighter than the centre after a vignetted field (``over-corrected``);
* the contrast (cells over the background's variation) fell (``contrast``);
* the model is rough, i.e. follows the cells rather than the optics (``rough``), or implausibly
  deep (``depth``), or was estimated from fewer images than a model needs (``few-images``);
* the output type clipped pixels or merged grey levels beyond the output dtype policy's limits
  (``clipped``, ``lost-levels``).
"""
from __future__ import annotations

NEEDED_PEAK_TO_VALLEY = 0.05
NOISE_MULTIPLE = 3.0
HALVED = 0.5  # "worked": at most this share of the shading left ...
WORSE_MARGIN = 0.01  # "worse": more than this (absolute) and 10 % more uneven than before
OVER_CORRECTED = 0.03  # corners brighter than the centre by more than 3 % after a vignetted field
CONTRAST_DROP = 0.8
ROUGHNESS_LIMIT = 0.01
DEPTH_LIMIT = 4.0


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def needed(before: dict) -> tuple[bool | None, str]:
    """(correction needed?, the evidence in one sentence) from :func:`gpuillum.qc.group.measure`'s result."""
    background = before["background"]
    shading, floor = background["peak_to_valley"], before.get("noise_floor")
    if shading is None:
        return None, f"the background cannot be measured ({background['reason']})"
    limit = max(NEEDED_PEAK_TO_VALLEY, NOISE_MULTIPLE * (floor or 0.0))
    where = "" if background["centre_corner"] is None else f", centre/corner {background['centre_corner']:.3f}"
    evidence = (f"background peak-to-valley {_pct(shading)}{where} against a threshold of {_pct(limit)} "
                f"(max of {_pct(NEEDED_PEAK_TO_VALLEY)} and {NOISE_MULTIPLE:g}x the noise floor {_pct(floor)})")
    return shading > limit, evidence


def flags(before: dict, after: dict | None, model: dict | None, output: dict | None, min_images: int) -> list[dict]:
    """Every way the correction made something worse or cannot be trusted: {kind, text}."""
    out = []

    def flag(kind, text):
        out.append({"kind": kind, "text": text})

    if after is not None:
        b, a = before["background"], after["background"]
        if a["peak_to_valley"] is not None and b["peak_to_valley"] is not None and \
                a["peak_to_valley"] > 1.1 * b["peak_to_valley"] + WORSE_MARGIN:
            flag("worse", f"the background is more uneven after correction (peak-to-valley {_pct(b['peak_to_valley'])} -> "
                          f"{_pct(a['peak_to_valley'])})")
        if (b["centre_corner"] or 0) > 1 + OVER_CORRECTED and a["centre_corner"] is not None and \
                a["centre_corner"] < 1 - OVER_CORRECTED:
            flag("over-corrected", f"over-corrected: the corners are now {_pct(1 / a['centre_corner'] - 1)} brighter than the "
                                   f"centre (centre/corner {b['centre_corner']:.3f} -> {a['centre_corner']:.3f})")
        if before.get("contrast") and after.get("contrast") is not None and after["contrast"] < CONTRAST_DROP * before["contrast"]:
            flag("contrast", f"the contrast fell ({before['contrast']:.2f} -> {after['contrast']:.2f}): the correction "
                             "dims the cells against their background")
    if model is not None:
        if model.get("roughness") is not None and model["roughness"] > ROUGHNESS_LIMIT:
            flag("rough", f"the model follows the cells, not the optics (roughness {_pct(model['roughness'])} > "
                          f"{_pct(ROUGHNESS_LIMIT)}: it is not a smooth surface)")
        if model.get("vignetting_depth") is not None and model["vignetting_depth"] > DEPTH_LIMIT:
            flag("depth", f"the model's flat field varies {model['vignetting_depth']:.1f}x (max/min), beyond the "
                          f"{DEPTH_LIMIT:g}x of real optics")
        if model.get("images") is not None and model["images"] < min_images:
            flag("few-images", f"the model was estimated from {model['images']} image(s); fewer than {min_images} "
                               "cannot separate the illumination from the cells")
    if output:
        from ..output_dtype import CLIPPED_WARNING, FEW_LEVELS, LOST_LEVELS_WARNING

        if output.get("clipped_fraction", 0) > CLIPPED_WARNING:
            flag("clipped", f"{_pct(output['clipped_fraction'])} of the pixels were clipped to the output type's range")
        if output.get("lost_grey_levels", 0) > LOST_LEVELS_WARNING and output.get("grey_levels_in", FEW_LEVELS + 1) <= FEW_LEVELS:
            flag("lost-levels", f"{_pct(output['lost_grey_levels'])} of the input's grey levels were merged")
    return out


def worked(before: dict, after: dict | None, problems: list[dict]) -> tuple[bool | None, str]:
    """(did it work?, why) given the metrics before and after and the :func:`flags`."""
    if after is None:
        if problems:
            return False, "; ".join(p["text"] for p in problems)
        return None, "no corrected images to judge"
    b, a = before["background"], after["background"]
    if a["peak_to_valley"] is None:
        left = after.get("absolute_peak_to_valley")
        text = (f"the background was removed (its level is at the noise); what is left varies by {_pct(left)} of the original "
                "background level" if left is not None else f"the corrected background cannot be measured ({a['reason']})")
        good = left is not None and left <= max(NEEDED_PEAK_TO_VALLEY, HALVED * (b["peak_to_valley"] or 0))
    else:
        good = a["peak_to_valley"] <= NEEDED_PEAK_TO_VALLEY or (b["peak_to_valley"] is not None and
                                                                 a["peak_to_valley"] <= HALVED * b["peak_to_valley"])
        text = f"background peak-to-valley {_pct(b['peak_to_valley'])} -> {_pct(a['peak_to_valley'])}"
    if problems:
        return False, text + "; " + "; ".join(p["text"] for p in problems)
    return good, text + ("" if good else " (not even halved, and above the threshold)")
