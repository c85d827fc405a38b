"""The flat-field method (BaSiC's model): known-truth synthetic plates, the darkfield's
identifiability, dark frames, time-lapse baselines, few images, the reduction, files, the engine
registration, and BaSiC's demo stacks (GPUILLUM_DATA)."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.backend import Device
from gpuillum.methods import get_method
from gpuillum.methods.base import GroupInfo
from gpuillum.methods.basicpy_io import load_basicpy_model
from gpuillum.methods.flatfield import FlatfieldSettings, WorkingStack, fit_flatfield, working_shape
from gpuillum.methods.flatfield.estimator import darkfield_verdict, smooth
from gpuillum.methods.flatfield.plates import dark_error_counts, flat_error_percent, make_plate
from gpuillum.model import IlluminationModel

SHAPE = (256, 256)


@pytest.fixture(scope="module")
def bright():
    return make_plate(24, SHAPE, kind="gaussian", dark=100, background=300, seed=3)


@pytest.fixture(scope="module")
def dim():
    return make_plate(24, SHAPE, kind="cos4", dark=400, background=50, seed=4)


def test_bright_plate_recovers_flat_and_darkfield(bright):
    model = fit_flatfield(bright.images)
    assert model.info["darkfield"] == "estimated" and model.info["images"] == 24
    assert model.info["flatfield_statistic"] == "mean"  # objects on a background: the automatic choice keeps the mean
    halves = model.info["darkfield_offset_halves"]
    assert len(halves) == 2 and all(abs(h - 100) < 10 for h in halves)  # each from 12 images of 256^2
    assert flat_error_percent(model.flatfield, bright.flatfield) < 0.6
    assert dark_error_counts(model.darkfield, bright.darkfield) < 4
    assert abs(model.info["darkfield_offset"] - 100) < 4 * model.info["darkfield_offset_se"] + 2
    assert model.flatfield.dtype == np.float32 and abs(float(model.flatfield.mean()) - 1) < 1e-5
    # the flat field without a darkfield absorbs the offset: (300 F + 100) / 400 is flatter than F
    no_dark = fit_flatfield(bright.images, darkfield=False)
    assert no_dark.darkfield is None and no_dark.info["darkfield"] == "off"
    assert flat_error_percent(no_dark.flatfield, bright.flatfield) > 2


def test_dim_plate_recovers_flat_and_darkfield(dim):
    model = fit_flatfield(dim.images)
    assert model.info["darkfield"] == "estimated" and model.info["flatfield_statistic"] == "mean"
    assert flat_error_percent(model.flatfield, dim.flatfield) < 2
    assert dark_error_counts(model.darkfield, dim.darkfield) < 10


def test_corrected_background_is_flat(bright):
    model = fit_flatfield(bright.images)
    corrected = model.apply(bright.images[0], output_dtype="float32")
    truth = (bright.images[0] - bright.darkfield) / bright.flatfield
    inner = (slice(16, -16), slice(16, -16))
    assert np.median(np.abs(corrected[inner] - truth[inner])) < 0.01 * bright.baseline[0]


def test_equal_brightness_says_the_darkfield_is_not_identifiable():
    plate = make_plate(16, (192, 192), kind="gaussian", dark=100, background=300, spread=0.0, seed=5)
    model = fit_flatfield(plate.images)
    assert model.darkfield is None and model.info["darkfield"] == "not identifiable"
    assert "background levels" in model.info["darkfield_reason"]
    assert "darkfield not identifiable" in model.info["message"] and "--dark-frames" in model.info["message"]
    assert np.isfinite(model.flatfield).all()


def test_darkfield_verdict_tells_missing_information_from_contradiction():
    # offset, se, signal, flat spread, darkest background[, halves]
    assert darkfield_verdict(100.0, 1.0, 300.0, 0.3, 250.0) == ("", False)
    reason, contradicts = darkfield_verdict(float("nan"), float("inf"), 300.0, 0.3, 250.0)
    assert "do not vary" in reason and not contradicts
    reason, contradicts = darkfield_verdict(100.0, 40.0, 300.0, 0.3, 250.0)  # too little spread: uncertain, not wrong
    assert "uncertain" in reason and not contradicts
    reason, contradicts = darkfield_verdict(830.0, 1.6, 130.0, 0.5, 780.0)  # uncertain for the flat field, yet far above
    assert "darkest background" in reason and contradicts
    reason, contradicts = darkfield_verdict(260.0, 1.0, 300.0, 0.3, 250.0)
    assert "not below the darkest background" in reason and contradicts
    reason, contradicts = darkfield_verdict(-36.0, 0.3, 60.0, 0.2, 20.0)
    assert "negative" in reason and contradicts
    assert darkfield_verdict(-2.0, 1.0, 300.0, 0.3, 250.0) == ("", False)  # within its error of zero (and harmless)
    reason, contradicts = darkfield_verdict(680.0, 5.6, 370.0, 0.25, 700.0, halves=((576.0, 9.0), (752.0, 4.0)))
    assert "even and the odd images" in reason and contradicts
    assert darkfield_verdict(100.0, 1.0, 300.0, 0.3, 250.0, halves=((101.0, 1.4), (99.5, 1.4))) == ("", False)


def test_dense_bright_objects_leave_flat_field_and_darkfield_right():
    """Cells on 25-40 % of every field, 4.5x the background: least-squares levels over every pixel
    sit at 1.6-2x the background, and the fast fit started from them locks onto the cells (flat
    field 4.5 % wrong, darkfield "not identifiable"); the careful fit that follows stays on the
    background."""
    from gpuillum.demo.variants import ShadingCase

    case = ShadingCase("gaussian", depth=1.6, dark=300, coverage=(0.25, 0.4), spread=0.1, images=48, shape=(256, 256), seed=37)
    model = fit_flatfield(np.stack(case.images_uint16()))
    assert model.info["darkfield"] == "estimated"
    assert abs(model.info["darkfield_offset"] - 300) < 15
    assert flat_error_percent(model.flatfield, case.flat()) < 1.0
    assert 0.25 < model.info["rejected_fraction"] < 0.6  # the cells (and their rims) are left out
    assert "darkest background" in model.info["careful_fit"]  # the fast fit's reason
    assert "careful schedule" in model.info["message"]


def test_sparse_objects_keep_the_fast_fit(bright):
    model = fit_flatfield(bright.images)
    assert model.info["careful_fit"] is None and "careful" not in model.info["message"]
    equal = make_plate(24, SHAPE, kind="gaussian", dark=100, background=300, spread=0, seed=3)
    model = fit_flatfield(equal.images)  # no information about the offset: a careful fit would not add any
    assert model.info["darkfield"] == "not identifiable" and model.info["careful_fit"] is None


def test_objects_growing_while_bleaching_contradict_the_plate_model():
    """A time-lapse whose bright colony grows at the centre as the background bleaches: the brightness
    of the centre no longer scales with the background level, so the first and the second half of
    the series give different offsets (the even and the odd images agree: both span the growth),
    the darkfield is not identifiable and the flat field is the per-pixel median."""
    plate = make_plate(40, (192, 192), kind="gaussian", dark=100, background=300, timelapse=True, seed=6)
    y, x = np.mgrid[0:192, 0:192] / 192
    colony = np.exp(-((y - 0.5) ** 2 + (x - 0.5) ** 2) / (2 * 0.15**2))
    growth = np.linspace(0, 1, 40)[:, None, None]
    images = np.clip(plate.images + np.rint(plate.flatfield * 90 * growth * colony), 0, 65535).astype(np.uint16)
    for kwargs in ({}, {"darkfield": False}):  # the same diagnosis decides the statistic without a darkfield
        model = fit_flatfield(images, **kwargs)
        assert model.darkfield is None and model.info["flatfield_statistic"] == "median"
        assert "the first and the second half of the images give offsets" in model.info["flatfield_statistic_reason"]
    assert model.info["darkfield"] == "off"
    model = fit_flatfield(images)
    assert model.info["darkfield"] == "not identifiable" and "second half" in model.info["darkfield_reason"]
    even, odd = model.info["darkfield_offset_halves"]
    first, second = model.info["darkfield_offset_sequence_halves"]
    assert abs(even - odd) < abs(first - second) / 3
    assert "per-pixel median" in model.info["message"]
    assert fit_flatfield(images, statistic="mean").info["flatfield_statistic"] == "mean"  # asked for: kept
    untouched = fit_flatfield(plate.images)  # the same time-lapse without the colony stays a plate
    assert untouched.info["darkfield"] == "estimated" and untouched.info["flatfield_statistic"] == "mean"


def test_dark_frames_are_the_darkfield(bright):
    rng = np.random.default_rng(0)
    frames = np.stack([np.rint(bright.darkfield + rng.normal(0, 1.5, SHAPE)) for _ in range(8)]).astype(np.uint16)
    model = fit_flatfield(bright.images, dark_frames=frames)
    assert model.info["darkfield"] == "given"
    np.testing.assert_allclose(model.darkfield, frames.mean(axis=0), atol=1e-3)
    assert flat_error_percent(model.flatfield, bright.flatfield) < 0.6


def test_dark_frames_from_files(tmp_path, bright):
    import tifffile

    frames = np.rint(np.stack([bright.darkfield] * 3)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "dark.tif", frames)
    np.save(tmp_path / "dark.npy", frames[0])
    for source in (tmp_path / "dark.tif", str(tmp_path / "dark.npy")):
        model = fit_flatfield(bright.images[:6], dark_frames=source)
        np.testing.assert_allclose(model.darkfield, frames[0], atol=1e-3)
    with pytest.raises(ValueError, match="dark_frames: shape"):
        fit_flatfield(bright.images[:6], dark_frames=frames[:, :10, :10])


def test_timelapse_baseline_tracks_bleaching():
    plate = make_plate(30, (192, 192), kind="gaussian", dark=100, background=300, timelapse=True, seed=6)
    model = fit_flatfield(plate.images, timelapse=True)
    assert model.baseline.shape == (30,)
    assert np.corrcoef(model.baseline, plate.baseline)[0, 1] > 0.999
    assert model.offset == pytest.approx(float(np.mean(model.baseline)))
    backgrounds = [np.median(model.apply(frame, index=i, output_dtype="float32")) for i, frame in enumerate(plate.images)]
    raw = [np.median(frame) for frame in plate.images]
    assert np.std(backgrounds) < 0.1 * np.std(raw)  # bleaching removed: the background stays put
    with pytest.raises(ValueError, match="index"):
        model.apply(plate.images[0])


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_few_images_work_and_say_how_good(count):
    plate = make_plate(count, (192, 192), kind="gaussian", dark=0, background=300, spread=0.0, seed=7)
    model = fit_flatfield(plate.images if count > 1 else plate.images[0])
    assert np.isfinite(model.flatfield).all() and model.info["images"] == count
    assert model.info["darkfield"] == "not identifiable"
    assert model.info["flatfield_error_estimate_percent"] > 0
    assert flat_error_percent(model.flatfield, plate.flatfield) < 2.0


def test_sequences_generators_and_float_input(bright):
    images = bright.images[:8]
    a = fit_flatfield(images)
    b = fit_flatfield(list(images))
    c = fit_flatfield(image for image in images)
    np.testing.assert_array_equal(a.flatfield, b.flatfield)
    np.testing.assert_array_equal(a.flatfield, c.flatfield)
    d = fit_flatfield(images.astype(np.float32))
    np.testing.assert_allclose(d.flatfield, a.flatfield, atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="images: expected at least one image"):
        fit_flatfield([])
    with pytest.raises(ValueError, match="statistic"):
        fit_flatfield(np.ones((2, 16, 16), np.uint16), statistic="mode")
    with pytest.raises(ValueError, match="smoothness"):
        fit_flatfield(np.ones((2, 16, 16), np.uint16), smoothness=0)
    with pytest.raises(TypeError, match="images"):
        fit_flatfield(5)
    with pytest.raises(ValueError, match="shape"):
        fit_flatfield([np.ones((16, 16), np.uint16), np.ones((16, 17), np.uint16)])
    with pytest.raises(ValueError, match="working_size"):
        FlatfieldSettings(working_size=4)
    with pytest.raises(ValueError, match="flatfield_statistic"):
        FlatfieldSettings(flatfield_statistic="max")


def test_working_shape_keeps_the_aspect_ratio():
    assert working_shape((2160, 2560), 128) == (108, 128)
    assert working_shape((128, 171), 128) == (96, 128)
    assert working_shape((64, 32), 128) == (64, 32)


def test_reduction_is_bit_identical_for_any_batch_split(bright):
    """Consecutive batches, each reduced on its own (and pickled, as from a Dask worker), merged in batch order."""
    images = bright.images[:10]

    def reduce(batches):
        partials = []
        for batch in batches:
            partial = WorkingStack(SHAPE, 64)
            for index in batch:
                partial.add(images[index])
            partials.append(pickle.loads(pickle.dumps(partial)))
        total = partials[0]
        for partial in partials[1:]:
            total.merge(partial)
        return total

    method = get_method("flatfield")
    settings = method.default_settings()
    group = GroupInfo("plate", SHAPE, "uint16", 10)
    models = [method.finish(settings, reduce(split), group, Device("cpu"))
              for split in ([range(10)], [range(0, 3), range(3, 10)], [range(0, 1), range(1, 6), range(6, 10)])]
    for model in models[1:]:
        np.testing.assert_array_equal(model.flatfield, models[0].flatfield)
        np.testing.assert_array_equal(model.darkfield, models[0].darkfield)


def test_method_registration_and_settings():
    method = get_method("basic")
    assert method.name == "flatfield" and get_method("flatfield") is method
    flags = {option.flag: option for option in method.cli_options()}
    assert {"--darkfield", "--timelapse", "--working-size", "--dark-frames", "--flatfield-statistic"} <= set(flags)
    assert flags["--darkfield"].kind == "flag" and flags["--working-size"].parse is int
    settings = method.default_settings()
    assert method.scope(settings) == "group"
    assert method.scope(FlatfieldSettings(timelapse=True)) == "series"
    assert "darkfield estimated" in method.describe(settings)
    assert json.dumps(method.manifest_settings(settings))
    with pytest.raises(ValueError, match="dtype"):
        method.check(settings, GroupInfo("plate", SHAPE, "int32", 3))


def test_model_save_and_load(tmp_path, bright):
    model = fit_flatfield(bright.images[:8], timelapse=True)
    path = model.save(tmp_path / "model.npz")
    loaded = IlluminationModel.load(path)
    np.testing.assert_array_equal(loaded.flatfield, model.flatfield)
    np.testing.assert_array_equal(loaded.baseline, model.baseline)
    assert loaded.info["darkfield"] == model.info["darkfield"] and loaded.method == "flatfield"
    np.testing.assert_array_equal(loaded.apply(bright.images[2], index=2), model.apply(bright.images[2], index=2))


def test_basicpy_model_folder(tmp_path):
    flat = np.linspace(0.5, 1.5, 64 * 48, dtype=np.float32).reshape(64, 48)
    dark = np.full((64, 48), 100, np.float32)
    (tmp_path / "settings.json").write_text(json.dumps({"get_darkfield": True, "working_size": 128}))
    np.savez(tmp_path / "profiles.npz", flatfield=flat, darkfield=dark, baseline=np.array(None, dtype=object))
    model = load_basicpy_model(tmp_path)
    assert model.method == "basicpy" and model.settings["get_darkfield"] is True and model.baseline is None
    image = np.full((64, 48), 400, np.uint16)
    np.testing.assert_allclose(model.apply(image, output_dtype="float32"), (400 - 100) / flat, rtol=1e-6)
    np.savez(tmp_path / "profiles.npz", flatfield=flat, darkfield=np.zeros_like(flat), baseline=np.ones(3, np.float32))
    assert load_basicpy_model(tmp_path).darkfield is None
    with pytest.raises(ValueError, match="not a BaSiCPy model folder"):
        load_basicpy_model(tmp_path / "missing")


def test_smoother_keeps_smooth_fields_and_fills_gaps():
    y, x = np.mgrid[0:64, 0:80] / 64.0
    field = 1 + 0.3 * np.cos(1.5 * y) * np.sin(x)
    error = np.abs(smooth(field, 1e-5) - field)
    assert error.max() < 5e-3 and error[8:-8, 8:-8].max() < 1e-4  # Neumann edges bend a sloped field within a few pixels
    weights = np.ones_like(field)
    weights[20:30, 20:30] = 0
    holed = np.where(weights > 0, field, 0.0)
    np.testing.assert_allclose(smooth(holed, 1e-5, weights, 1.0, passes=30)[20:30, 20:30], field[20:30, 20:30], atol=0.02)


def test_exported_lazily():
    assert gi.fit_flatfield is fit_flatfield and gi.load_basicpy_model is load_basicpy_model


# -- BaSiC's demo stacks and PyBaSiC's reference results (GPUILLUM_DATA)


def _relative_rms(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 100 * float(np.sqrt(np.mean((a / a.mean() - b / b.mean()) ** 2)))


@pytest.mark.data
@pytest.mark.parametrize("name, reason", [("timelapse_nanog", "negative"), ("wsi_brain", "even and the odd images")])
def test_demo_stacks_against_the_reference_flat_fields(data_set, name, reason):
    """Defaults on BaSiC's demo stacks: the darkfield is not identifiable (nanog: a negative offset,
    the colonies grow as the movie bleaches; wsi_brain: the even and the odd tiles give offsets
    hundreds of counts apart), so the model has no darkfield and its flat field is compared with
    the reference fitted without one (PyBaSiC's darkfield fits sit on their offset clamps,
    docs/basic.md 8.2): <= 1.5 % RMS with the border excluded (the synthetic plates' metric),
    <= 1.6 % over the whole field."""
    from gpuillum.filters.resample import resize_bilinear

    folder = data_set("basicpy_npz")
    images = np.load(folder / f"{name}.npz")["images"]
    reference = np.load(folder / "reference_results.npz", allow_pickle=True)[name].item()  # the reference's own format
    model = fit_flatfield(images)
    assert model.darkfield is None and model.info["darkfield"] == "not identifiable"
    assert reason in model.info["darkfield_reason"] and model.info["flatfield_statistic"] == "median"
    flat = resize_bilinear(model.flatfield, (128, 128))  # the reference was made at 128^2
    assert flat_error_percent(flat, reference["flatfield-flatonly"], border=8) <= 1.5
    assert _relative_rms(flat, reference["flatfield-flatonly"]) <= 1.6
    assert _relative_rms(resize_bilinear(fit_flatfield(images, statistic="mean").flatfield, (128, 128)),
                         reference["flatfield-flatonly"]) > 2.5  # the robust mean does not suit these stacks


@pytest.mark.data
def test_demo_cell_culture_darkfield_is_not_identifiable(data_set):
    images = np.load(data_set("basicpy_npz") / "cell_culture.npz")["images"]
    model = fit_flatfield(images)
    assert model.info["darkfield"] == "not identifiable" and "darkest background" in model.info["darkfield_reason"]
    assert model.info["flatfield_statistic"] == "median" and np.isfinite(model.flatfield).all()


@pytest.mark.data
def test_demo_timelapse_baseline_tracks_the_reference(data_set):
    folder = data_set("basicpy_npz")
    images = np.load(folder / "timelapse_nanog.npz")["images"]
    reference = np.load(folder / "reference_results.npz", allow_pickle=True)["timelapse_nanog"].item()
    model = fit_flatfield(images, timelapse=True)
    assert np.corrcoef(model.baseline, reference["baseline"])[0, 1] > 0.99
    corrected = model.apply(images[100], index=100)
    assert corrected.dtype == np.uint8


# -- GPU


@pytest.mark.gpu
def test_gpu_fit_matches_cpu(cupy, bright):
    cpu = fit_flatfield(bright.images[:12])
    gpu = fit_flatfield(cupy.asarray(bright.images[:12]))
    assert isinstance(gpu.flatfield, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(gpu.flatfield), cpu.flatfield, atol=2e-4)
    np.testing.assert_allclose(cupy.asnumpy(gpu.darkfield), cpu.darkfield, atol=0.5)
    corrected = gpu.apply(cupy.asarray(bright.images[0]))
    assert int(cupy.abs(corrected.astype(cupy.int32) - cpu.apply(bright.images[0]).astype(np.int32)).max().get()) <= 1
