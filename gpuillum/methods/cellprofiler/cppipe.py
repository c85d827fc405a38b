"""Reading CellProfiler pipeline files (``.cppipe``, text format version 3 and later).

A pipeline is a header (``CellProfiler Pipeline: ...``, ``Version:N``, ...) followed by modules::

    CorrectIlluminationCalculate:[module_num:5|svn_version:...|variable_revision_number:2|...]
        Select the input image:OrigBlue
        Calculate function for each image individually, or based on all images?:All\\x3A Across cycles

Setting lines are ``<text>:<value>``; version 3/4 files escape special characters in values as
``\\xNN`` (``\\x3A`` is ``:``), version 5 files mostly do not. Settings are positional: a module's
meaning comes from its name, its ``variable_revision_number`` and the order of its values (the
setting texts change between CellProfiler releases), so callers index ``values``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from ...errors import InvalidValue

_MODULE_HEADER = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*):\[(?P<attributes>.*)\]\s*$")
_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class PipelineModule:
    """One module of a pipeline: name, number, settings revision and its (text, value) settings in order."""

    name: str
    number: int
    revision: int
    enabled: bool
    settings: tuple[tuple[str, str], ...]

    @property
    def values(self) -> list[str]:
        """The setting values in file order."""
        return [value for _text, value in self.settings]

    def value(self, text_prefix: str, default: str | None = None) -> str | None:
        """The first value whose setting text starts with ``text_prefix`` (case-insensitive)."""
        prefix = text_prefix.lower()
        for text, value in self.settings:
            if text.lower().startswith(prefix):
                return value
        return default


def unescape(value: str) -> str:
    """Undo CellProfiler's ``\\xNN`` escaping of setting values."""
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value)


def _attribute(attributes: str, key: str) -> str | None:
    """The value of ``key`` in a module header's ``key:value|key:value`` attribute list."""
    match = re.search(rf"(?:^|\|){key}:([^|]*)", attributes)
    return match.group(1) if match else None


def read_pipeline(path, exclude_disabled: bool = True) -> list[PipelineModule]:
    """Parse a ``.cppipe`` file into its modules, in file order; one-line ValueError on a bad file.

    Like CellProfiler's ``Pipeline.modules()``, modules marked ``enabled:False`` (which
    CellProfiler does not run) are left out unless ``exclude_disabled`` is False.
    """
    from ...io.safe_open import NotRegularFile, open_regular

    path = Path(path)
    try:
        with open_regular(path) as handle:  # never a FIFO, which would block for ever
            text = handle.read().decode("utf-8", errors="replace")
    except NotRegularFile as error:
        raise InvalidValue(f"{path}: cannot read the pipeline ({error.kind}, not a regular file)") from None
    except OSError as error:
        raise InvalidValue(f"{path}: cannot read the pipeline ({error.strerror or error})") from None
    return parse_pipeline(text, source=str(path), exclude_disabled=exclude_disabled)


def parse_pipeline(text: str, source: str = "<pipeline>", exclude_disabled: bool = True) -> list[PipelineModule]:
    """Parse the text of a ``.cppipe`` file (see ``read_pipeline``)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("CellProfiler Pipeline"):
        raise InvalidValue(f"{source}: not a CellProfiler text pipeline (first line must start with 'CellProfiler Pipeline')")
    version = None
    for line in lines[1:]:
        if line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
            break
    if version is None or not version.isdigit() or int(version) < 3:
        raise InvalidValue(f"{source}: pipeline text format version {version!r} is not supported (expected 3 or later)")

    modules: list[PipelineModule] = []
    current = None
    for line_number, line in enumerate(lines, start=1):
        header = _MODULE_HEADER.match(line)
        if header and not line.startswith((" ", "\t")):
            if current is not None:
                modules.append(PipelineModule(**current))
            attributes = header.group("attributes")
            number = _attribute(attributes, "module_num")
            revision = _attribute(attributes, "variable_revision_number")
            if number is None or revision is None or not number.isdigit() or not revision.isdigit():
                raise InvalidValue(f"{source}:{line_number}: module header without module_num/variable_revision_number")
            enabled = _attribute(attributes, "enabled")
            current = dict(
                name=header.group("name"),
                number=int(number),
                revision=int(revision),
                enabled=enabled != "False",
                settings=(),
            )
        elif current is not None and line.startswith((" ", "\t")) and line.strip():
            setting = line.lstrip()
            if ":" not in setting:
                raise InvalidValue(f"{source}:{line_number}: setting line without ':' in module {current['name']}")
            name, value = setting.split(":", 1)
            current["settings"] = current["settings"] + ((unescape(name), unescape(value)),)
    if current is not None:
        modules.append(PipelineModule(**current))
    return [m for m in modules if m.enabled] if exclude_disabled else modules
