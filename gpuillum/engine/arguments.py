"""The plate job's argument checks: what the CLI's parser guarantees, for callers of the API.

``gpuillum run`` hands ``run_plate`` paths as strings, a CalculateSettings, an integer >= 1 of
threads and a compression it knows; a Python caller can pass anything. :func:`check_job_arguments`
gives those callers the same checks, each a one-line TypeError or ValueError naming the argument
(the job turns them into its JobError), before anything is written.
"""
from __future__ import annotations

from gpuillum._checks import check_instance, check_integer, check_path


def check_job_arguments(input_dir, out_dir, *, settings=None, background=None, threads=None, loaddata=None, functions=None,
                        pattern=None, layout=None, compression="same", log=None):
    """Check the types of ``run_plate``'s arguments; returns ``(input_dir, out_dir, loaddata, functions)``
    with their paths as str (bytes decoded with ``os.fsdecode``).

    >>> check_job_arguments(b"plate", "out", threads=4)  # doctest: +SKIP
    ('plate', 'out', None, None)
    """
    from gpuillum.engine.background import BackgroundSettings
    from gpuillum.methods.cellprofiler.settings import check_settings
    from gpuillum.io.tiff import COMPRESSION_CHOICES

    input_dir, out_dir = check_path(input_dir, "INPUT"), check_path(out_dir, "OUT")
    if settings is not None:
        check_settings(settings)
    if background is not None:
        check_instance(background, "background", BackgroundSettings, " (e.g. BackgroundSettings('median', 25))")
    if threads is not None:
        check_integer(threads, "threads")
    for name, value in (("pattern", pattern), ("layout", layout)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name}: expected a str, got {type(value).__name__}")
    if compression is not None and not (isinstance(compression, str) and compression.lower() in COMPRESSION_CHOICES):
        raise ValueError(f"compression: expected one of {', '.join(map(repr, COMPRESSION_CHOICES))} or None, got {compression!r}")
    if log is not None and not callable(log):
        raise TypeError(f"log: expected a callable taking one line of text, or None, got {type(log).__name__}")
    loaddata = None if loaddata is None else check_path(loaddata, "loaddata")
    if isinstance(functions, dict):
        functions = {key: check_path(path, "functions") for key, path in functions.items()}
    elif functions is not None:
        functions = check_path(functions, "functions")
    return input_dir, out_dir, loaddata, functions
