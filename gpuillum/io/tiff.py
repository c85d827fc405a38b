"""Reading and writing single-plane grey TIFF images with their metadata (tifffile + imagecodecs).

Corrected images must look like the acquisition's own files to downstream tools, so
:func:`write_tiff` copies from the source image (``like``) what describes the pixels: compression
and predictor, resolution and its unit, photometric interpretation (and a palette's colour map),
and the ImageDescription (OME-XML, ImageJ or free text). Every write is atomic.

Decoding runs in tifffile/imagecodecs C code that releases the GIL, so the engine can decode many
files at once in threads. Each call decodes with one thread (``maxworkers=1``): the parallelism
belongs to the caller, across files.

OME-XML is kept as text but not interpreted (``is_ome=False``): in multi-file OME datasets each
file's own first page is the image, never a stack assembled from its sibling files.

A file holding several full-resolution pages (a stack or time series) is refused rather than read
as its first page: silently dropping images would skew a plate's statistics. Reduced-resolution
preview pages are ignored.

Only regular files are read (io.safe_open.open_regular): a FIFO named ``*.tif`` would block the
read for ever. Anything that keeps a file from giving one 2-D grey image raises
:class:`ImageReadError`, a ValueError whose one-line message is ``"<path>: <reason>"``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import tifffile

from .atomic import atomic_path
from .safe_open import NotRegularFile, create_new, open_regular
from ..errors import InvalidType, InvalidValue

SOFTWARE = "gpuillum"

# Codecs write_tiff can produce; "deflate" is an alias of "zlib" (TIFF tag 8, Adobe deflate).
WRITE_COMPRESSIONS = ("zlib", "lzw", "zstd", "lzma", "packbits")
_COMPRESSION_ALIASES = {"deflate": "zlib", "adobe_deflate": "zlib", "none": None}
# what write_tiff's ``compression`` accepts ("same": as the ``like`` file; "none": uncompressed)
COMPRESSION_CHOICES = ("same", "none") + WRITE_COMPRESSIONS + ("deflate",)
# TIFF compression tags and the names TiffInfo reports for them (others: tifffile's name, lower case).
_COMPRESSION_NAMES = {1: None, 5: "lzw", 8: "zlib", 32946: "zlib", 32773: "packbits", 50000: "zstd", 34925: "lzma"}


class ImageReadError(InvalidValue):
    """A file that cannot be read as one 2-D grey image; ``str(error)`` is ``"<path>: <reason>"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) through pickling, e.g. from a Dask worker
        return (type(self), (self.path, self.reason))


@dataclasses.dataclass(frozen=True)
class TiffInfo:
    """What the header of a TIFF says about its first image (series 0).

    ``dtype`` is a NumPy dtype name ("uint16"); ``compression`` a codec name ("zlib", "lzw",
    "zstd", "packbits", "jpeg", ...) or None for uncompressed data; ``predictor`` the TIFF code
    (1 none, 2 horizontal, 3 floating point); ``resolution`` the (x, y) pixels per unit as floats
    (``resolution_rational`` keeps the exact ((num, den), (num, den)) from the file) or None;
    ``resolution_unit`` the TIFF code (1 none, 2 inch, 3 cm, ...); ``photometric`` a lower-case
    name ("minisblack", "miniswhite", "palette", "rgb"); ``ome_xml`` the OME-XML ImageDescription
    or None; ``description`` any other ImageDescription or None; ``colormap`` a palette image's
    colour map as nested tuples (3 rows of 2**bits values) or None; ``tile`` the (length, width)
    of a tiled image's tiles, None for strips.
    """

    shape: tuple
    dtype: str
    compression: str | None
    predictor: int
    resolution: tuple | None
    resolution_unit: int | None
    photometric: str | None
    ome_xml: str | None
    description: str | None
    software: str | None
    n_pages: int
    bits_per_sample: int
    resolution_rational: tuple | None = None
    colormap: tuple | None = dataclasses.field(default=None, repr=False)
    tile: tuple | None = None


def _compression_name(tag: int) -> str | None:
    if tag in _COMPRESSION_NAMES:
        return _COMPRESSION_NAMES[tag]
    try:
        return tifffile.COMPRESSION(tag).name.lower()
    except ValueError:
        return str(tag)


def _tag_value(page, name):
    tag = page.tags.get(name)
    return None if tag is None else tag.value


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value.rstrip("\x00") or None


def _is_ome_xml(text: str | None) -> bool:
    return text is not None and text.lstrip().startswith("<") and "<OME" in text[:4096]


def _check_data_present(path: Path, page) -> None:
    """Raise ImageReadError when the image data runs past the end of the file (a truncated copy)."""
    size = path.stat().st_size
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if ends and max(ends) > size:
        raise ImageReadError(path, f"truncated: image data ends at byte {max(ends)} but the file has {size} bytes")


def _is_preview(page) -> bool:
    """A reduced-resolution copy of another page (a thumbnail): TIFF NewSubfileType bit 0."""
    return bool(int(getattr(page, "subfiletype", 0)) & 1)


