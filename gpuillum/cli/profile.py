"""The ``profile`` command: a line profile of an image, and of its corrected copy, as a plot and CSV.

``gpuillum profile IMAGE [CORRECTED] --row N | --column N | --line X0,Y0,X1,Y1`` draws the values
along the row, column or line of both images on shared axes (the lesson's Plot Profile check of a
background subtraction; matplotlib) into a PNG and prints them as CSV on stdout:
``distance,x,y,image[,corrected]``. A line is sampled as ImageJ's Plot Profile samples it
(gpuillum.qc.profile). Stacks: ``--plane K`` picks the plane of both files.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path


def _line(text: str) -> tuple[float, float, float, float]:
    """argparse type of --line: four numbers X0,Y0,X1,Y1."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"expected X0,Y0,X1,Y1 (four numbers, pixels), got {text!r}")
    return values


def add_parser(commands) -> None:
    """Add ``profile`` to the subcommands."""
    profile = commands.add_parser("profile", help="line profile of an image and its corrected copy: a PNG plot and CSV values",
                                  description="Plot the values along a row, a column or a line of IMAGE and, when given, "
                                  "CORRECTED on shared axes (PNG), and print them as CSV (distance,x,y,image[,corrected]).")
    profile.add_argument("image", metavar="IMAGE", help="a TIFF image or stack (read only)")
    profile.add_argument("corrected", nargs="?", metavar="CORRECTED", help="the same image corrected, e.g. from OUT/corrected")
    where = profile.add_mutually_exclusive_group(required=True)
    where.add_argument("--row", type=int, metavar="N", help="the row y = N (0 = top)")
    where.add_argument("--column", type=int, metavar="N", help="the column x = N (0 = left)")
    where.add_argument("--line", type=_line, metavar="X0,Y0,X1,Y1", help="a straight line in pixels, sampled as ImageJ's "
                       "Plot Profile (one point a pixel, bilinear interpolation)")
    profile.add_argument("--plane", type=int, default=0, metavar="K", help="the plane of a stack, 0-based (default 0)")
    profile.add_argument("-o", "--out", metavar="PNG", help="where the plot goes (default: IMAGE's name + _profile.png in "
                         "the current folder)")


def _read_plane(path: Path, plane: int):
    from ..io.stacks import read_planes, read_stack_info
    from .options import UsageError

    info = read_stack_info(path)
    if not 0 <= plane < info.planes:
        raise UsageError(f"--plane: {path} has {info.planes} plane(s) (0 to {info.planes - 1}), got {plane}")
    return read_planes(path, [plane])[0]


def cmd_profile(args) -> int:
    from ..qc.figures import profile_plot
    from ..qc.profile import line_profile
    from .options import UsageError

    paths = [Path(p) for p in (args.image, args.corrected) if p is not None]
    images = [_read_plane(path, args.plane) for path in paths]
    if len(images) == 2 and images[0].shape != images[1].shape:
        raise UsageError(f"CORRECTED: {paths[1]} is {images[1].shape[0]} x {images[1].shape[1]}, IMAGE "
                         f"{images[0].shape[0]} x {images[0].shape[1]}; give the same image before and after")
    profile = line_profile(images[0].shape, row=args.row, column=args.column, line=args.line)
    columns = ["image", "corrected"][:len(paths)]
    values = [profile.values(image) for image in images]
    out = Path(args.out) if args.out else Path(f"{paths[0].name.split('.')[0]}_profile.png")
    plane = f" (plane {args.plane})" if args.plane else ""
    profile_plot(profile, {f"{column}: {path.name}": value for column, path, value in zip(columns, paths, values)}, out,
                 title=f"{profile.description} of {paths[0].name}{plane}")
    try:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["distance", "x", "y", *columns])
        for i in range(len(profile.distance)):
            writer.writerow([f"{profile.distance[i]:.6g}", f"{profile.x[i]:.6g}", f"{profile.y[i]:.6g}",
                             *(f"{value[i]:.6g}" for value in values)])
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head: the reader has what it wanted
        sys.stdout = open(os.devnull, "w")
        return 0
    print(f"profile plot: {out}", file=sys.stderr)
    return 0


COMMANDS = {"profile": cmd_profile}
