"""Encoder of a ``features`` modality: an MLP over a dense float vector (sensor readings, tabular data)."""

from __future__ import annotations

import torch
from torch import nn


class FeatureEncoder(nn.Module):
    """LayerNorm over the raw vector (features arrive in arbitrary units), then Linear + GELU + Dropout per
    entry of ``hidden_sizes``. Input ``[B, input_dim]``, output ``[B, hidden_sizes[-1]]``."""

    def __init__(self, input_dim: int, hidden_sizes: list[int], dropout: float = 0.0):
        super().__init__()
        self.input_dim = input_dim
        self.input_norm = nn.LayerNorm(input_dim)
        layers: list[nn.Module] = []
        previous = input_dim
        for size in hidden_sizes:
            layers += [nn.Linear(previous, size), nn.GELU(), nn.Dropout(dropout)]
            previous = size
        self.layers = nn.Sequential(*layers)
        self.output_dim = previous

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return self.layers(self.input_norm(values))
