"""Pooling of an encoder's token sequence into one vector per sample, in a name -> class registry.

Every pooling takes ``hidden`` ``[B, T, D]``, an optional token ``mask`` ``[B, T]`` (True = real token) and
the encoder's own ``pooler_output`` ``[B, D]`` when it has one, and returns ``[B, D]``. A pooling with parameters
of its own defines ``init_weights(std)`` (see ``fusion_layers``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import initialization as init

from .registry import Registry

POOLINGS: Registry[type[nn.Module]] = Registry("pooling", attribute="pooling_name")
"""Every pooling, by name (``@register_pooling("name")``; query with ``POOLINGS.names()`` / ``.describe()``)."""

POOLING_REGISTRY = POOLINGS  # the v0.1 name
register_pooling = POOLINGS.register


def _batch_index(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index.to(hidden.device)]


@register_pooling("cls")
class ClsPooling(nn.Module):
    """The first *valid* token (``[CLS]`` in BERT, the class token in ViT), so left padding is safe."""

    def __init__(self, hidden_size: int):
        super().__init__()

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output=None
    ) -> torch.Tensor:
        if mask is None:
            return hidden[:, 0]
        return _batch_index(hidden, mask.int().argmax(dim=1))  # argmax returns the first maximum


@register_pooling("last")
class LastTokenPooling(nn.Module):
    """The last valid token, for either padding side: decoder-only LMs (GPT-2, Llama, Qwen2...), whose causal
    attention puts the whole text only into the last position. ``mask`` ``[B, T]`` True = real token."""

    def __init__(self, hidden_size: int):
        super().__init__()

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output=None
    ) -> torch.Tensor:
        if mask is None:
            return hidden[:, -1]
        positions = torch.arange(mask.shape[1], device=mask.device)
        return _batch_index(hidden, (mask.long() * (positions + 1)).argmax(dim=1))


@register_pooling("mean")
class MeanPooling(nn.Module):
    """Mean over real tokens; padding positions (``mask`` False) are excluded."""

    def __init__(self, hidden_size: int):
        super().__init__()

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output=None
    ) -> torch.Tensor:
        if mask is None:
            return hidden.mean(dim=1)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


@register_pooling("pooler")
class EncoderPooling(nn.Module):
    """The encoder's own pooled output (BERT's pooler, timm's global pool + head norm, ConvNeXt's pooled norm)."""

    def __init__(self, hidden_size: int):
        super().__init__()

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output=None
    ) -> torch.Tensor:
        if pooler_output is None:
            raise ValueError(
                "pooling 'pooler' needs an encoder that returns `pooler_output`; use 'cls' or 'mean'"
            )
        return pooler_output.flatten(1)


@register_pooling("attention")
class AttentionPooling(nn.Module):
    """A learned query attends over the tokens (masked), a light-weight alternative to CLS fine-tuning."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(hidden_size))
        self.key = nn.Linear(hidden_size, hidden_size)

    def init_weights(self, std: float) -> None:
        """A zero query: uniform attention (mean pooling) at the start of training."""
        init.zeros_(self.query)

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output=None
    ) -> torch.Tensor:
        scores = self.key(hidden) @ self.query.to(hidden.dtype) / hidden.shape[-1] ** 0.5
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(dim=-1)
        return (weights.unsqueeze(-1) * hidden).sum(dim=1)
