"""Typed parts of the one modality spec model: [`OwnNetworkSpec`] (the fields only your own network uses, the
``network`` part of a ``ModalitySpec``) and [`ProcessorSpec`] (a [`FusionProcessor`]'s settings of one modality,
``FusionProcessor.modalities[name]``, saved in ``processor_config.json``).

Both are read by attribute. Mapping-style reads (``spec["kind"]``, ``spec.get("path")``) of the former dict forms
still work for one release, with a ``DeprecationWarning`` ([`DeprecatedMappingReads`]); code inside the package
never uses them (``tests/test_layout.py``).

This file is copied next to the weights with the model's remote code, so it imports only the standard library,
torch and sibling modules.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from torch import nn


class DeprecatedMappingReads:
    """``spec["key"]`` / ``spec.get("key")`` / ``"key" in spec`` / ``spec["key"] = value`` on a typed spec, as on
    the former dicts; each access warns (``DeprecationWarning``): use the attribute instead. Subclasses name their readable keys in ``keys``."""

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """The keys a mapping-style read accepts (``field_names``)."""
        return cls.field_names()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The spec's field names, as its dict form spells them."""
        return tuple(f.name for f in fields(cls))

    def _read(self, key: str) -> Any:
        return getattr(self, key)

    def _warn(self, key: str) -> None:
        warnings.warn(
            f"reading a {type(self).__name__} like a dict ({key!r}) is deprecated; read the attribute "
            f"`.{key}` instead",
            DeprecationWarning,
            stacklevel=3,
        )

    def __getitem__(self, key: str) -> Any:
        self._warn(key)
        if key not in self.keys():
            raise KeyError(key)
        return self._read(key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of field ``key`` (deprecated: read the attribute), else ``default``."""
        self._warn(key)
        return self._read(key) if key in self.keys() else default

    def __setitem__(self, key: str, value: Any) -> None:
        self._warn(key)
        if key not in self.field_names():
            raise KeyError(key)
        self._write(key, value)

    def _write(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()


def _positive_int(name: str, key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"modality '{name}': `{key}` must be a positive integer, got {value!r}")


@dataclass
class OwnNetworkSpec(DeprecatedMappingReads):
    """Your own network (``module_encoder.py``): the ``network`` part of a ``ModalitySpec``.

    Fields: ``module`` (an import path ``"package.module:factory"``; an ``nn.Module`` instance given to
    ``from_dict`` is recorded as its class path with ``module_from_instance``), ``module_kwargs`` (constructor
    arguments), ``weights`` (a state-dict file, loaded by ``from_encoders``), ``feature_layer`` (the node whose
    output is pooled), ``blocks`` (the submodule holding the blocks, for ``trainable_layers``),
    ``trainable_modules`` (submodule names that train; the rest is frozen) and ``image_size`` (side of the
    default image processor's output and of the probe image).
    """

    module: str
    module_kwargs: dict[str, Any] = field(default_factory=dict)
    module_from_instance: bool = False
    weights: str | None = None
    feature_layer: str | None = None
    blocks: str | None = None
    trainable_modules: list[str] = field(default_factory=list)
    image_size: int | None = None

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """What a saved spec of a modality without its own network holds for each field (as in v0.1)."""
        out: dict[str, Any] = {f.name: None for f in fields(cls)}
        out["module_from_instance"] = False
        return out

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> OwnNetworkSpec:
        """Validate the own-network fields of modality ``name`` (``None`` values take the defaults).

        Raises:
            ValueError: naming the modality and the field: unknown keys, a ``module`` that is neither an
                ``nn.Module`` nor ``"package.module:factory"``, ``module_kwargs`` not a dict, ``feature_layer`` /
                ``blocks`` not a name, ``trainable_modules`` not a list of names, ``image_size`` not positive.
        """
        unknown = set(values) - set(cls.field_names())
        if unknown:
            raise ValueError(
                f"modality '{name}': unknown own-network keys {sorted(unknown)}; allowed: {list(cls.field_names())}"
            )
        given = {key: value for key, value in values.items() if value is not None}
        module = given.pop("module", None)
        if isinstance(module, nn.Module):
            module_class = type(module)
            module, given["module_from_instance"] = (
                f"{module_class.__module__}:{module_class.__qualname__}",
                True,
            )
        elif not isinstance(module, str) or module.count(":") != 1 or not all(module.split(":")):
            raise ValueError(
                f"modality '{name}': `module` must be an nn.Module or an import path 'package.module:factory', "
                f"got {module!r}"
            )
        kwargs = given.pop("module_kwargs", None)
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise ValueError(f"modality '{name}': `module_kwargs` must be a dict of constructor arguments")
        for key in ("feature_layer", "blocks"):
            if given.get(key) is not None and not isinstance(given.get(key), str):
                raise ValueError(f"modality '{name}': `{key}` must be a module name like 'avgpool'")
        modules = given.pop("trainable_modules", None)
        modules = [modules] if isinstance(modules, str) else modules
        if modules is not None and (
            not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) and m for m in modules)
        ):
            raise ValueError(f"modality '{name}': `trainable_modules` must be a list of submodule names")
        _positive_int(name, "image_size", given.get("image_size"))
        if given.get("weights") is not None:
            given["weights"] = str(given["weights"])
        given["module_from_instance"] = bool(given.get("module_from_instance", False))
        return cls(
            module=module, module_kwargs=dict(kwargs or {}), trainable_modules=list(modules or []), **given
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field, flat (the keys a saved ``ModalitySpec`` holds)."""
        return {f.name: copy_value(getattr(self, f.name)) for f in fields(self)}


def copy_value(value: Any) -> Any:
    """A shallow copy of a list / dict value (so a saved dict does not alias the spec), else the value."""
    return type(value)(value) if isinstance(value, (list, dict)) else value


AUTO = "auto"
"""``ProcessorSpec.max_length`` before it is settled: the tokenizer's own limit (``None`` = no truncation)."""


@dataclass
class ProcessorSpec(DeprecatedMappingReads):
    """A [`FusionProcessor`]'s settings of one modality (``FusionProcessor.modalities[name]``), saved per modality
    in ``processor_config.json`` (a field at its default is not written, as before).

    Fields: ``kind``; ``path`` (where the sub-processor came from); ``kind_class`` (import path of a kind
    registered outside the package); ``input_fields`` / ``call_kwargs`` (the encoder family's batch fields and
    sub-processor call settings, from its adapter); text ``max_length`` (``"auto"`` until settled: the tokenizer's
    limit; ``None`` = no truncation); audio ``sampling_rate``, ``min_audio_samples``, ``frames`` (precomputed
    ``[T, input_dim]`` frames, no feature extractor); image ``timm`` (a timm image processor, saved as its
    ``config.json``), ``input_data_format``, ``image_bit_depth``; ``input_dim`` (vectors / frames width).
    """

    kind: str | None = None
    path: str | None = None
    sampling_rate: int | None = None
    max_length: int | str | None = AUTO
    min_audio_samples: int | None = None
    input_dim: int | None = None
    timm: bool | None = None
    input_data_format: str | None = None
    image_bit_depth: int | None = None
    input_fields: list[str] | None = None
    call_kwargs: dict[str, Any] | None = None
    frames: bool | None = None
    kind_class: str | None = None

    ALWAYS_SAVED: ClassVar[tuple[str, ...]] = ("kind", "path")

    @classmethod
    def from_dict(cls, name: str, values: Mapping[str, Any]) -> ProcessorSpec:
        """The settings of modality ``name`` from a saved / user-written dict (a missing key takes its default).
        Only the types of the container fields are checked here; the kind's checks run when the processor is
        built (``processor_loading.normalize_processor_spec``).

        Raises:
            ValueError: naming the modality: unknown keys (listing the allowed ones), ``input_fields`` not a list
                of field names, ``call_kwargs`` not a dict.
        """
        unknown = set(values) - set(cls.field_names())
        if unknown:
            raise ValueError(
                f"modality '{name}': unknown processor spec keys {sorted(unknown)}; allowed: "
                f"{['processor', *cls.field_names()]}"
            )
        given = dict(values)
        fields_ = given.get("input_fields")
        if fields_ is not None:
            if isinstance(fields_, str) or not all(isinstance(f, str) for f in fields_):
                raise ValueError(f"modality '{name}': `input_fields` must be a list of batch field names")
            given["input_fields"] = list(fields_)
        if given.get("call_kwargs") is not None:
            if not isinstance(given["call_kwargs"], Mapping):
                raise ValueError(
                    f"modality '{name}': `call_kwargs` must be a dict of sub-processor arguments"
                )
            given["call_kwargs"] = dict(given["call_kwargs"])
        return cls(**given)

    def replace(self, **changes: Any) -> ProcessorSpec:
        """A copy with ``changes`` applied (no checks)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """What ``processor_config.json`` holds for the modality: ``kind``, ``path`` and every field that is not
        at its default (the saved format of the former dicts)."""
        out = {}
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            if spec_field.name in self.ALWAYS_SAVED or value != spec_field.default:
                out[spec_field.name] = copy_value(value)
        return out

    def __getitem__(self, key: str) -> Any:
        self._warn(key)
        if key not in self:  # as the former dict: only the saved keys
            raise KeyError(key)
        return self._read(key)

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def keys(self) -> tuple[str, ...]:  # type: ignore[override]
        """The saved keys (``to_dict``'s), as the former dict had: ``dict(spec)`` gives that dict."""
        return tuple(self.to_dict())

    def _read(self, key: str) -> Any:
        return self.settled_max_length if key == "max_length" else getattr(self, key)

    @property
    def settled_max_length(self) -> int | None:
        """``max_length`` with ``"auto"`` read as unset (``None``)."""
        return None if self.max_length == AUTO else self.max_length
