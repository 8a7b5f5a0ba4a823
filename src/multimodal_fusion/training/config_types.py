"""Type check of the values read from a run's YAML/JSON config file, before they reach ``HfArgumentParser``.

Flags are typed by argparse, but values from a file are set as defaults and pass unconverted: ``learning_rate:
[0.001]`` would otherwise fail deep inside ``TrainingArguments`` with a message naming no key.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any


def did_you_mean(names: Iterable[str], choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the first of ``names`` close to one of ``choices`` (``difflib``), with
    ``"(for 'y')"`` added when several names were given; ``""`` when none is close."""
    names, choices = [str(n) for n in names], [str(c) for c in choices]
    hints = []
    for name in names:
        close = difflib.get_close_matches(name, choices, n=1)
        if close:
            hints.append(f"{close[0]!r}" + (f" (for {name!r})" if len(names) > 1 else ""))
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is typing.Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    base = origin or hint
    if isinstance(base, type) and issubclass(base, enum.Enum):
        return isinstance(value, (base, str))
    if isinstance(base, type):
        return isinstance(value, base)
    return True  # a hint this check does not model: leave it to the dataclass


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_describe(arg) for arg in typing.get_args(hint)]
        return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
    if origin is typing.Literal:
        return " or ".join(repr(v) for v in typing.get_args(hint))
    if hint is type(None):
        return "null"
    base = origin or hint
    name = base.__name__ if isinstance(base, type) else str(hint)
    return ("an " if name[:1] in "aeiouAEIOU" else "a ") + name


def check_config_types(
    values: Mapping[str, Any],
    argument_classes: Iterable[type],
    source: str,
    overrides: Mapping[str, Any] | None = None,
) -> None:
    """Raise ``TypeError`` naming the key, the expected type and the value for the first value of ``values`` whose
    type does not fit its field in ``argument_classes`` (dataclasses). Integers count as floats. ``overrides``
    (name -> type hint) replaces an annotation, for fields whose flag is a string but whose file value may also
    be, e.g., a number."""
    hints: dict[str, Any] = {}
    for cls in argument_classes:
        resolved = typing.get_type_hints(cls)
        hints.update({f.name: resolved[f.name] for f in dataclasses.fields(cls) if f.init})
    hints.update(overrides or {})
    for key, value in values.items():
        if key in hints and not _matches(value, hints[key]):
            raise TypeError(
                f"{source}: `{key}` must be {_describe(hints[key])}, got {type(value).__name__} {value!r}"
            )
