"""The method registry: what a registration declares is what the CLI offers, the manifest records and
the run does; the per-image methods against independent references (scikit-image, the kernels)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from gpuillum.methods import all_methods, get_method, register, unregister
from gpuillum.methods.base import Method, setting

BUILT_IN = {"cellprofiler", "median", "tophat", "black-tophat", "rolling-ball", "sliding-paraboloid", "projection"}


@dataclass(frozen=True)
class ScaleSettings:
    factor: int = setting(help="multiply every pixel by this", metavar="K")
    halve_first: bool = setting(False, help="halve the pixels before multiplying")


class ScaleMethod(Method):
    """A per-image test method: its correction is arithmetic a test can check exactly."""

    name = "test-scale"
    aliases = ("test-times",)
    summary = "a test method that multiplies each image"
    Settings = ScaleSettings

    def scope(self, settings):
        return "image"

    def describe(self, settings):
        return f"scaled by {settings.factor}" + (" after halving" if settings.halve_first else "")

    def correct(self, settings, image, *, output_dtype="same", stats=None):
        from gpuillum.output_dtype import cast_output

        values = image.astype(np.float32) * (0.5 if settings.halve_first else 1.0) * settings.factor
        return cast_output(values, image.dtype, output_dtype, stats=stats)


@pytest.fixture
def scale_method():
    method = register(ScaleMethod())
    yield method
    unregister(method.name)


def test_methods_lists_every_registered_method(capsys, scale_method):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for method in all_methods():
        assert method.name in out and method.summary in out
    assert {m.name for m in all_methods()} >= BUILT_IN | {"test-scale"}


def test_a_methods_options_come_from_its_registration(capsys, scale_method):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "method test-scale: a test method that multiplies each image" in text
    assert "--factor K multiply every pixel by this" in text and "--halve-first, --no-halve-first" in text
    assert main(["methods", "test-times"]) == 0
    assert "--factor K" in capsys.readouterr().out


def test_a_registered_method_runs_and_its_description_is_the_manifests(tmp_path, scale_method):
    image = np.arange(60, dtype=np.uint16).reshape(6, 10) * 100
    tifffile.imwrite(tmp_path / "field.tif", image)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "field.tif"), "-o", str(out), "--method", "test-scale", "--factor", "3",
                 "--halve-first", "--device", "cpu", "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "corrected" / "field.tif"),
                                  np.clip(np.rint(image.astype(np.float32) * 0.5 * 3), 0, 65535).astype(np.uint16))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "scaled by 3 after halving"
    assert manifest["settings"]["method"] == {"name": "test-scale", "settings": {"factor": 3, "halve_first": True}}


def test_an_option_of_another_method_is_refused_in_one_line(tmp_path, capsys, scale_method):
    tifffile.imwrite(tmp_path / "field.tif", np.ones((8, 8), np.uint16))
    code = main(["run", str(tmp_path / "field.tif"), "-o", str(tmp_path / "out"), "--method", "median", "--factor", "2"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--factor is an option of method test-scale, not of --method median, which takes" in err
    assert main(["run", str(tmp_path / "field.tif"), "-o", str(tmp_path / "out"), "--method", "test-scale"]) == 2
    assert "method test-scale: needs --factor" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "field.tif"), "-o", str(tmp_path / "out"), "--radius", "4"]) == 2
    assert "not of method cellprofiler (the default)" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_the_registry_refuses_clashing_names_and_flags():
    class Clash(ScaleMethod):
        name = "median"

    with pytest.raises(ValueError, match="method name 'median' is taken by method 'median'"):
        register(Clash())

    @dataclass(frozen=True)
    class RadiusAsText:
        radius: str = setting("1", help="a radius given as text")  # --radius means an integer elsewhere

    class OtherRadius(ScaleMethod):
        name = "test-other-radius"
        Settings = RadiusAsText

    register(OtherRadius())  # same flag, same settings field and kind: one option for both methods
    unregister("test-other-radius")

    class FlagRadius(ScaleMethod):
        name = "test-flag-radius"

        def cli_options(self):
            return [dataclasses.replace(option, flag="--radius") for option in super().cli_options()]

    with pytest.raises(ValueError, match="option --radius means something else for method"):
        register(FlagRadius())
    with pytest.raises(ValueError, match="method: expected one of .*got 'nosuch'"):
        get_method("nosuch")


def test_every_built_in_method_lives_in_its_own_module():
    modules = {name: type(get_method(name)).__module__ for name in BUILT_IN}
    assert all(module.startswith("gpuillum.methods.") for module in modules.values())
    assert modules["cellprofiler"] == "gpuillum.methods.cellprofiler.method"
    assert modules["median"] == "gpuillum.methods.median"
    assert modules["tophat"] == modules["black-tophat"] == "gpuillum.methods.tophat"  # one family, one module
    assert modules["rolling-ball"] == "gpuillum.methods.rolling_ball"
    assert modules["sliding-paraboloid"] == "gpuillum.methods.sliding_paraboloid"
    assert modules["projection"] == "gpuillum.methods.projection"


# ----------------------------------------------------------------------------- per-image methods


@pytest.fixture
def field16(rng):
    y, x = np.mgrid[:97, :121]
    shading = 1.3 - 0.5 * (((y - 40) / 97) ** 2 + ((x - 70) / 121) ** 2)
    spots = 2500 * (rng.random((97, 121)) > 0.97)
    return np.clip(np.rint((400 + spots) * shading + 90 + rng.normal(0, 12, (97, 121))), 0, 4095).astype(np.uint16)


def test_median_signed_equals_raw_minus_skimage_rank_median(tmp_path, field16):
    """The lesson's recipe: raw - median (disk 15), negatives kept, bit for bit against scikit-image."""
    from skimage.filters.rank import median
    from skimage.morphology import disk

    tifffile.imwrite(tmp_path / "field.tif", field16)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "field.tif"), "-o", str(out), "--method", "median", "--radius", "15",
                 "--output-dtype", "signed", "--device", "cpu", "-q"]) == 0
    got = tifffile.imread(out / "corrected" / "field.tif")
    with pytest.warns(UserWarning, match="Bad rank filter performance"):
        expected = field16.astype(np.int32) - median(field16, disk(15))
    assert got.dtype == np.int32 and (got < 0).any()
    np.testing.assert_array_equal(got, expected)


