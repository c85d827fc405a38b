"""The local-background methods through the CLI and the Python API, on single images, folders and
stacks: rolling-ball and sliding-paraboloid against phase 1's kernels (which tests/
test_imagej_parity.py holds to ImageJ) and scikit-image, projection against NumPy and the streaming
reducer, --presmooth on every per-image background method, the median's and top-hat's ImageJ
windows. The real ImageJ through the CLI: tests/test_imagej_cli.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

import gpuillum as gi
from gpuillum.cli import main
from gpuillum.methods import get_method


def run_cli(source, out, *options) -> None:
    assert main(["run", str(source), "-o", str(out), "--device", "cpu", "-q", *map(str, options)]) == 0


def shaded(rng, shape=(61, 83), dtype=np.uint16, spots=0.97):
    """A bright ramp and dome with spots: a background worth subtracting."""
    y, x = np.mgrid[:shape[0], :shape[1]]
    top = np.iinfo(dtype).max if dtype != np.float32 else 4000
    background = top * (0.1 + 0.2 * x / shape[1] + 0.2 * np.exp(-((y - shape[0] / 2) ** 2 + (x - shape[1] / 3) ** 2) / 900))
    image = background + top * 0.3 * (rng.random(shape) > spots) + rng.normal(0, top * 0.01, shape)
    return np.clip(image, 0, top).astype(dtype)


@pytest.fixture
def field(rng):
    return shaded(rng)


# ----------------------------------------------------------------------------- rolling-ball


@pytest.mark.parametrize("options, kernel", [
    ([], {}),
    (["--light-background"], {"light_background": True}),
    (["--create-background"], {"create_background": True}),
    (["--presmooth", "none"], {"presmooth": False}),
    (["--presmooth", "gaussian", "--sigma", "1.5"], {"presmooth": "gaussian", "sigma": 1.5}),
])
@pytest.mark.parametrize("policy", ["same", "float32", "signed"])
def test_rolling_ball_writes_imagejs_subtract_background(tmp_path, field, options, kernel, policy):
    tifffile.imwrite(tmp_path / "field.tif", field)
    run_cli(tmp_path / "field.tif", tmp_path / "out", "--method", "rolling-ball", "--radius", "12.5", *options,
            "--output-dtype", policy)
    got = tifffile.imread(tmp_path / "out" / "corrected" / "field.tif")
    imagej = gi.rolling_ball_imagej(field, 12.5, **kernel)  # ImageJ's 16-bit output (test_imagej_parity)
    values = gi.rolling_ball_imagej(field, 12.5, **kernel, output_dtype="float32")  # ImageJ's 32-bit output
    expected = {"same": imagej, "float32": values, "signed": np.rint(values).astype(np.int32)}[policy]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    if policy != "same" and not kernel.get("create_background"):
        assert (got < 0).any()  # raw - background keeps its negatives (below 0 with a light background too)


def test_rolling_ball_same_counts_what_imagejs_conversion_clamps(tmp_path, field):
    tifffile.imwrite(tmp_path / "field.tif", field)
    run_cli(tmp_path / "field.tif", tmp_path / "out", "--method", "rolling-ball", "--radius", "20")
    lost = json.loads((tmp_path / "out" / "manifest.json").read_text())["qc"]["plate field, channel 1"]
    values = gi.rolling_ball_imagej(field, 20, output_dtype="float32")
    assert lost["clipped_below"] == int(np.sum(values + np.float32(0.5) < 0)) > 0
    assert lost["pixels"] == field.size and lost["clipped_above"] == 0


def test_rolling_ball_on_stacks_and_folders_processes_every_plane(tmp_path, rng):
    stack = np.stack([shaded(rng, (40, 50), np.uint8) for _ in range(3)])
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "movie.ome.tif", stack[:, None], metadata={"axes": "TCYX"})
    tifffile.imwrite(folder / "still.tif", stack[0, :20, :30])
    run_cli(folder, tmp_path / "out", "--method", "rolling-ball", "--radius", "8", "--light-background")
    got = tifffile.imread(tmp_path / "out" / "corrected" / "movie.ome.tif").reshape(stack.shape)
    np.testing.assert_array_equal(got, gi.rolling_ball_imagej(stack, 8, light_background=True))  # slice by slice
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / "still.tif"),
                                  gi.rolling_ball_imagej(stack[0, :20, :30], 8, light_background=True))


def test_rolling_ball_from_the_python_api(tmp_path, field):
    tifffile.imwrite(tmp_path / "field.tif", field)
    result = gi.run(tmp_path / "field.tif", tmp_path / "out", method="rolling-ball", options={"radius": 30, "presmooth": "none"},
                    output_dtype="float32", device="cpu")
    assert result.method == "ImageJ rolling ball, radius 30, no smoothing"
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / "field.tif"),
                                  gi.rolling_ball_imagej(field, 30, presmooth=False, output_dtype="float32"))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("light", [False, True])
def test_rolling_ball_skimage_ball_is_scikit_images(tmp_path, rng, dtype, light):
    """--ball skimage: image - skimage.restoration.rolling_ball(image), the light background inverted as
    scikit-image's documentation does."""
    from skimage.restoration import rolling_ball
    from skimage.util import invert

    image = shaded(rng, (45, 52), dtype)
    tifffile.imwrite(tmp_path / "field.tif", image)
    run_cli(tmp_path / "field.tif", tmp_path / "out", "--method", "rolling-ball", "--ball", "skimage", "--radius", "9",
            "--output-dtype", "float32", *["--light-background"] * light)
    got = tifffile.imread(tmp_path / "out" / "corrected" / "field.tif")
    if not light:
        background = rolling_ball(image, radius=9)
    elif dtype == np.float32:
        background = -rolling_ball(-image, radius=9)  # exact negation (invert() of floats is 1 - x)
    else:
        background = invert(rolling_ball(invert(image), radius=9))
    np.testing.assert_array_equal(got, image.astype(np.float32) - background.astype(np.float32))


