"""The ``auto`` method: estimate every candidate's model in one pass, keep the one with the best QC score.

``gpuillum run INPUT -o OUT --method auto [--candidates jump,polynomial,...]``: the group's images
are read once; each image goes to every candidate's reduction and, shrunk, into a bounded sample
(gpuillum.qc.candidates). Finishing the group finishes every candidate, corrects the sample with
each model, scores it, and returns the chosen model, whose ``info["auto"]`` (in the manifest and
the saved model) records every candidate's score and why the choice fell where it did.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import register
from .base import GroupInfo, Method, Reduction, setting
from ..errors import InvalidValue, UserError, one_line


@dataclass(frozen=True)
class AutoSettings:
    """Which candidates to try (comma-separated names, or "default")."""

    candidates: str = setting("default", metavar="NAMES", help="comma-separated candidates for --method auto: method "
                              "names, CellProfiler presets (jump, cdrp, ...), polynomial, or NAME:option=value (default: "
                              "every preset, polynomial and every other registered group method)")

    def __post_init__(self):
        from ..qc.candidates import parse_names

        if not isinstance(self.candidates, str):
            raise InvalidValue(f"candidates: expected comma-separated names, got {self.candidates!r}")
        parse_names(self.candidates, group_only=True)

    def resolved(self):
        from ..qc.candidates import parse_names

        return parse_names(self.candidates, group_only=True)


class AutoReduction(Reduction):
    """Every candidate's reduction, fed the same images, plus a bounded sample of them (shrunk)."""

    def __init__(self, parts: dict):
        self.parts = parts  # label -> the candidate's reduction
        self.sample: list = []
        self.count = 0

    def add(self, image) -> "AutoReduction":
        from ..qc.candidates import keep_sample

        for part in self.parts.values():
            part.add(image)
        keep_sample(self.sample, image)
        self.count += 1
        return self

    def merge(self, other: "AutoReduction") -> "AutoReduction":
        from ..qc.candidates import thin

        for label, part in self.parts.items():
            merged = part.merge(other.parts[label])
            self.parts[label] = part if merged is None else merged
        self.sample = thin(self.sample + other.sample)
        self.count += other.count
        return self

    def to(self, device) -> "AutoReduction":
        for part in self.parts.values():
            part.to(device)
        return self


def evaluate(settings: AutoSettings, reduction: AutoReduction, group: GroupInfo, device) -> list[dict]:
    """Finish every candidate and score it on the sample: [{label, model, corrected, score, gain, metrics}]
    (a candidate whose finish fails is listed with ``error`` and no model)."""
    from ..qc.candidates import corrected_sample, score

    results = []
    for candidate in settings.resolved():
        part = reduction.parts.get(candidate.label)
        if part is None:
            continue
        try:
            model = candidate.method.finish(candidate.settings, part, group, device)
            corrected = corrected_sample(model, reduction.sample)
        except UserError as error:
            results.append({"label": candidate.label, "error": one_line(error)})
            continue
        results.append({"label": candidate.label, "model": model, "corrected": corrected, **score(corrected)})
    return results


class AutoMethod(Method):
    name = "auto"
    summary = "estimate every candidate method's model per group and keep the one with the best QC score (records why)"
    Settings = AutoSettings
    unit_floats = True

    def scope(self, settings) -> str:
        return "group"

    def input_dtypes(self, settings) -> tuple[str, ...]:
        dtypes = None
        for candidate in settings.resolved():
            own = candidate.method.input_dtypes(candidate.settings)
            dtypes = own if dtypes is None else tuple(d for d in dtypes if d in own)
        return dtypes or ()

    def check_settings(self, settings, *, estimating: bool, correcting: bool) -> None:
        for candidate in settings.resolved():
            candidate.method.check_settings(candidate.settings, estimating=estimating, correcting=correcting)

    def check(self, settings, group: GroupInfo) -> None:
        usable = [c for c in settings.resolved() if _accepts(c, group)]
        if not usable:
            raise InvalidValue(f"{group.label}: no candidate of --method auto can process these images")

    def describe(self, settings) -> str:
        return "auto: the best QC score of " + ", ".join(c.label for c in settings.resolved())

    def manifest_settings(self, settings) -> dict:
        return {"name": self.name, "settings": {"candidates": [c.label for c in settings.resolved()]}}

    def reduction(self, settings, group: GroupInfo, start: int = 0) -> AutoReduction:
        return AutoReduction({c.label: c.method.reduction(c.settings, group, start) for c in settings.resolved()
                              if _accepts(c, group)})

    def finish(self, settings, reduction: AutoReduction, group: GroupInfo, device):
        from ..qc.candidates import choose

        results = evaluate(settings, reduction, group, device)
        scored = {r["label"]: r for r in results if "model" in r}
        if not scored:
            raise InvalidValue(f"{group.label}: every candidate failed ({'; '.join(r['label'] + ': ' + r['error'] for r in results)})")
        chosen, why = choose(scored)
        record = {"chosen": chosen, "why": why, "images_scored": len(reduction.sample),
                  "scores": {r["label"]: ({"background_peak_to_valley": r["score"], "gain_cv": r["gain"]} if "model" in r
                                          else {"error": r["error"]}) for r in results}}
        model = scored[chosen]["model"]
        info = {**model.info, "auto": record}
        info.setdefault("images", reduction.count)
        return dataclasses.replace(model, info=info, settings={"chosen": chosen, "method": model.method,
                                                               "settings": model.settings})


def _accepts(candidate, group: GroupInfo) -> bool:
    try:
        candidate.method.check(candidate.settings, group)
    except (UserError, ValueError):
        return False
    return group.dtype in candidate.method.input_dtypes(candidate.settings)


register(AutoMethod())
