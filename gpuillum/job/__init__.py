"""The run: find the images, estimate a model per group or correct each image, write everything.

``run(INPUT, OUT, ...)`` is the whole job and the CLI's ``run`` (``run_plate`` is the same
function); ``calc_plate`` / ``apply_plate`` are its two passes on their own; ``plan`` lists what a
run would process. The steps live in their own modules: spec (the checked options), outdir (OUT's
manifest, lock, resume, overwrite), executor (threads or Dask, one ordered map), groups, estimate
(pass 1), correct (pass 2), index (load_data.csv), run (the pipeline).

Memory bound (host, per process, independent of the number of images). T threads, images of P
pixels of b bytes, working resolution P' of the method's reduction (CellProfiler's: P, or P/25
with the jump preset's 0.2x resize):

* pass 1: at most T batches of 16 images in flight, each held by one thread one image at a time
  plus its temporaries (~ P*(b + 8) bytes) and one partial reduction (12 B/px at P' for
  CellProfiler's), and at most T finished partials waiting to be merged: about
  T*P*(b+8) + (2T+1)*12*P' bytes; on a GPU each thread holds its batch in a pinned buffer
  (16*P*b);
* pass 2: at most 2T files in flight (read-ahead queue), each image with ~3 float32-sized
  temporaries while being corrected: about 2T*P*(b+12) bytes for single images (a stack: its
  planes times that), plus the models (4P each).

E.g. 2160^2 uint16 with 16 threads: pass 1 ~ 16*4.7e6*10 B = 0.75 GB, pass 2 ~ 32*4.7e6*14 B =
2.1 GB, whatever the number of images.
"""
from __future__ import annotations

from pathlib import Path

from .estimate import few_images_warning
from .groups import MIN_IMAGES
from .pipeline import IMAGE_DTYPES, RunResult, plan_inputs
from .spec import PASSES, BackgroundSettings, Discovery, JobError, build_spec, default_threads

__all__ = ["BackgroundSettings", "JobError", "RunResult", "apply_plate", "calc_plate", "default_threads", "plan_plate",
           "plan_warnings", "run", "run_plate"]


def run(input_path, out_dir, *, method=None, options=None, settings=None, preset=None, pattern=None, layout=None,
        loaddata=None, ignore_unmatched=False, background: BackgroundSettings | None = None, apply_method: str | None = None,
        functions=None, passes=PASSES, output_dtype: str = "same", device="auto", workers: int = 1,
        scheduler: str | None = None, threads: int | None = None, resume: bool = False, overwrite: bool = False,
        on_error: str = "fail", compression: str = "same", progress: bool | None = False, log=None, qc: bool | None = None) -> RunResult:
    """Correct the images of INPUT (a folder or an image file), writing under OUT; returns a RunResult.

    Parameters
    ----------
    input_path, out_dir : str or Path
        INPUT: a plate folder (layouts, ``pattern``, ``loaddata``), a folder of images or stacks,
        or one image or stack file. OUT: the output folder (never inside INPUT).
    method : str, optional
        A registered method (``gpuillum methods``): "cellprofiler" (the default), "median",
        "tophat", ...; ``options`` are its settings by name, as its CLI options (e.g.
        ``{"radius": 15}``), or an instance of the method's Settings class. CellProfiler's may also come as ``settings`` (a CalculateSettings)
        or ``preset`` ("jump", ...), and ``apply_method`` (Divide, Subtract).
    background : BackgroundSettings, optional
        A per-image background subtracted after the model (``--background``); alone, the method.
    passes : ("calc", "apply"), ("calc",) or ("apply",)
        Estimate and correct, estimate only, or correct with existing ``functions`` (a folder of
        ``<plate>_Illum<channel>`` .npy/.npz/.mat files, default OUT/illum, or a mapping
        {channel or (plate, channel): file}).
    output_dtype : {"same", "float32", "signed"}
        See gpuillum.output_dtype; the manifest and the result's ``qc`` count what ``same`` loses.
    device, workers, scheduler, threads
        ``auto|cpu|gpu|cuda:N``; Dask worker processes or GPUs, or a running scheduler's address;
        decode/write threads per process.
    resume, overwrite, on_error, compression, progress, log
        As the CLI's options (``log``: a callable taking each line of progress text).
    qc : bool
        Write OUT/qc: per group the QC metrics before/after on a bounded sample of images, the
        verdicts (correction needed? did it work?, also in the manifest and the result's ``qc``),
        pictures and report.html (gpuillum.qc.collect; ``--no-qc`` turns it off). None: yes,
        unless the environment variable GPUILLUM_QC is 0 / no / off / false.

    Returns
    -------
    RunResult

    Examples
    --------
    >>> gi.run_plate("PLATE_DIR", "OUT", preset="jump")
    >>> gi.run("field.tif", "OUT", method="median", options={"radius": 15}, output_dtype="signed")
    """
    from .pipeline import run as run_spec

    spec = build_spec(input_path, out_dir, method=method, options=options, settings=settings, preset=preset, pattern=pattern,
                      layout=layout, loaddata=loaddata, ignore_unmatched=ignore_unmatched, background=background,
                      apply_method=apply_method, functions=functions, passes=passes, output_dtype=output_dtype, device=device,
                      workers=workers, scheduler=scheduler, threads=threads, resume=resume, overwrite=overwrite,
                      on_error=on_error, compression=compression, progress=progress, log=log, qc=qc)
    return run_spec(spec)


run_plate = run


def calc_plate(input_path, out_dir, **options) -> RunResult:
    """Pass 1 only: the models under OUT/illum."""
    return run(input_path, out_dir, passes=("calc",), **options)


def apply_plate(input_path, out_dir, *, functions=None, **options) -> RunResult:
    """Pass 2 only: correct INPUT with existing models (default OUT/illum; CellProfiler .npy/.mat work)."""
    return run(input_path, out_dir, passes=("apply",), functions=functions, **options)


def plan_plate(input_path, *, pattern=None, layout=None, loaddata=None, ignore_unmatched=False, dtypes=IMAGE_DTYPES):
    """What a run would process (nothing computed): gpuillum.inputs.records.Plan."""
    from .spec import as_path

    return plan_inputs(as_path(input_path, "INPUT"), Discovery(pattern, layout, None if loaddata is None else str(loaddata),
                                                               ignore_unmatched), dtypes)


def plan_warnings(plan) -> list[str]:
    """What ``gpuillum plan`` warns of before a job: plate x channel groups too small for a model."""
    return [few_images_warning(plate, channel, len(records))
            for (plate, channel), records in plan.groups().items() if len(records) < MIN_IMAGES]


def plan_command(input_path, pattern=None, layout=None, loaddata=None, ignore_unmatched=False) -> str:
    """The ``gpuillum plan`` command line, quoted for a POSIX shell, that lists what a run finds."""
    return Discovery(pattern, layout, None if loaddata is None else str(loaddata), ignore_unmatched).plan_command(Path(input_path))
