"""What a method declares, so that the engine, the CLI and the manifest need nothing else.

A method is a subclass of :class:`Method` registered with :func:`gpuillum.methods.register`:

* ``name``, ``aliases`` and a one-line ``summary`` (``gpuillum methods`` lists them);
* ``Settings``: a frozen dataclass, validated in ``__post_init__``, whose fields are declared with
  :func:`setting` (default, help, choices, option name): the CLI options are generated from it;
* its **scope** for given settings: ``image`` (a background or function per image: median,
  top-hat, rolling ball, CellProfiler's "Each"), ``group`` (one model per plate x channel, per
  folder channel, per stack channel: CellProfiler's "All", flat + dark fields) or ``series`` (one
  model per position over time: a projection over time);
* for ``group``/``series`` methods: a **reduction** over the images of the group (streamed,
  mergeable, bit-identical for any number of workers when merged in batch order; picklable for
  Dask) and how it **finishes** into an :class:`~gpuillum.model.IlluminationModel`;
* for ``image`` methods: how one image is **corrected** under the output dtype policy;
* for methods that subtract a background (median, top-hats, rolling ball, projections): the
  **background** of an image, which the run's QC draws as before / background / after;
* its **checks** before anything is written (input dtypes, image sizes), and a one-line
  **description** of the effective settings for the run summary and the manifest.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar
from ..errors import InvalidValue

SCOPES = ("image", "group", "series")
INTEGER_AND_FLOAT32 = ("uint8", "uint16", "float32")


def setting(default=dataclasses.MISSING, *, help: str, flag: str | None = None, choices=None, metavar: str | None = None,
            parse: Callable[[str], Any] | None = None, default_factory=dataclasses.MISSING):
    """A settings field with its command-line option.

    Parameters
    ----------
    default : the setting's default (omit for a required setting)
    help : str
        The option's help text.
    flag : str, optional
        The option, e.g. ``"--radius"`` (default: ``--`` + the field name with dashes).
    choices : sequence, optional
        The allowed values (also checked by the CLI).
    metavar : str, optional
    parse : callable, optional
        Turns the option's text into the value (default: the type of ``default``; bool defaults
        make a flag, ``--name`` / ``--no-name``).

    Examples
    --------
    >>> @dataclass(frozen=True)
    ... class MedianSettings:
    ...     radius: int = setting(help="disk radius in pixels", metavar="R")
    """
    metadata = {"cli": {"help": help, "flag": flag, "choices": None if choices is None else tuple(choices),
                        "metavar": metavar, "parse": parse}}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


@dataclass(frozen=True)
class CliOption:
    """One command-line option of a method: ``flag`` sets the settings field ``dest``.

    ``kind``: "value" (takes an argument parsed by ``parse``) or "flag" (a boolean, with its
    ``--no-`` form). Two methods may declare the same flag only with the same ``dest`` and kind.
    """

    flag: str
    dest: str
    help: str
    kind: str = "value"
    parse: Callable[[str], Any] | None = None
    choices: tuple | None = None
    metavar: str | None = None
    default: Any = None  # shown in the help only; settings defaults come from the dataclass

    @property
    def signature(self) -> tuple:
        """What must agree when two methods share the flag."""
        return (self.flag, self.dest, self.kind)


@dataclass(frozen=True)
class GroupInfo:
    """What a method knows about a group before reading its pixels: its label for messages, the
    images' shape and dtype, how many there are, and the key that names it."""

    label: str
    shape: tuple
    dtype: str
    count: int
    key: tuple = ()


class Reduction:
    """A streamed, mergeable summary of a group's images (base class documenting the protocol).

    ``add(image)`` takes the next image on the computing backend; ``merge(other)`` adds a partial from the same settings (partials are merged in
    batch order, so a reduction whose merge is exact or order-fixed is bit-identical for any
    number of workers); ``to(device)`` moves the state to a device; instances pickle with NumPy
    state (Dask ships them between processes).
    """

    count: int = 0

    def add(self, image) -> "Reduction":  # pragma: no cover - protocol
        raise NotImplementedError

    def merge(self, other: "Reduction") -> "Reduction":  # pragma: no cover - protocol
        raise NotImplementedError

    def to(self, device) -> "Reduction":  # pragma: no cover - protocol
        raise NotImplementedError


