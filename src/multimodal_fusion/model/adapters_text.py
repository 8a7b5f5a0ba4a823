"""Text encoder families: bidirectional encoders (BERT, RoBERTa, DeBERTa...: the generic text adapter),
decoder-only LMs, the encoder of encoder-decoder checkpoints (T5, BART...), CLIP / SigLIP / CLAP text towers.

Adding a family is one class here plus ``@register_adapter`` and its place in ``encoder_adapters.ADAPTER_ORDER``.
This file is copied next to the weights for ``trust_remote_code`` loading: it imports only torch, transformers
and sibling files.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from .adapter_base import EncoderAdapter, _accepts, main_input_kind, model_class_for, register_adapter

POSITION_OFFSET_MODEL_TYPES = frozenset(
    {
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
)
"""Text encoders whose position ids start after the padding index, so they hold ``max_position_embeddings -
pad_token_id - 1`` tokens."""


@register_adapter("text_encoder")
class TextEncoderAdapter(EncoderAdapter):
    """Bidirectional text encoders (BERT, RoBERTa, DeBERTa, ModernBERT, ALIGN / Chinese-CLIP text...):
    mask-aware ``cls`` (the first valid token)."""

    model_types = ()
    optional_fields = ("attention_mask", "token_type_ids", "position_ids")

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        """A family naming ``model_types`` matches by them; the generic adapter any text encoder (the spec's
        ``kind`` is ``text``, or the model's main input is ``input_ids``)."""
        if cls.model_types or config is None:
            return super().matches(config, kind, spec)
        return kind == cls.kind or (kind is None and main_input_kind(config) == cls.kind)

    def max_text_positions(self) -> int | None:
        """``max_position_embeddings``, less the padding offset of RoBERTa-like models (positions start after
        the padding index)."""
        positions = super().max_text_positions()
        if positions is not None and getattr(self.config, "model_type", None) in POSITION_OFFSET_MODEL_TYPES:
            positions -= (getattr(self.config, "pad_token_id", None) or 1) + 1
        return positions

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("input_ids")
        if value is not None and (value.dim() != 2 or value.is_floating_point()):
            raise ValueError(
                f"modality '{name}' ({self.kind}): field '{name}_input_ids' must be [batch, tokens] integer "
                f"token ids, got shape {tuple(value.shape)}"
            )
        super().check_fields(name, fields)

    # ------------------------------------------------------------------ frozen-prefix cache (BERT family)
    prefix_model_classes: tuple[str, ...] = ("BertModel", "RobertaModel", "XLMRobertaModel")
    """Encoder classes whose block stack the ``prefix_*`` hooks enter: absolute position embeddings added in
    ``embeddings``, then ``encoder.layer`` and the pooler."""

    def prefix_blocks(self, encoder: nn.Module) -> nn.ModuleList | None:
        return encoder.encoder.layer if type(encoder).__name__ in self.prefix_model_classes else None

    def prefix_modules(self, encoder: nn.Module) -> list[nn.Module]:
        return [encoder.embeddings]

    def prefix_random_reason(self, encoder: nn.Module) -> str | None:
        if encoder.config.is_decoder:
            return "a decoder (causal) BERT-family model"
        return None

    def prefix_embed(self, encoder: nn.Module, fields: dict[str, torch.Tensor]):
        hidden = encoder.embeddings(
            input_ids=fields["input_ids"],
            token_type_ids=fields.get("token_type_ids"),
            position_ids=fields.get("position_ids"),
        )
        mask = fields.get("attention_mask")
        token_mask = (
            mask.bool()
            if mask is not None
            else torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        )
        return hidden, self.prefix_block_mask(encoder, hidden, mask), token_mask


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
        present = fields.get("mask")
        if present is not None:  # a missing sample's row holds the processor's placeholder, never pooled
            has_eos |= ~present.bool().to(has_eos.device)
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
