"""Token-level fusions: modalities attend to each other's token sequences (registered in ``TOKEN_FUSIONS``).

A pooled fusion sees one vector per modality, so it cannot answer a question whose answer depends on *which
part* of one modality another refers to ("the digit at the top left"). The fusions here take, per modality in
config order, the projected token sequence ``tokens[m]`` ``[B, T_m, D]``, its token mask ``token_masks[m]``
``[B, T_m]`` (True = real token) and the presence mask ``mask`` ``[B, M]`` (True = modality present). A missing
modality contributes no token (its rows may hold anything finite); a sample with one modality left still works
(every attention has a learned *null* key, so no softmax runs over an empty set).

Each returns a ``TokenFusionOutput``: ``fused`` ``[B, fusion_hidden_size]``, ``weights`` ``[B, M]`` (how much each
modality contributes, zero for missing ones: the importance metric) and, only with ``output_attentions=True``,
``attentions`` (token-level attention maps); the default path runs
``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) and never materialises a map.

This file is part of the model layer (copied next to the weights for ``trust_remote_code``): torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init

from .fusion_layers import TOKEN_FUSIONS, FusionOutput, feed_forward, masked_softmax, mlp

__all__ = [
    "TOKEN_FUSIONS",
    "BottleneckFusion",
    "CrossAttentionFusion",
    "PerceiverFusion",
    "TokenFusionOutput",
]

POSITION_EMBEDDINGS = ("sinusoidal", "none")
"""Values of ``FusionConfig.fusion_position_embeddings`` (see ``TokenFusionBase``)."""


@dataclass
class TokenFusionOutput(FusionOutput):
    """``FusionOutput`` plus ``attentions``: a tuple of ``[B, heads, queries, keys]`` maps per attention layer
    (only with ``output_attentions=True``, else ``None``); each fusion's docstring says what the axes hold."""

    attentions: tuple[torch.Tensor, ...] | None = None


