"""Enter an encoder's block stack from cached hidden states: the model-layer half of the frozen-prefix cache.

When an encoder is frozen below block ``j`` (embeddings, convolutional front-end and blocks ``1..j``), the hidden
states entering block ``j + 1`` are the same for a sample at every step. The family's encoder adapter knows how to
compute them once ([`prefix_hidden_states`]) and how to continue from them ([`run_from_block`]), through the
``prefix_*`` hooks of [`PrefixRunnerMixin`] (a base of every ``EncoderAdapter``): position embeddings already
applied, the attention mask built as the family's own forward builds it (``create_bidirectional_mask``), the final norm and the family's pooler head applied after
the top block. The result equals the encoder's own forward (``last_hidden_state``, ``pooler_output``) up to float
rounding, dropout in the trainable blocks included (the frozen blocks run in eval mode and consume no random
numbers on either path).

There is no registry here: the adapter of the modality is asked (``adapter.prefix_blocks(encoder)``); a family
whose adapter has no block stack to enter (``None``), or an encoder whose frozen prefix is random in training mode
(SpecAugment, LayerDrop, active dropout before the boundary), is *not exact* and [`prefix_exact_reason`] says why. ``j`` counts blocks: ``0`` enters the first block
(only the embeddings / front-end are cached), ``num_blocks`` would skip them all (the pooled-vector cache covers
that case).

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


class PrefixRunnerMixin:
    """The ``prefix_*`` hooks an encoder adapter implements to make its family's frozen prefix cacheable.

    The defaults say "no block stack to enter" (``prefix_blocks`` returns ``None``), so a family is not exact
    until its adapter overrides ``prefix_blocks``, ``prefix_embed`` and, where needed, ``prefix_finish``.
    Shapes: ``hidden`` ``[batch, tokens, hidden_size]``, ``mask`` ``[batch, tokens]`` bool (True = real token).
    """

    def prefix_blocks(self, encoder: nn.Module) -> nn.ModuleList | None:
        """The repeated blocks, bottom to top; ``None`` when the family has no prefix runner (not exact)."""
        return None

    def prefix_embed(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """Embeddings / front-end output entering block 1: ``(hidden, block attention mask, token mask)``."""
        raise NotImplementedError(f"{type(self).__name__} has no prefix runner for {type(encoder).__name__}")

    def prefix_finish(
        self, encoder: nn.Module, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final norm and pooler head after the top block: ``(last_hidden_state, pooler_output or None)``."""
        pooler = getattr(encoder, "pooler", None)
        return hidden, pooler(hidden) if pooler is not None else None

    def prefix_random_reason(self, encoder: nn.Module) -> str | None:
        """Why the frozen prefix would be random in training mode (family-specific), or ``None``."""
        return None

    def prefix_modules(self, encoder: nn.Module) -> list[nn.Module]:
        """Modules that run before block 1 (checked for active dropout)."""
        return []

    def prefix_block_mask(self, encoder: nn.Module, hidden: torch.Tensor, mask: torch.Tensor | None) -> Any:
        """The attention mask the blocks take, built as the family's forward builds it."""
        return create_bidirectional_mask(config=encoder.config, inputs_embeds=hidden, attention_mask=mask)

    def prefix_run_block(self, block: nn.Module, hidden: torch.Tensor, attention_mask: Any) -> torch.Tensor:
        """One block on ``hidden`` ``[batch, tokens, hidden_size]``."""
        return block(hidden, attention_mask)

    def prefix_batches(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor]
    ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]] | None:
        """Row groups ``(rows, fields)`` whose prefix must be computed apart to match the live path (e.g. each
        clip length of a group-norm front-end), or ``None`` when the padded batch computes it in one call."""
        return None


@torch.no_grad()
def _prefix_once(
    adapter: PrefixRunnerMixin, encoder: nn.Module, fields: dict[str, torch.Tensor], num_frozen: int
):
    hidden, attention_mask, token_mask = adapter.prefix_embed(encoder, fields)
    for block in adapter.prefix_blocks(encoder)[:num_frozen]:
        hidden = adapter.prefix_run_block(block, hidden, attention_mask)
    return hidden, token_mask


def prefix_hidden_states(
    adapter: PrefixRunnerMixin, encoder: nn.Module, fields: dict[str, torch.Tensor], num_frozen: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states entering block ``num_frozen + 1`` (``[B, T, D]``) and their token mask (``[B, T]`` bool),
    without gradients, as the live path computes them: row groups the adapter names (``prefix_batches``) are
    computed apart and padded back together, padded positions masked out."""
    groups = adapter.prefix_batches(encoder, fields)
    if groups is None:
        return _prefix_once(adapter, encoder, fields, num_frozen)
    parts = [(rows, _prefix_once(adapter, encoder, part, num_frozen)[0]) for rows, part in groups]
    batch = next(iter(fields.values())).shape[0]
    frames = max(part.shape[1] for _, part in parts)
    first = parts[0][1]
    hidden = first.new_zeros(batch, frames, first.shape[2])
    token_mask = torch.zeros(batch, frames, dtype=torch.bool, device=first.device)
    for rows, part in parts:
        hidden[rows, : part.shape[1]] = part
        token_mask[rows, : part.shape[1]] = True
    return hidden, token_mask


def run_from_block(
    adapter: PrefixRunnerMixin, encoder: nn.Module, hidden: torch.Tensor, mask: torch.Tensor, num_frozen: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Blocks ``num_frozen + 1..top``, the final norm and the pooler head on cached ``hidden`` states.

    Returns ``(last_hidden_state, pooler_output or None)`` as the encoder's own forward gives them."""
    mask = mask.bool()
    attention_mask = adapter.prefix_block_mask(encoder, hidden, None if bool(mask.all()) else mask)
    for block in adapter.prefix_blocks(encoder)[num_frozen:]:
        hidden = adapter.prefix_run_block(block, hidden, attention_mask)
    return adapter.prefix_finish(encoder, hidden)


def prefix_exact_reason(
    adapter: PrefixRunnerMixin, encoder: nn.Module, num_frozen: int, layer: int | None = None
) -> str | None:
    """``None`` when training from hidden states cached at block boundary ``num_frozen`` equals the live path for
    ``encoder`` (run by its family ``adapter``) *in its current train/eval mode*; else the reason it would not
    (one line, names the setting)."""
    blocks = adapter.prefix_blocks(encoder)
    if blocks is None:
        return f"encoder family '{type(encoder).__name__}' has no prefix runner (not exact)"
    if layer is not None:
        return f"an intermediate `layer` ({layer}) is pooled"
    if not 0 <= num_frozen < len(blocks):
        return f"boundary {num_frozen} is outside 0..{len(blocks) - 1}"
    reason = adapter.prefix_random_reason(encoder)
    if reason is not None:
        return reason
    frozen_blocks = list(blocks[:num_frozen])
    active = _training_dropouts(encoder, [*adapter.prefix_modules(encoder), *frozen_blocks])
    if active:
        return (
            f"dropout before the boundary is active in training ({', '.join(active[:3])}); set its probability "
            "to 0 (e.g. wav2vec2's hidden_dropout)"
        )
    return None
