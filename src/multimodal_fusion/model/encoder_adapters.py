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

Adding a family is one class plus ``@register_adapter``. This file is copied next to the weights for
``trust_remote_code`` loading: it imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoModel, PretrainedConfig

from .feature_encoder import FeatureEncoder
from .registry import Registry

logger = logging.getLogger(__name__)

ENCODER_ADAPTERS: Registry[type[EncoderAdapter]] = Registry("encoder adapter", attribute="name")
"""Adapter name -> class, most specific first; [`adapter_class_for`] takes the first that matches a config."""

TOWERS = {"image": ("vision_config", "vision_model"), "text": ("text_config", "text_model")}
TOWERS["audio"] = ("audio_config", "audio_model")
"""Per kind: the dual-encoder config attribute holding the tower config, and the parent's module (key prefix)."""

MAIN_INPUT_KINDS = {
    "pixel_values": "image",
    "input_values": "audio",
    "input_features": "audio",
    "input_ids": "text",
}


register_adapter = ENCODER_ADAPTERS.register
"""Class decorator adding an encoder adapter to ``ENCODER_ADAPTERS`` under ``name``."""


@dataclass
class EncoderOutput:
    """What pooling reads: ``hidden`` ``[B, T, D]`` (a CNN map is flattened to ``H*W`` tokens), the token mask
    ``[B, T]`` (True = real token; ``None`` = all real), the family's own ``pooler_output`` ``[B, D]`` and, for a
    flattened CNN map, its ``grid`` ``(H, W)``."""

    hidden: torch.Tensor
    mask: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    grid: tuple[int, int] | None = None


def model_class_for(config: PretrainedConfig) -> type[nn.Module]:
    """The transformers model class of ``config``: ``MODEL_MAPPING``, else ``XxxModel`` next to ``XxxConfig``
    (dual-encoder towers such as ``SiglipTextConfig`` or ``ClapAudioConfig`` are not in ``MODEL_MAPPING``)."""
    if type(config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(config)]
    module = importlib.import_module(type(config).__module__.replace(".configuration_", ".modeling_"))
    name = type(config).__name__.removesuffix("Config") + "Model"
    if not hasattr(module, name):
        raise ValueError(f"no transformers model class for config {type(config).__name__}")
    return getattr(module, name)


def main_input_kind(config: PretrainedConfig) -> str | None:
    """``image`` / ``audio`` / ``text`` from the model class's ``main_input_name``; ``None`` if unknown."""
    if config.model_type == "timm_wrapper":
        return "image"
    try:
        model_class = model_class_for(config)
    except (ValueError, ImportError):
        return None
    return MAIN_INPUT_KINDS.get(getattr(model_class, "main_input_name", None))


def is_dual_config(config: PretrainedConfig) -> bool:
    """A dual-encoder (multi-tower) config, e.g. ``CLIPConfig`` with ``text_config`` and ``vision_config``."""
    return sum(isinstance(getattr(config, key, None), PretrainedConfig) for key, _ in TOWERS.values()) > 1


def tower_config(kind: str, config: PretrainedConfig) -> PretrainedConfig:
    """The tower of a dual-encoder config matching ``kind`` (CLIP's ``text_config``...), else ``config``."""
    tower = getattr(config, TOWERS.get(kind, ("_", "_"))[0], None)
    return tower if isinstance(tower, PretrainedConfig) else config


def _accepts(module: nn.Module, argument: str) -> bool:
    try:
        return argument in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