class MaskedAttention(nn.Module):
    """Multi-head attention of ``queries`` ``[B, Q, D]`` over ``keys`` ``[B, K, D]`` (``key_mask`` ``[B, K]``, True =
    attend) plus one learned null key/value that is always attended, so a row with no valid key is well defined.

    Runs SDPA; with ``need_weights`` it computes the probabilities explicitly and also returns them as
    ``[B, heads, Q, 1 + K]`` (column 0 = the null key)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"`projection_dim` ({dim}) must be divisible by `fusion_heads` ({heads})")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.null_kv = nn.Parameter(torch.zeros(1, 1, dim))
        self.dropout = dropout

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, L, d]

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        key_mask: torch.Tensor,
        need_weights: bool = False,
        values: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch = keys.shape[0]
        keys = torch.cat([self.null_kv.to(keys.dtype).expand(batch, -1, -1), keys], dim=1)
        allowed = torch.cat([key_mask.new_ones(batch, 1), key_mask], dim=1)[:, None, None, :]
        q = self._split(self.q_proj(queries))
        k, v = (self._split(x) for x in self.kv_proj(keys).chunk(2, dim=-1))
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
            probs = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(dim=-1)
            attended = F.dropout(probs, dropout, self.training) @ v
        else:
            probs = None
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)
        return self.out_proj(attended.transpose(1, 2).flatten(2)), probs


class TokenBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x), LN(context))``, then ``x + MLP(LN(x))``; ``context=None`` = self-attention."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = MaskedAttention(dim, heads, dropout)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = feed_forward(dim, dropout)

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.norm_q(x)
        if context is None:
            context, context_mask, kv = x, x_mask, self.norm_kv(x)
        else:
            kv = self.norm_kv(context)
        attended, probs = self.attn(h, kv, context_mask, need_weights)
        x = x + attended
        return x + self.mlp(self.norm_mlp(x)), probs


def masked_mean(tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``tokens`` ``[B, T, D]`` over real tokens (``token_mask`` ``[B, T]``); zeros for a row with none."""
    weights = token_mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def present_token_masks(token_masks: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
    """Token masks with every token of a missing modality switched off."""
    return [m.bool() & mask[:, i : i + 1] for i, m in enumerate(token_masks)]


class WeightedCombine(nn.Module):
    """``weights = softmax_m(v^T tanh(W s_m))`` over present modalities' summaries ``s`` ``[B, M, D]``, and
    ``sum_m weights_m s_m`` ``[B, D]`` (a missing modality's summary gets exactly zero weight)."""

    def __init__(self, dim: int):
        super().__init__()
        self.score_proj = nn.Linear(dim, dim)
        self.score = nn.Linear(dim, 1, bias=False)

    def forward(self, summaries: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = masked_softmax(self.score(torch.tanh(self.score_proj(summaries))).squeeze(-1), mask)
        # where() and not a product: a missing modality's summary must not leak even as 0 * inf
        summaries = torch.where(weights.unsqueeze(-1) > 0, summaries, torch.zeros_like(summaries))
        return (weights.unsqueeze(-1) * summaries).sum(dim=1), weights


def sinusoidal_positions(token_mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position features (Vaswani et al., 2017, as used by MulT) ``[B, T, dim]`` of each token's index
    among the *real* tokens of its row (``cumsum(token_mask) - 1``), so padding, wherever it sits, never shifts a
    real token's position: a sample alone and in a padded batch get the same features."""
    positions = (token_mask.long().cumsum(dim=1) - 1).clamp(min=0).float()
    half = dim // 2
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(half, device=token_mask.device, dtype=torch.float32) / max(half, 1)
    )
    angles = positions.unsqueeze(-1) * frequencies
    features = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return F.pad(features, (0, dim - 2 * half))


class TokenFusionBase(nn.Module):
    """Shared parts: learned modality-type embeddings, per-modality position embeddings, the output MLP.
    Subclasses are registered in ``TOKEN_FUSIONS``, which tells the model to hand over token sequences instead of
    pooled vectors.

    ``config.fusion_position_embeddings``: ``"sinusoidal"`` (default) adds to each modality's tokens the
    sinusoidal features of their index among that row's real tokens, through a learned per-modality linear map
    ``position_proj`` ``[M, D, D]`` (MulT adds sinusoidal position embeddings to every modality's sequence; the map
    lets each modality scale them to its own token space, so fixed unit-scale features do not drown the projected
    tokens), so a fusion can tell *where* a token is (which image cell, which word)
    even when the encoder's final tokens no longer say it; ``"none"``: type embeddings only."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__()
        self.type_embeddings = nn.Parameter(torch.zeros(num_modalities, dim))
        self.position_embeddings = getattr(config, "fusion_position_embeddings", "sinusoidal")
        if self.position_embeddings not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`fusion_position_embeddings` must be one of {POSITION_EMBEDDINGS}, got {self.position_embeddings!r}"
            )
        if self.position_embeddings == "sinusoidal":  # filled by init_weights
            self.position_proj = nn.Parameter(torch.zeros(num_modalities, dim, dim))
        self.out = mlp(dim, config.fusion_hidden_size, 1, config.dropout)

    def init_weights(self, std: float) -> None:
        """Normal(0, ``std``) type embeddings, latents / bottleneck tokens (distinct, else they stay
        interchangeable), null keys and ``position_proj`` (like a linear layer's weight); the linear and norm layers are initialised by the model's
        ``_init_weights``. Uses ``transformers.initialization`` (guarded against overwriting loaded weights)."""
        for name in ("type_embeddings", "latents", "bottleneck"):
            if hasattr(self, name):
                init.normal_(getattr(self, name), std=std)
        for module in self.modules():
            if isinstance(module, MaskedAttention):
                init.normal_(module.null_kv, std=std)
        if hasattr(self, "position_proj"):
            init.normal_(self.position_proj, std=std)

    def typed(self, tokens: list[torch.Tensor], token_masks: list[torch.Tensor]) -> list[torch.Tensor]:
        """``tokens[m] + type_m (+ position_proj_m(sinusoid(index among real tokens)))``, each ``[B, T_m, D]``."""
        typed = [t + self.type_embeddings[i].to(t.dtype) for i, t in enumerate(tokens)]
        if self.position_embeddings == "none":
            return typed
        return [
            t
            + sinusoidal_positions(token_masks[i], t.shape[-1]).to(t.dtype)
            @ self.position_proj[i].to(t.dtype)
            for i, t in enumerate(typed)
        ]


@TOKEN_FUSIONS.register("cross_attention")
class CrossAttentionFusion(TokenFusionBase):
    """Cross-modal transformer (MulT; Tsai et al., 2019, "Multimodal Transformer for Unaligned Multimodal
    Language Sequences", ACL). For each target modality ``m``, ``fusion_layers`` blocks whose queries are ``m``'s
    tokens ``[B, T_m, D]`` and whose keys/values are the other present modalities' tokens (concatenated, with
    type embeddings); each target's output is mean-pooled over its real tokens and the summaries are combined
    with learned weights over the present modalities (``weights`` ``[B, M]``).

    ``attentions``: per target modality and layer (target-major), ``[B, heads, T_m, 1 + sum_{n != m} T_n]``
    (key 0 = the null key, then the other modalities' tokens in config order)."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__(num_modalities, dim, config)
        self.targets = nn.ModuleList(
            nn.ModuleList(
                TokenBlock(dim, config.fusion_heads, config.dropout) for _ in range(config.fusion_layers)
            )
            for _ in range(num_modalities)
        )
        self.norm = nn.LayerNorm(dim)
        self.combine = WeightedCombine(dim)

    def forward(
        self,
        tokens: list[torch.Tensor],
        token_masks: list[torch.Tensor],
        mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> TokenFusionOutput:
        token_masks = present_token_masks(token_masks, mask)
        typed = self.typed(tokens, token_masks)
        summaries, attentions = [], []
        for m, blocks in enumerate(self.targets):
            others = [n for n in range(len(tokens)) if n != m]
            context = torch.cat([typed[n] for n in others], dim=1) if others else typed[m][:, :0]
            context_mask = (
                torch.cat([token_masks[n] for n in others], dim=1) if others else token_masks[m][:, :0]
            )
            x = typed[m]
            for block in blocks:
                x, probs = block(x, token_masks[m], context, context_mask, output_attentions)
                attentions.append(probs)
            summaries.append(masked_mean(self.norm(x), token_masks[m]))
        combined, weights = self.combine(torch.stack(summaries, dim=1), mask)
        return TokenFusionOutput(
            self.out(combined), weights, tuple(attentions) if output_attentions else None
        )


@TOKEN_FUSIONS.register("bottleneck")
class BottleneckFusion(TokenFusionBase):
    """Attention bottlenecks (MBT; Nagrani et al., 2021, "Attention Bottlenecks for Multimodal Fusion", NeurIPS).
    ``fusion_bottleneck_tokens`` shared tokens ``[B, N_b, D]``; each of the ``fusion_layers`` layers runs every
    present modality's tokens plus the bottleneck tokens through that modality's own block (self-attention over
    ``[tokens_m; bottleneck]``), then the bottleneck becomes the mean of the modalities' updated bottlenecks over
    the modalities present in the sample, so cross-modal information flows only through the bottleneck. Output:
    the modality summaries (mean over each stream's real tokens) combined with learned weights (``weights``
    ``[B, M]``), plus the mean bottleneck token.

    ``attentions``: per layer and modality (layer-major), ``[B, heads, T_m + N_b, 1 + T_m + N_b]`` (key 0 = null)."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__(num_modalities, dim, config)
        self.bottleneck = nn.Parameter(torch.zeros(1, config.fusion_bottleneck_tokens, dim))
        self.layers = nn.ModuleList(
            nn.ModuleList(TokenBlock(dim, config.fusion_heads, config.dropout) for _ in range(num_modalities))
            for _ in range(config.fusion_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.combine = WeightedCombine(dim)

    def forward(
        self,
        tokens: list[torch.Tensor],
        token_masks: list[torch.Tensor],
        mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> TokenFusionOutput:
        token_masks = present_token_masks(token_masks, mask)
        streams = self.typed(tokens, token_masks)
        batch, n_b = mask.shape[0], self.bottleneck.shape[1]
        bottleneck = self.bottleneck.to(streams[0].dtype).expand(batch, -1, -1)
        b_mask = mask.new_ones(batch, n_b)
        share = mask.to(bottleneck.dtype) / mask.sum(dim=1, keepdim=True).clamp(min=1).to(bottleneck.dtype)
        attentions = []
        for blocks in self.layers:
            updates = []
            for m, block in enumerate(blocks):
                x = torch.cat([streams[m], bottleneck], dim=1)
                x, probs = block(
                    x, torch.cat([token_masks[m], b_mask], dim=1), need_weights=output_attentions
                )
                attentions.append(probs)
                streams[m] = x[:, :-n_b]
                updates.append(
                    torch.where(mask[:, m, None, None], x[:, -n_b:], torch.zeros_like(x[:, -n_b:]))
                )
            averaged = sum(share[:, m, None, None] * u for m, u in enumerate(updates))
            none_present = ~mask.any(dim=1)[:, None, None]
            bottleneck = torch.where(none_present, bottleneck, averaged)
        summaries = torch.stack([masked_mean(self.norm(s), token_masks[m]) for m, s in enumerate(streams)], 1)
        combined, weights = self.combine(summaries, mask)
        fused = self.out(combined + self.norm(bottleneck).mean(dim=1))
        return TokenFusionOutput(fused, weights, tuple(attentions) if output_attentions else None)


@TOKEN_FUSIONS.register("perceiver")
class PerceiverFusion(TokenFusionBase):
    """Latent cross-attention (Perceiver; Jaegle et al., 2021, "Perceiver: General Perception with Iterative
    Attention", ICML). A learned latent array ``[B, fusion_latent_tokens, D]``; each of the ``fusion_layers``
    layers cross-attends from the latents to all present modalities' tokens (concatenated, with modality-type
    embeddings) and then self-attends among the latents. ``fused = MLP(mean latent)``.

    ``weights`` ``[B, M]``: the share of the first cross-attention's probability mass (averaged over heads and
    latents, the null key left out) on each modality's tokens, computed with the same fused SDPA call pattern
    (attention over one-hot modality indicators as values), so it needs no attention map.

    ``attentions``: per layer, the cross-attention ``[B, heads, N_lat, 1 + sum_m T_m]`` (key 0 = null, then the
    modalities' tokens in config order) followed by the latent self-attention ``[B, heads, N_lat, 1 + N_lat]``."""

    def __init__(self, num_modalities: int, dim: int, config):
        super().__init__(num_modalities, dim, config)
        self.latents = nn.Parameter(torch.zeros(1, config.fusion_latent_tokens, dim))
        self.cross = nn.ModuleList(
            TokenBlock(dim, config.fusion_heads, config.dropout) for _ in range(config.fusion_layers)
        )
        self.self_attn = nn.ModuleList(
            TokenBlock(dim, config.fusion_heads, config.dropout) for _ in range(config.fusion_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def _modality_mass(
        self, latents: torch.Tensor, context: torch.Tensor, context_mask, owner
    ) -> torch.Tensor:
        """``[B, M]``: mean (over heads and latents) attention mass of the first cross-attention per modality."""
        block = self.cross[0]
        attn = block.attn
        batch = context.shape[0]
        q = attn._split(attn.q_proj(block.norm_q(latents)))
        kv = block.norm_kv(context)
        kv = torch.cat([attn.null_kv.to(kv.dtype).expand(batch, -1, -1), kv], dim=1)
        k = attn._split(attn.kv_proj(kv).chunk(2, dim=-1)[0])
        onehot = F.one_hot(owner, self.type_embeddings.shape[0]).to(q.dtype)  # [K, M]
        onehot = torch.cat([onehot.new_zeros(1, onehot.shape[1]), onehot], dim=0)
        values = onehot[None, None].expand(batch, q.shape[1], -1, -1)
        allowed = torch.cat([context_mask.new_ones(batch, 1), context_mask], dim=1)[:, None, None, :]
        mass = F.scaled_dot_product_attention(q, k, values, attn_mask=allowed).mean(dim=(1, 2))
        return mass / mass.sum(dim=-1, keepdim=True).clamp(min=1e-12)

    def forward(
        self,
        tokens: list[torch.Tensor],
        token_masks: list[torch.Tensor],
        mask: torch.Tensor,
        output_attentions: bool = False,
    ) -> TokenFusionOutput:
        token_masks = present_token_masks(token_masks, mask)
        context = torch.cat(self.typed(tokens, token_masks), dim=1)
        context_mask = torch.cat(token_masks, dim=1)
        owner = torch.cat([torch.full((t.shape[1],), i, device=mask.device) for i, t in enumerate(tokens)])
        latents = self.latents.to(context.dtype).expand(mask.shape[0], -1, -1)
        latent_mask = mask.new_ones(latents.shape[:2])
        with torch.no_grad():
            weights = self._modality_mass(latents, context, context_mask, owner)
        attentions = []
        for cross, self_attn in zip(self.cross, self.self_attn, strict=True):
            latents, probs = cross(latents, latent_mask, context, context_mask, output_attentions)
            attentions.append(probs)
            latents, probs = self_attn(latents, latent_mask, need_weights=output_attentions)
            attentions.append(probs)
        fused = self.out(self.norm(latents).mean(dim=1))
        return TokenFusionOutput(fused, weights, tuple(attentions) if output_attentions else None)
