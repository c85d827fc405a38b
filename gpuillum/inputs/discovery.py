"""Plate discovery: find the images under INPUT, name their plate/well/site/channel, list problems.

:func:`discover` never raises for problems in the data: it returns a :class:`Plan` whose
``records`` are the usable images and whose ``problems`` say, one line per file, what was left
out and why (names no layout or pattern explains, duplicates, unreadable headers, images whose
shape or dtype differ from the rest of their plate and channel, missing channels), so the CLI can
show everything wrong with a plate at once, before any work starts. Only bad arguments raise
ValueError.

The naming rules (layouts, user patterns) are in :mod:`gpuillum.inputs.layouts`.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import os
import re
from pathlib import Path

from ..io.safe_open import file_kind
from . import layouts as _layouts
from .layouts import LAYOUTS, Layout  # noqa: F401  (LAYOUTS is part of this module's API)
from .records import TIFF_SUFFIXES, ImageRecord, Plan, Problem, natural_key
from ..errors import InvalidValue

_HEADER_THREADS = 8


def _tiff_relpaths(input_dir: Path, exclude: list[Path]) -> list[str]:
    """Relative posix paths of the TIFF files under ``input_dir``; hidden files and folders skipped."""
    found = []
    for folder, subfolders, files in os.walk(input_dir):
        here = Path(folder)
        subfolders[:] = sorted(
            name for name in subfolders if not name.startswith(".") and (here / name).absolute() not in exclude
        )
        for name in sorted(files):
            if not name.startswith(".") and name.lower().endswith(TIFF_SUFFIXES):
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


def _drop_duplicates(records: list[ImageRecord], problems: list[Problem]) -> list[ImageRecord]:
    first: dict[tuple, ImageRecord] = {}
    for record in sorted(records, key=lambda r: (natural_key(r.relpath), r.relpath)):  # keeps the first in path order
        kept = first.setdefault(record.key, record)
        if kept is not record:
            problems.append(Problem(record.relpath, "duplicate", f"duplicate of {kept.relpath} ({_where(record)})",
                                    shared="duplicates of other files (same plate, well, site, channel)"))
    return list(first.values())


def _drop_repeated_files(records: list[ImageRecord], problems: list[Problem]) -> list[ImageRecord]:
    """One file is one image: a file a LoadData CSV lists under two sites or channels would count
    twice in its function and share one corrected copy; all but its first record (in plate,
    channel, well, site order) are problems."""
    first: dict[str, ImageRecord] = {}
    for record in sorted(records, key=ImageRecord.sort_key):
        kept = first.setdefault(record.relpath, record)
        if kept is not record:
            problems.append(Problem(record.relpath, "repeated", f"listed twice, as {_where(kept)} and as {_where(record)}; "
                                    "one file is one image"))
    return list(first.values())


def _check_headers(records: list[ImageRecord], problems: list[Problem]) -> tuple[list[ImageRecord], dict]:
    """Read every header (threads: file opening is I/O-bound); drop unreadable and odd-shaped images."""
    from ..io.tiff import ImageReadError, read_tiff_info

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
            problems.append(Problem(record.relpath, "unreadable", f"unreadable ({result.reason})", shared="unreadable"))
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
                where = f"plate {group[0]}, channel {group[1]} ({_shape_text(majority)})"
                problems.append(Problem(record.relpath, "mismatch", f"{_shape_text(result)} differs from the "
                                        f"{counts[majority]} other images of {where}",
                                        shared=f"shape or dtype differs from the other images of {where}"))
    return kept, shapes


def _shape_text(header) -> str:
    shape, dtype = header
    return f"{'x'.join(str(n) for n in shape)} {dtype}"


def _check_completeness(records: list[ImageRecord], problems: list[Problem]) -> None:
    """Report channels missing from a plate (that other plates have) and sites missing a channel."""
    channels_by_plate: dict[str, set] = collections.defaultdict(set)
    channels_by_site: dict[tuple, set] = collections.defaultdict(set)
    for record in records:
        channels_by_plate[record.plate].add(record.channel)
        channels_by_site[(record.plate, record.well, record.site, record.z, record.t)].add(record.channel)
    all_channels = set().union(*channels_by_plate.values()) if channels_by_plate else set()
    for plate in sorted(channels_by_plate, key=natural_key):
        for channel in sorted(all_channels - channels_by_plate[plate], key=natural_key):
            problems.append(Problem(f"plate {plate}", "missing-plate-channel", f"no images of channel {channel} (other plates have it)",
                                    left_out=False, is_file=False))
    for site_key in sorted(channels_by_site, key=lambda k: tuple(natural_key(v) for v in k)):
        plate, well, site, z, t = site_key
        missing = channels_by_plate[plate] - channels_by_site[site_key]
        if missing:
            where = f"plate {plate}, well {well}, site {site}"
            where += (f", z {z}" if z is not None else "") + (f", t {t}" if t is not None else "")
            problems.append(Problem(where, "missing-channel", f"missing channel{'s' * (len(missing) > 1)} "
                                    f"{', '.join(sorted(missing, key=natural_key))}", left_out=False, is_file=False))


def _records_from_loaddata(input_dir: Path, csv_path: Path, problems: list[Problem]):
    """Records of a LoadData CSV whose files exist under ``input_dir``; the rest become problems."""
    from .loaddata import read_loaddata

    records = []
    for record in read_loaddata(csv_path, base_dir=input_dir):
        if record.relpath.startswith("../"):
            problems.append(Problem(record.relpath, "outside", f"listed in {csv_path.name} but outside INPUT {input_dir}; "
                                    "give their common folder as INPUT"))
        elif not record.path.is_file():
            what = f"{file_kind(record.path.stat().st_mode)}, not a regular file" if record.path.exists() else "missing"
            problems.append(Problem(record.relpath, "not-found", f"listed in {csv_path.name} but {what}"))
        else:
            records.append(record)
    if not records:
        problems.append(Problem(csv_path, "empty", "lists no images", left_out=False, is_file=False) if not problems else
                        Problem(None, "none-usable", f"no usable images: every file listed in {csv_path.name} has a problem",
                                left_out=False))
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
    """Find the images under ``input_dir`` (a folder, or one image or stack file) and group them by
    plate and channel.

    Naming, at most one of:

    * ``pattern``: a regular expression with named groups (see :mod:`gpuillum.inputs.layouts`) that
      must match a TIFF file's whole relative path (``"Plate1/B03_s2_DNA.tif"``) or, failing
      that, its whole file name;
    * ``layout``: a built-in layout name (``LAYOUTS``: gpuillum, imagexpress, operetta/opera/phenix);
    * ``loaddata``: a CellProfiler LoadData CSV; relative PathName values are taken relative to
      ``input_dir``, and every listed file must lie under it;
    * none: every built-in layout is tried and the one that names the most TIFF files is used
      (``plan.layout``, ``plan.source`` say which); when no layout names any file, the folder is
      read as images of one kind (gpuillum.inputs.folders: channel tokens in the names, stacks
      by their axes), as is an ``input_dir`` that is one file.

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
    given = [name for name, value in (("pattern", pattern), ("layout", layout), ("loaddata", loaddata)) if value is not None]
    if input_dir.is_file():
        if given:
            raise InvalidValue(f"{given[0]}: INPUT {input_dir} is one file; {given[0]} names the files of a folder")
        return _single_file(input_dir.absolute())
    if not input_dir.is_dir():
        raise InvalidValue(f"input_dir: {input_dir} is not a directory")
    if len(given) > 1:
        raise InvalidValue(f"discover: give at most one of pattern, layout, loaddata (got {' and '.join(given)})")
    if ignore_unmatched and loaddata is not None:
        raise InvalidValue("ignore_unmatched (--ignore-unmatched): a LoadData CSV names its files itself; use it with a pattern or a layout")
    input_dir = input_dir.absolute()
    problems: list[Problem] = []
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
            problems.append(Problem(None, "no-files", f"no TIFF files (*.tif, *.tiff) under {input_dir}{thumbnails}", left_out=False))
        elif pattern is None and layout_name is None:
            return _folder(input_dir, relpaths, skipped)
        else:
            if ignore_unmatched:
                ignored = unmatched
            else:
                problems.extend(Problem(relpath, "unmatched", f"not matched by the {what}") for relpath in unmatched)
            if not records:
                problems.append(Problem(None, "none-named", f"the {what} names none of the {len(relpaths)} TIFF files under {input_dir}",
                                        left_out=False))

    found_any = bool(records)
    records = _drop_repeated_files(_drop_duplicates(records, problems), problems)
    named = {(record.plate, record.channel) for record in records}
    shapes = {}
    if check_headers and records:
        records, shapes = _check_headers(records, problems)
    _check_completeness(records, problems)
    if found_any and not records:
        problems.append(Problem(None, "none-usable", f"no usable images under {input_dir}: every image found has a problem",
                                left_out=False))
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


