"""The ``gpuillum`` command line: thin argument parsing around gpuillum.engine.job.

Commands: ``run`` (the whole plate job), ``plan`` (what would be processed, nothing computed),
``calc`` and ``apply`` (the two passes on their own), ``demo`` (a synthetic plate end to end).
User errors print one line ``gpuillum: error: ...`` and exit with code 2; Ctrl-C exits with 130
(SIGTERM with 143) and leaves no partial files.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from gpuillum.engine.job import one_line
from gpuillum.engine.stopping import Terminated, stop_on_signals
from gpuillum.io.tiff import COMPRESSION_CHOICES as COMPRESSIONS

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143
DEFAULT_PRESET = "jump"
SHOWN_SKIPPED = 5  # skipped inputs listed in the run summary; the manifest has them all

SMOOTHING_ALIASES = {
    "none": "No smoothing", "convex-hull": "Convex Hull", "polynomial": "Fit Polynomial", "median": "Median Filter",
    "gaussian": "Gaussian Filter", "average": "Smooth to Average", "splines": "Splines",
}
FILTER_SIZE_ALIASES = {"automatic": "Automatic", "object": "Object size", "object-size": "Object size", "manual": "Manually", "manually": "Manually"}
AGGREGATION_ALIASES = {"each": "Each", "all": "All: Across cycles", "all-first": "All: First cycle", "all-across": "All: Across cycles"}


class UsageError(Exception):
    """A bad option value (exit code 2)."""


def _choice(aliases: dict, choices):
    """argparse type accepting CellProfiler's own strings (any case) or the short aliases."""
    by_lower = {c.lower(): c for c in choices}
    by_lower.update(aliases)

    def convert(text: str) -> str:
        value = by_lower.get(text.strip().lower())
        if value is None:
            also = f" (or {', '.join(aliases)})" if aliases else ""
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(repr(c) for c in choices)}{also}, got {text!r}")
        return value

    return convert




