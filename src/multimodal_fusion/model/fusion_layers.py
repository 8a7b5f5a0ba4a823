"""Fusion modules, one class each, in a name -> class registry (adding a fusion = one class + its decorator).

Every fusion takes the projected modality vectors ``embeddings`` ``[B, M, D]`` (in config order; a missing
modality already holds its learned placeholder) and ``mask`` ``[B, M]`` (True = present), and returns a
``FusionOutput`` with ``fused`` ``[B, fusion_hidden_size]`` and, for fusions that weigh modalities,
``weights`` ``[B, M]`` (zero for missing modalities). No training logic lives here.

A fusion with parameters of its own (not inside ``nn.Linear``/``nn.LayerNorm``/``nn.MultiheadAttention``, which
the model initialises) defines ``init_weights(std)`` with ``transformers.initialization``; the model's
``_init_weights`` calls it. transformers 5 builds models on the meta device, so an initialisation done only in
``__init__`` is lost when a model is built or loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init

from .registry import Registry

POOLED_FUSIONS: Registry[type[nn.Module]] = Registry("pooled fusion", attribute="fusion_name")
"""Fusions of one vector per modality: ``forward(embeddings [B, M, D], mask [B, M]) -> FusionOutput``."""

TOKEN_FUSIONS: Registry[type[nn.Module]] = Registry("token-level fusion", attribute="fusion_name")
"""Fusions of token sequences: ``forward(tokens, token_masks, mask, output_attentions) -> TokenFusionOutput``
(``token_fusion_layers``)."""


def register_fusion(name: str):
    """Class decorator adding a pooled fusion to ``POOLED_FUSIONS`` under ``name`` (a class still marked with the
    v0.1 flag ``token_level = True`` goes to ``TOKEN_FUSIONS``; new token-level fusions use
    ``@TOKEN_FUSIONS.register``)."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        table = TOKEN_FUSIONS if getattr(cls, "token_level", False) else POOLED_FUSIONS
        return table.register(name)(cls)

    return wrap


@dataclass
class FusionOutput:
    """``fused`` ``[B, H]``; ``weights`` ``[B, M]`` for fusions that weigh modalities, else ``None``."""

    fused: torch.Tensor
    weights: torch.Tensor | None = None


def effective_mask(mask: torch.Tensor) -> torch.Tensor:
    """Rows where every modality is missing attend to all placeholders instead (a softmax needs one key)."""
    none_present = ~mask.any(dim=1, keepdim=True)
    return mask | none_present


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over modalities that gives exactly zero weight to missing ones."""
    scores = scores.masked_fill(~effective_mask(mask), torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def feed_forward(dim: int, dropout: float) -> nn.Sequential:
    """A transformer block's position-wise MLP: ``Linear(dim, 4 dim)``, GELU, Dropout, ``Linear(4 dim, dim)``,
    Dropout (submodules ``0`` and ``3`` hold the weights)."""
    return nn.Sequential(
        nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim), nn.Dropout(dropout)
    )


def mlp(in_dim: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    """``layers`` x (Linear, GELU, Dropout), the first from ``in_dim`` and the rest at ``hidden``."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(in_dim if i == 0 else hidden, hidden), nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*blocks)


@register_fusion("concat")
class ConcatFusion(nn.Module):
    """Concatenate the modality vectors and run an MLP (``fusion_layers`` deep): the classic late fusion."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        self.mlp = mlp(num_modalities * dim, config.fusion_hidden_size, config.fusion_layers, config.dropout)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        return FusionOutput(self.mlp(embeddings.flatten(1)))


@register_fusion("gated")
class GatedFusion(nn.Module):
    """Gated multimodal unit (Arevalo et al., 2017) for M modalities: ``h_i = tanh(W_i x_i)``, gates
    ``z = softmax(W_z [x_1; ...; x_M])`` over present modalities, ``fused = sum_i z_i h_i``."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        hidden = config.fusion_hidden_size
        self.transforms = nn.ModuleList(nn.Linear(dim, hidden) for _ in range(num_modalities))
        self.gate = nn.Linear(num_modalities * dim, num_modalities)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        hidden = torch.stack([torch.tanh(t(embeddings[:, i])) for i, t in enumerate(self.transforms)], dim=1)
        weights = masked_softmax(self.gate(embeddings.flatten(1)), mask)
        return FusionOutput(self.dropout((weights.unsqueeze(-1) * hidden).sum(dim=1)), weights)


