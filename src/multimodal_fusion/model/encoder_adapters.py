"""Encoder families: one adapter class per architecture family, in a name -> class registry chosen from the
encoder's config (as ``FUSION_REGISTRY`` and ``POOLING_REGISTRY`` are for fusions and poolings).

An adapter answers everything family-specific, so the model, the processor, freezing, layer-wise learning
rates and the embedding cache never branch on the kind of encoder:

- how to load it: the encoder only for encoder-decoder checkpoints (T5, BART, Whisper...), the matching tower
  of a dual encoder (CLIP, SigLIP, CLAP, ALIGN, Chinese-CLIP...) with the parent's key prefix mapped away, and
  an error naming the modality and the keys when a weight on the forward path is missing;
- which batch fields it takes (required, optional) and the sub-processor call settings that produce them;
- its output width (read from the model), its default pooling and the parameters of its pooling head;
- how it runs: forward arguments (``position_ids`` for decoder-only LMs, ``interpolate_pos_encoding``), the
  token mask at the encoder's frame rate, and exact batching (a masked GroupNorm front-end for group-norm
  wav2vec2 models, unpadded encoding where nothing cheaper is exact);
- activation checkpointing (transformers or timm), or that the family has none.

The adapters sit in files by modality (``adapters_image.py``, ``adapters_audio.py``, ``adapters_text.py``, your
own networks in ``module_adapter.py``, the base in ``adapter_base.py``); this file imports them all explicitly and
holds the one selection rule: [`adapter_class_for`] asks the adapters of [`ADAPTER_ORDER`] in turn and the first
whose ``matches(config, kind, spec)`` is true wins (as PEFT's dispatchers): your own network first, then dense
features, then the families naming their model types (most specific first), then the generic adapter of each
kind. The generic image adapter guesses nothing from the family: it probes what the built encoder returns.

Adding a family is one class (in the file of its modality) plus ``@register_adapter`` and its entry in
``ADAPTER_ORDER``, before any adapter it specialises. This file is copied next to the weights for
``trust_remote_code`` loading: it imports only torch, transformers and sibling files.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from .adapter_base import (
    ENCODER_ADAPTERS,
    TOWERS,
    EncoderAdapter,
    EncoderOutput,
    is_dual_config,
    last_width,
    main_input_kind,
    model_class_for,
    register_adapter,
    tower_config,
)
from .adapters_audio import (
    ASTAdapter,
    ClapAudioAdapter,
    MaskedGroupNorm,
    UnpaddedWaveformAudioAdapter,
    Wav2Vec2BertAdapter,
    WaveformAudioAdapter,
    WhisperAdapter,
)
from .adapters_image import (
    ClipVisionAdapter,
    ConvNextAdapter,
    MobileViTAdapter,
    NaFlexVisionAdapter,
    PooledVisionAdapter,
    ProbedVisionAdapter,
    TimmAdapter,
    VisionAdapter,
)
from .adapters_text import (
    ClapTextAdapter,
    ClipTextAdapter,
    DecoderOnlyAdapter,
    EncoderDecoderTextAdapter,
    SiglipTextAdapter,
    TextEncoderAdapter,
)
from .encoder_layout import EncoderLayout
from .feature_encoder import FeatureEncoder
from .module_adapter import ModuleAdapter

__all__ = [
    "ADAPTER_ORDER", "ENCODER_ADAPTERS", "TOWERS", "EncoderAdapter", "EncoderOutput", "FeaturesAdapter",
    "MaskedGroupNorm", "adapter_class_for", "adapter_for", "infer_kind", "is_dual_config", "last_width",
    "main_input_kind", "model_class_for", "register_adapter", "tower_config",
]  # fmt: skip


@register_adapter("features")
class FeaturesAdapter(EncoderAdapter):
    """A dense float vector (kind ``features``) through the package's [`FeatureEncoder`] MLP."""

    kind = "features"
    default_pooling = None
    input_fields = ("values",)
    optional_fields = ()

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        return kind == cls.kind or config is None  # features, or a kind of vectors with no encoder config

    def layout(self, name: str, encoder: nn.Module, spec: Any) -> EncoderLayout:
        """The whole MLP is one block."""
        return EncoderLayout(blocks=[[n for n, _ in encoder.named_parameters()]])

    def build(self) -> nn.Module:
        return FeatureEncoder(self.spec.input_dim, self.spec.hidden_sizes)

    def output_dim(self, encoder: nn.Module) -> int:
        return encoder.output_dim

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("values")
        dim = self.spec.input_dim
        if value is not None and (value.dim() != 2 or value.shape[1] != dim or not value.is_floating_point()):
            raise ValueError(
                f"modality '{name}' (features): field '{name}_values' must be [batch, {dim}] floats, "
                f"got shape {tuple(value.shape)} of {value.dtype}"
            )

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        return EncoderOutput(hidden=encoder(fields["values"]))

    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return False


ADAPTER_ORDER: list[type[EncoderAdapter]] = [
    # your own network, dense features
    ModuleAdapter,
    FeaturesAdapter,
    # images: families naming their model types, most specific first
    ClipVisionAdapter,
    ConvNextAdapter,
    MobileViTAdapter,
    NaFlexVisionAdapter,
    PooledVisionAdapter,
    TimmAdapter,
    VisionAdapter,
    # text
    ClipTextAdapter,
    SiglipTextAdapter,
    ClapTextAdapter,
    DecoderOnlyAdapter,
    EncoderDecoderTextAdapter,
    # audio
    UnpaddedWaveformAudioAdapter,
    Wav2Vec2BertAdapter,
    WhisperAdapter,
    ASTAdapter,
    ClapAudioAdapter,
    # generic fallbacks, one per kind: any other encoder of that kind
    WaveformAudioAdapter,
    TextEncoderAdapter,
    ProbedVisionAdapter,
]
"""The adapters [`adapter_class_for`] asks, in order; the first whose ``matches(config, kind, spec)`` is true
wins. A new family goes before any adapter it specialises (and before the generic fallbacks at the end)."""


def adapter_class_for(
    config: PretrainedConfig | None, kind: str | None = None, spec: Any = None
) -> type[EncoderAdapter]:
    """The adapter class of an encoder: the first adapter of ``ADAPTER_ORDER`` that matches its (tower)
    ``config``, the modality ``kind`` when given and the modality ``spec`` (your own network).

    Raises:
        ValueError: no adapter matches (an encoder whose kind cannot be told from its config: give ``kind``).
    """
    for cls in ADAPTER_ORDER:
        if cls.matches(config, kind, spec):
            return cls
    model_type = getattr(config, "model_type", None)
    raise ValueError(f"no encoder adapter for model type '{model_type}'; give `kind` explicitly")


def infer_kind(config: PretrainedConfig) -> str | None:
    """``image`` / ``audio`` / ``text`` of a single-tower encoder config; ``None`` when it cannot be told
    (dual-encoder parents are ambiguous: the kind picks the tower)."""
    if is_dual_config(config):
        return None
    try:
        return adapter_class_for(config).kind
    except ValueError:
        return None


def adapter_for(spec: Any) -> EncoderAdapter:
    """The adapter of a normalised modality spec (``kind``, ``config``, ``module`` and the spec options)."""
    return adapter_class_for(spec.config, spec.kind, spec)(spec.config, spec)
