"""Optimizer parameter groups of a fusion model: one learning rate for the new layers, one per encoder.

Every parameter is placed in a group from the start, frozen ones too, so that unfreezing an encoder later
takes effect without rebuilding the optimizer (AdamW skips parameters whose ``grad`` is None).
"""

from __future__ import annotations

from typing import Any

from torch import nn

HEAD_GROUP = "fusion_head"
"""Group name of the new layers (pooling, projections, fusion, head, placeholders)."""


def no_decay_names(model: nn.Module) -> set[str]:
    """Biases and normalisation weights: no weight decay (transformers' rule: LayerNorm modules + name patterns)."""
    from transformers.trainer_pt_utils import get_parameter_names

    patterns = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)", r"\.bn\d*\."]
    norms = [nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d]
    decay = set(get_parameter_names(model, norms, patterns))
    return {name for name, _ in model.named_parameters()} - decay


def build_param_groups(
    model: nn.Module, learning_rate: float, weight_decay: float, encoder_learning_rate: float | None = None
) -> list[dict[str, Any]]:
    """Groups ``{"name", "params", "lr", "weight_decay"}``: the new layers at ``learning_rate``, each encoder at
    its spec's ``learning_rate``, else ``encoder_learning_rate``, else ``learning_rate``."""
    skip_decay = no_decay_names(model)
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    rates: dict[str, float] = {HEAD_GROUP: learning_rate}
    for name, spec in model.config.modalities.items():
        rate = spec.get("learning_rate")
        rates[name] = (
            rate
            if rate is not None
            else encoder_learning_rate
            if encoder_learning_rate is not None
            else learning_rate
        )
    for param_name, param in model.named_parameters():
        parts = param_name.split(".")
        owner = parts[1] if parts[0] == "encoders" else HEAD_GROUP
        buckets.setdefault((owner, param_name in skip_decay), []).append(param)
    groups = []
    for (owner, no_decay), params in buckets.items():
        groups.append(
            {
                "name": f"{owner}{'.no_decay' if no_decay else ''}",
                "params": params,
                "lr": rates[owner],
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return groups
