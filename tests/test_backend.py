import numpy as np
import pytest

from gpuillum import backend
from gpuillum.filters.footprints import chord_half_widths, footprint_array


def test_numpy_arrays_stay_on_numpy():
    a = np.zeros((3, 4))
    assert backend.get_array_module(a) is np
    assert backend.to_numpy(a) is a or np.shares_memory(backend.to_numpy(a), a)
    assert not backend.is_cupy_array(a)


def test_resolve_device_cpu_and_auto():
    assert str(backend.resolve_device("cpu")) == "cpu"
    auto = backend.resolve_device("auto")
    assert auto.is_gpu == backend.gpu_available()


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0"])
def test_resolve_device_rejects_garbage(spec):
    with pytest.raises(ValueError, match="device"):
        backend.resolve_device(spec)


def test_resolve_device_gpu_without_gpu(monkeypatch):
    if backend.gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no usable CUDA GPU"):
        backend.resolve_device("cuda:0")


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 10, 25, 50, 100, 250])
def test_disk_matches_skimage(radius):
    skm = pytest.importorskip("skimage.morphology")
    assert np.array_equal(footprint_array(radius, "disk"), skm.disk(radius).astype(bool))
    assert chord_half_widths(radius).shape == (2 * radius + 1,)


def test_square_footprint():
    assert footprint_array(3, "square").all()


def test_every_cuda_source_is_found():
    for path in backend.all_cuda_sources():
        assert backend.cuda_source(path.name)


def test_every_public_name_resolves():
    import gpuillum

    for name in gpuillum.__all__:
        assert getattr(gpuillum, name) is not None, name


def test_cellprofiler_alias_module():
    from gpuillum import cellprofiler
    from gpuillum.methods import cellprofiler as impl

    assert cellprofiler.calculate is impl.calculate
    assert set(cellprofiler.__all__) == set(impl.__all__)


def test_kernels_keep_their_names_and_docs_under_the_device_decorator():
    import gpuillum

    for name in ("grey_opening", "block_minimum", "upsample", "fit_polynomial", "gaussian_filter", "median_background"):
        function = getattr(gpuillum, name)
        assert function.__name__ == name and function.__doc__


def test_device_of_numpy_is_a_null_context():
    with backend.device_of(np.zeros(3)) as current:
        assert current is None


@pytest.mark.gpu
def test_kernel_runs_on_the_device_of_its_input(cupy, on_device):
    import gpuillum

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cupy.cuda.Device(1):
        image = cupy.arange(64 * 64, dtype=cupy.uint16).reshape(64, 64)
    with cupy.cuda.Device(0), on_device():
        result = gpuillum.grey_opening(image, 3)
    assert result.device.id == 1