def test_rolling_ball_skimage_ball_with_presmoothing(field):
    method = get_method("rolling-ball")
    settings = method.settings_from_options({"radius": 6, "ball": "skimage", "presmooth": "mean"})
    expected = field.astype(np.float32) - gi.rolling_ball(gi.presmooth(field, "mean"), 6)
    np.testing.assert_array_equal(method.correct(settings, field, output_dtype="float32"), expected)
    assert method.settings_from_options({"radius": 6, "ball": "skimage"}).presmooth == "none"
    assert method.settings_from_options({"radius": 6}).presmooth == "mean"  # ImageJ's default


# ----------------------------------------------------------------------------- sliding-paraboloid


@pytest.mark.parametrize("options, kernel", [
    ([], {}),
    (["--legacy"], {"legacy": True}),
    (["--light-background", "--no-correct-corners"], {"light_background": True, "correct_corners": False}),
    (["--presmooth", "none", "--create-background"], {"presmooth": "none", "create_background": True}),
])
@pytest.mark.parametrize("policy", ["same", "signed"])
def test_sliding_paraboloid_writes_the_kernels_output(tmp_path, field, options, kernel, policy):
    tifffile.imwrite(tmp_path / "field.tif", field)
    run_cli(tmp_path / "field.tif", tmp_path / "out", "--method", "sliding-paraboloid", "--radius", "15", *options,
            "--output-dtype", policy)
    got = tifffile.imread(tmp_path / "out" / "corrected" / "field.tif")
    if policy == "same":
        expected = gi.sliding_paraboloid(field, 15, **kernel)
    else:
        expected = np.rint(gi.sliding_paraboloid(field, 15, **kernel, output_dtype="float32")).astype(np.int32)
    np.testing.assert_array_equal(got, expected)


# ----------------------------------------------------------------------------- presmoothing, windows


@pytest.mark.parametrize("name, background", [
    ("median", lambda smooth, r: gi.median_filter(smooth, r)),
    ("tophat", lambda smooth, r: gi.grey_opening(smooth, r)),
    ("black-tophat", lambda smooth, r: gi.grey_closing(smooth, r)),
])
@pytest.mark.parametrize("presmooth, sigma", [("mean", None), ("gaussian", 2.0)])
def test_presmoothing_computes_the_background_of_the_smoothed_image(tmp_path, field, name, background, presmooth, sigma):
    tifffile.imwrite(tmp_path / "field.tif", field)
    options = ["--presmooth", presmooth] + (["--sigma", sigma] if sigma else [])
    run_cli(tmp_path / "field.tif", tmp_path / "out", "--method", name, "--radius", "5", *options, "--output-dtype", "float32")
    got = tifffile.imread(tmp_path / "out" / "corrected" / "field.tif")
    smooth = gi.presmooth(field, presmooth, sigma=sigma)
    values = field.astype(np.float32)
    expected = background(smooth, 5) - values if name == "black-tophat" else values - background(smooth, 5)
    np.testing.assert_array_equal(got, expected)
    unsmoothed = field.astype(np.float32) - gi.median_filter(field, 5)
    assert not np.array_equal(got, unsmoothed)