def _compression(text: str) -> str:
    """argparse type of --compression: checked before any work is done."""
    if text.strip().lower() not in COMPRESSIONS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(COMPRESSIONS)}, got {text!r}")
    return text.strip().lower()


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gpuillum run: error: ... (see gpuillum run --help)``, exit 2."""

    def error(self, message):
        message = " ".join(str(message).split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _shape(text: str) -> tuple[int, int]:
    """argparse type of demo --shape: HxW (or N for NxN), each side between 16 and DEMO_MAX_SIDE."""
    from gpuillum.engine.demo import DEMO_MAX_SIDE

    parts = text.lower().replace(",", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) == 1:
        shape = shape * 2
    if len(shape) != 2 or min(shape) < 16 or max(shape) > DEMO_MAX_SIDE:
        raise argparse.ArgumentTypeError(f"expected HxW (each 16 to {DEMO_MAX_SIDE}), e.g. 512x512, got {text!r}")
    return shape


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


# ----------------------------------------------------------------------------- parser


def _discovery_options(parser):
    group = parser.add_argument_group("finding the images (at most one; default: detect a built-in layout)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--pattern", metavar="REGEX", help="regex with named groups plate, well (or row+col), site, channel, optional z, t, "
                           "matched against each file's path relative to INPUT (or its name)")
    exclusive.add_argument("--layout", metavar="NAME", help="built-in layout: gpuillum, imagexpress, operetta (opera, phenix)")
    exclusive.add_argument("--loaddata", metavar="CSV", help="a CellProfiler LoadData CSV (paths relative to INPUT)")
    group.add_argument("--ignore-unmatched", action="store_true",
                       help="leave alone the TIFF files the pattern or layout does not name instead of reporting them as "
                            "problems, so that a --pattern selects a subset (one plate, some channels)")


def _method_options(parser):
    from gpuillum.methods import cellprofiler as cp

    group = parser.add_argument_group(
        "illumination function (CellProfiler CorrectIlluminationCalculate)",
        "The options below modify a base configuration: --preset NAME, --cppipe FILE, or by default the jump preset "
        "(Regular, All: Across cycles, Median Filter size 20, rescale Yes, resize x0.2). The run summary and the "
        "manifest show the effective method.")
    group.add_argument("--preset", choices=sorted(cp.PRESETS), help="base configuration (default: jump, JUMP Cell Painting)")
    group.add_argument("--cppipe", metavar="FILE", help="take the settings from a CellProfiler pipeline")
    group.add_argument("--cppipe-module", metavar="N|NAME", help="which CorrectIlluminationCalculate module of --cppipe "
                       "(module number or output image name; default: the first)")
    group.add_argument("--intensity", type=_choice({}, cp.INTENSITY_CHOICES), help="Regular or Background (default: Regular)")
    group.add_argument("--smoothing", type=_choice(SMOOTHING_ALIASES, cp.SMOOTHING_CHOICES),
                       help="No smoothing, Convex Hull, Fit Polynomial, Median Filter, Gaussian Filter, Smooth to Average, Splines "
                       "(or none, convex-hull, polynomial, median, gaussian, average, splines; default: Median Filter)")
    group.add_argument("--filter-size-method", type=_choice(FILTER_SIZE_ALIASES, cp.FILTER_SIZE_CHOICES),
                       help="Automatic, Object size or Manually (default: Manually)")
    group.add_argument("--filter-size", type=float, metavar="N", help="smoothing filter size in pixels of the resized image (implies Manually; default: 20)")
    group.add_argument("--object-width", type=float, metavar="N", help="approximate object diameter (implies Object size; default: 10)")
    group.add_argument("--rescale", type=_choice({}, cp.RESCALE_CHOICES), help="Yes, No or Median (default: Yes; Subtract needs No)")
    group.add_argument("--aggregation", type=_choice(AGGREGATION_ALIASES, cp.AGGREGATION_CHOICES),
                       help="Each (a function per image) or All (one per plate and channel; also all-first, all-across; default: All: Across cycles)")
    group.add_argument("--dilate", action="store_true", default=None, help="dilate objects in the averaged image")
    group.add_argument("--dilation-radius", type=int, metavar="R", help="dilation radius (implies --dilate; default: 1)")
    group.add_argument("--block-size", type=int, metavar="N", help="block size of the Background method (default: 60)")
    group.add_argument("--resize-factor", type=float, metavar="F", help="shrink images by F (0 < F <= 1) before the module, "
                       "enlarge the function back after it (default: 0.2, as JUMP)")
    group.add_argument("--compat", choices=cp.COMPAT_CHOICES, help="CellProfiler 4.2 or 5 semantics (default: 4.2)")


def _apply_options(parser):
    group = parser.add_argument_group("correcting")
    group.add_argument("--apply-method", type=_choice({}, ("Divide", "Subtract")),
                       help="Divide or Subtract the function (default: Subtract for Background or Splines, else Divide)")
    group.add_argument("--background", choices=("median", "tophat"), help="also subtract a per-image background "
                       "(median: gpuillum.median_background; tophat: white top-hat); alone, it is the whole method")
    group.add_argument("--background-radius", type=_positive_int, metavar="R", help="radius of --background in pixels (required with --background)")
    group.add_argument("--compression", default="same", metavar="NAME", type=_compression,
                       help="TIFF compression of corrected images: same (as each input, default), none, zlib/deflate, lzw, zstd, lzma, packbits")


def _execution_options(parser, *, resume=True):
    group = parser.add_argument_group("running")
    group.add_argument("--device", default="auto", help="auto (GPU if usable), cpu, gpu or cuda:N (default: auto)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--workers", type=_positive_int, default=1, metavar="N",
                           help="Dask worker processes (CPU) or GPUs; 1 (default) runs in this process")
    exclusive.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask cluster, e.g. tcp://host:8786")
    group.add_argument("--threads", type=_positive_int, metavar="N", help="decode/write threads per process (default: CPU count, 2..16)")
    if resume:
        again = group.add_mutually_exclusive_group()
        again.add_argument("--resume", action="store_true", help="complete a partial run in OUT (same settings), skipping intact outputs")
        again.add_argument("--overwrite", action="store_true",
                           help="OUT holds a different run: remove the outputs its manifest lists (gpuillum's files "
                           "under illum/ and corrected/), corrected/load_data.csv and manifest.json (nothing else) and start "
                           "again. Without it such an OUT is refused; an OUT with unrelated files but no manifest is used as is")
    group.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                       help="bad input files: stop with an error (default) or skip them and list them in the manifest")
    progress = group.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show progress bars")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress bars")
    group.add_argument("-q", "--quiet", action="store_true", help="print only errors")


INPUT_HELP = "folder with the plate's TIFF files (read only, never written to)"
OUT_HELP = ("output folder, not inside INPUT; may hold unrelated files, but one holding another run's manifest.json "
            "is refused (see --resume, --overwrite)")


def build_parser() -> argparse.ArgumentParser:
    from gpuillum.engine.demo import DEMO_MAX_SIDE, DEMO_MAX_SITES, DEMO_SHAPE, DEMO_SITES, DEMO_WELLS

    parser = OneLineParser(prog="gpuillum", description="GPU-accelerated illumination correction for microscopy plates.")
    from gpuillum import __version__

    parser.add_argument("--version", action="version", version=f"gpuillum {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="estimate the functions and correct every image (both passes)",
                              description="Estimate one illumination function per plate x channel and correct every image. "
                              "Method: --preset NAME, --cppipe FILE, or by default the jump preset; CellProfiler options "
                              "(--smoothing, --aggregation, ...) modify that base. The summary and OUT/manifest.json show the "
                              "effective method.")
    run.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    run.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP)
    _discovery_options(run)
    _method_options(run)
    _apply_options(run)
    _execution_options(run)

    plan = commands.add_parser("plan", help="show what would be processed and every problem found; computes nothing")
    plan.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    _discovery_options(plan)

    calc = commands.add_parser("calc", help="pass 1 only: the illumination functions under OUT/illum",
                               description="Pass 1 only: the illumination functions under OUT/illum. Method: --preset, "
                               "--cppipe, or by default the jump preset, modified by any CellProfiler option.")
    calc.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    calc.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP + "; functions go to OUT/illum")
    _discovery_options(calc)
    _method_options(calc)
    _execution_options(calc)

    apply = commands.add_parser("apply", help="pass 2 only: correct with existing functions (gpuillum's or CellProfiler's .npy/.mat)")
    apply.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    apply.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP + "; corrected images go to OUT/corrected")
    source = apply.add_mutually_exclusive_group()
    source.add_argument("--functions", metavar="DIR", help="folder of <plate>_Illum<channel>.npy (or .mat) files (default: OUT/illum)")
    source.add_argument("--function", action="append", metavar="CHANNEL=FILE",
                        help="the function file for CHANNEL on every plate (repeatable)")
    _discovery_options(apply)
    _apply_options(apply)
    _execution_options(apply)

    demo = commands.add_parser("demo", help="make a synthetic plate, correct it, and report how close the result is to the truth")
    demo.add_argument("out", nargs="?", default="gpuillum-demo", metavar="OUT", help="output folder (default: ./gpuillum-demo)")
    demo.add_argument("--shape", type=_shape, default=DEMO_SHAPE, metavar="HxW",
                      help=f"image size, each side 16 to {DEMO_MAX_SIDE} (default {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]})")
    demo.add_argument("--wells", type=_positive_int, default=DEMO_WELLS, metavar="N",
                      help=f"number of wells, in rows of up to 12 (default {DEMO_WELLS})")
    demo.add_argument("--sites", type=_positive_int, default=DEMO_SITES, metavar="N",
                      help=f"sites per well, at most {DEMO_MAX_SITES} (default {DEMO_SITES}; an All-mode function wants 20+ images per channel)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthetic plate (default 0)")
    _execution_options(demo, resume=False)
    return parser


# ----------------------------------------------------------------------------- options -> API


def settings_from_args(args):
    """CalculateSettings from --preset / --cppipe / the CellProfiler options, or None when none was given."""
    from gpuillum.methods import cellprofiler as cp

    changes = {}
    for name in ("intensity", "smoothing", "filter_size_method", "object_width", "rescale", "aggregation",
                 "dilation_radius", "block_size", "resize_factor", "compat"):
        value = getattr(args, name, None)
        if value is not None:
            changes[name] = value
    if getattr(args, "filter_size", None) is not None:
        changes["manual_size"] = args.filter_size
        changes.setdefault("filter_size_method", "Manually")
    if "object_width" in changes:
        changes.setdefault("filter_size_method", "Object size")
    if args.dilate or "dilation_radius" in changes:
        changes["dilate"] = True
    if args.preset and args.cppipe:
        raise UsageError("--preset and --cppipe: give one of them")
    if args.cppipe_module and not args.cppipe:
        raise UsageError("--cppipe-module needs --cppipe")
    try:
        if args.cppipe:
            base = _settings_from_cppipe(args)
        elif args.preset:
            base = cp.preset(args.preset)
        elif changes:
            base = cp.preset(DEFAULT_PRESET)  # options modify the jump preset, never CellProfiler's bare defaults
        else:
            return None
        return base.replace(**changes) if changes else base
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise UsageError(_option_names(one_line(error))) from None


def _settings_from_cppipe(args):
    """The CorrectIlluminationCalculate settings of --cppipe (--cppipe-module, else its first such
    module); a problem is a UsageError in the pipeline's own terms, not in command-line options."""
    from gpuillum.methods import cellprofiler as cp
    from gpuillum.methods.cellprofiler.cppipe import read_pipeline

    try:
        module = args.cppipe_module
        if module is None:
            numbers = [m.number for m in read_pipeline(args.cppipe) if m.name == "CorrectIlluminationCalculate"]
            module = numbers[0] if numbers else 1
        elif module.isdigit():
            module = int(module)
        return cp.CalculateSettings.from_cppipe(args.cppipe, module)
    except (ValueError, TypeError, KeyError, OSError) as error:
        raise UsageError(one_line(error)) from None


