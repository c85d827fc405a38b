"""QC metrics against synthetic truth, the verdicts, the run's OUT/qc, the qc and compare commands, the
figures, and the HTML report in a real headless browser (Debian's chromium)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image

from gpuillum.demo.variants import ShadingCase
from gpuillum.model import IlluminationModel
from gpuillum.qc.group import group_qc, measure, model_metrics
from gpuillum.qc.maps import _blocks, grid_shape, image_maps
from gpuillum.qc.shading import shading, smooth_fit

pytestmark = pytest.mark.qc  # these tests are about the per-run QC: keep it on (conftest)


def true_block_p2v(field):
    block = _blocks(field, grid_shape(field.shape), np).mean(axis=(2, 3))
    return shading(block)["peak_to_valley"]


@pytest.fixture(scope="module")
def vignetted():
    case = ShadingCase("vignetting", depth=1.6, dark=100, coverage=(0.10, 0.20), images=24, shape=(192, 192), seed=5)
    return case, case.images_uint16()


# ---------------------------------------------------------------- metrics against synthetic truth


def test_background_map_ignores_cells_and_recovers_the_level():
    case = ShadingCase("flat", depth=1.0, dark=50, background=400, coverage=(0.25, 0.4), images=1, seed=1)
    maps = image_maps(case.images_uint16()[0])
    # the true background is 450 counts everywhere; cells cover a quarter or more of the field
    assert np.median(maps.background) == pytest.approx(450, rel=0.015)  # dim cell edges within 3 noise SD: +1 %
    assert np.mean(np.abs(maps.background / 450 - 1) < 0.03) > 0.5  # blocks wholly inside cells are left to the group's low quantile
    assert np.median(maps.noise) == pytest.approx(np.sqrt(400 + 4), rel=0.3)  # shot + read noise (+ cell edges)


@pytest.mark.parametrize("kind", ["vignetting", "gaussian", "ramp", "spot"])
def test_before_tracks_the_true_shading_and_after_falls_with_the_model_error(kind):
    case = ShadingCase(kind, depth=1.5, dark=0, coverage=(0.10, 0.20), images=20, shape=(192, 192), seed=2)
    raw, truth = case.images_uint16(), case.flat()
    before = measure(raw)["background"]
    assert before["peak_to_valley"] == pytest.approx(true_block_p2v(truth), rel=0.15, abs=0.02)
    residuals = []
    for error in (0.0, 0.1, 0.2):
        model = truth * (1 + error * np.linspace(-1, 1, truth.shape[1])[None, :])
        residuals.append(measure([(image / model).astype(np.float32) for image in raw])["background"]["peak_to_valley"])
    assert residuals[0] < 0.02 and residuals[0] < residuals[1] < residuals[2]
    assert residuals[2] == pytest.approx(0.4 / 1.0, rel=0.25)  # a +-20 % ramp: 40 % peak-to-valley


def test_centre_corner_and_profiles_see_vignetting(vignetted):
    case, raw = vignetted
    before = measure(raw)
    centre_corner_truth = shading(_blocks(case.dark + case.flat() * case.background, grid_shape(case.shape), np)
                                  .mean(axis=(2, 3)))["centre_corner"]
    assert before["background"]["centre_corner"] == pytest.approx(centre_corner_truth, rel=0.03)
    radial = [v for v in before["background"]["radial"] if v is not None]
    assert radial[0] > radial[-1]  # brighter at the centre than in the corners


def test_gain_map_sees_the_flat_field_through_a_camera_offset():
    case = ShadingCase("ramp", depth=1.6, dark=400, coverage=(0.15, 0.25), images=40, shape=(192, 192), seed=3)
    raw, truth = case.images_uint16(), case.flat()
    before = measure(raw)
    perfect = measure([((image - case.dark) / truth).astype(np.float32) for image in raw])
    # the offset hides much of the shading from the background, not from the cells' gain
    assert before["gain"]["peak_to_valley"] > 1.5 * before["background"]["peak_to_valley"]
    assert perfect["gain"]["peak_to_valley"] < 0.8 * before["gain"]["peak_to_valley"]  # a coarse, noisy map: cells vary 30 %


def test_contrast_rises_when_shading_is_removed(vignetted):
    case, raw = vignetted
    before = measure(raw)
    after = measure([((image - case.dark) / case.flat()).astype(np.float32) for image in raw])
    assert after["contrast"] > 1.3 * before["contrast"]


def test_model_metrics_against_the_truth(vignetted):
    case, raw = vignetted
    truth = case.flat()
    dark = case.darkfield()
    metrics = model_metrics(IlluminationModel(flatfield=truth, darkfield=dark), raw_level=float(np.median(raw[0])))
    assert metrics["vignetting_depth"] == pytest.approx(truth.max() / truth.min(), rel=1e-4)
    assert metrics["darkfield_level"] == pytest.approx(case.dark)
    assert metrics["roughness"] < 0.005  # optics: a smooth surface (a function from one image: see the verdict tests)


def test_smooth_fit_is_exact_for_low_order_surfaces():
    y, x = np.mgrid[0:12, 0:16] / 10.0
    surface = 1 + 0.3 * y - 0.2 * x * x + 0.05 * x * y
    np.testing.assert_allclose(smooth_fit(surface), surface, atol=1e-10)


def test_a_removed_background_has_no_relative_shading_and_no_warning():
    rng = np.random.default_rng(1)
    subtracted = [rng.normal(0, 5, (64, 64)).astype(np.float32) for _ in range(4)]  # what Subtract leaves
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = measure(subtracted)
    assert result["background"]["peak_to_valley"] is None and "noise" in result["background"]["reason"]


# ---------------------------------------------------------------- verdicts


def test_needed_is_no_on_flat_sets_and_yes_on_shaded_ones():
    flat = ShadingCase("flat", depth=1.0, dark=100, coverage=(0.25, 0.4), images=16, seed=4).images_uint16()
    assert group_qc("flat", flat)["needed"] is False
    shaded = ShadingCase("spot", depth=1.3, dark=100, images=16, seed=4).images_uint16()
    qc = group_qc("spot", shaded)
    assert qc["needed"] is True and qc["worked"] is None and "threshold" in qc["evidence"]["needed"]


def test_worked_for_a_good_correction_and_flags_for_bad_ones(vignetted):
    case, raw = vignetted
    truth = case.flat()
    good = IlluminationModel(flatfield=truth, darkfield=case.darkfield(), info={"images": 24})
    qc = group_qc("g", raw, [good.apply(image, output_dtype="float32") for image in raw], model=good)
    assert qc["worked"] is True and qc["flags"] == []
    over = IlluminationModel(flatfield=truth**2.5 / np.mean(truth**2.5), darkfield=case.darkfield(), info={"images": 24})
    qc = group_qc("g", raw, [over.apply(image, output_dtype="float32") for image in raw], model=over)
    kinds = {flag["kind"] for flag in qc["flags"]}
    assert qc["worked"] is False and "over-corrected" in kinds and "worse" in kinds


def test_a_function_from_one_image_follows_the_cells_and_is_a_verdict(vignetted):
    from gpuillum.methods.cellprofiler import IlluminationAccumulator, preset

    case, raw = vignetted
    function = IlluminationAccumulator(preset("jump")).add(raw[0]).finalize(raw[0].shape)
    model = IlluminationModel.from_function(function, "Divide", info={"images": 1})
    qc = group_qc("one", raw, [model.apply(image, output_dtype="float32") for image in raw], model=model)
    kinds = {flag["kind"] for flag in qc["flags"]}
    assert qc["worked"] is False and {"few-images", "rough"} <= kinds


# ---------------------------------------------------------------- figures


def test_figures_are_matplotlib_pngs(tmp_path, vignetted):
    from gpuillum.qc import figures

    case, raw = vignetted
    figures.before_after(raw[0], (raw[0] - case.dark) / case.flat(), tmp_path / "ba.png", title="t")
    figures.function_preview(case.flat(), tmp_path / "f.png", title="flat")
    figures.model_figure(IlluminationModel(flatfield=case.flat(), darkfield=case.darkfield()), tmp_path / "m.png")
    figures.methods_panel({"raw": raw[0], "a": raw[1]}, tmp_path / "p.png")
    figures.profiles_figure(measure(raw), None, tmp_path / "r.png")
    for name in ("ba", "f", "m", "p", "r"):
        with Image.open(tmp_path / f"{name}.png") as picture:
            assert picture.format == "PNG" and picture.size[0] > 300
    with pytest.raises(ValueError, match="after: shape"):
        figures.before_after(np.ones((8, 8)), np.ones((8, 9)), tmp_path / "x.png")


def test_brightened_limits_span_the_background_not_the_cells(vignetted):
    from gpuillum.qc.figures import brightened_limits

    case, raw = vignetted
    lo, hi = brightened_limits(raw[0])
    background = case.dark + case.flat() * case.background
    assert lo < background.min() + 30 and background.max() - 30 < hi < background.max() + 250  # cells reach 2000+


@pytest.mark.parametrize("shape", [(16, 10000), (10000, 16), (4, 3000)])
def test_function_preview_of_wide_or_tall_functions(tmp_path, shape):
    from gpuillum.qc.figures import function_preview

    rows, cols = np.mgrid[: shape[0], : shape[1]]
    function_preview((1.0 + rows / shape[0] + cols / shape[1]).astype(np.float32), tmp_path / "w.png")
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


def test_plate_layout_places_sites_in_their_wells():
    from gpuillum.qc.plate import layout_grid

    grid, ((row_ticks, row_labels), (col_ticks, col_labels)) = layout_grid({("B03", 1): 1.0, ("B03", 4): 4.0, ("C05", 2): 7.0})
    assert grid.shape == (4, 6) and row_labels == ["B", "C"] and col_labels == ["3", "4", "5"]
    assert grid[0, 0] == 1.0 and grid[1, 1] == 4.0 and grid[2, 5] == 7.0 and np.isnan(grid[0, 2])


# ---------------------------------------------------------------- the run's QC, the commands


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    from gpuillum.demo.synthetic import make_synthetic_plate

    folder = tmp_path_factory.mktemp("plate")
    make_synthetic_plate(folder, rows="BC", cols=(3, 4, 5, 6), sites=3, channels=("DNA",), shape=(128, 128), seed=3)
    return folder


def test_every_run_writes_its_qc_and_states_the_verdict(plate, tmp_path):
    from gpuillum.job import run

    lines = []
    result = run(plate, tmp_path / "out", layout="gpuillum", log=lines.append)
    qc_dir = tmp_path / "out" / "qc"
    data = json.loads((qc_dir / "qc.json").read_text())
    (group,) = data["groups"]
    assert group["needed"] is True and group["worked"] in (True, False) and group["metrics"]["after"] is not None
    assert {"before_after", "model", "profiles", "plate"} <= {p.stem.rsplit("_", 1)[-1] if not p.stem.endswith("after")
                                                              else "before_after" for p in qc_dir.glob("*.png")}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    entry = manifest["qc"]["plate DEMO, channel DNA"]
    assert entry["needed"] is True and "evidence" in entry and "pixels" in entry and "qc" in manifest["timings"]
    assert result.qc["plate DEMO, channel DNA"]["needed"] is True
    assert any(line.startswith("qc plate DEMO, channel DNA: correction needed: yes") for line in lines)
    html_text = (qc_dir / "report.html").read_text()
    assert html_text.count("data:image/png;base64,") == len(list(qc_dir.glob("*.png")))
    assert "http://" not in html_text and "https://" not in html_text and "<script" not in html_text


def test_no_qc_writes_nothing(plate, tmp_path):
    from gpuillum.job import run

    result = run(plate, tmp_path / "out", layout="gpuillum", qc=False)
    assert not (tmp_path / "out" / "qc").exists() and "qc" not in json.loads(result.manifest.read_text())["timings"]
    with pytest.raises(ValueError, match="qc: expected True or False"):
        run(plate, tmp_path / "o2", layout="gpuillum", qc="no")


def test_method_auto_records_its_choice(plate, tmp_path):
    from gpuillum.job import run

    result = run(plate, tmp_path / "out", layout="gpuillum", method="auto", options={"candidates": "jump,polynomial"})
    model = IlluminationModel.load(next(iter(result.functions.values())))
    record = model.info["auto"]
    assert record["chosen"] in ("jump", "polynomial") and set(record["scores"]) == {"jump", "polynomial"}
    best = min(record["scores"], key=lambda k: record["scores"][k]["background_peak_to_valley"])
    assert record["chosen"] == best or "tied" in record["why"]
    manifest = json.loads(result.manifest.read_text())
    assert manifest["qc"]["plate DEMO, channel DNA"]["auto"]["chosen"] == record["chosen"]


def test_auto_refuses_unknown_or_per_image_candidates():
    from gpuillum.methods.auto import AutoSettings

    with pytest.raises(ValueError, match="nosuch"):
        AutoSettings("jump,nosuch")
    with pytest.raises(ValueError, match="correct each image on its own"):
        AutoSettings("jump,median:radius=10")


def test_qc_command_json_and_strict(plate, tmp_path, capsys):
    from gpuillum.cli import main
    from gpuillum.cli.qc import EXIT_PROBLEMS

    assert main(["qc", str(plate), "--layout", "gpuillum", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in data["groups"]] == ["plate DEMO, channel DNA"]
    assert set(data["groups"][0]) >= {"group", "needed", "worked", "metrics", "flags", "evidence"}
    assert data["groups"][0]["worked"] is None
    out = tmp_path / "out"
    assert main(["run", str(plate), "-o", str(out), "--layout", "gpuillum", "-q", "--no-qc"]) == 0
    assert not (out / "qc").exists()
    code = main(["qc", str(plate), "--layout", "gpuillum", "--corrected", str(out), "--strict", "--report", str(tmp_path / "r")])
    text = capsys.readouterr().out
    assert "worked:" in text and (tmp_path / "r" / "report.html").is_file()
    assert code == (EXIT_PROBLEMS if "PROBLEM" in text else 0)
    assert main(["qc", str(plate), "--layout", "gpuillum", "--corrected", str(tmp_path / "nothing")]) == 2


def test_compare_command_ranks_and_draws_figure_6(plate, tmp_path, capsys):
    from gpuillum.cli import main

    assert main(["compare", str(plate), "--layout", "gpuillum", "-o", str(tmp_path / "c"), "--methods",
                 "jump,polynomial,median:radius=15", "--no-progress"]) == 0
    data = json.loads((tmp_path / "c" / "compare.json").read_text())
    (group,) = data["groups"]
    ranking = group["ranking"]
    assert [r["rank"] for r in ranking] == [1, 2, 3] and sorted(r["method"] for r in ranking) == ["jump", "median:radius=15", "polynomial"]
    assert [r["score"] for r in ranking] == sorted(r["score"] for r in ranking)
    assert (tmp_path / "c" / "functions" / "jump" / "DEMO_IllumDNA.npz").is_file()
    assert "data:image/png;base64," in (tmp_path / "c" / "compare.html").read_text()
    assert main(["compare", str(plate), "--layout", "gpuillum", "-o", str(tmp_path / "d"), "--methods", "jump,nosuch"]) == 2


# ---------------------------------------------------------------- the report in a real browser


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_opens_in_headless_chromium_without_missing_images(plate, tmp_path):
    from gpuillum.job import run

    run(plate, tmp_path / "out", layout="gpuillum")
    report = tmp_path / "out" / "qc" / "report.html"
    probe = tmp_path / "probe.html"  # the report plus a line that counts the images that did not load
    probe.write_text(report.read_text().replace("</body>", "<script>window.addEventListener('load',()=>{const i=[...document"
                                                ".images];document.body.setAttribute('data-images',i.length);document.body"
                                                ".setAttribute('data-broken',i.filter(x=>!x.complete||x.naturalWidth===0)"
                                                ".length)})</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120).stdout
    images, broken = (int(re.search(f'data-{name}="(\\d+)"', dom).group(1)) for name in ("images", "broken"))
    assert images == len(list(report.parent.glob("*.png"))) >= 4 and broken == 0
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), *flags, "--window-size=1200,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("L"))
    assert pixels.shape == (2400, 1200) and pixels.std() > 20  # rendered text and pictures, not a blank page


def test_images_qc_cannot_measure_never_fail_the_run(tmp_path):
    """A field a few pixels high is corrected as any other; its QC says it could not be measured."""
    import tifffile

    from gpuillum.cli import main

    tifffile.imwrite(tmp_path / "wide.tif", (np.arange(500, dtype=np.uint16)[None, :] * 10 + 100))
    assert main(["run", str(tmp_path / "wide.tif"), "-o", str(tmp_path / "out"), "--method", "median", "--radius", "3",
                 "--device", "cpu", "-q"]) == 0
    verdict = json.loads((tmp_path / "out" / "manifest.json").read_text())["qc"]["plate wide, channel 1"]
    assert verdict["needed"] is None and verdict["evidence"]["needed"].startswith("not measured: image: expected")
    assert "not measured" in (tmp_path / "out" / "qc" / "report.html").read_text()
