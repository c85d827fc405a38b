"""gpuillum.IlluminationModel and gi.apply's units: the model's formula, its CellProfiler special
cases (bit-identical to gpuillum.correct.apply), its file format, and no silent black or all-ones
image when a background in raw counts meets an API that expects CellProfiler's units."""
from __future__ import annotations

import numpy as np
import pytest

import gpuillum as gi
from gpuillum.correct import apply
from gpuillum.model import IlluminationModel
from gpuillum.output_dtype import OutputStats


@pytest.fixture
def field(rng):
    """A vignetted 16-bit field with a camera offset and bright spots, and its true flat and dark."""
    y, x = np.mgrid[:61, :77]
    flat = (1.3 - 0.6 * (((y - 30) / 61) ** 2 + ((x - 38) / 77) ** 2)).astype(np.float32)
    flat /= flat.mean()
    dark = (100 + 5 * rng.random((61, 77))).astype(np.float32)
    scene = 800 + 3000 * (rng.random((61, 77)) > 0.97)
    raw = np.clip(np.rint(scene * flat + dark + rng.normal(0, 5, (61, 77))), 0, 65535).astype(np.uint16)
    return raw, flat, dark


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("method", ["Divide", "Subtract"])
def test_cellprofiler_function_as_model_is_bit_identical(rng, dtype, method):
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1.0
    image = (rng.random((33, 47)) * top).astype(dtype)
    function = (rng.random((33, 47)) * (1.5 if method == "Divide" else 0.3) + 0.2).astype(np.float32)
    model = IlluminationModel.from_function(function, method)
    assert model.cellprofiler_method == method
    np.testing.assert_array_equal(model.apply(image), apply(image, function, method, units="cellprofiler"))


@pytest.mark.parametrize("policy", ["same", "float32", "signed"])
def test_general_model_follows_its_formula(field, policy):
    raw, flat, dark = field
    baseline = np.array([10.0, -4.0, 250.0], np.float32)
    model = IlluminationModel(flatfield=flat, darkfield=dark, baseline=baseline, offset=20.0, method="test")
    got = model.apply(raw, index=2, output_dtype=policy)
    # the formula in float64, then the policy: float32 values agree to float32 rounding
    exact = (raw.astype(np.float64) - dark) / flat - 250.0 + 20.0
    expected_dtype = {"same": np.uint16, "float32": np.float32, "signed": np.int32}[policy]
    assert got.dtype == expected_dtype
    if policy == "float32":
        np.testing.assert_allclose(got, exact, rtol=2e-6, atol=2e-3)
    else:
        reference = np.clip(np.rint(exact), 0 if policy == "same" else -2**31, 65535 if policy == "same" else 2**31 - 1)
        # one count where float32 rounding moves a value across a .5
        assert np.abs(got.astype(np.float64) - reference).max() <= 1
        assert np.mean(got != reference) < 1e-3
    assert (got < 0).any() == (policy != "same" and (exact < -0.5).any())


def test_baseline_needs_the_image_index(field):
    raw, flat, _ = field
    model = IlluminationModel(flatfield=flat, baseline=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match=r"^index: this model has a per-image baseline"):
        model.apply(raw)
    with pytest.raises(ValueError, match=r"^index: expected 0\.\.3"):
        model.apply(raw, index=4)


def test_model_refuses_another_shape_and_nothing(field):
    raw, flat, _ = field
    with pytest.raises(ValueError, match="give at least one of flatfield, darkfield, baseline"):
        IlluminationModel()
    with pytest.raises(ValueError, match=r"^model: shape \(61, 77\) does not match the image shape \(60, 77\)"):
        IlluminationModel(flatfield=flat).apply(raw[:60])
    with pytest.raises(ValueError, match="flatfield and darkfield shapes differ"):
        IlluminationModel(flatfield=flat, darkfield=flat[:5])


