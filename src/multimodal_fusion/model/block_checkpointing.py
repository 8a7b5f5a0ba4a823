"""Block-level activation checkpointing for any encoder: each block of the encoder's layout (``encoder_layout``)
runs under ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)`` whenever autograd records it, so
every family gets checkpointing with the same gradients, not only those where transformers or timm implement it
(ConvNeXt, ResNet, RegNet, EfficientNet, ALBERT, MPNet and your own networks included).

How it works, and what it keeps unchanged:

- The block's ``forward`` is replaced *on the module instance* by a [`CheckpointedForward`]; no wrapper module is
  inserted, so parameter names, ``state_dict`` keys and saved checkpoints stay exactly as they were. Hooks of the
  block stay outside the checkpoint (they run once), as in transformers' own layers.
- Positional and keyword arguments of any kind (masks, position embeddings, packed sequences) and outputs of any
  kind (tensors, tuples, ``ModelOutput``) pass through: non-reentrant checkpointing records every tensor the
  block uses. A caller asking for reentrant checkpointing gets non-reentrant (same gradients, and gradients
  reach trainable blocks above frozen inputs).
- A block runs plainly (nothing to recompute) when autograd does not record it: gradients disabled, or neither
  its parameters nor its inputs require grad (frozen blocks below the first trainable one). The test is made at
  each call, so freezing and unfreezing after enabling are followed.
- Backward's recomputation does not update running statistics a second time (BatchNorm buffers are restored
  after it), so a training step gives the same statistics as without checkpointing; dropout masks are the same
  (the checkpoint keeps the RNG state).
- Caches are switched off for a checkpointed call (``use_cache=False``, ``past_key_values=None``...), as in
  transformers' ``GradientCheckpointingLayer``: a recomputation would write them twice.
- A block that its parent never calls through ``forward`` (torchvision models cut at a ``feature_layer`` are FX
  graphs that inline their blocks) is replaced by the graph module holding it, checkpointed as one unit.

[`BlockCheckpointingMixin`] is what ``FusionModel.activation_checkpointing_enable`` / ``_disable`` (and the training
argument ``gradient_checkpointing`` / ``activation_checkpointing``) run. This file is copied next to the weights by
``save_pretrained`` (``trust_remote_code`` loading): it imports only torch, transformers and sibling files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.fx
import torch.utils.checkpoint
from torch import nn
from transformers.utils import logging

from .encoder_layout import block_module_names
from .modality_kinds import get_kind

CACHE_ARGUMENTS: dict[str, Any] = {
    "use_cache": False,
    "past_key_values": None,
    "past_key_value": None,
    "cache": None,
    "layer_past": None,
}
"""Keyword arguments set for a checkpointed call (when the caller passed them), so no cache is written twice."""

logger = logging.get_logger(__name__)

_RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _requires_grad(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.requires_grad
    if isinstance(value, (tuple, list)):
        return any(_requires_grad(v) for v in value)
    if isinstance(value, dict):
        return any(_requires_grad(v) for v in value.values())
    return False


@contextlib.contextmanager
def _kept_running_stats(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics of ``module``'s normalisation layers in training mode on exit."""
    saved = []
    for sub in module.modules():
        if sub.training and getattr(sub, "track_running_stats", False):
            for name in _RUNNING_STATS:
                buffer = getattr(sub, name, None)
                if isinstance(buffer, torch.Tensor):
                    saved.append((buffer, buffer.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class CheckpointedForward:
    """The instance ``forward`` of a checkpointed block: ``checkpoint(block's own forward, *args, **kwargs)``
    when autograd records the call, the block's own forward otherwise.

    Args:
        module: the block.
        function: the checkpoint function, called as ``function(run, *args, use_reentrant=False)``
            (``torch.utils.checkpoint.checkpoint`` or transformers' partial of it, which may carry other options).
        previous: an instance-level ``forward`` the block already had (called instead of the class's), or None.
    """

    def __init__(self, module: nn.Module, function: Callable[..., Any], previous: Callable[..., Any] | None):
        self.module = module
        self.function = function
        self.previous = previous

    def plain(self, *args: Any, **kwargs: Any) -> Any:
        """The block's own forward, not checkpointed."""
        if self.previous is not None:
            return self.previous(*args, **kwargs)
        return type(self.module).forward(self.module, *args, **kwargs)

    def records_grad(self, args: tuple, kwargs: dict[str, Any]) -> bool:
        """Whether autograd records this call: gradients on, and a parameter or an input requiring grad."""
        if not torch.is_grad_enabled():
            return False
        return any(p.requires_grad for p in self.module.parameters()) or _requires_grad((args, kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.records_grad(args, kwargs):
            return self.plain(*args, **kwargs)
        for key, value in CACHE_ARGUMENTS.items():
            if kwargs.get(key) is not None and kwargs[key] is not False:
                kwargs[key] = value
        return self.function(BlockRun(self, kwargs), *args, use_reentrant=False)


class BlockRun:
    """One checkpointed call of a block, the function handed to the checkpoint: its first run is the forward,
    later runs are backward's recomputation (which leaves running statistics as the forward left them)."""

    def __init__(self, forward: CheckpointedForward, kwargs: dict[str, Any]):
        self.forward = forward
        self.kwargs = kwargs
        self.runs = 0

    @property
    def module(self) -> nn.Module:
        """The block this call runs."""
        return self.forward.module

    def __call__(self, *args: Any) -> Any:
        self.runs += 1
        if self.runs == 1:
            return self.forward.plain(*args, **self.kwargs)
        with _kept_running_stats(self.forward.module):
            return self.forward.plain(*args, **self.kwargs)


def _called_path(encoder: nn.Module, path: str) -> str:
    """``path``, or the path of the FX graph module above it when that graph inlines it (never calls it)."""
    parts = path.split(".") if path else []
    for depth in range(len(parts)):
        owner_path = ".".join(parts[:depth])
        owner = encoder.get_submodule(owner_path)
        if isinstance(owner, torch.fx.GraphModule):
            relative = ".".join(parts[depth:])
            called = {node.target for node in owner.graph.nodes if node.op == "call_module"}
            if relative not in called:
                return owner_path
    return path


def _called_modules(encoder: nn.Module, path: str) -> list[str]:
    """``path``, or the modules under it that run when it is a container (``nn.ModuleList``: ALBERT's layer
    groups), or the FX graph module that inlines it."""
    module = encoder.get_submodule(path)
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)):
        prefix = f"{path}." if path else ""
        return [p for child, _ in module.named_children() for p in _called_modules(encoder, prefix + child)]
    return [_called_path(encoder, path)]


def checkpoint_units(encoder: nn.Module, blocks: Sequence[Sequence[str]]) -> list[list[str]]:
    """Module paths to checkpoint, one list per unit, bottom to top: each block's modules (``blocks`` are the
    parameter names of the layout's blocks, see ``encoder_layout.EncoderLayout.blocks``); a module list stands
    for its members; the whole encoder (path ``""``) when the layout has no blocks (a bare ``nn.LSTM``); blocks an
    FX graph inlines are merged into one unit, the graph module."""
    units = [
        list(
            dict.fromkeys(
                c for p in block_module_names(encoder, list(block)) for c in _called_modules(encoder, p)
            )
        )
        for block in blocks
    ]
    chosen = {p for unit in units for p in unit}

    def nested(path: str) -> bool:  # under another chosen module (a graph module inlining it): not twice
        parts = path.split(".") if path else []
        return any(".".join(parts[:i]) in chosen for i in range(len(parts)))

    seen: set[str] = set()
    for index, unit in enumerate(units):
        units[index] = [p for p in unit if not nested(p) and p not in seen]
        seen.update(units[index])
    units = [unit for unit in units if unit]
    if not units and any(True for _ in encoder.parameters()):
        units = [[""]]
    return units


def enable_block_checkpointing(
    encoder: nn.Module,
    units: Sequence[Sequence[str]],
    function: Callable[..., Any] | None = None,
    every_n_layers: int = 1,
) -> list[str]:
    """Checkpoint every ``every_n_layers``-th unit of ``encoder`` (``units`` from [`checkpoint_units`]); an
    already checkpointed module gets the new ``function``. Returns the module paths now checkpointed.

    Raises:
        ValueError: ``every_n_layers`` below 1.
    """
    if every_n_layers < 1:
        raise ValueError(f"`every_n_layers` must be at least 1, got {every_n_layers}")
    function = function or torch.utils.checkpoint.checkpoint
    disable_block_checkpointing(encoder)
    wrapped = []
    for index, unit in enumerate(units):
        if index % every_n_layers:
            continue
        for path in unit:
            module = encoder.get_submodule(path)
            module.forward = CheckpointedForward(module, function, module.__dict__.get("forward"))
            wrapped.append(path)
    return wrapped


def disable_block_checkpointing(encoder: nn.Module) -> int:
    """Give every checkpointed module of ``encoder`` its plain forward back; returns how many there were."""
    count = 0
    for module in encoder.modules():
        forward = module.__dict__.get("forward")
        if isinstance(forward, CheckpointedForward):
            if forward.previous is None:
                del module.__dict__["forward"]
            else:
                module.forward = forward.previous
            count += 1
    return count


def checkpointed_modules(encoder: nn.Module) -> list[str]:
    """Paths (relative to ``encoder``) of its modules whose forward is checkpointed."""
    return [
        path
        for path, module in encoder.named_modules()
        if isinstance(module.__dict__.get("forward"), CheckpointedForward)
    ]


class BlockCheckpointingMixin:
    """Activation checkpointing for [`FusionModel`] (transformers' ``activation_checkpointing_enable`` /
    ``_disable`` call ``_set_gradient_checkpointing``): block-level in every encoder. Reads ``self.encoders`` (a
    ``ModuleDict`` by modality name), ``self.config.modalities`` and ``self.encoder_layout(name)``."""

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Any = None, every_n_layers: int = 1
    ) -> None:
        """Block-level activation checkpointing in every encoder but ``features`` MLPs, for every family alike
        (``block_checkpointing``: each block of the encoder's layout runs under a non-reentrant checkpoint when
        autograd records it; parameter names do not change). ``gradient_checkpointing_func`` is transformers'
        partial of ``torch.utils.checkpoint.checkpoint``; ``use_reentrant=True`` in it is overridden (a warning
        says so). ``enable=False`` gives every block its plain forward back.

        Raises:
            ValueError: when no encoder of the model has anything to checkpoint (only ``features`` modalities).
        """
        if not enable:
            for encoder in self.encoders.values():
                disable_block_checkpointing(encoder)
            return
        func = gradient_checkpointing_func or torch.utils.checkpoint.checkpoint
        if getattr(func, "keywords", {}).get("use_reentrant", False):
            logger.warning(
                "block-level activation checkpointing runs with use_reentrant=False (the same gradients; "
                "reentrant checkpointing cannot carry keyword inputs nor reach blocks above frozen inputs)"
            )
        enabled = []
        for name, encoder in self.encoders.items():
            if get_kind(self.config.modalities[name].kind).pooled_only:  # an MLP of the package, no blocks
                continue
            units = checkpoint_units(encoder, self.encoder_layout(name).blocks)
            if enable_block_checkpointing(encoder, units, func, every_n_layers):
                enabled.append(name)
        if not enabled:
            raise ValueError(
                f"no encoder of modalities {self.config.modality_names} has blocks to checkpoint "
                "(feature MLPs are not checkpointed)"
            )

    @property
    def is_activation_checkpointing(self) -> bool:
        """Whether activation checkpointing is on in some encoder (block-level or transformers' own)."""
        return bool(super().is_activation_checkpointing) or any(
            checkpointed_modules(encoder) for encoder in self.encoders.values()
        )