def test_presmoothing_defaults_keep_each_methods_own():
    for name, default in (("median", "none"), ("tophat", "none"), ("black-tophat", "none"), ("rolling-ball", "mean"),
                          ("sliding-paraboloid", "mean")):
        assert get_method(name).settings_from_options({"radius": 5}).presmooth == default


@pytest.mark.parametrize("options, message", [
    (["--method", "median", "--radius", "5", "--presmooth", "gaussian"], "presmooth 'gaussian' needs the Gaussian's sigma"),
    (["--method", "tophat", "--radius", "5", "--sigma", "2"], "sigma: only used with presmooth 'gaussian'"),
    (["--method", "rolling-ball", "--radius", "5", "--presmooth", "box"], "expected one of 'mean', 'gaussian', 'none'"),
    (["--method", "median", "--radius", "2.5"], "radius: expected an integer >= 1, got 2.5"),
    (["--method", "rolling-ball", "--radius", "0"], "radius: expected a finite number > 0.0001"),
    (["--method", "median", "--radius", "5", "--footprint", "imagej", "--downsample", "auto"], "need downsample exact"),
    (["--method", "projection", "--statistic", "percentile"], "percentile: statistic='percentile' needs a number"),
    (["--method", "rolling-ball", "--radius", "5", "--statistic", "max"], "--statistic is an option of method projection"),
])
def test_bad_background_options_are_one_line_errors(tmp_path, field, capsys, options, message):
    tifffile.imwrite(tmp_path / "field.tif", field)
    try:
        code = main(["run", str(tmp_path / "field.tif"), "-o", str(tmp_path / "out"), *options])
    except SystemExit as stop:  # refused by the option parser
        code = stop.code
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_median_edges_nearest_is_the_lessons_scikit_image_recipe(tmp_path):
    """The lesson's Python: image.astype(int16) - skimage.filters.median(image, disk(15)) (scipy's nearest edges)."""
    from skimage.filters import median
    from skimage.morphology import disk

    rng = np.random.default_rng(3)
    image = shaded(rng, (70, 66), np.uint8)
    tifffile.imwrite(tmp_path / "spots.tif", image)
    run_cli(tmp_path / "spots.tif", tmp_path / "out", "--method", "median", "--radius", "15", "--edges", "nearest",
            "--output-dtype", "signed")
    got = tifffile.imread(tmp_path / "out" / "corrected" / "spots.tif")
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, image.astype(np.int16) - median(image, disk(15)).astype(np.int16))


def test_median_and_tophat_take_imagejs_circle(field):
    median, tophat = get_method("median"), get_method("tophat")
    settings = median.settings_from_options({"radius": 4.5, "footprint": "imagej"})
    assert settings.edges == "nearest"
    expected = field.astype(np.float32) - gi.median_filter(field, 4.5, footprint="imagej", mode="nearest")
    np.testing.assert_array_equal(median.correct(settings, field, output_dtype="float32"), expected)
    settings = tophat.settings_from_options({"radius": 4.5, "footprint": "imagej"})
    np.testing.assert_array_equal(tophat.correct(settings, field), gi.white_tophat(field, 4.5, footprint="imagej"))


def test_imagejs_circle_is_floor_r2_plus_one():
    """ImageJ's kernel {x^2 + y^2 <= floor(R^2) + 1} (docs/imagej.md 11): the maximum of one bright pixel."""
    image = np.zeros((41, 41), np.uint8)
    image[20, 20] = 9
    for radius, points in ((0.5, 5), (1, 9), (1.5, 13), (2.5, 29), (5, 89), (15.3, 749)):
        assert np.count_nonzero(gi.grey_dilation(image, radius, footprint="imagej")) == points


# ----------------------------------------------------------------------------- projection


@pytest.fixture
def timelapse(rng):
    """A light background with a dark object moving over 7 frames (the polyp's kind of time-lapse)."""
    frames = []
    for t in range(7):
        frame = shaded(rng, (33, 47), np.uint8, spots=2.0)
        frame[5:12, 4 + 5 * t: 10 + 5 * t] //= 4
        frames.append(frame)
    return np.stack(frames)