def background_from_args(args):
    from gpuillum.engine.background import BackgroundSettings

    if args.background is None:
        if args.background_radius is not None:
            raise UsageError("--background-radius needs --background median|tophat")
        return None
    if args.background_radius is None:
        raise UsageError(f"--background {args.background} needs --background-radius R")
    return BackgroundSettings(args.background, args.background_radius)


def _functions_from_args(args):
    if args.function:
        mapping = {}
        for item in args.function:
            channel, sep, path = item.partition("=")
            if not sep or not channel or not path:
                raise UsageError(f"--function: expected CHANNEL=FILE, got {item!r}")
            if channel in mapping:
                raise UsageError(f"--function: channel {channel!r} given twice ({mapping[channel]} and {path}); give one file per channel")
            mapping[channel] = path
        return mapping
    return args.functions


# internal setting names that can reach a message -> the options the user typed
OPTION_NAMES = {
    "resize_factor": "--resize-factor", "manual_size": "--filter-size", "object_width": "--object-width",
    "filter_size_method": "--filter-size-method", "dilation_radius": "--dilation-radius", "block_size": "--block-size",
    "intensity": "--intensity", "smoothing": "--smoothing", "rescale": "--rescale", "aggregation": "--aggregation",
    "compat": "--compat", "apply_method": "--apply-method",
}


