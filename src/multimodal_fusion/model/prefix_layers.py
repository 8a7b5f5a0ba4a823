"""Enter an encoder's block stack from cached hidden states: the model-layer half of the frozen-prefix cache.

When an encoder is frozen below block ``j`` (embeddings, convolutional front-end and blocks ``1..j``), the hidden
states entering block ``j + 1`` are the same for a sample at every step. A *prefix runner* knows, for one encoder
family, how to compute them once ([`PrefixRunner.prefix_hidden_states`]) and how to continue from them
([`PrefixRunner.run_from_block`]): position embeddings already applied, the attention mask built as the family's
own forward builds it (``create_bidirectional_mask``), the final norm and the family's pooler head applied after
the top block. The result equals the encoder's own forward (``last_hidden_state``, ``pooler_output``) up to float
rounding, dropout in the trainable blocks included (the frozen blocks run in eval mode and consume no random
numbers on either path).

Runners sit in a registry keyed by the encoder's class name ([`PREFIX_RUNNER_REGISTRY`]); a family without a runner,
or an encoder whose frozen prefix is random in training mode (SpecAugment, LayerDrop, active dropout before the
boundary), is *not exact* and [`prefix_exact_reason`] says why. ``j`` counts blocks: ``0`` enters the first block
(only the embeddings / front-end are cached), ``num_blocks`` would skip them all (the pooled-vector cache covers
that case).

The runner interface (``blocks``, ``embed``, ``finish``, ``run_from_block(encoder, hidden, mask, j)``) is meant to
become part of the per-family encoder adapters (one registry name -> adapter, chosen from the encoder): an adapter
that knows its family's blocks and final norm gains ``run_from_block`` and this registry folds into it.

Self-contained (torch and transformers only): ``save_pretrained`` copies this file for ``trust_remote_code``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask


def _training_dropouts(encoder: nn.Module, modules: list[nn.Module]) -> list[str]:
    """Names (in ``encoder``) of dropout modules with ``p > 0`` in training mode among ``modules`` and children."""
    names = {id(m): n for n, m in encoder.named_modules()}
    found = []
    for module in modules:
        for child in module.modules():
            if isinstance(child, nn.modules.dropout._DropoutNd) and child.p > 0 and child.training:
                found.append(f"{names.get(id(child), type(child).__name__)} (p={child.p})")
    return found


class PrefixRunner:
    """How one encoder family's block stack is entered from cached hidden states.

    Subclasses set ``model_classes`` (encoder class names they handle) and implement the four hooks. Shapes:
    ``hidden`` ``[batch, tokens, hidden_size]``, ``mask`` ``[batch, tokens]`` bool (True = real token).
    """

    model_classes: tuple[str, ...] = ()

    def blocks(self, encoder: nn.Module) -> nn.ModuleList:
        """The repeated blocks, bottom to top."""
        raise NotImplementedError

    def embed(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Embeddings / front-end output entering block 1: ``(hidden, block attention mask, token mask)``."""
        raise NotImplementedError

    def finish(self, encoder: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final norm and pooler head after the top block: ``(last_hidden_state, pooler_output or None)``."""
        pooler = getattr(encoder, "pooler", None)
        return hidden, pooler(hidden) if pooler is not None else None

    def random_prefix_reason(self, encoder: nn.Module) -> str | None:
        """Why the frozen prefix would be random in training mode (family-specific), or ``None``."""
        return None

    def prefix_modules(self, encoder: nn.Module) -> list[nn.Module]:
        """Modules that run before block 1 (checked for active dropout)."""
        return []

    def block_mask(self, encoder: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The attention mask the blocks take, built as the family's forward builds it."""
        return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=mask)

    def run_block(self, block: nn.Module, hidden: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        return block(hidden, attention_mask)

    # ------------------------------------------------------------------ the two entry points
    @torch.no_grad()
    def prefix_hidden_states(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], num_frozen: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states entering block ``num_frozen + 1`` and their token mask, without gradients."""
        hidden, attention_mask, token_mask = self.embed(encoder, fields)
        for block in self.blocks(encoder)[:num_frozen]:
            hidden = self.run_block(block, hidden, attention_mask)
        return hidden, token_mask

    def run_from_block(
        self, encoder: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, num_frozen: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Blocks ``num_frozen + 1..top``, the final norm and the pooler head on cached ``hidden`` states.

        Returns ``(last_hidden_state, pooler_output or None)`` as the encoder's own forward gives them."""
        mask = mask.bool()
        attention_mask = self.block_mask(encoder, hidden, None if bool(mask.all()) else mask)
        for block in self.blocks(encoder)[num_frozen:]:
            hidden = self.run_block(block, hidden, attention_mask)
        return self.finish(encoder, hidden)


class ViTPrefixRunner(PrefixRunner):
    """ViT: patch + position embeddings (CLS token included), then ``layers``, ``layernorm``, ``pooler``."""

    model_classes = ("ViTModel",)

    def blocks(self, encoder):
        return encoder.layers

    def prefix_modules(self, encoder):
        return [encoder.embeddings]

    def embed(self, encoder, fields):
        pixel_values = fields["pixel_values"].to(encoder.embeddings.patch_embeddings.projection.weight.dtype)
        hidden = encoder.embeddings(pixel_values)
        token_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return hidden, self.block_mask(encoder, hidden, None), token_mask

    def finish(self, encoder, hidden):
        return super().finish(encoder, encoder.layernorm(hidden))


class BertPrefixRunner(PrefixRunner):
    """BERT-family encoders (absolute position embeddings added in ``embeddings``): ``encoder.layer``, pooler."""

    model_classes = ("BertModel", "RobertaModel", "XLMRobertaModel")

    def blocks(self, encoder):
        return encoder.encoder.layer

    def prefix_modules(self, encoder):
        return [encoder.embeddings]

    def random_prefix_reason(self, encoder):
        if encoder.config.is_decoder:
            return "a decoder (causal) BERT-family model"
        return None

    def embed(self, encoder, fields):
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
        return hidden, self.block_mask(encoder, hidden, mask), token_mask


class Wav2Vec2PrefixRunner(PrefixRunner):
    """wav2vec2, layer-norm (``do_stable_layer_norm``) and group-norm variants: convolutional front-end, feature
    projection, padded frames zeroed, convolutional position embedding (+ layer norm in the group-norm variant),
    then ``encoder.layers`` and, in the stable variant, the final ``encoder.layer_norm``.

    Without ``attention_mask`` every frame is valid. The blocks run on the padded batch with its frame mask in both
    variants, as the live path does (the group-norm front-end's masked GroupNorm makes one call exact there)."""

    model_classes = ("Wav2Vec2Model",)

    def blocks(self, encoder):
        return encoder.encoder.layers

    def prefix_modules(self, encoder):
        return [encoder.feature_extractor, encoder.feature_projection, encoder.encoder.pos_conv_embed,
                encoder.encoder.layer_norm, encoder.encoder.dropout]  # fmt: skip

    def random_prefix_reason(self, encoder):
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

    def run_block(self, block, hidden, attention_mask):
        return block(hidden, attention_mask=attention_mask)

    def embed(self, encoder, fields):
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
        block_mask = self.block_mask(encoder, hidden, frame_mask)
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

    def finish(self, encoder, hidden):
        if encoder.config.do_stable_layer_norm:
            hidden = encoder.encoder.layer_norm(hidden)
        return hidden, None


PREFIX_RUNNER_REGISTRY: dict[str, type[PrefixRunner]] = {
    name: runner
    for runner in (ViTPrefixRunner, BertPrefixRunner, Wav2Vec2PrefixRunner)
    for name in runner.model_classes
}
"""Encoder class name -> its prefix runner. Families not listed are not exact and always run live."""


def prefix_runner(encoder: nn.Module) -> PrefixRunner | None:
    """The prefix runner of ``encoder``'s family, or ``None`` when the family has none."""
    runner = PREFIX_RUNNER_REGISTRY.get(type(encoder).__name__)
    return runner() if runner is not None else None


def prefix_exact_reason(encoder: nn.Module, num_frozen: int, layer: int | None = None) -> str | None:
    """``None`` when training from hidden states cached at block boundary ``num_frozen`` equals the live path for
    ``encoder`` *in its current train/eval mode*; else the reason it would not (one line, names the setting)."""
    runner = prefix_runner(encoder)
    if runner is None:
        return f"encoder family '{type(encoder).__name__}' has no prefix runner (not exact)"
    if layer is not None:
        return f"an intermediate `layer` ({layer}) is pooled"
    blocks = runner.blocks(encoder)
    if not 0 <= num_frozen < len(blocks):
        return f"boundary {num_frozen} is outside 0..{len(blocks) - 1}"
    reason = runner.random_prefix_reason(encoder)
    if reason is not None:
        return reason
    frozen_blocks = list(blocks[:num_frozen])
    active = _training_dropouts(encoder, [*runner.prefix_modules(encoder), *frozen_blocks])
    if active:
        return (
            f"dropout before the boundary is active in training ({', '.join(active[:3])}); set its probability "
            "to 0 (e.g. wav2vec2's hidden_dropout)"
        )
    return None
