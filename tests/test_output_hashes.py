"""Pinned outputs: what the plate job writes today must not change when the engine is rebuilt.

The SHA-256 digests below were recorded on 2026-12-05 (commit 7a4271a, before the engine was
turned into a method registry) by running these same command lines. A digest covers every
illumination function (the .npy array: dtype, shape, bytes) and every corrected image (the decoded
pixels: dtype, shape, bytes) of a run, by relative path. A change to any byte of any output fails
the test; so does a change in which files are written.

Floating-point results can legitimately differ with other NumPy/SciPy builds (SIMD paths), so the
digests are only compared where the versions they were recorded with are installed; elsewhere the
test is skipped and says so. Set GPUILLUM_PRINT_HASHES=1 to print the digests of this machine.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import scipy

from gpuillum.cli import main
from gpuillum.io.tiff import read_tiff
from gpuillum.demo.synthetic import make_synthetic_plate

RECORDED_WITH = {"numpy": "2.4", "scipy": "1.17"}

# (name, options after `gpuillum run PLATE -o OUT`, plate) -> digest
MATRIX = [
    ("jump", ["--preset", "jump"], "p16",
     "b7bf146b1568bec8b3bd200274f9cf5bd20412bfffc26ed22fc4f31eec2a41af"),
    ("all-none", ["--smoothing", "none", "--resize-factor", "1"], "p16",
     "ccd29f5645f73ad3e53ebc693bcad62beec2f4ca3f91cb2b5a2d5033a360fe0d"),
    ("all-convex-hull", ["--smoothing", "convex-hull", "--resize-factor", "0.5"], "p16",
     "be71d872c3f2cc38d4d349f45309444b5c8c9e8f7f034f27efd3786dfae8e63a"),
    ("all-polynomial", ["--smoothing", "polynomial", "--resize-factor", "1"], "p16",
     "4ac8a912b203f1104efc22c442964d6134b542fd4a7446d67a45a6982f6e81af"),
    ("all-median-object", ["--smoothing", "median", "--object-width", "6", "--resize-factor", "1"], "p16",
     "91a24923b20b6ed99b6b150515fc84089fc74da0a89d7266f226fb79b0292664"),
    ("all-gaussian-auto", ["--smoothing", "gaussian", "--filter-size-method", "automatic", "--resize-factor", "0.5"], "p16",
     "008a1e4166419e155f4be3dc6d12d3278564f6adef16bbd62646b167cb8473f6"),
    ("all-average", ["--smoothing", "average", "--resize-factor", "1"], "p16",
     "ef1579b15ba721f5667bc6362df9286abd568c13a49fc926530a0a0b89c0d6bb"),
    ("all-splines-subtract", ["--smoothing", "splines", "--rescale", "No", "--resize-factor", "1"], "p16",
     "ea71af9bb6cd0fd166d7b972d7559eb823c5c8a2993ef1ebef858acb2374e137"),
    ("all-splines-divide", ["--smoothing", "splines", "--rescale", "Yes", "--apply-method", "Divide", "--resize-factor", "1"], "p16",
     "524ae8b1757b670ec7e947758ffb64045c6cba2ef8dc832ae898d55779ae2568"),
    ("all-median-rescale-median-dilate", ["--rescale", "Median", "--dilate", "--dilation-radius", "2", "--resize-factor", "1"], "p16",
     "d5f7d6c7ed9ca6d7286a309413d2f9e86d6911317985cee7a2133a226a2e37b3"),
    ("all-first-cycle-compat5", ["--aggregation", "all-first", "--compat", "5", "--resize-factor", "0.5"], "p16",
     "795fc78dc6fcd84e4d46cc09b5c037b5d5a517804f210d3d735640195ba390d0"),
    ("each-median", ["--aggregation", "each", "--smoothing", "median", "--filter-size", "9", "--resize-factor", "1"], "p16",
     "6b3f9e415f5196559b2f59f3f7829f03d2ddcd41e0d2b0d337319aa31ea40189"),
    ("each-gaussian", ["--aggregation", "each", "--smoothing", "gaussian", "--filter-size", "7", "--resize-factor", "1"], "p16",
     "9e1985559ed4eca71c02a74d1315f9767b76077fa023f02bd19f5fea6573fb09"),
    ("background-intensity", ["--intensity", "Background", "--block-size", "16", "--rescale", "No", "--resize-factor", "1"], "p16",
     "25943d96c3e857f52fb10be480fa80400a3896eb2b22a4bef6aa0bcaf9ed0e4b"),
    ("background-median-alone", ["--background", "median", "--background-radius", "7"], "p16",
     "d8e9a4349fcbc0141e4412d2996f55290b74b900a5481e73762aa2d48efe90a8"),
    ("background-tophat-alone", ["--background", "tophat", "--background-radius", "5"], "p16",
     "35a47819b10169df7605061a4b47590be28cc1c507a33c659838d1c9a7181126"),
    ("jump-plus-median-background", ["--preset", "jump", "--background", "median", "--background-radius", "9"], "p16",
     "0586e0d0ec003fe77516a0fe93ec42d93500ce147106941e1ac10377d8e8199d"),
    ("jump-8bit", ["--preset", "jump"], "p8",
     "51924201c78611ca4a9303945d21e3e9258f3227f4e4cd9100710c24461ffbc9"),
    ("rescale-median-8bit", ["--rescale", "Median", "--resize-factor", "1"], "p8",
     "d451fcc6762a3da93beb30ed01aeb664d4170891633300d64568d6fe2fc1d676"),
    ("tophat-8bit", ["--background", "tophat", "--background-radius", "4"], "p8",
     "29cc079c3cc6d305b9c914dd38e0ddab64aa9674b771d927471ed54da3e29292"),
]
DEMO_DIGEST = "02eebc57abd8087d5c3dd8cfbc83d105ed7df1c6a3e3f52a603713d28e19388a"


def outputs_digest(out: Path) -> str:
    """SHA-256 over every function and corrected image under ``out``, by relative path."""
    digest = hashlib.sha256()
    paths = sorted(out.glob("illum/*.npy")) + sorted(p for p in out.rglob("corrected/**/*") if p.suffix in (".tif", ".tiff"))
    assert paths, f"no outputs under {out}"
    for path in paths:
        array = np.load(path) if path.suffix == ".npy" else read_tiff(path)[0]
        digest.update(path.relative_to(out).as_posix().encode())
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _versions_match() -> bool:
    installed = {"numpy": np.__version__, "scipy": scipy.__version__}
    return all(installed[name].startswith(prefix + ".") for name, prefix in RECORDED_WITH.items())


def _check(name: str, got: str, expected: str) -> None:
    if os.environ.get("GPUILLUM_PRINT_HASHES"):
        print(f"\n{name}: {got}")
        return
    if not _versions_match():
        pytest.skip(f"digests recorded with numpy {RECORDED_WITH['numpy']}, scipy {RECORDED_WITH['scipy']}; "
                    f"this machine has numpy {np.__version__}, scipy {scipy.__version__}")
    assert got == expected, f"{name}: the outputs changed"


@pytest.fixture(scope="module")
def plates(tmp_path_factory):
    root = tmp_path_factory.mktemp("pinned")
    small = dict(rows="BC", cols=(2, 3, 4), sites=4, channels=("DNA", "Actin"), shape=(72, 90))
    return {"p16": make_synthetic_plate(root / "p16", seed=3, **small).plate_dir,
            "p8": make_synthetic_plate(root / "p8", seed=4, bit_depth=8, **small).plate_dir}


@pytest.mark.parametrize("name, options, plate, expected", MATRIX, ids=[row[0] for row in MATRIX])
def test_plate_outputs_unchanged(name, options, plate, expected, plates, tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(plates[plate]), "-o", str(out), "--device", "cpu", "-q", *options]) == 0
    _check(name, outputs_digest(out), expected)


@pytest.mark.slow
def test_demo_outputs_unchanged(tmp_path):
    assert main(["demo", str(tmp_path / "demo"), "--device", "cpu", "-q"]) == 0
    _check("demo", outputs_digest(tmp_path / "demo" / "results"), DEMO_DIGEST)
