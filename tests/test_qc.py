"""QC metrics against plain NumPy/SciPy re-computations; the PNG encoder against Pillow (figures: test_qc_report.py)."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from scipy.signal import convolve2d

from gpuillum.qc.metrics import compare_to_truth, correction_report, flatfield_cv
from gpuillum.qc.png import COLORMAP, apply_colormap, encode_png, to_display, write_png
from gpuillum.demo.synthetic import SyntheticModel


# ---------------------------------------------------------------- reference implementations


def reference_flatfield(images, mask=None):
    """data/README.md section 2, written out the long way."""
    h, w = images[0].shape[0] // 4, images[0].shape[1] // 4
    binned = np.zeros((len(images), h, w))
    for n, image in enumerate(images):
        for i in range(h):
            for j in range(w):
                binned[n, i, j] = image[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].astype(np.float64).mean()
    dark = min(np.percentile(image if mask is None else image[mask], 0.1) for image in images)
    median = np.median(binned, axis=0) - dark
    valid = np.ones((h, w), bool)
    if mask is not None:
        valid = np.array([[mask[4 * i : 4 * i + 4, 4 * j : 4 * j + 4].all() for j in range(w)] for i in range(h)])
    sigma = min(h, w) / 16
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    kernel1 = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = np.outer(kernel1, kernel1) / kernel1.sum() ** 2
    smooth = convolve2d(np.where(valid, median, 0), kernel, mode="same") / convolve2d(valid * 1.0, kernel, mode="same")
    field = smooth / smooth[valid].mean()
    return field, valid, dark


@pytest.fixture(scope="module")
def shaded_set():
    """Eight 160x200 images: cells-free noisy background under a known smooth shading."""
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:160, 0:200]
    shading = 1.0 - 0.35 * (((y - 60) / 160) ** 2 + ((x - 120) / 200) ** 2) * 2
    images = [
        (100 + shading * rng.uniform(800, 1200) + rng.normal(0, 20, shading.shape)).astype(np.uint16)
        for _ in range(8)
    ]
    return images, shading


# ---------------------------------------------------------------- metrics


def test_flatfield_cv_matches_reference(shaded_set):
    images, _ = shaded_set
    result = flatfield_cv(images, return_field=True)
    field, _, dark = reference_flatfield(images)
    assert result["dark_offset"] == pytest.approx(dark)
    np.testing.assert_allclose(result["field"], field, rtol=1e-9, atol=1e-12)
    assert result["cv"] == pytest.approx(field.std() / field.mean(), rel=1e-9)
    assert result["max_min"] == pytest.approx(field.max() / field.min(), rel=1e-9)
    # 40x50 field: centre box 8x10 rows 16:24, cols 20:30; corner boxes 4x5.
    centre = field[16:24, 20:30].mean()
    corners = np.concatenate([field[:4, :5], field[:4, -5:], field[-4:, :5], field[-4:, -5:]], axis=None).mean()
    assert result["centre_corner"] == pytest.approx(centre / corners, rel=1e-9)
    assert result["n_images"] == 8
    # A 3-D stack gives the same numbers as a list.
    assert flatfield_cv(np.stack(images))["cv"] == pytest.approx(result["cv"], rel=1e-12)


def test_flatfield_cv_with_mask_matches_reference(shaded_set):
    images, _ = shaded_set
    mask = np.ones(images[0].shape, bool)
    mask[:, :37] = False  # a field stop on the left; 37 is not a multiple of 4
    mask[150:, 190:] = False
    result = flatfield_cv(images, mask, return_field=True)
    field, valid, dark = reference_flatfield(images, mask)
    assert result["dark_offset"] == pytest.approx(dark)
    assert np.array_equal(np.isfinite(result["field"]), valid)
    np.testing.assert_allclose(result["field"][valid], field[valid], rtol=1e-9)
    assert result["cv"] == pytest.approx(field[valid].std() / field[valid].mean(), rel=1e-9)


def test_flatfield_cv_measures_the_true_flat_and_falls_after_perfect_correction():
    # 16 fields of 192^2: enough that the per-pixel median sees background almost everywhere.
    model = SyntheticModel(rows="B", cols=(1, 2, 3, 4), sites=4, channels=("Actin",), shape=(192, 192), seed=0)
    flat, dark = model.flat("Actin"), model.dark("Actin")
    raw = [model.site_images(w, s)["Actin"] for w in model.wells for s in range(1, 5)]
    corrected = [((image - dark) / flat).astype(np.float32) for image in raw]
    report = correction_report(raw, corrected, dark_before=float(dark.mean()), dark_after=0.0)
    truth = flatfield_cv([dark + flat * 1000.0], dark=float(dark.mean()))  # the noise-free flat, same recipe
    assert report["cv_before"] == pytest.approx(truth["cv"], rel=0.12)
    assert report["before"]["centre_corner"] == pytest.approx(truth["centre_corner"], rel=0.05)
    assert report["cv_after"] < 0.35 * report["cv_before"]  # what is left: cells the median did not reject
    assert report["cv_improvement"] == pytest.approx(report["cv_before"] / report["cv_after"])
    assert report["before"]["dark_offset"] == float(dark.mean()) and report["after"]["dark_offset"] == 0.0
    # The catalogue's automatic offset also removes most of the (never dark) background: bigger CV.
    assert flatfield_cv(raw)["cv"] > report["cv_before"]


def test_compare_to_truth_matches_numpy(rng):
    truth = (0.7 + 0.6 * rng.random((40, 50))).astype(np.float32)
    recovered = truth * (1 + 0.05 * rng.standard_normal(truth.shape)) * 3.0  # any overall scale
    result = compare_to_truth(recovered, truth)
    t = truth.astype(np.float64)
    r, t = recovered / recovered.mean(), t / t.mean()
    rel = r / t - 1
    assert result["pearson_r"] == pytest.approx(np.corrcoef(r.ravel(), t.ravel())[0, 1], rel=1e-9)
    assert result["max_rel_error"] == pytest.approx(np.abs(rel).max(), rel=1e-9)
    assert result["mean_rel_error"] == pytest.approx(np.abs(rel).mean(), rel=1e-9)
    assert result["rms_rel_error"] == pytest.approx(np.sqrt((rel**2).mean()), rel=1e-9)

    bordered = compare_to_truth(recovered, truth, border=5)
    inner = compare_to_truth(recovered[5:-5, 5:-5], truth[5:-5, 5:-5])
    assert bordered == pytest.approx(inner)
    assert compare_to_truth(truth * 2.5, truth)["max_rel_error"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: compare_to_truth(np.ones((4, 5)), np.ones((5, 4))), "recovered: shape"),
        (lambda: compare_to_truth(np.ones((8, 8)), np.ones((8, 8)), border=4), "border"),
        (lambda: compare_to_truth(np.ones((8, 8)), np.zeros((8, 8))), "truth"),
        (lambda: flatfield_cv([]), "images"),
        (lambda: flatfield_cv([np.ones((16, 16)), np.ones((16, 20))]), "image 1"),
        (lambda: flatfield_cv([np.ones((16, 16))], np.zeros((16, 16), bool)), "mask"),
        (lambda: flatfield_cv([np.ones((16, 16))], dark="min"), "dark"),
    ],
)
def test_metric_errors_are_one_line(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


@pytest.mark.gpu
def test_metrics_cupy_matches_numpy(shaded_set, cupy, on_device):
    images, shading = shaded_set
    on_cpu = flatfield_cv(images)
    with on_device():
        on_gpu = flatfield_cv([cupy.asarray(image) for image in images])
    for key in ("cv", "centre_corner", "max_min", "dark_offset"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], rel=1e-6)
    truth = shading.astype(np.float32)
    recovered = truth * 1.01 + 0.01
    with on_device():
        on_gpu = compare_to_truth(cupy.asarray(recovered), truth)  # truth is uploaded, once
        display = to_display(cupy.asarray(images[0]))
    assert on_gpu == pytest.approx(compare_to_truth(recovered, truth))
    assert isinstance(display, cupy.ndarray)
    assert np.array_equal(display.get(), to_display(images[0]))


# ---------------------------------------------------------------- PNG


def _chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        chunks.append((kind, body, crc))
        position += 12 + length
    return chunks


@pytest.mark.parametrize(
    "shape, dtype, mode",
    [((7, 5), np.uint8, "L"), ((1, 1), np.uint8, "L"), ((6, 9), np.uint16, "I;16"), ((4, 3, 3), np.uint8, "RGB")],
)
def test_png_round_trip_through_pillow(tmp_path, rng, shape, dtype, mode):
    top = np.iinfo(dtype).max
    array = rng.integers(0, top + 1, size=shape).astype(dtype)
    array.flat[0], array.flat[-1] = 0, top  # the extremes survive
    path = tmp_path / "a.png"
    write_png(path, array)
    with Image.open(path) as decoded:
        assert decoded.mode == mode
        assert np.array_equal(np.array(decoded), array)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary left behind


def test_png_chunks_and_crcs_are_valid(rng):
    array = rng.integers(0, 65536, size=(5, 11)).astype(np.uint16)
    chunks = _chunks(encode_png(array))
    assert [kind for kind, _, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    for kind, body, crc in chunks:
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height, depth, colour, compression, filtering, interlace) == (11, 5, 16, 0, 0, 0, 0)
    assert len(zlib.decompress(chunks[1][1])) == 5 * (1 + 11 * 2)


@pytest.mark.parametrize("array", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), np.uint16)])
def test_png_refuses_unsupported_arrays(tmp_path, array):
    with pytest.raises(ValueError, match="array: expected"):
        write_png(tmp_path / "bad.png", array)
    assert not list(tmp_path.iterdir())


def test_to_display_matches_percentile_stretch(rng):
    image = rng.normal(1000, 100, size=(50, 60)).astype(np.float32)
    lo, hi = np.percentile(image, [2, 98])
    expected = np.rint(np.clip((image.astype(np.float64) - lo) / (hi - lo), 0, 1) * 255)
    display = to_display(image, 2, 98)
    assert display.dtype == np.uint8
    assert np.abs(display.astype(int) - expected).max() <= 1  # float32 rounding at .5 boundaries
    assert np.array_equal(to_display(image, limits=(0, 2000)), np.rint(np.clip(image / 2000, 0, 1) * 255).astype(np.uint8))
    flat = np.full((3, 3), 7.0, np.float32)
    flat[1, 1] = np.nan
    assert to_display(flat).max() == 0  # constant image, NaN pixel: no division by zero


def test_colormap_is_ordered_in_lightness():
    table = COLORMAP.astype(np.float64) / 255
    linear = np.where(table <= 0.04045, table / 12.92, ((table + 0.055) / 1.055) ** 2.4)
    luminance = linear @ np.array([0.2126, 0.7152, 0.0722])
    assert np.all(luminance[4:] > luminance[:-4])  # steadily lighter from dark violet to yellow
    assert np.all(np.diff(luminance) > -1e-3)  # uint8 rounding only
    rgb = apply_colormap(np.array([[0.0, 1.0, np.nan]]))
    assert rgb.shape == (1, 3, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0x44, 0x01, 0x54) and tuple(rgb[0, 1]) == (0xFD, 0xE7, 0x25)
    assert tuple(rgb[0, 2]) == (128, 128, 128)
