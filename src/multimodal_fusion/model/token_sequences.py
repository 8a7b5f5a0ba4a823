"""Encoder token sequences for token-level fusion: ``max_tokens`` reduction and batch-sized token tensors.

``reduce_tokens`` caps a modality's sequence at ``max_tokens`` so that token-level fusion does not become
quadratic in a long input (a 10 s clip is 500 wav2vec2 frames), each kind in the way that keeps its structure
(its [`ModalityKind.reduce_tokens`]; the reductions are in ``token_reduction``).

The token path itself is ``modality_encoding.ModalityEncoding.tokens`` / ``projected_tokens``. Model layer: torch
only (copied next to the weights for ``trust_remote_code``).
"""

from __future__ import annotations

import torch

from .modality_kinds import get_kind


def reduce_tokens(
    kind: str,
    hidden: torch.Tensor,
    mask: torch.Tensor | None,
    max_tokens: int | None,
    grid: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cap a token sequence ``hidden`` ``[B, T, D]`` (mask ``[B, T]``, ``None`` = all real) at ``max_tokens``
    as the module docstring describes; returns ``(tokens [B, T', D], mask [B, T'] bool)``, ``T' <= max_tokens``
    (unchanged when ``max_tokens`` is ``None``). ``grid`` = ``(H, W)`` of a flattened CNN feature map."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    mask = mask.bool()
    if max_tokens is None:
        return hidden, mask
    return get_kind(kind).reduce_tokens(hidden, mask, max_tokens, grid)


def scatter_rows(
    states: tuple[torch.Tensor, torch.Tensor] | None,
    present: torch.Tensor,
    batch_size: int,
    dim: int,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the present rows' ``(tokens, mask)`` into batch-sized tensors (zeros / False elsewhere)."""
    if states is None:
        device = device if device is not None else present.device
        return torch.zeros(batch_size, 1, dim, device=device), torch.zeros(
            batch_size, 1, dtype=torch.bool, device=device
        )
    tokens, mask = states
    if torch.compiler.is_exporting():  # every row was encoded: zeros / False in the missing ones, as eager
        return tokens.masked_fill(~present.view(-1, 1, 1), 0), mask.bool() & present.unsqueeze(1)
    rows = present.nonzero().squeeze(1)
    full = tokens.new_zeros(batch_size, *tokens.shape[1:]).index_copy(0, rows, tokens)
    full_mask = mask.new_zeros(batch_size, mask.shape[1]).index_copy(0, rows, mask)
    return full, full_mask


TOKEN_FIELDS = ("token_embeds", "token_mask")
"""Batch fields ``{name}_token_embeds`` ``[B, T, hidden]`` / ``{name}_token_mask`` ``[B, T]``: cached tokens."""
