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

logger = logging.get_logger(__name__)

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")
"""``from_pretrained`` arguments forwarded to every sub-processor (where to find the files)."""

PROCESSOR_SPEC_KEYS = (
    "kind",
    "path",
    "sampling_rate",
    "max_length",
    "min_audio_samples",
    "input_dim",
    "timm",
    "input_data_format",
    "image_bit_depth",
    "input_fields",
    "call_kwargs",
    "frames",
    "kind_class",
)
"""Saved per-modality fields of ``processor_config.json`` (``input_fields`` and ``call_kwargs``: the encoder
family's batch fields and sub-processor call settings, from its adapter)."""


def normalize_processor_spec(name: str, spec: Any) -> tuple[dict[str, Any], Any]:
    """Validate one modality of a [`FusionProcessor`] (a sub-processor or a spec dict) and return ``(settings,
    sub-processor)``; errors name the modality and the field."""
    spec = dict(spec) if isinstance(spec, Mapping) else {"processor": spec}
    processor = spec.pop("processor", None)
    unknown = set(spec) - set(PROCESSOR_SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"modality '{name}': unknown processor spec keys {sorted(unknown)}; allowed: "
            f"{['processor', *PROCESSOR_SPEC_KEYS]}"
        )
    kind_class = kind_class_path(
        spec.get("kind"), spec.get("kind_class")
    )  # a kind registered outside the package
    kind = resolve_kind(name, spec.get("kind"), processor is not None, spec.get("input_dim"))
    kind = kind or kind_of_processor(processor)
    if kind not in kind_names():
        raise ValueError(
            f"modality '{name}': cannot tell the kind from {type(processor).__name__}; give `kind` (one of "
            f"{kind_names()}) and a processor (image processor, feature extractor or tokenizer)"
        )
    modality_kind = get_kind(kind)
    out: dict[str, Any] = {"kind": kind, "path": spec.get("path")}
    if kind_class is not None:
        out["kind_class"] = kind_class
    for key in ("input_fields", "call_kwargs"):  # the encoder family's fields and sub-processor settings
        if spec.get(key) is not None:
            out[key] = list(spec[key]) if key == "input_fields" else dict(spec[key])
    if not modality_kind.needs_processor(spec):  # vectors, or precomputed frames
        out.update(modality_kind.processor_settings(name, spec, None))
        return out, None
    if not modality_kind.accepts_processor(processor):
        raise ValueError(
            f"modality '{name}' ({kind}): `processor` must be {modality_kind.processor_description}, got "
            f"{type(processor).__name__}"
        )
    out.update(modality_kind.processor_settings(name, spec, processor))
    return out, processor


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
        for name, spec in encoders.items():
            spec = {"path": spec} if isinstance(spec, (str, os.PathLike)) else dict(spec)
            unknown = (
                set(spec)
                - set(SPEC_KEYS)
                - {
                    "max_length",
                    "processor",
                    "min_audio_samples",
                    "input_data_format",
                    "image_bit_depth",
                    "name",
                }
            )
            if unknown:
                raise ValueError(
                    f"modality '{name}': unknown spec keys {sorted(unknown)}; spec keys: {list(SPEC_KEYS)}"
                )
            has_encoder = spec.get("config") is not None or bool(spec.get("path"))
            kind = resolve_kind(name, spec.get("kind"), has_encoder, spec.get("input_dim"))
            if spec.get("module") is not None:  # your own network (module_processing.py)
                modalities[name] = module_processor_spec(name, spec, **hub_kwargs)
                continue
            if not reads_encoder(kind):
                modalities[name] = {"kind": kind, "input_dim": spec.get("input_dim")}
                continue
            path = spec.get("path")
            config = spec.get("config")
            if not isinstance(config, PretrainedConfig):
                if not path:
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                config = AutoConfig.from_pretrained(str(path), **hub_kwargs)
            kind = kind or infer_kind(name, config)
            modality_kind = get_kind(kind)
            tower = encoder_tower_config(kind, config)
            adapter = adapter_class_for(tower, kind)(tower)
            processor = spec.get("processor")
            if processor is None:  # the family's own (timm's from the checkpoint's pretrained_cfg)
                if not path:
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                processor = adapter.load_processor(str(path), **hub_kwargs)
            out = {"kind": kind, "processor": processor, "path": str(path) if path else None}
            out["input_fields"] = [*adapter.input_fields, *adapter.optional_fields]
            out["call_kwargs"] = adapter.processor_kwargs()
            out.update(modality_kind.encoder_settings(spec, processor, adapter))
            modalities[name] = out
        return cls(modalities, max_audio_seconds=max_audio_seconds)

    def to_dict(self) -> dict[str, Any]:
        """What ``processor_config.json`` holds: the class, the modalities in order, the options."""
        return {
            "processor_class": type(self).__name__,
            "modalities": [{"name": name, **spec} for name, spec in self.modalities.items()],
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
            written.extend(get_kind(spec["kind"]).save_processor(processor, spec, folder))
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
        for spec in saved["modalities"]:
            spec = dict(spec)
            name = spec.pop("name")
            sub = f"{subfolder}/{name}" if subfolder else name
            kind_class_path(spec["kind"], spec.get("kind_class"))  # register a kind from outside the package
            spec["processor"] = get_kind(spec["kind"]).load_saved_processor(path, spec, sub, **hub_kwargs)
            modalities[name] = spec
        max_audio_seconds = kwargs.get("max_audio_seconds", saved.get("max_audio_seconds"))
        return cls(modalities, max_audio_seconds=max_audio_seconds)
