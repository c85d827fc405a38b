"""The models in OUT/illum: saving what pass 1 estimated, finding and checking what pass 2 applies.

A plain CellProfiler function (one part, CellProfiler's units) is saved as CellProfiler saves it,
``<plate>_Illum<channel>.npy``, so LoadData pipelines use it as is; any other model (flat field
and darkfield, a baseline, raw counts) as one self-describing ``<plate>_Illum<channel>.npz``. An
apply-only run loads either, or a CellProfiler ``.mat``, and checks it against its images before
anything is written.
"""
from __future__ import annotations

from pathlib import Path

from .._checks import pixels_are
from ..errors import UserError, one_line
from .outdir import MODEL_FOLDER, os_error_text
from .spec import JobError

MODEL_SUFFIXES = (".npy", ".npz", ".mat")


CELLPROFILER_PARTS = {"Flat": "flatfield", "Dark": "darkfield"}  # <plate>_Illum<part><channel>.npy of other models


def model_suffix(method, settings) -> str:
    """.npy for a method whose models are CellProfiler functions, .npz for the others."""
    return ".npy" if method.name == "cellprofiler" else ".npz"


def part_paths(path: Path, group) -> dict[str, Path]:
    """{"Flat": ..., "Dark": ...}: where a model saved at ``path`` (.npz) puts its flat field and
    darkfield as CellProfiler functions, for pipelines that Subtract the darkfield, then Divide by
    the flat field (README, "For CellProfiler users")."""
    from ..methods.cellprofiler.functions_io import function_filename

    if path.suffix != ".npz":
        return {}
    suffix = group.model_stem()[len(function_filename(group.plate, group.channel)) - len(".npy"):]  # a series' part
    return {part: path.with_name(function_filename(group.plate, part + group.channel).removesuffix(".npy") + suffix + ".npy")
            for part in CELLPROFILER_PARTS}


def save_model(run, group, path: Path, inputs: str) -> str:
    """Write ``group.model`` and its PNG preview at ``path`` (a flat field and darkfield model also as
    two CellProfiler functions, see :func:`part_paths`), record them; returns the model's sha256."""
    from ..backend import to_numpy
    from ..methods.cellprofiler.functions_io import save_function
    from ..qc.figures import function_preview, model_figure

    model = group.model
    png = path.with_suffix(".png")
    parts = {}
    try:
        if path.suffix == ".npy":
            save_function(path, model.function)
            function_preview(to_numpy(model.function), png, title=f"{group.plate} {group.channel}")
        else:
            model.save(path)
            if model.flatfield is not None or model.darkfield is not None:
                model_figure(model, png, title=f"{group.plate} {group.channel}")
            for part, target in part_paths(path, group).items():
                function = cellprofiler_part(model, CELLPROFILER_PARTS[part], group.reader.dtype)
                if function is not None:
                    parts[part] = save_function(target, function)
    except OSError as error:
        raise JobError(f"{error.filename or path}: {os_error_text(error)}") from None
    out = run.out
    sha = out.manifest.record_file(path.relative_to(out.path).as_posix(), path, "illum", inputs=inputs)["sha256"]
    for written in (png, *parts.values()):
        if written.is_file():
            out.manifest.record_file(written.relative_to(out.path).as_posix(), written,
                                     "preview" if written == png else "illum", inputs=inputs)
    group.parts = parts
    return sha


def cellprofiler_part(model, part: str, dtype: str):
    """The model's flat field (dimensionless, to Divide by) or darkfield (in CellProfiler's units: counts
    over the dtype's maximum, to Subtract) as a CellProfiler function, or None when it has none (or
    a baseline, which CellProfiler cannot apply)."""
    import numpy as np

    from ..backend import to_numpy

    array = getattr(model, part)
    if array is None or model.baseline is not None:
        return None
    array = to_numpy(array).astype(np.float32)
    if part == "darkfield" and model.units == "counts" and np.dtype(dtype).kind == "u":
        array = array / np.float32(np.iinfo(np.dtype(dtype)).max)
    return array