@pytest.mark.parametrize("options, reference", [
    ([], lambda s: s.max(axis=0)),
    (["--statistic", "min"], lambda s: s.min(axis=0)),
    (["--statistic", "mean"], lambda s: s.mean(axis=0, dtype=np.float64)),
    (["--statistic", "median"], lambda s: np.median(s, axis=0)),
    (["--percentile", "80"], lambda s: np.percentile(s, 80, axis=0)),
])
def test_projection_subtracts_the_projection_over_time_from_every_frame(tmp_path, timelapse, options, reference):
    tifffile.imwrite(tmp_path / "movie.tif", timelapse, imagej=True, metadata={"axes": "TYX"})
    run_cli(tmp_path / "movie.tif", tmp_path / "out", "--method", "projection", *options, "--output-dtype", "float32")
    got = tifffile.imread(tmp_path / "out" / "corrected" / "movie.tif")
    background = reference(timelapse).astype(np.float32)  # float32: the mean and percentiles rounded once
    assert got.shape == timelapse.shape and got.dtype == np.float32
    np.testing.assert_array_equal(got, timelapse.astype(np.float32) - background)
    models = list((tmp_path / "out" / "illum").glob("*.npz"))
    assert len(models) == 1 and np.array_equal(gi.IlluminationModel.load(models[0]).darkfield, background)


def test_projection_signed_is_the_lessons_int16_foreground_and_same_clips(tmp_path, timelapse, capsys):
    tifffile.imwrite(tmp_path / "movie.tif", timelapse, imagej=True, metadata={"axes": "TYX"})
    run_cli(tmp_path / "movie.tif", tmp_path / "signed", "--method", "projection", "--output-dtype", "signed")
    signed = tifffile.imread(tmp_path / "signed" / "corrected" / "movie.tif")
    np.testing.assert_array_equal(signed, timelapse.astype(np.int16) - timelapse.max(axis=0).astype(np.int16))
    assert main(["run", str(tmp_path / "movie.tif"), "-o", str(tmp_path / "same"), "--method", "projection", "--device", "cpu"]) == 0
    assert not tifffile.imread(tmp_path / "same" / "corrected" / "movie.tif").any()  # ImageJ's 8-bit Subtract: 0
    assert "of the pixels were clipped" in capsys.readouterr().err


def test_projection_of_plate_files_with_a_t_group_is_one_background_per_site(tmp_path, rng):
    folder = tmp_path / "plate"
    folder.mkdir()
    movies = {site: np.stack([shaded(rng, (20, 24), np.uint16) for _ in range(4)]) for site in (1, 2)}
    for site, movie in movies.items():
        for t, frame in enumerate(movie):
            tifffile.imwrite(folder / f"P1_A01_s{site}_t{t:02d}_DNA.tif", frame)
    pattern = r"(?P<plate>P\d)_(?P<well>[A-H]\d\d)_s(?P<site>\d)_t(?P<t>\d+)_(?P<channel>\w+)\.tif"
    run_cli(folder, tmp_path / "out", "--pattern", pattern, "--method", "projection", "--statistic", "min",
            "--output-dtype", "signed")
    for site, movie in movies.items():
        for t in range(4):
            got = tifffile.imread(tmp_path / "out" / "corrected" / f"P1_A01_s{site}_t{t:02d}_DNA.tif")
            np.testing.assert_array_equal(got, movie[t].astype(np.int32) - movie.min(axis=0))
    assert len(list((tmp_path / "out" / "illum").glob("*.npz"))) == 2


@pytest.mark.parametrize("statistic", ["mean", "median"])
def test_projection_is_bit_identical_for_any_number_of_threads_and_workers(tmp_path, rng, statistic):
    """40 float32 frames: three of the engine's batches of 16, reduced on different threads or Dask
    workers and merged in order, give the one-pass projection's bytes."""
    movie = rng.normal(1000, 300, (40, 24, 28)).astype(np.float32)
    tifffile.imwrite(tmp_path / "movie.tif", movie, imagej=True, metadata={"axes": "TYX"})
    expected = movie - gi.projection_background(movie, statistic)
    runs = [("threads1", ["--threads", "1"]), ("threads4", ["--threads", "4"])]
    if statistic == "mean":
        runs.append(("workers2", ["--workers", "2"]))
    for name, options in runs:
        run_cli(tmp_path / "movie.tif", tmp_path / name, "--method", "projection", "--statistic", statistic, *options)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / name / "corrected" / "movie.tif"), expected)


