"""The one registry type of the package (after timm's ``_registry.py``): a name -> class table filled by a class
decorator, with a query API. Modality kinds, encoder adapters, poolings, pooled fusions and token-level fusions
each have one ``Registry``; their modules fill them by explicit imports, never by side effect elsewhere.

    POOLINGS = Registry("pooling", attribute="pooling_name")

    @POOLINGS.register("mean")
    class MeanPooling(nn.Module): ...

    POOLINGS.get("mean")      # the class; an unknown name raises KeyError listing the names (and the closest)
    POOLINGS.names()          # ["cls", "mean", ...] in registration order
    POOLINGS.describe()       # {"mean": "the first paragraph of MeanPooling's docstring", ...}

A ``Registry`` is a read-only ``Mapping`` (``name in POOLINGS``, ``POOLINGS[name]``, ``sorted(POOLINGS)``).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping, Generic[T]):
    """Name -> class table for one concept (``what`` names it in errors: "pooling", "fusion", ...).

    Args:
        what: the concept, as errors name it.
        attribute: if given, ``register`` sets this class attribute to the registered name (``pooling_name``).
    """

    def __init__(self, what: str, attribute: str | None = None):
        self.what = what
        self.attribute = attribute
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, override: bool = False) -> Callable[[T], T]:
        """Class decorator registering the class under ``name``.

        Raises:
            ValueError: ``name`` is taken by another class (pass ``override=True`` to replace it on purpose).
        """

        def wrap(cls: T) -> T:
            taken = self._entries.get(name)
            if taken is not None and taken is not cls and not override and _qualname(taken) != _qualname(cls):
                raise ValueError(f"{self.what} {name!r} is already registered ({_qualname(taken)})")
            self._entries[name] = cls
            if self.attribute:
                setattr(cls, self.attribute, name)
            return cls

        return wrap

    def unregister(self, name: str) -> T:
        """Remove and return ``name``'s class (for tests and plugins that register temporarily)."""
        return self._entries.pop(name)

    def get(self, name: str, default: object = ...) -> T:  # type: ignore[override]
        """The class registered as ``name``.

        Raises:
            KeyError: naming the concept, the known names and the closest one (unless ``default`` is given).
        """
        if name in self._entries:
            return self._entries[name]
        if default is not ...:
            return default  # type: ignore[return-value]
        raise KeyError(self.unknown(name))

    def unknown(self, name: object) -> str:
        """The message for an unknown name: the known names, and "did you mean" when one is close."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.what} {name!r}: known {self.what}s are {self.names()}{hint}"

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> the first paragraph of the class's docstring, on one line."""
        return {name: _summary(cls) for name, cls in self._entries.items()}

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {self.names()})"


class RegistryUnion(Mapping):
    """A read-only view over several registries of one concept (every fusion: pooled and token-level)."""

    def __init__(self, what: str, *registries: Registry):
        self.what = what
        self.registries = registries

    def names(self) -> list[str]:
        return [name for registry in self.registries for name in registry.names()]

    def describe(self) -> dict[str, str]:
        return {k: v for registry in self.registries for k, v in registry.describe().items()}

    def get(self, name: str, default: object = ...):  # type: ignore[override]
        for registry in self.registries:
            if name in registry:
                return registry.get(name)
        if default is not ...:
            return default
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown {self.what} {name!r}: known {self.what}s are {self.names()}{hint}")

    def __getitem__(self, name: str):
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return sum(len(registry) for registry in self.registries)


def _qualname(cls: object) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"


def _summary(cls: object) -> str:
    """The docstring's first paragraph on one line."""
    paragraph = (inspect.getdoc(cls) or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())
