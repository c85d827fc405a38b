"""Evidence that a GPU test's kernel ran on the device, not on a host copy of its input.

A kernel that falls back to the CPU must copy its device input to the host first, so a GPU test
runs its kernel call inside :func:`device_resident`: there, any copy of a device array of more
than one element to the host raises :class:`HostRoundTrip`, naming who asked for it. Scalars
(a reduction read with ``int()`` / ``float()``, a one-element array) pass: they are how a device
path reads a statistic, never a whole image. The steps that run on the host by design, listed in
:data:`HOST_BY_DESIGN` with where that is said, may copy their input: only the function that asks
for the copy itself counts, so a fallback below one of them is still caught. Copies CuPy's own
Python code makes inside one of its functions are CuPy's business and pass too.

The plate job copies every corrected image to the host to write it, so its GPU tests watch the
job's stages instead (:class:`StageInputs`): which backend each call of a stage received.

The mechanism patches ``get`` and ``tolist`` of the array class it is given (``cupy.ndarray`` in the
GPU tests; a stand-in class in tests/test_device_guard.py, so that CI exercises it without a GPU)
and restores them on exit.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import threading
import types
from typing import NamedTuple

import pytest

from gpuillum.backend import is_cupy_array
from gpuillum.filters import polynomial
from gpuillum.methods.cellprofiler import convex_hull, splines, stages

HOST_BY_DESIGN = (
    (splines.spline_background, "the Splines fit runs on the host (README: GPU)"),
    (stages._spline_smooth, "the Splines fit and its zero-mean step run on the host (README: GPU)"),
    (convex_hull.convex_hull_smooth, "the Convex Hull runs on the host (README: GPU)"),
    (convex_hull.convex_hull_transform, "the Convex Hull runs on the host (README: GPU)"),
    (stages._fit_polynomial, "an undetermined Fit Polynomial solved from its few valid pixels on the host (README)"),
    (polynomial._normal_equations, "the <= 45 x 45 normal equations solved on the host (gpuillum.filters.polynomial)"),
    (polynomial._robust_coefficients, "the robust fit's block-median grid fitted on the host (fit_polynomial)"),
)
COPY_HELPERS = {"gpuillum.backend"}  # to_numpy, same_backend, Device.asarray: their caller asked for the copy


class HostRoundTrip(AssertionError):
    """A device array reached the host inside :func:`device_resident` outside a by-design host step."""


def _module(frame) -> str:
    return frame.f_globals.get("__name__", "")


def _is_cupy(module: str) -> bool:
    return module.split(".")[0] in ("cupy", "cupyx")


def _asking_frame(frame):
    """The frame that asked for a copy: past gpuillum.backend's helpers and cupy.asnumpy."""
    while frame is not None and (_module(frame) in COPY_HELPERS or (_is_cupy(_module(frame)) and frame.f_code.co_name == "asnumpy")):
        frame = frame.f_back
    return frame


def _codes(code):
    """``code`` and the code of every generator expression, comprehension or lambda inside it."""
    yield code
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _codes(constant)


def _where(frame) -> str:
    return f"{_module(frame)}.{frame.f_code.co_name} (line {frame.f_lineno})"


class HostCopy(NamedTuple):
    """A copy to the host that :func:`device_resident` let through."""

    step: str  # the by-design host step ("module.function"), or "CuPy" for CuPy's own code
    reason: str
    asked_by: str  # the function and line that asked for the copy
    shape: tuple


@contextlib.contextmanager
def device_resident(array_type, allowed=HOST_BY_DESIGN):
    """Inside the block, copying an ``array_type`` array of more than one element to the host
    raises :class:`HostRoundTrip`, except from a function of ``allowed`` ((function, reason)
    pairs; its generator expressions and lambdas included) or from CuPy's own code. Yields the
    list of the copies let through (:class:`HostCopy`).

    Example (a GPU test; the ``on_device`` fixture of conftest.py passes ``cupy.ndarray``)::

        with device_resident(cupy.ndarray):
            result = median_filter(cupy.asarray(image), 3)
        np.testing.assert_array_equal(result.get(), median_filter(image, 3))
    """
    steps = {code: (f"{function.__module__}.{function.__qualname__}", reason)
             for function, reason in allowed for code in _codes(inspect.unwrap(function).__code__)}
    permitted: list[HostCopy] = []
    lock = threading.Lock()

    def guarded(name):
        original = getattr(array_type, name)

        def copy_to_host(self, *args, **kwargs):
            if self.size > 1:
                frame = _asking_frame(sys._getframe(1))
                asked_by = "?" if frame is None else _where(frame)
                if frame is not None and _is_cupy(_module(frame)):
                    step, reason = "CuPy", "inside one of CuPy's own functions"
                elif frame is not None and frame.f_code in steps:
                    step, reason = steps[frame.f_code]
                else:
                    raise HostRoundTrip(f"{name}() of a {tuple(self.shape)} {self.dtype} device array, asked by {asked_by}: "
                                        "the kernel left the device (a host step by design belongs in HOST_BY_DESIGN)")
                with lock:
                    permitted.append(HostCopy(step, reason, asked_by, tuple(self.shape)))
            return original(self, *args, **kwargs)

        return copy_to_host

    with pytest.MonkeyPatch.context() as patch:
        for name in ("get", "tolist"):
            patch.setattr(array_type, name, guarded(name))
        yield permitted


class StageInputs:
    """Which backend each call of the plate job's stages received: ``watch()`` the stages, run a
    job, then ``take()`` {stage: {"device", "host"}} for the calls seen since the last take."""

    STAGES = {  # stage -> (module, attribute, what holds the data: a positional argument's index or "result")
        "accumulate": ("gpuillum.methods.cellprofiler", "IlluminationAccumulator.add", 1),  # 0 is self
        "finalize": ("gpuillum.methods.cellprofiler", "IlluminationAccumulator.finalize", "result"),
        "apply": ("gpuillum.correct", "apply", 0),
        "median background": ("gpuillum.filters.median_background", "median_background", 0),
        "top-hat background": ("gpuillum.filters.morphology", "white_tophat", 0),
    }

    def __init__(self, monkeypatch):
        self._monkeypatch = monkeypatch
        self._seen: dict[str, set] = {}
        self._lock = threading.Lock()

    def watch(self) -> "StageInputs":
        for stage, (module_name, path, data) in self.STAGES.items():
            owner = importlib.import_module(module_name)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            self._monkeypatch.setattr(owner, name, self._watched(stage, getattr(owner, name), data))
        return self

    def _watched(self, stage, function, data):
        def watched(*args, **kwargs):
            result = function(*args, **kwargs)
            place = "device" if is_cupy_array(result if data == "result" else args[data]) else "host"
            with self._lock:
                self._seen.setdefault(stage, set()).add(place)
            return result

        return watched

    def take(self) -> dict[str, set]:
        with self._lock:
            seen, self._seen = self._seen, {}
        return seen


def assert_stages_ran_on(seen: dict, where: str, stages) -> None:
    """Every stage in ``stages`` was called, and every call of every stage got ``where`` data."""
    assert set(stages) <= set(seen), f"stages never called: {sorted(set(stages) - set(seen))} (seen: {seen})"
    elsewhere = {stage: places for stage, places in seen.items() if places != {where}}
    assert not elsewhere, f"stages that got data off the {where}: {elsewhere}"
