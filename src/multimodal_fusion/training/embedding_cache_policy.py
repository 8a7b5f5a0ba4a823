"""Run-time embedding-cache policy of ``training/run.py``: which frozen modalities to cache for a run
(``cache_embeddings: auto | true | false``), given the unfreezing schedule."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from datasets import Dataset, DatasetDict

from ..cache.embedding_cache import CACHE_MODES, cache_embeddings, cache_plan
from ..data.column_mapping import modality_columns
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor
from .unfreezing import will_unfreeze

logger = logging.getLogger(
    "multimodal_fusion.cache.embedding_cache"
)  # one logger for the whole cache feature


def embedding_cache_plan(
    model: FusionModel, processor: FusionProcessor | None = None, unfreeze_schedule: Any = None
) -> dict[str, str | None]:
    """For every modality of ``model``: ``None`` when its pooled vectors can be cached for training, else why not
    ([`cache_plan`] with the modalities ``unfreeze_schedule`` will unfreeze: ``"gradual"`` unfreezes every encoder
    not already ``"all"``; an explicit schedule the modalities it names)."""
    return cache_plan(model, processor, will_unfreeze(model, unfreeze_schedule))


def cacheable_modalities(
    model: FusionModel, training_args: Any = None, processor: FusionProcessor | None = None
) -> list[str]:
    """Modalities whose pooled vectors stay fixed during training (see [`embedding_cache_plan`]); reads
    ``unfreeze_schedule`` from ``training_args`` when given."""
    plan = embedding_cache_plan(model, processor, getattr(training_args, "unfreeze_schedule", None))
    return [name for name, reason in plan.items() if reason is None]


def apply_embedding_cache(
    splits: DatasetDict | Mapping[str, Dataset],
    model: FusionModel,
    processor: FusionProcessor,
    columns: Mapping[str, str] | None,
    training_args: Any,
    *,
    skip_bad_samples: bool = False,
    sampling_rate: int | Mapping[str, int] | None = None,
) -> tuple[DatasetDict, list[str]]:
    """``training/run.py``'s step: cache the frozen modalities of every split as ``training_args.cache_embeddings``
    says, and return ``(splits, cached modality names)``.

    - ``"false"``: nothing is cached.
    - ``"auto"`` (default): every modality of [`embedding_cache_plan`] that can be cached is; the others are
      logged with the reason and keep running live.
    - ``"true"``: as ``"auto"``, but a frozen modality whose processor augments raises a ``ValueError`` naming it,
      and so does a model with no cacheable modality at all.

    Encodes on ``training_args.device`` with ``per_device_eval_batch_size`` rows at a time, the main process first
    (the others then load its cache files).
    """
    mode = str(getattr(training_args, "cache_embeddings", "auto")).lower()
    if mode not in CACHE_MODES:
        raise ValueError(f"`cache_embeddings` must be one of {CACHE_MODES}, got {mode!r}")
    splits = DatasetDict(splits)
    if mode == "false":
        logger.info("embedding cache: off (cache_embeddings=false); every encoder runs live")
        return splits, []
    plan = embedding_cache_plan(model, processor, getattr(training_args, "unfreeze_schedule", None))
    with_column = set(modality_columns(columns, processor.modality_names))
    for name in plan:
        if plan[name] is None and name not in with_column:
            plan[name] = "the dataset has no column for it"
    if mode == "true":
        augmented = [name for name, reason in plan.items() if reason is not None and "augmentation" in reason]
        if augmented:
            raise ValueError(
                f"cache_embeddings=true: modalities {augmented} are frozen but their processor applies random "
                "augmentation, so their embeddings change every epoch; turn augmentation off for them or use "
                "cache_embeddings=auto (which runs them live)"
            )
        if all(reason is not None for reason in plan.values()):
            reasons = "; ".join(f"'{name}': {reason}" for name, reason in plan.items())
            raise ValueError(f"cache_embeddings=true, but no modality can be cached ({reasons})")
    names = [name for name, reason in plan.items() if reason is None]
    for name, reason in plan.items():
        if reason is not None:
            logger.info(f"embedding cache: modality '{name}' runs live: {reason}")
    if not names:
        return splits, []
    main_process_first = getattr(training_args, "main_process_first", None)
    device = getattr(training_args, "device", None)
    batch_size = getattr(training_args, "per_device_eval_batch_size", 32)
    context = (
        main_process_first(desc="caching embeddings") if main_process_first else contextlib.nullcontext()
    )
    with context:
        splits = cache_embeddings(
            splits,
            model,
            processor,
            columns,
            names,
            batch_size=batch_size,
            sampling_rate=sampling_rate,
            skip_bad_samples=skip_bad_samples,
            device=device,
        )
    logger.info(f"embedding cache: training {names} from cached embeddings (their encoders are skipped)")
    return splits, names
