"""The ``qc`` and ``compare`` commands, and the ``--no-qc`` option of run, calc and apply.

``gpuillum qc INPUT [--corrected OUT] [--json] [--strict] [--report DIR]``: per group, is
correction needed, and (with the output folder of a run) did it work; ``--strict`` exits with
EXIT_PROBLEMS when a correction made something worse or cannot be trusted.
``gpuillum compare INPUT --methods jump,polynomial,... -o OUT``: every method on the same groups,
ranked, with the blog's Figure 6 as a panel.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

EXIT_PROBLEMS = 3  # qc --strict: a flag was raised (exit 2 stays "the user must fix an option or file")


def add_no_qc(parser) -> None:
    """``--qc`` / ``--no-qc`` on a command that runs a job (default: on, or GPUILLUM_QC)."""
    import argparse

    parser.add_argument("--qc", action=argparse.BooleanOptionalAction, default=None,
                        help="write OUT/qc, the QC report: metrics, verdicts and pictures on a sample of at most 16 + 96 "
                        "images per group, typically 1-5 s per group (default: on; GPUILLUM_QC=0 in the environment "
                        "makes off the default)")


def extend_parser(commands, *job_parsers) -> None:
    """Add ``qc`` and ``compare`` to the subcommands and ``--no-qc`` to ``job_parsers`` (run, calc, apply)."""
    from . import INPUT_HELP, _discovery_options, _execution_options

    for parser in job_parsers:
        add_no_qc(parser)
    qc = commands.add_parser("qc", help="is correction needed, and did it work? metrics and verdicts per group",
                             description="Measure each group's shading (robust to cells) and say whether correction is "
                             "needed; with --corrected OUT (a run's output folder) also whether it worked, flagging "
                             "anything a correction made worse.")
    qc.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    qc.add_argument("--corrected", metavar="OUT", help="a gpuillum run's output folder: judge its corrected images "
                    "(OUT/corrected), models (OUT/illum) and output losses (OUT/manifest.json)")
    qc.add_argument("--json", action="store_true", help='print {"groups": [{"group", "needed", "worked", "metrics", ...}]} as JSON')
    qc.add_argument("--strict", action="store_true", help=f"exit with {EXIT_PROBLEMS} when any group has a problem flagged "
                    "(a metric made worse, an over-corrected corner, a model that follows the cells, ...)")
    qc.add_argument("--report", metavar="DIR", help="also write the pictures and report.html into DIR")
    _discovery_options(qc)
    compare = commands.add_parser("compare", help="run several methods on the same groups and rank them by QC score",
                                  description="Estimate every method on the same groups (one reading pass for the "
                                  "methods with a model per group), score each on the same sample of corrected images, "
                                  "rank them, and show each method's corrected image at matched brightness.")
    compare.add_argument("input", metavar="INPUT", help=INPUT_HELP)
    compare.add_argument("-o", "--out", required=True, metavar="OUT", help="where compare.html, compare.json, the "
                         "panels and the models (functions/<method>/) go")
    compare.add_argument("--methods", metavar="NAMES", help="comma-separated: method names, CellProfiler presets (jump, "
                         "cdrp, ...), polynomial, or NAME:option=value (default: those of --method auto)")
    _discovery_options(compare)
    _execution_options(compare, resume=False)


def cmd_qc(args) -> int:
    from ..job import plan_plate
    from ..job.groups import MIN_IMAGES, make_groups
    from ..qc.collect import summary_line, write_qc
    from ..qc.report import public
    from .options import UsageError

    plan = plan_plate(args.input, pattern=args.pattern, layout=args.layout, loaddata=args.loaddata,
                      ignore_unmatched=args.ignore_unmatched)
    if plan.problems:
        raise UsageError(plan.problems[0].message + f" (see: {plan_command(args)})")
    groups = make_groups(plan, "group", unit_floats=False)
    if not groups:
        raise UsageError(f"{args.input}: no usable images found")
    outputs, corrected = {}, None
    if args.corrected is not None:
        corrected = Path(args.corrected)
        outputs = _attach_run(corrected, groups, plan)
    with tempfile.TemporaryDirectory(prefix="gpuillum-qc-") as scratch:
        folder = Path(args.report) if args.report else Path(scratch)
        results, report = write_qc(groups, folder, title=f"gpuillum qc: {Path(args.input).name}", corrected_root=corrected,
                                   outputs=outputs, min_images=MIN_IMAGES)
    if args.json:
        print(json.dumps({"groups": [public(qc) for qc in results]}, indent=2, default=str))
    else:
        for qc in results:
            print(summary_line(qc))
            for flag in qc["flags"]:
                print(f"  PROBLEM: {flag['text']}")
        if args.report:
            print(f"report: {report}")
    problems = any(qc["flags"] or qc["worked"] is False for qc in results)
    if problems and not args.json:
        print("gpuillum qc: problems found (see PROBLEM lines)", file=sys.stderr)
    return EXIT_PROBLEMS if args.strict and problems else 0


def plan_command(args) -> str:
    from ..job import plan_command as command

    return command(args.input, args.pattern, args.layout, args.loaddata, args.ignore_unmatched)


def _attach_run(out: Path, groups, plan) -> dict:
    """Attach the models a run left in OUT/illum (when there are) and return its output losses by group label."""
    from ..errors import UserError
    from ..job.models import attach_existing
    from ..job.outdir import MANIFEST_NAME
    from .options import UsageError

    if not (out / "corrected").is_dir():
        raise UsageError(f"--corrected {out}: not a gpuillum output folder (no corrected/ in it)")
    manifest = {}
    if (out / MANIFEST_NAME).is_file():
        manifest = json.loads((out / MANIFEST_NAME).read_text())
    apply_method = ((manifest.get("settings") or {}).get("apply") or {}).get("method") or "Divide"
    if (out / "illum").is_dir():
        try:
            attach_existing(groups, None, out, plan.named, apply_method)
        except UserError:
            for group in groups:
                group.model = None
    return {label: entry for label, entry in (manifest.get("qc") or {}).items() if "pixels" in entry}


def cmd_compare(args) -> int:
    from ..qc.compare import compare
    from . import _logger

    summary = compare(args.input, args.out, methods=args.methods, pattern=args.pattern, layout=args.layout,
                      loaddata=args.loaddata, ignore_unmatched=args.ignore_unmatched, device=args.device,
                      threads=args.threads, log=_logger(args))
    if not args.quiet:
        for group in summary["groups"]:
            print(f"{group['group']}: " + ", ".join(f"{r['rank']}. {r['method']} ({100 * r['score']:.2f} %)" for r in group["ranking"]))
            print(f"  best: {group['why']}")
        print(f"report: {summary['report']}")
    return 0


COMMANDS = {"qc": cmd_qc, "compare": cmd_compare}
