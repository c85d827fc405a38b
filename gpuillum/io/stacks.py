"""Multi-page TIFF stacks: time-lapses, z-stacks and multi-channel OME-TIFF / ImageJ hyperstacks.

A stack is the first series of a TIFF file whose planes are 2-D grey images, with the axes
tifffile reads from its OME-XML, ImageJ or shaped metadata (``TCYX``, ``ZYX``, ...; ``Q`` or
``I`` when the file names no axis). Every plane is one image to correct; ``C`` names the
channel of a plane, ``T`` (also ``I``/``Q``) its frame, ``Z`` its focal plane.

:func:`write_stack` writes the corrected planes back as one file with the same axes and
metadata: the original OME-XML (its pixel type updated when the output type changes), ImageJ's
hyperstack metadata (ImageJ stores no int32: a signed 16-bit output is written as float32,
which holds every value exactly), or tifffile's shaped description. Compression, predictor and
resolution follow :func:`gpuillum.io.tiff.write_tiff`.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import tifffile

from .atomic import atomic_path
from .safe_open import create_new
from .tiff import SOFTWARE, TiffInfo, info_of_page, read_with, resolve_compression, tile_like
from ..errors import InvalidType, InvalidValue

FRAME_AXES = "TIQ"  # a sequence over time (tifffile's I: image series, Q: unnamed)
KNOWN_AXES = FRAME_AXES + "ZC"
IMAGEJ_DTYPES = ("uint8", "uint16", "int16", "float32")
OME_TYPES = {"uint8": "uint8", "uint16": "uint16", "int16": "int16", "int32": "int32", "float32": "float", "float64": "double"}


@dataclasses.dataclass(frozen=True)
class StackInfo:
    """What a stack's header says: the series shape and axes (the last two are YX), the dtype,
    where its axes came from (``kind``: ome, imagej, shaped or pages), channel names, and the first
    plane's TIFF metadata (``plane``) that the corrected file keeps."""

    shape: tuple
    axes: str
    dtype: str
    kind: str
    plane: TiffInfo
    channel_names: tuple = ()
    imagej_metadata: dict | None = dataclasses.field(default=None, repr=False)
    ome_xml: str | None = dataclasses.field(default=None, repr=False)

    @property
    def planes(self) -> int:
        """Number of 2-D planes."""
        return math.prod(self.shape[:-2])

    @property
    def plane_shape(self) -> tuple:
        return tuple(self.shape[-2:])

    def coordinates(self, index: int) -> dict:
        """{axis: position} of plane ``index`` (planes in C order over the non-YX axes)."""
        return dict(zip(self.axes[:-2], (int(i) for i in np.unravel_index(index, self.shape[:-2]))))

    def channel_name(self, index: int) -> str | None:
        """The channel of plane ``index``: its OME/ImageJ name, else ``C<n>``; None without a C axis."""
        position = self.coordinates(index).get("C")
        if position is None:
            return None
        if position < len(self.channel_names) and self.channel_names[position]:
            return self.channel_names[position]
        return f"C{position}"


def _channel_names(tif: tifffile.TiffFile) -> tuple:
    """Channel names of the file's first image from OME-XML (Channel Name) or ImageJ (Labels), if any."""
    if tif.is_ome and tif.ome_metadata:
        image = re.search(r"<(?:\w+:)?Image\b.*?</(?:\w+:)?Image>", tif.ome_metadata, re.S)
        text = image.group(0) if image else tif.ome_metadata
        return tuple(re.findall(r"<(?:\w+:)?Channel\b[^>]*?\bName=\"([^\"]*)\"", text))
    return ()


