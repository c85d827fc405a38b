"""The GPU tests' guard (tests/device_guard.py) catches a kernel that runs on a host copy of its input.

Without a GPU, a stand-in for CuPy plays the device: its arrays hold NumPy data that only ``get()``
(or ``tolist()``) hands to the host, refuse implicit conversion and mixing with NumPy arrays as
``cupy.ndarray`` does, and compute with NumPy behind that wall; gpuillum.backend is pointed at it,
so gpuillum's own CuPy code path runs on it where that path is plain array code (the polynomial
fit). The same checks run with CuPy on a GPU.
"""
from __future__ import annotations

import contextlib
import operator
import types

import numpy as np
import pytest

from device_guard import HostRoundTrip, device_resident
from gpuillum import backend
from gpuillum.backend import same_backend, to_numpy
from gpuillum.filters import polynomial
from gpuillum.filters.blocks import block_minimum, block_reduce
from gpuillum.filters.median import median_filter
from gpuillum.methods.cellprofiler import CalculateSettings, calculate, rescale, smooth
from gpuillum.methods.cellprofiler.convex_hull import convex_hull_smooth
from gpuillum.qc.metrics import compare_to_truth
from gpuillum.qc.png import to_display


def _to_numpy_side(value):
    if isinstance(value, StandInArray):
        return value._data
    if isinstance(value, np.ndarray) and value.ndim:  # as CuPy: no implicit upload
        raise TypeError("Unsupported type <class 'numpy.ndarray'>")
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy_side(item) for item in value)
    return value


def _to_device_side(value):
    if isinstance(value, (np.ndarray, np.generic)):  # a reduction gives a 0-d device array, as in CuPy
        return StandInArray(value)
    if isinstance(value, tuple):
        return tuple(_to_device_side(item) for item in value)
    return value


def _on_device(function):
    def call(*args, **kwargs):
        args = tuple(_to_numpy_side(a) for a in args)
        kwargs = {key: _to_numpy_side(value) for key, value in kwargs.items()}
        return _to_device_side(function(*args, **kwargs))

    return call


class _StandInBase:
    """Holds the copy methods, as cupy's ``_ndarray_base`` does for ``cupy.ndarray``."""

    def get(self):
        return self._data.copy()

    def tolist(self):
        return self._data.tolist()


