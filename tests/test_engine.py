"""The plate engine: results equal the library computed image by image, fixed-order reductions,
bounded read-ahead, outputs like the inputs (dtype, metadata, compression), manifest, LoadData."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from device_guard import assert_stages_ran_on
from gpuillum.backend import Device
from gpuillum.correct import apply as apply_function
from gpuillum.job import BackgroundSettings, JobError, run_plate
from gpuillum.job.estimate import OrderedMerge, reduce_batch
from gpuillum.job.executor import BATCH_SIZE, fixed_batches, ordered_map
from gpuillum.job.outdir import check_paths
from gpuillum.job.progress import Progress
from gpuillum.job.reading import CheckedReader
from gpuillum.methods import get_method
from gpuillum.methods.cellprofiler.method import CellProfilerSettings
from gpuillum.methods.cellprofiler import IlluminationAccumulator, calculate, preset
from gpuillum.inputs.records import ImageRecord
from gpuillum.inputs.loaddata import read_loaddata
from gpuillum.io.manifest import Manifest, file_sha256

SHAPE = (64, 80)
WELLS = ("B02", "B03", "C02", "C03")
UUID = "A1B2C3D4-0000-1111-2222-333344445555"
# Small median windows keep the tests fast; the method is CellProfiler's All + median + rescale.
FAST = preset("jump").replace(resize_factor=0.5, manual_size=6)


def plate_image(rng, shape=SHAPE, channel_index=0, dtype=np.uint16):
    """A shaded field with bright spots and noise, like a small fluorescence image."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    flat = 1.0 - 0.35 * (((y - shape[0] * 0.4) / shape[0]) ** 2 + ((x - shape[1] * 0.6) / shape[1]) ** 2)
    signal = 300.0 + 60.0 * channel_index + np.zeros(shape)
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        signal += 2500.0 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 18.0)
    image = flat * signal + rng.normal(0, 8, shape)
    top = np.iinfo(dtype).max
    if dtype == np.uint8:
        image = image / 16
    return np.clip(np.rint(image), 0, top).astype(dtype)


def subtract_background(image, background: BackgroundSettings):
    """The per-image background of ``--background``, written out from the kernels: the fast median
    subtracted in float32, rounded and clamped, or the white top-hat."""
    from gpuillum.filters.median_background import median_background
    from gpuillum.filters.morphology import white_tophat

    if background.method == "tophat":
        return white_tophat(image, background.radius)
    top = np.iinfo(image.dtype).max
    return np.clip(np.rint(image.astype(np.float32) - median_background(image, background.radius)), 0, top).astype(image.dtype)


def layout_relpath(layout, plate, well, site, channel_index, channel):
    """The file name of one image in each supported naming scheme."""
    if layout == "gpuillum":
        return f"{plate}/{well}_s{site}_{channel}.tif"
    if layout == "imagexpress":
        return f"{plate}/TimePoint_1/{plate}_{well}_s{site}_w{channel_index + 1}{UUID}.tif"
    if layout == "operetta":
        row, col = "ABCDEFGH".index(well[0]) + 1, int(well[1:])
        return f"{plate}/Images/r{row:02d}c{col:02d}f{site:02d}p01-ch{channel_index + 1}sk1fk1fl1.tiff"
    if layout == "pattern":
        return f"{plate}/{well}/site{site}-{channel}.tif"
    raise ValueError(layout)


PATTERN = r"(?P<plate>[^/]+)/(?P<well>[A-Z]\d\d)/site(?P<site>\d+)-(?P<channel>\w+)\.tif"


def write_plate(root, *, layout="gpuillum", plates=("P1",), wells=WELLS, sites=2, channels=("DNA", "Actin"),
                shape=SHAPE, dtype=np.uint16, seed=0, compression="zlib", resolution=(1.5, 1.5)):
    """Write a small plate under ``root`` in ``layout``'s naming; returns {relpath: image}."""
    rng = np.random.default_rng(seed)
    images = {}
    for plate in plates:
        for well in wells:
            for site in range(1, sites + 1):
                for index, channel in enumerate(channels):
                    relpath = layout_relpath(layout, plate, well, site, index, channel)
                    image = plate_image(rng, shape, index, dtype)
                    path = Path(root) / relpath
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tifffile.imwrite(path, image, compression=compression, resolution=resolution, resolutionunit="CENTIMETER")
                    images[relpath] = image
    return images


