"""What a run reads, as records: one ImageRecord per image, one Problem per thing wrong, a Plan of both.

An image is a file, or one plane of a multi-page stack (``page``). Its plate, well, site,
channel, z and t come from a layout, a pattern, a LoadData CSV, or a folder's or stack's own
structure (gpuillum.inputs.discovery). A Problem is a record (the file or site it is about, its
kind, the reason) whose text is the one-line message users read; code uses its fields, never
parses the text.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from pathlib import Path

TIFF_SUFFIXES = (".tif", ".tiff")
_SUMMARY_PROBLEMS = 50
_EXAMPLES = 5  # files named per grouped problem line in Plan.summary
LEFT_OUT = "; left out"


class Problem(str):
    """One thing wrong with the input: ``subject`` (a file's relative path, a site, a plate, or
    None), ``kind`` (e.g. "unmatched", "duplicate", "unreadable", "mismatch", "missing-channel"),
    ``reason``, whether the file is ``left_out``; the string is the message
    ``"<subject>: <reason>[; left out]"``. ``path`` is the subject when it is a file. ``shared``
    is the wording several files with this kind share in a grouped summary line.
    """

    def __new__(cls, subject, kind: str, reason: str, *, left_out: bool = True, is_file: bool = True, shared: str | None = None):
        text = (f"{subject}: {reason}" if subject else reason) + (LEFT_OUT if left_out else "")
        problem = super().__new__(cls, text)
        problem.subject, problem.kind, problem.reason = subject, kind, reason
        problem.left_out, problem.is_file, problem.shared = left_out, is_file and subject is not None, shared
        return problem

    def __reduce__(self):
        return (_problem, (self.subject, self.kind, self.reason, self.left_out, self.is_file, self.shared))

    @property
    def path(self) -> str | None:
        """The file the problem is about (relative to INPUT), or None."""
        return self.subject if self.is_file else None

    @property
    def message(self) -> str:
        """The message without its "; left out" (for an error that stops the run)."""
        return str(self).removesuffix(LEFT_OUT)


def _problem(subject, kind, reason, left_out, is_file, shared) -> Problem:
    return Problem(subject, kind, reason, left_out=left_out, is_file=is_file, shared=shared)


def natural_key(value):
    """Sort key that orders embedded numbers by value: A2 < A10, site "2" < "10"; None first."""
    if value is None:
        return ()
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(value)) if part)


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image file and what its name (or LoadData row) says about it.

    ``path`` is the absolute path; ``relpath`` the path relative to INPUT with "/" separators
    (the engine mirrors it under OUT); ``site``, ``z``, ``t`` are strings ("1"), z/t None if absent;
    ``metadata``: a LoadData row's other ``Metadata_*`` columns as (column, value) pairs, passed on to
    the corrected images' LoadData CSV; ``page``: the plane of a multi-page stack (None: the file
    is one image).
    """

    path: Path
    relpath: str
    plate: str
    well: str
    site: str
    channel: str
    z: str | None = None
    t: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    page: int | None = None

    @property
    def name(self) -> str:
        """What identifies the image in messages: its relative path, with ``#<plane>`` in a stack."""
        return self.relpath if self.page is None else f"{self.relpath}#{self.page}"

    @property
    def key(self) -> tuple:
        """What makes an image unique in a plan: (plate, well, site, channel, z, t)."""
        return (self.plate, self.well, self.site, self.channel, self.z, self.t)

    def sort_key(self) -> tuple:
        """Natural order by plate, channel, well, site, z, t."""
        return tuple(natural_key(v) for v in (self.plate, self.channel, self.well, self.site, self.z, self.t))


