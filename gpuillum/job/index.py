"""OUT/corrected/load_data.csv: the corrected images as a CellProfiler LoadData table.

One row per image set (plate, well, site, z, t) with every channel's corrected file and, where
the run has one, each channel's CellProfiler function (FileName_Illum<channel>), or a flat +
dark model's two functions (FileName_IllumFlat<channel>, FileName_IllumDark<channel>); a
LoadData input's other Metadata_* columns are carried over. A site that lost a channel is left out (a row
with an empty FileName_ column breaks CellProfiler) and listed as skipped. Stacks have no
LoadData rows: CellProfiler reads them through NamesAndTypes, not LoadData.
"""
from __future__ import annotations

from pathlib import Path

from .outdir import CORRECTED_FOLDER, LOADDATA_NAME, corrected_path, os_error_text
from .spec import JobError


def write_loaddata(run, groups) -> Path | None:
    """Write OUT/corrected/load_data.csv for the images this run corrected; returns its path, or
    None when there is no single-image file to list."""
    from ..inputs.loaddata import loaddata_rows, write_loaddata_csv

    skipped = {name for name, _reason in run.result.skipped}
    records = [r for g in groups for r in g.records if r.name not in skipped and r.page is None]
    records = complete_sites(run, records, groups)
    if not records:
        return None
    rows = loaddata_rows(records, path_of=lambda record: corrected_path(run.out.path, record.relpath))
    functions = {}  # (plate, channel) -> {column name: CellProfiler function file}
    for g in groups:
        if g.model is not None and g.model_path is not None and g.model_path.suffix == ".npy":
            functions[(g.plate, g.channel)] = {"Illum": g.model_path}
        elif g.parts:
            functions[(g.plate, g.channel)] = {f"Illum{part}": path for part, path in g.parts.items()}
    for row in rows:
        for channel in [key[len("FileName_"):] for key in row if key.startswith("FileName_")]:
            for name, path in functions.get((row["Metadata_Plate"], channel), {}).items():
                row[f"FileName_{name}{channel}"] = path.name
                row[f"PathName_{name}{channel}"] = str(path.absolute().parent)
    path = run.out.path / CORRECTED_FOLDER / LOADDATA_NAME
    try:
        write_loaddata_csv(path, rows)
    except OSError as error:
        raise JobError(f"{path}: {os_error_text(error)}") from None
    return path


def complete_sites(run, records, groups) -> list:
    """The records of image sets that have every channel of their plate; the others are listed as skipped."""
    channels: dict[str, set] = {}
    for group in groups:
        channels.setdefault(group.plate, set()).add(group.channel)
    sites: dict[tuple, list] = {}
    for record in records:
        sites.setdefault((record.plate, record.well, record.site, record.z, record.t), []).append(record)
    incomplete = set()
    for members in sites.values():
        missing = channels[members[0].plate] - {r.channel for r in members}
        if missing:
            for record in members:
                incomplete.add(record.relpath)
                run.skip(record.relpath, f"{record.relpath}: left out of {LOADDATA_NAME}: its site has no usable "
                                         f"{', '.join(sorted(missing))} image")
    return [r for r in records if r.relpath not in incomplete]
