"""Building, saving and loading a [`FusionProcessor`]: its sub-processors (image processor, feature extractor,
tokenizer per modality) from encoder checkpoints, and ``processor_config.json`` plus one sub-folder per modality.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import PROCESSOR_NAME, cached_file, logging

from .configuration_fusion import (
    SPEC_KEYS,
    encoder_tower_config,
    infer_kind,
    resolve_kind,
)
from .encoder_adapters import adapter_class_for
from .kind_image import TIMM_CONFIG_NAME  # noqa: F401 (re-exported)
from .kind_text import ensure_pad_token, text_max_length  # noqa: F401 (re-exported)
from .modality_kinds import get_kind, kind_class_path, kind_names, kind_of_processor, reads_encoder
from .module_processing import module_processor_spec
from .spec_parts import OwnNetworkSpec, ProcessorSpec  # noqa: F401 (ProcessorSpec re-exported)

logger = logging.get_logger(__name__)

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")
"""``from_pretrained`` arguments forwarded to every sub-processor (where to find the files)."""

PROCESSOR_SPEC_KEYS = ProcessorSpec.field_names()
"""Saved per-modality fields of ``processor_config.json`` (the fields of [`ProcessorSpec`]; ``input_fields`` and
``call_kwargs``: the encoder family's batch fields and sub-processor call settings, from its adapter)."""

ENCODER_PROCESSOR_KEYS = (
    "max_length",
    "processor",
    "min_audio_samples",
    "input_data_format",
    "image_bit_depth",
)
"""Keys of a ``from_encoders`` entry beyond the model's spec keys (processor settings, a ready sub-processor)."""


def normalize_processor_spec(name: str, spec: Any) -> tuple[ProcessorSpec, Any]:
    """Validate one modality of a [`FusionProcessor`] (a sub-processor, a spec dict with an optional
    ``processor``, or a [`ProcessorSpec`]) and return ``(settings, sub-processor)``.

    Raises:
        ValueError: naming the modality and the field (unknown keys, a kind that cannot be told, a sub-processor
            of the wrong type, the kind's own checks).
    """
    if isinstance(spec, ProcessorSpec):
        spec = spec.to_dict()
    given = dict(spec) if isinstance(spec, Mapping) else {"processor": spec}
    processor = given.pop("processor", None)
    request = ProcessorSpec.from_dict(name, given)
    kind_class = kind_class_path(request.kind, request.kind_class)  # a kind registered outside the package
    kind = resolve_kind(name, request.kind, processor is not None, request.input_dim)
    kind = kind or kind_of_processor(processor)
    if kind not in kind_names():
        raise ValueError(
            f"modality '{name}': cannot tell the kind from {type(processor).__name__}; give `kind` (one of "
            f"{kind_names()}) and a processor (image processor, feature extractor or tokenizer)"
        )
    modality_kind = get_kind(kind)
    out = ProcessorSpec(
        kind=kind,
        path=request.path,
        kind_class=kind_class,
        input_fields=request.input_fields,  # the encoder family's fields and sub-processor settings
        call_kwargs=request.call_kwargs,
    )
    if not modality_kind.needs_processor(request):  # vectors, or precomputed frames
        return out.replace(**modality_kind.processor_settings(name, request, None)), None
    if not modality_kind.accepts_processor(processor):
        raise ValueError(
            f"modality '{name}' ({kind}): `processor` must be {modality_kind.processor_description}, got "
            f"{type(processor).__name__}"
        )
    return out.replace(**modality_kind.processor_settings(name, request, processor)), processor


def _encoder_entry(name: str, entry: Any) -> dict[str, Any]:
    """A ``from_encoders`` entry as a dict (a path, a dict, or a ``ModalitySpec``'s fields), keys checked.

    Raises:
        ValueError: naming the modality and the unknown keys.
    """
    if isinstance(entry, (str, os.PathLike)):
        return {"path": entry}
    given = entry.to_dict(serializable=False) if hasattr(entry, "to_dict") else dict(entry)
    unknown = set(given) - set(SPEC_KEYS) - {*ENCODER_PROCESSOR_KEYS, "name", "network"}
    if unknown:
        raise ValueError(
            f"modality '{name}': unknown spec keys {sorted(unknown)}; spec keys: {list(SPEC_KEYS)}"
        )
    return given


def _own_network(name: str, given: dict[str, Any]) -> OwnNetworkSpec | None:
    """The own-network part of a ``from_encoders`` entry (flat keys or ``network``); ``None`` without ``module``."""
    nested = given.get("network")
    if isinstance(nested, OwnNetworkSpec):
        return nested
    values = dict(nested) if isinstance(nested, Mapping) else given
    network = {key: values[key] for key in OwnNetworkSpec.field_names() if values.get(key) is not None}
    return OwnNetworkSpec.from_dict(name, network) if network.get("module") is not None else None


class ProcessorLoadingMixin:
    """``from_encoders`` / ``save_pretrained`` / ``from_pretrained`` of [`FusionProcessor`] (which holds
    ``self.modalities``, name -> settings, and ``self.processors``, name -> sub-processor)."""

    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, str | Mapping[str, Any]],
        *,
        max_audio_seconds: float | Mapping[str, float] | None = None,
        **hub_kwargs: Any,
    ) -> Any:
        """Load each encoder's image processor / feature extractor / tokenizer from the Hub or a local folder.

        Args:
            encoders: the mapping given to ``FusionModel.from_encoders``: modality name -> Hub id / folder, or a
                spec dict with ``path`` and optionally ``kind`` (``features`` needs ``input_dim`` and no path),
                ``max_length`` (text) or ``processor`` (a ready sub-processor). Model-only keys (``pooling``,
                ``trainable_layers``...) are ignored, so ``model.config.modalities`` works too.
            max_audio_seconds: keep at most this many seconds of each clip.
            hub_kwargs: ``revision``, ``token``, ``cache_dir``, ``local_files_only``... for every sub-processor.

        timm checkpoints get transformers' ``TimmWrapperImageProcessor`` built from their ``pretrained_cfg``.
        """
        unknown_kwargs = set(hub_kwargs) - set(HUB_KWARGS)
        if unknown_kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(unknown_kwargs)}; hub arguments are {list(HUB_KWARGS)}"
            )
        modalities: dict[str, dict[str, Any]] = {}
        for name, entry in encoders.items():
            given = _encoder_entry(name, entry)  # the user's dict: read here, into typed settings
            request = ProcessorSpec.from_dict(
                name, {key: given[key] for key in PROCESSOR_SPEC_KEYS if given.get(key) is not None}
            )
            network = _own_network(name, given)
            if network is not None:  # your own network (module_processing.py)
                modalities[name] = module_processor_spec(
                    name, request, given.get("processor"), network, **hub_kwargs
                )
                continue
            modalities[name] = _encoder_processor_spec(
                name, request, given.get("config"), given.get("processor"), hub_kwargs
            )
        return cls(modalities, max_audio_seconds=max_audio_seconds)

    def to_dict(self) -> dict[str, Any]:
        """What ``processor_config.json`` holds: the class, the modalities in order, the options."""
        return {
            "processor_class": type(self).__name__,
            "modalities": [{"name": name, **spec.to_dict()} for name, spec in self.modalities.items()],
            "max_audio_seconds": self.max_audio_seconds,
            # remote code: AutoProcessor.from_pretrained(folder, trust_remote_code=True) without this package
            "auto_map": {
                "AutoProcessor": f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"
            },
        }

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoProcessor") -> None:
        """What ``AutoProcessor`` calls on a class loaded from remote code; ``auto_map`` is always written."""

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> list[str]:
        """Write ``processor_config.json`` and one sub-folder per modality (its processor's own files).

        With ``push_to_hub=True`` the folder is also uploaded (``repo_id`` defaults to the folder name).
        Returns the written files."""
        save_directory = os.fspath(save_directory)
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` ({save_directory}) must be a directory, not a file")
        os.makedirs(save_directory, exist_ok=True)
        written = []
        for name, processor in self.processors.items():
            if processor is None:
                continue
            folder = os.path.join(save_directory, name)
            os.makedirs(folder, exist_ok=True)
            spec = self.modalities[name]
            written.extend(get_kind(spec.kind).save_processor(processor, spec, folder))
        written.extend(
            str(f) for f in custom_object_save(self, save_directory)
        )  # the class's file + its flat imports
        config_file = os.path.join(save_directory, PROCESSOR_NAME)
        with open(config_file, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2)
            handle.write("\n")
        written.append(config_file)
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            push_kwargs = {
                k: v
                for k, v in kwargs.items()
                if k in ("commit_message", "private", "token", "revision", "create_pr")
            }
            self.push_to_hub(repo_id, **push_kwargs)
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        """Load a processor saved with ``save_pretrained`` from a folder or a Hub repo id.

        Args:
            pretrained_model_name_or_path: folder or Hub id holding ``processor_config.json``.
            kwargs: ``revision``, ``token``, ``cache_dir``, ``local_files_only``, ``subfolder``;
                ``max_audio_seconds`` overrides the saved value.
        """
        path = os.fspath(pretrained_model_name_or_path)
        hub_kwargs = {k: kwargs[k] for k in HUB_KWARGS if k in kwargs}
        subfolder = kwargs.get("subfolder") or ""
        config_file = cached_file(
            path,
            PROCESSOR_NAME,
            subfolder=subfolder,
            _raise_exceptions_for_missing_entries=False,
            **hub_kwargs,
        )
        if config_file is None:
            raise OSError(f"'{path}' has no {PROCESSOR_NAME}; save one with FusionProcessor.save_pretrained")
        with open(config_file, encoding="utf-8") as handle:
            saved = json.load(handle)
        if saved.get("processor_class") not in (cls.__name__, None) or "modalities" not in saved:
            raise OSError(
                f"'{config_file}' describes a '{saved.get('processor_class')}', not a {cls.__name__}; load it with "
                "AutoProcessor"
            )
        modalities: dict[str, Any] = {}
        for entry in saved["modalities"]:
            entry = dict(entry)
            name = entry.pop("name")
            sub = f"{subfolder}/{name}" if subfolder else name
            spec = ProcessorSpec.from_dict(name, entry)
            kind_class_path(spec.kind, spec.kind_class)  # register a kind from outside the package
            processor = get_kind(spec.kind).load_saved_processor(path, spec, sub, **hub_kwargs)
            modalities[name] = {**entry, "processor": processor}
        max_audio_seconds = kwargs.get("max_audio_seconds", saved.get("max_audio_seconds"))
        return cls(modalities, max_audio_seconds=max_audio_seconds)


def _encoder_processor_spec(
    name: str, request: ProcessorSpec, config: Any, processor: Any, hub_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``FusionProcessor`` entry (settings and ``processor``) of a pretrained encoder or a ``features``
    modality: the family's sub-processor (loaded from ``request.path`` unless given) and the settings its adapter
    gives (batch fields, call settings, the kind's ``encoder_settings``).

    Raises:
        ValueError: naming the modality: no ``path`` where the encoder or its sub-processor must be loaded.
    """
    has_encoder = config is not None or bool(request.path)
    kind = resolve_kind(name, request.kind, has_encoder, request.input_dim)
    if not reads_encoder(kind):
        return {"kind": kind, "input_dim": request.input_dim}
    path = request.path
    if not isinstance(config, PretrainedConfig):
        if not path:
            raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
        config = AutoConfig.from_pretrained(str(path), **hub_kwargs)
    kind = kind or infer_kind(name, config)
    tower = encoder_tower_config(kind, config)
    adapter = adapter_class_for(tower, kind)(tower)
    if processor is None:  # the family's own (timm's from the checkpoint's pretrained_cfg)
        if not path:
            raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
        processor = adapter.load_processor(str(path), **hub_kwargs)
    out = {"kind": kind, "processor": processor, "path": str(path) if path else None}
    out["input_fields"] = [*adapter.input_fields, *adapter.optional_fields]
    out["call_kwargs"] = adapter.processor_kwargs()
    out.update(get_kind(kind).encoder_settings(request, processor, adapter))
    return out
