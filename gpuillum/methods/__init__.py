"""The method registry: every way gpuillum estimates and corrects illumination, by name.

``gpuillum methods`` lists them; ``gpuillum run INPUT -o OUT --method NAME [its options]`` runs
one. A method is one module (or small package) with a :class:`~gpuillum.methods.base.Method`
subclass, registered here with :func:`register`; its settings dataclass gives the CLI options,
its ``describe`` the manifest's text (see gpuillum.methods.base).
"""
from __future__ import annotations

import importlib

from .base import CliOption, GroupInfo, Method, Reduction, setting  # noqa: F401 (the protocol's public names)
from ..errors import InvalidType, InvalidValue

BUILT_IN = (  # the modules that register the built-in methods
    "gpuillum.methods.cellprofiler.method", "gpuillum.methods.median", "gpuillum.methods.tophat", "gpuillum.methods.flatfield",
    "gpuillum.methods.auto", "gpuillum.methods.rolling_ball", "gpuillum.methods.sliding_paraboloid",
    "gpuillum.methods.projection",
)
DEFAULT_METHOD = "cellprofiler"

_METHODS: dict[str, Method] = {}
_NAMES: dict[str, str] = {}  # name or alias -> name
_LOADED = False


def register(method: Method) -> Method:
    """Add ``method`` (an instance) under its name and aliases; returns it.

    A name or alias taken by another method, or an option flag that another method declares with
    another meaning, is a ValueError: the CLI's options would clash.
    """
    if not isinstance(method, Method):
        raise InvalidType(f"method: expected a gpuillum.methods.Method instance, got {type(method).__name__}")
    for name in (method.name, *method.aliases):
        owner = _NAMES.get(name)
        if owner is not None and type(_METHODS[owner]) is not type(method):  # the same class again: a module reloaded
            raise InvalidValue(f"method name {name!r} is taken by method {owner!r}")
    signatures = {option.flag: (option.signature, other.name) for other in _METHODS.values() if other.name != method.name
                  for option in other.cli_options()}
    for option in method.cli_options():
        taken = signatures.get(option.flag)
        if taken is not None and taken[0] != option.signature:
            raise InvalidValue(f"method {method.name}: option {option.flag} means something else for method {taken[1]}")
    _METHODS[method.name] = method
    for name in (method.name, *method.aliases):
        _NAMES[name] = method.name
    return method


def unregister(name: str) -> None:
    """Remove a method and its aliases (tests register temporary methods)."""
    method = _METHODS.pop(name)
    for alias in (method.name, *method.aliases):
        _NAMES.pop(alias, None)


def _load_built_in() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in BUILT_IN:
            importlib.import_module(module)


def all_methods() -> list[Method]:
    """Every registered method, by name."""
    _load_built_in()
    return [_METHODS[name] for name in sorted(_METHODS)]


def get_method(name: str) -> Method:
    """The method called ``name`` (or one of its aliases); a one-line ValueError listing the names otherwise."""
    _load_built_in()
    if not isinstance(name, str) or name.strip().lower() not in _NAMES:
        raise InvalidValue(f"method: expected one of {', '.join(sorted(_METHODS))}, got {name!r} (gpuillum methods lists them)")
    return _METHODS[_NAMES[name.strip().lower()]]