def test_save_and_load_round_trip_without_pickle(field, tmp_path):
    raw, flat, dark = field
    model = IlluminationModel(flatfield=flat, darkfield=dark, baseline=np.arange(3, dtype=np.float32), method="flatfield",
                              settings={"darkfield": True}, info={"images": 3}, offset=7.5)
    path = model.save(tmp_path / "P1_IllumDNA.npz")
    with np.load(path, allow_pickle=False) as data:  # plain NumPy reads it
        assert sorted(data.files) == ["baseline", "darkfield", "flatfield", "model"]
        np.testing.assert_array_equal(data["flatfield"], flat)
    back = IlluminationModel.load(path)
    assert (back.units, back.method, back.settings, back.info, back.offset) == ("counts", "flatfield", {"darkfield": True},
                                                                                  {"images": 3}, 7.5)
    np.testing.assert_array_equal(back.apply(raw, index=1), model.apply(raw, index=1))
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically


def test_load_refuses_foreign_and_newer_files(tmp_path):
    np.savez(tmp_path / "other.npz", flatfield=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"other\.npz: not a gpuillum illumination model"):
        IlluminationModel.load(tmp_path / "other.npz")
    model = IlluminationModel(flatfield=np.ones((3, 3), np.float32))
    description = model.describe() | {"version": 99}
    np.savez(tmp_path / "new.npz", model=np.array(__import__("json").dumps(description)), flatfield=np.ones((3, 3)))
    with pytest.raises(ValueError, match="format version 99 is newer"):
        IlluminationModel.load(tmp_path / "new.npz")
    with pytest.raises(ValueError, match=r"^path: a model is saved as \.npz"):
        model.save(tmp_path / "m.npy")


def test_apply_subtracts_a_kernel_background_in_counts(field):
    """gi.block_minimum returns counts of the image's dtype: subtracted as they are, not x 65535."""
    raw = field[0]
    background = gi.block_minimum(raw, 12)
    got = gi.apply(raw, background, method="Subtract")
    expected = np.clip(raw.astype(np.int64) - background, 0, None).astype(np.uint16)
    np.testing.assert_array_equal(got, expected)
    assert got.any()
    signed = gi.apply(raw, background, method="Subtract", output_dtype="signed")
    np.testing.assert_array_equal(signed, raw.astype(np.int32) - background.astype(np.int32))


def test_apply_refuses_a_float_background_in_counts_instead_of_an_all_ones_image(field):
    raw = field[0]
    surface = gi.fit_polynomial(raw, 2)  # float32, raw counts
    with pytest.raises(ValueError, match=r"^function: its median .* looks like a background in raw counts"):
        gi.apply(raw, surface)
    with pytest.raises(ValueError, match=r"^function: values up to .* would blacken the image"):
        gi.apply(raw, surface, method="Subtract")
    flat = surface / surface.mean(dtype=np.float64)
    got = gi.apply(raw, surface, units="counts")
    np.testing.assert_array_equal(got, np.clip(np.rint(raw.astype(np.float32) / flat.astype(np.float32)), 0, 65535))
    assert got.min() > 500  # not an image of ones


def test_apply_takes_a_model(field):
    raw, flat, dark = field
    model = IlluminationModel(flatfield=flat, darkfield=dark)
    np.testing.assert_array_equal(gi.apply(raw, model), model.apply(raw))


def test_apply_counts_what_the_cast_loses(field):
    raw = field[0]
    function = np.full(raw.shape, 0.05, np.float32)  # brightens 20x: bright spots clip at 65535
    stats = OutputStats()
    out = apply(raw, function, units="cellprofiler", stats=stats)
    expected_above = int(np.count_nonzero(np.rint(raw.astype(np.float32) / np.float32(0.05)) > 65535))
    assert stats.pixels == raw.size and stats.above == expected_above > 0 and stats.below == 0
    assert (out == 65535).sum() >= expected_above


@pytest.mark.gpu
@pytest.mark.parametrize("policy", ["same", "float32", "signed"])
def test_model_apply_gpu_equals_cpu(field, cupy, on_device, policy):
    raw, flat, dark = field
    model = IlluminationModel(flatfield=flat, darkfield=dark, baseline=np.array([3.0], np.float32))
    on_the_gpu = model.to(cupy.asarray(raw))
    with on_device():
        on_gpu = on_the_gpu.apply(cupy.asarray(raw), index=0, output_dtype=policy)
    assert isinstance(on_gpu, cupy.ndarray)
    np.testing.assert_array_equal(on_gpu.get(), model.apply(raw, index=0, output_dtype=policy))