def _count_full_resolution_pages(tif: tifffile.TiffFile) -> int:
    """How many pages hold an image of their own; reduced-resolution previews (thumbnails) do not count."""
    return sum(1 for page in tif.pages if not _is_preview(page))


def _image_page(tif: tifffile.TiffFile):
    """The page holding the image: the first one, or the first full-resolution one after a thumbnail."""
    return next((page for page in tif.pages if not _is_preview(page)), tif.pages.first)


def _decode(tif: tifffile.TiffFile) -> np.ndarray:
    """The image's pixels: series 0, or the image page itself when a thumbnail comes first."""
    page = _image_page(tif)
    if page is tif.pages.first:
        return tif.series[0].asarray(maxworkers=1)
    return page.asarray(maxworkers=1)


def _info(path: Path, tif: tifffile.TiffFile) -> TiffInfo:
    """Build TiffInfo from an open file and check it is one 2-D grey image."""
    if not tif.pages or not tif.series:
        raise ImageReadError(path, "contains no image")
    page = _image_page(tif)
    series = tif.series[0]
    shape = tuple(int(n) for n in (series.shape if page is tif.pages.first else page.shape))
    dtype = series.dtype if page is tif.pages.first else page.dtype
    photometric = tifffile.PHOTOMETRIC(page.photometric).name.lower() if page.photometric is not None else None
    if page.samplesperpixel > 1:
        raise ImageReadError(
            path, f"multi-sample image ({page.samplesperpixel} samples per pixel, {photometric}, shape {shape}); expected one grey channel"
        )
    if len(shape) != 2:
        raise ImageReadError(path, f"{len(shape)}-D image of shape {shape}; expected one 2-D grey plane")
    images = _count_full_resolution_pages(tif)
    if images > 1:
        raise ImageReadError(path, f"holds {images} images (a stack, time series or multi-page file); "
                             "expected one 2-D grey plane per file: split it into one file per image")
    return info_of_page(path, tif, page, shape, dtype)


def info_of_page(path: Path, tif: tifffile.TiffFile, page, shape, dtype) -> TiffInfo:
    """TiffInfo of one page: the metadata a corrected copy of it keeps (truncated data refused)."""
    _check_data_present(path, page)
    photometric = tifffile.PHOTOMETRIC(page.photometric).name.lower() if page.photometric is not None else None
    x_resolution = _tag_value(page, "XResolution")
    y_resolution = _tag_value(page, "YResolution")
    rational = None
    resolution = None
    if x_resolution is not None and y_resolution is not None:
        rational = (tuple(int(v) for v in x_resolution), tuple(int(v) for v in y_resolution))
        resolution = tuple(num / den if den else 0.0 for num, den in rational)
    unit = _tag_value(page, "ResolutionUnit")
    text = _text(page.description) if page.description else None
    colormap = page.colormap
    return TiffInfo(
        shape=tuple(int(n) for n in shape),
        dtype=np.dtype(dtype).name,
        compression=_compression_name(int(page.compression)),
        predictor=int(page.predictor),
        resolution=resolution,
        resolution_unit=None if unit is None else int(unit),
        photometric=photometric,
        ome_xml=text if _is_ome_xml(text) else None,
        description=None if _is_ome_xml(text) else text,
        software=_text(_tag_value(page, "Software")),
        n_pages=len(tif.pages),
        bits_per_sample=int(page.bitspersample),
        resolution_rational=rational,
        colormap=None if colormap is None else tuple(tuple(int(v) for v in row) for row in np.atleast_2d(colormap)),
        tile=(int(page.tilelength), int(page.tilewidth)) if page.is_tiled else None,
    )


def read_error(path: Path, error: BaseException) -> ImageReadError:
    """Translate what opening or decoding raised into a one-line ImageReadError."""
    if isinstance(error, ImageReadError):
        return error
    if isinstance(error, FileNotFoundError):
        return ImageReadError(path, "no such file")
    if isinstance(error, IsADirectoryError) or (isinstance(error, NotRegularFile) and error.kind == "a directory"):
        return ImageReadError(path, "is a directory, not a TIFF file")
    if isinstance(error, NotRegularFile):  # a FIFO would block the read for ever
        return ImageReadError(path, f"{error.kind}, not a regular file")
    if isinstance(error, PermissionError):
        return ImageReadError(path, "permission denied")
    if path.is_file() and path.stat().st_size == 0:
        return ImageReadError(path, "empty file")
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    if "not a TIFF file" in reason:
        return ImageReadError(path, "not a TIFF file")
    return ImageReadError(path, f"corrupt or unreadable TIFF ({type(error).__name__}: {reason})")


def read_with(path: Path, reader, **options):
    """``reader(tif)`` on ``path`` opened as a regular file (no links or FIFOs followed) with
    ``tifffile.TiffFile(handle, **options)``: its result, or ImageReadError naming the file for
    whatever tifffile or the reader raise (MemoryError passes; so does KeyboardInterrupt)."""
    try:
        with open_regular(path) as handle, tifffile.TiffFile(handle, **options) as tif:
            return reader(tif)
    except MemoryError:
        raise
    except Exception as error:  # tifffile raises many types for bad files
        raise read_error(path, error) from error


