"""Argument checks shared by every public kernel.

Each check raises ValueError or TypeError with a one-line message that names the argument and
says what was expected, so the CLI can print it as is (exit code 2, no traceback).
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from .backend import get_array_module
from .errors import InvalidType, InvalidValue

INTEGER_DTYPES = (np.uint8, np.uint16)
FLOAT_DTYPES = (np.float32,)
ORDER_DTYPES = INTEGER_DTYPES + FLOAT_DTYPES


def _dtype_names(dtypes) -> str:
    return ", ".join(np.dtype(d).name for d in dtypes)


def check_image(image, name: str = "image", dtypes=ORDER_DTYPES, allow_nan: bool = False):
    """Check that ``image`` is a 2-D NumPy or CuPy array of an allowed dtype, without NaN.

    Returns the image unchanged (so calls read ``image = check_image(image)``).
    """
    xp = get_array_module(image)
    if not hasattr(image, "ndim") or not hasattr(image, "dtype"):
        raise InvalidType(f"{name}: expected a 2-D NumPy or CuPy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise InvalidValue(f"{name}: expected a 2-D array, got {image.ndim}-D with shape {tuple(image.shape)}")
    if image.size == 0:
        raise InvalidValue(f"{name}: expected a non-empty array, got shape {tuple(image.shape)}")
    if dtypes is not None and image.dtype not in tuple(np.dtype(d) for d in dtypes):
        raise InvalidType(f"{name}: dtype {image.dtype} is not supported; expected one of {_dtype_names(dtypes)}")
    if not allow_nan and image.dtype.kind == "f" and bool(xp.isnan(image).any()):
        raise InvalidValue(f"{name}: contains NaN; replace or mask those pixels first")
    return image


def pixels_are(count: int) -> str:
    """ "1 pixel is" / "3 pixels are", for messages that count bad pixels."""
    return f"{count} pixel is" if count == 1 else f"{count} pixels are"


def check_float32_range(array, name: str) -> None:
    """Refuse finite values a cast to float32 would turn into inf (a float64 array beyond +-3.4e38)."""
    if array.dtype.kind != "f" or array.dtype.itemsize <= 4:
        return
    xp = get_array_module(array)
    limit = np.finfo(np.float32).max
    beyond = int(xp.count_nonzero(xp.isfinite(array) & (xp.abs(array) > limit)))
    if beyond:
        raise InvalidValue(f"{name}: {pixels_are(beyond)} finite but beyond float32's range (|value| > {limit:.1e}), "
                         "and illumination functions are float32")


def check_integer(value, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an integer >= ``minimum`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidType(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise InvalidValue(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_shape(shape, name: str = "shape") -> tuple[int, int]:
    """Check that ``shape`` is (rows, cols), two integers >= 1; returns it as a tuple of ints."""
    if isinstance(shape, np.ndarray) and shape.ndim == 1:  # e.g. np.array(image.shape)
        shape = shape.tolist()
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    ):
        raise InvalidValue(f"{name}: expected two integers >= 1 (rows, cols), got {shape!r}")
    return int(shape[0]), int(shape[1])


def check_radius(radius, name: str = "radius", minimum: int = 1) -> int:
    """Check that ``radius`` is an integer >= ``minimum``."""
    return check_integer(radius, name, minimum)


def check_choice(value, name: str, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise InvalidValue(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_mask(mask, image, name: str = "mask"):
    """Check that ``mask`` is None or a boolean array of the image's shape and backend.

    Returns None or the mask as a bool array on the image's backend.
    """
    if mask is None:
        return None
    xp = get_array_module(image)
    if not hasattr(mask, "shape"):
        raise InvalidType(f"{name}: expected a boolean array of shape {tuple(image.shape)}, got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(image.shape):
        raise InvalidValue(f"{name}: shape {tuple(mask.shape)} does not match the image shape {tuple(image.shape)}")
    if get_array_module(mask) is not xp:
        raise InvalidType(f"{name}: must live on the same backend as the image ({xp.__name__})")
    if mask.dtype != bool:
        if mask.dtype.kind not in "biu":
            raise InvalidType(f"{name}: expected a boolean array, got dtype {mask.dtype}")
        mask = mask != 0
    return mask


def check_path(value, name: str) -> str:
    """Check that ``value`` names a file or folder; returns it as a str.

    str and os.PathLike are taken as they are, bytes as the file system encodes names
    (``os.fsdecode``, the same file that ``open(bytes)`` opens); anything else is a TypeError.
    """
    if isinstance(value, (str, bytes, os.PathLike)):
        path = os.fspath(value)
        return os.fsdecode(path) if isinstance(path, bytes) else path
    raise InvalidType(f"{name}: expected a path (str, bytes or os.PathLike), got {type(value).__name__}")


def check_instance(value, name: str, kind: type, hint: str = ""):
    """Check that ``value`` is a ``kind`` (a settings object, ...); ``hint`` follows the message."""
    if not isinstance(value, kind):
        raise InvalidType(f"{name}: expected a {kind.__name__}, got {type(value).__name__}{hint}")
    return value
