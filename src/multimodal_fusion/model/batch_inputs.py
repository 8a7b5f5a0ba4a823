"""A fusion model's batch: split the flat ``{name}_{field}`` keyword inputs per modality, validate them, build the
``[B, M]`` presence mask and apply modality dropout. Pure functions of the config and the tensors.

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch and sibling modules of this folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .configuration_fusion import FusionConfig
from .encoder_adapters import EncoderAdapter
from .input_validation import InputLimits
from .modality_kinds import get_kind

SPECIAL_FIELDS = ("embeds", "token_embeds", "token_mask", "mask")
"""Fields every modality takes besides its encoder's: ``{name}_embeds`` (a precomputed pooled vector ``[B,
pooled_dim]`` that skips the encoder), ``{name}_token_embeds`` / ``{name}_token_mask`` (a precomputed token
sequence ``[B, T, pooled_dim]`` after ``max_tokens`` and its ``[B, T]`` mask) and ``{name}_mask`` (``[B]`` bool,
False = modality missing)."""
CACHED_FIELDS = ("embeds", "token_embeds")

HIDDEN_FIELDS = ("hidden_states", "hidden_mask", "hidden_layer")
"""Cached hidden states entering block ``hidden_layer + 1`` (``[B, T, D]``, ``[B, T]`` bool, ``[B]`` int), given
instead of encoder inputs by the frozen-prefix cache (see ``prefix_layers.py``)."""


def split_inputs(
    config: FusionConfig, inputs: Mapping[str, Any], adapters: Mapping[str, EncoderAdapter]
) -> dict[str, dict[str, Any]]:
    """Group ``{name}_{field}`` inputs by modality (``None`` values dropped): ``name -> {field: value}`` for every
    modality of ``config``, in config order. ``adapters`` (name -> encoder adapter) say which fields each
    modality's encoder takes.

    Raises:
        ValueError: a key that belongs to no modality, a field the modality's encoder does not take, both
            ``{name}_embeds`` and encoder inputs, or encoder inputs without the kind's required fields.
    """
    names = sorted(config.modalities, key=len, reverse=True)  # longest first: "image_2" before "image"
    batch: dict[str, dict[str, Any]] = {name: {} for name in config.modalities}
    for key, value in inputs.items():
        if value is None:
            continue
        owner = next((n for n in names if key.startswith(n + "_")), None)
        if owner is None:
            raise ValueError(
                f"unexpected input '{key}': batch keys are '{{modality}}_{{field}}' for modalities "
                f"{config.modality_names}, plus 'labels'"
            )
        batch[owner][key[len(owner) + 1 :]] = value
    for name, fields in batch.items():
        kind = config.modalities[name].kind
        required, optional = adapters[name].input_fields, adapters[name].optional_fields
        allowed = (*required, *optional, *SPECIAL_FIELDS, *HIDDEN_FIELDS)
        for field in fields:
            if field not in allowed:
                raise ValueError(
                    f"modality '{name}' ({kind}): unexpected field '{name}_{field}'; expected "
                    f"{[f'{name}_{f}' for f in allowed]}"
                )
        encoder_fields = set(fields) - set(SPECIAL_FIELDS) - set(HIDDEN_FIELDS)
        if encoder_fields and "embeds" in fields:
            raise ValueError(f"modality '{name}': give either '{name}_embeds' or encoder inputs, not both")
        if "token_embeds" in fields and (encoder_fields or "embeds" in fields):
            raise ValueError(
                f"modality '{name}': give one of '{name}_embeds', '{name}_token_embeds' or encoder inputs"
            )
        if "token_mask" in fields and "token_embeds" not in fields:
            raise ValueError(f"modality '{name}': '{name}_token_mask' needs '{name}_token_embeds'")
        hidden = [f for f in HIDDEN_FIELDS if f in fields]
        if hidden and (encoder_fields or "embeds" in fields):
            raise ValueError(
                f"modality '{name}': give either '{name}_hidden_states' or '{name}_embeds' or encoder inputs"
            )
        if hidden and len(hidden) != len(HIDDEN_FIELDS):
            raise ValueError(
                f"modality '{name}': cached hidden states need all of {[f'{name}_{f}' for f in HIDDEN_FIELDS]}"
            )
        if encoder_fields and not set(required) <= encoder_fields:
            raise ValueError(
                f"modality '{name}' ({kind}): missing field(s) {[f'{name}_{f}' for f in required]}"
            )
    return batch


def batch_size_of(
    config: FusionConfig, batch: Mapping[str, Mapping[str, Any]], labels: torch.Tensor | None
) -> int:
    """The common first dimension of every tensor in ``batch`` (and of ``labels``).

    Raises:
        ValueError: a field that is not a tensor or has no batch dimension, an empty batch, or sizes that differ
            (the message lists every field's size).
    """
    sizes = {"labels": labels.shape[0]} if labels is not None else {}
    for name, fields in batch.items():
        for field, value in fields.items():
            if not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"modality '{name}': field '{name}_{field}' must be a torch.Tensor, got {type(value).__name__}"
                )
            if value.dim() == 0:
                raise ValueError(f"modality '{name}': field '{name}_{field}' needs a batch dimension")
            sizes[f"{name}_{field}"] = value.shape[0]
    if not sizes or set(sizes) == {"labels"}:
        raise ValueError(f"the batch holds no input for any modality of {config.modality_names}")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"inconsistent batch sizes (field: size): {sizes}")
    return next(iter(sizes.values()))


def check_fields(
    config: FusionConfig,
    name: str,
    fields: Mapping[str, torch.Tensor],
    pooled_dim: int,
    adapter: EncoderAdapter,
    limits: InputLimits | None = None,
) -> None:
    """Check the shapes and values of modality ``name``'s fields (``pooled_dim``: its encoder's output width;
    ``adapter``: its encoder family, which checks the encoder inputs' shapes; ``limits``: its encoder's value
    limits, see ``input_validation``).

    Raises:
        ValueError: naming the modality, the field, the expected shape and the shape given; or a bad value
            (NaN/inf in any float field, a token id or length beyond the encoder's limits, a non-0/1 attention
            mask, an audio clip shorter than the receptive field), naming the row and the limit.
    """
    spec = config.modalities[name]
    kind = spec.kind

    def fail(field: str, expected: str, value: torch.Tensor) -> None:
        raise ValueError(
            f"modality '{name}' ({kind}): field '{name}_{field}' must be {expected}, got shape {tuple(value.shape)}"
        )

    if "embeds" in fields and (fields["embeds"].dim() != 2 or fields["embeds"].shape[1] != pooled_dim):
        fail("embeds", f"[batch, {pooled_dim}] (the pooled encoder output)", fields["embeds"])
    tokens = fields.get("token_embeds")
    if tokens is not None and (tokens.dim() != 3 or tokens.shape[2] != pooled_dim):
        fail("token_embeds", f"[batch, tokens, {pooled_dim}] (encoder tokens)", tokens)
    if "token_mask" in fields and fields["token_mask"].shape != tokens.shape[:2]:
        fail("token_mask", f"[batch, tokens] = {tuple(tokens.shape[:2])}", fields["token_mask"])
    if "hidden_states" in fields:
        hidden, mask = fields["hidden_states"], fields["hidden_mask"]
        if hidden.dim() != 3 or mask.shape != hidden.shape[:2] or hidden.shape[2] != pooled_dim:
            fail(
                "hidden_states", f"[batch, tokens, {pooled_dim}] with a [batch, tokens] 'hidden_mask'", hidden
            )
    if "mask" in fields and fields["mask"].dim() != 1:
        fail("mask", "[batch] booleans (False = modality missing)", fields["mask"])
    adapter.check_fields(name, dict(fields))
    get_kind(kind).check_values(name, dict(fields), limits or InputLimits())


def presence(name: str, fields: Mapping[str, torch.Tensor], batch_size: int, device: Any) -> torch.Tensor:
    """``[B]`` bool: which samples have modality ``name`` (its ``{name}_mask``, else all when it has inputs).

    Raises:
        ValueError: ``{name}_mask`` marks samples present while the batch has no input for ``name``.
    """
    has_input = bool(set(fields) - {"mask"})
    if "mask" not in fields:
        return torch.full((batch_size,), has_input, dtype=torch.bool, device=device)
    mask = fields["mask"].to(device=device, dtype=torch.bool)
    if not has_input and mask.any():
        raise ValueError(
            f"modality '{name}': '{name}_mask' marks samples present but the batch has no {name} input"
        )
    return mask


def drop_modalities(masks: torch.Tensor, p: float) -> torch.Tensor:
    """Modality dropout: mask each present modality of ``masks`` ``[B, M]`` with probability ``p``, keeping at
    least one (chosen at random among the present ones) per sample that had any."""
    keep = torch.rand(masks.shape, device=masks.device) >= p
    dropped = masks & keep
    emptied = masks.any(dim=1) & ~dropped.any(dim=1)
    if emptied.any():
        scores = torch.rand(masks.shape, device=masks.device).masked_fill(~masks, -1.0)
        rescue = nn.functional.one_hot(scores.argmax(dim=1), masks.shape[1]).bool()
        dropped = dropped | (rescue & emptied.unsqueeze(1))
    return dropped
