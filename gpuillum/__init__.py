"""gpuillum: GPU-accelerated illumination correction for microscopy.

Kernels take NumPy or CuPy arrays and return the same kind of array on the same device::

    import gpuillum as gi
    background = gi.median_filter(image, 25)             # exact disk median, CellProfiler >= 4.2 edges
    flat = gi.fit_polynomial(image, degree=6, robust=True)

Names are loaded on first use, so ``import gpuillum`` stays fast and never touches a GPU.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    # per-image kernels
    "median_filter": "gpuillum.filters.median",
    "median_filter_counted": "gpuillum.filters.median",
    "median_background": "gpuillum.filters.median_background",
    "grey_erosion": "gpuillum.filters.morphology",
    "grey_dilation": "gpuillum.filters.morphology",
    "grey_opening": "gpuillum.filters.morphology",
    "grey_closing": "gpuillum.filters.morphology",
    "white_tophat": "gpuillum.filters.morphology",
    "black_tophat": "gpuillum.filters.morphology",
    "block_minimum": "gpuillum.filters.blocks",
    "block_reduce": "gpuillum.filters.blocks",
    "upsample": "gpuillum.filters.resample",
    "fit_polynomial": "gpuillum.filters.polynomial",
    "gaussian_filter": "gpuillum.filters.smoothing",
    "resize_bilinear": "gpuillum.filters.resample",
    # local backgrounds (ImageJ's Subtract Background, scikit-image's rolling ball, projections)
    "rolling_ball_imagej": "gpuillum.filters.rolling_ball_imagej",
    "sliding_paraboloid": "gpuillum.filters.sliding_paraboloid",
    "rolling_ball": "gpuillum.filters.rolling_ball",
    "mean_filter": "gpuillum.filters.mean",
    "presmooth": "gpuillum.filters.presmooth",
    "projection_background": "gpuillum.filters.projection",
    "ProjectionReducer": "gpuillum.filters.projection",
    # illumination functions (CellProfiler semantics) and applying them
    "CalculateSettings": "gpuillum.methods.cellprofiler",
    "IlluminationAccumulator": "gpuillum.methods.cellprofiler",
    "calculate": "gpuillum.methods.cellprofiler",
    "preset": "gpuillum.methods.cellprofiler",
    "apply": "gpuillum.correct",
    "IlluminationModel": "gpuillum.model",
    # flat field + darkfield (BaSiC's model)
    "fit_flatfield": "gpuillum.methods.flatfield",
    "load_basicpy_model": "gpuillum.methods.basicpy_io",
    "OutputStats": "gpuillum.output_dtype",
    "save_function": "gpuillum.methods.cellprofiler.functions_io",
    "load_function": "gpuillum.methods.cellprofiler.functions_io",
    "spline_background": "gpuillum.methods.cellprofiler.splines",
    "convex_hull_smooth": "gpuillum.methods.cellprofiler.convex_hull",
    # the plate job
    "run": "gpuillum.job",
    "run_plate": "gpuillum.job",
    "calc_plate": "gpuillum.job",
    "apply_plate": "gpuillum.job",
    "plan_plate": "gpuillum.job",
    "BackgroundSettings": "gpuillum.job",
    "make_synthetic_plate": "gpuillum.demo.synthetic",
    # quality control
    "flatfield_cv": "gpuillum.qc.metrics",
    "compare_to_truth": "gpuillum.qc.metrics",
    "correction_report": "gpuillum.qc.metrics",
    "write_png": "gpuillum.qc.png",
    # backend
    "gpu_available": "gpuillum.backend",
    "resolve_device": "gpuillum.backend",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpuillum' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