class EncoderAdapter:
    """A transformers encoder: ``AutoModel``-style loading, ``last_hidden_state`` + ``pooler_output``.

    Subclasses set the class attributes and override the hooks they need. Instances are cheap, hold the
    encoder's (tower) config and the modality's spec options, and never own parameters.
    """

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "text"
    model_types: ClassVar[tuple[str, ...]] = ()
    default_pooling: ClassVar[str | None] = "cls"
    input_fields: ClassVar[tuple[str, ...]] = ("input_ids",)
    """Required batch fields (without the ``{name}_`` prefix); the first is the main input."""
    optional_fields: ClassVar[tuple[str, ...]] = ("attention_mask",)
    pooler_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    """Parameter prefixes of the family's pooling head: trained with pooling ``pooler``, unused otherwise."""
    optional_weights: ClassVar[tuple[str, ...]] = ()
    """Parameter prefixes a checkpoint may lack without harm (besides the pooling head when it is unused)."""
    inactive_weights: ClassVar[tuple[str, ...]] = ()
    """Parameter prefixes never on the forward path of a fusion model (e.g. ViT's ``mask_token``, used only
    for masked-image pretraining): kept frozen, so they need no gradient."""
    block_path: ClassVar[str | None] = None
    """Module path of the repeated blocks when the generic search (largest homogeneous list) is wrong."""

    def __init__(self, config: PretrainedConfig | None, options: dict[str, Any] | None = None):
        self.config = config
        self.options = dict(options or {})

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return config.model_type in cls.model_types

    # ------------------------------------------------------------------ loading
    def model_class(self) -> type[nn.Module]:
        return model_class_for(self.config)

    def build(self) -> nn.Module:
        """A randomly initialised encoder from the config (weights are loaded over it)."""
        model_class = self.model_class()
        if hasattr(model_class, "_from_config"):
            return model_class._from_config(self.config)
        return model_class(self.config)

    def load(self, name: str, path: str, source: PretrainedConfig, pooling: str | None, **kwargs: Any):
        """Load the pretrained encoder of modality ``name`` from ``path``, whose config is ``source`` (a dual
        encoder's parent config when the encoder is one of its towers)."""
        if source is not self.config:  # a tower of a dual checkpoint: drop the parent's prefix of the tower
            prefix = TOWERS[self.kind][1]
            kwargs.setdefault("key_mapping", {rf"^{prefix}\.": ""})
        model, info = self.model_class().from_pretrained(
            path, config=self.config, output_loading_info=True, **kwargs
        )
        self.check_loaded(name, path, info.get("missing_keys", ()), pooling)
        return model

    def check_loaded(self, name: str, path: str, missing: Any, pooling: str | None) -> None:
        """Fail when a weight on the forward path is missing (it would silently be random)."""
        harmless = tuple(self.optional_weights) + (() if pooling == "pooler" else tuple(self.pooler_prefixes))
        missing = sorted(k for k in missing if not k.startswith(harmless))
        if missing:
            shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise ValueError(
                f"modality '{name}': '{path}' lacks weights the {type(self.config).__name__} encoder uses: "
                f"{shown}; they would be random. Is this the right checkpoint (or tower) for kind '{self.kind}'?"
            )

    def attach(self, encoder: nn.Module) -> None:
        """Adjust a freshly built or loaded encoder in place (same parameter names and values)."""

    # ------------------------------------------------------------------ shape
    def output_dim(self, encoder: nn.Module) -> int:
        """Width of the pooled vector, read from the model: ``hidden_size`` for transformer families."""
        size = getattr(encoder.config, "hidden_size", None)
        return int(size) if size else last_width(encoder)

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        """Parameter prefixes that never get a gradient in this encoder (frozen by ``trainable_layers``)."""
        return self.inactive_weights

    def block_list(self, encoder: nn.Module) -> str | None:
        """Module path of the encoder's repeated blocks (``None``: the generic search decides)."""
        return self.block_path

    # ------------------------------------------------------------------ forward
    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        """Shape checks of the encoder inputs; errors name the modality and the field."""
        main = self.input_fields[0]
        for field in ("attention_mask", "token_type_ids"):
            if main in fields and field in fields and fields[field].shape != fields[main].shape:
                raise ValueError(
                    f"modality '{name}' ({self.kind}): field '{name}_{field}' must be the shape of "
                    f"'{name}_{main}' {tuple(fields[main].shape)}, got shape {tuple(fields[field].shape)}"
                )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments of the encoder call (fields its ``forward`` accepts)."""
        return {k: v for k, v in fields.items() if _accepts(encoder, k)}

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        mask = fields.get("attention_mask")
        return mask.bool() if mask is not None and mask.shape[1] == hidden.shape[1] else None

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        """Run the encoder on one batch; ``layer`` picks a hidden state (``None`` = the final output)."""
        outputs = encoder(
            **self.forward_kwargs(encoder, fields), output_hidden_states=layer is not None, return_dict=True
        )
        hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
        grid = None
        if hidden.dim() == 4:  # a feature map [B, C, H, W] -> tokens [B, H*W, C]
            grid = (hidden.shape[2], hidden.shape[3])
            hidden = hidden.flatten(2).transpose(1, 2)
        pooled = getattr(outputs, "pooler_output", None)
        return EncoderOutput(hidden, self.token_mask(encoder, fields, hidden), pooled, grid)

    # ------------------------------------------------------------------ processor
    def processor_kwargs(self) -> dict[str, Any]:
        """Settings of the sub-processor call that produce this family's fields (saved with the processor)."""
        return {}

    # ------------------------------------------------------------------ activation checkpointing
    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return bool(getattr(encoder, "supports_gradient_checkpointing", False))

    def set_checkpointing(
        self, encoder: nn.Module, enable: bool, function: Any, every_n_layers: int = 1
    ) -> bool:
        """Switch activation checkpointing on the encoder's layers (``function`` is transformers' partial of
        ``torch.utils.checkpoint.checkpoint``); returns ``False`` where the family has none."""
        if not self.supports_checkpointing(encoder):
            return False
        return _set_layer_checkpointing(encoder, enable, function, every_n_layers)


