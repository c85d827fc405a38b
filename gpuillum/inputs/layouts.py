"""File-naming layouts of plate exports: regular expressions that turn a path into plate metadata.

Every layout (and every user ``--pattern``) is a regular expression with named groups, matched in
full (``re.fullmatch``) against a file's path relative to INPUT, written with ``/``:

* ``plate``: the plate. Without this group the plate is the first folder of the relative path, or,
  for files directly in INPUT, INPUT's own folder name (:func:`plate_from_folder`: ``/data/My
  Plate 3`` -> ``My_Plate_3``). An optional plate group that takes no part in a match (a built-in
  layout's files directly in INPUT, or under a ``TimePoint_1`` or ``Images`` folder) also gives
  INPUT's folder name: those files are INPUT's own plate.
* ``well``, or ``row`` and ``col``: the well. ``row`` may be a number (1 -> A, 27 -> AA) or
  letters, ``col`` a number; together they give e.g. ``"B03"``. A ``well`` group is kept as written.
* ``site`` (default ``"1"``), ``channel`` (required), optional ``z`` and ``t``. Numbers in site, z and
  t lose leading zeros (``f04`` -> site ``"4"``) so ``s1`` and ``s01`` are the same site.

Built-in layouts (:data:`LAYOUTS`):

* ``"gpuillum"``: the synthetic demo plate, ``<plate>/<well>_s<site>_<channel>.tif``,
  e.g. ``DEMO/B03_s2_DNA.tif`` -> plate DEMO, well B03, site 2, channel DNA.
* ``"imagexpress"``: Molecular Devices MetaXpress, ``<plate>/.../[TimePoint_<t>/][ZStep_<z>/]
  <name>_<well>[_s<site>]_w<channel>[<UUID>].tif``, e.g.
  ``Plate1/TimePoint_1/Plate1_B03_s2_w1A1B2C3D4-0000-1111-2222-333344445555.tif`` -> plate
  Plate1, well B03, site 2, channel 1, t 1. Thumbnails (``..._thumb<UUID>.tif``) are skipped.
* ``"operetta"`` (aliases ``"opera"``, ``"phenix"``): PerkinElmer/Revvity Harmony export,
  ``[<plate>/][Images/]r<row>c<col>f<field>p<plane>-ch<channel>sk<timepoint>fk<n>fl<n>.tiff``,
  e.g. ``Plate1/Images/r02c03f04p01-ch1sk1fk1fl1.tiff`` -> plate Plate1, well B03, site 4,
  z 1, channel 1, t 1. A first folder named ``Images`` is not a plate.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import PurePath
from ..errors import InvalidValue

_TIFF = r"(?i:(?:\.ome)?\.tiff?)"  # OME-TIFF files (name.ome.tif) too
_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
DEFAULT_PLATE = "plate"  # when a folder name has no usable character (e.g. INPUT is "/")
DEFAULT_SITE = "1"


@dataclasses.dataclass(frozen=True)
class Layout:
    """A named file-naming convention: ``regex`` (fullmatch on the relative path) plus files to skip."""

    name: str
    regex: re.Pattern
    example: str
    description: str
    skip: re.Pattern | None = None  # recognised non-images (thumbnails), left out without a problem
    default_channel: str | None = None  # the channel of a file whose name gives none

    def is_skipped(self, relpath: str) -> bool:
        return self.skip is not None and self.skip.search(relpath) is not None


GPUILLUM = Layout(
    name="gpuillum",
    regex=re.compile(r"(?:(?P<plate>[^/]+)/)?(?P<well>[A-Z]{1,2}\d{2,3})_s(?P<site>\d+)_(?P<channel>[^/_.]+)" + _TIFF),
    example="DEMO/B03_s2_DNA.tif",
    description="gpuillum synthetic demo plate: <plate>/<well>_s<site>_<channel>.tif",
)

IMAGEXPRESS = Layout(
    name="imagexpress",
    regex=re.compile(
        r"(?:(?P<plate>(?!TimePoint_\d+/|ZStep_\d+/)[^/]+)/)?(?:[^/]+/)*?"
        r"(?:TimePoint_(?P<t>\d+)/)?(?:ZStep_(?P<z>\d+)/)?"
        r"[^/]*_(?P<well>[A-Z]{1,2}\d{2})(?:_s(?P<site>\d+))?(?:_w(?P<channel>\d+?))?(?:" + _UUID + r")?" + _TIFF
    ),
    example="Plate1/TimePoint_1/Plate1_B03_s2_w1A1B2C3D4-0000-1111-2222-333344445555.tif",
    description="MetaXpress (ImageXpress): <plate>/.../<name>_<well>_s<site>_w<channel><uuid>.tif "
                "(no _w<channel> when one wavelength was acquired: channel 1)",
    skip=re.compile(r"_thumb[^/]*$", re.IGNORECASE),
    default_channel="1",
)

OPERETTA = Layout(
    name="operetta",
    regex=re.compile(
        r"(?:(?P<plate>(?!Images/)[^/]+)/)?(?:[^/]+/)*?"
        r"r(?P<row>\d{2})c(?P<col>\d{2})f(?P<site>\d+)p(?P<z>\d+)-ch(?P<channel>\d+)sk(?P<t>\d+)fk\d+fl\d+" + _TIFF
    ),
    example="Plate1/Images/r02c03f04p01-ch1sk1fk1fl1.tiff",
    description="Harmony export (Operetta, Opera Phenix): r<row>c<col>f<field>p<plane>-ch<channel>sk<time>fk1fl1.tiff",
)

LAYOUTS: dict[str, Layout] = {
    "gpuillum": GPUILLUM,
    "imagexpress": IMAGEXPRESS,
    "operetta": OPERETTA,
    "opera": OPERETTA,
    "phenix": OPERETTA,
}


def get_layout(name: str) -> Layout:
    """The built-in layout called ``name`` (case-insensitive); ValueError listing the names otherwise."""
    layout = LAYOUTS.get(str(name).lower())
    if layout is None:
        raise InvalidValue(f"layout: unknown layout {name!r}; expected one of {', '.join(LAYOUTS)}")
    return layout


def distinct_layouts() -> list[Layout]:
    """Each built-in layout once (aliases removed), in the order auto-detection tries them."""
    seen = []
    for layout in LAYOUTS.values():
        if layout not in seen:
            seen.append(layout)
    return seen


def compile_pattern(pattern: str) -> re.Pattern:
    """Compile a user pattern and check its groups; ValueError with a one-line message otherwise."""
    try:
        regex = re.compile(pattern)
    except re.error as error:
        raise InvalidValue(f"pattern: invalid regular expression {pattern!r} ({error})") from None
    groups = set(regex.groupindex)
    has_well = "well" in groups or {"row", "col"} <= groups
    if "channel" not in groups or not has_well:
        raise InvalidValue(
            f"pattern: needs the named groups channel and well (or row and col), "
            f"e.g. (?P<well>[A-P]\\d{{2}})_(?P<channel>\\w+)\\.tif; found {sorted(groups) or 'none'}"
        )
    return regex


def row_name(row: str) -> str:
    """Well-row letters from a row number or letters: "2" -> "B", "27" -> "AA", "b" -> "B"."""
    if not row.isdigit():
        return row.upper()
    number = int(row)
    letters = ""
    while number > 0:
        number, remainder = divmod(number - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters or row


def plate_from_folder(folder) -> str:
    """A plate name from a folder's name: runs of characters outside [A-Za-z0-9._-] become "_",
    leading/trailing "." "_" "-" are dropped (no hidden or odd output names); ``"plate"`` if nothing is left."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePath(str(folder)).name).strip("._-")
    return name or DEFAULT_PLATE


