"""CellProfiler-compatible illumination functions: ``gpuillum.cellprofiler``.

The implementation lives in :mod:`gpuillum.methods.cellprofiler`; this module is the short,
documented import path::

    from gpuillum import cellprofiler as cp
    settings = cp.preset("jump")
    function = cp.calculate(images, settings)
    corrected = cp.apply(image, function)
"""
from .methods.cellprofiler import *  # noqa: F401,F403
from .methods.cellprofiler import __all__  # noqa: F401