def _set_layer_checkpointing(encoder: nn.Module, enable: bool, function: Any, every_n_layers: int) -> bool:
    """What ``PreTrainedModel._set_gradient_checkpointing`` does, for one encoder (also a bare sub-module such
    as a seq2seq model's ``get_encoder()``)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    found, index = False, 0
    for module in encoder.modules():
        if hasattr(module, "gradient_checkpointing"):
            module._gradient_checkpointing_func = function
            if enable and isinstance(module, GradientCheckpointingLayer):
                module.gradient_checkpointing = index % every_n_layers == 0
                index += 1
            else:
                module.gradient_checkpointing = enable
            found = True
    return found


def last_width(encoder: nn.Module) -> int:
    """Output width of a CNN-style encoder: the size of its last normalisation / convolution / linear layer."""
    for module in reversed(list(encoder.modules())):
        if isinstance(module, nn.LayerNorm):
            return int(module.normalized_shape[-1])
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return int(module.num_features)
        if isinstance(module, nn.GroupNorm):
            return int(module.num_channels)
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            return int(module.out_channels)
        if isinstance(module, nn.Linear):
            return int(module.out_features)
    raise ValueError(f"cannot tell the output width of {type(encoder).__name__}")


# ====================================================================================================== images
@register_adapter("vision_cls")
class VisionAdapter(EncoderAdapter):
    """ViT-family encoders with a class token (ViT, DeiT, BEiT, DINOv2...): ``cls`` pooling. Passes
    ``interpolate_pos_encoding`` when the spec asks or when the image size differs from the checkpoint's."""

    kind = "image"
    model_types = ("vit", "deit", "beit", "dinov2", "dinov2_with_registers", "vit_mae", "data2vec-vision")
    input_fields = ("pixel_values",)
    optional_fields = ()
    inactive_weights = ("embeddings.mask_token",)

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("pixel_values")
        channels = getattr(self.config, "num_channels", None) or 3
        if value is not None and (value.dim() != 4 or value.shape[1] != channels):
            raise ValueError(
                f"modality '{name}' ({self.kind}): field '{name}_pixel_values' must be "
                f"[batch, {channels}, height, width], got shape {tuple(value.shape)}"
            )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        kwargs = super().forward_kwargs(encoder, fields)
        if _accepts(encoder, "interpolate_pos_encoding"):
            interpolate = self.options.get("interpolate_pos_encoding")
            if interpolate is None:
                size = getattr(self.config, "image_size", None)
                size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
                interpolate = size[0] is not None and tuple(fields["pixel_values"].shape[-2:]) != size
            kwargs["interpolate_pos_encoding"] = bool(interpolate)
        return kwargs


@register_adapter("vision_pooled")
class PooledVisionAdapter(VisionAdapter):
    """Vision encoders whose own pooled output is the image embedding: Swin / ConvNeXt / ResNet /
    EfficientNet / MobileViT (average pool), CLIP and Chinese-CLIP vision (post-norm CLS), SigLIP vision
    (MAP head), ALIGN vision."""

    model_types = (
        "swin",
        "swinv2",
        "convnext",
        "convnextv2",
        "resnet",
        "regnet",
        "efficientnet",
        "mobilevit",
        "mobilevitv2",
        "mobilenet_v2",
        "clip_vision_model",
        "chinese_clip_vision_model",
        "siglip_vision_model",
        "align_vision_model",
        "dinat",
        "focalnet",
        "poolformer",
        "pvt_v2",
    )
    default_pooling = "pooler"
    pooler_prefixes = ("pooler.", "head.")

    def output_dim(self, encoder: nn.Module) -> int:
        """The width of the module that makes the pooled output (its last norm / conv / linear layer); config
        fields differ per family (``hidden_sizes[-1]``, ``hidden_dim``, ``neck_hidden_sizes[-1]``...)."""
        return last_width(encoder)