def _option_names(text: str) -> str:
    """``text`` with internal setting names (resize_factor, manual_size, ...) replaced by their options."""
    import re

    # not inside a quoted choice such as 'No smoothing'
    return re.sub(r"(?<![-\w])(" + "|".join(OPTION_NAMES) + r")(?![\w'\"])", lambda m: OPTION_NAMES[m.group(1)], text)


def _logger(args):
    if getattr(args, "quiet", False):
        return None
    return lambda text: print(text, file=sys.stderr)


def _common(args) -> dict:
    return dict(pattern=args.pattern, layout=args.layout, loaddata=args.loaddata, ignore_unmatched=args.ignore_unmatched,
                device=args.device, workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                on_error=args.on_error, progress=args.progress,
                log=_logger(args))


def _report(result, args) -> None:
    if args.quiet:
        return
    if result.method:
        print(f"method: {result.method}")
    for (plate, channel), path in sorted(result.functions.items()):
        print(f"function {plate}/{channel}: {path}")
    if result.written or result.reused:
        print(f"corrected: {len(result.written)} written" + (f", {len(result.reused)} already complete" if result.reused else "")
              + f" under {Path(result.out_dir) / 'corrected'}")
    if result.loaddata is not None:
        print(f"LoadData CSV: {result.loaddata}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} input(s) (all listed in the manifest):")
        for relpath, reason in result.skipped[:SHOWN_SKIPPED]:
            print(f"  - {reason}")
        if len(result.skipped) > SHOWN_SKIPPED:
            print(f"  ... and {len(result.skipped) - SHOWN_SKIPPED} more")
    print(f"manifest: {result.manifest}  ({result.timings.get('total', 0.0):.1f} s)")