def number_field(text: str | None) -> str | None:
    """A site/z/t field with leading zeros stripped, so "01" and "1" compare equal; surrounding
    blanks are dropped and an empty field is None."""
    text = (text or "").strip()
    if not text:
        return None
    return str(int(text)) if text.isdigit() else text


def well_name(row: str, col: str) -> str:
    """A well from its row (letters, or a 1-based number) and column: ("2", "3") -> "B03"."""
    return row_name(row) + (f"{int(col):02d}" if col.isdigit() else col)


def fields_from_match(match: re.Match, relpath: str, input_plate: str = DEFAULT_PLATE, default_channel: str | None = None) -> dict | None:
    """plate, well, site, channel, z, t of a match on ``relpath``; None if well or channel is empty.

    ``input_plate`` is the plate of files that name none (see the module docstring), normally
    ``plate_from_folder(INPUT)``; ``default_channel`` the channel of files that name none (a
    layout's; a user pattern's channel group must take part).
    """
    groups = match.re.groupindex
    values = match.groupdict()
    if values.get("well"):
        well = values["well"]
    elif values.get("row") and values.get("col"):
        well = well_name(values["row"], values["col"])
    else:
        return None
    channel = values.get("channel") or default_channel
    if not channel:
        return None
    if values.get("plate"):
        plate = values["plate"]
    elif "plate" not in groups and "/" in relpath:
        plate = relpath.split("/", 1)[0]
    else:
        plate = input_plate
    return {
        "plate": plate,
        "well": well,
        "site": number_field(values.get("site")) or DEFAULT_SITE,
        "channel": channel,
        "z": number_field(values.get("z")),
        "t": number_field(values.get("t")),
    }
