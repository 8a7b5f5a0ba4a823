"""Optimizer parameter groups of a fusion model: the new layers at one rate, each encoder at its own, and
optionally layer-wise decay inside each encoder (each block below the top gets ``decay x`` the rate of the one
above; embeddings lowest).

Every parameter is placed in a group from the start, frozen ones too, so that unfreezing an encoder later
takes effect without rebuilding the optimizer (AdamW skips parameters whose ``grad`` is None), and the
learning-rate scheduler scales every group alike.
"""

from __future__ import annotations

from typing import Any

from torch import nn

HEAD_GROUP = "fusion_head"
"""Group name of the new layers (pooling, projections, fusion, head, placeholders)."""


def no_decay_names(model: nn.Module) -> set[str]:
    """Biases and normalisation weights: no weight decay (transformers' rule: norm modules + name patterns)."""
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)", r"\.bn\d*\."]
    norms = [nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d]
    decay = set(get_parameter_names(model, norms, patterns))
    return {name for name, _ in model.named_parameters()} - decay


def encoder_depths(model: nn.Module, name: str) -> tuple[dict[str, int], int]:
    """Depth of each parameter of modality ``name``'s encoder: 0 = embeddings (and wav2vec2's conv front-end),
    ``i`` = block ``i`` (1 = lowest), the final norm and pooler at the top block's depth. Returns
    ``(depths, top)``."""
    layout = model.encoder_layout(name)
    top = max(len(layout.blocks), 1)
    depths = {n: 0 for n in layout.embeddings + layout.feature_encoder}
    for i, block in enumerate(layout.blocks, start=1):
        depths.update({n: i for n in block})
    depths.update({n: top for n in layout.final + layout.pooler + layout.unused if n not in depths})
    return depths, top


def build_param_groups(
    model: nn.Module,
    learning_rate: float,
    weight_decay: float,
    encoder_learning_rate: float | None = None,
    layerwise_lr_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Groups ``{"name", "params", "lr", "weight_decay"}``.

    The new layers train at ``learning_rate``; an encoder at its spec's ``learning_rate``, else
    ``encoder_learning_rate``, else ``learning_rate``. With ``layerwise_lr_decay`` an encoder parameter at depth
    ``d`` (see [`encoder_depths`]) of ``top`` trains at ``rate * decay ** (top - d)``.
    """
    skip_decay = no_decay_names(model)
    base_rates: dict[str, float] = {}
    for name, spec in model.config.modalities.items():
        rate = spec.learning_rate
        if rate is None:
            rate = encoder_learning_rate if encoder_learning_rate is not None else learning_rate
        base_rates[name] = rate
    depth_tables = {name: encoder_depths(model, name) for name in model.config.modalities}
    buckets: dict[tuple[str, bool], dict[str, Any]] = {}
    for param_name, param in model.named_parameters():
        parts = param_name.split(".")
        if parts[0] == "encoders" and parts[1] in base_rates:
            owner, local = parts[1], ".".join(parts[2:])
            rate, label = base_rates[owner], owner
            if layerwise_lr_decay is not None:
                depths, top = depth_tables[owner]
                depth = depths.get(local, top)
                rate = rate * layerwise_lr_decay ** (top - depth)
                label = f"{owner}.{'embeddings' if depth == 0 else f'block{depth}'}"
        else:
            rate, label = learning_rate, HEAD_GROUP
        no_decay = param_name in skip_decay
        key = (label, no_decay)
        if key not in buckets:
            buckets[key] = {
                "name": f"{label}{'.no_decay' if no_decay else ''}",
                "params": [],
                "lr": rate,
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        buckets[key]["params"].append(param)
    return list(buckets.values())
