"""The flatfield method through the engine: plates, folders and time-lapse stacks from the CLI and the
API, its model file and CellProfiler parts, the LoadData columns, dark frames, the baseline, and the
darkfield it says it cannot identify. Known truth from gpuillum.methods.flatfield.plates."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import gpuillum as gi
from gpuillum.cli import main
from gpuillum.methods.flatfield.plates import dark_error_counts, flat_error_percent, make_plate
from gpuillum.model import IlluminationModel

SHAPE = (192, 256)  # the estimator is measured at 256^2 and up (below ~128 px the cells are too large for it)
OPTIONS = ["--method", "flatfield", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def plate():
    return make_plate(24, SHAPE, kind="gaussian", dark=100, background=300, seed=5)


def write_folder(folder, images, name="tile_{:02d}.tif"):
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        tifffile.imwrite(folder / name.format(index), image)
    return folder


def test_a_folder_of_tiles_gets_flat_and_dark_and_both_cellprofiler_parts(tmp_path, plate, capsys):
    folder = write_folder(tmp_path / "tiles", plate.images)
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), "--method", "flatfield", "--device", "cpu"]) == 0
    assert "darkfield offset" in capsys.readouterr().err  # the fit's own line, in the log
    model = IlluminationModel.load(out / "illum" / "tiles_Illum1.npz")
    assert model.method == "flatfield" and model.units == "counts" and model.info["darkfield"] == "estimated"
    assert flat_error_percent(model.flatfield, plate.flatfield) < 1.0
    assert dark_error_counts(model.darkfield, plate.darkfield) < 5
    flat, dark = np.load(out / "illum" / "tiles_IllumFlat1.npy"), np.load(out / "illum" / "tiles_IllumDark1.npy")
    np.testing.assert_array_equal(flat, model.flatfield)
    np.testing.assert_array_equal(dark, (model.darkfield / np.float32(65535)).astype(np.float32))
    # CellProfiler's two modules (Subtract the darkfield, then Divide by the flat field) give the model's correction
    image = plate.images[3]
    two_modules = gi.apply(gi.apply(image, dark, "Subtract", units="cellprofiler"), flat, units="cellprofiler")
    corrected = tifffile.imread(out / "corrected" / "tile_03.tif")
    np.testing.assert_array_equal(corrected, model.apply(image))
    assert np.abs(two_modules.astype(np.int64) - corrected).max() <= 1  # one rounding more: after the subtraction
    header = (out / "corrected" / "load_data.csv").read_text().splitlines()[0].split(",")
    assert {"FileName_IllumFlat1", "PathName_IllumFlat1", "FileName_IllumDark1", "PathName_IllumDark1"} <= set(header)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["method_name"] == "flatfield" and manifest["method"].startswith("flatfield: darkfield estimated")
    assert {"illum/tiles_Illum1.npz", "illum/tiles_IllumFlat1.npy", "illum/tiles_IllumDark1.npy"} <= set(manifest["files"])


def test_apply_only_loads_the_model_and_the_api_agrees(tmp_path, plate):
    folder = write_folder(tmp_path / "tiles", plate.images[:20])
    calc = gi.calc_plate(folder, tmp_path / "out", method="flatfield", device="cpu")
    assert list(calc.functions.values()) == [tmp_path / "out" / "illum" / "tiles_Illum1.npz"]
    applied = gi.apply_plate(folder, tmp_path / "out", device="cpu", output_dtype="float32")
    assert len(applied.written) == 20 and applied.method == "existing illumination functions"
    model = gi.IlluminationModel.load(tmp_path / "out" / "illum" / "tiles_Illum1.npz")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / "tile_07.tif"),
                                  model.apply(plate.images[7], output_dtype="float32"))
    direct = gi.fit_flatfield(plate.images[:20])
    np.testing.assert_array_equal(direct.flatfield, model.flatfield)  # the engine's batches merge to the same fit


def test_equally_bright_images_say_the_darkfield_is_not_identifiable(tmp_path):
    flat = make_plate(20, SHAPE, kind="cos4", dark=100, spread=0.0, seed=2)
    folder = write_folder(tmp_path / "same", flat.images)
    result = gi.run(folder, tmp_path / "out", method="flatfield", device="cpu")
    assert any("darkfield not identifiable" in warning for warning in result.warnings)
    model = IlluminationModel.load(tmp_path / "out" / "illum" / "same_Illum1.npz")
    assert model.darkfield is None and model.info["darkfield"] == "not identifiable"
    assert not (tmp_path / "out" / "illum" / "same_IllumDark1.npy").exists()
    assert (tmp_path / "out" / "illum" / "same_IllumFlat1.npy").is_file()


def test_dark_frames_from_the_cli_are_the_darkfield(tmp_path, plate):
    folder = write_folder(tmp_path / "tiles", plate.images[:20])
    dark = np.rint(plate.darkfield).astype(np.uint16)
    tifffile.imwrite(tmp_path / "dark.tif", np.stack([dark, dark]))
    out = tmp_path / "out"
    assert main(["run", str(folder), "-o", str(out), *OPTIONS, "--dark-frames", str(tmp_path / "dark.tif")]) == 0
    model = IlluminationModel.load(out / "illum" / "tiles_Illum1.npz")
    assert model.info["darkfield"] == "given"
    np.testing.assert_array_equal(model.darkfield, dark.astype(np.float32))
    assert main(["run", str(folder), "-o", str(tmp_path / "bad"), *OPTIONS, "--dark-frames", str(tmp_path / "none.tif")]) == 2


def test_a_time_lapse_stack_gets_a_baseline_per_frame(tmp_path):
    movie = make_plate(24, SHAPE, kind="gradient", dark=100, background=300, timelapse=True, seed=9)
    tifffile.imwrite(tmp_path / "movie.tif", movie.images, imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "movie.tif"), "-o", str(out), *OPTIONS, "--timelapse", "--output-dtype", "float32"]) == 0
    (path,) = (out / "illum").glob("*.npz")
    model = IlluminationModel.load(path)
    assert model.baseline is not None and len(model.baseline) == 24
    assert np.corrcoef(model.baseline, movie.baseline)[0, 1] > 0.99  # tracks the bleaching frame by frame
    names = model.info["baseline_images"]
    corrected = tifffile.imread(out / "corrected" / "movie.tif")
    assert corrected.shape == movie.images.shape and corrected.dtype == np.float32
    for frame in (0, 11, 23):
        index = names.index(f"movie.tif#{frame}")
        np.testing.assert_array_equal(corrected[frame], model.apply(movie.images[frame], index=index, output_dtype="float32"))
    # (I - D) / F - B_n + mean(B): the frames' backgrounds come out level despite the bleaching
    levels = [np.median(frame) for frame in corrected]
    assert np.ptp(levels) < 0.1 * np.ptp([np.median(frame) for frame in movie.images])


def test_apply_takes_a_basicpy_model_folder(tmp_path, plate):
    """A model saved by BaSiCPy 2.0 (settings.json + profiles.npz) corrects a folder through `gpuillum apply`."""
    folder = write_folder(tmp_path / "tiles", plate.images[:4])
    saved = tmp_path / "basic_model"
    saved.mkdir()
    (saved / "settings.json").write_text(json.dumps({"get_darkfield": True, "working_size": 128}))
    flat = plate.flatfield.astype(np.float32)
    dark = plate.darkfield.astype(np.float32)
    np.savez(saved / "profiles.npz", flatfield=flat, darkfield=dark, baseline=np.zeros(4, np.float32))
    out = tmp_path / "out"
    assert main(["apply", str(folder), "-o", str(out), "--function", f"1={saved}", "--output-dtype", "float32",
                 "--device", "cpu", "-q"]) == 0
    expected = (plate.images[2].astype(np.float32) - dark) / flat  # BaSiC's transform: (I - D) / F in float32
    np.testing.assert_allclose(tifffile.imread(out / "corrected" / "tile_02.tif"), expected, rtol=1e-6)
