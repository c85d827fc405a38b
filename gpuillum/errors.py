"""The error hierarchy: what the user must fix (one line, CLI exit 2) versus a bug (a traceback).

Every error gpuillum raises on purpose for a bad file, option or argument is a :class:`UserError`:
its message is one line naming the file or option and what was expected; the CLI prints it and
exits with 2. :class:`InvalidValue` and :class:`InvalidType` are also ValueError and TypeError,
so Python callers catch them as they would NumPy's. Anything else that escapes (an IndexError, a
ValueError from deep inside a library) is a bug: the CLI lets its traceback show and exits with 1.
"""
from __future__ import annotations


class UserError(Exception):
    """A problem the user must fix, said in one line (CLI: exit code 2, no traceback)."""


class InvalidValue(UserError, ValueError):
    """A value the user gave (an option, an argument, a file's content) that gpuillum cannot use."""


class InvalidType(UserError, TypeError):
    """An argument of the wrong type given to gpuillum's Python API."""


def one_line(error: BaseException) -> str:
    """The first line of an error's message (KeyError's argument unquoted), or its type's name."""
    text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    text = str(text).strip()
    return text.splitlines()[0] if text else type(error).__name__
