"""Audio encoder families: wav2vec2-style waveform encoders (with a masked GroupNorm front-end for group-norm
checkpoints, or unpadded encoding where nothing cheaper is exact), Whisper's encoder, AST and the CLAP audio tower.

Adding a family is one class here plus ``@register_adapter`` and its place in ``encoder_adapters.ADAPTER_ORDER``.
This file is copied next to the weights for ``trust_remote_code`` loading: it imports only torch, transformers
and sibling files.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from .adapter_base import EncoderAdapter, EncoderOutput, main_input_kind, register_adapter
from .adapters_text import Seq2SeqEncoderMixin


class MaskedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` over the time axis whose statistics use only the valid frames of each clip, so the
    padded tail of a batch cannot move them (wav2vec2-base-style front-ends). Same parameters as the
    GroupNorm it replaces; without ``valid_frames`` it is that GroupNorm. Input ``[B, C, T]``."""

    valid_frames: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.valid_frames is None:
            return super().forward(hidden)
        batch, channels, frames = hidden.shape
        mask = torch.arange(frames, device=hidden.device)[None] < self.valid_frames.to(hidden.device)[:, None]
        grouped = hidden.reshape(batch, self.num_groups, -1, frames).float()
        weights = mask[:, None, None, :].to(grouped.dtype)
        count = weights.sum(dim=(2, 3), keepdim=True) * grouped.shape[2]
        mean = (grouped * weights).sum(dim=(2, 3), keepdim=True) / count
        var = (((grouped - mean) * weights) ** 2).sum(dim=(2, 3), keepdim=True) / count
        normed = ((grouped - mean) / torch.sqrt(var + self.eps)).reshape(batch, channels, frames)
        return (normed * self.weight[:, None] + self.bias[:, None]).to(hidden.dtype)