@register_adapter("clip_vision")
class ClipVisionAdapter(PooledVisionAdapter):
    """CLIP / Chinese-CLIP vision: ``pooler_output = post_layernorm(CLS)``, so ``post_layernorm`` belongs to
    the pooling head (``last_hidden_state`` is taken before it)."""

    model_types = ("clip_vision_model", "chinese_clip_vision_model")
    pooler_prefixes = ("post_layernorm.",)


@register_adapter("convnext")
class ConvNextAdapter(PooledVisionAdapter):
    """ConvNeXt(V2): ``pooler_output = layernorm(mean over H x W)``; the final ``layernorm`` is the head."""

    model_types = ("convnext", "convnextv2")
    pooler_prefixes = ("layernorm.",)


@register_adapter("mobilevit")
class MobileViTAdapter(PooledVisionAdapter):
    """MobileViT: stages of different types in ``encoder.layer``; the 1x1 expansion conv sets the width."""

    model_types = ("mobilevit", "mobilevitv2")
    block_path = "encoder.layer"


@register_adapter("timm")
class TimmAdapter(VisionAdapter):
    """timm models through transformers' ``TimmWrapperModel``: timm's coarse parameter groups are the blocks,
    the global pool + head norm is ``pooler``; checkpointing through ``set_grad_checkpointing``."""

    model_types = ("timm_wrapper",)
    default_pooling = "pooler"

    def model_class(self) -> type[nn.Module]:
        return AutoModel

    def build(self) -> nn.Module:
        return AutoModel.from_config(self.config)

    def load(self, name: str, path: str, source: PretrainedConfig, pooling: str | None, **kwargs: Any):
        return AutoModel.from_pretrained(path, config=self.config, **kwargs)

    def output_dim(self, encoder: nn.Module) -> int:
        return int(encoder.timm_model.num_features)

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"pixel_values": fields["pixel_values"]}

    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return hasattr(encoder.timm_model, "set_grad_checkpointing")

    def set_checkpointing(
        self, encoder: nn.Module, enable: bool, function: Any, every_n_layers: int = 1
    ) -> bool:
        encoder.timm_model.set_grad_checkpointing(enable)
        return True


# ====================================================================================================== text
@register_adapter("text_encoder")
class TextEncoderAdapter(EncoderAdapter):
    """Bidirectional text encoders (BERT, RoBERTa, DeBERTa, ModernBERT, ALIGN / Chinese-CLIP text...):
    mask-aware ``cls`` (the first valid token)."""

    model_types = ()
    optional_fields = ("attention_mask", "token_type_ids", "position_ids")

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return main_input_kind(config) == "text"

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_ids")
        if value is not None and (value.dim() != 2 or value.is_floating_point()):
            raise ValueError(
                f"modality '{name}' ({self.kind}): field '{name}_input_ids' must be [batch, tokens] integer "
                f"token ids, got shape {tuple(value.shape)}"
            )
        super().check_fields(name, fields)


@register_adapter("decoder_only")
class DecoderOnlyAdapter(TextEncoderAdapter):
    """Decoder-only LMs (GPT-2, Llama, Qwen2, Mistral, OPT...): ``last`` pooling (the last real token, either
    padding side) with ``position_ids`` from the mask, so left padding cannot shift learned positions."""

    model_types = (
        "gpt2",
        "gpt_neo",
        "gpt_neox",
        "gptj",
        "llama",
        "mistral",
        "mixtral",
        "qwen2",
        "qwen2_moe",
        "qwen3",
        "opt",
        "phi",
        "phi3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "falcon",
        "bloom",
        "olmo",
        "olmo2",
        "stablelm",
        "starcoder2",
        "smollm3",
    )
    default_pooling = "last"

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return config.model_type in cls.model_types

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        kwargs = super().forward_kwargs(encoder, fields)
        mask = fields.get("attention_mask")
        if mask is not None and "position_ids" not in fields and _accepts(encoder, "position_ids"):
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if _accepts(encoder, "use_cache"):
            kwargs["use_cache"] = False
        return kwargs


