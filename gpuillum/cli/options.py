"""The command line's options: generic ones written here, each method's generated from its registration.

Every registered method declares its options (gpuillum.methods.base.CliOption); they are added
to ``run`` and ``calc`` in one group per method, a flag shared by several methods once (the
registry refuses two meanings for one flag). After parsing, :func:`method_from_args` picks the
method (``--method NAME``; CellProfiler when only its options are given; none for a
``--background`` alone), collects the options given for it and refuses, in one line, an option
that belongs to another method.
"""
from __future__ import annotations

import argparse

from ..errors import UserError

OPTION_PREFIX = "method_option:"  # argparse dests of method options: OPTION_PREFIX + the settings field


class UsageError(UserError):
    """A bad option value or combination (exit code 2)."""


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _argparse_type(parse):
    """An argparse type from a method's ``parse``: its ValueError becomes argparse's one-line error."""
    def convert(text: str):
        try:
            return parse(text)
        except (ValueError, TypeError) as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_method_options(parser) -> None:
    """``--method NAME`` and every registered method's options, one group per method."""
    from ..methods import DEFAULT_METHOD, all_methods

    methods = all_methods()
    parser.add_argument("--method", metavar="NAME", help=f"how to estimate and correct: {', '.join(m.name for m in methods)} "
                        f"(default: {DEFAULT_METHOD}; `gpuillum methods` describes them); the options of every method "
                        "follow, grouped by method")
    owners: dict[str, list[str]] = {}
    for method in methods:
        for option in method.cli_options():
            owners.setdefault(option.flag, []).append(method.name)
    added = set()
    for method in methods:
        group = parser.add_argument_group(f"method {method.name}", method.summary)
        for option in method.cli_options():
            if option.flag in added:
                continue
            added.add(option.flag)
            shared = owners[option.flag]
            help_text = option.help + (f" [{', '.join(shared)}]" if len(shared) > 1 else "")
            dest = OPTION_PREFIX + option.dest
            if option.kind == "flag":
                group.add_argument(option.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=help_text)
            else:
                group.add_argument(option.flag, dest=dest, type=_argparse_type(option.parse), choices=option.choices,
                                   metavar=option.metavar, default=None, help=help_text)


def given_options(args) -> dict[str, object]:
    """{settings field: value} of every method option given on the command line."""
    return {name[len(OPTION_PREFIX):]: value for name, value in vars(args).items()
            if name.startswith(OPTION_PREFIX) and value is not None}


def method_from_args(args):
    """(method name or None, its options) for the API: ``--method``, else CellProfiler when only its
    options are given; an option of another method than the chosen one is a UsageError."""
    from ..methods import all_methods, get_method

    given = given_options(args)
    flags = {option.dest: option.flag for method in all_methods() for option in method.cli_options()}
    if args.method is not None:
        try:
            method = get_method(args.method)
        except UserError as error:
            raise UsageError(f"--{error}") from None
    elif given:
        method = get_method("cellprofiler")
    else:
        return None, {}
    own = {option.dest for option in method.cli_options()}
    foreign = sorted(flags[dest] for dest in given if dest not in own)
    if foreign:
        owners = [m.name for m in all_methods() if any(o.flag == foreign[0] for o in m.cli_options())]
        takes = ", ".join(sorted(flags[dest] for dest in own)) or "no options"
        chosen = f"--method {method.name}" if args.method is not None else f"method {method.name} (the default)"
        raise UsageError(f"{foreign[0]} is an option of method {' and '.join(owners)}, not of {chosen}, which takes {takes}"
                         + ("" if args.method is not None else f"; give --method {'|'.join(owners)}"))
    return method.name, {dest: value for dest, value in given.items() if dest in own}