def _folder(input_dir: Path, relpaths: list[str], skipped: list[str]) -> Plan:
    """A folder that no layout names: images of one kind, stacks by their axes (inputs.folders)."""
    from .folders import folder_records

    problems: list[Problem] = []
    records, shapes = folder_records(input_dir, relpaths, _layouts.plate_from_folder(input_dir), problems)
    return _unlayouted_plan(input_dir, records, shapes, problems, skipped,
                            f"a folder of images without a plate layout ({_count_files(len(relpaths))})")


def _count_files(count: int) -> str:
    return f"{count} TIFF file{'s' * (count != 1)}"


def _single_file(path: Path) -> Plan:
    """One image or stack file as INPUT: its images, named after the file."""
    from .folders import folder_records, single_file_plate

    problems: list[Problem] = []
    records, shapes = folder_records(path.parent, [path.name], single_file_plate(path), problems)
    what = "one image" if len(records) == 1 and records[0].page is None else f"a stack of {len(records)} planes"
    return _unlayouted_plan(path, records, shapes, problems, [], f"{what}, {path.name}")


def _unlayouted_plan(input_path: Path, records, shapes, problems, skipped, source: str) -> Plan:
    records = _drop_duplicates(records, problems)
    if not records and not problems:
        problems.append(Problem(None, "no-files", f"no images in {input_path}", left_out=False))
    named = {(r.plate, r.channel) for r in records}
    return Plan(records=sorted(records, key=ImageRecord.sort_key), problems=problems, input_dir=input_path, source=source,
                shapes={key: shape for key, shape in shapes.items() if key in named}, skipped=skipped, named=named)
