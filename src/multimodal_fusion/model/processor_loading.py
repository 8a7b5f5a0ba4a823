"""Building, saving and loading a [`FusionProcessor`]: its sub-processors (image processor, feature extractor,
tokenizer per modality) from encoder checkpoints, and ``processor_config.json`` plus one sub-folder per modality.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoTokenizer,
    PretrainedConfig,
)
from transformers.dynamic_module_utils import custom_object_save
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.image_processing_utils import BaseImageProcessor
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import PROCESSOR_NAME, cached_file, logging

from .adapters_image import timm_processor
from .configuration_fusion import (
    MODALITY_KINDS,
    SPEC_KEYS,
    check_input_dim,
    encoder_tower_config,
    infer_kind,
    resolve_kind,
)
from .encoder_adapters import adapter_class_for
from .image_decoding import normalize_bit_depth, normalize_input_data_format
from .module_processing import module_processor_spec

logger = logging.get_logger(__name__)

HUB_KWARGS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only")
"""``from_pretrained`` arguments forwarded to every sub-processor (where to find the files)."""

TIMM_CONFIG_NAME = "config.json"
"""A timm image processor is saved as a timm-format ``config.json`` (``architecture`` + ``pretrained_cfg``):
``TimmWrapperImageProcessor.save_pretrained`` is a no-op, and this form also loads with ``AutoImageProcessor``."""

_VERY_LARGE_MAX_LENGTH = 10**6


def text_max_length(tokenizer: PreTrainedTokenizerBase, positions: int | None) -> int | None:
    """Longest input the text encoder takes: the tokenizer's ``model_max_length`` when set, else ``positions``
    (the adapter's ``max_text_positions()``: ``max_position_embeddings`` minus the padding offset of
    RoBERTa-like models)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _VERY_LARGE_MAX_LENGTH:
        return limit
    return positions


def _load_sub_processor(kind: str, path: str, config: PretrainedConfig | None, **kwargs: Any) -> Any:
    if (
        config is not None
    ):  # the family adapter knows its processor (timm's from the checkpoint's pretrained_cfg)
        return adapter_class_for(config, kind)(config).load_processor(path, **kwargs)
    if kind == "image":
        return AutoImageProcessor.from_pretrained(path, **kwargs)
    if kind == "audio":
        return AutoFeatureExtractor.from_pretrained(path, **kwargs)
    return AutoTokenizer.from_pretrained(path, **kwargs)


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
)
"""Saved per-modality fields of ``processor_config.json`` (``input_fields`` and ``call_kwargs``: the encoder
family's batch fields and sub-processor call settings, from its adapter)."""


def kind_of_processor(processor: Any) -> str | None:
    """``image`` / ``audio`` / ``text`` from a sub-processor's type, ``None`` when it is none of those."""
    if isinstance(processor, BaseImageProcessor):
        return "image"
    if isinstance(processor, PreTrainedTokenizerBase):
        return "text"
    if isinstance(processor, FeatureExtractionMixin):
        return "audio"
    return None


def _is_timm(processor: Any) -> bool:
    return type(processor).__name__ == "TimmWrapperImageProcessor"


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
    kind = resolve_kind(name, spec.get("kind"), processor is not None, spec.get("input_dim"))
    kind = kind or kind_of_processor(processor)
    if kind not in MODALITY_KINDS:
        raise ValueError(
            f"modality '{name}': cannot tell the kind from {type(processor).__name__}; give `kind` (one of "
            f"{MODALITY_KINDS}) and a processor (image processor, feature extractor or tokenizer)"
        )
    out: dict[str, Any] = {"kind": kind, "path": spec.get("path")}
    for key in ("input_fields", "call_kwargs"):  # the encoder family's fields and sub-processor settings
        if spec.get(key) is not None:
            out[key] = list(spec[key]) if key == "input_fields" else dict(spec[key])
    if kind == "features" or (kind == "audio" and spec.get("frames")):  # vectors, or precomputed frames
        out["input_dim"] = check_input_dim(name, spec.get("input_dim"))
        if kind == "audio":
            out["frames"] = True
        return out, None
    expected = {"image": "an image processor", "audio": "a feature extractor", "text": "a tokenizer"}[kind]
    if kind_of_processor(processor) != kind:
        raise ValueError(
            f"modality '{name}' ({kind}): `processor` must be {expected}, got {type(processor).__name__}"
        )
    if kind == "image":
        out["timm"] = _is_timm(processor)
        try:
            input_data_format = normalize_input_data_format(spec.get("input_data_format"))
        except ValueError as error:
            raise ValueError(f"modality '{name}': {error}") from None
        if input_data_format is not None:
            out["input_data_format"] = input_data_format
        try:
            bit_depth = normalize_bit_depth(spec.get("image_bit_depth"))
        except ValueError as error:
            raise ValueError(f"modality '{name}': {error}") from None
        if bit_depth is not None:
            out["image_bit_depth"] = bit_depth
    elif kind == "audio":
        rate = getattr(processor, "sampling_rate", None)
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"modality '{name}': the feature extractor has no `sampling_rate`")
        out["sampling_rate"] = rate
        out["min_audio_samples"] = int(spec.get("min_audio_samples") or 1)
    else:
        max_length = spec.get("max_length", "auto")
        out["max_length"] = text_max_length(processor, None) if max_length == "auto" else max_length
        ensure_pad_token(name, processor)
    return out, processor


