"""Checks of block-level activation checkpointing, shared by the family matrix (``test_encoder_families``) and
``test_block_checkpointing``: the same gradients and buffers as the plain run, and a checkpoint call per block."""

from __future__ import annotations

import collections
import contextlib
import copy
from collections.abc import Iterator
from unittest import mock

import torch
import transformers.modeling_utils

from multimodal_fusion import FusionModel
from multimodal_fusion.model.block_checkpointing import checkpoint_units, checkpointed_modules

GRAD_TOLERANCE = 1e-5


@contextlib.contextmanager
def counting_checkpoint() -> Iterator[collections.Counter]:
    """While active, ``activation_checkpointing_enable`` builds its partial over a counting wrapper of
    ``torch.utils.checkpoint.checkpoint`` (transformers imports the function by name): ``counts[id(block)]`` is
    how often the wrapper ran that block under a checkpoint."""
    counts: collections.Counter = collections.Counter()
    real = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        counts[id(function.module)] += 1
        return real(function, *args, **kwargs)

    with mock.patch.object(transformers.modeling_utils, "checkpoint", counting):
        yield counts


def training_step(model: FusionModel, batch, labels, state) -> tuple[dict, dict]:
    """Gradients and buffers after one forward/backward from ``state`` (seeded: dropout draws the same masks)."""
    model.load_state_dict(state)
    model.zero_grad()
    torch.manual_seed(1)
    model(**batch, labels=labels).loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, {n: b.clone() for n, b in model.named_buffers()}


def assert_same(reference: dict, other: dict, what: str) -> None:
    assert reference.keys() == other.keys(), (what, sorted(reference.keys() ^ other.keys())[:5])
    for name, value in reference.items():
        diff = (other[name].double() - value.double()).abs().max().item() if value.numel() else 0.0
        assert diff <= GRAD_TOLERANCE, f"{what} of {name} differ by {diff}"


def check_block_checkpointing(model: FusionModel, name: str, batch, labels) -> dict[str, torch.Tensor]:
    """With the top block trainable (and with everything trainable), block-level checkpointing gives the
    gradients and buffers (BatchNorm statistics) of the plain run, each trainable unit ran under a checkpoint,
    and disabling gives every block its plain forward back. Returns the checkpointed gradients of the last run
    (everything trainable)."""
    encoder = model.encoders[name]
    layout = model.encoder_layout(name)
    units = checkpoint_units(encoder, layout.blocks)
    assert units, f"modality '{name}': nothing to checkpoint"
    model.train()
    checkpointed = {}
    for trainable in ([1] if layout.usable_blocks else []) + ["all"]:
        model.set_trainable_layers(name, trainable)
        state = copy.deepcopy(model.state_dict())
        reference, reference_buffers = training_step(model, batch, labels, state)
        with counting_checkpoint() as counts:
            model.activation_checkpointing_enable()
        assert model.is_activation_checkpointing
        checkpointed, buffers = training_step(model, batch, labels, state)
        model.activation_checkpointing_disable()
        assert not checkpointed_modules(encoder) and not model.is_activation_checkpointing
        assert not any("forward" in vars(m) for m in encoder.modules()), "a patched forward was left behind"
        assert_same(reference, checkpointed, f"gradients (trainable_layers={trainable})")
        assert_same(reference_buffers, buffers, f"buffers (trainable_layers={trainable})")
        calls = [sum(counts[id(encoder.get_submodule(p))] for p in unit) for unit in units]
        top = {f"encoders.{name}.{n}" for n in (layout.usable_blocks or layout.blocks or [[]])[-1]}
        assert top <= checkpointed.keys(), "the top block got no gradient"
        if trainable == "all":
            assert all(c > 0 for c in calls), f"units never checkpointed: {calls} for {units}"
        else:
            assert calls[-1] > 0, f"the trainable top block {units[-1]} was not checkpointed"
    return checkpointed
