"""Inputs beyond plates, without any regex: a folder of tiles, one image, a multi-page time-lapse, a
multi-channel OME-TIFF stack, an ImageJ hyperstack. Each is found with the right groups, corrected
plane by plane like the library does it, and written back with its shape, axes, dtype and metadata."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import gpuillum as gi
from gpuillum.cli import main
from gpuillum.inputs.discovery import discover
from gpuillum.inputs.folders import channel_token
from gpuillum.methods.cellprofiler import calculate, preset

SHAPE = (48, 64)
CP = ["--resize-factor", "1", "--filter-size", "5", "--device", "cpu", "-q"]


def field(seed: int, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]]
    shading = 1.2 - 0.5 * (((y - shape[0] / 2) / shape[0]) ** 2 + ((x - shape[1] / 2) / shape[1]) ** 2)
    spots = 3000 * (rng.random(shape) > 0.97)
    return np.clip(np.rint((400 + spots) * shading + 100 + rng.normal(0, 10, shape)), 0, 65535).astype(np.uint16)


@pytest.mark.parametrize("name, token", [("tile_07_c2.tif", ("c2", "tile_07")), ("C1-cells.tif", ("C1", "cells")),
                                         ("a-ch03.tif", ("ch03", "a")), ("scan.w2.ome.tiff", ("w2", "scan")),
                                         ("plain.tif", None), ("c1_c2.tif", None), ("acquisition.tif", None)])
def test_channel_tokens(name, token):
    assert channel_token(name) == token


def test_a_folder_of_tiles_with_channel_tokens(tmp_path):
    tiles = {f"tile_{i:02d}_c{c}.tif": field(10 * i + c) for i in range(5) for c in (1, 2)}
    folder = _mkdir(tmp_path / "tiles")
    for name, image in tiles.items():
        tifffile.imwrite(folder / name, image)
    plan = discover(tmp_path / "tiles")
    assert plan.problems == [] and plan.channels == ["c1", "c2"] and plan.plates == ["tiles"]
    assert {r.site for r in plan.records} == {f"tile_{i:02d}" for i in range(5)}
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "tiles"), "-o", str(out), *CP]) == 0
    for channel in ("c1", "c2"):
        names = sorted(n for n in tiles if n.endswith(f"_{channel}.tif"))
        function = calculate([tiles[n] for n in names], preset("jump").replace(resize_factor=1.0, manual_size=5))
        np.testing.assert_array_equal(np.load(out / "illum" / f"tiles_Illum{channel}.npy"), function)
        for name in names:
            np.testing.assert_array_equal(tifffile.imread(out / "corrected" / name), gi.apply(tiles[name], function))
    rows = (out / "corrected" / "load_data.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 and "FileName_c1" in rows[0] and "FileName_Illumc2" in rows[0]


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_a_folder_of_unrelated_images_corrects_each_kind_in_its_own_group(tmp_path):
    _mkdir(tmp_path / "mixed")
    tifffile.imwrite(tmp_path / "mixed" / "a.tif", field(1))
    tifffile.imwrite(tmp_path / "mixed" / "b.tif", field(2, (40, 30)))
    plan = discover(tmp_path / "mixed")
    assert plan.problems == [] and plan.channels == ["1", "1-40x30-uint16"]
    assert main(["run", str(tmp_path / "mixed"), "-o", str(tmp_path / "out"), "--method", "tophat", "--radius", "5",
                 "--device", "cpu", "-q"]) == 0
    for name, image in (("a.tif", field(1)), ("b.tif", field(2, (40, 30)))):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / name), gi.white_tophat(image, 5))


def test_one_image_is_an_input(tmp_path, capsys):
    image = field(3)
    tifffile.imwrite(tmp_path / "one.tif", image, resolution=(2.0, 2.0))
    assert main(["run", str(tmp_path / "one.tif"), "-o", str(tmp_path / "out"), "--method", "median", "--radius", "6",
                 "--output-dtype", "float32", "--device", "cpu", "-q"]) == 0
    out = tmp_path / "out" / "corrected" / "one.tif"
    np.testing.assert_array_equal(tifffile.imread(out), image.astype(np.float32) - gi.median_filter(image, 6))
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].tags["XResolution"].value == (2, 1)
    assert main(["run", str(tmp_path / "one.tif"), "-o", str(tmp_path / "out2"), "--pattern", "x", "-q"]) == 2
    assert "pattern: INPUT" in capsys.readouterr().err and not (tmp_path / "out2").exists()  # a pattern names a folder's files


def test_a_multi_page_time_lapse_keeps_its_frames_and_imagej_metadata(tmp_path):
    frames = np.stack([field(100 + t) for t in range(6)])
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX", "finterval": 5.0, "unit": "um"})
    plan = discover(tmp_path / "movie.tif")
    assert plan.channels == ["1"] and [r.t for r in plan.records] == [str(t) for t in range(6)]
    assert [r.page for r in plan.records] == list(range(6)) and plan.problems == []
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "movie.tif"), "-o", str(out), *CP]) == 0
    function = calculate(list(frames), preset("jump").replace(resize_factor=1.0, manual_size=5))
    with tifffile.TiffFile(out / "corrected" / "movie.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX" and tif.imagej_metadata["finterval"] == 5.0
        corrected = tif.asarray()
    assert corrected.shape == frames.shape and corrected.dtype == np.uint16
    np.testing.assert_array_equal(corrected, np.stack([gi.apply(f, function) for f in frames]))
    assert not (out / "corrected" / "load_data.csv").exists()  # stacks have no LoadData rows


def test_a_three_channel_ome_stack_is_split_by_channel_and_written_back_whole(tmp_path):
    stack = np.stack([np.stack([field(200 + 3 * t + c) for c in range(3)]) for t in range(4)])  # T, C, Y, X
    tifffile.imwrite(tmp_path / "cells.ome.tif", stack, ome=True,
                     metadata={"axes": "TCYX", "Channel": {"Name": ["DAPI", "GFP", "RFP"]}, "PhysicalSizeX": 0.325})
    plan = discover(tmp_path / "cells.ome.tif")
    assert plan.channels == ["DAPI", "GFP", "RFP"] and len(plan.records) == 12
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "cells.ome.tif"), "-o", str(out), "--method", "median", "--radius", "4",
                 "--output-dtype", "signed", "--device", "cpu", "-q"]) == 0
    with tifffile.TiffFile(out / "corrected" / "cells.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "TCYX" and tif.series[0].dtype == np.int32
        assert 'Name="GFP"' in tif.ome_metadata and 'PhysicalSizeX="0.325"' in tif.ome_metadata and 'Type="int32"' in tif.ome_metadata
        corrected = tif.asarray()
    expected = stack.astype(np.int32) - np.stack([np.stack([gi.median_filter(p, 4) for p in frame]) for frame in stack])
    np.testing.assert_array_equal(corrected, expected)
    # the group method estimates one function per channel, from that channel's frames
    out_cp = tmp_path / "out_cp"
    assert main(["run", str(tmp_path / "cells.ome.tif"), "-o", str(out_cp), *CP]) == 0
    assert sorted(p.name for p in (out_cp / "illum").glob("*.npy")) == [f"cells_Illum{c}.npy" for c in ("DAPI", "GFP", "RFP")]
    gfp = calculate(list(stack[:, 1]), preset("jump").replace(resize_factor=1.0, manual_size=5))
    np.testing.assert_array_equal(np.load(out_cp / "illum" / "cells_IllumGFP.npy"), gfp)
    np.testing.assert_array_equal(tifffile.imread(out_cp / "corrected" / "cells.ome.tif")[:, 1],
                                  np.stack([gi.apply(frame, gfp) for frame in stack[:, 1]]))


def test_a_stack_resumes_and_the_api_agrees_with_the_cli(tmp_path):
    frames = np.stack([field(300 + t) for t in range(5)])
    tifffile.imwrite(tmp_path / "movie.tif", frames, imagej=True, metadata={"axes": "TYX"})
    result = gi.run(tmp_path / "movie.tif", tmp_path / "api", method="tophat", options={"radius": 4}, device="cpu")
    assert [w.relpath for w in result.written] == ["movie.tif"]
    assert main(["run", str(tmp_path / "movie.tif"), "-o", str(tmp_path / "cli"), "--method", "tophat", "--radius", "4",
                 "--device", "cpu", "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "api" / "corrected" / "movie.tif"),
                                  tifffile.imread(tmp_path / "cli" / "corrected" / "movie.tif"))
    again = gi.run(tmp_path / "movie.tif", tmp_path / "api", method="tophat", options={"radius": 4}, device="cpu", resume=True)
    assert again.reused == ["movie.tif"] and not again.written
    manifest = json.loads((tmp_path / "api" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["method_name"] == "tophat"


def test_real_neubias_folder_and_polyp_time_lapse(tmp_path, data_set):
    """The lesson's images: a single 8-bit field and a 3-frame 8-bit time-lapse in one folder."""
    folder = data_set("neubias")
    plan = discover(folder)
    assert plan.problems == [] and len(plan.channels) == 2
    assert main(["run", str(folder), "-o", str(tmp_path / "out"), "--method", "median", "--radius", "15",
                 "--output-dtype", "signed", "--device", "cpu", "-q"]) == 0
    spots = tifffile.imread(folder / "xy_8bit__some_spots_with_uneven_bg.tif")
    got = tifffile.imread(tmp_path / "out" / "corrected" / "xy_8bit__some_spots_with_uneven_bg.tif")
    from skimage.filters.rank import median
    from skimage.morphology import disk

    np.testing.assert_array_equal(got, spots.astype(np.int16) - median(spots, disk(15)))
    polyp = tifffile.imread(tmp_path / "out" / "corrected" / "xyt_8bit_polyp.tif")
    assert polyp.shape == (3, 313, 313) and polyp.dtype == np.int16
