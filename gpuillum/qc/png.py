"""A minimal PNG writer plus display scaling and a perceptual colour map, for QC pictures.

PNG is written with the standard library only (zlib + struct), so quality-control pictures need no
imaging package: 8- or 16-bit greyscale and 8-bit RGB, every row "Sub"-filtered (smooth pictures
compress several times better than unfiltered), written atomically.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

from ..backend import get_array_module, to_numpy
from ..io.atomic import atomic_write_bytes
from ..errors import InvalidValue

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB = 0, 2
_SUB_FILTER = 1

# Colour map anchors: viridis sampled at 10 evenly spaced points (dark blue-purple -> yellow);
# linear interpolation between them keeps it perceptually ordered and colour-blind friendly.
_ANCHORS = np.array(
    [
        (0x44, 0x01, 0x54), (0x48, 0x28, 0x78), (0x3E, 0x49, 0x89), (0x31, 0x68, 0x8E), (0x26, 0x82, 0x8E),
        (0x1F, 0x9E, 0x89), (0x35, 0xB7, 0x79), (0x6E, 0xCE, 0x58), (0xB5, 0xDE, 0x2B), (0xFD, 0xE7, 0x25),
    ],
    dtype=np.float64,
)
_TABLE_SIZE = 256
COLORMAP = np.stack(
    [np.interp(np.linspace(0, 1, _TABLE_SIZE), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c]) for c in range(3)],
    axis=1,
).round().astype(np.uint8)
NAN_COLOUR = (128, 128, 128)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(array) -> bytes:
    """The PNG file bytes of a uint8/uint16 (H, W) greyscale or uint8 (H, W, 3) RGB image."""
    array = to_numpy(array)
    if array.ndim == 2 and array.dtype in (np.uint8, np.uint16):
        colour_type, channels = _GREY, 1
    elif array.ndim == 3 and array.shape[2] == 3 and array.dtype == np.uint8:
        colour_type, channels = _RGB, 3
    else:
        raise InvalidValue(
            f"array: expected uint8/uint16 (H, W) or uint8 (H, W, 3), got {array.dtype} with shape {array.shape}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InvalidValue(f"array: expected a non-empty image, got shape {array.shape}")
    bit_depth = array.dtype.itemsize * 8
    # Big-endian samples, one row of bytes per image row.
    raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).view(np.uint8).reshape(height, -1)
    bytes_per_pixel = channels * array.dtype.itemsize
    filtered = raw.copy()
    filtered[:, bytes_per_pixel:] -= raw[:, :-bytes_per_pixel]  # Sub filter: byte minus its left neighbour, mod 256
    scanlines = np.empty((height, filtered.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = _SUB_FILTER
    scanlines[:, 1:] = filtered
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)),
            _chunk(b"IEND", b""),
        ]
    )


def write_png(path, array) -> None:
    """Write ``array`` (see :func:`encode_png`; CuPy arrays are copied to the host) as a PNG, atomically."""
    atomic_write_bytes(path, encode_png(array))


def display_limits(image, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The ``low`` and ``high`` percentiles of the finite values of ``image`` (for shared scaling)."""
    xp = get_array_module(image)
    values = xp.asarray(image, dtype=xp.float32)
    values = values[xp.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in xp.percentile(values, xp.asarray([low, high], dtype=xp.float32)))
    return lo, hi


def rescale01(image, limits: tuple[float, float]):
    """``image`` mapped linearly so ``limits`` become 0 and 1, clipped; float32, NaN kept."""
    xp = get_array_module(image)
    lo, hi = limits
    span = hi - lo if hi > lo else 1.0
    return xp.clip((xp.asarray(image, dtype=xp.float32) - xp.float32(lo)) / xp.float32(span), 0.0, 1.0)


def to_display(image, low: float = 0.5, high: float = 99.5, *, limits: tuple[float, float] | None = None):
    """8-bit display version of ``image``: the ``low``..``high`` percentiles stretched to 0..255.

    Pass ``limits=(lo, hi)`` to scale several images identically. Non-finite pixels become 0.
    Same backend out as in.
    """
    xp = get_array_module(image)
    scaled = rescale01(image, limits if limits is not None else display_limits(image, low, high))
    scaled = xp.where(xp.isfinite(scaled), scaled, 0.0)
    return xp.rint(scaled * 255).astype(xp.uint8)


def apply_colormap(values01):
    """RGB uint8 (..., 3) for values in [0, 1] through a viridis-like table; NaN becomes grey."""
    xp = get_array_module(values01)
    values = xp.asarray(values01, dtype=xp.float32)
    finite = xp.isfinite(values)
    index = xp.rint(xp.clip(xp.where(finite, values, 0.0), 0.0, 1.0) * (_TABLE_SIZE - 1)).astype(xp.intp)
    rgb = xp.asarray(COLORMAP)[index]
    rgb[~finite] = xp.asarray(NAN_COLOUR, dtype=xp.uint8)
    return rgb
