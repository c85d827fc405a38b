"""Saving and loading illumination functions the way CellProfiler pipelines exchange them.

CellProfiler's SaveImages writes a function as ``<Plate>_Illum<Channel>.npy`` (float32, image
shape) in current pipelines and as a MATLAB ``.mat`` file (variable ``Image``) in older ones.
gpuillum writes ``.npy`` atomically (temporary name in the same folder, then ``os.replace``), so a
crash never leaves a half-written function that a later ``--resume`` would trust.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..._checks import check_float32_range, check_path
from ...backend import to_numpy
from ...io.atomic import atomic_save_npy
from ...errors import InvalidType, InvalidValue


def function_filename(plate: str, channel: str) -> str:
    """The CellProfiler/JUMP file name of a plate's function for one channel: ``<plate>_Illum<channel>.npy``."""
    for name, value in (("plate", plate), ("channel", channel)):
        if not isinstance(value, str) or not value:
            raise InvalidValue(f"{name}: expected a non-empty string, got {value!r}")
        if any(sep in value for sep in ("/", "\\", os.sep)):
            raise InvalidValue(f"{name}: must not contain a path separator, got {value!r}")
    return f"{plate}_Illum{channel}.npy"


def _as_function(array, name: str) -> np.ndarray:
    """``array`` as a 2-D float32 NumPy array, or a one-line error."""
    array = to_numpy(array)
    if array.ndim != 2 or array.size == 0:
        raise InvalidValue(f"{name}: expected a non-empty 2-D illumination function, got shape {tuple(array.shape)}")
    if array.dtype.kind not in "fiu":
        raise InvalidType(f"{name}: expected a numeric array, got dtype {array.dtype}")
    check_float32_range(array, name)
    return np.ascontiguousarray(array, dtype=np.float32)


def save_function(path, function) -> Path:
    """Write ``function`` (NumPy or CuPy, 2-D) as a float32 ``.npy`` file, atomically; returns the path."""
    path = Path(check_path(path, "path"))
    if path.is_dir():
        raise InvalidValue(f"{path}: is a directory; expected the function's file name, e.g. {path / 'Plate1_IllumDNA.npy'}")
    if path.suffix.lower() != ".npy":
        raise InvalidValue(f"path: illumination functions are saved as .npy, got {str(path)!r}")
    atomic_save_npy(path, _as_function(function, "function"))
    return path


_NPY_SIGNATURE = b"\x93NUMPY"  # the first bytes of every .npy file (NumPy's format.MAGIC_PREFIX)


def _read_array(path: Path, suffix: str) -> np.ndarray:
    if suffix == ".npy":
        with open(path, "rb") as handle:
            if handle.read(len(_NPY_SIGNATURE)) != _NPY_SIGNATURE:  # else NumPy tries it as a pickle and says so
                raise KeyError("not a NumPy .npy file: it does not start with the .npy signature")
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as error:
            if "allow_pickle" not in str(error):
                raise
            # an object array: unpickling a file can run any code, so it is never done
            raise KeyError("it holds pickled Python objects, not a float array; gpuillum never unpickles a file, which could run code") from None
    import scipy.io

    variables = scipy.io.loadmat(path)
    if "Image" not in variables:
        found = sorted(k for k in variables if not k.startswith("__"))
        raise KeyError(f"no variable 'Image' in the .mat file (found {found})")
    return variables["Image"]


def load_function(path) -> np.ndarray:
    """Read a function saved by CellProfiler or gpuillum (``.npy``, or ``.mat`` variable ``Image``) as float32."""
    path = Path(check_path(path, "path"))
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".mat"):
        raise InvalidValue(f"{path}: expected a .npy or .mat illumination function, got {suffix or 'no extension'!r}")
    if not path.is_file():
        raise InvalidValue(f"{path}: no such illumination function file")
    try:
        data = _read_array(path, suffix)
    except Exception as error:  # corrupt or foreign files raise many types (OSError, MatReadError, ...)
        reason = error.args[0] if isinstance(error, KeyError) else f"{type(error).__name__}: {error}"
        raise InvalidValue(f"{path}: cannot read the illumination function ({reason})") from None
    return _as_function(data, str(path))