def channel_of(relpath, channels=("DNA", "Actin")):
    for channel in channels:
        if relpath.endswith(f"_{channel}.tif") or relpath.endswith(f"-{channel}.tif"):
            return channel
    raise ValueError(relpath)


# ----------------------------------------------------------------------------- whole job


def test_run_plate_equals_library_image_by_image(tmp_path):
    images = write_plate(tmp_path / "in")
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, layout="gpuillum", device="cpu", threads=3)
    assert len(result.written) == len(images) and not result.skipped
    for channel in ("DNA", "Actin"):
        names = sorted(r for r in images if channel_of(r) == channel)
        expected_function = calculate([images[r] for r in names], FAST)
        function = np.load(tmp_path / "out" / "illum" / f"P1_Illum{channel}.npy")
        np.testing.assert_array_equal(function, expected_function)
        assert (tmp_path / "out" / "illum" / f"P1_Illum{channel}.png").read_bytes()[:4] == b"\x89PNG"
        for relpath in names:
            written = tmp_path / "out" / "corrected" / relpath
            with tifffile.TiffFile(written) as tif:
                page = tif.pages.first
                assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE  # same as the input
                assert page.tags["XResolution"].value == (3, 2)
                corrected = page.asarray()
            assert corrected.dtype == np.uint16
            np.testing.assert_array_equal(corrected, apply_function(images[relpath], expected_function))


def test_manifest_and_loaddata_describe_the_outputs(tmp_path):
    images = write_plate(tmp_path / "in", sites=1)
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu")
    manifest = Manifest.load(result.manifest)
    for relpath in images:
        entry = manifest.files[f"corrected/{relpath}"]
        assert entry["sha256"] == file_sha256(tmp_path / "out" / "corrected" / relpath)
        assert entry["source"] == relpath
    assert manifest.settings["method"]["smoothing"] == "Median Filter"
    assert manifest.devices == ["cpu"] and "numpy" in manifest.versions and manifest.timings["total"] > 0
    records = read_loaddata(result.loaddata)
    listed = {Path(r.path).resolve() for r in records if not r.channel.startswith("Illum")}
    functions = {Path(r.path).resolve() for r in records if r.channel.startswith("Illum")}
    assert functions == {p.resolve() for p in result.functions.values()}
    assert listed == {(tmp_path / "out" / "corrected" / r).resolve() for r in images}
    text = result.loaddata.read_text()
    assert "FileName_IllumDNA" in text.splitlines()[0]


def test_compression_can_be_changed(tmp_path):
    write_plate(tmp_path / "in", wells=WELLS[:1], sites=1)
    run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu", compression="none")
    for path in (tmp_path / "out" / "corrected").rglob("*.tif"):
        with tifffile.TiffFile(path) as tiff:
            assert tiff.pages.first.compression == tifffile.COMPRESSION.NONE


def test_each_aggregation_corrects_every_image_with_its_own_function(tmp_path):
    images = write_plate(tmp_path / "in", wells=WELLS[:2], sites=1)
    each = FAST.replace(aggregation="Each")
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=each, device="cpu")
    assert not result.functions
    for relpath, image in images.items():
        function = calculate([image], each)[0]
        corrected = tifffile.imread(tmp_path / "out" / "corrected" / relpath)
        np.testing.assert_array_equal(corrected, apply_function(image, function))


