"""Shared test fixtures: GPU gating, the real-data folder, seeded random generators."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpuillum.backend import gpu_available


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip_gpu = pytest.mark.skip(reason="no usable CUDA GPU (cupy missing or cupy.is_available() is false)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real microscopy images (../shared/data), found through GPUILLUM_DATA."""
    value = os.environ.get("GPUILLUM_DATA")
    if not value:
        pytest.skip("GPUILLUM_DATA is unset: real-image tests need the shared data folder")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"GPUILLUM_DATA={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def data_set(data_dir):
    """A file or folder of GPUILLUM_DATA by relative path; the test skips when this copy lacks it."""

    def find(relpath: str) -> Path:
        path = data_dir / relpath
        if not path.exists():
            pytest.skip(f"GPUILLUM_DATA={data_dir} has no {relpath}")
        return path

    return find


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


@pytest.fixture(scope="session")
def cupy():
    """The cupy module, for tests marked gpu."""
    import cupy

    return cupy


@pytest.fixture
def on_device(cupy):
    """For GPU tests: ``with on_device(): result = kernel(device_input)`` fails the test when the kernel
    copies a device array to the host outside a step that runs there by design (tests/device_guard.py)."""
    from device_guard import device_resident

    return lambda: device_resident(cupy.ndarray)


@pytest.fixture
def stage_inputs(monkeypatch):
    """The plate job's stages, watched: ``take()`` tells which backend each stage's calls received
    since the last take (tests/device_guard.py)."""
    from device_guard import StageInputs

    return StageInputs(monkeypatch).watch()


@pytest.fixture(autouse=True)
def quality_control_only_where_tested(request, monkeypatch):
    """Runs write OUT/qc by default (matplotlib pictures: seconds per run); the hundreds of small runs
    of this suite switch that default off through GPUILLUM_QC, except the tests marked ``qc``."""
    if request.node.get_closest_marker("qc") is None:
        monkeypatch.setenv("GPUILLUM_QC", "0")