_PAD_WARNED: set[str] = set()


def ensure_pad_token(name: str, tokenizer: Any) -> None:
    """Decoder-only tokenizers (GPT-2, Llama) have no pad token: use the eos token (logged once per modality),
    as transformers suggests. Padding is read from ``attention_mask``, never from the token id."""
    if getattr(tokenizer, "pad_token", None) is not None or getattr(tokenizer, "eos_token", None) is None:
        return
    tokenizer.pad_token = tokenizer.eos_token
    if name not in _PAD_WARNED:
        _PAD_WARNED.add(name)
        logger.warning(
            f"modality '{name}': the tokenizer has no pad token; padding with its eos token "
            f"{tokenizer.eos_token!r} (the attention mask marks the padding)"
        )


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
                raise ValueError(f"modality '{name}': unknown spec keys {sorted(unknown)}")
            has_encoder = spec.get("config") is not None or bool(spec.get("path"))
            kind = resolve_kind(name, spec.get("kind"), has_encoder, spec.get("input_dim"))
            if spec.get("module") is not None:  # your own network (module_processing.py)
                modalities[name] = module_processor_spec(name, spec, **hub_kwargs)
                continue
            if kind == "features":
                modalities[name] = {"kind": "features", "input_dim": spec.get("input_dim")}
                continue
            path = spec.get("path")
            config = spec.get("config")
            if not isinstance(config, PretrainedConfig):
                if not path:
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                config = AutoConfig.from_pretrained(str(path), **hub_kwargs)
            kind = kind or infer_kind(name, config)
            tower = encoder_tower_config(kind, config)
            processor = spec.get("processor")
            if processor is None:
                if not path:
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                processor = _load_sub_processor(kind, str(path), tower, **hub_kwargs)
            out = {"kind": kind, "processor": processor, "path": str(path) if path else None}
            adapter = adapter_class_for(tower, kind)(tower)
            out["input_fields"] = [*adapter.input_fields, *adapter.optional_fields]
            out["call_kwargs"] = adapter.processor_kwargs()
            if kind == "text":
                out["max_length"] = spec.get("max_length") or text_max_length(
                    processor, adapter.max_text_positions()
                )
            elif kind == "audio":
                out["min_audio_samples"] = spec.get("min_audio_samples") or adapter.min_audio_samples()
            elif kind == "image" and spec.get("input_data_format") is not None:
                out["input_data_format"] = spec["input_data_format"]
            if kind == "image" and spec.get("image_bit_depth") is not None:
                out["image_bit_depth"] = spec["image_bit_depth"]
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
            if self.modalities[name].get("timm"):
                file = os.path.join(folder, TIMM_CONFIG_NAME)
                timm_config = {
                    "architecture": processor.architecture,
                    "num_classes": 0,
                    "pretrained_cfg": dict(processor.data_config),
                }
                with open(file, "w", encoding="utf-8") as handle:
                    json.dump(timm_config, handle, indent=2)
                written.append(file)
            else:
                written.extend(str(f) for f in processor.save_pretrained(folder) or [])
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
            if spec["kind"] == "image" and spec.get("timm"):
                file = cached_file(path, TIMM_CONFIG_NAME, subfolder=sub, **hub_kwargs)
                with open(file, encoding="utf-8") as handle:
                    spec["processor"] = timm_processor(SimpleNamespace(**json.load(handle)))
            elif spec["kind"] == "text":
                # a bare config: the sub-folder holds no model config.json, which AutoTokenizer would look up
                spec["processor"] = AutoTokenizer.from_pretrained(
                    path, subfolder=sub, config=PretrainedConfig(), **hub_kwargs
                )
            elif spec["kind"] != "features" and not spec.get("frames"):
                spec["processor"] = _load_sub_processor(spec["kind"], path, None, subfolder=sub, **hub_kwargs)
            modalities[name] = spec
        max_audio_seconds = kwargs.get("max_audio_seconds", saved.get("max_audio_seconds"))
        return cls(modalities, max_audio_seconds=max_audio_seconds)