@pytest.mark.parametrize("method", ["median", "tophat"])
def test_background_alone_is_one_pass_per_image(tmp_path, method):
    images = write_plate(tmp_path / "in", wells=WELLS[:2], sites=1)
    background = BackgroundSettings(method, 5)
    result = run_plate(tmp_path / "in", tmp_path / "out", background=background, device="cpu")
    assert not result.functions and not (tmp_path / "out" / "illum").exists()
    for relpath, image in images.items():
        corrected = tifffile.imread(tmp_path / "out" / "corrected" / relpath)
        np.testing.assert_array_equal(corrected, subtract_background(image, background))


def test_background_stage_is_the_registered_method_with_the_fast_median(rng):
    image = plate_image(rng)
    for background in (BackgroundSettings("median", 5), BackgroundSettings("tophat", 3)):
        method, settings = background.as_method()
        np.testing.assert_array_equal(method.correct(settings, image), subtract_background(image, background))
    with pytest.raises(ValueError, match="background"):
        BackgroundSettings("rolling", 5)


def test_function_and_background_combine(tmp_path):
    images = write_plate(tmp_path / "in", wells=WELLS[:2], sites=2)
    background = BackgroundSettings("tophat", 4)
    run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, background=background, device="cpu")
    names = sorted(r for r in images if channel_of(r) == "DNA")
    function = calculate([images[r] for r in names], FAST)
    for relpath in names:
        expected = subtract_background(apply_function(images[relpath], function), background)
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / relpath), expected)


def test_uint8_plate_keeps_uint8(tmp_path):
    images = write_plate(tmp_path / "in", dtype=np.uint8, wells=WELLS[:2])
    run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, device="cpu")
    for relpath in images:
        assert tifffile.imread(tmp_path / "out" / "corrected" / relpath).dtype == np.uint8


# ----------------------------------------------------------------------------- fixed-order reduction


def _records(tmp_path, count, rng):
    records = []
    for index in range(count):
        path = tmp_path / f"img{index:03d}.tif"
        tifffile.imwrite(path, plate_image(rng))
        records.append(ImageRecord(path=path, relpath=path.name, plate="P", well="B02", site=str(index), channel="DNA"))
    return records


def test_accumulation_is_fixed_order_whatever_the_threads(tmp_path, rng):
    records = _records(tmp_path, 2 * BATCH_SIZE + 5, rng)
    reader = CheckedReader(SHAPE, "uint16")
    settings = FAST.replace(resize_factor=1.0)
    # reference: one fresh accumulator per batch of BATCH_SIZE, merged in batch order
    expected = None
    for batch in fixed_batches(records):
        partial = IlluminationAccumulator(settings)
        for record in batch:
            partial.add(tifffile.imread(record.path))
        expected = partial if expected is None else expected.merge(partial)
    method, info = get_method("cellprofiler"), None
    for threads in (1, 4):  # the batch tasks run on that many threads; the partials merge in batch order
        from concurrent.futures import ThreadPoolExecutor

        merge = OrderedMerge()
        task = lambda numbered: reduce_batch(numbered, method, CellProfilerSettings(settings), info, reader, Device("cpu"), "fail")
        with ThreadPoolExecutor(threads) as pool:
            batches = list(enumerate(fixed_batches(records)))
            for (index, batch), (partial, skipped, used) in ordered_map(task, batches, pool, threads):
                assert not skipped and len(used) == len(batch)
                merge.push(index, partial)
        total = merge.result()
        assert total.count == len(records)
        np.testing.assert_array_equal(total.finalize(), expected.finalize())
        np.testing.assert_array_equal(total.average()[0], expected.average()[0])


def test_ordered_merge_waits_for_the_missing_batch():
    class Partial:
        def __init__(self, name):
            self.names = [name]

        def merge(self, other):
            self.names += other.names
            return self

    merge = OrderedMerge()
    for index in (2, 0, 3):
        merge.push(index, Partial(index))
    with pytest.raises(ValueError, match="batch 1 is missing"):
        merge.result()
    merge.push(1, None)  # a batch whose images were all skipped
    assert merge.result().names == [0, 2, 3]
    with pytest.raises(ValueError, match="merged already"):
        merge.push(0, Partial(0))


