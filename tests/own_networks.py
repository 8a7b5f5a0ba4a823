"""Small user networks for the module-encoder tests, importable by path (``"own_networks:TextTransformer"``)."""

import torch
from torch import nn


class TextTransformer(nn.Module):
    """Token embedding + learned positions + ``nn.TransformerEncoder``; output ``[B, T, d_model]``."""

    def __init__(self, vocab_size=100, d_model=32, nhead=4, num_layers=2, max_length=64, batch_first=True):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(torch.randn(max_length, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, 64, dropout=0.1, batch_first=batch_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, input_ids, attention_mask=None):
        hidden = self.embed(input_ids) + self.positions[: input_ids.shape[1]]
        padding = None if attention_mask is None else ~attention_mask.bool()
        return self.encoder(hidden, src_key_padding_mask=padding)


class ScaledMLP(nn.Module):
    """An MLP whose input is multiplied by a non-persistent buffer (not in the state dict) set at construction."""

    def __init__(self, input_dim=12, output_dim=16):
        super().__init__()
        self.register_buffer("scale", torch.linspace(0.5, 2.0, input_dim), persistent=False)
        self.layers = nn.Sequential(nn.Linear(input_dim, 24), nn.ReLU(), nn.Linear(24, output_dim))

    def forward(self, values):
        return self.layers(values * self.scale)


def sensor_mlp(input_dim=100):
    """Scenario B's dense network: ``Sequential(Linear(100, 128), ReLU, Linear(128, 64))``."""
    return nn.Sequential(nn.Linear(input_dim, 128), nn.ReLU(), nn.Linear(128, 64))
