"""Batch inference over a dataset: [`score_dataset`] scores every row, through the embedding cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from ..cache.embedding_cache import EMBEDS_SUFFIX, cache_embeddings, embeds_column, has_random_augmentation
from ..data.column_mapping import modality_columns
from ..data.data_collator import ROW_INDEX_COLUMN, FusionDataCollator
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor


@dataclass
class ScoringOutput:
    """What [`score_dataset`] returns.

    Attributes:
        logits: ``[N, num_labels]`` float32, in dataset order.
        labels: the label column as an array (``None`` without ``label_column``).
        cached_modalities: modalities scored from cached embeddings.
    """

    logits: np.ndarray
    labels: np.ndarray | None
    cached_modalities: list[str]


def score_dataset(
    model: FusionModel,
    processor: FusionProcessor,
    dataset: Dataset,
    columns: Mapping[str, str] | None = None,
    *,
    modalities: Sequence[str] | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    sampling_rate: int | Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
) -> ScoringOutput:
    """Batch inference over ``dataset`` through the embedding cache: logits for every row, in order.

    At inference no encoder trains, so by default every modality with a column is cached (``modalities=[]``
    scores live). Embeddings already cached with the same weights and settings (for example the test split of a
    frozen-encoder training run) are loaded, not recomputed; scoring the same data with another head that shares
    the encoders costs one pass over the cached vectors. Bad samples raise (a row cannot be left out of the
    scores).
    """
    column_map = modality_columns(columns, processor.modality_names)
    if modalities is None:
        present = set(dataset.column_names)
        modalities = [
            name
            for name, column in column_map.items()
            if column in present and not has_random_augmentation(processor, name)
        ]
    device = torch.device(device) if device is not None else model.classifier.weight.device
    dataset = cache_embeddings(
        dataset,
        model,
        processor,
        column_map,
        modalities,
        batch_size=batch_size,
        sampling_rate=sampling_rate,
        device=device,
    )
    cached = [
        name
        for name in modalities
        if {embeds_column(name), embeds_column(name, tokens=True)} & set(dataset.column_names)
    ]
    collator = FusionDataCollator(processor, column_map, label_column=None, sampling_rate=sampling_rate)
    keep = [
        c
        for c in dataset.column_names
        if c in column_map.values() or c.endswith(EMBEDS_SUFFIX) or c == ROW_INDEX_COLUMN
    ]
    rows_source = dataset.select_columns(keep).with_format(None)
    was_training = model.training
    original_device = model.classifier.weight.device
    model.eval()
    model.to(device)
    logits = []
    try:
        for start in range(0, len(rows_source), batch_size):
            part = rows_source[start : start + batch_size]
            rows = [dict(zip(part, values, strict=True)) for values in zip(*part.values(), strict=True)]
            batch = {k: v.to(device) for k, v in collator(rows).items()}
            with torch.no_grad():
                logits.append(model(**batch).logits.float().cpu())
    finally:
        model.to(original_device)
        model.train(was_training)
    labels = None
    if label_column is not None:
        labels = np.asarray(dataset.with_format(None)[label_column])
    num_labels = model.config.num_labels
    stacked = torch.cat(logits).numpy() if logits else np.zeros((0, num_labels), dtype=np.float32)
    return ScoringOutput(logits=stacked, labels=labels, cached_modalities=cached)