@register_adapter("waveform")
class WaveformAudioAdapter(EncoderAdapter):
    """wav2vec2-family encoders on raw waveforms (wav2vec2, HuBERT, WavLM, SEW, UniSpeech...): mask-aware
    ``mean`` over frames. A group-norm front-end (``feat_extract_norm="group"``, the ``base`` checkpoints)
    gets a [`MaskedGroupNorm`], so one padded batch is one encoder call and equals per-clip encoding."""

    kind = "audio"
    model_types = ()
    default_pooling = "mean"
    input_fields = ("input_values",)
    optional_fields = ("attention_mask",)
    feature_encoder_prefixes = ("feature_extractor.",)
    exact_by_unpadding: ClassVar[bool] = False

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        """A family naming ``model_types`` matches by them; the generic adapter any audio encoder (the spec's
        ``kind`` is ``audio``, or the model's main input is ``input_values`` / ``input_features``)."""
        if cls.model_types or config is None:
            return super().matches(config, kind, spec)
        return kind == cls.kind or (kind is None and main_input_kind(config) == cls.kind)

    def min_audio_samples(self) -> int:
        """Fewest samples the convolutional front-end (``conv_kernel``/``conv_stride``) turns into one frame."""
        kernels = getattr(self.config, "conv_kernel", None)
        strides = getattr(self.config, "conv_stride", None)
        if not kernels or not strides or len(kernels) != len(strides):
            return 1
        needed = 1
        for kernel, stride in reversed(list(zip(kernels, strides, strict=True))):
            needed = (needed - 1) * stride + kernel
        return int(needed)

    def final_prefixes(self, encoder: nn.Module) -> tuple[str, ...]:
        """The stable-layer-norm variant's final ``encoder.layer_norm`` is listed before the blocks."""
        stable = getattr(getattr(encoder, "config", None), "do_stable_layer_norm", False)
        return ("encoder.layer_norm.",) if stable else ()

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        masking = (
            getattr(self.config, "mask_time_prob", 0) > 0 or getattr(self.config, "mask_feature_prob", 0) > 0
        )
        return () if masking else ("masked_spec_embed",)  # SpecAugment's learned fill, used only when masking

    def _front_norm(self, encoder: nn.Module) -> nn.GroupNorm | None:
        conv_layers = getattr(getattr(encoder, "feature_extractor", None), "conv_layers", None)
        norm = getattr(conv_layers[0], "layer_norm", None) if conv_layers else None
        return norm if isinstance(norm, nn.GroupNorm) else None

    def attach(self, encoder: nn.Module) -> None:
        norm = self._front_norm(encoder)
        if norm is not None and type(norm) is nn.GroupNorm:
            norm.__class__ = MaskedGroupNorm

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_values")
        if value is not None and value.dim() != 2:
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_input_values' must be [batch, samples] (mono "
                f"waveform), got shape {tuple(value.shape)}"
            )
        super().check_fields(name, fields)

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        mask = fields.get("attention_mask")
        # an all-valid mask changes nothing; dropping it is a data-dependent branch, so not while exporting
        if mask is not None and not torch.compiler.is_exporting() and bool(mask.all()):
            fields = {k: v for k, v in fields.items() if k != "attention_mask"}
            mask = None
        norm = self._front_norm(encoder)
        if mask is not None and isinstance(norm, MaskedGroupNorm):
            conv = encoder.feature_extractor.conv_layers[0].conv
            lengths = mask.long().sum(dim=1)
            norm.valid_frames = (
                torch.div(lengths - conv.kernel_size[0], conv.stride[0], rounding_mode="floor") + 1
            )
            try:
                return super().encode(encoder, fields, layer)
            finally:
                norm.valid_frames = None
        return super().encode(encoder, fields, layer)

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        mask = fields.get("attention_mask")
        if mask is None:
            return None
        return encoder._get_feature_vector_attention_mask(hidden.shape[1], mask).bool()

    def processor_kwargs(self) -> dict[str, Any]:
        return {"padding": True, "return_attention_mask": True}

    # ------------------------------------------------------------------ frozen-prefix cache (Wav2Vec2Model)
    prefix_model_classes: tuple[str, ...] = ("Wav2Vec2Model",)
    """Encoder classes whose block stack the ``prefix_*`` hooks enter. wav2vec2, layer-norm
    (``do_stable_layer_norm``) and group-norm variants: convolutional front-end, feature projection, padded frames
    zeroed, convolutional position embedding (+ layer norm in the group-norm variant), then ``encoder.layers`` and,
    in the stable variant, the final ``encoder.layer_norm``. Without ``attention_mask`` every frame is valid. The
    blocks run on the padded batch with its frame mask in both variants, as the live path does."""

    def prefix_blocks(self, encoder: nn.Module) -> nn.ModuleList | None:
        return encoder.encoder.layers if type(encoder).__name__ in self.prefix_model_classes else None

    def prefix_modules(self, encoder: nn.Module) -> list[nn.Module]:
        return [encoder.feature_extractor, encoder.feature_projection, encoder.encoder.pos_conv_embed,
                encoder.encoder.layer_norm, encoder.encoder.dropout]  # fmt: skip

    def prefix_random_reason(self, encoder: nn.Module) -> str | None:
        config = encoder.config
        if getattr(config, "apply_spec_augment", True) and (
            config.mask_time_prob > 0 or config.mask_feature_prob > 0
        ):
            return (
                f"SpecAugment masks the front-end output in training (mask_time_prob={config.mask_time_prob}, "
                f"mask_feature_prob={config.mask_feature_prob}); set both to 0 or apply_spec_augment=False"
            )
        if config.layerdrop > 0:
            return (
                f"LayerDrop skips random blocks in training (layerdrop={config.layerdrop}); set layerdrop=0"
            )
        if getattr(encoder, "adapter", None) is not None:
            return "the wav2vec2 adapter (add_adapter=True) changes the sequence after the blocks"
        return None

    def prefix_run_block(self, block: nn.Module, hidden: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        return block(hidden, attention_mask=attention_mask)

    def prefix_batches(self, encoder: nn.Module, fields: dict[str, torch.Tensor]):
        """A group-norm front-end normalises over each clip's valid frames on the live path (the masked
        GroupNorm): here each distinct length is computed unpadded, which gives the same values."""
        if getattr(self.config, "feat_extract_norm", "") != "group":
            return None
        values, mask = fields["input_values"], fields.get("attention_mask")
        if mask is None or bool(mask.all()):
            return [(torch.arange(values.shape[0], device=values.device), {"input_values": values})]
        return _length_groups(values, mask)

    def prefix_embed(self, encoder: nn.Module, fields: dict[str, torch.Tensor]):
        values = fields["input_values"].to(encoder.feature_projection.projection.weight.dtype)
        features = encoder.feature_extractor(values).transpose(1, 2)
        attention_mask = fields.get("attention_mask")
        frame_mask = None
        if attention_mask is not None:
            frame_mask = encoder._get_feature_vector_attention_mask(
                features.shape[1], attention_mask, add_adapter=False
            )
        hidden, _ = encoder.feature_projection(features)
        hidden = encoder._mask_hidden_states(hidden, attention_mask=frame_mask)
        stack = encoder.encoder
        if frame_mask is not None:
            hidden = hidden.masked_fill(~frame_mask.bool().unsqueeze(-1), 0.0)
        block_mask = self.prefix_block_mask(encoder, hidden, frame_mask)
        hidden = hidden + stack.pos_conv_embed(hidden)
        if not encoder.config.do_stable_layer_norm:
            hidden = stack.layer_norm(hidden)
        hidden = stack.dropout(hidden)
        token_mask = (
            frame_mask.bool()
            if frame_mask is not None
            else torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        )
        return hidden, block_mask, token_mask

    def prefix_finish(self, encoder: nn.Module, hidden: torch.Tensor):
        if encoder.config.do_stable_layer_norm:
            hidden = encoder.encoder.layer_norm(hidden)
        return hidden, None


def _length_groups(
    values: torch.Tensor, mask: torch.Tensor
) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """``(rows, {"input_values": unpadded clips})`` per distinct valid length of ``values`` ``[B, samples]``."""
    lengths = mask.long().sum(dim=1)
    groups = []
    for length in lengths.unique().tolist():
        rows = (lengths == length).nonzero().squeeze(1)
        groups.append((rows, {"input_values": values[rows, :length]}))
    return groups


@register_adapter("waveform_unpadded")
class UnpaddedWaveformAudioAdapter(WaveformAudioAdapter):
    """Data2VecAudio, Wav2Vec2-Conformer and SEW: padding leaks into valid frames through their stacked
    positional convolutions / conformer convolutions / SEW's squeeze pooling, and no cheap masked equivalent
    exists, so each distinct clip length is encoded unpadded (exact; one encoder call per distinct length)."""

    model_types = ("data2vec-audio", "wav2vec2-conformer", "sew", "sew-d")
    exact_by_unpadding = True

    def exact_batches(self, fields: dict[str, torch.Tensor]):
        """Each distinct clip length unpadded when the batch is padded (not while exporting: a graph has one
        path, the padded batch as is)."""
        mask = fields.get("attention_mask")
        if torch.compiler.is_exporting() or mask is None or bool(mask.all()):
            return None
        return _length_groups(fields["input_values"], mask)

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        unused = super().unused_weights(encoder)
        if self.config.model_type == "wav2vec2-conformer":  # built, never called (relative/rotary positions)
            unused += ("encoder.pos_conv_embed.",)
        return unused


@register_adapter("wav2vec2_bert")
class Wav2Vec2BertAdapter(EncoderAdapter):
    """Wav2Vec2-BERT (w2v-BERT 2.0): log-mel ``input_features`` ``[B, frames, 160]`` (80 bins, two frames
    stacked) + a frame ``attention_mask`` from the SeamlessM4T feature extractor; conformer blocks that zero
    padded frames before their convolutions, so one padded batch is exact. Mask-aware ``mean``; with the
    optional adapter (``add_adapter``) the mask is downsampled as its convolutions do."""

    kind = "audio"
    model_types = ("wav2vec2-bert",)
    default_pooling = "mean"
    input_fields = ("input_features",)
    optional_fields = ("attention_mask",)

    def min_audio_samples(self) -> int:
        """Two 25 ms windows 10 ms apart at 16 kHz (400 + 160 samples): the extractor stacks frames in pairs."""
        return 560

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        masking = (
            getattr(self.config, "mask_time_prob", 0) > 0 or getattr(self.config, "mask_feature_prob", 0) > 0
        )
        return () if masking else ("masked_spec_embed",)  # SpecAugment's learned fill, used only when masking

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value, mask = fields.get("input_features"), fields.get("attention_mask")
        width = self.config.feature_projection_input_dim
        if value is not None and (value.dim() != 3 or value.shape[2] != width):
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_input_features' must be [batch, frames, {width}] "
                f"(stacked log-mel frames from the SeamlessM4T feature extractor), got shape {tuple(value.shape)}"
            )
        if value is not None and mask is not None and mask.shape != value.shape[:2]:
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_attention_mask' must be [batch, frames] = "
                f"{tuple(value.shape[:2])}, got shape {tuple(mask.shape)}"
            )

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        mask = fields.get("attention_mask")
        if mask is None:
            return None
        lengths = mask.long().sum(dim=1)
        adapter = getattr(encoder, "adapter", None)
        for _ in getattr(adapter, "layers", ()):
            lengths = adapter._compute_sub_sample_lengths_from_attention_mask(lengths).long()
        return torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths.to(hidden.device)[:, None]

    def processor_kwargs(self) -> dict[str, Any]:
        return {"padding": True, "return_attention_mask": True}


