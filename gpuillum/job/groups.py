"""The groups a run estimates and corrects, and the files it writes.

A group is the set of images one model is estimated from and applied to: a plate x channel (also
a folder's or a stack's channel) for group-scope methods, one position's frames over time for
series-scope methods; image-scope methods use the plate x channel groups for their checks and
statistics. Each group's images share a shape and dtype (:class:`CheckedReader`). The corrected
files are written whole, in group order: a stack whose planes belong to several groups (its
channels) is written once, with its first group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..methods.base import GroupInfo
from ..output_dtype import OutputStats
from .reading import CheckedReader

MIN_IMAGES = 20  # fewer images in a group estimate: cells, not the illumination, shape the model


@dataclass
class Group:
    """One group's images and, once estimated or loaded, its model and where it is saved."""

    key: tuple
    records: list
    reader: CheckedReader
    label: str
    model: object = None  # IlluminationModel
    model_path: Path | None = None
    model_sha: str = ""  # sha256 of model_path when this run wrote or verified it
    parts: dict = field(default_factory=dict)  # a flat + dark model's parts as CellProfiler functions: {"Flat": path, ...}
    stats: OutputStats = field(default_factory=OutputStats)

    @property
    def plate(self) -> str:
        return self.key[0]

    @property
    def channel(self) -> str:
        return self.key[1]

    @property
    def name(self) -> str:
        """The key's parts joined with "/" ("P1/DNA", "movie/1/site3"): progress bars, timings."""
        return key_name(self.key)

    @property
    def info(self) -> GroupInfo:
        return GroupInfo(self.label, self.reader.shape, self.reader.dtype, len(self.records), self.key)

    def model_stem(self) -> str:
        """``<plate>_Illum<channel>`` (CellProfiler's name), with the series for series groups."""
        from ..methods.cellprofiler.functions_io import function_filename

        stem = function_filename(self.plate, self.channel).removesuffix(".npy")
        if len(self.key) > 2:
            _plate, _channel, well, site, z = self.key
            stem += (f"_{well}" if well else "") + f"_s{site}" + ("" if z is None else f"_z{z}")
        return stem


@dataclass(frozen=True)
class OutputFile:
    """One file to write: its path relative to INPUT and its images (one, or a stack's planes)."""

    relpath: str
    path: Path
    records: tuple

    @property
    def stacked(self) -> bool:
        return self.records[0].page is not None


def key_name(key: tuple) -> str:
    """A group key's parts joined with "/", empty ones left out."""
    return "/".join(str(part) for part in key if part not in (None, ""))


def group_key(record, scope: str) -> tuple:
    """The key of the group ``record`` belongs to for a method of ``scope``."""
    if scope == "series":
        return (record.plate, record.channel, record.well, record.site, record.z)
    return (record.plate, record.channel)


def group_label(key: tuple) -> str:
    label = f"plate {key[0]}, channel {key[1]}"
    if len(key) > 2:
        _plate, _channel, well, site, z = key
        label += (f", well {well}" if well else "") + f", site {site}" + ("" if z is None else f", z {z}")
    return label


def make_groups(plan, scope: str, unit_floats: bool) -> list[Group]:
    """The groups of a plan's records for a method of ``scope``, in the plan's order."""
    members: dict[tuple, list] = {}
    for (plate, channel), records in plan.groups().items():
        for record in records:
            members.setdefault(group_key(record, scope), []).append(record)
    groups = []
    for key, records in members.items():
        shape, dtype = plan.shapes[(key[0], key[1])]
        groups.append(Group(key, records, CheckedReader(shape, dtype, unit_floats=unit_floats), group_label(key)))
    return groups


def files_in_order(groups: list[Group], skipped: set) -> list[tuple[Group, list[OutputFile]]]:
    """For each group, the files it writes first (in record order), each with all its images that
    are not ``skipped`` (names): a stack's planes of every group."""
    by_file: dict[str, list] = {}
    for group in groups:
        for record in group.records:
            if record.name not in skipped:
                by_file.setdefault(record.relpath, []).append(record)
    seen, order = set(), []
    for group in groups:
        files = []
        for record in group.records:
            if record.relpath in by_file and record.relpath not in seen:
                seen.add(record.relpath)
                images = sorted(by_file[record.relpath], key=lambda r: -1 if r.page is None else r.page)
                files.append(OutputFile(record.relpath, record.path, tuple(images)))
        order.append((group, files))
    return order
