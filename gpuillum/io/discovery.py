"""Plate discovery: find the images under INPUT, name their plate/well/site/channel, list problems.

:func:`discover` never raises for problems in the data: it returns a :class:`Plan` whose
``records`` are the usable images and whose ``problems`` say, one line per file, what was left
out and why (names no layout or pattern explains, duplicates, unreadable headers, images whose
shape or dtype differ from the rest of their plate and channel, missing channels), so the CLI can
show everything wrong with a plate at once, before any work starts. Only bad arguments raise
ValueError.

The naming rules (layouts, user patterns) are in :mod:`gpuillum.io.layouts`.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import re
from pathlib import Path

from . import layouts as _layouts
from .layouts import LAYOUTS, Layout  # noqa: F401  (LAYOUTS is part of this module's API)
from .safe_open import file_kind

_TIFF_SUFFIXES = (".tif", ".tiff")
_HEADER_THREADS = 8
_SUMMARY_PROBLEMS = 50
_EXAMPLES = 5  # files named per grouped problem line in Plan.summary


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
    the corrected images' LoadData CSV.
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
    problems: list[str] = dataclasses.field(default_factory=list)
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
    """ "4 wells x 2 sites" when every well has as many sites, else "7 sites in 4 wells"."""
    sites_per_well: dict[str, set] = collections.defaultdict(set)
    for record in records:
        sites_per_well[record.well].add(record.site)
    counts = {len(sites) for sites in sites_per_well.values()}
    if len(counts) == 1:
        return f"{_count(len(sites_per_well), 'well')} x {_count(counts.pop(), 'site')}"
    return f"{_count(sum(len(s) for s in sites_per_well.values()), 'site')} in {_count(len(sites_per_well), 'well')}"


_LEFT_OUT = "; left out"
_REASON_KINDS = (  # reasons that name a detail of each file, and the shared wording used when grouping them
    (re.compile(r"duplicate of .*"), "duplicates of other files (same plate, well, site, channel)"),
    (re.compile(r"listed twice, as .*"), "listed twice (under two sites or channels); one file is one image"),
    (re.compile(r"unreadable \(.*\)"), "unreadable"),
    (re.compile(r"\S+ \S+ differs from the \d+ other images of (plate .*) \((.*)\)"), r"shape or dtype differs from the other images of \1 (\2)"),
)


def _group_problems(problems: list[str]) -> list[str]:
    """One line per distinct reason, in order of first appearance: a reason shared by several
    files becomes "N files: reason (first 5: a, b, ...); left out"; a reason seen once stays as is."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for problem in problems:
        head, sep, reason = problem.partition(": ")
        if not sep:
            groups.setdefault(problem, []).append((problem, ""))
            continue
        left_out = reason.endswith(_LEFT_OUT)
        reason = reason.removesuffix(_LEFT_OUT)
        for pattern, wording in _REASON_KINDS:
            if pattern.fullmatch(reason):
                reason = pattern.sub(wording, reason)
                break
        groups.setdefault(reason + _LEFT_OUT * left_out, []).append((problem, head))
    lines = []
    for reason, members in groups.items():
        if len(members) == 1:
            lines.append(members[0][0])
            continue
        heads = [head for _, head in members]
        if all(head.lower().endswith(_TIFF_SUFFIXES) for head in heads):
            noun = "files"
        else:
            noun = "sites" if all(", site " in head for head in heads) else "plates"
        left_out = reason.endswith(_LEFT_OUT)
        first = ("; " if any(", " in head for head in heads) else ", ").join(heads[:_EXAMPLES])
        lines.append(
            f"{len(members)} {noun}: {reason.removesuffix(_LEFT_OUT)} "
            f"(first {min(_EXAMPLES, len(members))}: {first}){_LEFT_OUT if left_out else ''}"
        )
    return lines