class StandInArray(_StandInBase):
    """A device array of the stand-in CuPy: NumPy data behind ``get()``."""

    __array_ufunc__ = None  # NumPy operators defer to ours, as they do to CuPy's
    device = types.SimpleNamespace(id=0)

    def __init__(self, data):
        self._data = np.asarray(data)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()`")

    def __getattr__(self, name):
        if name == "_data" or name.startswith("__"):  # no __array_interface__ and the like: NumPy gets nothing
            raise AttributeError(name)
        value = getattr(self._data, name)
        return _on_device(value) if callable(value) else _to_device_side(value)

    def __setitem__(self, key, value):
        self._data[_to_numpy_side(key)] = _to_numpy_side(value)

    def __bool__(self):
        return bool(self._data)

    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __index__(self):
        return operator.index(self._data)

    def __len__(self):
        return len(self._data)


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor", "lshift", "rshift"):
    setattr(StandInArray, f"__{_name}__", _on_device(getattr(operator, f"__{_name}__")))
    setattr(StandInArray, f"__r{_name}__", _on_device(lambda a, b, _op=getattr(operator, f"__{_name}__"): _op(b, a)))
for _name in ("lt", "le", "gt", "ge", "eq", "ne", "neg", "pos", "abs", "invert", "getitem"):
    setattr(StandInArray, f"__{_name}__", _on_device(getattr(operator, f"__{_name}__")))


class StandInCupy(types.ModuleType):
    """The stand-in CuPy module: NumPy's functions on StandInArray data; types pass through."""

    ndarray = StandInArray
    cuda = types.SimpleNamespace(Device=lambda index=0: contextlib.nullcontext())

    def __getattr__(self, name):
        value = getattr(np, name)
        return value if isinstance(value, type) or not callable(value) else _on_device(value)

    @staticmethod
    def asarray(data, dtype=None):
        """Host data is uploaded, device data stays."""
        return StandInArray(np.asarray(data._data if isinstance(data, StandInArray) else data, dtype=dtype))


@pytest.fixture
def stand_in(monkeypatch):
    """gpuillum.backend treats StandInArray as CuPy's array type."""
    module = StandInCupy("stand_in_cupy")
    monkeypatch.setattr(backend, "_cupy", lambda: module)
    return module


def on_the_host(kernel):
    """``kernel`` as a silent CPU fallback would run it: on a host copy, the result uploaded."""

    def fallback(image, *args, **kwargs):
        return same_backend(kernel(to_numpy(image), *args, **kwargs), image)

    return fallback


def test_the_stand_in_runs_gpuillums_device_path_without_leaving_the_device(stand_in, rng):
    image = rng.random((37, 52)).astype(np.float32) + 0.1
    device_image = stand_in.asarray(image)
    with device_resident(StandInArray) as permitted:
        surface = polynomial.fit_polynomial(device_image, 3)
    assert isinstance(surface, StandInArray)
    np.testing.assert_allclose(surface.get(), polynomial.fit_polynomial(image, 3), rtol=1e-6)
    # the normal equations went to the host, by design; nothing else did
    assert {copy.step for copy in permitted} == {"gpuillum.filters.polynomial._normal_equations"}
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(device_image)  # a NumPy kernel cannot take the stand-in's data silently either


def test_the_guard_catches_a_kernel_forced_onto_the_host(stand_in, rng):
    image = rng.random((37, 52)).astype(np.float32) + 0.1
    with device_resident(StandInArray), pytest.raises(HostRoundTrip, match=r"get\(\) of a \(37, 52\) float32 device array, "
                                                                          r"asked by test_device_guard\.fallback"):
        on_the_host(median_filter)(stand_in.asarray(image), 2)
    # the same without the guard: the fallback's result is right, which is why comparing results cannot catch it
    result = on_the_host(median_filter)(stand_in.asarray(image), 2)
    assert isinstance(result, StandInArray)
    np.testing.assert_array_equal(result.get(), median_filter(image, 2))


def test_a_fallback_below_a_by_design_host_step_is_still_caught(stand_in, rng, monkeypatch):
    # CellProfiler's Fit Polynomial runs gpuillum's fit on the device and only its undetermined
    # case on the host: a host fit called from there is the fit's fallback, not that host step
    pixels = stand_in.asarray(rng.random((30, 41)).astype(np.float32) + 0.1)
    settings = CalculateSettings(smoothing="Fit Polynomial")
    with device_resident(StandInArray):
        assert isinstance(smooth(pixels, None, settings), StandInArray)
    monkeypatch.setattr(polynomial, "fit_polynomial", on_the_host(polynomial.fit_polynomial))
    with device_resident(StandInArray), pytest.raises(HostRoundTrip, match="asked by test_device_guard.fallback"):
        smooth(pixels, None, settings)


def test_by_design_host_steps_scalars_and_restoring_the_array_type(stand_in, rng):
    image = rng.random((25, 30)).astype(np.float32)
    with device_resident(StandInArray) as permitted:
        hull = convex_hull_smooth(stand_in.asarray(image))
        scalar = to_numpy(stand_in.asarray(image).max())  # a statistic read on the host
        one = to_numpy(stand_in.asarray(image[:1, :1]))
        with pytest.raises(HostRoundTrip, match=r"tolist\(\) of a \(25, 30\)"):
            stand_in.asarray(image).tolist()
    np.testing.assert_array_equal(hull.get(), convex_hull_smooth(image))
    assert scalar == image.max() and one.shape == (1, 1)
    assert [(copy.step, copy.shape) for copy in permitted] == [("gpuillum.methods.cellprofiler.convex_hull.convex_hull_smooth", (25, 30))]
    assert "get" not in StandInArray.__dict__ and "tolist" not in StandInArray.__dict__  # inherited again
    assert stand_in.asarray(image).get().shape == (25, 30)


ALL = "All: Across cycles"


def _one_row(shape):
    mask = np.zeros(shape, bool)
    mask[7] = True
    return mask


# gpuillum's device paths that are plain array code (no CUDA kernel, no cupyx), and the host steps they may take
PLAIN_DEVICE_PATHS = {
    "block_minimum": (lambda xp, image, mask: block_minimum(xp.asarray(image), 20, mask=xp.asarray(mask)), set()),
    "block_reduce median": (lambda xp, image, mask: block_reduce(xp.asarray(image), 16, stat="median", mask=xp.asarray(mask)), set()),
    "robust fit_polynomial": (lambda xp, image, mask: polynomial.fit_polynomial(xp.asarray(image / 4096), 6, robust=True),
                              {"_robust_coefficients"}),
    "rescale": (lambda xp, image, mask: rescale(xp.asarray(image / np.float32(4096)), xp.asarray(mask), "Yes"), set()),
    "to_display": (lambda xp, image, mask: to_display(xp.asarray(image)), set()),
    "compare_to_truth": (lambda xp, image, mask: compare_to_truth(xp.asarray(image + 1.0), image + 2.0), set()),
    "Background, All": (lambda xp, image, mask: calculate([xp.asarray(image)] * 2, CalculateSettings(intensity="Background", block_size=20,
                                                                                                     aggregation=ALL)), set()),
    "Smooth to Average, masked": (lambda xp, image, mask: calculate([xp.asarray(image)], CalculateSettings(smoothing="Smooth to Average"),
                                                                   [xp.asarray(mask)]), set()),
    "Splines, All": (lambda xp, image, mask: calculate([xp.asarray(image)] * 2, CalculateSettings(smoothing="Splines", aggregation=ALL)),
                     {"_spline_smooth"}),
    "Convex Hull": (lambda xp, image, mask: calculate([xp.asarray(image)], CalculateSettings(smoothing="Convex Hull")), {"convex_hull_smooth"}),
    "Fit Polynomial, one valid row": (lambda xp, image, mask: calculate([xp.asarray(image)], CalculateSettings(smoothing="Fit Polynomial", rescale="No"),
                                                                        [xp.asarray(_one_row(mask.shape))]),
                                      {"_fit_polynomial", "_normal_equations"}),  # undetermined: solved on the host
}


@pytest.mark.parametrize("name", PLAIN_DEVICE_PATHS)
def test_plain_device_paths_stay_on_the_stand_in_device(stand_in, rng, name):
    kernel, host_steps = PLAIN_DEVICE_PATHS[name]
    image = rng.integers(1, 4096, (48, 61), dtype=np.uint16)
    mask = rng.random(image.shape) < 0.6
    with device_resident(StandInArray) as permitted:
        result = kernel(stand_in, image, mask)
    assert {copy.step.rsplit(".", 1)[1] for copy in permitted} == host_steps
    expected = kernel(np, image, mask)
    if isinstance(expected, dict):
        assert result == pytest.approx(expected, rel=1e-9)
    else:
        assert isinstance(result, StandInArray)
        np.testing.assert_allclose(result.get(), expected, rtol=1e-6)


@pytest.mark.gpu
def test_the_guard_catches_a_cupy_kernel_forced_onto_the_host(cupy, on_device, rng):
    image = rng.integers(0, 4096, (64, 70), dtype=np.uint16)
    with on_device():
        result = median_filter(cupy.asarray(image), 3)
    np.testing.assert_array_equal(result.get(), median_filter(image, 3))
    with on_device(), pytest.raises(HostRoundTrip, match="asked by test_device_guard.fallback"):
        on_the_host(median_filter)(cupy.asarray(image), 3)

    def through_asnumpy(device_image):
        return cupy.asarray(median_filter(cupy.asnumpy(device_image), 3))

    with on_device(), pytest.raises(HostRoundTrip, match="asked by test_device_guard.through_asnumpy"):
        through_asnumpy(cupy.asarray(image))
    assert "get" not in cupy.ndarray.__dict__  # the guard gave CuPy its own method back