def test_ordered_map_keeps_order_and_bounds_the_read_ahead():
    from concurrent.futures import ThreadPoolExecutor

    lock, started, finished = threading.Lock(), [], []

    def work(item):
        with lock:
            started.append(item)
        time.sleep(0.002 * (item % 3))
        if item == 25:
            raise ValueError(f"item {item}: bad")
        return item * 10

    seen = []
    with ThreadPoolExecutor(4) as pool:
        for item, result in ordered_map(work, range(20), pool, depth=3):
            # never more than `depth` items submitted beyond the ones consumed
            assert len(started) <= len(seen) + 3
            seen.append(item)
            assert result == item * 10
        assert seen == list(range(20))
        # an error stops the map when its item's turn comes; the calls not started are cancelled
        with pytest.raises(ValueError, match="item 25: bad"):
            list(ordered_map(work, range(20, 40), pool, depth=3))
    assert len(started) < 40


def test_checked_reader_names_the_file(tmp_path):
    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros((8, 9), np.uint16))
    record = ImageRecord(path=path, relpath="x.tif", plate="P", well="B02", site="1", channel="DNA")
    image = tifffile.imread(path)
    with pytest.raises(ValueError, match=r"x\.tif: shape \(8, 9\) differs"):
        CheckedReader((8, 8), "uint16").check(record, image)
    with pytest.raises(ValueError, match=r"x\.tif: dtype uint16 differs"):
        CheckedReader((8, 9), "uint8").check(record, image)


# ----------------------------------------------------------------------------- paths, progress


@pytest.mark.parametrize(
    "option, message",
    [
        (dict(on_error="ignore"), r"^on_error: expected one of 'fail', 'skip', got 'ignore'$"),
        (dict(passes=()), r"^passes: expected a subset of"),
        (dict(passes=("calc", "fix")), r"^passes: expected one of 'calc', 'apply', got 'fix'$"),
        (dict(workers=0), r"^workers: expected an integer >= 1, got 0$"),
        (dict(workers=1.5), r"^workers: expected an integer >= 1, got 1.5$"),
        (dict(workers=True), r"^workers: expected an integer >= 1, got True$"),
    ],
)
def test_bad_job_options_are_one_line_job_errors(tmp_path, option, message):
    (tmp_path / "in").mkdir()
    with pytest.raises(JobError, match=message):
        run_plate(tmp_path / "in", tmp_path / "out", **option)
    assert not (tmp_path / "out").exists()


def test_output_folder_must_not_overlap_the_input(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(JobError, match="is the input folder"):
        check_paths(tmp_path / "in", tmp_path / "in")
    with pytest.raises(JobError, match="inside the input folder"):
        check_paths(tmp_path / "in", tmp_path / "in" / "out")
    (tmp_path / "corrected" / "plate").mkdir(parents=True)
    with pytest.raises(JobError, match="where outputs are written"):
        check_paths(tmp_path / "corrected" / "plate", tmp_path)  # OUT/corrected/<relpath> would be the input
    check_paths(tmp_path / "in", tmp_path / "out")
    check_paths(tmp_path / "in", tmp_path)  # INPUT inside OUT but away from OUT/corrected and OUT/illum


def test_progress_bar_draws_count_rate_and_eta():
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    with Progress(4, "apply P/DNA", stream=stream, min_interval=0) as bar:
        bar.update(2)
        assert "2/4" in bar.line() and "img/s" in bar.line() and "ETA" in bar.line()
        bar.update(2)
    assert "4/4" in stream.getvalue() and stream.getvalue().endswith("\n")
    quiet = io.StringIO()  # not a terminal: nothing drawn unless enabled
    with Progress(3, "calc", stream=quiet) as bar:
        bar.update(3)
    assert quiet.getvalue() == ""


PLATE_STAGES = ("accumulate", "finalize", "apply")


def test_the_stage_watch_sees_where_a_plate_job_ran(tmp_path, stage_inputs):
    # the GPU plate tests' evidence, checked here on the CPU: every stage of a CPU run got host data,
    # and the assertion those tests make about a GPU run fails on it
    write_plate(tmp_path / "in", wells=("B02", "C03"), sites=2)
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, layout="gpuillum", device="cpu",
                       background=BackgroundSettings("median", 5))
    seen = stage_inputs.take()
    assert_stages_ran_on(seen, "host", PLATE_STAGES + ("median background",))
    with pytest.raises(AssertionError, match="stages that got data off the device"):
        assert_stages_ran_on(seen, "device", PLATE_STAGES)
    assert stage_inputs.take() == {} and Manifest.load(result.manifest).devices == ["cpu"]


