"""When training uses the frozen-prefix cache, and what happens when gradual unfreezing moves the boundary.

``training/run.py`` calls [`apply_prefix_cache`] after the pooled-vector cache: with ``cache_embeddings: auto``
(or ``true``) every modality whose encoder is frozen below its trainable top blocks, and whose family enters its
block stack exactly from cached hidden states, gets its hidden states cached at that (deepest) boundary for the
train and validation splits; every other modality logs one line with its reason and runs live. The disk the cache
will take (samples x tokens x width x bytes) is logged before the pass; above ``cache_max_gb`` the modalities train
live instead. [`PrefixBoundaryCallback`] watches the boundary at each epoch: when unfreezing moves it down it
recomputes the cache at the new boundary, or falls back to live when the new boundary would not hold long enough to
repay the pass, and logs the choice with its estimate.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
from datasets import Dataset, DatasetDict
from transformers import TrainerCallback

from ..cache.prefix_cache import (
    PREFIX_ROW_COLUMN,
    STORAGE_DTYPES,
    PrefixCache,
    PrefixStore,
    cache_hidden_states,
    estimate_cache_bytes,
    frozen_boundary,
    prefix_cache_plan,
)
from ..data.column_mapping import modality_columns
from ..model.modeling_fusion import FusionModel
from ..model.prefix_layers import prefix_exact_reason
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)


@dataclass
class PrefixCacheRun:
    """Everything needed to (re)compute the cache during training; ``cache`` is what the collator reads."""

    cache: PrefixCache
    splits: list[Dataset]
    """The cached splits in row-id order (train first): row ids ``0..`` run over them in this order."""
    model: FusionModel
    processor: FusionProcessor
    columns: dict[str, str]
    options: dict[str, Any]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    """Every boundary change seen: ``{"epoch", "modality", "from", "to", "action", "reason"}``."""

    def compute(
        self, boundaries: Mapping[str, int], main_process_first: Any = None
    ) -> dict[str, PrefixStore]:
        """Cache every split at ``boundaries`` (main process first under DDP: the others load its files)."""
        context = (
            main_process_first(desc="caching hidden states")
            if main_process_first
            else contextlib.nullcontext()
        )
        with context:
            parts = [cache_hidden_states(split, self.model, self.processor, boundaries, self.columns, **self.options)
                     for split in self.splits]  # fmt: skip
        stores = {}
        for name in boundaries:
            tables = [part[name].table for part in parts]
            stores[name] = PrefixStore(name, boundaries[name], parts[0][name].width,
                                       datasets.concatenate_datasets(tables) if len(tables) > 1 else tables[0],
                                       sum(part[name].seconds for part in parts))  # fmt: skip
        return stores


def apply_prefix_cache(
    splits: DatasetDict | Mapping[str, Dataset],
    model: FusionModel,
    processor: FusionProcessor,
    columns: Mapping[str, str] | None,
    training_args: Any,
    *,
    cache_splits: Sequence[str] = ("train", "validation"),
    skip_bad_samples: bool = False,
    sampling_rate: int | Mapping[str, int] | None = None,
) -> tuple[DatasetDict, PrefixCacheRun | None]:
    """Cache the hidden states at each eligible modality's frozen boundary for ``cache_splits`` (those present) and
    add the ``prefix_cache_row`` column the collator reads; returns ``(splits, run or None)``. Prediction data
    (the test split) stays live: nothing trains there, and the pooled-vector cache serves frozen encoders."""
    splits = DatasetDict(splits)
    mode = str(getattr(training_args, "cache_embeddings", "auto")).lower()
    names = [s for s in cache_splits if s in splits]
    if mode == "false" or not names:
        return splits, None
    plan = prefix_cache_plan(model, processor)
    by_modality = modality_columns(columns, processor.modality_names)
    schedule = getattr(training_args, "unfreeze_schedule", None)
    step_unit = schedule and getattr(training_args, "unfreeze_unit", "epoch") == "step"
    boundaries = {}
    for name, entry in plan.items():
        reason = entry.reason
        if reason is None and name not in by_modality:
            reason = "the dataset has no column for it"
        if reason is None and step_unit:
            reason = "`unfreeze_schedule` in steps moves the boundary inside an epoch"
        if reason is None:
            boundaries[name] = entry.boundary
        elif not reason.startswith("fully frozen"):
            logger.info(f"prefix cache: modality '{name}' runs live: {reason}")
    if not boundaries:
        return splits, None
    dtype = getattr(training_args, "prefix_cache_dtype", "float32")
    selected = {name: by_modality[name] for name in boundaries}
    estimate = {name: 0 for name in boundaries}
    for split in names:
        for name, size in estimate_cache_bytes(splits[split], model, processor, selected, boundaries, dtype,
                                               sampling_rate).items():  # fmt: skip
            estimate[name] += size
    total = sum(estimate.values())
    width = {name: model.pooled_dims[name] for name in boundaries}
    for name, size in estimate.items():
        rows = sum(len(splits[s]) for s in names)
        tokens = size / max(1, rows * width[name] * STORAGE_DTYPES[dtype]().itemsize)
        logger.info(f"prefix cache: modality '{name}' at block {boundaries[name]}: {rows} samples x ~{tokens:.0f} "
                    f"tokens x {width[name]} x {STORAGE_DTYPES[dtype]().itemsize} B ({dtype}) = {size / 1e6:.1f} MB")  # fmt: skip
    limit = getattr(training_args, "cache_max_gb", None)
    if limit is not None and total > limit * 1e9:
        logger.warning(f"prefix cache: the cache would take {total / 1e9:.2f} GB, over cache_max_gb={limit}; "
                       f"{sorted(boundaries)} train live")  # fmt: skip
        return splits, None
    offset = 0
    for split in names:
        splits[split] = splits[split].add_column(
            PREFIX_ROW_COLUMN, list(range(offset, offset + len(splits[split])))
        )
        offset += len(splits[split])
    options = {"storage_dtype": dtype, "batch_size": getattr(training_args, "per_device_eval_batch_size", 32),
               "sampling_rate": sampling_rate, "skip_bad_samples": skip_bad_samples,
               "device": getattr(training_args, "device", None)}  # fmt: skip
    run = PrefixCacheRun(
        PrefixCache({}, selected), [splits[s] for s in names], model, processor, selected, options
    )
    run.cache.stores.update(run.compute(boundaries, getattr(training_args, "main_process_first", None)))
    logger.info(f"prefix cache: training {sorted(boundaries)} from cached hidden states ({boundaries})")
    return splits, run


class PrefixBoundaryCallback(TrainerCallback):
    """At each epoch start (after unfreezing): a modality whose frozen boundary moved gets its cache recomputed at
    the new boundary, or trains live from then on.

    Estimate: the pass at the new boundary costs about the measured pass time scaled by frozen depth (front-end
    counted as one block), and saves about the same every epoch the boundary holds (the live path runs that prefix
    each epoch); it is recomputed when the boundary holds at least two epochs (from the unfreezing schedule)."""

    def __init__(self, run: PrefixCacheRun, unfreezer: Any = None):
        self.run = run
        self.unfreezer = unfreezer

    def _epochs_held(self, model: FusionModel, name: str, boundary: int, epoch: int, total: int) -> int:
        if self.unfreezer is None:
            return total - epoch
        blocks = len(model.encoder_layout(name).usable_blocks)
        held = 0
        for later in range(epoch, total):
            value = self.unfreezer.targets(model, later, 0).get(name, model.trainable_layers[name])
            if value == "all" or blocks - int(value) != boundary:
                break
            held += 1
        return held

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        epoch, total = int(state.epoch or 0), int(args.num_train_epochs)
        recompute = {}
        for name, store in list(self.run.cache.stores.items()):
            boundary = frozen_boundary(model, name)
            if boundary == store.num_frozen:
                continue
            decision = {"epoch": epoch, "modality": name, "from": store.num_frozen, "to": boundary}
            reason = None if boundary is not None else "no frozen block boundary left"
            if reason is None:
                was = model.training
                model.train()
                reason = prefix_exact_reason(
                    model.adapters[name], model.encoders[name], boundary, model.config.modalities[name].layer
                )
                model.train(was)
            if reason is None:
                held = self._epochs_held(model, name, boundary, epoch, total)
                cost = store.seconds * (1 + boundary) / (1 + store.num_frozen)
                estimate = f"pass ~{cost:.1f}s, saves ~{cost:.1f}s per epoch for {held} epoch(s)"
                if held >= 2:
                    recompute[name] = boundary
                    decision.update(action="recompute", reason=estimate)
                    logger.info(f"prefix cache: modality '{name}' boundary {store.num_frozen} -> {boundary}: "
                                f"recomputing the cache ({estimate})")  # fmt: skip
                    self.run.decisions.append(decision)
                    continue
                reason = f"recomputing would not pay off ({estimate})"
            decision.update(action="live", reason=reason)
            self.run.decisions.append(decision)
            self.run.cache.disable(name, f"boundary {store.num_frozen} -> {boundary}: {reason}")
        if recompute:
            start = time.perf_counter()
            self.run.cache.stores.update(
                self.run.compute(recompute, getattr(args, "main_process_first", None))
            )
            logger.info(f"prefix cache: recomputed {sorted(recompute)} in {time.perf_counter() - start:.1f}s")