class Method:
    """Base class of registered methods; see the module docstring for what a subclass declares."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Settings: ClassVar[type]
    aliases: ClassVar[tuple[str, ...]] = ()
    remedy: ClassVar[str] = ""  # a setting that avoids clipping or lost grey levels, named in warnings
    unit_floats: ClassVar[bool] = False  # float images must lie in [0, 1] (CellProfiler's convention)
    min_images: ClassVar[int | None] = None  # fewer images in a group model are warned of (None: the engine's MIN_IMAGES)

    # -- declaration

    def check_settings(self, settings, *, estimating: bool, correcting: bool) -> None:
        """Refuse, with a one-line ValueError, settings that would destroy the images when a run
        estimates and/or corrects with them (e.g. subtracting a rescaled function)."""

    def scope(self, settings) -> str:
        """"image", "group" or "series" for these settings."""
        raise NotImplementedError

    def cli_options(self) -> list[CliOption]:
        """The options of ``gpuillum run --method NAME``: by default one per settings field."""
        hints = typing.get_type_hints(self.Settings)
        return [_option_of(f, hints[f.name]) for f in dataclasses.fields(self.Settings) if "cli" in f.metadata]

    def settings_from_options(self, values: dict):
        """Settings from the options the user gave (``{dest: value}``, only those given)."""
        try:
            return self.Settings(**values)
        except TypeError as error:  # a required setting missing
            missing = [f for f in dataclasses.fields(self.Settings) if f.name not in values
                       and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            if missing:
                flags = ", ".join(option.flag for option in self.cli_options() if option.dest in {f.name for f in missing})
                raise InvalidValue(f"method {self.name}: needs {flags}") from None
            raise

    def default_settings(self):
        """The settings of ``--method NAME`` with no option (ValueError when one is required)."""
        return self.settings_from_options({})

    def describe(self, settings) -> str:
        """The effective settings in one line (run summary and manifest)."""
        parts = [f"{f.name.replace('_', ' ')} {getattr(settings, f.name)}" for f in dataclasses.fields(settings)]
        return f"{self.name}: " + ", ".join(parts) if parts else self.name

    def manifest_settings(self, settings) -> dict:
        """The settings as recorded in the manifest (JSON types)."""
        return {"name": self.name, "settings": dataclasses.asdict(settings)}

    def input_dtypes(self, settings) -> tuple[str, ...]:
        """The image dtypes the method takes."""
        return INTEGER_AND_FLOAT32

    def check(self, settings, group: GroupInfo) -> None:
        """Refuse, with a one-line ValueError, a group the method cannot process (before any write)."""

    # -- group and series scope

    def reduction(self, settings, group: GroupInfo, start: int = 0) -> Reduction:
        """A fresh, empty reduction for one batch of the group, whose first image is the group's
        image ``start`` (a reduction whose arithmetic depends on image positions, such as a
        pairwise float sum, aligns on it; the others ignore it)."""
        raise NotImplementedError(f"method {self.name}: no group reduction")

    def finish(self, settings, reduction: Reduction, group: GroupInfo, device):
        """The group's IlluminationModel from its merged reduction (NumPy arrays)."""
        raise NotImplementedError(f"method {self.name}: no group reduction")

    def background(self, settings, image, model=None):
        """The background this method subtracts from ``image`` (a 2-D array in the image's units,
        on its backend): image-scope methods compute it from the image, group and series methods
        take it from the group's ``model``. None for a method that subtracts no background. The
        run's QC draws it between the image before and after correction."""
        return None

    # -- image scope

    def correct(self, settings, image, *, output_dtype: str = "same", stats=None):
        """One image corrected on its own backend, cast by the output dtype policy."""
        raise NotImplementedError(f"method {self.name}: not a per-image method")


def choice_parser(choices, aliases: dict | None = None) -> Callable[[str], str]:
    """A ``parse`` for options with fixed choices, accepting any case and short ``aliases``
    (``{"median": "Median Filter"}``); a one-line ValueError lists them otherwise."""
    by_lower = {choice.lower(): choice for choice in choices}
    by_lower.update(aliases or {})

    def parse(text: str) -> str:
        value = by_lower.get(text.strip().lower())
        if value is None:
            also = f" (or {', '.join(aliases)})" if aliases else ""
            raise InvalidValue(f"expected one of {', '.join(repr(c) for c in choices)}{also}, got {text!r}")
        return value

    return parse


def _option_of(field: dataclasses.Field, annotation) -> CliOption:
    """The CliOption a settings field declares through :func:`setting`; the value's parser is
    ``parse``, else the field's annotated type (``int | None`` parses as int)."""
    cli = field.metadata["cli"]
    default = None if field.default is dataclasses.MISSING else field.default
    flag = cli["flag"] or "--" + field.name.replace("_", "-")
    kinds = [kind for kind in typing.get_args(annotation) if kind is not type(None)] or [annotation]
    if kinds[0] is bool and cli["parse"] is None:
        return CliOption(flag, field.name, cli["help"], kind="flag", default=default)
    parse = cli["parse"] or (kinds[0] if kinds[0] in (int, float, str) else str)
    return CliOption(flag, field.name, cli["help"], parse=parse, choices=cli["choices"], metavar=cli["metavar"], default=default)
