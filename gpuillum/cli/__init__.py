"""The ``gpuillum`` command line: options from the method registry, the API underneath, a summary printed.

Commands: ``run`` (estimate and correct), ``plan`` (what would be processed, nothing computed),
``calc`` and ``apply`` (the two passes on their own), ``methods`` (the registered methods),
``demo`` (a synthetic plate end to end), ``qc`` and ``compare`` (cli/qc.py), ``profile`` (cli/profile.py). A problem the user must fix prints one line
``gpuillum: error: ...`` and exits with 2; a bug shows its traceback (exit 1); Ctrl-C exits with
130 (SIGTERM with 143) and leaves no partial files.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..errors import UserError, one_line
from ..io.tiff import COMPRESSION_CHOICES as COMPRESSIONS
from .options import UsageError, add_method_options, method_from_args, positive_int

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 2, 130, 143
SHOWN_SKIPPED = 5  # skipped inputs listed in the run summary; the manifest has them all


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
    from ..demo.run import DEMO_MAX_SIDE

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


# ----------------------------------------------------------------------------- parser


def _discovery_options(parser):
    group = parser.add_argument_group("finding the images (at most one; default: a built-in plate layout, else the folder's "
                                      "images and stacks as they are)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--pattern", metavar="REGEX", help="regex with named groups plate, well (or row+col), site, channel, optional z, t, "
                           "matched against each file's path relative to INPUT (or its name)")
    exclusive.add_argument("--layout", metavar="NAME", help="built-in layout: gpuillum, imagexpress, operetta (opera, phenix)")
    exclusive.add_argument("--loaddata", metavar="CSV", help="a CellProfiler LoadData CSV (paths relative to INPUT)")
    group.add_argument("--ignore-unmatched", action="store_true",
                       help="leave alone the TIFF files the pattern or layout does not name instead of reporting them as "
                            "problems, so that a --pattern selects a subset (one plate, some channels)")


def _output_options(parser, *, apply_method: bool = False):
    from ..output_dtype import OUTPUT_DTYPES

    group = parser.add_argument_group("correcting")
    if apply_method:
        from ..methods.base import choice_parser
        from .options import _argparse_type

        group.add_argument("--apply-method", type=_argparse_type(choice_parser(("Divide", "Subtract"))),
                           help="Divide (default) or Subtract a CellProfiler function (.npy, .mat)")
    group.add_argument("--background", choices=("median", "tophat"), help="also subtract a per-image background after the "
                       "function (median: the fast downsampled median; tophat: white top-hat); alone, it is the whole method")
    group.add_argument("--background-radius", type=positive_int, metavar="R", help="radius of --background in pixels (required with --background)")
    group.add_argument("--output-dtype", choices=OUTPUT_DTYPES, default="same",
                       help="same: the input's type, rounded and clamped, what is lost counted (default); float32: the values "
                       "as computed; signed: int16 for 8-bit, int32 for 16-bit input, so a subtracted background keeps its "
                       "negatives")
    group.add_argument("--compression", default="same", metavar="NAME", type=_compression,
                       help="TIFF compression of corrected images: same (as each input, default), none, zlib/deflate, lzw, zstd, lzma, packbits")


def _execution_options(parser, *, resume=True):
    group = parser.add_argument_group("running")
    group.add_argument("--device", default="auto", help="auto (GPU if usable), cpu, gpu or cuda:N (default: auto)")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument("--workers", type=positive_int, default=1, metavar="N",
                           help="Dask worker processes (CPU) or GPUs; 1 (default) runs in this process")
    exclusive.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask cluster, e.g. tcp://host:8786")
    group.add_argument("--threads", type=positive_int, metavar="N", help="decode/write threads per process (default: CPU count, 2..16)")
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


INPUT_HELP = ("a plate folder, a folder of images or stacks, or one image or stack file (TIFF, OME-TIFF; read only, never "
              "written to)")
OUT_HELP = ("output folder, not inside INPUT; may hold unrelated files, but one holding another run's manifest.json "
            "is refused (see --resume, --overwrite)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..demo.run import DEMO_MAX_SIDE, DEMO_MAX_SITES, DEMO_SHAPE, DEMO_SITES, DEMO_WELLS

    parser = OneLineParser(prog="gpuillum", description="GPU-accelerated illumination correction for microscopy.")
    parser.add_argument("--version", action="version", version=f"gpuillum {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="estimate the models and correct every image (both passes)",
                              description="Correct every image of INPUT with a method (`gpuillum methods` lists them; "
                              "default: CellProfiler's, from --preset NAME, --cppipe FILE or by default the jump preset, modified "
                              "by its options). The summary and OUT/manifest.json show the effective method.")
    run.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    run.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP)
    _discovery_options(run)
    add_method_options(run)
    _output_options(run)
    _execution_options(run)

    plan = commands.add_parser("plan", help="show what would be processed and every problem found; computes nothing")
    plan.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    _discovery_options(plan)

    calc = commands.add_parser("calc", help="pass 1 only: the models (illumination functions) under OUT/illum",
                               description="Pass 1 only: one model per group under OUT/illum, from a method that estimates "
                               "over a group (default: CellProfiler's, from --preset, --cppipe or by default the jump preset).")
    calc.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    calc.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP + "; models go to OUT/illum")
    _discovery_options(calc)
    add_method_options(calc)
    _execution_options(calc)

    apply = commands.add_parser("apply", help="pass 2 only: correct with existing models (gpuillum's .npy/.npz, CellProfiler's .npy/.mat)")
    apply.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    apply.add_argument("-o", "--out", required=True, metavar="OUT", help=OUT_HELP + "; corrected images go to OUT/corrected")
    source = apply.add_mutually_exclusive_group()
    source.add_argument("--functions", metavar="DIR", help="folder of <plate>_Illum<channel>.npy (or .npz, .mat) files (default: OUT/illum)")
    source.add_argument("--function", action="append", metavar="CHANNEL=FILE",
                        help="the function file (.npy, .mat, .npz) or BaSiCPy model folder (save_model) for CHANNEL on "
                        "every plate (repeatable)")
    _discovery_options(apply)
    _output_options(apply, apply_method=True)
    _execution_options(apply)

    methods = commands.add_parser("methods", help="list the methods, or one method's options")
    methods.add_argument("name", nargs="?", metavar="NAME", help="a method: show its options and defaults")

    demo = commands.add_parser("demo", help="make a synthetic plate, correct it, and report how close the result is to the truth")
    demo.add_argument("out", nargs="?", default="gpuillum-demo", metavar="OUT", help="output folder (default: ./gpuillum-demo)")
    demo.add_argument("--shape", type=_shape, default=DEMO_SHAPE, metavar="HxW",
                      help=f"image size, each side 16 to {DEMO_MAX_SIDE} (default {DEMO_SHAPE[0]}x{DEMO_SHAPE[1]})")
    demo.add_argument("--wells", type=positive_int, default=DEMO_WELLS, metavar="N",
                      help=f"number of wells, in rows of up to 12 (default {DEMO_WELLS})")
    demo.add_argument("--sites", type=positive_int, default=DEMO_SITES, metavar="N",
                      help=f"sites per well, at most {DEMO_MAX_SITES} (default {DEMO_SITES}; an All-mode function wants 20+ images per channel)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthetic plate (default 0)")
    _execution_options(demo, resume=False)
    from .qc import extend_parser  # qc, compare, and --no-qc on run, calc and apply

    extend_parser(commands, run, calc, apply)
    from .profile import add_parser as add_profile

    add_profile(commands)
    return parser


# ----------------------------------------------------------------------------- options -> API


def background_from_args(args):
    from ..job import BackgroundSettings

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


def _logger(args):
    if getattr(args, "quiet", False):
        return None
    return lambda text: print(text, file=sys.stderr)


def _common(args) -> dict:
    return dict(pattern=args.pattern, layout=args.layout, loaddata=args.loaddata, ignore_unmatched=args.ignore_unmatched,
                device=args.device, workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                on_error=args.on_error, progress=args.progress, resume=args.resume, overwrite=args.overwrite,
                log=_logger(args), qc=args.qc)


def _losses(lost: dict) -> str:
    """What the output dtype cast lost in a group, in words (OutputStats.to_dict)."""
    text = (f"{100 * lost['clipped_fraction']:.2f} % of the pixels clipped ({lost['clipped_below']} below 0, "
            f"{lost['clipped_above']} above the maximum)")
    if lost["grey_levels_in"]:
        text += f", {100 * lost['lost_grey_levels']:.0f} % of {lost['grey_levels_in']} grey levels merged"
    return text


def _report(result, args) -> None:
    if args.quiet:
        return
    if result.method:
        print(f"method: {result.method}")
    from ..job.groups import key_name

    for key, path in sorted(result.functions.items(), key=lambda item: str(item[0])):
        print(f"function {key_name(key)}: {path}")
    if result.written or result.reused:
        print(f"corrected: {len(result.written)} written" + (f", {len(result.reused)} already complete" if result.reused else "")
              + f" under {Path(result.out_dir) / 'corrected'}")
    for label, lost in result.qc.items():
        if lost["clipped_fraction"] or lost["lost_grey_levels"]:
            print(f"output {label}: {_losses(lost)}")
    if result.loaddata is not None:
        print(f"LoadData CSV: {result.loaddata}")
    if result.skipped:
        print(f"skipped {len(result.skipped)} input(s) (all listed in the manifest):")
        for _name, reason in result.skipped[:SHOWN_SKIPPED]:
            print(f"  - {reason}")
        if len(result.skipped) > SHOWN_SKIPPED:
            print(f"  ... and {len(result.skipped) - SHOWN_SKIPPED} more")
    print(f"manifest: {result.manifest}  ({result.timings.get('total', 0.0):.1f} s)")


# ----------------------------------------------------------------------------- commands


def cmd_plan(args) -> int:
    from ..job import plan_plate, plan_warnings

    plan = plan_plate(args.input, pattern=args.pattern, layout=args.layout, loaddata=args.loaddata,
                      ignore_unmatched=args.ignore_unmatched)
    print(plan.summary(max_problems=None))
    for text in plan_warnings(plan):
        print(f"warning: {text}")
    return EXIT_OK if plan.ok else EXIT_USAGE


def cmd_run(args, passes=("calc", "apply")) -> int:
    from ..job import run

    method, options = method_from_args(args)
    result = run(args.input, args.out, method=method, options=options, background=background_from_args(args),
                 output_dtype=args.output_dtype, compression=args.compression, passes=passes, **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_calc(args) -> int:
    from ..job import calc_plate

    method, options = method_from_args(args)
    result = calc_plate(args.input, args.out, method=method or "cellprofiler", options=options, **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_apply(args) -> int:
    from ..job import apply_plate

    result = apply_plate(args.input, args.out, functions=_functions_from_args(args), background=background_from_args(args),
                         apply_method=args.apply_method, output_dtype=args.output_dtype, compression=args.compression,
                         **_common(args))
    _report(result, args)
    return EXIT_OK


def cmd_methods(args) -> int:
    from ..methods import all_methods, get_method

    if args.name is None:
        for method in all_methods():
            aliases = f" ({', '.join(method.aliases)})" if method.aliases else ""
            print(f"{method.name + aliases:<22} {method.summary}")
        print("\n`gpuillum methods NAME` shows a method's options; `gpuillum run INPUT -o OUT --method NAME [options]` runs it.")
        return EXIT_OK
    try:
        method = get_method(args.name)
    except UserError as error:
        raise UsageError(str(error)) from None
    print(f"{method.name}: {method.summary}")
    for option in method.cli_options():
        head = option.flag + ("" if option.kind == "flag" else f" {option.metavar or option.dest.upper()}")
        default = f" (default: {option.default})" if option.default not in (None, False) else ""
        print(f"  {head:<26} {option.help}{default}")
    return EXIT_OK


def cmd_demo(args) -> int:
    from ..demo.run import run_demo

    summary = run_demo(args.out, shape=args.shape, wells=args.wells, sites=args.sites, seed=args.seed,
                       device=args.device, workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                       on_error=args.on_error, progress=args.progress, log=_logger(args))
    if not args.quiet:
        print(summary)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "plan": cmd_plan, "calc": cmd_calc, "apply": cmd_apply, "methods": cmd_methods, "demo": cmd_demo}
from .qc import COMMANDS as QC_COMMANDS  # noqa: E402 (qc, compare: gpuillum/cli/qc.py)

COMMANDS.update(QC_COMMANDS)
from .profile import COMMANDS as PROFILE_COMMANDS  # noqa: E402 (profile: gpuillum/cli/profile.py)

COMMANDS.update(PROFILE_COMMANDS)


def main(argv=None) -> int:
    """Entry point of ``gpuillum`` and ``python -m gpuillum``; returns the exit code."""
    from ..job.stopping import Terminated, stop_on_signals

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
    except UserError as error:  # what the user must fix; anything else is a bug and keeps its traceback
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
