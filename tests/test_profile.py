"""``gpuillum profile``: line profiles as CSV and a PNG plot; lines sampled as ImageJ's Plot Profile
(compared with ImageJ's getProfile() where ImageJ runs)."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import tifffile

from gpuillum.cli import main
from gpuillum.qc.profile import line_profile
from imagej_oracle import run_macro, skip_reason

LINES = [(2, 3, 17, 11), (25, 18, 1, 2), (0.5, 0.5, 10.5, 7.25), (5, 5, 5, 5), (0, 4, 30, 4), (3, 0, 3, 20),
         (-3, -2, 12, 9), (28.5, 19.5, 29.9, 0.2), (0, 0, 29, 19)]


@pytest.fixture
def image(rng):
    return rng.integers(0, 4000, (20, 30)).astype(np.uint16)


def profile_csv(capsys, *argv) -> list[dict]:
    assert main(["profile", *map(str, argv)]) == 0
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


def test_rows_and_columns_are_the_pixels_of_both_images(tmp_path, image, capsys):
    corrected = (image // 2).astype(np.int32) - 300
    tifffile.imwrite(tmp_path / "raw.tif", image)
    tifffile.imwrite(tmp_path / "flat.tif", corrected)
    rows = profile_csv(capsys, tmp_path / "raw.tif", tmp_path / "flat.tif", "--row", 7, "-o", tmp_path / "row.png")
    assert list(rows[0]) == ["distance", "x", "y", "image", "corrected"] and len(rows) == 30
    np.testing.assert_array_equal([float(r["image"]) for r in rows], image[7])
    np.testing.assert_array_equal([float(r["corrected"]) for r in rows], corrected[7])
    assert [float(r["x"]) for r in rows] == list(range(30)) and {r["y"] for r in rows} == {"7"}
    assert (tmp_path / "row.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    columns = profile_csv(capsys, tmp_path / "raw.tif", "--column", 29, "-o", tmp_path / "column.png")
    np.testing.assert_array_equal([float(r["image"]) for r in columns], image[:, 29])
    assert list(columns[0]) == ["distance", "x", "y", "image"]


def test_a_stacks_plane_and_the_default_plot_name(tmp_path, image, capsys, monkeypatch):
    stack = np.stack([image, image + 1, image + 2])
    tifffile.imwrite(tmp_path / "movie.tif", stack, imagej=True, metadata={"axes": "TYX"})
    monkeypatch.chdir(tmp_path)
    rows = profile_csv(capsys, tmp_path / "movie.tif", "--row", 0, "--plane", 2)
    np.testing.assert_array_equal([float(r["image"]) for r in rows], stack[2, 0])
    assert (tmp_path / "movie_profile.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--row", "20"], "row: expected an integer in [0, 19]"),
    (["--column", "-1"], "column: expected an integer in [0, 29]"),
    (["--row", "1", "--plane", "3"], "--plane: "),
    (["--row", "1", "--column", "2"], "not allowed with argument"),
    (["--line", "1,2,3"], "expected X0,Y0,X1,Y1"),
    (["small.tif", "--row", "1"], "give the same image before and after"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, image, capsys, monkeypatch, argv, message):
    tifffile.imwrite(tmp_path / "raw.tif", image)
    tifffile.imwrite(tmp_path / "small.tif", image[:5])
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["profile", "raw.tif", *argv])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_line_sampling_is_one_point_a_pixel_with_bilinear_values(image):
    profile = line_profile(image.shape, line=(2, 3, 17, 11))  # length 17: 18 points, 1 pixel apart
    assert len(profile.x) == 18 and profile.distance[-1] == pytest.approx(17)
    assert (profile.x[-1], profile.y[-1]) == pytest.approx((17, 11))
    values = profile.values(image)
    assert values[0] == image[3, 2] and values[-1] == pytest.approx(image[11, 17])  # ImageJ adds steps: 16.99999...
    x, y = profile.x[1], profile.y[1]  # a point between four pixels: the bilinear blend, by hand
    x0, y0, fx, fy = int(x), int(y), x % 1, y % 1
    top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
    bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
    assert values[1] == pytest.approx(top * (1 - fy) + bottom * fy)


def test_lines_equal_imagejs_plot_profile(image):
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    source = 'open(FOLDER + "image.tif");\n'
    for line in LINES:
        source += (f"makeLine({', '.join(map(str, line))}); p = getProfile(); s = \"\"; "
                   "for (i = 0; i < p.length; i++) s = s + d2s(p[i], 9) + \" \"; print(\"P \" + s);\n")
    log, _saved = run_macro(source + 'print("finished");\n', {"image": image})
    profiles = [np.array(line.split()[1:], float) for line in log.splitlines() if line.startswith("P ")]
    assert len(profiles) == len(LINES)
    for line, expected in zip(LINES, profiles):
        got = line_profile(image.shape, line=line).values(image)
        assert got.shape == expected.shape, line
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6, err_msg=str(line))