@dataclasses.dataclass
class Plan:
    """What :func:`discover` found: usable ``records``, ``problems`` (one line each), and context.

    ``source`` says how the files were named (layout, pattern or LoadData CSV), ``layout`` the name
    of the built-in layout used (None for a pattern or CSV), ``shapes`` maps (plate, channel) to the
    (shape, dtype) of its images when headers were checked, ``skipped`` lists relative paths left
    out on purpose (thumbnails), without being problems, and ``ignored`` the files the pattern or
    layout does not name when they were to be ignored (``ignore_unmatched``).
    """

    records: list[ImageRecord]
    problems: list[Problem] = dataclasses.field(default_factory=list)
    input_dir: Path | None = None
    source: str = ""
    layout: str | None = None
    shapes: dict = dataclasses.field(default_factory=dict)
    skipped: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)
    named: set = dataclasses.field(default_factory=set)  # every (plate, channel) the names gave, problem files included

    def groups(self) -> dict[tuple[str, str], list[ImageRecord]]:
        """{(plate, channel): records in (well, site, z, t) order}, plates and channels in natural order."""
        groups: dict[tuple[str, str], list[ImageRecord]] = {}
        for record in sorted(self.records, key=ImageRecord.sort_key):
            groups.setdefault((record.plate, record.channel), []).append(record)
        return groups

    @property
    def plates(self) -> list[str]:
        return sorted({record.plate for record in self.records}, key=natural_key)

    @property
    def channels(self) -> list[str]:
        return sorted({record.channel for record in self.records}, key=natural_key)

    @property
    def ok(self) -> bool:
        """True when images were found and nothing is wrong."""
        return bool(self.records) and not self.problems

    def summary(self, max_problems: int | None = _SUMMARY_PROBLEMS) -> str:
        """Human-readable report: source, plates, channels, image counts, shape/dtype, problems.

        Problems with the same reason are grouped into one line (a count and the first
        ``_EXAMPLES`` files), so a wrong pattern on a big plate gives one line, not thousands;
        at most ``max_problems`` such lines are shown (None: all), then a count of the rest.
        """
        plates, channels = self.plates, self.channels
        lines = [f"INPUT {self.input_dir}" + (f" ({self.source})" if self.source else "")]
        lines.append(
            f"{_count(len(self.records), 'image')}, {_count(len(plates), 'plate')}, "
            f"{_count(len(channels), 'channel')}: {', '.join(channels) or '-'}"
        )
        for (plate, channel), records in self.groups().items():
            text = f"  plate {plate}, channel {channel}: {_count(len(records), 'image')}, {_layout_text(records)}"
            if (plate, channel) in self.shapes:
                shape, dtype = self.shapes[(plate, channel)]
                text += f", {'x'.join(str(n) for n in shape)} {dtype}"
            lines.append(text)
        if self.skipped:
            lines.append(f"{len(self.skipped)} files skipped on purpose (e.g. thumbnails), such as {self.skipped[0]}")
        if self.ignored:
            lines.append(f"{_count(len(self.ignored), 'file')} not named by the {'pattern' if self.layout is None else 'layout'}, "
                         f"ignored as asked (--ignore-unmatched), such as {self.ignored[0]}")
        if self.problems:
            grouped = _group_problems(self.problems)
            lines.append(f"{_count(len(self.problems), 'problem')}:")
            shown = grouped if max_problems is None else grouped[:max_problems]
            lines.extend(f"  - {line}" for line in shown)
            if len(shown) < len(grouped):
                lines.append(f"  ... and {len(grouped) - len(shown)} more problem lines")
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    """ "1 well", "2 wells"."""
    return f"{n} {noun}{'s' * (n != 1)}"


def _layout_text(records: list[ImageRecord]) -> str:
    """ "4 wells x 2 sites" when every well has as many sites, else "7 sites in 4 wells"; for
    images without wells (a folder, a stack) "6 files" or "2 stacks of 8 planes"."""
    if all(not record.well for record in records):
        files = collections.Counter(record.relpath for record in records)
        planes = {count for relpath, count in files.items()}
        if all(record.page is None for record in records):
            return _count(len(files), "file")
        return f"{_count(len(files), 'stack')} of {planes.pop()} planes" if len(planes) == 1 else \
            f"{sum(files.values())} planes in {_count(len(files), 'stack')}"
    sites_per_well: dict[str, set] = collections.defaultdict(set)
    for record in records:
        sites_per_well[record.well].add(record.site)
    counts = {len(sites) for sites in sites_per_well.values()}
    if len(counts) == 1:
        return f"{_count(len(sites_per_well), 'well')} x {_count(counts.pop(), 'site')}"
    return f"{_count(sum(len(s) for s in sites_per_well.values()), 'site')} in {_count(len(sites_per_well), 'well')}"


def _group_problems(problems: list[Problem]) -> list[str]:
    """One line per distinct reason (a kind's shared wording, else the reason itself), in order of
    first appearance: a reason shared by several subjects becomes "N files: reason (first 5: a,
    b, ...); left out"; a reason seen once stays as it is."""
    groups: dict[tuple, list[Problem]] = {}
    for problem in problems:
        groups.setdefault((problem.shared or problem.reason, problem.left_out), []).append(problem)
    lines = []
    for (reason, left_out), members in groups.items():
        if len(members) == 1:
            lines.append(str(members[0]))
            continue
        if all(member.is_file for member in members):
            noun = "files"
        else:
            noun = "sites" if all(member.kind == "missing-channel" for member in members) else "plates"
        subjects = [str(member.subject) for member in members]
        first = ("; " if any(", " in subject for subject in subjects) else ", ").join(subjects[:_EXAMPLES])
        lines.append(f"{len(members)} {noun}: {reason} (first {min(_EXAMPLES, len(members))}: {first}){LEFT_OUT if left_out else ''}")
    return lines