@register_adapter("whisper")
class WhisperAdapter(Seq2SeqEncoderMixin, EncoderAdapter):
    """Whisper's encoder (log-mel ``input_features``, always padded to 30 s): loaded through the full
    model's ``get_encoder()``; the mel-frame ``attention_mask`` (requested from the feature extractor) is
    downsampled to the encoder's frames (stride 2) so ``mean`` covers only the clip, not 29 s of padding."""

    kind = "audio"
    model_types = ("whisper",)
    default_pooling = "mean"
    input_fields = ("input_features",)
    optional_fields = ("attention_mask",)
    optional_weights = ("embed_positions.",)  # sinusoidal, recomputed

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_features")
        frames = 2 * self.config.max_source_positions
        if value is not None and (value.dim() != 3 or value.shape[-1] != frames):
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_input_features' must be [batch, "
                f"{self.config.num_mel_bins}, {frames}] (Whisper pads every clip to {frames} mel frames), "
                f"got shape {tuple(value.shape)}"
            )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"input_features": fields["input_features"]}

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        mask = fields.get("attention_mask")
        if mask is None:
            return None
        valid = (
            mask.long().sum(dim=1) + 1
        ) // 2  # conv2 has stride 2 (padding 1, kernel 3): ceil(frames / 2)
        return torch.arange(hidden.shape[1], device=hidden.device)[None] < valid[:, None].to(hidden.device)

    def processor_kwargs(self) -> dict[str, Any]:
        return {"return_attention_mask": True}


