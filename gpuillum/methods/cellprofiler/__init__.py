"""CellProfiler's CorrectIlluminationCalculate / Apply, setting for setting, on NumPy or CuPy.

The parity target is CellProfiler 4.2 (docs/cellprofiler.md); ``compat="5"`` gives CellProfiler
5's mask handling. ``settings`` holds every setting, the .cppipe reader and the presets,
``stages`` the float conversion, dilation, smoothing and rescale, ``estimator`` the streaming
accumulator and ``calculate``, ``functions_io`` the ``<Plate>_Illum<Channel>.npy`` files, and
``method`` the registration as the engine's ``cellprofiler`` method. Short import path::

    from gpuillum import cellprofiler as cp
    function = cp.calculate(images, cp.preset("jump"))
"""
from ...correct import apply  # CorrectIlluminationApply
from .estimator import IlluminationAccumulator, calculate
from .functions_io import function_filename, load_function, save_function
from .settings import (
    AGGREGATION_CHOICES,
    COMPAT_CHOICES,
    FILTER_SIZE_CHOICES,
    INTENSITY_CHOICES,
    PRESETS,
    RESCALE_CHOICES,
    SMOOTHING_CHOICES,
    SPLINE_MODES,
    CalculateSettings,
    median_radius,
    preset,
    smoothing_filter_size,
    smoothing_sigma,
)
from .stages import dilate, dilation_kernel, rescale, smooth, to_cellprofiler_float

__all__ = [
    "AGGREGATION_CHOICES", "COMPAT_CHOICES", "FILTER_SIZE_CHOICES", "INTENSITY_CHOICES", "PRESETS", "RESCALE_CHOICES",
    "SMOOTHING_CHOICES", "SPLINE_MODES", "CalculateSettings", "IlluminationAccumulator", "apply", "calculate", "dilate",
    "dilation_kernel", "function_filename", "load_function", "median_radius", "preset", "rescale", "save_function",
    "smooth", "smoothing_filter_size", "smoothing_sigma", "to_cellprofiler_float",
]
