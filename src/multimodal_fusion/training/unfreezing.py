"""Gradual unfreezing as a Trainer callback: an explicit schedule or ULMFiT-style one block per epoch.

DDP only synchronises the parameters that required grad when it wrapped the model; a parameter unfrozen later
would get a different gradient on every rank and the replicas would silently drift apart. Newly trainable
parameters that DDP does not manage therefore get a hook that all-reduces (averages) their gradient after each
backward, before clipping and the optimizer step.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..model.modeling_fusion import FusionModel

logger = logging.getLogger(__name__)


def _parse_schedule(schedule: Mapping[Any, Mapping[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    entries = []
    for key, changes in schedule.items():
        try:
            at = int(key)
        except (TypeError, ValueError):
            raise ValueError(f"`unfreeze_schedule` keys must be epoch or step numbers, got {key!r}") from None
        if not isinstance(changes, Mapping):
            raise ValueError(
                f"`unfreeze_schedule[{key}]` must map modality -> trainable_layers, got {changes!r}"
            )
        entries.append((at, dict(changes)))
    return sorted(entries, key=lambda entry: entry[0])


def will_unfreeze(model: FusionModel, schedule: Any) -> set[str]:
    """Modalities a schedule will make (more) trainable: every encoder not already ``"all"`` for ``"gradual"``,
    else the modalities an explicit schedule names."""
    if not schedule:
        return set()
    if schedule == "gradual":
        return {n for n, s in model.config.modalities.items() if s.trainable_layers != "all"}
    return {name for _, changes in _parse_schedule(schedule) for name in changes}


class GradientAverager:
    """All-reduces the gradients of parameters that DDP does not manage (unfrozen after it wrapped the model)."""

    def __init__(self) -> None:
        self.managed: set[int] = set()
        self.handles: dict[int, Any] = {}

    @staticmethod
    def active() -> bool:
        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def snapshot(self, model: torch.nn.Module) -> None:
        """Record what DDP manages: the parameters that require grad when training starts."""
        self.managed = {id(p) for p in model.parameters() if p.requires_grad}

    def cover(self, model: torch.nn.Module) -> int:
        """Hook every trainable parameter DDP does not manage; returns how many were hooked."""
        if not self.active():
            return 0
        world = dist.get_world_size()

        def average(param: torch.Tensor) -> None:
            dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
            param.grad.div_(world)

        added = 0
        for param in model.parameters():
            if param.requires_grad and id(param) not in self.managed and id(param) not in self.handles:
                self.handles[id(param)] = param.register_post_accumulate_grad_hook(average)
                added += 1
        return added


class UnfreezeCallback(TrainerCallback):
    """Changes ``trainable_layers`` during training.

    Args:
        schedule: ``"gradual"`` (at epoch ``e`` each participating encoder trains its top ``k0 + e`` blocks,
            ``k0`` its starting value, up to ``limit``), or ``{epoch-or-step: {modality: trainable_layers}}``.
        unit: ``"epoch"`` or ``"step"`` (the keys of an explicit schedule).
        limit: for ``"gradual"``: the most blocks to unfreeze, a number, ``"all"`` or ``{modality: ...}``
            (default: every block; the embeddings stay frozen unless the limit is ``"all"``).
    """

    def __init__(self, schedule: Any, unit: str = "epoch", limit: Any = None):
        if schedule != "gradual" and not isinstance(schedule, Mapping):
            raise ValueError(f"`unfreeze_schedule` must be 'gradual' or a dict, got {schedule!r}")
        self.schedule = schedule if schedule == "gradual" else _parse_schedule(schedule)
        self.unit = "epoch" if schedule == "gradual" else unit
        self.limit = limit
        self.initial: dict[str, Any] | None = None
        self.averager = GradientAverager()
        self.changes: list[dict[str, Any]] = []
        """Every change made: ``{"epoch", "step", "modality", "from", "to"}``."""

    def _limit(self, name: str, blocks: int) -> int | str:
        limit = self.limit.get(name) if isinstance(self.limit, Mapping) else self.limit
        return blocks if limit is None else limit

    def targets(self, model: FusionModel, epoch: int, step: int) -> dict[str, Any]:
        """``trainable_layers`` each modality should have at this epoch / step."""
        if self.schedule == "gradual":
            targets = {}
            for name, start in self.initial.items():
                if start == "all":
                    continue
                blocks = len(model.encoder_layout(name).usable_blocks)
                limit = self._limit(name, blocks)
                wanted = start + epoch
                if limit == "all":
                    targets[name] = "all" if wanted > blocks else wanted
                else:
                    targets[name] = min(wanted, int(limit), blocks)
            return targets
        position = epoch if self.unit == "epoch" else step
        targets = {}
        for at, changes in self.schedule:
            if at <= position:
                targets.update(changes)
        return targets

    def _apply(self, model: FusionModel, state) -> None:
        epoch = int(state.epoch or 0)
        for name, value in self.targets(model, epoch, state.global_step).items():
            if name not in model.config.modalities:
                raise ValueError(f"`unfreeze_schedule` names unknown modality '{name}'")
            current = model.config.modalities[name].trainable_layers
            if current != value:
                model.set_trainable_layers(name, value)
                change = {
                    "epoch": epoch,
                    "step": state.global_step,
                    "modality": name,
                    "from": current,
                    "to": value,
                }
                self.changes.append(change)
                logger.info(f"unfreezing: modality '{name}' trainable_layers {current} -> {value} "
                            f"(epoch {epoch}, step {state.global_step})")  # fmt: skip
        hooked = self.averager.cover(model)
        if hooked:
            logger.info(
                f"unfreezing: averaging gradients of {hooked} newly trainable tensors across DDP ranks"
            )

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.initial is None:
            self.initial = dict(model.trainable_layers)
        self.averager.snapshot(model)
        self._apply(model, state)

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        self._apply(model, state)

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if self.unit == "step":
            self._apply(model, state)