def load_model(path: Path, apply_method: str):
    """The model in ``path``: a ``.npz`` model, a folder saved by BaSiCPy 2.0 (``save_model``), or a
    CellProfiler ``.npy``/``.mat`` function applied with ``apply_method``; a one-line JobError for
    anything else."""
    from ..methods.basicpy_io import load_basicpy_model
    from ..methods.cellprofiler.functions_io import load_function
    from ..model import IlluminationModel

    try:
        if path.is_dir():
            return load_basicpy_model(path)
        if path.suffix.lower() == ".npz":
            return IlluminationModel.load(path)
        return IlluminationModel.from_function(load_function(path), apply_method)
    except (UserError, ValueError, TypeError) as error:
        raise JobError(one_line(error)) from None


def attach_existing(groups, functions, out_dir: Path, named: set, apply_method: str) -> None:
    """Apply-only runs: load each group's model from a folder of ``<plate>_Illum<channel>`` files
    (default OUT/illum) or a mapping {channel or (plate, channel): file, or a BaSiCPy model folder}.

    A mapping's keys must name channels, or (plate, channel) pairs, that INPUT's file names give
    (``named``, files with problems included), so a typo is not silently ignored."""
    if isinstance(functions, dict):
        names = set(named) | {channel for _plate, channel in named}
        unknown = [key for key in functions if (tuple(key) if isinstance(key, (list, tuple)) else key) not in names]
        if unknown:
            key = unknown[0]
            if isinstance(key, str):
                given, listed = f"channel {key!r} (--function {key}=FILE)", ", ".join(sorted({c for _p, c in named}))
            else:
                given, listed = f"plate and channel {key!r}", ", ".join(f"{plate}/{channel}" for plate, channel in sorted(named))
            raise JobError(f"function given for {given}: INPUT has no such channel; it has {listed}")
    for group in groups:
        if isinstance(functions, dict):
            path = functions.get((group.plate, group.channel)) or functions.get(group.channel)
            if path is None:
                raise JobError(f"functions: no illumination function given for {group.plate}/{group.channel}")
            path = Path(path)
        else:
            folder = Path(functions) if functions is not None else Path(out_dir) / MODEL_FOLDER
            stem = group.model_stem()
            candidates = [folder / f"{stem}{suffix}" for suffix in MODEL_SUFFIXES]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                where = ("run calc first, or pass --functions DIR" if functions is None
                         else f"looked for {', '.join(MODEL_SUFFIXES)} in {folder}")
                raise JobError(f"{candidates[0]}: illumination function for {group.plate}/{group.channel} not found ({where})")
        group.model, group.model_path = load_model(path, apply_method), path


def check_models(groups) -> None:
    """Before pass 2 writes anything, refuse (one line naming the file) a model it cannot use:
    another shape than the images; a CellProfiler function with a value that is not finite, for
    Divide a value <= 0 (a zero-mean Splines function is for Subtract), for Subtract every value
    >= 1 (a rescaled function: subtracted in 0..1 units it blackens every image); another model
    with a flat field that is not finite and positive or a darkfield that is not finite."""
    from ..backend import to_numpy
    from ..correct import invalid_function_pixels

    for group in groups:
        model, path = group.model, group.model_path
        if model is None:  # every image of the group was skipped
            continue
        if model.shape is not None and model.shape != group.reader.shape:
            noun = "function" if model.cellprofiler_method else "model"
            raise JobError(f"{path}: {noun} shape {model.shape} does not match the images' {group.reader.shape}")
        method = model.cellprofiler_method
        if method == "Divide":
            bad = invalid_function_pixels(model.function, "Divide")  # not finite, zero or negative
            if bad:
                raise JobError(f"{path}: {pixels_are(bad)} zero, negative or not finite; cannot divide by it (a zero-mean "
                               "function, e.g. from Splines, is for --apply-method Subtract)")
        elif method == "Subtract":
            function = model.function
            bad = invalid_function_pixels(function, "Subtract")
            if bad:
                raise JobError(f"{path}: {pixels_are(bad)} not finite; cannot subtract it")
            if function.min() >= 1:
                raise JobError(f"{path}: every value is >= 1, a rescaled function; subtracting it in 0..1 units blackens "
                               "every image; use --apply-method Divide, or a function calculated with --rescale No")
        else:
            for part, use in (("flatfield", "Divide"), ("darkfield", "Subtract")):
                array = getattr(model, part)
                bad = 0 if array is None else invalid_function_pixels(to_numpy(array), use)
                if bad:
                    raise JobError(f"{path}: its {part} has {pixels_are(bad).replace(' is', '').replace(' are', '')} "
                                   f"{'zero, negative or ' if use == 'Divide' else ''}not finite; it cannot correct images")
