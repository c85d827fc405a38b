"""CellProfiler LoadData CSV files: read one into image records, write one for corrected images.

A LoadData CSV has one row per imaging site and, per channel ``<Ch>``, the columns
``FileName_<Ch>`` and ``PathName_<Ch>`` (or ``URL_<Ch>`` with a ``file:`` URL), plus metadata
columns ``Metadata_Plate``, ``Metadata_Well`` (or ``Metadata_Row`` + ``Metadata_Col``/
``Metadata_Column``), ``Metadata_Site`` and optionally ``Metadata_Z`` / ``Metadata_T``.
The files written here load in CellProfiler's LoadData module as they are.
"""
from __future__ import annotations

import csv
import io
import os
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath

from ..io.atomic import atomic_write_bytes
from .records import ImageRecord, natural_key
from .layouts import DEFAULT_SITE, number_field, plate_from_folder, well_name
from ..io.safe_open import NotRegularFile, read_regular_text
from ..errors import InvalidValue

_CHANNEL_PREFIXES = ("FileName_", "URL_")


def _channels(columns: list[str]) -> list[str]:
    channels = []
    for column in columns:
        for prefix in _CHANNEL_PREFIXES:
            if column.startswith(prefix) and column[len(prefix):] and column[len(prefix):] not in channels:
                channels.append(column[len(prefix):])
    return channels


def _well(row: dict) -> str | None:
    if row.get("Metadata_Well"):
        return row["Metadata_Well"].strip()
    row_value = (row.get("Metadata_Row") or "").strip()
    col_value = (row.get("Metadata_Col") or row.get("Metadata_Column") or "").strip()
    if row_value and col_value:
        return well_name(row_value, col_value)
    return None


def _file_path(row: dict, channel: str, base: Path, csv_path: Path, line: int) -> Path | None:
    """The absolute path of ``channel``'s image in ``row``, or None when the row leaves it empty."""
    filename = (row.get(f"FileName_{channel}") or "").strip()
    if filename:
        path = Path((row.get(f"PathName_{channel}") or "").strip()) / filename
    else:
        url = (row.get(f"URL_{channel}") or "").strip()
        if not url:
            return None
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("file", ""):
            raise InvalidValue(f"{csv_path}: line {line}: URL_{channel} {url!r} is not a file: URL (only local files are supported)")
        path = Path(urllib.request.url2pathname(parsed.path))
    if not path.is_absolute():
        path = base / path
    return Path(os.path.normpath(path))


# the Metadata_ columns loaddata_rows writes itself; any other is carried over from an input CSV
_WRITTEN_METADATA = ("Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Z", "Metadata_T")


def _relpath(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with "/" separators (with leading "../" when outside it)."""
    return PurePosixPath(*Path(os.path.relpath(path, base)).parts).as_posix()


def read_loaddata(csv_path, base_dir=None) -> list[ImageRecord]:
    """Read a CellProfiler LoadData CSV into one ImageRecord per (row, channel) file.

    Relative PathName values are resolved against ``base_dir`` (default: the CSV's folder), and each
    record's ``relpath`` is relative to ``base_dir``. Missing Metadata_Plate: the name of the first
    folder of the relative path, else of ``base_dir``, as ``plate_from_folder`` cleans it (the way
    discovery names plates); missing Metadata_Site: "1". Empty FileName cells are skipped.
    A malformed CSV raises ValueError naming the file (and line).
    """
    csv_path = Path(csv_path)
    base = Path(base_dir if base_dir is not None else csv_path.parent).absolute()
    try:
        text = read_regular_text(csv_path, encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidValue(f"loaddata: {csv_path}: no such file") from None
    except (OSError, UnicodeDecodeError, NotRegularFile) as error:
        raise InvalidValue(f"loaddata: {csv_path}: cannot read ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    try:
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    except csv.Error as error:  # e.g. a field over the csv module's limit of 131072 characters
        raise InvalidValue(f"loaddata: {csv_path}: line {reader.reader.line_num}: not a readable CSV ({error})") from None
    channels = _channels(columns)
    if not channels:
        raise InvalidValue(f"loaddata: {csv_path}: no FileName_<channel> or URL_<channel> columns (found {', '.join(columns) or 'no header'})")
    if "Metadata_Well" not in columns and not ({"Metadata_Row"} <= set(columns) and ({"Metadata_Col", "Metadata_Column"} & set(columns))):
        raise InvalidValue(f"loaddata: {csv_path}: needs a Metadata_Well column (or Metadata_Row and Metadata_Col)")
    extra = [column for column in columns if column.startswith("Metadata_") and column not in _WRITTEN_METADATA]
    records = []
    for line, row in enumerate(rows, start=2):
        well = _well(row)
        if well is None:
            raise InvalidValue(f"{csv_path}: line {line}: empty well (Metadata_Well)")
        for channel in channels:
            path = _file_path(row, channel, base, csv_path, line)
            if path is None:
                continue
            relpath = _relpath(path, base)
            plate = (row.get("Metadata_Plate") or "").strip()
            if not plate:  # named like discovery names a plate: after its folder
                nested = "/" in relpath and not relpath.startswith("../")
                plate = plate_from_folder(relpath.split("/", 1)[0] if nested else base)
            records.append(
                ImageRecord(
                    path=path,
                    relpath=relpath,
                    plate=plate,
                    well=well,
                    site=number_field(row.get("Metadata_Site")) or DEFAULT_SITE,
                    channel=channel,
                    z=number_field(row.get("Metadata_Z")),
                    t=number_field(row.get("Metadata_T")),
                    metadata=tuple((column, row.get(column) or "") for column in extra),
                )
            )
    return records


def loaddata_rows(records, path_of=None) -> list[dict]:
    """LoadData rows (one per plate/well/site/z/t, channels as columns) for ``records``.

    ``path_of(record)`` gives the file to list (default ``record.path``), e.g. the corrected output
    of each input record. PathName holds the file's absolute folder. Metadata_Z / Metadata_T columns
    appear only when some record has a z or t; a record's other ``metadata`` (a LoadData input's
    Metadata_Compound, Metadata_Row, ...) follows them.
    """
    path_of = path_of or (lambda record: record.path)
    with_z = any(record.z is not None for record in records)
    with_t = any(record.t is not None for record in records)
    rows: dict[tuple, dict] = {}
    for record in sorted(records, key=lambda r: tuple(natural_key(v) for v in (r.plate, r.well, r.site, r.z, r.t, r.channel))):
        key = (record.plate, record.well, record.site, record.z, record.t)
        row = rows.get(key)
        if row is None:
            row = {"Metadata_Plate": record.plate, "Metadata_Well": record.well, "Metadata_Site": record.site}
            if with_z:
                row["Metadata_Z"] = record.z if record.z is not None else ""
            if with_t:
                row["Metadata_T"] = record.t if record.t is not None else ""
            row.update(record.metadata)
            rows[key] = row
        path = Path(path_of(record)).absolute()
        row[f"FileName_{record.channel}"] = path.name
        row[f"PathName_{record.channel}"] = str(path.parent)
    return list(rows.values())


def write_loaddata_csv(path, rows) -> None:
    """Write LoadData ``rows`` (dicts) as a CSV, atomically.

    Columns are the union of the rows' keys in first-seen order; a key missing from a row is
    written empty. Values are written with ``str``.
    """
    rows = list(rows)
    if not rows:
        raise InvalidValue("rows: expected at least one LoadData row, got none")
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else str(value) for key, value in row.items()})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