@register_fusion("attention")
class AttentionFusion(nn.Module):
    """Attention-weighted sum of modality vectors: ``a = softmax_i(v^T tanh(W x_i))`` over present
    modalities, ``fused = MLP(sum_i a_i x_i)``."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        self.score_proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)
        self.out = mlp(dim, config.fusion_hidden_size, config.fusion_layers, config.dropout)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        scores = self.score(torch.tanh(self.score_proj(embeddings))).squeeze(-1)
        weights = masked_softmax(scores, mask)
        return FusionOutput(self.out((weights.unsqueeze(-1) * embeddings).sum(dim=1)), weights)


class FusionTransformerBlock(nn.Module):
    """Pre-norm transformer block that can return its attention probabilities."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor, need_weights: bool = False):
        h = self.norm1(x)
        attended, probs = self.attn(
            h, h, h, key_padding_mask=key_padding_mask, need_weights=need_weights, average_attn_weights=True
        )
        x = x + attended
        return x + self.mlp(self.norm2(x)), probs


@register_fusion("transformer")
class TransformerFusion(nn.Module):
    """A small transformer over ``[CLS] + modality tokens`` (+ learned modality-type embeddings); missing
    modalities are masked out of attention. Weights: the last layer's CLS attention over the modalities."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_embeddings = nn.Parameter(torch.zeros(1, num_modalities, dim))
        self.blocks = nn.ModuleList(
            FusionTransformerBlock(dim, config.fusion_heads, config.dropout)
            for _ in range(config.fusion_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Sequential(
            nn.Linear(dim, config.fusion_hidden_size), nn.GELU(), nn.Dropout(config.dropout)
        )

    def init_weights(self, std: float) -> None:
        """Normal(0, ``std``) class token and modality-type embeddings (the linear layers are initialised by the
        model's ``_init_weights``)."""
        init.normal_(self.cls_token, std=std)
        init.normal_(self.type_embeddings, std=std)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        batch = embeddings.shape[0]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), embeddings + self.type_embeddings], dim=1)
        cls_present = torch.ones(batch, 1, dtype=torch.bool, device=mask.device)
        key_padding_mask = ~torch.cat([cls_present, effective_mask(mask)], dim=1)
        probs = None
        for i, block in enumerate(self.blocks):
            tokens, probs = block(tokens, key_padding_mask, need_weights=i == len(self.blocks) - 1)
        cls_to_modalities = probs[:, 0, 1:]
        weights = cls_to_modalities / cls_to_modalities.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        return FusionOutput(self.out(self.norm(tokens[:, 0])), weights)


def _append_one(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones_like(x[:, :1])], dim=1)


@register_fusion("tensor")
class TensorFusion(nn.Module):
    """Tensor fusion network (Zadeh et al., 2017): each vector is reduced to ``tensor_fusion_dim``, a 1 is
    appended, and the outer product of all (unimodal, bimodal, ... terms) feeds an MLP."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        t = config.tensor_fusion_dim
        self.reduce = nn.ModuleList(nn.Linear(dim, t) for _ in range(num_modalities))
        self.dropout = nn.Dropout(config.dropout)
        self.out = mlp(
            (t + 1) ** num_modalities, config.fusion_hidden_size, config.fusion_layers, config.dropout
        )

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        product = None
        for i, reduce in enumerate(self.reduce):
            z = _append_one(reduce(embeddings[:, i]))
            product = z if product is None else (product.unsqueeze(-1) * z.unsqueeze(1)).flatten(1)
        return FusionOutput(self.out(self.dropout(product)))


@register_fusion("low_rank_tensor")
class LowRankTensorFusion(nn.Module):
    """Low-rank multimodal fusion (Liu et al., 2018): the tensor-fusion weight factorised into ``fusion_rank``
    modality-specific factors, ``fused = sum_r w_r prod_i ([x_i; 1] W_i^r) + b`` -- linear in M."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        hidden, rank = config.fusion_hidden_size, config.fusion_rank
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(rank, dim + 1, hidden)) for _ in range(num_modalities)
        )
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        self.bias = nn.Parameter(torch.zeros(1, hidden))
        self.dropout = nn.Dropout(config.dropout)
        self.init_weights()

    def init_weights(self, std: float | None = None) -> None:
        """Xavier-normal factors and rank weights, zero bias (``std`` is not used)."""
        for factor in self.factors:
            init.xavier_normal_(factor)
        init.xavier_normal_(self.rank_weights)
        init.zeros_(self.bias)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> FusionOutput:
        product = None
        for i, factor in enumerate(self.factors):
            z = torch.matmul(_append_one(embeddings[:, i]), factor)  # [rank, B, H]
            product = z if product is None else product * z
        fused = torch.matmul(self.rank_weights, product.permute(1, 0, 2)).squeeze(1) + self.bias
        return FusionOutput(self.dropout(nn.functional.gelu(fused)))
