"""FusionProcessor: raw images, waveforms, texts and vectors -> one batch of ``{name}_{field}`` tensors.

One sub-processor per named modality (the encoder's own image processor, feature extractor or tokenizer), so
the tensors are exactly what each encoder was trained on. transformers' ``ProcessorMixin`` has fixed attribute
names; modality names here are free, so this class does its own (de)serialisation: one sub-folder per modality
plus a ``processor_config.json``, registered with ``AutoProcessor`` when the package is imported.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    PretrainedConfig,
)
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.image_processing_utils import BaseImageProcessor
from transformers.tokenization_utils_base import PreTrainedTokenizerBase
from transformers.utils import PROCESSOR_NAME, PushToHubMixin, cached_file

from .audio_decoding import decode_audio
from .bad_samples import BadSampleError
from .configuration_fusion import MODALITY_KINDS, SPEC_KEYS, encoder_tower_config, infer_kind
from .image_decoding import decode_image

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
)
"""Saved per-modality fields of ``processor_config.json``."""

TIMM_CONFIG_NAME = "config.json"
"""A timm image processor is saved as a timm-format ``config.json`` (``architecture`` + ``pretrained_cfg``):
``TimmWrapperImageProcessor.save_pretrained`` is a no-op, and this form also loads with ``AutoImageProcessor``."""

_VERY_LARGE_MAX_LENGTH = 10**6
_POSITION_OFFSET_MODEL_TYPES = {
    "roberta",
    "xlm-roberta",
    "xlm-roberta-xl",
    "camembert",
    "longformer",
    "data2vec-text",
    "roberta-prelayernorm",
    "ibert",
    "mpnet",
}
"""Text encoders whose position ids start after the padding index, so they hold ``max_position_embeddings -
pad_token_id - 1`` tokens."""


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


def text_max_length(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig | None) -> int | None:
    """Longest input the text encoder takes: the tokenizer's ``model_max_length`` when set, else the config's
    ``max_position_embeddings`` (minus the padding offset of RoBERTa-like models)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _VERY_LARGE_MAX_LENGTH:
        return limit
    positions = getattr(config, "max_position_embeddings", None) if config is not None else None
    if not isinstance(positions, int) or positions <= 0:
        return None
    if config.model_type in _POSITION_OFFSET_MODEL_TYPES:
        positions -= (getattr(config, "pad_token_id", None) or 1) + 1
    return positions


def min_audio_samples(config: PretrainedConfig | None) -> int:
    """Fewest samples a wav2vec2-style convolutional front-end turns into at least one frame (1 if unknown)."""
    kernels = getattr(config, "conv_kernel", None)
    strides = getattr(config, "conv_stride", None)
    if not kernels or not strides or len(kernels) != len(strides):
        return 1
    needed = 1
    for kernel, stride in reversed(list(zip(kernels, strides, strict=True))):
        needed = (needed - 1) * stride + kernel
    return int(needed)


def _timm_processor(config: Any) -> Any:
    """transformers' timm image processor from the checkpoint's ``pretrained_cfg``, or timm's default one for the
    architecture when the checkpoint has none (a wrapper saved from scratch)."""
    import timm
    from transformers import TimmWrapperImageProcessor

    pretrained_cfg = getattr(config, "pretrained_cfg", None)
    if not pretrained_cfg:
        pretrained_cfg = timm.models.get_pretrained_cfg(config.architecture).to_dict()
    return TimmWrapperImageProcessor(pretrained_cfg=dict(pretrained_cfg), architecture=config.architecture)


def _load_sub_processor(kind: str, path: str, config: PretrainedConfig | None, **kwargs: Any) -> Any:
    if kind == "image":
        if config is not None and config.model_type == "timm_wrapper":
            return _timm_processor(config)
        return AutoImageProcessor.from_pretrained(path, **kwargs)
    if kind == "audio":
        return AutoFeatureExtractor.from_pretrained(path, **kwargs)
    return AutoTokenizer.from_pretrained(path, **kwargs)


