"""The encoder adapter of a ``module`` modality (your own PyTorch network, ``module_encoder.py``): its batch
fields per kind, shape checks, forward and output width, so the model treats it like any encoder family
(``encoder_adapters``). Chosen by ``adapter_for`` whenever the spec has ``module`` (first entry of
``encoder_adapters.ADAPTER_ORDER``).

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch, transformers and sibling modules of this folder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig

from .adapter_base import EncoderAdapter, EncoderOutput, register_adapter
from .encoder_layout import EncoderLayout
from .modality_kinds import get_kind


@register_adapter("module")
class ModuleAdapter(EncoderAdapter):
    """Your own network wrapped in a [`ModuleEncoder`] (built by ``module_encoder.build_module_encoder``, which
    also measures ``output_dim`` and the default pooling into the spec). ``spec`` is the modality's
    ``ModalitySpec`` itself, read when the encoder exists (its ``output_dim`` is filled at build time)."""

    default_pooling = None
    pooler_prefixes = ()

    def __init__(self, config: PretrainedConfig | None, spec: Any = None):
        super().__init__(config, spec)
        self.kind = spec.kind
        self.input_fields, self.optional_fields = get_kind(self.kind).module_fields

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        """Whenever the modality spec has ``module`` (whatever the kind)."""
        return getattr(spec, "network", None) is not None

    def build(self) -> nn.Module:
        raise RuntimeError(
            "a module encoder is built by module_encoder.build_module_encoder (it needs the name)"
        )

    def output_dim(self, encoder: nn.Module) -> int:
        return int(self.spec.output_dim)

    def block_list(self, encoder: nn.Module) -> str | None:
        return self.spec.network.blocks

    def layout(self, name: str, encoder: nn.Module, spec: Any) -> EncoderLayout:
        """``blocks`` / ``trainable_modules`` of the spec over the wrapped network (``module_encoder``)."""
        from .module_encoder import (
            module_layout,  # module_encoder imports configuration_fusion, which imports this file
        )

        return module_layout(name, encoder, spec)

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        """Shapes: ``pixel_values`` ``[B, 3, H, W]``, ``input_features`` ``[B, T, input_dim]``, ``input_ids``
        ``[B, T]`` integers, ``values`` ``[B, input_dim]``; masks ``[B, T]`` like the main input."""
        width = self.spec.input_dim
        main = self.input_fields[0]
        expected = {
            "pixel_values": (4, "[batch, 3, height, width]"),
            "input_features": (3, f"[batch, frames, {width or 'features'}] floats"),
            "input_ids": (2, "[batch, tokens] integer token ids"),
            "values": (2, f"[batch, {width}] floats"),
        }[main]
        value = fields.get(main)
        if value is not None:
            bad = value.dim() != expected[0]
            bad = bad or (main == "pixel_values" and value.shape[1] != 3)
            bad = bad or (main == "input_ids" and value.is_floating_point())
            bad = bad or (
                main in ("input_features", "values") and width is not None and value.shape[-1] != width
            )
            if bad:
                raise ValueError(
                    f"modality '{name}' ({self.kind}): field '{name}_{main}' must be {expected[1]}, "
                    f"got shape {tuple(value.shape)}"
                )
        for field in (
            "attention_mask",
            "token_type_ids",
        ):  # [batch, steps], also for frames [batch, steps, F]
            if value is not None and field in fields and fields[field].shape != value.shape[:2]:
                raise ValueError(
                    f"modality '{name}' ({self.kind}): field '{name}_{field}' must be the shape of "
                    f"'{name}_{main}' {tuple(value.shape[:2])}, got shape {tuple(fields[field].shape)}"
                )

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        """``ModuleEncoder`` output: tokens ``[B, T, D]`` with their mask, or an already pooled ``[B, D]``."""
        hidden, mask = encoder(fields)
        return EncoderOutput(hidden, mask)

    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return False