class Seq2SeqEncoderMixin:
    """Loading for the encoder of an encoder-decoder checkpoint: transformers' encoder-only class where the
    family has one (``T5EncoderModel``, with its tied ``shared`` table), else the full model's
    ``get_encoder()``. Either way the decoder never runs and its blocks are not blocks here."""

    def encoder_only_class(self) -> type[nn.Module] | None:
        """transformers' encoder-only class of the family (``T5EncoderModel``, ``MT5EncoderModel``...), if any."""
        module = importlib.import_module(model_class_for(self.config).__module__)
        prefix = model_class_for(self.config).__name__.removesuffix("Model")
        return getattr(module, prefix + "EncoderModel", None)

    def model_class(self) -> type[nn.Module]:
        return self.encoder_only_class() or AutoModel

    def build(self) -> nn.Module:
        encoder_only = self.encoder_only_class()
        if encoder_only is not None:
            return encoder_only._from_config(self.config)
        return AutoModel.from_config(self.config).get_encoder()

    def load(self, name: str, path: str, source: PretrainedConfig, pooling: str | None, **kwargs: Any):
        if (
            self.encoder_only_class() is not None
        ):  # T5-style: loads the encoder (and shared table) of any head
            return super().load(name, path, source, pooling, **kwargs)
        model, info = AutoModel.from_pretrained(path, config=self.config, output_loading_info=True, **kwargs)
        encoder = model.get_encoder()
        prefix = next((n for n, m in model.named_modules() if m is encoder), "encoder") + "."
        missing = [k[len(prefix) :] for k in info.get("missing_keys", ()) if k.startswith(prefix)]
        self.check_loaded(name, path, missing, pooling)
        return encoder


@register_adapter("encoder_decoder_text")
class EncoderDecoderTextAdapter(Seq2SeqEncoderMixin, TextEncoderAdapter):
    """The encoder of an encoder-decoder checkpoint (T5, mT5, Flan-T5, BART, mBART, Pegasus, Marian...):
    transformers' encoder-only class where the family has one (``T5EncoderModel``, with its tied ``shared``
    table), else the full model's ``get_encoder()``; the decoder never runs and its blocks are not blocks here.
    Mask-aware ``mean`` pooling."""

    model_types = (
        "t5",
        "mt5",
        "umt5",
        "longt5",
        "bart",
        "mbart",
        "pegasus",
        "pegasus_x",
        "marian",
        "blenderbot",
        "blenderbot-small",
        "plbart",
        "m2m_100",
        "led",
        "fsmt",
    )
    default_pooling = "mean"
    optional_fields = ("attention_mask",)

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return config.model_type in cls.model_types


@register_adapter("clip_text")
class ClipTextAdapter(TextEncoderAdapter):
    """CLIP text: its pooled output is the hidden state at the first EOS token (causal attention, so the
    first token carries nothing about the text). A row whose first EOS is missing or padding is an error."""

    model_types = ("clip_text_model",)
    default_pooling = "pooler"
    optional_fields = ("attention_mask", "position_ids")

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        super().check_fields(name, fields)
        eos = getattr(self.config, "eos_token_id", None)
        ids = fields.get("input_ids")
        if ids is None or eos is None or eos == 2:  # legacy configs pool at argmax(input_ids)
            return
        is_eos = ids == eos
        has_eos = is_eos.any(dim=1)
        mask = fields.get("attention_mask")
        if mask is not None:
            first = is_eos.int().argmax(dim=1)
            has_eos &= mask.gather(1, first[:, None]).squeeze(1).bool()
        if not bool(has_eos.all()):
            rows = (~has_eos).nonzero().squeeze(1).tolist()
            raise ValueError(
                f"modality '{name}' (text): rows {rows} of '{name}_input_ids' have no end-of-text token "
                f"(id {eos}) before padding; CLIP text pools at that token. Tokenize with the CLIP tokenizer "
                "(right padding, truncation keeps the EOS)"
            )


@register_adapter("siglip_text")
class SiglipTextAdapter(TextEncoderAdapter):
    """SigLIP / SigLIP2 text: pooled output = head(last position), trained on ``max_length`` padding without
    an attention mask; the processor pads to ``max_position_embeddings`` and other lengths are an error."""

    model_types = ("siglip_text_model", "siglip2_text_model")
    default_pooling = "pooler"
    optional_fields = ()
    pooler_prefixes = ("head.",)

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        super().check_fields(name, fields)
        ids = fields.get("input_ids")
        length = self.config.max_position_embeddings
        if ids is not None and ids.shape[1] != length:
            raise ValueError(
                f"modality '{name}' (text): SigLIP text takes '{name}_input_ids' padded to {length} tokens "
                f"(padding='max_length', as trained), got {ids.shape[1]}"
            )

    def processor_kwargs(self) -> dict[str, Any]:
        return {"padding": "max_length", "max_length": int(self.config.max_position_embeddings)}


