"""Encoder token sequences for token-level fusion: ``max_tokens`` reduction and the model's token path.

``reduce_tokens`` caps a modality's sequence at ``max_tokens`` so that token-level fusion does not become
quadratic in a long input (a 10 s clip is 500 wav2vec2 frames), each kind in the way that keeps its structure
(its [`ModalityKind.reduce_tokens`]; the reductions are in ``token_reduction``).

``TokenSequenceMixin`` gives ``FusionModel`` its token path: ``get_modality_tokens`` (what the embedding cache
stores) and ``_fuse_tokens`` (projected tokens of every modality into a token-level fusion). Model layer: torch
only (copied next to the weights for ``trust_remote_code``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from .modality_kinds import get_kind
from .token_fusion_layers import masked_mean


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


class TokenSequenceMixin:
    """``FusionModel``'s token path (see the module docstring)."""

    def _encoder_tokens(
        self, name: str, fields: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced token sequence ``([n, T, hidden], mask [n, T])`` of modality ``name``'s encoder for these rows."""
        spec = self.config.modalities[name]
        if get_kind(spec.kind).pooled_only:
            vector = self._run_encoder(name, fields)
            return vector.unsqueeze(1), torch.ones(vector.shape[0], 1, dtype=torch.bool, device=vector.device)
        groups = self.adapters[name].exact_batches(fields)
        if groups is not None:
            return self._exact_batch_tokens(name, groups)
        output = self._encoder_hidden(name, fields)
        return reduce_tokens(spec.kind, output.hidden, output.mask, spec.max_tokens, output.grid)

    def _exact_batch_tokens(self, name: str, groups: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
        """Row groups the adapter encodes apart (``exact_batches``: each clip length unpadded, as the pooled path
        does), then padded back together: ``([n, T, hidden], mask [n, T])``."""
        parts = [(rows, *self._encoder_tokens(name, part)) for rows, part in groups]
        batch = sum(len(rows) for rows, _, _ in parts)
        width = max(tokens.shape[1] for _, tokens, _ in parts)
        first = parts[0][1]
        tokens = first.new_zeros(batch, width, first.shape[-1])
        mask = torch.zeros(batch, width, dtype=torch.bool, device=first.device)
        for rows, part, part_mask in parts:
            tokens[rows, : part.shape[1]] = part
            mask[rows, : part.shape[1]] = part_mask
        return tokens, mask

    def _token_states(self, name: str, fields: dict[str, torch.Tensor], present: torch.Tensor):
        """``(tokens [n_present, T, hidden], mask)`` for the present rows (cached or encoded), or ``None``.
        While exporting (``torch.compiler.is_exporting()``): every row (``_scatter_rows`` masks the missing ones)."""
        exporting = torch.compiler.is_exporting()
        if not exporting and not bool(present.any()):
            return None
        if "token_embeds" in fields:
            tokens = fields["token_embeds"][present].to(self.projections[name][0].weight.dtype)
            mask = fields.get("token_mask")
            mask = (
                torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if mask is None else mask
            )
            return tokens, mask[present].bool()
        inputs = {k: v for k, v in fields.items() if k != "mask"}
        if not exporting and not bool(present.all()):
            inputs = {k: v[present] for k, v in inputs.items()}
        frozen = not any(p.requires_grad for p in self.encoders[name].parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return self._encoder_tokens(name, inputs)

    def get_modality_tokens(self, **inputs: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Token sequences per modality in the batch before projection, after ``max_tokens``:
        ``name -> (token_embeds [B, T, hidden], token_mask [B, T])`` (what ``{name}_token_embeds`` /
        ``{name}_token_mask`` take). Rows whose ``{name}_mask`` is False have no real token."""
        batch, batch_size, masks = self._prepare(inputs, None)
        result = {}
        for i, name in enumerate(self.config.modalities):
            if not set(batch[name]) - {"mask"}:
                continue
            present = masks[:, i]
            states = self._token_states(name, batch[name], present)
            result[name] = _scatter_rows(states, present, batch_size, self.pooled_dims[name])
        return result

    def _fuse_tokens(self, batch: dict, batch_size: int, masks: torch.Tensor, output_attentions: bool):
        """Project every modality's tokens, run the token-level fusion; returns ``(fusion output, name ->
        [B, D] mean projected token, zeros where the modality is missing)``."""
        tokens, token_masks, summaries = [], [], {}
        for i, name in enumerate(self.config.modalities):
            present = masks[:, i]
            states = self._token_states(name, batch[name], present)
            if states is not None:
                states = (self.projections[name](states[0]), states[1])
            dim = self.config.projection_dim
            projected, token_mask = _scatter_rows(states, present, batch_size, dim, masks.device)
            summaries[name] = masked_mean(projected, token_mask)  # zeros where missing
            tokens.append(projected)
            token_masks.append(token_mask)
        dtype = tokens[0].dtype
        for t in tokens:
            dtype = torch.promote_types(dtype, t.dtype)
        tokens = [t.to(dtype) for t in tokens]
        return self.fusion(tokens, token_masks, masks, output_attentions=output_attentions), summaries


def _scatter_rows(states, present: torch.Tensor, batch_size: int, dim: int, device=None):
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
