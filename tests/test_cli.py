"""The command line end to end on small synthetic plates: every layout, plan, calc + apply,
CellProfiler-made functions, background subtraction, demo, and one real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from gpuillum.correct import apply as apply_function
from gpuillum.methods.cellprofiler import calculate, preset

from test_engine import PATTERN, UUID, write_plate

FAST_ARGS = ["--preset", "jump", "--resize-factor", "0.5", "--filter-size", "6", "--device", "cpu", "-q"]
FAST = preset("jump").replace(resize_factor=0.5, manual_size=6)
# the options that give test_engine.FAST, without -q (for the resume tests)
ARGS_RESUME = ["--preset", "jump", "--resize-factor", "0.5", "--filter-size", "6", "--device", "cpu", "--quiet"]


def corrected_files(out):
    return sorted(p.relative_to(out / "corrected").as_posix() for p in (out / "corrected").rglob("*.tif*"))


def read_all(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("layout", ["gpuillum", "imagexpress", "operetta", "pattern"])
def test_run_every_layout(tmp_path, layout):
    images = write_plate(tmp_path / "in", layout=layout, plates=("P1", "P2"), sites=1)
    naming = ["--pattern", PATTERN] if layout == "pattern" else ["--layout", layout]
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *naming, *FAST_ARGS]) == 0
    assert corrected_files(tmp_path / "out") == sorted(images)
    functions = sorted(p.name for p in (tmp_path / "out" / "illum").glob("*.npy"))
    channels = ("DNA", "Actin") if layout in ("gpuillum", "pattern") else ("1", "2")
    assert functions == sorted(f"{plate}_Illum{channel}.npy" for plate in ("P1", "P2") for channel in channels)
    # the function of one plate and channel is the library's, from that plate's images only
    key = "DNA" if channels[0] == "DNA" else "1"
    members = [image for relpath, image in images.items() if relpath.startswith("P2/") and
               (relpath.endswith(f"_{key}.tif") or relpath.endswith(f"-{key}.tif") or f"_w{key}{UUID}" in relpath
                or f"-ch{key}sk" in relpath)]
    assert len(members) == 4
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "illum" / f"P2_Illum{key}.npy"), calculate(members, FAST))


def test_loaddata_input(tmp_path):
    images = write_plate(tmp_path / "in", sites=1)
    csv = tmp_path / "in.csv"
    lines = ["FileName_DNA,PathName_DNA,FileName_Actin,PathName_Actin,Metadata_Plate,Metadata_Well,Metadata_Site,Metadata_Compound"]
    compounds = {"B02": "DMSO", "B03": "taxol", "C02": "DMSO", "C03": '"nocodazole, 1 uM"'}
    for well in ("B02", "B03", "C02", "C03"):
        folder = tmp_path / "in" / "P1"
        lines.append(f"{well}_s1_DNA.tif,{folder},{well}_s1_Actin.tif,{folder},P1,{well},1,{compounds[well]}")
    csv.write_text("\n".join(lines) + "\n")
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--loaddata", str(csv), *FAST_ARGS]) == 0
    assert corrected_files(tmp_path / "out") == sorted(images)
    assert sorted(p.name for p in (tmp_path / "out" / "illum").glob("*.npy")) == ["P1_IllumActin.npy", "P1_IllumDNA.npy"]
    # the output LoadData CSV keeps the input's other metadata, for the CellProfiler pipeline downstream
    import csv as csv_module

    with open(tmp_path / "out" / "corrected" / "load_data.csv", newline="") as handle:
        rows = list(csv_module.DictReader(handle))
    assert {row["Metadata_Well"]: row["Metadata_Compound"] for row in rows} == {**compounds, "C03": "nocodazole, 1 uM"}


def test_plan_lists_plates_channels_counts_shape_and_problems(tmp_path, capsys):
    write_plate(tmp_path / "in", plates=("P1", "P2"))
    assert main(["plan", str(tmp_path / "in")]) == 0
    text = capsys.readouterr().out
    assert "2 plates" in text and "Actin, DNA" in text and "64x80 uint16" in text and "8 images" in text
    assert not any(p.name != "in" for p in tmp_path.iterdir())  # nothing written
    tifffile.imwrite(tmp_path / "in" / "P1" / "B02_s1_DNA.tif", np.zeros((64, 80), np.uint8))
    assert main(["plan", str(tmp_path / "in")]) == 2
    text = capsys.readouterr().out
    assert "P1/B02_s1_DNA.tif" in text and "uint8" in text


def test_plan_warns_of_a_channel_with_too_few_images_for_a_function(tmp_path, capsys):
    from gpuillum.job import MIN_IMAGES as MIN_IMAGES_ALL

    write_plate(tmp_path / "small", wells=("B02", "B03"), sites=2)
    assert main(["plan", str(tmp_path / "small")]) == 0  # a warning, not a problem
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: plate P1, channel {channel}: only 4 images; an illumination function from so few images "
                        f"follows the cells, not the illumination (use {MIN_IMAGES_ALL} or more)" for channel in ("Actin", "DNA")]
    write_plate(tmp_path / "big", wells=("B02", "B03", "B04", "B05", "B06"), sites=MIN_IMAGES_ALL // 5)
    assert main(["plan", str(tmp_path / "big")]) == 0
    assert "warning" not in capsys.readouterr().out


def test_ignore_unmatched_corrects_only_the_plate_a_pattern_selects(tmp_path, capsys):
    import json

    from gpuillum.job import plan_command

    images = write_plate(tmp_path / "in", plates=("P1", "P2"))
    pattern = r"(?P<plate>P1)/(?P<well>[A-Z]\d\d)_s(?P<site>\d+)_(?P<channel>\w+)\.tif"
    args = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--pattern", pattern, *FAST_ARGS]
    assert main(args) == 2  # P2's files are problems by default: a pattern typo must not drop files silently
    err = capsys.readouterr().err
    assert "P2/B02_s1_Actin.tif: not matched by the pattern" in err and "(only the files not named: --ignore-unmatched)" in err
    assert not (tmp_path / "out").exists()
    assert main(args + ["--ignore-unmatched"]) == 0
    assert corrected_files(tmp_path / "out") == sorted(relpath for relpath in images if relpath.startswith("P1/"))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["discovery"]["ignore_unmatched"] is True
    assert main(args + ["--ignore-unmatched", "--resume"]) == 0  # the same run
    assert main(["plan", str(tmp_path / "in"), "--pattern", pattern, "--ignore-unmatched"]) == 0
    assert "not named by the pattern, ignored as asked" in capsys.readouterr().out
    assert plan_command("in", pattern="x", ignore_unmatched=True) == "gpuillum plan in --pattern x --ignore-unmatched"
    assert main(["plan", str(tmp_path / "in"), "--loaddata", str(tmp_path / "x.csv"), "--ignore-unmatched"]) == 2


def test_calc_then_apply_equals_run(tmp_path):
    write_plate(tmp_path / "in")
    assert main(["run", str(tmp_path / "in"), "-o", str(tmp_path / "whole"), *FAST_ARGS]) == 0
    assert main(["calc", str(tmp_path / "in"), "-o", str(tmp_path / "split"), *FAST_ARGS]) == 0
    assert not (tmp_path / "split" / "corrected").exists()
    assert main(["apply", str(tmp_path / "in"), "-o", str(tmp_path / "split"), "--device", "cpu", "-q"]) == 0
    whole, split = read_all(tmp_path / "whole"), read_all(tmp_path / "split")
    for name in whole:
        if name.endswith((".tif", ".npy")):
            assert whole[name] == split[name], name


def test_apply_with_a_cellprofiler_function(tmp_path):
    """A function made elsewhere (CellProfiler saves float32 .npy or MATLAB .mat) applied per channel."""
    import scipy.io

    images = write_plate(tmp_path / "in", wells=("B02",), sites=2)
    y, x = np.mgrid[:64, :80]
    dna = (1.0 + 0.5 * np.exp(-((y - 30) ** 2 + (x - 45) ** 2) / 800.0)).astype(np.float32)
    actin = np.flipud(dna).copy()
    np.save(tmp_path / "P1_IllumDNA.npy", dna)
    scipy.io.savemat(tmp_path / "actin.mat", {"Image": actin.astype(np.float64)})
    assert main(["apply", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--function", f"DNA={tmp_path / 'P1_IllumDNA.npy'}",
                 "--function", f"Actin={tmp_path / 'actin.mat'}", "--device", "cpu", "-q"]) == 0
    for relpath, image in images.items():
        function = dna if relpath.endswith("_DNA.tif") else actin
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / relpath), apply_function(image, function))
    # a folder of CellProfiler-named functions works the same way
    np.save(tmp_path / "P1_IllumActin.npy", actin)
    assert main(["apply", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "--functions", str(tmp_path), "--device", "cpu", "-q"]) == 0
    assert read_all(tmp_path / "out" / "corrected").keys() == read_all(tmp_path / "out2" / "corrected").keys()


def test_cellprofiler_options_and_background(tmp_path):
    images = write_plate(tmp_path / "in", wells=("B02", "B03"), sites=2)
    argv = ["run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aggregation", "All", "--smoothing", "gaussian",
            "--filter-size", "8", "--rescale", "No", "--background", "tophat", "--background-radius", "4", "--device", "cpu", "-q"]
    assert main(argv) == 0
    from test_engine import subtract_background

    from gpuillum.job import BackgroundSettings

    # without --preset/--cppipe the options modify the jump preset (resize x0.2 kept)
    settings = preset("jump").replace(smoothing="Gaussian Filter", manual_size=8, rescale="No")
    names = sorted(r for r in images if r.endswith("_DNA.tif"))
    function = calculate([images[r] for r in names], settings)
    for relpath in names:
        expected = subtract_background(apply_function(images[relpath], function), BackgroundSettings("tophat", 4))
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "corrected" / relpath), expected)


def test_cppipe_settings(tmp_path, data_set):
    write_plate(tmp_path / "in", wells=("B02",), sites=2)
    pipeline = data_set("bbbc013_plate") / "ExampleSBSIllumination.cppipe"
    assert main(["calc", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--cppipe", str(pipeline), "--filter-size-method",
                 "Manually", "--filter-size", "6", "--device", "cpu", "-q"]) == 0
    import json

    settings = json.loads((tmp_path / "out" / "manifest.json").read_text())["settings"]["method"]
    assert settings["rescale"] == "Yes" and settings["smoothing"] == "Median Filter" and settings["manual_size"] == 6


def test_demo_small(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "demo"), "--shape", "96x96", "--wells", "2", "--sites", "2", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "r = " in text and "flat-field CV" in text and "before_after.png" in text
    assert (tmp_path / "demo" / "before_after.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "demo" / "results" / "corrected").rglob("*.tif"))) == 8
    # both comparisons, labelled; the divide-only one is against dark + flat * background (truth.json)
    import json
    import re

    from gpuillum.qc.metrics import compare_to_truth

    truth_dir = tmp_path / "demo" / "plate" / "truth"
    truth = json.loads((truth_dir / "truth.json").read_text())["channels"]
    function = np.load(tmp_path / "demo" / "results" / "illum" / "DEMO_IllumDNA.npy")
    ideal = np.load(truth_dir / "DEMO_dark_DNA.npy") + np.load(truth_dir / "DEMO_flat_DNA.npy") * truth["DNA"]["background"]
    expected = compare_to_truth(function, ideal)
    line = next(row for row in text.splitlines() if row.strip().startswith("DNA: vs the best a divide-only function can do"))
    assert "camera offset included" in line
    assert float(re.search(r"r = ([-0-9.]+)", line).group(1)) == pytest.approx(expected["pearson_r"], abs=6e-4)
    assert "DNA: vs true flat field: r = " in text and "method: Regular, All: Across cycles" in text


def test_demo_again_into_the_same_out_replaces_the_earlier_demo_and_quiet_prints_nothing(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", str(out), "--shape", "64x64", "--wells", "3", "--sites", "2", "--device", "cpu", "-q"]) == 0
    assert main(["demo", str(out), "--shape", "48x40", "--wells", "1", "--sites", "2", "--device", "cpu", "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    for folder in (out / "plate" / "DEMO", out / "results" / "corrected" / "DEMO"):
        images = sorted(folder.glob("*.tif"))
        assert len(images) == 4 and {tifffile.imread(path).shape for path in images} == {(48, 40)}
    assert np.load(out / "results" / "illum" / "DEMO_IllumDNA.npy").shape == (48, 40)


def test_demo_refuses_an_out_whose_plate_folder_it_did_not_make(tmp_path, capsys):
    (tmp_path / "demo" / "plate").mkdir(parents=True)
    (tmp_path / "demo" / "plate" / "mine.tif").write_bytes(b"precious")
    assert main(["demo", str(tmp_path / "demo"), "--shape", "32", "--wells", "1", "--sites", "1", "--device", "cpu", "-q"]) == 2
    assert "is not a gpuillum demo plate" in capsys.readouterr().err
    assert (tmp_path / "demo" / "plate" / "mine.tif").read_bytes() == b"precious"
    assert not (tmp_path / "demo" / "results").exists()


def test_a_second_demo_into_an_out_where_one_runs_is_refused(tmp_path, capsys):
    import threading

    from gpuillum.io.run_lock import folder_lock

    (tmp_path / "demo" / "results").mkdir(parents=True)
    codes = []
    with folder_lock(tmp_path / "demo" / "results"):  # the demo running there
        thread = threading.Thread(target=lambda: codes.append(main(["demo", str(tmp_path / "demo"), "--shape", "32",
                                                                      "--wells", "1", "--sites", "1", "-q"])))
        thread.start()
        thread.join()
    assert codes == [2] and "another gpuillum run" in capsys.readouterr().err
    assert not (tmp_path / "demo" / "plate").exists()


def test_demo_defaults_use_enough_images():
    from gpuillum.cli import build_parser
    from gpuillum.job import MIN_IMAGES as MIN_IMAGES_ALL

    args = build_parser().parse_args(["demo"])
    assert args.wells * args.sites >= 5 * MIN_IMAGES_ALL


def test_python_dash_m_and_console_script(tmp_path):
    write_plate(tmp_path / "in", wells=("B02",), sites=1)
    env = dict(os.environ, GPUILLUM_DISABLE_GPU="1")
    done = subprocess.run([sys.executable, "-m", "gpuillum", "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *FAST_ARGS],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert corrected_files(tmp_path / "out") == ["P1/B02_s1_Actin.tif", "P1/B02_s1_DNA.tif"]
    script = Path(sys.executable).with_name("gpuillum")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("gpuillum ")


@pytest.mark.parametrize("command", ["run", "calc", "apply", "plan"])
def test_help_documents_inputs_outputs_and_defaults(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "INPUT a plate folder, a folder of images or stacks, or one image or stack file" in text
    if command != "plan":
        assert "-o OUT, --out OUT output folder" in text
    if command in ("run", "calc"):
        for needle in ("by default the jump preset", "Regular or Background (default: Regular)", "default: Median Filter",
                       "(default: Yes", "default: All: Across cycles", "default: 20)", "(default: 60)", "(default: 0.2"):
            assert needle in text, needle
    if command in ("run", "apply"):
        assert "(required with --background)" in text


def test_demo_help_states_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 0)" in text and "(default 384x384)" in text and "(default 24)" in text and "(default 8;" in text