@pytest.mark.gpu
def test_gpu_run_matches_cpu_run(tmp_path, stage_inputs):
    images = write_plate(tmp_path / "in", sites=10)  # > BATCH_SIZE images per channel: pinned batches and merges
    on_cpu = run_plate(tmp_path / "in", tmp_path / "cpu", settings=FAST, layout="gpuillum", device="cpu", threads=2)
    assert_stages_ran_on(stage_inputs.take(), "host", PLATE_STAGES)
    on_gpu = run_plate(tmp_path / "in", tmp_path / "gpu", settings=FAST, layout="gpuillum", device="gpu", threads=2)
    assert_stages_ran_on(stage_inputs.take(), "device", PLATE_STAGES)  # no stage fell back to the host
    assert Manifest.load(on_cpu.manifest).devices == ["cpu"] and Manifest.load(on_gpu.manifest).devices == ["cuda:0"]
    for channel in ("DNA", "Actin"):
        cpu = np.load(tmp_path / "cpu" / "illum" / f"P1_Illum{channel}.npy")
        gpu = np.load(tmp_path / "gpu" / "illum" / f"P1_Illum{channel}.npy")
        np.testing.assert_allclose(gpu, cpu, rtol=1e-5)
    for relpath in images:
        cpu = tifffile.imread(tmp_path / "cpu" / "corrected" / relpath).astype(np.int64)
        gpu = tifffile.imread(tmp_path / "gpu" / "corrected" / relpath).astype(np.int64)
        assert np.abs(gpu - cpu).max() <= 1  # float32 rounding of the function may move a value by one count


def test_file_names_of_the_longest_legal_length_are_corrected(tmp_path):
    # issue 17, case 5: a 254-byte image name and a 255-byte function name (legal on Linux) must not
    # fail in pass 2 because their temporaries add ~20 bytes
    import os

    channel = "C" * (os.pathconf(tmp_path, "PC_NAME_MAX") - len("P1_Illum.npy"))
    images = write_plate(tmp_path / "in", wells=("B02",), sites=1, channels=("DNA", channel))
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=FAST, layout="gpuillum", device="cpu")
    assert len(result.written) == len(images) and not result.skipped
    long_name = tmp_path / "out" / "corrected" / f"P1/B02_s1_{channel}.tif"
    assert tifffile.imread(long_name).dtype == np.uint16
    assert (tmp_path / "out" / "illum" / f"P1_Illum{channel}.npy").is_file()


def test_wide_images_are_processed_with_a_preview(tmp_path):
    # issue 17, case 3: 4 x 3000 images failed after writing an unlisted illum/*.npy ("has no finite
    # values": the preview's shrink rounded 4 rows to 0), and --resume failed the same way
    import json

    images = write_plate(tmp_path / "in", wells=("B02",), sites=2, shape=(4, 3000))
    settings = FAST.replace(resize_factor=1)
    result = run_plate(tmp_path / "in", tmp_path / "out", settings=settings, layout="gpuillum", device="cpu")
    assert len(result.written) == len(images)
    files = json.loads((tmp_path / "out" / "manifest.json").read_text())["files"]
    assert {"illum/P1_IllumDNA.npy", "illum/P1_IllumDNA.png"} <= set(files)
    again = run_plate(tmp_path / "in", tmp_path / "out", settings=settings, layout="gpuillum", device="cpu", resume=True)
    assert sorted(again.reused) == sorted(images) and not again.written


