"""TIFF reading and writing: pixels and metadata round-trip, bad files give one-line ImageReadErrors."""
from __future__ import annotations

import dataclasses
import json
from fractions import Fraction
import pickle
import threading

import numpy as np
import pytest
import tifffile

from gpuillum.io import tiff
from gpuillum.io.tiff import ImageReadError, TiffInfo, read_tiff, read_tiff_info, write_tiff

DTYPES = [np.uint8, np.uint16, np.float32]
COMPRESSIONS = [None, "zlib", "lzw", "zstd", "lzma", "packbits"]


def _image(rng, dtype, shape=(48, 64)):
    if np.dtype(dtype).kind == "f":
        return (rng.random(shape) * 1000).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True, dtype=dtype)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _assert_single_line(error: ImageReadError, path):
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_round_trip_each_dtype_and_compression(tmp_path, rng, dtype, compression):
    image = _image(rng, dtype)
    path = tmp_path / "out.tif"
    write_tiff(path, image, compression=compression)
    # independent reader: tifffile itself
    np.testing.assert_array_equal(tifffile.imread(path), image)
    back, info = read_tiff(path)
    assert back.dtype == image.dtype and back.shape == image.shape
    np.testing.assert_array_equal(back, image)
    assert info.compression == compression
    assert info.shape == image.shape and info.dtype == np.dtype(dtype).name
    assert info.software == "gpuillum"
    assert info.bits_per_sample == np.dtype(dtype).itemsize * 8
    assert info.n_pages == 1
    assert _files(tmp_path) == ["out.tif"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd", "lzma"])
def test_same_compression_keeps_codec_predictor_and_resolution(tmp_path, rng, dtype, compression):
    image = _image(rng, dtype)
    source = tmp_path / "source.tif"
    resolution = ((3100775, 1000), (3100776, 1000))
    tifffile.imwrite(source, image, compression=compression, predictor=True, resolution=resolution, resolutionunit="CENTIMETER")
    _, like = read_tiff(source)
    assert like.compression == compression and like.predictor == (3 if image.dtype.kind == "f" else 2)
    write_tiff(tmp_path / "out.tif", image, like=like)
    back, info = read_tiff(tmp_path / "out.tif")
    np.testing.assert_array_equal(back, image)
    assert (info.compression, info.predictor) == (like.compression, like.predictor)
    assert info.resolution_rational == like.resolution_rational
    assert [Fraction(*pair) for pair in info.resolution_rational] == [Fraction(*pair) for pair in resolution]
    assert info.resolution == pytest.approx((3100.775, 3100.776))
    assert info.resolution_unit == int(tifffile.RESUNIT.CENTIMETER)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_tiles_are_kept(tmp_path, rng, compression):
    image = rng.integers(0, 4096, (100, 75), dtype=np.uint16)  # tiles hang over both edges
    tifffile.imwrite(tmp_path / "tiled.tif", image, tile=(32, 48), compression=compression)
    tifffile.imwrite(tmp_path / "strips.tif", image, compression=compression)
    like = read_tiff_info(tmp_path / "tiled.tif")
    assert like.tile == (32, 48) and read_tiff_info(tmp_path / "strips.tif").tile is None
    write_tiff(tmp_path / "out.tif", image, like=like)
    write_tiff(tmp_path / "out-strips.tif", image, like=tmp_path / "strips.tif")
    back, info = read_tiff(tmp_path / "out.tif")
    np.testing.assert_array_equal(back, image)
    assert (info.tile, info.compression) == ((32, 48), compression)
    assert read_tiff_info(tmp_path / "out-strips.tif").tile is None
    # tiles TIFF does not allow (not multiples of 16) are written as strips rather than refused
    write_tiff(tmp_path / "odd.tif", image, like=dataclasses.replace(like, tile=(30, 40)))
    back, info = read_tiff(tmp_path / "odd.tif")
    assert info.tile is None
    np.testing.assert_array_equal(back, image)


def test_predictor_follows_the_written_dtype(tmp_path, rng):
    source = tmp_path / "source.tif"
    tifffile.imwrite(source, _image(rng, np.uint16), compression="zlib", predictor=True)
    like = read_tiff_info(source)
    write_tiff(tmp_path / "float.tif", _image(rng, np.float32), like=like)
    assert read_tiff_info(tmp_path / "float.tif").predictor == 3


def test_explicit_compression_overrides_like(tmp_path, rng):
    image = _image(rng, np.uint16)
    tifffile.imwrite(tmp_path / "source.tif", image, compression="lzw")
    like = read_tiff_info(tmp_path / "source.tif")
    write_tiff(tmp_path / "a.tif", image, like=like, compression="deflate")
    write_tiff(tmp_path / "b.tif", image, like=like, compression="none")
    assert read_tiff_info(tmp_path / "a.tif").compression == "zlib"
    assert read_tiff_info(tmp_path / "b.tif").compression is None


def test_lossy_source_codec_becomes_lossless(tmp_path, rng):
    image = _image(rng, np.uint8)
    tifffile.imwrite(tmp_path / "source.tif", image, compression="jpeg")
    like = read_tiff_info(tmp_path / "source.tif")
    assert like.compression == "jpeg"
    write_tiff(tmp_path / "out.tif", image, like=like)
    back, info = read_tiff(tmp_path / "out.tif")
    assert info.compression == "zlib"
    np.testing.assert_array_equal(back, image)


def test_ome_xml_is_kept_as_first_page_description(tmp_path, rng):
    image = _image(rng, np.uint16)
    source = tmp_path / "source.ome.tif"
    tifffile.imwrite(source, image, ome=True, metadata={"PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "Channel": {"Name": "DNA"}})
    like = read_tiff_info(source)
    assert like.ome_xml is not None and "PhysicalSizeX" in like.ome_xml
    assert like.description is None
    write_tiff(tmp_path / "out.ome.tif", image, like=like)
    with tifffile.TiffFile(tmp_path / "out.ome.tif") as tif:
        assert tif.is_ome
        assert tif.pages.first.description == like.ome_xml
        assert tif.ome_metadata == like.ome_xml
        np.testing.assert_array_equal(tif.series[0].asarray(), image)


def test_imagej_description_and_miniswhite_are_kept(tmp_path, rng):
    image = _image(rng, np.uint8)
    source = tmp_path / "source.tif"
    tifffile.imwrite(source, image, photometric="miniswhite", description="ImageJ=1.53c\nunit=micron", metadata=None)
    like = read_tiff_info(source)
    write_tiff(tmp_path / "out.tif", image, like=like)
    info = read_tiff_info(tmp_path / "out.tif")
    assert info.description == "ImageJ=1.53c\nunit=micron"
    assert info.photometric == "miniswhite"


def test_tifffile_shape_description_follows_the_written_shape(tmp_path, rng):
    tifffile.imwrite(tmp_path / "source.tif", _image(rng, np.uint16, (8, 10)))
    like = read_tiff_info(tmp_path / "source.tif")
    assert json.loads(like.description) == {"shape": [8, 10]}
    write_tiff(tmp_path / "out.tif", _image(rng, np.uint16, (6, 4)), like=like)
    assert json.loads(read_tiff_info(tmp_path / "out.tif").description) == {"shape": [6, 4]}


def test_palette_kept_for_matching_bit_depth_only(tmp_path, rng):
    image = _image(rng, np.uint8)
    ramp = np.tile(np.arange(256, dtype=np.uint16) * 256, (3, 1))
    tifffile.imwrite(tmp_path / "source.tif", image, photometric="palette", colormap=ramp)
    like = read_tiff_info(tmp_path / "source.tif")
    assert like.photometric == "palette"
    write_tiff(tmp_path / "same.tif", image, like=like)
    info = read_tiff_info(tmp_path / "same.tif")
    assert info.photometric == "palette"
    np.testing.assert_array_equal(np.asarray(info.colormap), ramp)
    write_tiff(tmp_path / "float.tif", image.astype(np.float32), like=like)
    assert read_tiff_info(tmp_path / "float.tif").photometric == "minisblack"


def test_like_may_be_a_path(tmp_path, rng):
    image = _image(rng, np.uint16)
    tifffile.imwrite(tmp_path / "source.tif", image, compression="zstd")
    write_tiff(tmp_path / "out.tif", image, like=tmp_path / "source.tif")
    assert read_tiff_info(tmp_path / "out.tif").compression == "zstd"


def test_big_endian_file_reads_in_native_order(tmp_path, rng):
    image = _image(rng, np.uint16)
    tifffile.imwrite(tmp_path / "be.tif", image, byteorder=">")
    back, info = read_tiff(tmp_path / "be.tif")
    assert back.dtype.isnative and info.dtype == "uint16"
    np.testing.assert_array_equal(back, image)


def test_info_matches_read(tmp_path, rng):
    tifffile.imwrite(tmp_path / "a.tif", _image(rng, np.uint16), compression="zlib", resolution=(2.0, 4.0), resolutionunit="INCH")
    _, info = read_tiff(tmp_path / "a.tif")
    assert read_tiff_info(tmp_path / "a.tif") == info
    assert info.resolution == (2.0, 4.0) and info.resolution_unit == 2
    assert isinstance(info, TiffInfo)


def test_reads_in_threads_agree(tmp_path, rng):
    images = [_image(rng, np.uint16) for _ in range(6)]
    for index, image in enumerate(images):
        write_tiff(tmp_path / f"{index}.tif", image, compression="zlib")
    results = [None] * len(images)

    def read(index):
        results[index] = read_tiff(tmp_path / f"{index}.tif")[0]

    threads = [threading.Thread(target=read, args=(index,)) for index in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result, image in zip(results, images):
        np.testing.assert_array_equal(result, image)


# --- bad files ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "missing.tif"
    for reader in (read_tiff, read_tiff_info):
        with pytest.raises(ImageReadError, match="no such file") as caught:
            reader(path)
        _assert_single_line(caught.value, path)


def test_non_tiff_bytes_and_empty_file(tmp_path):
    text = tmp_path / "text.tif"
    text.write_bytes(b"this is not an image at all\n")
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="not a TIFF file") as caught:
        read_tiff(text)
    _assert_single_line(caught.value, text)
    with pytest.raises(ImageReadError, match="empty file"):
        read_tiff_info(empty)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(ImageReadError, match="is a directory"):
        read_tiff(tmp_path)


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("fraction", [0.5, 0.95])
def test_truncated_files(tmp_path, rng, compression, fraction):
    full = tmp_path / "full.tif"
    write_tiff(full, _image(rng, np.uint16, (128, 128)), compression=compression)
    data = full.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    for reader in (read_tiff, read_tiff_info):
        with pytest.raises(ImageReadError, match="truncated") as caught:
            reader(cut)
        _assert_single_line(caught.value, cut)


def test_header_cut_short_is_corrupt(tmp_path, rng):
    full = tmp_path / "full.tif"
    write_tiff(full, _image(rng, np.uint8), compression=None)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:12])
    with pytest.raises(ImageReadError) as caught:
        read_tiff_info(cut)
    _assert_single_line(caught.value, cut)


def test_corrupt_compressed_data(tmp_path, rng):
    path = tmp_path / "bad.tif"
    write_tiff(path, _image(rng, np.uint16, (64, 64)), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[0]
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="corrupt") as caught:
        read_tiff(path)
    _assert_single_line(caught.value, path)


def test_rgb_and_stack_are_refused(tmp_path, rng):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), photometric="rgb")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, rng.integers(0, 255, (3, 16, 16), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(ImageReadError, match="multi-sample image .*3 samples per pixel"):
        read_tiff(rgb)
    with pytest.raises(ImageReadError, match=r"3-D image of shape \(3, 16, 16\)"):
        read_tiff_info(stack)


@pytest.mark.parametrize("second_shape", [(16, 16), (8, 12)])
def test_pages_appended_as_separate_images_are_refused_not_dropped(tmp_path, rng, second_shape):
    # Each appended page is a series of its own, so series 0 alone looks like a valid 2-D image.
    path = tmp_path / "appended.tif"
    tifffile.imwrite(path, rng.integers(0, 255, (16, 16), dtype=np.uint8))
    tifffile.imwrite(path, rng.integers(0, 255, second_shape, dtype=np.uint8), append=True)
    for read in (read_tiff, read_tiff_info):
        with pytest.raises(ImageReadError, match="holds 2 images .*one 2-D grey plane per file") as caught:
            read(path)
        _assert_single_line(caught.value, path)


@pytest.mark.parametrize("preview_first", [False, True], ids=["preview after", "preview first"])
def test_reduced_resolution_preview_page_is_ignored(tmp_path, rng, preview_first):
    path = tmp_path / "with_preview.tif"
    image = rng.integers(0, 65535, (16, 24), dtype=np.uint16)
    preview = image[::4, ::4].astype(np.uint8)
    with tifffile.TiffWriter(path) as tif:
        if preview_first:
            tif.write(preview, subfiletype=1, metadata=None)
        tif.write(image, metadata=None, resolution=(2.5, 2.5))
        if not preview_first:
            tif.write(preview, subfiletype=1, metadata=None)
    read, info = read_tiff(path)
    np.testing.assert_array_equal(read, image)
    assert info.n_pages == 2 and info.shape == (16, 24) and info.dtype == "uint16"
    assert read_tiff_info(path) == info and info.resolution == (2.5, 2.5)


def test_image_read_error_pickles_and_is_a_value_error(tmp_path):
    error = ImageReadError(tmp_path / "x.tif", "no such file")
    clone = pickle.loads(pickle.dumps(error))
    assert isinstance(clone, ValueError)
    assert (clone.path, clone.reason, str(clone)) == (error.path, error.reason, str(error))


# --- bad writes --------------------------------------------------------------------------------


def test_write_rejects_bad_arrays_and_codecs(tmp_path, rng):
    with pytest.raises(ValueError, match="array: expected a non-empty 2-D array"):
        write_tiff(tmp_path / "x.tif", np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(TypeError, match="array: expected a NumPy array"):
        write_tiff(tmp_path / "x.tif", [[1, 2]])
    with pytest.raises(ValueError, match="compression: expected one of"):
        write_tiff(tmp_path / "x.tif", np.zeros((4, 4), np.uint8), compression="gzip9")
    assert _files(tmp_path) == []


def test_interrupted_write_leaves_old_file_and_no_temporary(tmp_path, rng, monkeypatch):
    target = tmp_path / "out.tif"
    old = _image(rng, np.uint16)
    write_tiff(target, old)
    real_imwrite = tifffile.imwrite

    def interrupted(path, data, **kwargs):
        real_imwrite(path, data[: data.shape[0] // 2], **kwargs)  # a partial file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(tiff.tifffile, "imwrite", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_tiff(target, _image(rng, np.uint16))
    assert _files(tmp_path) == ["out.tif"]
    np.testing.assert_array_equal(read_tiff(target)[0], old)


# --- real files ----------------------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize(
    "relpath, dtype, compression",
    [
        ("nf1_cellpainting_plate2/B7_01_1_3_DAPI_001.tif", "uint16", "zlib"),
        ("bbbc016_gfp_f00_24wells/AS_09047_050428030001_O01f00d2.TIF", "uint8", None),
    ],
)
def test_real_files_round_trip_bit_exact_with_metadata(tmp_path, data_set, relpath, dtype, compression):
    source = data_set(relpath)
    image, info = read_tiff(source)
    assert (info.dtype, info.compression) == (dtype, compression)
    np.testing.assert_array_equal(image, tifffile.imread(source))
    out = tmp_path / source.name
    write_tiff(out, image, like=info)
    back, written = read_tiff(out)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)
    for name in ("shape", "dtype", "compression", "predictor", "resolution", "resolution_rational", "resolution_unit",
                 "photometric", "ome_xml", "description", "bits_per_sample", "colormap"):
        assert getattr(written, name) == getattr(info, name), name
    assert written.software == "gpuillum"