@register_adapter("ast")
class ASTAdapter(EncoderAdapter):
    """Audio Spectrogram Transformer: ``input_values`` ``[B, max_length, num_mel_bins]`` (fixed length, no
    padding mask); its pooled output (mean of the CLS and distillation tokens) is the clip embedding."""

    kind = "audio"
    model_types = ("audio-spectrogram-transformer",)
    default_pooling = "pooler"
    input_fields = ("input_values",)
    optional_fields = ()

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_values")
        shape = (self.config.max_length, self.config.num_mel_bins)
        if value is not None and (value.dim() != 3 or tuple(value.shape[1:]) != shape):
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_input_values' must be [batch, {shape[0]}, {shape[1]}] "
                f"log-mel frames (AST's fixed max_length), got shape {tuple(value.shape)}"
            )


@register_adapter("clap_audio")
class ClapAudioAdapter(EncoderAdapter):
    """CLAP audio tower: ``input_features`` ``[B, 1 or 4, frames, mel]`` + ``is_longer``; its pooled output
    (mean over the final feature map) is the clip embedding. Non-fused checkpoints need
    ``truncation="rand_trunc"`` (one channel); short clips are tiled (``repeatpad``), so no padding mask."""

    kind = "audio"
    model_types = ("clap_audio_model",)
    default_pooling = "pooler"
    input_fields = ("input_features",)
    optional_fields = ("is_longer",)

    def processor_kwargs(self) -> dict[str, Any]:
        fused = bool(getattr(self.config, "enable_fusion", False))
        return {"truncation": "fusion" if fused else "rand_trunc", "padding": "repeatpad"}

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_features")
        if value is not None and value.dim() != 4:
            raise ValueError(
                f"modality '{name}' (audio): field '{name}_input_features' must be [batch, channels, frames, "
                f"mel bins], got shape {tuple(value.shape)}"
            )
