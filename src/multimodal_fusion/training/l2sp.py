"""L2-SP (Li et al., 2018): a penalty pulling trainable encoder weights toward their pretrained values, against
catastrophic forgetting: ``l2sp_weight * sum_i ||w_i - w0_i||^2`` over trainable encoder parameters.

``FusionTrainer`` applies it as a gradient, ``2 * l2sp_weight * (w - w0)`` added once per optimizer step after the
(DDP-synchronised) backward of the window's last micro-batch ([`L2SPPenalty.add_gradient`]): exactly the gradient of
adding the penalty to the step's loss, but independent of the gradient-accumulation split and of the number of
ranks, and without using parameters outside DDP's forward (which DDP rejects when a rank's batch leaves an encoder
unused).

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

    @torch.no_grad()
    def add_gradient(self, model: nn.Module, scale: float = 1.0) -> torch.Tensor:
        """Add the penalty's gradient ``2 * weight * (w - w0)`` (times ``scale``, e.g. a mixed-precision loss scale)
        to each trainable referenced parameter's ``.grad``; returns the penalty's value (float32 scalar)."""
        self.capture(model)
        total = torch.zeros((), device=next(model.parameters()).device)
        for name, param in model.named_parameters():
            if not param.requires_grad or name not in self.reference:
                continue
            difference = param - self.reference[name].to(param.dtype)
            total += (difference.float() ** 2).sum()
            gradient = (2 * self.weight * scale) * difference
            if param.grad is None:
                param.grad = gradient.to(param.dtype)
            else:
                param.grad.add_(gradient.to(param.grad.dtype))
        return self.weight * total