def test_median_same_counts_and_warns_about_clipped_negatives(tmp_path, field16, capsys):
    tifffile.imwrite(tmp_path / "field.tif", field16)
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "field.tif"), "-o", str(out), "--method", "median", "--radius", "15", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    got = tifffile.imread(out / "corrected" / "field.tif")
    from gpuillum.filters.median import median_filter

    difference = field16.astype(np.int64) - median_filter(field16, 15)
    np.testing.assert_array_equal(got, np.clip(difference, 0, None).astype(np.uint16))
    lost = json.loads((out / "manifest.json").read_text())["qc"]["plate field, channel 1"]
    assert lost["clipped_below"] == int(np.sum(difference < 0)) and lost["clipped_above"] == 0
    assert lost["clipped_fraction"] > 0.2 and "% of the pixels were clipped" in captured.err
    assert "--output-dtype signed or float32 keeps them" in captured.err and "output plate field, channel 1:" in captured.out


def test_median_downsample_is_the_fast_background(field16):
    from gpuillum.filters.median_background import median_background

    method = get_method("median")
    settings = method.settings_from_options({"radius": 24, "downsample": "auto"})
    expected = np.clip(np.rint(field16.astype(np.float32) - median_background(field16, 24)), 0, 65535).astype(np.uint16)
    np.testing.assert_array_equal(method.correct(settings, field16), expected)
    with pytest.raises(ValueError, match="downsample: expected exact, auto or an integer >= 1"):
        method.settings_from_options({"radius": 3, "downsample": "fast"})


@pytest.mark.parametrize("name, light", [("tophat", False), ("black-tophat", True)])
@pytest.mark.parametrize("policy", ["same", "signed", "float32"])
def test_tophats_equal_skimage(field16, name, light, policy):
    from skimage.morphology import black_tophat, disk, white_tophat

    method = get_method(name)
    settings = method.settings_from_options({"radius": 6})
    assert settings.light_background is light
    reference = (black_tophat if light else white_tophat)(field16, disk(6), mode="ignore")
    got = method.correct(settings, field16, output_dtype=policy)
    assert got.dtype == {"same": np.uint16, "signed": np.int32, "float32": np.float32}[policy]
    np.testing.assert_array_equal(got, reference)


def test_median_light_background_subtracts_the_image_from_its_background(field16):
    from gpuillum.filters.median import median_filter

    method = get_method("median")
    settings = method.settings_from_options({"radius": 7, "light_background": True})
    got = method.correct(settings, field16, output_dtype="signed")
    np.testing.assert_array_equal(got, median_filter(field16, 7).astype(np.int32) - field16)