# ----------------------------------------------------------------------------- commands


def cmd_plan(args) -> int:
    from gpuillum.engine.job import plan_plate, plan_warnings

    plan = plan_plate(args.input, pattern=args.pattern, layout=args.layout, loaddata=args.loaddata,
                      ignore_unmatched=args.ignore_unmatched)
    print(plan.summary(max_problems=None))
    for text in plan_warnings(plan):
        print(f"warning: {text}")
    return EXIT_OK if plan.ok else EXIT_USAGE


def cmd_run(args, passes=("calc", "apply")) -> int:
    from gpuillum.engine.job import run_plate

    result = run_plate(args.input, args.out, settings=settings_from_args(args), background=background_from_args(args),
                       apply_method=args.apply_method, compression=args.compression, resume=args.resume,
                       overwrite=args.overwrite, passes=passes, **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_calc(args) -> int:
    from gpuillum.engine.job import calc_plate

    result = calc_plate(args.input, args.out, settings=settings_from_args(args), resume=args.resume,
                        overwrite=args.overwrite, **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_apply(args) -> int:
    from gpuillum.engine.job import apply_plate

    result = apply_plate(args.input, args.out, functions=_functions_from_args(args), background=background_from_args(args),
                         apply_method=args.apply_method, compression=args.compression, resume=args.resume,
                         overwrite=args.overwrite, **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_demo(args) -> int:
    from gpuillum.engine.demo import run_demo

    summary = run_demo(args.out, shape=args.shape, wells=args.wells, sites=args.sites, seed=args.seed,
                       device=args.device, workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                       on_error=args.on_error, progress=args.progress, log=_logger(args))
    if not args.quiet:
        print(summary)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "plan": cmd_plan, "calc": cmd_calc, "apply": cmd_apply, "demo": cmd_demo}


def main(argv=None) -> int:
    """Entry point of ``gpuillum`` and ``python -m gpuillum``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: OneLineParser prints one line and exits with 2
    logging.getLogger("tifffile").setLevel(logging.ERROR)  # bad files are reported once, by us
    try:
        with stop_on_signals():
            return COMMANDS[args.command](args)
    except KeyboardInterrupt as stop:
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        print(f"gpuillum: {how}; finished files are kept, nothing half-written was left (rerun with --resume)", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    except (UsageError, ValueError, TypeError) as error:  # JobError and the one-line argument errors of the API
        print(f"gpuillum: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError as error:  # e.g. a huge --dilation-radius; CuPy's OutOfMemoryError is one too
        where = "GPU" if type(error).__module__.startswith("cupy") else "host"
        print(f"gpuillum: error: out of {where} memory ({one_line(error)}); use smaller settings "
              "(e.g. --dilation-radius, --filter-size, --shape) or images", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:  # e.g. an output folder that cannot be written
        where = f"{error.filename}: " if error.filename else ""
        print(f"gpuillum: error: {where}{error.strerror or one_line(error)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