@register_adapter("clap_text")
class ClapTextAdapter(TextEncoderAdapter):
    """CLAP text (RoBERTa-like): ``ClapModel`` embeds texts with the tower's pooler, so ``pooler``."""

    model_types = ("clap_text_model",)
    default_pooling = "pooler"


# ====================================================================================================== audio
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
    exact_by_unpadding: ClassVar[bool] = False

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return main_input_kind(config) == "audio" and hasattr(config, "conv_kernel")

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


@register_adapter("waveform_unpadded")
class UnpaddedWaveformAudioAdapter(WaveformAudioAdapter):
    """Data2VecAudio, Wav2Vec2-Conformer and SEW: padding leaks into valid frames through their stacked
    positional convolutions / conformer convolutions / SEW's squeeze pooling, and no cheap masked equivalent
    exists, so each distinct clip length is encoded unpadded (exact; one encoder call per distinct length)."""

    model_types = ("data2vec-audio", "wav2vec2-conformer", "sew", "sew-d")
    exact_by_unpadding = True

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        unused = super().unused_weights(encoder)
        if self.config.model_type == "wav2vec2-conformer":  # built, never called (relative/rotary positions)
            unused += ("encoder.pos_conv_embed.",)
        return unused

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return config.model_type in cls.model_types


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


# ====================================================================================================== features
@register_adapter("features")
class FeaturesAdapter(EncoderAdapter):
    """A dense float vector (kind ``features``) through the package's [`FeatureEncoder`] MLP."""

    kind = "features"
    default_pooling = None
    input_fields = ("values",)
    optional_fields = ()

    @classmethod
    def matches(cls, config: PretrainedConfig) -> bool:
        return False

    def build(self) -> nn.Module:
        return FeatureEncoder(self.options["input_dim"], self.options["hidden_sizes"])

    def output_dim(self, encoder: nn.Module) -> int:
        return encoder.output_dim

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("values")
        dim = self.options["input_dim"]
        if value is not None and (value.dim() != 2 or value.shape[1] != dim):
            raise ValueError(
                f"modality '{name}' (features): field '{name}_values' must be [batch, {dim}] floats, "
                f"got shape {tuple(value.shape)}"
            )

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        return EncoderOutput(hidden=encoder(fields["values"]))

    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return False


_FALLBACKS = {"image": VisionAdapter, "text": TextEncoderAdapter, "audio": WaveformAudioAdapter}


def adapter_class_for(config: PretrainedConfig | None, kind: str | None = None) -> type[EncoderAdapter]:
    """The adapter class of an encoder config (a tower config for dual encoders): the first registered
    adapter that matches it, else the generic one of its kind. ``None`` config -> features."""
    if config is None or kind == "features":
        return FeaturesAdapter
    by_type = [c for c in ENCODER_ADAPTERS.values() if config.model_type in c.model_types]
    # the most derived class naming the model type (ClipVisionAdapter over PooledVisionAdapter)
    for cls in sorted(by_type, key=lambda c: -len(c.__mro__)):
        if kind is None or cls.kind == kind:
            return cls
    for cls in (DecoderOnlyAdapter, EncoderDecoderTextAdapter, WaveformAudioAdapter, TextEncoderAdapter):
        if cls.matches(config) and (kind is None or cls.kind == kind):
            return cls
    kind = kind or main_input_kind(config)
    if kind not in _FALLBACKS:
        raise ValueError(f"no encoder adapter for model type '{config.model_type}'; give `kind` explicitly")
    return _FALLBACKS[kind]


def infer_kind(config: PretrainedConfig) -> str | None:
    """``image`` / ``audio`` / ``text`` of a single-tower encoder config; ``None`` when it cannot be told
    (dual-encoder parents are ambiguous: the kind picks the tower)."""
    if is_dual_config(config):
        return None
    try:
        return adapter_class_for(config).kind
    except ValueError:
        return None


def adapter_for(spec: dict[str, Any]) -> EncoderAdapter:
    """The adapter of a normalised modality spec (``kind``, ``config`` and the spec options)."""
    if spec.get("module") is not None:  # your own network (module_adapter.py, registered as "module")
        return ENCODER_ADAPTERS["module"](None, spec)
    return adapter_class_for(spec.get("config"), spec.get("kind"))(spec.get("config"), spec)