def _tiff_relpaths(input_dir: Path, exclude: list[Path]) -> list[str]:
    """Relative posix paths of the TIFF files under ``input_dir``; hidden files and folders skipped."""
    found = []
    for folder, subfolders, files in os.walk(input_dir):
        here = Path(folder)
        subfolders[:] = sorted(
            name for name in subfolders if not name.startswith(".") and (here / name).absolute() not in exclude
        )
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(_TIFF_SUFFIXES):
                found.append((here / name).relative_to(input_dir).as_posix())
    return found


def _records_from_names(input_dir: Path, relpaths: list[str], regex: re.Pattern, also_basename: bool, default_channel=None):
    """Match each relative path; return (records, unmatched relpaths)."""
    input_plate = _layouts.plate_from_folder(input_dir)
    records, unmatched = [], []
    for relpath in relpaths:
        match = regex.fullmatch(relpath)
        if match is None and also_basename:
            match = regex.fullmatch(relpath.rsplit("/", 1)[-1])
        fields = _layouts.fields_from_match(match, relpath, input_plate, default_channel) if match is not None else None
        if fields is None:
            unmatched.append(relpath)
        else:
            records.append(ImageRecord(path=input_dir / relpath, relpath=relpath, **fields))
    return records, unmatched


def _count_matches(layout: Layout, relpaths: list[str]) -> int:
    return sum(1 for relpath in relpaths if not layout.is_skipped(relpath) and layout.regex.fullmatch(relpath))


def _where(record: ImageRecord) -> str:
    """ "plate P, well A01, site 1, channel DNA[, z 2][, t 3]": what a record's name says it is."""
    return (f"plate {record.plate}, well {record.well}, site {record.site}, channel {record.channel}"
            + (f", z {record.z}" if record.z is not None else "") + (f", t {record.t}" if record.t is not None else ""))


def _drop_duplicates(records: list[ImageRecord], problems: list[str]) -> list[ImageRecord]:
    first: dict[tuple, ImageRecord] = {}
    for record in sorted(records, key=lambda r: (natural_key(r.relpath), r.relpath)):  # keeps the first in path order
        kept = first.setdefault(record.key, record)
        if kept is not record:
            problems.append(f"{record.relpath}: duplicate of {kept.relpath} ({_where(record)}); left out")
    return list(first.values())


def _drop_repeated_files(records: list[ImageRecord], problems: list[str]) -> list[ImageRecord]:
    """One file is one image: a file a LoadData CSV lists under two sites or channels would count
    twice in its function and share one corrected copy; all but its first record (in plate,
    channel, well, site order) are problems."""
    first: dict[str, ImageRecord] = {}
    for record in sorted(records, key=ImageRecord.sort_key):
        kept = first.setdefault(record.relpath, record)
        if kept is not record:
            problems.append(f"{record.relpath}: listed twice, as {_where(kept)} and as {_where(record)}; "
                            "one file is one image; left out")
    return list(first.values())


def _check_headers(records: list[ImageRecord], problems: list[str]) -> tuple[list[ImageRecord], dict]:
    """Read every header (threads: file opening is I/O-bound); drop unreadable and odd-shaped images."""
    from .tiff import ImageReadError, read_tiff_info

    def header(record):
        try:
            info = read_tiff_info(record.path)
        except ImageReadError as error:
            return error
        return (info.shape, info.dtype)

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(_HEADER_THREADS, max(1, len(records)))) as pool:
        headers = list(pool.map(header, records))
    readable = []
    by_group: dict[tuple, list] = collections.defaultdict(list)
    for record, result in zip(records, headers):
        if isinstance(result, ImageReadError):
            problems.append(f"{record.relpath}: unreadable ({result.reason}); left out")
        else:
            readable.append(record)
            by_group[(record.plate, record.channel)].append((record, result))
    kept, shapes = [], {}
    for group, members in by_group.items():
        counts = collections.Counter(result for _, result in members)
        majority = max(counts, key=counts.get)  # on a tie, the header seen first (Counter keeps order)
        shapes[group] = majority
        for record, result in members:
            if result == majority:
                kept.append(record)
            else:
                problems.append(
                    f"{record.relpath}: {_shape_text(result)} differs from the {counts[majority]} other images of "
                    f"plate {group[0]}, channel {group[1]} ({_shape_text(majority)}); left out"
                )
    return kept, shapes


