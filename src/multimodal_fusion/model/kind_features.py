"""Kind ``features``: dense float vectors (``{name}_values`` ``[B, input_dim]``), read by a small MLP the fusion
model builds itself (``feature_encoder.FeatureEncoder``, ``hidden_sizes``). No sub-processor, no pooling, no
hidden states: token-level fusions see the encoded vector as one token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .modality_kind import (
    ModalityKind,
    check_input_dim,
    is_one_numeric_sample,
    module_input_width,
    processing_module,
    register_modality_kind,
)

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec


@register_modality_kind("features")
class FeaturesKind(ModalityKind):
    """Dense features: float vectors ``values`` ``[B, input_dim]``, encoded by an MLP."""

    batch_fields = (("values",), ())
    module_fields = (("values",), ())
    sequence_pooling = "mean"
    has_encoder = False
    pooled_only = True
    processor_description = "no processor"

    def needs_processor(self, spec: ProcessorSpec) -> bool:
        return False

    def processor_settings(self, name: str, spec: ProcessorSpec, processor: Any) -> dict[str, Any]:
        return {"input_dim": check_input_dim(name, spec.input_dim)}

    def module_processor_settings(
        self, name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
    ) -> dict[str, Any]:
        if not spec.input_dim:
            raise ValueError(
                f"modality '{name}': give `input_dim` (the width of each vector) or, for audio, a feature "
                "extractor (`processor` or `path`)"
            )
        return {"input_dim": spec.input_dim}

    def validate_spec(self, name: str, spec: Any) -> None:
        """``input_dim`` a positive integer; ``hidden_sizes`` (default ``[input_dim]``) positive integers; no
        pooling and no layer (an MLP has neither)."""
        for key in ("pooling", "layer"):
            if getattr(spec, key) is not None:
                raise ValueError(
                    f"modality '{name}': kind '{self.name}' is encoded by an MLP, which has no `{key}`; leave it out"
                )
        spec.input_dim = check_input_dim(name, spec.input_dim)
        sizes = spec.hidden_sizes if spec.hidden_sizes is not None else [spec.input_dim]
        if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
            raise ValueError(
                f"modality '{name}': `hidden_sizes` must be a non-empty list of positive integers"
            )
        spec.hidden_sizes = list(sizes)
        spec.pooling = None
        spec.layer = None

    # ------------------------------------------------------------------ samples
    def is_batch(self, value: Any) -> bool:
        """A 2-D array is a batch of vectors; a list of numbers is one vector."""
        if hasattr(value, "shape"):
            return len(value.shape) == 2
        return super().is_batch(value) and not is_one_numeric_sample(value)

    def decode(self, processor: Any, name: str, value: Any, options: Mapping[str, Any]) -> Any:
        """A finite float32 ``[input_dim]`` vector."""
        decode_vector = processing_module("module_processing").decode_vector
        return decode_vector(processor.modalities[name].input_dim, value)

    def batch(self, processor: Any, name: str, samples: list[Any]) -> dict[str, tuple[torch.Tensor, Any]]:
        dim = processor.modalities[name].input_dim
        if not samples:
            return {"values": (torch.zeros(0, dim), 0)}
        return {"values": (torch.stack([torch.from_numpy(vector) for vector in samples]).float(), 0)}

    def example_sample(self, spec: ProcessorSpec, length: int, rng: Any) -> Any:
        """A standard-normal ``[input_dim]`` vector."""
        return rng.standard_normal(spec.input_dim).astype("float32")

    def module_example_inputs(self, name: str, spec: Any, network: nn.Module) -> dict[str, torch.Tensor]:
        return {"values": torch.zeros(2, module_input_width(name, spec, network))}