def read_tiff_info(path) -> TiffInfo:
    """Read only the header of ``path`` (no pixel decoding): shape, dtype, compression, metadata.

    Raises ImageReadError for the same header-level problems as :func:`read_tiff` (missing, not a
    TIFF, corrupt structure, truncated data, not a 2-D grey image).
    """
    path = Path(path)
    return read_with(path, lambda tif: _info(path, tif), is_ome=False)


def read_tiff(path) -> tuple[np.ndarray, TiffInfo]:
    """Decode the first image (series 0) of ``path`` as a 2-D array in native byte order.

    Returns ``(array, info)``. A multi-sample (RGB) or multi-plane (stack) image, a missing,
    truncated or corrupt file raises ImageReadError naming the file.
    """
    path = Path(path)
    info, array = read_with(path, lambda tif: (_info(path, tif), _decode(tif)), is_ome=False)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array), info


def resolve_compression(compression, like: TiffInfo | None) -> str | None:
    if compression == "same":
        if like is None or like.compression is None:
            return None
        # A lossy or exotic source codec is not reproduced: corrected pixels stay lossless (zlib).
        return like.compression if like.compression in WRITE_COMPRESSIONS else "zlib"
    if compression is None:
        return None
    name = str(compression).lower()
    name = _COMPRESSION_ALIASES.get(name, name)
    if name is not None and name not in WRITE_COMPRESSIONS:
        raise InvalidValue(f"compression: expected one of {', '.join(COMPRESSION_CHOICES)} or None, got {compression!r}")
    return name


def _description(array: np.ndarray, like: TiffInfo | None) -> str | None:
    """The ImageDescription to write: the source's OME-XML or text, tifffile's shape JSON updated."""
    if like is None:
        return None
    if like.ome_xml is not None:
        return like.ome_xml
    text = like.description
    if text is not None and text.startswith('{"shape":'):
        try:
            shaped = json.loads(text)
        except ValueError:
            return text
        if isinstance(shaped, dict):
            shaped["shape"] = list(array.shape)
            return json.dumps(shaped)
    return text


def tile_like(like: TiffInfo | None) -> tuple | None:
    """``like``'s tile size when TIFF allows writing it (multiples of 16), else None (strips)."""
    if like is None or like.tile is None or any(n % 16 for n in like.tile):
        return None
    return like.tile


def write_tiff(path, array: np.ndarray, like: TiffInfo | str | os.PathLike | None = None, compression="same") -> None:
    """Write a 2-D NumPy array to ``path`` as a TIFF, atomically, with ``like``'s metadata.

    ``like`` is the source image's TiffInfo (or a path to read it from). ``compression="same"``
    reuses ``like``'s codec and predictor (zlib/deflate, lzw, zstd, lzma, packbits; another codec
    such as JPEG becomes zlib; no ``like`` means uncompressed); or name one of "zlib", "deflate",
    "lzw", "zstd", "lzma", "packbits", "none"/None. Kept from ``like``: resolution and unit, photometric
    (minisblack, miniswhite; palette with its colour map when the bit depth matches), tiling and
    tile size, the OME-XML or other ImageDescription. The Software tag says "gpuillum".
    """
    if not isinstance(array, np.ndarray):
        raise InvalidType(f"array: expected a NumPy array, got {type(array).__name__} (copy CuPy arrays to the host first)")
    if array.ndim != 2 or array.size == 0:
        raise InvalidValue(f"array: expected a non-empty 2-D array, got shape {tuple(array.shape)}")
    if like is not None and not isinstance(like, TiffInfo):
        like = read_tiff_info(like)
    codec = resolve_compression(compression, like)
    predictor = bool(codec is not None and like is not None and like.predictor > 1 and array.dtype.kind in "iuf")
    photometric, colormap = "minisblack", None
    if like is not None and like.photometric == "miniswhite":
        photometric = "miniswhite"
    elif like is not None and like.photometric == "palette" and like.colormap is not None:
        if array.dtype.kind == "u" and len(like.colormap[0]) == 2 ** (8 * array.dtype.itemsize):
            photometric, colormap = "palette", np.asarray(like.colormap, dtype=np.uint16)
    resolution = unit = None
    if like is not None and like.resolution_rational is not None:
        resolution = like.resolution_rational
        unit = like.resolution_unit if like.resolution_unit is not None else 2  # TIFF default: inch
    with atomic_path(path) as temporary, create_new(temporary) as handle:
        tifffile.imwrite(
            handle,
            array,
            photometric=photometric,
            colormap=colormap,
            compression=codec,
            predictor=predictor or None,
            tile=tile_like(like),
            resolution=resolution,
            resolutionunit=unit,
            description=_description(array, like),
            software=SOFTWARE,
            metadata=None,
            ome=False,
            imagej=False,
            maxworkers=1,
        )