def _shape_text(header) -> str:
    shape, dtype = header
    return f"{'x'.join(str(n) for n in shape)} {dtype}"


def _check_completeness(records: list[ImageRecord], problems: list[str]) -> None:
    """Report channels missing from a plate (that other plates have) and sites missing a channel."""
    channels_by_plate: dict[str, set] = collections.defaultdict(set)
    channels_by_site: dict[tuple, set] = collections.defaultdict(set)
    for record in records:
        channels_by_plate[record.plate].add(record.channel)
        channels_by_site[(record.plate, record.well, record.site, record.z, record.t)].add(record.channel)
    all_channels = set().union(*channels_by_plate.values()) if channels_by_plate else set()
    for plate in sorted(channels_by_plate, key=natural_key):
        for channel in sorted(all_channels - channels_by_plate[plate], key=natural_key):
            problems.append(f"plate {plate}: no images of channel {channel} (other plates have it)")
    for site_key in sorted(channels_by_site, key=lambda k: tuple(natural_key(v) for v in k)):
        plate, well, site, z, t = site_key
        missing = channels_by_plate[plate] - channels_by_site[site_key]
        if missing:
            where = f"plate {plate}, well {well}, site {site}"
            where += (f", z {z}" if z is not None else "") + (f", t {t}" if t is not None else "")
            problems.append(f"{where}: missing channel{'s' * (len(missing) > 1)} {', '.join(sorted(missing, key=natural_key))}")


def _records_from_loaddata(input_dir: Path, csv_path: Path, problems: list[str]):
    """Records of a LoadData CSV whose files exist under ``input_dir``; the rest become problems."""
    from .loaddata import read_loaddata  # loaddata imports this module for ImageRecord

    records = []
    for record in read_loaddata(csv_path, base_dir=input_dir):
        if record.relpath.startswith("../"):
            problems.append(
                f"{record.relpath}: listed in {csv_path.name} but outside INPUT {input_dir}; "
                "give their common folder as INPUT; left out"
            )
        elif not record.path.is_file():
            what = f"{file_kind(record.path.stat().st_mode)}, not a regular file" if record.path.exists() else "missing"
            problems.append(f"{record.relpath}: listed in {csv_path.name} but {what}; left out")
        else:
            records.append(record)
    if not records:
        problems.append(f"{csv_path}: lists no images" if not problems else f"no usable images: every file listed in {csv_path.name} has a problem")
    return records, f"LoadData CSV {csv_path}"


def _choose_layout(name: str | None, relpaths: list[str]) -> tuple[Layout | None, str]:
    """The named layout, or the built-in one naming the most files (first wins a tie, None if no
    layout names any), and the line for ``Plan.source``."""
    if name is not None:
        layout = _layouts.get_layout(name)
        return layout, f"layout {layout.name}"
    counts = [(_count_matches(candidate, relpaths), candidate) for candidate in _layouts.distinct_layouts()]
    best_count, layout = max(counts, key=lambda pair: pair[0])
    if not best_count:
        return None, "no built-in layout names these files"
    return layout, f"layout {layout.name}, auto-detected: names {best_count} of {len(relpaths)} TIFF files"


