"""How the ``multimodal-fusion`` command reports a user's mistake: one line on stderr, with "did you mean"
where a name is close to a known one, instead of a traceback (``--debug`` or ``MULTIMODAL_FUSION_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from typing import NoReturn

DEBUG_ENV = "MULTIMODAL_FUSION_DEBUG"
"""Environment variable: set (to anything but ``0``/empty) to re-raise errors with their traceback."""

USER_ERRORS = (ValueError, KeyError, TypeError, OSError, ImportError)
"""Errors the package raises for bad input (names, values, files); others get their type name shown."""


def debug_requested(argv: list[str]) -> bool:
    """Whether ``--debug`` is among ``argv`` or ``MULTIMODAL_FUSION_DEBUG`` is set."""
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def suggestion_from_message(message: str) -> str:
    """``"; did you mean 'x'?"`` when a quoted name in ``message`` is close to a name of the longest quoted list
    in it (the project's errors list the known names: ``must be one of ['cls', 'mean'], got 'maen'``); ``""``
    when the message already suggests one or nothing is close."""
    if "did you mean" in message:
        return ""
    lists = [re.findall(r"'([^']*)'", inside) for inside in re.findall(r"\[([^\[\]]*)\]", message)]
    choices = max(lists, key=len, default=[])
    if len(choices) < 2:
        return ""
    others = [name for found in lists if found is not choices for name in found]
    quoted = others + re.findall(r"'([^']*)'", message)
    for name in quoted:
        if name and name not in choices:
            close = difflib.get_close_matches(name, choices, n=1)
            if close:
                return f"; did you mean {close[0]!r}?"
    return ""


def one_line(error: BaseException) -> str:
    """``error`` as one line: its message (a ``KeyError``'s without the quotes), the type name for errors that
    are not bad input, and a "did you mean" found in the message."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    message = " ".join(message.split()) or type(error).__name__
    if not isinstance(error, USER_ERRORS):
        message = f"{type(error).__name__}: {message}"
    return message + suggestion_from_message(message)


class OneLineParser(argparse.ArgumentParser):
    """``ArgumentParser`` whose errors are one line (no usage block) with "did you mean" for an unknown command
    or flag; exits with status 2 as argparse does."""

    def error(self, message: str) -> NoReturn:
        hint = ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            close = difflib.get_close_matches(choice[1], re.findall(r"'?([\w-]+)'?", choice[2]), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        elif message.startswith("unrecognized arguments:"):
            flags = [o for action in self._actions for o in action.option_strings]
            for arg in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(arg.split("=")[0], flags, n=1)
                if arg.startswith("-") and close:
                    hint = f"; did you mean {close[0]!r}?"
                    break
        self.exit(2, f"{self.prog}: error: {message}{hint} (see --help)\n")