def _is_batch(kind: str, value: Any) -> bool:
    """A list/tuple/datasets column of samples, as opposed to one sample (a list of numbers is one waveform or
    one vector; an array is one sample, except a 2-D array of feature vectors)."""
    if kind == "features" and hasattr(value, "shape"):
        return len(value.shape) == 2
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(value, Sequence):
        return False
    if kind in ("audio", "features") and len(value) > 0:
        return not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    return True


class FusionProcessor(PushToHubMixin):
    """Turns raw samples into the batch a [`FusionModel`] takes, with each encoder's own pre-processing.

    Build it with [`FusionProcessor.from_encoders`] (the same mapping as the model) or load it with
    ``from_pretrained`` / ``AutoProcessor.from_pretrained``. Call it with one keyword per modality:

    ```python
    batch = processor(image=[pil, None], audio=[wave, "clip.wav"], text=["a", "b"], sampling_rate=16000)
    ```

    Each keyword takes a list (or one sample). ``None`` entries are missing samples: they get a zero placeholder
    and the batch gets ``{name}_mask`` (False = missing), which the model honours. Output fields per kind: image
    ``{name}_pixel_values``; audio ``{name}_input_values`` + ``{name}_attention_mask`` (always); text
    ``{name}_input_ids`` + ``{name}_attention_mask`` (+ ``{name}_token_type_ids``); features ``{name}_values``.

    Args:
        modalities: name -> sub-processor (image processor, feature extractor or tokenizer; the kind is read from
            its type) or a spec dict: ``processor``, ``kind``, ``path`` (where it came from), ``max_length``
            (text; default the tokenizer's ``model_max_length``), ``min_audio_samples`` (audio; shorter clips
            are bad samples), ``input_dim`` (kind ``features``, which has no sub-processor).
        max_audio_seconds: keep at most this many seconds of each clip (one number, or name -> number).
    """

    def __init__(
        self,
        modalities: Mapping[str, Any],
        *,
        max_audio_seconds: float | Mapping[str, float] | None = None,
    ):
        if not isinstance(modalities, Mapping) or not modalities:
            raise ValueError(
                "`modalities` must be a non-empty mapping of modality name -> sub-processor or spec"
            )
        self.processors: dict[str, Any] = {}
        self.modalities: dict[str, dict[str, Any]] = {}
        for name, spec in modalities.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"modality name {name!r} must be a valid identifier (it prefixes batch keys)"
                )
            self.modalities[name], self.processors[name] = self._normalize_spec(name, spec)
        if isinstance(max_audio_seconds, Mapping):
            unknown = set(max_audio_seconds) - set(self.modalities)
            if unknown:
                raise ValueError(f"`max_audio_seconds` names unknown modalities {sorted(unknown)}")
            max_audio_seconds = dict(max_audio_seconds)
        self.max_audio_seconds = max_audio_seconds
        for name in self.audio_modalities:
            seconds = self._max_audio_seconds(name)
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
            ):
                raise ValueError(
                    f"modality '{name}': `max_audio_seconds` must be a positive number, got {seconds!r}"
                )
        self._image_placeholders: dict[str, torch.Size] = {}

    @staticmethod
    def _normalize_spec(name: str, spec: Any) -> tuple[dict[str, Any], Any]:
        spec = dict(spec) if isinstance(spec, Mapping) else {"processor": spec}
        processor = spec.pop("processor", None)
        unknown = set(spec) - set(PROCESSOR_SPEC_KEYS)
        if unknown:
            raise ValueError(
                f"modality '{name}': unknown processor spec keys {sorted(unknown)}; allowed: "
                f"{['processor', *PROCESSOR_SPEC_KEYS]}"
            )
        kind = spec.get("kind") or kind_of_processor(processor)
        if kind is None and spec.get("input_dim") is not None:
            kind = "features"
        if kind not in MODALITY_KINDS:
            raise ValueError(
                f"modality '{name}': cannot tell the kind from {type(processor).__name__}; give `kind` (one of "
                f"{MODALITY_KINDS}) and a processor (image processor, feature extractor or tokenizer)"
            )
        out: dict[str, Any] = {"kind": kind, "path": spec.get("path")}
        if kind == "features":
            dim = spec.get("input_dim")
            if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
                raise ValueError(f"modality '{name}': kind 'features' needs a positive integer `input_dim`")
            out["input_dim"] = dim
            return out, None
        expected = {"image": "an image processor", "audio": "a feature extractor", "text": "a tokenizer"}[
            kind
        ]
        if kind_of_processor(processor) != kind:
            raise ValueError(
                f"modality '{name}' ({kind}): `processor` must be {expected}, got {type(processor).__name__}"
            )
        if kind == "image":
            out["timm"] = _is_timm(processor)
        elif kind == "audio":
            rate = getattr(processor, "sampling_rate", None)
            if not isinstance(rate, int) or rate <= 0:
                raise ValueError(f"modality '{name}': the feature extractor has no `sampling_rate`")
            out["sampling_rate"] = rate
            out["min_audio_samples"] = int(spec.get("min_audio_samples") or 1)
        else:
            max_length = spec.get("max_length", "auto")
            out["max_length"] = text_max_length(processor, None) if max_length == "auto" else max_length
        return out, processor

    # ------------------------------------------------------------------ construction and loading
    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, str | Mapping[str, Any]],
        *,
        max_audio_seconds: float | Mapping[str, float] | None = None,
        **hub_kwargs: Any,
    ) -> FusionProcessor:
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
            unknown = set(spec) - set(SPEC_KEYS) - {"max_length", "processor", "min_audio_samples", "name"}
            if unknown:
                raise ValueError(f"modality '{name}': unknown spec keys {sorted(unknown)}")
            kind = spec.get("kind")
            if kind is None and spec.get("config") is None and not spec.get("path") and spec.get("input_dim"):
                kind = "features"
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
            if kind == "text":
                out["max_length"] = spec.get("max_length") or text_max_length(processor, tower)
            elif kind == "audio":
                out["min_audio_samples"] = spec.get("min_audio_samples") or min_audio_samples(tower)
            modalities[name] = out
        return cls(modalities, max_audio_seconds=max_audio_seconds)

    def to_dict(self) -> dict[str, Any]:
        """What ``processor_config.json`` holds: the class, the modalities in order, the options."""
        return {
            "processor_class": type(self).__name__,
            "modalities": [{"name": name, **spec} for name, spec in self.modalities.items()],
            "max_audio_seconds": self.max_audio_seconds,
        }

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
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> FusionProcessor:
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
                    spec["processor"] = _timm_processor(SimpleNamespace(**json.load(handle)))
            elif spec["kind"] == "text":
                # a bare config: the sub-folder holds no model config.json, which AutoTokenizer would look up
                spec["processor"] = AutoTokenizer.from_pretrained(
                    path, subfolder=sub, config=PretrainedConfig(), **hub_kwargs
                )
            elif spec["kind"] != "features":
                spec["processor"] = _load_sub_processor(spec["kind"], path, None, subfolder=sub, **hub_kwargs)
            modalities[name] = spec
        max_audio_seconds = kwargs.get("max_audio_seconds", saved.get("max_audio_seconds"))
        return cls(modalities, max_audio_seconds=max_audio_seconds)

    # ------------------------------------------------------------------ introspection
    @property
    def modality_names(self) -> list[str]:
        """Modality names in order."""
        return list(self.modalities)

    @property
    def audio_modalities(self) -> list[str]:
        return [name for name, spec in self.modalities.items() if spec["kind"] == "audio"]

    @property
    def model_input_names(self) -> list[str]:
        """Batch keys this processor can produce (``{name}_mask`` appears only when a sample is missing)."""
        fields = {
            "image": ("pixel_values",),
            "audio": ("input_values", "attention_mask"),
            "text": ("input_ids", "attention_mask", "token_type_ids"),
            "features": ("values",),
        }
        names = []
        for name, spec in self.modalities.items():
            names.extend(f"{name}_{field}" for field in fields[spec["kind"]])
            names.append(f"{name}_mask")
        return names

    def _max_audio_seconds(self, name: str) -> float | None:
        value = self.max_audio_seconds
        return value.get(name) if isinstance(value, Mapping) else value

    def sampling_rate(self, name: str) -> int:
        """The sampling rate audio modality ``name`` is resampled to (its feature extractor's)."""
        return self.modalities[name]["sampling_rate"]

    def __repr__(self) -> str:
        parts = []
        for name, spec in self.modalities.items():
            processor = self.processors[name]
            parts.append(f"  {name} ({spec['kind']}): {type(processor).__name__ if processor else spec}")
        return (
            f"{type(self).__name__}(\n"
            + "\n".join(parts)
            + f"\n  max_audio_seconds={self.max_audio_seconds}\n)"
        )

    # ------------------------------------------------------------------ decoding one sample
    def decode(self, name: str, value: Any, sampling_rate: int | Mapping[str, int] | None = None) -> Any:
        """One raw sample of modality ``name`` -> its canonical form, checked: an RGB ``PIL.Image``, a float32
        mono waveform at the encoder's rate, a string, or a float32 vector.

        Raises [`BadSampleError`] (naming the modality and the file) for data that cannot be used.
        """
        if name not in self.modalities:
            raise ValueError(f"unknown modality '{name}'; modalities are {self.modality_names}")
        spec = self.modalities[name]
        kind = spec["kind"]
        try:
            if kind == "image":
                return decode_image(value)
            if kind == "audio":
                rate = sampling_rate.get(name) if isinstance(sampling_rate, Mapping) else sampling_rate
                target = spec["sampling_rate"]
                seconds = self._max_audio_seconds(name)
                return decode_audio(
                    value,
                    target,
                    sampling_rate=rate,
                    max_samples=None if seconds is None else max(1, math.floor(seconds * target)),
                    min_samples=spec.get("min_audio_samples") or 1,
                )
            if kind == "text":
                if not isinstance(value, str):
                    raise BadSampleError(
                        f"text of type {type(value).__name__} ({value!r:.50}); expected a string"
                    )
                return value
            return self._decode_vector(spec["input_dim"], value)
        except BadSampleError as error:
            raise error.locate(modality=name) from error.__cause__

    @staticmethod
    def _decode_vector(input_dim: int, value: Any) -> np.ndarray:
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        try:
            vector = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise BadSampleError(f"feature vector must hold numbers ({error})") from None
        if vector.shape != (input_dim,):
            raise BadSampleError(f"feature vector of shape {vector.shape}; expected ({input_dim},)")
        if not np.isfinite(vector).all():
            raise BadSampleError("feature vector holds NaN/inf values; expected finite numbers")
        return vector

    # ------------------------------------------------------------------ batching
    def _as_list(self, name: str, value: Any) -> list[Any]:
        kind = self.modalities[name]["kind"]
        if _is_batch(kind, value):
            return list(value)
        return [value]

    def __call__(
        self,
        *,
        sampling_rate: int | Mapping[str, int] | None = None,
        return_tensors: str | None = "pt",
        **inputs: Any,
    ) -> BatchFeature:
        """Decode, resample, pre-process and pad one batch.

        Args:
            sampling_rate: rate of raw audio arrays (one number, or modality name -> number); samples that carry
                their own rate (dicts, decoders, files) use theirs. Arrays with no rate are an error.
            return_tensors: ``"pt"`` (default) or ``"np"``.
            inputs: one keyword per modality: a list of samples (``None`` = missing) or one sample.

        Raises [`BadSampleError`] naming the modality, the sample's position and the file for unusable data.
        """
        unknown = set(inputs) - set(self.modalities)
        if unknown:
            raise ValueError(
                f"unknown modalities {sorted(unknown)}; this processor takes {self.modality_names} "
                f"(one keyword per modality)"
            )
        lists = {name: self._as_list(name, value) for name, value in inputs.items() if value is not None}
        if not lists:
            raise ValueError(f"no input given; pass at least one of {self.modality_names}")
        sizes = {name: len(samples) for name, samples in lists.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every modality needs one entry per sample (None = missing); got sizes {sizes}")
        decoded: dict[str, list[Any]] = {}
        for name, samples in lists.items():
            decoded[name] = []
            for index, sample in enumerate(samples):
                try:
                    decoded[name].append(None if sample is None else self.decode(name, sample, sampling_rate))
                except BadSampleError as error:
                    raise error.locate(row=f"sample {index}") from error.__cause__
        return self.process_decoded(decoded, return_tensors=return_tensors)

    def process_decoded(
        self, decoded: Mapping[str, Sequence[Any]], return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Batch samples already passed through [`decode`] (``None`` = missing): run each sub-processor on the
        present samples, put zero placeholders in the missing rows and add ``{name}_mask`` where one is missing."""
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"`return_tensors` must be 'pt' or 'np', got {return_tensors!r}")
        batch: dict[str, Any] = {}
        for name, samples in decoded.items():
            samples = list(samples)
            present = [i for i, sample in enumerate(samples) if sample is not None]
            kind = self.modalities[name]["kind"]
            fields = getattr(self, f"_batch_{kind}")(name, [samples[i] for i in present])
            rows = torch.tensor(present, dtype=torch.long)
            for field, (values, fill) in fields.items():
                if len(present) == len(samples):
                    batch[f"{name}_{field}"] = values
                    continue
                full = torch.full((len(samples), *values.shape[1:]), fill, dtype=values.dtype)
                batch[f"{name}_{field}"] = full.index_copy(0, rows, values) if present else full
            if len(present) < len(samples):
                mask = torch.zeros(len(samples), dtype=torch.bool)
                mask[rows] = True
                batch[f"{name}_mask"] = mask
        if return_tensors == "np":
            batch = {key: value.numpy() for key, value in batch.items()}
        return BatchFeature(batch)

    def _batch_image(self, name: str, images: list[PIL.Image.Image]) -> dict[str, tuple[torch.Tensor, int]]:
        processor = self.processors[name]
        if not images:
            if name not in self._image_placeholders:
                probe = PIL.Image.new("RGB", (224, 224))
                self._image_placeholders[name] = processor(images=[probe], return_tensors="pt")[
                    "pixel_values"
                ].shape[1:]
            return {"pixel_values": (torch.zeros(0, *self._image_placeholders[name]), 0)}
        pixel_values = torch.as_tensor(processor(images=images, return_tensors="pt")["pixel_values"])
        self._image_placeholders[name] = pixel_values.shape[1:]
        return {"pixel_values": (pixel_values, 0)}

    def _batch_audio(self, name: str, waves: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, int]]:
        if not waves:
            return {
                "input_values": (torch.zeros(0, 1), 0),
                "attention_mask": (torch.zeros(0, 1, dtype=torch.int32), 0),
            }
        out = self.processors[name](
            waves,
            sampling_rate=self.modalities[name]["sampling_rate"],
            padding=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        if "input_values" not in out:
            raise ValueError(
                f"modality '{name}': the feature extractor returned {sorted(out)}; the audio encoders this package "
                "supports (wav2vec2 family) take raw `input_values`"
            )
        return {"input_values": (out["input_values"], 0), "attention_mask": (out["attention_mask"], 0)}

    def _batch_text(self, name: str, texts: list[str]) -> dict[str, tuple[torch.Tensor, int]]:
        tokenizer = self.processors[name]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        max_length = self.modalities[name].get("max_length")
        if not texts:
            fields = ["input_ids", "attention_mask"]
            if "token_type_ids" in tokenizer.model_input_names:
                fields.append("token_type_ids")
            return {
                f: (torch.zeros(0, 1, dtype=torch.long), pad_id if f == "input_ids" else 0) for f in fields
            }
        out = tokenizer(
            texts,
            padding=True,
            truncation=max_length is not None,
            max_length=max_length,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            field: (out[field], pad_id if field == "input_ids" else 0)
            for field in ("input_ids", "attention_mask", "token_type_ids")
            if field in out
        }

    def _batch_features(self, name: str, vectors: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, int]]:
        dim = self.modalities[name]["input_dim"]
        if not vectors:
            return {"values": (torch.zeros(0, dim), 0)}
        return {"values": (torch.from_numpy(np.stack(vectors)).float(), 0)}
