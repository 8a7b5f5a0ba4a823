"""Kind ``audio``: waveforms through the encoder's feature extractor -> ``{name}_input_values`` +
``{name}_attention_mask`` (or the family's own fields, e.g. Whisper's ``input_features``).

Raw samples: a float array with ``sampling_rate``, a datasets audio dict, a file path, bytes or a decoder; each is
decoded to float32 mono and resampled to the feature extractor's rate (``audio_decoding``); ``max_audio_seconds``
crops, and a clip shorter than the encoder's receptive field (``min_audio_samples``) is a bad sample. Your own
audio network takes frame sequences ``input_features`` ``[B, T, F]`` + ``attention_mask``: from its feature
extractor, or precomputed frames (``[T, F]`` arrays with ``F = input_dim``; ``frames`` in the processor spec).
Token-level fusion averages each clip's valid frames into ``max_tokens`` bins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .input_validation import InputLimits, check_audio_lengths
from .modality_kind import (
    ModalityKind,
    check_input_dim,
    is_one_numeric_sample,
    module_input_width,
    option_for,
    processing_module,
    register_modality_kind,
)

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec


@register_modality_kind("audio")
class AudioKind(ModalityKind):
    """Audio: waveforms -> ``input_values`` ``[B, samples]`` + ``attention_mask`` from the feature extractor."""

    batch_fields = (("input_values",), ("attention_mask",))
    module_fields = (("input_features",), ("attention_mask",))
    sequence_pooling = "mean"
    processor_types = ("transformers.feature_extraction_utils:FeatureExtractionMixin",)
    processor_description = "a feature extractor"
    tower = ("audio_config", "audio_model")
    main_input_names = ("input_values", "input_features")
    media = True
    has_length = True

    # ------------------------------------------------------------------ processor
    def accepts_processor(self, processor: Any) -> bool:
        from transformers.image_processing_utils import BaseImageProcessor

        return super().accepts_processor(processor) and not isinstance(processor, BaseImageProcessor)

    def needs_processor(self, spec: ProcessorSpec) -> bool:
        return not spec.frames  # precomputed frames have none

    def is_waveform(self, spec: ProcessorSpec) -> bool:
        return not spec.frames

    def load_processor(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoFeatureExtractor

        return AutoFeatureExtractor.from_pretrained(path, **kwargs)

    def processor_settings(self, name: str, spec: ProcessorSpec, processor: Any) -> dict[str, Any]:
        if processor is None:
            return {"input_dim": check_input_dim(name, spec.input_dim), "frames": True}
        rate = getattr(processor, "sampling_rate", None)
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"modality '{name}': the feature extractor has no `sampling_rate`")
        return {"sampling_rate": rate, "min_audio_samples": int(spec.min_audio_samples or 1)}

    def encoder_settings(self, spec: ProcessorSpec, processor: Any, adapter: Any) -> dict[str, Any]:
        return {"min_audio_samples": spec.min_audio_samples or adapter.min_audio_samples()}

    def module_processor_settings(
        self, name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
    ) -> dict[str, Any]:
        if processor is None and not spec.path:
            if not spec.input_dim:
                raise ValueError(
                    f"modality '{name}': give `input_dim` (the width of each frame) or, for audio, a feature "
                    "extractor (`processor` or `path`)"
                )
            return {"input_dim": spec.input_dim, "frames": True}
        return super().module_processor_settings(name, spec, processor, network, **hub_kwargs)

    def gives_frames(self, spec: ProcessorSpec, processor: Any) -> bool:
        """Whether the modality yields ``input_features`` frames (precomputed, or from its feature extractor)."""
        return bool(spec.frames) or "input_features" in getattr(processor, "model_input_names", ())

    def processor_fields(self, spec: ProcessorSpec, processor: Any) -> tuple[str, ...]:
        if spec.input_fields:
            return tuple(spec.input_fields)
        return sum(self.module_fields if self.gives_frames(spec, processor) else self.batch_fields, ())

    # ------------------------------------------------------------------ samples
    def is_batch(self, value: Any) -> bool:
        """A list of numbers is one waveform; a list of arrays / files / dicts is a batch."""
        return super().is_batch(value) and not is_one_numeric_sample(value)

    def decode(self, processor: Any, name: str, value: Any, options: Mapping[str, Any]) -> Any:
        """Precomputed frames: float32 ``[T, input_dim]``; else a float32 mono waveform at the extractor's rate."""
        spec = processor.modalities[name]
        if spec.frames:
            decode_frames = processing_module("module_processing").decode_frames

            return decode_frames(spec.input_dim, value)
        decode_audio = processing_module("audio_decoding").decode_audio

        rate = option_for(options.get("sampling_rate"), name)
        target = spec.sampling_rate
        seconds = processor.max_audio_seconds_of(name)
        return decode_audio(
            value,
            target,
            sampling_rate=rate,
            max_samples=None if seconds is None else max(1, math.floor(seconds * target)),
            min_samples=spec.min_audio_samples or 1,
        )

    def batch(self, processor: Any, name: str, samples: list[Any]) -> dict[str, tuple[torch.Tensor, Any]]:
        batch_frames = processing_module("module_processing").batch_frames

        spec, extractor = processor.modalities[name], processor.processors[name]
        fields = self.processor_fields(spec, extractor)
        if spec.frames or not samples and not spec.input_fields and fields[0] == "input_features":
            return batch_frames(samples, spec.input_dim or extractor.feature_size)  # your own network
        if not samples:  # an all-missing batch: placeholders for waveform encoders only
            empty = {
                "input_values": torch.zeros(0, 1),
                "attention_mask": torch.zeros(0, 1, dtype=torch.int32),
            }
            return {k: (v, 0) for k, v in empty.items()} if fields[0] == "input_values" else {}
        call_kwargs = spec.call_kwargs or {"padding": True, "return_attention_mask": True}
        out = extractor(samples, sampling_rate=spec.sampling_rate, return_tensors="pt", **call_kwargs)
        if fields[0] not in out:
            raise ValueError(
                f"modality '{name}': the feature extractor returned {sorted(out)}; the encoder takes '{fields[0]}'"
            )
        return {field: (torch.as_tensor(out[field]), 0) for field in fields if field in out}

    def example_sample(self, spec: ProcessorSpec, length: int, rng: Any) -> Any:
        """``0.2 + 0.1 * length`` seconds of noise at the feature extractor's rate (frames for your own network)."""
        if spec.frames:
            return rng.standard_normal((4 + 2 * length, spec.input_dim)).astype("float32")
        rate = spec.sampling_rate
        return {
            "array": rng.standard_normal(int(rate * (0.2 + 0.1 * length))).astype("float32"),
            "sampling_rate": rate,
        }

    def sample_length(self, value: Any) -> float:
        """A clip's duration in seconds, read from the file header (no decoding); 0 when unknown."""
        audio_file_duration = processing_module("audio_decoding").audio_file_duration

        if isinstance(value, Mapping):
            if value.get("array") is not None and value.get("sampling_rate"):
                return len(value["array"]) / float(value["sampling_rate"])
            value = value.get("bytes") if value.get("bytes") is not None else value.get("path")
            if value is None:
                return 0.0
        if isinstance(value, (str, os.PathLike, bytes)):
            return audio_file_duration(value)
        return 0.0

    # ------------------------------------------------------------------ model side
    def input_limits(self, encoder: nn.Module, config: Any, adapter: Any) -> InputLimits:
        return InputLimits(min_audio_samples=adapter.min_audio_samples())

    def check_values(self, name: str, fields: dict[str, torch.Tensor], limits: InputLimits) -> None:
        super().check_values(name, fields, limits)
        check_audio_lengths(name, self.name, fields, limits.min_audio_samples)

    def reduce_tokens(
        self, hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int, grid: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from .token_reduction import binned_tokens

        return binned_tokens(hidden, mask, max_tokens)

    def module_example_inputs(self, name: str, spec: Any, network: nn.Module) -> dict[str, torch.Tensor]:
        width = module_input_width(name, spec, network)
        return {
            "input_features": torch.zeros(2, 4, width),
            "attention_mask": torch.ones(2, 4, dtype=torch.long),
        }