def test_a_projection_of_one_frame_is_warned_of(tmp_path, timelapse, capsys):
    tifffile.imwrite(tmp_path / "frame.tif", timelapse[0])
    assert main(["run", str(tmp_path / "frame.tif"), "-o", str(tmp_path / "out"), "--method", "projection",
                 "--output-dtype", "signed", "--device", "cpu"]) == 0
    assert "only 1 image" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "two.tif", timelapse[:2], imagej=True, metadata={"axes": "TYX"})
    assert main(["run", str(tmp_path / "two.tif"), "-o", str(tmp_path / "two"), "--method", "projection",
                 "--output-dtype", "signed", "--device", "cpu"]) == 0
    assert "only 2 images" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- light backgrounds


def test_light_background_conventions_per_method(field):
    """--light-background: the median and the top-hats give background - image (dark objects become
    positive); ImageJ's methods keep ImageJ's: image - background (+ the type's maximum in 8/16-bit)."""
    values = field.astype(np.float32)
    median = get_method("median")
    got = median.correct(median.settings_from_options({"radius": 5, "light_background": True}), field, output_dtype="float32")
    np.testing.assert_array_equal(got, gi.median_filter(field, 5).astype(np.float32) - values)
    rolling = get_method("rolling-ball")
    settings = rolling.settings_from_options({"radius": 5, "light_background": True})
    background = rolling.background(settings, field)
    upper = gi.rolling_ball_imagej(field, 5, light_background=True, create_background=True, output_dtype="float32")
    np.testing.assert_array_equal(background, upper)
    assert (background >= gi.presmooth(field, "mean") - 1e-3).all()  # the upper hull of the smoothed image
    np.testing.assert_array_equal(rolling.correct(settings, field, output_dtype="float32"), values - upper)
    same = rolling.correct(settings, field)
    np.testing.assert_array_equal(same, np.clip(np.floor((values - upper) + np.float32(65535.5)), 0, 65535).astype(np.uint16))


# ----------------------------------------------------------------------------- QC


@pytest.mark.qc
@pytest.mark.parametrize("method", [["rolling-ball", "--radius", "10"], ["median", "--radius", "5"], ["projection"]])
def test_runs_of_background_methods_draw_before_background_after(tmp_path, timelapse, method):
    tifffile.imwrite(tmp_path / "movie.tif", timelapse, imagej=True, metadata={"axes": "TYX"})
    run_cli(tmp_path / "movie.tif", tmp_path / "out", "--method", *method, "--output-dtype", "signed")
    pictures = list((tmp_path / "out" / "qc").glob("*_background.png"))
    assert len(pictures) == 1 and pictures[0].stat().st_size > 10_000
    import base64

    embedded = base64.b64encode(pictures[0].read_bytes()).decode()
    assert embedded in (tmp_path / "out" / "qc" / "report.html").read_text()


# ----------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.parametrize("name, options", [
    ("rolling-ball", {"radius": 12.5}), ("rolling-ball", {"radius": 40, "light_background": True}),
    ("rolling-ball", {"radius": 9, "ball": "skimage"}), ("sliding-paraboloid", {"radius": 15}),
    ("median", {"radius": 6, "presmooth": "mean"}), ("tophat", {"radius": 4.5, "footprint": "imagej"}),
])
@pytest.mark.parametrize("policy", ["same", "float32"])
def test_methods_on_the_gpu_equal_the_cpu(cupy, field, name, options, policy):
    method = get_method(name)
    settings = method.settings_from_options(options)
    got = method.correct(settings, cupy.asarray(field), output_dtype=policy)
    assert isinstance(got, cupy.ndarray)
    np.testing.assert_array_equal(cupy.asnumpy(got), method.correct(settings, field, output_dtype=policy))


@pytest.mark.gpu
def test_projection_partials_move_between_devices(cupy, timelapse):
    from gpuillum.backend import resolve_device

    on_gpu = gi.ProjectionReducer("mean").add_all(cupy.asarray(frame) for frame in timelapse[:4])
    rest = gi.ProjectionReducer("mean", start=4)
    rest.add(timelapse[4:])
    merged = on_gpu.merge(rest.to(resolve_device("gpu")))
    np.testing.assert_array_equal(cupy.asnumpy(merged.result()), gi.projection_background(timelapse, "mean"))