def _plane_name(text: str) -> str:
    """A channel name usable in file names: characters outside [A-Za-z0-9._-] become _."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


def stack_info_of(path: Path, tif: tifffile.TiffFile) -> StackInfo:
    """StackInfo of an open TIFF (its first series); ImageReadError for what is not a grey stack."""
    from .tiff import ImageReadError

    if not tif.pages or not tif.series:
        raise ImageReadError(path, "contains no image")
    series = tif.series[0]
    shape, axes = tuple(int(n) for n in series.shape), series.axes
    if "S" in axes or len(shape) < 2 or not axes.endswith("YX"):
        raise ImageReadError(path, f"image of shape {shape} and axes {axes}; expected grey planes (YX), not colour samples")
    odd = sorted(set(axes[:-2]) - set(KNOWN_AXES))
    if odd or len([a for a in axes[:-2] if a in FRAME_AXES]) > 1:
        raise ImageReadError(path, f"stack axes {axes}: only one time axis (T), Z and C are understood")
    page = series.pages[0] if series.pages else tif.pages.first
    plane = info_of_page(path, tif, page, shape[-2:], series.dtype)
    names = tuple(_plane_name(n) for n in _channel_names(tif))
    kind = "ome" if tif.is_ome else "imagej" if tif.is_imagej else "shaped" if tif.is_shaped else "pages"
    return StackInfo(shape=shape, axes=axes, dtype=np.dtype(series.dtype).name, kind=kind, plane=plane,
                     channel_names=names, imagej_metadata=dict(tif.imagej_metadata or {}) if tif.is_imagej else None,
                     ome_xml=tif.ome_metadata if tif.is_ome else None)


def read_stack_info(path) -> StackInfo:
    """The StackInfo of ``path`` from its header alone (no pixels decoded)."""
    path = Path(path)
    return read_with(path, lambda tif: stack_info_of(path, tif), _multifile=False)


def read_stack(path) -> tuple[np.ndarray, StackInfo]:
    """Decode the whole first series of ``path``: (array of StackInfo.shape, native byte order; info)."""
    path = Path(path)
    info, array = read_with(path, lambda tif: (stack_info_of(path, tif), tif.series[0].asarray(maxworkers=1)),
                            _multifile=False)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array.reshape(info.shape)), info


def read_planes(path, indices) -> list[np.ndarray]:
    """Planes ``indices`` of ``path``'s first series, decoded one by one (a batch of a long stack)."""
    path = Path(path)

    def decode(tif) -> list[np.ndarray]:
        info = stack_info_of(path, tif)
        pages = tif.series[0].pages
        planes = []
        for index in indices:
            plane = pages[index].asarray(maxworkers=1) if len(pages) == info.planes else \
                tif.series[0].asarray(maxworkers=1).reshape(-1, *info.plane_shape)[index]
            planes.append(np.ascontiguousarray(plane.astype(plane.dtype.newbyteorder("="), copy=False)))
        return planes

    return read_with(path, decode, _multifile=False)


def _ome_with_type(ome_xml: str, dtype: np.dtype) -> str:
    """The OME-XML with its Pixels Type set to ``dtype`` (SignificantBits dropped when it changes)."""
    name = OME_TYPES.get(np.dtype(dtype).name)
    if name is None:
        return ome_xml

    def retype(match):
        tag = match.group(0)
        if re.search(rf'\bType="{name}"', tag):
            return tag
        tag = re.sub(r'\sSignificantBits="\d+"', "", tag)
        return re.sub(r'\bType="[^"]*"', f'Type="{name}"', tag)

    return re.sub(r"<(?:\w+:)?Pixels\b[^>]*>", retype, ome_xml, count=0)


def write_stack(path, array: np.ndarray, like: StackInfo, compression="same") -> None:
    """Write ``array`` (shape ``like.shape``) as one TIFF with ``like``'s axes and metadata, atomically."""
    if not isinstance(array, np.ndarray):
        raise InvalidType(f"array: expected a NumPy array, got {type(array).__name__}")
    if tuple(array.shape) != tuple(like.shape):
        raise InvalidValue(f"array: shape {tuple(array.shape)} differs from the stack's {tuple(like.shape)}")
    plane = like.plane
    codec = resolve_compression(compression, plane)
    predictor = bool(codec is not None and plane.predictor > 1 and array.dtype.kind in "iuf")
    options = dict(compression=codec, predictor=predictor or None, tile=tile_like(plane), software=SOFTWARE, maxworkers=1)
    if plane.resolution_rational is not None:
        options.update(resolution=plane.resolution_rational,
                       resolutionunit=plane.resolution_unit if plane.resolution_unit is not None else 2)
    if like.kind == "imagej":
        data = array if array.dtype.name in IMAGEJ_DTYPES else array.astype(np.float32)
        metadata = {key: value for key, value in (like.imagej_metadata or {}).items()
                    if key not in ("ImageJ", "images", "channels", "slices", "frames", "hyperstack", "min", "max", "Ranges")}
        metadata["axes"] = like.axes
        options.update(imagej=True, metadata=metadata)
    elif like.kind == "ome":
        data = array.reshape(-1, *like.plane_shape)
        options.update(description=_ome_with_type(like.ome_xml, array.dtype), metadata=None, photometric="minisblack")
    else:
        data = array
        options.update(metadata={"axes": like.axes} if like.kind == "shaped" else None, photometric="minisblack")
    with atomic_path(path) as temporary, create_new(temporary) as handle:
        tifffile.imwrite(handle, data, **options)
