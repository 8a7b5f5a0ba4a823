"""L2-SP (Li et al., 2018): a penalty pulling trainable encoder weights toward their pretrained values, against
catastrophic forgetting: ``l2sp_weight * sum_i ||w_i - w0_i||^2`` over trainable encoder parameters.

The pretrained reference ``w0`` is copied only for parameters that train. A frozen parameter still holds its
pretrained value, so its copy is taken at the moment it is unfrozen: frozen parts cost no extra memory.
"""

from __future__ import annotations

import torch
from torch import nn


class L2SPPenalty:
    """Holds the pretrained reference of trainable encoder parameters and computes the penalty."""

    def __init__(self, weight: float):
        self.weight = weight
        self.reference: dict[str, torch.Tensor] = {}

    def capture(self, model: nn.Module) -> None:
        """Copy the current value of every trainable encoder parameter that has no reference yet; call it before
        any update of those parameters (at train start and whenever an encoder is unfrozen)."""
        for name, param in model.named_parameters():
            if name.startswith("encoders.") and param.requires_grad and name not in self.reference:
                self.reference[name] = param.detach().clone()

    def set_reference(self, name: str, value: torch.Tensor) -> None:
        """Use ``value`` as the pretrained value of parameter ``name`` (e.g. re-read from the encoder's files)."""
        self.reference[name] = value.detach().clone()

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """The penalty (a scalar tensor in the graph of the trainable encoder parameters)."""
        self.capture(model)
        terms = [
            ((param - self.reference[name].to(param.dtype)) ** 2).sum()
            for name, param in model.named_parameters()
            if param.requires_grad and name in self.reference
        ]
        if not terms:
            return torch.zeros((), device=next(model.parameters()).device)
        return self.weight * torch.stack([t.float() for t in terms]).sum()
