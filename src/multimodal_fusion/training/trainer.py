"""FusionTrainer: transformers' Trainer with what a fusion model needs.

- raw multimodal columns reach the collator (``remove_unused_columns`` off);
- exact gradient accumulation: transformers' ``num_items_in_batch`` (the window's labelled items, all ranks) plus
  per-modality counts for the auxiliary losses go to the model, whose loss is the window's sum over them; the
  L2-SP gradient is added once per optimizer step;
- checkpoints written to a staging folder and renamed into place when complete;
- ``ddp_find_unused_parameters`` chosen from the model (on only when some trainable parameter can sit out a
  step: modality dropout, missing modalities in the data, wav2vec2 layerdrop);
- per-encoder learning rates, every parameter in the optimizer from the start;
- checkpoint resume and ``load_best_model_at_end`` through ``from_pretrained`` so every encoder is restored
  (a raw ``load_state_dict`` misses ViT's legacy key names);
- auxiliary per-modality losses logged next to the loss;
- length-grouped batching from a precomputed length column (no decoding of every row);
- fine-tuning controls from the arguments: layer-wise learning-rate decay, an unfreezing schedule (DDP-safe),
  an L2-SP penalty toward the pretrained weights (logged as ``l2sp_loss``), a decaying auxiliary-loss weight,
  and the fusion's per-modality weights averaged over each evaluation (``eval_modality_weight_{name}``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import defaultdict
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_pt_utils import LengthGroupedSampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..model.modeling_fusion import FusionModel
from .l2sp import L2SPPenalty
from .param_groups import build_param_groups
from .progress import use_readable_logs
from .run_outputs import STAGING_DIR, publish_checkpoint
from .unfreezing import UnfreezeCallback

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
    """Trainer for [`FusionModel`]; ``expect_missing_modalities`` tells it the data has absent modalities.

    With plain ``TrainingArguments`` it behaves like ``Trainer`` plus the fixes above; with
    [`FusionTrainingArguments`] it also reads ``encoder_learning_rate``, ``layerwise_lr_decay``,
    ``unfreeze_schedule`` / ``unfreeze_unit`` / ``gradual_unfreeze_limit``, ``l2sp_weight`` and
    ``aux_loss_schedule``.
    """

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
        super().__init__(model, args, *pos, **kwargs)
        use_readable_logs(self)  # one short line per log event, not a dict with every per-class metric
        self.unfreezer = None
        if getattr(self.args, "unfreeze_schedule", None):
            self.unfreezer = UnfreezeCallback(
                self.args.unfreeze_schedule, self.args.unfreeze_unit, self.args.gradual_unfreeze_limit
            )
            self.add_callback(self.unfreezer)
        weight = getattr(self.args, "l2sp_weight", 0.0)
        self.l2sp = L2SPPenalty(weight) if weight > 0 else None
        self._extra_logs: dict[str, list[torch.Tensor]] = defaultdict(list)
        self._eval_weights: list[torch.Tensor] = []

    # ------------------------------------------------------------------ optimizer
    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        opt_model = self.model if model is None else model
        if self.optimizer is None:
            groups = build_param_groups(
                opt_model,
                self.args.learning_rate,
                self.args.weight_decay,
                getattr(self.args, "encoder_learning_rate", None),
                getattr(self.args, "layerwise_lr_decay", None),
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            optimizer_kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("params", "model")}
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ------------------------------------------------------------------ loss and logging
    def current_aux_loss_weight(self) -> float | None:
        """The auxiliary-loss weight for this step (``None``: the model config's, unchanged)."""
        if getattr(self.args, "aux_loss_schedule", "constant") != "linear_decay" or not self.state.max_steps:
            return None
        progress = min(self.state.global_step / self.state.max_steps, 1.0)
        return self.model.config.aux_loss_weight * (1.0 - progress)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """transformers' window of micro-batches and its ``num_items_in_batch``, plus the per-modality labelled
        counts of the window (all ranks) that normalise the auxiliary losses (``aux_num_items_in_batch``)."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._micro_batches_done = 0
        self._aux_num_items = None
        model = self.accelerator.unwrap_model(self.model)
        if num_items_in_batch is not None and isinstance(model, FusionModel) and model.aux_heads is not None:
            self._aux_num_items = aux_items_in_window(model, batch_samples, device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                gathered = self.accelerator.gather(
                    torch.stack(list(self._aux_num_items.values())).unsqueeze(0)
                )
                self._aux_num_items = dict(zip(self._aux_num_items, gathered.sum(dim=0), strict=True))
        return batch_samples, num_items_in_batch

    def training_step(self, model, inputs, num_items_in_batch=None) -> torch.Tensor:
        """transformers' step; after the window's last micro-batch (gradients synchronised across ranks) the L2-SP
        gradient is added once for the optimizer step (see ``l2sp.py``)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.l2sp is not None:
            self._micro_batches_done = getattr(self, "_micro_batches_done", 0) + 1
            if self._micro_batches_done >= self.current_gradient_accumulation_steps:
                scaler = getattr(self.accelerator, "scaler", None)
                scale = scaler.get_scale() if scaler is not None else 1.0
                self._extra_logs["l2sp_loss"].append(self.l2sp.add_gradient(self.model, scale))
                self._micro_batches_done = 0
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        training = model.training
        if training and (weight := self.current_aux_loss_weight()) is not None:
            inputs = {**inputs, "aux_loss_weight": weight}
        window_normalised = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        if training and window_normalised and getattr(self, "_aux_num_items", None) is not None:
            inputs = {**inputs, "aux_num_items_in_batch": self._aux_num_items}
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if training and isinstance(outputs, dict) and outputs.get("aux_losses"):
            for name, value in outputs["aux_losses"].items():
                self._extra_logs[f"aux_loss_{name}"].append(value.detach().float())
        if not training and isinstance(outputs, dict) and outputs.get("modality_weights") is not None:
            self._eval_weights.append(outputs["modality_weights"].detach().float().mean(dim=0))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._extra_logs:
            for key, values in self._extra_logs.items():
                logs[key] = round(torch.stack(values).mean().item(), 6)
            self._extra_logs.clear()
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        self._eval_weights = []
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        if self._eval_weights:
            mean = torch.stack(self._eval_weights).mean(dim=0)
            for name, value in zip(self.model.config.modalities, mean.tolist(), strict=True):
                output.metrics[f"{metric_key_prefix}_modality_weight_{name}"] = round(value, 6)
        self.last_evaluation = output  # predictions + label ids of the latest pass (evaluate() drops them)
        return output

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial) -> None:
        """transformers' checkpoint, written to ``{output_dir}/.checkpoint-staging/checkpoint-N`` and renamed to
        ``checkpoint-N`` once complete (all ranks done), so a kill mid-save never leaves a partial ``checkpoint-N``
        and ``resume_from_checkpoint: last`` takes the last complete one."""
        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, STAGING_DIR)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)  # what a run killed while saving left
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial=None: staging_root  # transformers writes the folder there
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        if self.state.best_model_checkpoint == staged:
            self.state.best_model_checkpoint = final
            if self.args.should_save:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            publish_checkpoint(staged, final)
            with contextlib.suppress(OSError):
                os.rmdir(staging_root)  # empty now
            rotate_checkpoints(
                run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True
            )
        self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        model = self.model if model is None else model
        if self.l2sp is not None and isinstance(model, FusionModel):
            self._capture_pretrained_reference(model)
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

    def _capture_pretrained_reference(self, model: FusionModel) -> None:
        """Before a checkpoint overwrites them: the L2-SP reference of encoders that train or will train."""
        from .unfreezing import will_unfreeze

        scheduled = will_unfreeze(model, getattr(self.args, "unfreeze_schedule", None))
        for name, encoder in model.encoders.items():
            if name in scheduled or any(p.requires_grad for p in encoder.parameters()):
                for param_name, param in encoder.named_parameters():
                    self.l2sp.set_reference(f"encoders.{name}.{param_name}", param)

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


def aux_items_in_window(
    model: FusionModel, batch_samples: list[dict[str, Any]], device: torch.device
) -> dict[str, torch.Tensor]:
    """Per modality: labelled items (label entries other than -100) of the samples that have the modality, over
    the micro-batches of one accumulation window (before modality dropout, which is drawn in ``forward``)."""
    counts = {name: torch.zeros((), dtype=torch.long, device=device) for name in model.config.modalities}
    for batch in batch_samples:
        labels = batch["labels"]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        masks = model._prepare(inputs, labels)[2].to(labels.device)
        labelled = labels.ne(-100).reshape(labels.shape[0], -1).sum(dim=1)
        for i, name in enumerate(model.config.modalities):
            counts[name] += labelled[masks[:, i]].sum().to(device)
    return counts


def _load_weights_via_from_pretrained(model: FusionModel, path: str) -> None:
    """Copy a checkpoint's weights into ``model`` through ``from_pretrained``, which maps renamed keys."""
    loaded = type(model).from_pretrained(path)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"checkpoint {path} does not match the model: missing {missing}, unexpected {unexpected}"
        )