def discover(input_dir, *, pattern: str | None = None, layout: str | None = None, loaddata=None, check_headers: bool = True,
             exclude=(), ignore_unmatched: bool = False) -> Plan:
    """Find the images under ``input_dir`` and group them by plate and channel.

    Naming, at most one of:

    * ``pattern``: a regular expression with named groups (see :mod:`gpuillum.io.layouts`) that
      must match a TIFF file's whole relative path (``"Plate1/B03_s2_DNA.tif"``) or, failing
      that, its whole file name;
    * ``layout``: a built-in layout name (``LAYOUTS``: gpuillum, imagexpress, operetta/opera/phenix);
    * ``loaddata``: a CellProfiler LoadData CSV; relative PathName values are taken relative to
      ``input_dir``, and every listed file must lie under it;
    * none: every built-in layout is tried and the one that names the most TIFF files is used
      (``plan.layout``, ``plan.source`` say which).

    Files whose name gives no plate belong to the plate named after their first folder, or, when
    they sit directly in INPUT, after INPUT's folder name (``layouts.plate_from_folder``).

    TIFF files are ``*.tif``/``*.tiff`` in any case; hidden files and folders (names starting with
    ".") are ignored, as are folders in ``exclude`` (e.g. an output folder inside INPUT). With
    ``check_headers`` every header is read (threads) to find unreadable files and shape/dtype
    mismatches within a (plate, channel). Problem files are left out of ``records`` and listed in
    ``problems``; with ``ignore_unmatched`` the TIFF files that the pattern or layout does not name
    are no problem but listed in ``ignored`` (a pattern then selects a subset of INPUT). Raises
    ValueError only for bad arguments.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise ValueError(f"input_dir: {input_dir} is not a directory")
    given = [name for name, value in (("pattern", pattern), ("layout", layout), ("loaddata", loaddata)) if value is not None]
    if len(given) > 1:
        raise ValueError(f"discover: give at most one of pattern, layout, loaddata (got {' and '.join(given)})")
    if ignore_unmatched and loaddata is not None:
        raise ValueError("ignore_unmatched (--ignore-unmatched): a LoadData CSV names its files itself; use it with a pattern or a layout")
    input_dir = input_dir.absolute()
    problems: list[str] = []
    skipped: list[str] = []
    ignored: list[str] = []
    layout_name = None
    if loaddata is not None:
        records, source = _records_from_loaddata(input_dir, Path(loaddata), problems)
    else:
        relpaths = _tiff_relpaths(input_dir, [Path(folder).absolute() for folder in exclude])
        if pattern is not None:
            regex, what = _layouts.compile_pattern(pattern), "pattern"
            source = f"pattern {pattern}"
            records, unmatched = _records_from_names(input_dir, relpaths, regex, also_basename=True)
        else:
            chosen, source = _choose_layout(layout, relpaths)
            records, unmatched = [], relpaths
            if chosen is not None:
                layout_name, what = chosen.name, f"layout {chosen.name!r}"
                skipped = [relpath for relpath in relpaths if chosen.is_skipped(relpath)]
                relpaths = [relpath for relpath in relpaths if not chosen.is_skipped(relpath)]
                records, unmatched = _records_from_names(input_dir, relpaths, chosen.regex, also_basename=False,
                                                         default_channel=chosen.default_channel)
        if not relpaths:
            thumbnails = f" ({len(skipped)} thumbnails skipped)" if skipped else ""
            problems.append(f"no TIFF files (*.tif, *.tiff) under {input_dir}{thumbnails}")
        elif pattern is None and layout_name is None:
            names = ", ".join(candidate.name for candidate in _layouts.distinct_layouts())
            problems.append(
                f"no built-in layout ({names}) names any of the {len(relpaths)} TIFF files "
                f"(e.g. {', '.join(relpaths[:3])}); give a pattern or a LoadData CSV"
            )
        else:
            if ignore_unmatched:
                ignored = unmatched
            else:
                problems.extend(f"{relpath}: not matched by the {what}; left out" for relpath in unmatched)
            if not records:
                problems.append(f"the {what} names none of the {len(relpaths)} TIFF files under {input_dir}")

    found_any = bool(records)
    records = _drop_repeated_files(_drop_duplicates(records, problems), problems)
    named = {(record.plate, record.channel) for record in records}
    shapes = {}
    if check_headers and records:
        records, shapes = _check_headers(records, problems)
    _check_completeness(records, problems)
    if found_any and not records:
        problems.append(f"no usable images under {input_dir}: every image found has a problem")
    return Plan(
        records=sorted(records, key=ImageRecord.sort_key),
        problems=problems,
        input_dir=input_dir,
        source=source,
        layout=layout_name,
        shapes=shapes,
        skipped=skipped,
        ignored=ignored,
        named=named,
    )
