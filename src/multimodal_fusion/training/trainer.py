"""FusionTrainer: transformers' Trainer with what a fusion model needs.

- raw multimodal columns reach the collator (``remove_unused_columns`` off);
- ``ddp_find_unused_parameters`` chosen from the model (on only when some trainable parameter can sit out a
  step: modality dropout, missing modalities in the data, wav2vec2 layerdrop);
- per-encoder learning rates, every parameter in the optimizer from the start;
- checkpoint resume and ``load_best_model_at_end`` through ``from_pretrained`` so every encoder is restored
  (a raw ``load_state_dict`` misses ViT's legacy key names, see HF_NOTES §5);
- auxiliary per-modality losses logged next to the loss;
- length-grouped batching from a precomputed length column (no decoding of every row).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from ..modeling_fusion import FusionModel
from .param_groups import build_param_groups

logger = logging.getLogger(__name__)


def may_skip_parameters(model: FusionModel, expect_missing_modalities: bool = False) -> bool:
    """Whether some trainable parameter can get no gradient in a step (then DDP must search for unused ones)."""
    if expect_missing_modalities or model.config.modality_dropout > 0:
        return True
    for encoder in model.encoders.values():
        trainable = any(p.requires_grad for p in encoder.parameters())
        if trainable and getattr(getattr(encoder, "config", None), "layerdrop", 0.0) > 0:
            return True
    return False


class FusionTrainer(Trainer):
    """Trainer for [`FusionModel`]; ``expect_missing_modalities`` tells it the data has absent modalities."""

    def __init__(
        self,
        model: FusionModel | None = None,
        args=None,
        *pos: Any,
        expect_missing_modalities: bool = False,
        **kwargs: Any,
    ):
        if args is not None:
            if args.remove_unused_columns:
                logger.info(
                    "FusionTrainer: setting remove_unused_columns=False (the collator needs raw columns)"
                )
                args.remove_unused_columns = False
            if args.ddp_find_unused_parameters is None and isinstance(model, FusionModel):
                args.ddp_find_unused_parameters = may_skip_parameters(model, expect_missing_modalities)
        self.encoder_learning_rate = kwargs.pop("encoder_learning_rate", None)
        super().__init__(model, args, *pos, **kwargs)
        self._extra_logs: dict[str, list[torch.Tensor]] = defaultdict(list)

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = build_param_groups(
                opt_model, self.args.learning_rate, self.args.weight_decay, self.encoder_learning_rate
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ loss and logging
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training and isinstance(outputs, dict) and outputs.get("aux_losses"):
            for name, value in outputs["aux_losses"].items():
                self._extra_logs[f"aux_loss_{name}"].append(value.detach().float())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._extra_logs:
            for key, values in self._extra_logs.items():
                logs[key] = round(torch.stack(values).mean().item(), 6)
            self._extra_logs.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        if isinstance(model, FusionModel) and os.path.isfile(
            os.path.join(resume_from_checkpoint, "model.safetensors")
        ):
            _load_weights_via_from_pretrained(model, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        path = self.state.best_model_checkpoint
        if isinstance(self.model, FusionModel) and os.path.isfile(os.path.join(path, "model.safetensors")):
            logger.info(f"Loading best model from {path} (score: {self.state.best_metric}).")
            _load_weights_via_from_pretrained(self.model, path)
            return
        super()._load_best_model()

    # ------------------------------------------------------------------ batching
    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if self.args.train_sampling_strategy == "group_by_length" and column in getattr(
            dataset, "column_names", ()
        ):
            lengths = [float(x) for x in dataset.with_format(None)[column]]
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps, lengths=lengths
            )
        return super()._get_train_sampler(train_dataset)


def _load_weights_via_from_pretrained(model: FusionModel, path: str) -> None:
    """Copy a checkpoint's weights into ``model`` through ``from_pretrained``, which maps renamed keys."""
    loaded = type(model).from_pretrained(path)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}"
        )