@pytest.mark.parametrize(
    "option, error, message",
    [  # issue 17, case 13: the API's arguments get the CLI's checks and one-line messages
        (dict(settings={"smoothing": "x"}), JobError, r"^settings: expected a CalculateSettings, got dict \(CalculateSettings\(\*\*"),
        (dict(settings="jump"), JobError, r"^settings: expected a CalculateSettings, got str \(preset\('jump'\)"),
        (dict(threads="2"), JobError, r"^threads: expected an integer >= 1, got '2'$"),
        (dict(threads=0), JobError, r"^threads: expected an integer >= 1, got 0$"),
        (dict(background={"method": "median"}), JobError, r"^background: expected a BackgroundSettings"),
        (dict(loaddata=5), JobError, r"^loaddata: expected a path \(str, bytes or os\.PathLike\), got int$"),
        (dict(pattern=b"(?P<well>.*)"), JobError, r"^pattern: expected a str, got bytes$"),
        (dict(compression="jpeg"), JobError, r"^compression: expected one of 'same', 'none', .*got 'jpeg'$"),
        (dict(functions={"DNA": 5}, passes=("apply",)), JobError, r"^functions: expected a path \(str, bytes or os\.PathLike\)"),
        (dict(log="print"), JobError, r"^log: expected a callable taking one line of text, or None, got str$"),
        (dict(device=5), JobError, r"^device: expected auto, cpu, gpu or cuda:N, got 5$"),
    ],
)
def test_bad_api_arguments_are_one_line_errors_before_out_exists(tmp_path, option, error, message):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    with pytest.raises(error, match=message) as caught:
        run_plate(tmp_path / "in", tmp_path / "out", **{"device": "cpu", **option})
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_api_paths_may_be_bytes_and_a_non_path_is_one_line(tmp_path):
    import os

    from gpuillum.job import apply_plate, calc_plate, plan_plate

    images = write_plate(tmp_path / "in", wells=("B02",), sites=1)
    result = calc_plate(os.fsencode(tmp_path / "in"), os.fsencode(tmp_path / "out"), settings=FAST, device="cpu")
    assert sorted(result.functions) == [("P1", "Actin"), ("P1", "DNA")]
    result = apply_plate(os.fsencode(tmp_path / "in"), tmp_path / "out", functions=os.fsencode(tmp_path / "out" / "illum"), device="cpu")
    assert len(result.written) == len(images)
    assert len(plan_plate(os.fsencode(tmp_path / "in")).records) == len(images)
    for call in (lambda: run_plate(5, tmp_path / "x"), lambda: run_plate(tmp_path / "in", None), lambda: plan_plate(None)):
        with pytest.raises(JobError, match=r"^(INPUT|OUT): expected a path \(str, bytes or os\.PathLike\), got (int|NoneType)$"):
            call()


def test_kernel_entry_points_refuse_a_missing_argument_in_one_line(tmp_path):
    from gpuillum.methods.cellprofiler.functions_io import load_function, save_function

    with pytest.raises(TypeError, match=r"^images: expected a sequence of 2-D images or a 3-D stack \(n, H, W\), got NoneType$"):
        calculate(None)
    with pytest.raises(TypeError, match=r"^settings: expected a CalculateSettings, got dict"):
        IlluminationAccumulator({})
    with pytest.raises(TypeError, match=r"^path: expected a path \(str, bytes or os\.PathLike\), got NoneType$"):
        load_function(None)
    with pytest.raises(TypeError, match=r"^path: expected a path \(str, bytes or os\.PathLike\), got NoneType$"):
        save_function(None, np.ones((4, 4), np.float32))
    save_function(bytes(tmp_path / "f.npy"), np.ones((4, 4), np.float32))
    np.testing.assert_array_equal(load_function(bytes(tmp_path / "f.npy")), np.ones((4, 4), np.float32))
