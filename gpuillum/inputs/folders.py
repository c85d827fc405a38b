"""Images without a plate layout: one image or stack file, or a folder of images of one kind.

No regex is needed. Every TIFF is read by its header alone (gpuillum.io.stacks): a single plane
is one image; a multi-page stack gives one image per plane, its ``C`` axis naming the channel
(OME or ImageJ channel names, else ``C0``, ``C1``, ...), its ``T`` (or unnamed) axis the frame
``t`` and its ``Z`` axis ``z``. The plate is the folder's name (or the file's, for one file).

Channels of separate files come from a token in their names when every file carries exactly one
(``_c1``, ``-ch2``, ``.w3``, ``channel4``, ImageJ's ``C1-`` prefix); the rest of the name is the
site, so the channels of one field pair up in load_data.csv. Without tokens the folder is one
channel, ``1``. Images of one channel with another shape or dtype than the channel's first form
their own group (``<channel>-<H>x<W>-<dtype>``), so unrelated images in one folder are each
corrected, never refused.
"""
from __future__ import annotations

import concurrent.futures
import re
from pathlib import Path

from .layouts import number_field, plate_from_folder
from .records import ImageRecord, Problem

DEFAULT_CHANNEL = "1"
_HEADER_THREADS = 8
_TOKEN = re.compile(r"(?:^|(?<=[_\-. ]))(?P<token>(?:channel|ch|c|w)(?P<number>\d+))(?=$|[_\-. ])", re.IGNORECASE)
_IMAGEJ_SPLIT = re.compile(r"^(?P<token>C(?P<number>\d+))-")


def _stem(relpath: str) -> str:
    """The file name without .tif / .tiff / .ome.tif(f)."""
    name = relpath.rsplit("/", 1)[-1]
    return re.sub(r"(?i)(\.ome)?\.tiff?$", "", name)


def channel_token(relpath: str) -> tuple[str, str] | None:
    """(channel token, the name without it) when the file name carries exactly one, else None.

    >>> channel_token("tile_07_c2.tif")
    ('c2', 'tile_07')
    """
    stem = _stem(relpath)
    split = _IMAGEJ_SPLIT.match(stem)
    if split:
        return split.group("token"), stem[split.end():]
    tokens = list(_TOKEN.finditer(stem))
    if len(tokens) != 1:
        return None
    token = tokens[0]
    rest = (stem[:token.start()] + stem[token.end():]).strip("_-. ")
    return token.group("token"), re.sub(r"[_\-. ]{2,}", "_", rest) or stem


def _headers(folder: Path, relpaths: list[str]) -> list:
    """StackInfo (or the ImageReadError) of every file, read in threads (opening files is I/O-bound)."""
    from ..io.stacks import read_stack_info
    from ..io.tiff import ImageReadError

    def header(relpath):
        try:
            return read_stack_info(folder / relpath)
        except ImageReadError as error:
            return error

    with concurrent.futures.ThreadPoolExecutor(max_workers=min(_HEADER_THREADS, max(1, len(relpaths)))) as pool:
        return list(pool.map(header, relpaths))


def _plane_records(folder: Path, relpath: str, info, plate: str, channel: str | None, site: str) -> list[ImageRecord]:
    """One record per plane of a file (page None for a file that is one 2-D image)."""
    path = folder / relpath
    if info.planes == 1 and len(info.shape) == 2:
        return [ImageRecord(path=path, relpath=relpath, plate=plate, well="", site=site, channel=channel or DEFAULT_CHANNEL)]
    records = []
    for page in range(info.planes):
        coordinates = info.coordinates(page)
        frame = next((coordinates[axis] for axis in "TIQ" if axis in coordinates), None)
        stack_channel = info.channel_name(page)
        name = "-".join(part for part in (channel, stack_channel) if part) or DEFAULT_CHANNEL
        records.append(ImageRecord(path=path, relpath=relpath, plate=plate, well="", site=site, channel=name,
                                   z=number_field(str(coordinates["Z"])) if "Z" in coordinates else None,
                                   t=None if frame is None else str(frame), page=page))
    return records


def folder_records(folder: Path, relpaths: list[str], plate: str, problems: list) -> tuple[list[ImageRecord], dict]:
    """Records of ``relpaths`` under ``folder`` (see the module docstring) and {(plate, channel):
    (shape, dtype)}; unreadable files become problems."""
    tokens = {relpath: channel_token(relpath) for relpath in relpaths}
    use_tokens = len(relpaths) > 1 and all(token is not None for token in tokens.values())
    records, kinds = [], {}
    for relpath, info in zip(relpaths, _headers(folder, relpaths)):
        if not hasattr(info, "planes"):
            problems.append(Problem(relpath, "unreadable", f"unreadable ({info.reason})", shared="unreadable"))
            continue
        channel, site = tokens[relpath] if use_tokens else (None, _stem(relpath))
        for record in _plane_records(folder, relpath, info, plate, channel, site):
            kind = (info.plane_shape, info.dtype)
            first = kinds.setdefault(record.channel, kind)
            if kind != first:  # another kind of image: a group of its own
                shape, dtype = kind
                record = _with_channel(record, f"{record.channel}-{shape[0]}x{shape[1]}-{dtype}")
                kinds.setdefault(record.channel, kind)
            records.append(record)
    shapes = {(plate, channel): kind for channel, kind in kinds.items()}
    return records, shapes


def _with_channel(record: ImageRecord, channel: str) -> ImageRecord:
    import dataclasses

    return dataclasses.replace(record, channel=channel)


def single_file_plate(path: Path) -> str:
    """The plate name of one image or stack file given as INPUT: its name without the extension."""
    return plate_from_folder(_stem(path.name))
