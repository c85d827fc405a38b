"""The methods ``gpuillum compare`` and ``--method auto`` try, by name, and how they are scored.

A candidate name is one of:

* a registered method or alias (``gpuillum methods``) with its default settings, optionally with
  options ``NAME:option=value:option=value`` (e.g. ``median:radius=25``);
* a CellProfiler preset (``jump``, ``cellpainting-2014``, ``broad-0.1x``, ``broad-0.1x-size10``,
  ``cdrp``): ``cellprofiler --preset NAME``;
* ``polynomial``: CellProfiler's Fit Polynomial smoothing on the jump preset (the blog's choice).

**The score** of a model (lower is better) is the peak-to-valley of the smooth surface fitted to
the background map of a sample of the group's images corrected by it (gpuillum.qc.group.measure):
how much shading a person would still see after brightening. Backgrounds cannot tell a wrong
flat field with the camera offset folded in from a right flat field with the offset subtracted
(both leave an even background), so candidates within TIE of the best are ranked by the cells'
gain map instead (the shape of the cells' brightness over the field, which only the right flat
field makes even). benchmarks/auto_validation.py validates the choice on synthetic plates of known
flat field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValue, UserError, one_line

CELLPROFILER_VARIANTS = {"polynomial": {"smoothing": "Fit Polynomial"}}
TIE_ABSOLUTE = 0.005  # scores closer than this (or TIE_RELATIVE of the best) are ties
TIE_RELATIVE = 0.1
SAMPLE_CAP = 32  # images kept for scoring (shrunk to at most MAX_SIDE pixels a side)


@dataclass(frozen=True)
class Candidate:
    """A named method with its settings."""

    label: str
    method: object
    settings: object

    @property
    def scope(self) -> str:
        return self.method.scope(self.settings)


def _parse_value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "yes": True, "no": False}.get(text.lower(), text)


def resolve(name: str) -> Candidate:
    """The candidate called ``name`` (see the module docstring); a one-line ValueError otherwise."""
    from ..methods import get_method
    from ..methods.cellprofiler.settings import PRESETS

    if not isinstance(name, str) or not name.strip():
        raise InvalidValue(f"methods: expected method names, got {name!r}")
    head, *options = name.strip().split(":")
    values = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise InvalidValue(f"method {name!r}: expected NAME:option=value, got {option!r}")
        values[key.strip().lstrip("-").replace("-", "_")] = _parse_value(value.strip())
    key = head.strip().lower()
    try:
        if key in PRESETS or key in CELLPROFILER_VARIANTS:
            method = get_method("cellprofiler")
            base = {"preset": key} if key in PRESETS else {"preset": "jump", **CELLPROFILER_VARIANTS[key]}
            settings = method.settings_from_options({**base, **values})
        else:
            method = get_method(key)
            if method.name == "auto":
                raise InvalidValue("auto: not a candidate of itself")
            settings = method.settings_from_options(values)
    except UserError as error:
        raise InvalidValue(f"method {name!r}: {one_line(error)}") from None
    return Candidate(name.strip(), method, settings)


def default_names() -> list[str]:
    """The candidates of ``--method auto`` when none are given: every CellProfiler preset,
    ``polynomial``, and every other registered method that estimates per group with its default settings."""
    from ..methods import all_methods
    from ..methods.cellprofiler.settings import PRESETS

    names = [*PRESETS, *CELLPROFILER_VARIANTS]
    for method in all_methods():
        if method.name in ("cellprofiler", "auto"):
            continue
        try:
            if method.scope(method.default_settings()) == "group":
                names.append(method.name)
        except (UserError, ValueError, TypeError):  # a required setting: not a default candidate
            continue
    return names


def parse_names(text: str | None, *, group_only: bool = False) -> list[Candidate]:
    """Candidates from a comma-separated list (None or "default": :func:`default_names`)."""
    names = default_names() if text is None or text.strip().lower() == "default" else \
        [part for part in text.split(",") if part.strip()]
    candidates = [resolve(name) for name in names]
    labels = [c.label for c in candidates]
    if len(set(labels)) != len(labels):
        raise InvalidValue(f"methods: {', '.join(sorted({x for x in labels if labels.count(x) > 1}))} given twice")
    if not candidates:
        raise InvalidValue("methods: expected at least one method")
    if group_only:
        refused = [c.label for c in candidates if c.scope != "group"]
        if refused:
            raise InvalidValue(f"methods: {', '.join(refused)} correct each image on its own (no model per group); "
                               "--method auto chooses among methods that estimate a model per group")
    return candidates


def keep_sample(sample: list, image) -> None:
    """Append a shrunk copy of ``image`` (its dtype kept, so a model's units still apply) on the host."""
    from ..backend import get_array_module, to_numpy
    from ..qc.maps import shrink

    xp = get_array_module(image)
    small = shrink(image)
    if image.dtype.kind in "ui":
        small = xp.rint(small).astype(image.dtype)
    sample.append(to_numpy(small))


def thin(sample: list) -> list:
    """Every other image while the sample holds more than SAMPLE_CAP (deterministic in merge order)."""
    while len(sample) > SAMPLE_CAP:
        sample = sample[::2]
    return sample


def corrected_sample(model, sample: list) -> list:
    """The sample corrected by ``model`` (its parts shrunk to the sample's size), float32."""
    from ..backend import to_numpy
    from ..qc.maps import shrink

    shape = sample[0].shape
    parts = {}
    for name in ("flatfield", "darkfield"):
        part = getattr(model, name)
        if part is not None:
            small = to_numpy(shrink(to_numpy(part).astype(np.float32)))
            parts[name] = small[: shape[0], : shape[1]]
    small_model = dataclasses.replace(model, baseline=None, offset=0.0, **parts)
    return [small_model.apply(image, output_dtype="float32") for image in sample]


def score(corrected: list, reference_level: float | None = None) -> dict:
    """{score, gain, metrics} of a corrected sample (see the module docstring). A background the
    method removed (subtracted to the noise) is scored by what is left relative to
    ``reference_level`` (the raw background level), when given."""
    from .group import measure
    from .shading import smooth_fit

    metrics = measure(corrected)
    maps = metrics.pop("_maps", None)
    background = metrics["background"]["peak_to_valley"]
    if background is None and reference_level:
        surface = smooth_fit(maps.background)
        background = float(surface.max() - surface.min()) / reference_level
    gain = metrics["gain"]["cv"]
    return {"score": float("inf") if background is None else background, "gain": float("inf") if gain is None else gain,
            "metrics": metrics}


def choose(scores: dict) -> tuple[str, str]:
    """(the best label, why) from {label: score dict}: the lowest score; among ties the lowest gain CV."""
    ranked = sorted(scores, key=lambda label: scores[label]["score"])
    best = scores[ranked[0]]["score"]
    margin = max(TIE_ABSOLUTE, TIE_RELATIVE * best)
    ties = [label for label in ranked if scores[label]["score"] <= best + margin]
    chosen = min(ties, key=lambda label: (scores[label]["gain"], ranked.index(label)))
    text = f"{chosen}: background peak-to-valley after correction {100 * scores[chosen]['score']:.2f} %"
    if len(ties) > 1:
        text += (f"; tied within {100 * margin:.2f} points with {', '.join(t for t in ties if t != chosen)}, the cells' gain is "
                 f"most even with it (CV {100 * scores[chosen]['gain']:.2f} %)")
    others = [label for label in ranked if label not in ties]
    if others:
        text += f"; next: {others[0]} at {100 * scores[others[0]]['score']:.2f} %"
    return chosen, text
