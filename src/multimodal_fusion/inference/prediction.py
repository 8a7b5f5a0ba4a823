"""Batch prediction over a dataset of raw samples, with bad rows reported instead of fatal.

[`predict_dataset`] decodes each row through the model's processor (files, bytes, arrays, strings; ``None`` =
missing modality), runs the model batch by batch with a progress bar, and returns the logits, which modalities
each row had, and the rows that could not be read. It reuses embeddings an earlier run already cached for the
same data, weights and processor settings ([`find_cached_embeddings`]) but never builds a cache itself: for a
single pass over the data a cache would only add a write. ``multimodal-fusion predict`` and ``evaluate`` run on
it; with ``ablations`` it also scores every row with modalities masked out, from the same decoded batch.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..cache.embedding_cache import (
    cache_embeddings,
    cache_fingerprint,
    embedding_fingerprint,
    embeds_column,
    has_random_augmentation,
)
from ..data.data_collator import ROW_INDEX_COLUMN, _embeds_fields
from ..model.bad_samples import BadSampleError
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)


@dataclass
class PredictionOutput:
    """What [`predict_dataset`] returns.

    Attributes:
        logits: ``{ablation: [N_ok, num_labels] float32}``; key ``None`` = every modality the row has, key
            ``"image"`` = the same rows with ``image`` masked out, and so on.
        rows: dataset positions of the ``N_ok`` predicted rows (in order).
        present: ``[N_ok, M]`` bool, which modalities each row had (model order).
        modalities: the model's modality names (columns of ``present``).
        errors: one dict per unreadable row (``row``, ``modality``, ``column``, ``path``, ``reason``).
        labels: the label column of the predicted rows (``None`` without one).
        cached_modalities: modalities read from an existing embedding cache.
    """

    logits: dict[str | None, np.ndarray]
    rows: list[int]
    present: np.ndarray
    modalities: list[str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    labels: np.ndarray | None = None
    cached_modalities: list[str] = field(default_factory=list)


def find_cached_embeddings(
    dataset: Dataset, model: FusionModel, processor: FusionProcessor, modality_columns: Mapping[str, str]
) -> list[str]:
    """The largest set of modalities whose embeddings an earlier run cached for exactly this ``dataset``, model
    weights and processor settings (``[]`` when none). Looks for the cache file only; builds nothing.

    A training run caches its frozen modalities together, so every subset of the modalities with a column is
    tried, largest first. Only file-backed datasets have cache files.
    """
    if not dataset.cache_files:
        return []
    folder = os.path.dirname(dataset.cache_files[0]["filename"])
    candidates = [
        name
        for name, column in modality_columns.items()
        if column in dataset.column_names and not has_random_augmentation(processor, name)
    ]
    fingerprints = {name: embedding_fingerprint(model, processor, name) for name in candidates}
    for size in range(len(candidates), 0, -1):
        for names in itertools.combinations(candidates, size):
            fingerprint = cache_fingerprint(dataset, modality_columns, names, fingerprints)
            if os.path.exists(os.path.join(folder, f"cache-{fingerprint}.arrow")):
                return list(names)
    return []


def _decode_row(
    processor: FusionProcessor,
    row: Mapping[str, Any],
    modality_columns: Mapping[str, str],
    cached: Sequence[str],
    row_name: Any,
) -> dict[str, Any]:
    """One row -> modality -> decoded sample / cached vector / ``None``; raises a located ``BadSampleError``."""
    sample: dict[str, Any] = {}
    for name, column in modality_columns.items():
        value = row.get(column)
        if name in cached and row.get(embeds_column(name)) is not None:
            sample[name] = np.asarray(row[embeds_column(name)], dtype=np.float32)
            continue
        try:
            sample[name] = None if value is None else processor.decode(name, value)
        except BadSampleError as error:
            raise error.locate(column=column, row=row_name) from error.__cause__
    return sample


def _decode_part(
    processor: FusionProcessor,
    part: Mapping[str, list[Any]],
    start: int,
    modality_columns: Mapping[str, str],
    cached: Sequence[str],
    skip_bad_samples: bool,
    label_column: str | None,
    sinks: tuple[list, list, list],
) -> list[dict[str, Any]]:
    """Decode a slice of rows (columnar ``part``, first row at dataset position ``start``); appends each good
    row's position and label, and each bad row's error, to ``sinks`` = ``(rows, labels, errors)``."""
    rows, labels, errors = sinks
    samples = []
    for offset, values in enumerate(zip(*part.values(), strict=True)):
        row = dict(zip(part, values, strict=True))
        row_name = row.get(ROW_INDEX_COLUMN, start + offset)
        try:
            samples.append(_decode_row(processor, row, modality_columns, cached, row_name))
        except BadSampleError as error:
            if not skip_bad_samples:
                raise
            logger.warning("skipping %s", error)
            errors.append({"row": row_name, "modality": error.modality, "column": error.column,
                           "path": error.path, "reason": error.reason})  # fmt: skip
            continue
        rows.append(start + offset)
        if label_column is not None:
            labels.append(row[label_column])
    return samples


def _model_batch(
    processor: FusionProcessor, samples: list[dict[str, Any]], cached: Sequence[str], device: torch.device
) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Decoded samples -> model inputs and the ``[n, M]`` presence of each modality."""
    names = list(processor.modalities)
    present = np.array([[sample.get(name) is not None for name in names] for sample in samples], dtype=bool)
    live = {
        name: [sample.get(name) for sample in samples]
        for i, name in enumerate(names)
        if name not in cached and present[:, i].any()
    }
    batch: dict[str, torch.Tensor] = dict(processor.process_decoded(live)) if live else {}
    for name in cached:
        batch.update(_embeds_fields(name, [sample.get(name) for sample in samples]))
    return {key: value.to(device) for key, value in batch.items()}, present


def _ablated(batch: dict[str, torch.Tensor], name: str, size: int) -> dict[str, torch.Tensor]:
    """``batch`` with modality ``name`` masked out for every sample."""
    device = next(iter(batch.values())).device
    return {**batch, f"{name}_mask": torch.zeros(size, dtype=torch.bool, device=device)}


def predict_dataset(
    model: FusionModel,
    processor: FusionProcessor,
    dataset: Dataset,
    modality_columns: Mapping[str, str] | None = None,
    *,
    label_column: str | None = None,
    batch_size: int = 32,
    skip_bad_samples: bool = False,
    ablations: Sequence[str] = (),
    use_cache: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> PredictionOutput:
    """Logits for every readable row of ``dataset``, in order.

    Args:
        model / processor: a fusion model and its processor.
        dataset: raw rows (as [`load_fusion_dataset`] gives them).
        modality_columns: modality -> column (default: each modality reads its own name; a modality with no
            column is missing for every row).
        label_column: also return this column for the predicted rows.
        batch_size: rows per model call.
        skip_bad_samples: report unreadable rows in ``errors`` and go on; ``False`` raises the first
            [`BadSampleError`] (it names the row, column, modality and file).
        ablations: modalities to mask out, one at a time, for extra logits (``logits[name]``).
        use_cache: read embeddings an earlier run cached for this data and model ([`find_cached_embeddings`]).
        device: where to run (default: where the model is).
        progress: show a progress bar.
    """
    from tqdm.auto import tqdm

    names = model.config.modality_names
    if modality_columns is None:
        modality_columns = {name: name for name in names if name in dataset.column_names}
    modality_columns = {n: c for n, c in modality_columns.items() if c in dataset.column_names}
    unknown = sorted(set(modality_columns) - set(names)) + sorted(set(ablations) - set(names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the model's modalities are {names}")
    cached = find_cached_embeddings(dataset, model, processor, modality_columns) if use_cache else []
    if cached:
        logger.info(f"predict: reusing the embedding cache of {cached} (their encoders are skipped)")
        dataset = cache_embeddings(dataset, model, processor, modality_columns, cached)
    device = torch.device(device) if device is not None else model.classifier.weight.device
    was_training = model.training
    model.eval()
    logits: dict[str | None, list[np.ndarray]] = {key: [] for key in (None, *ablations)}
    rows, presence, labels, errors = [], [], [], []
    source = dataset.with_format(None)
    try:
        for start in tqdm(range(0, len(source), batch_size), desc="predicting", disable=not progress):
            part = source[start : start + batch_size]
            samples = _decode_part(processor, part, start, modality_columns, cached, skip_bad_samples,
                                   label_column, (rows, labels, errors))  # fmt: skip
            if not samples:
                continue
            batch, present = _model_batch(processor, samples, cached, device)
            presence.append(present)
            with torch.no_grad():
                for key in logits:
                    inputs = batch if key is None else _ablated(batch, key, len(samples))
                    logits[key].append(model(**inputs).logits.float().cpu().numpy())
    finally:
        model.train(was_training)
    num_labels = model.config.num_labels
    return PredictionOutput(
        logits={
            k: np.concatenate(v) if v else np.zeros((0, num_labels), np.float32) for k, v in logits.items()
        },
        rows=rows,
        present=np.concatenate(presence) if presence else np.zeros((0, len(names)), bool),
        modalities=list(names),
        errors=errors,
        labels=np.asarray(labels) if label_column is not None else None,
        cached_modalities=cached,
    )


def scores_from_logits(logits: np.ndarray, problem_type: str | None) -> np.ndarray:
    """Class probabilities: softmax (single-label), a sigmoid per class (multi-label), the value (regression)."""
    if problem_type == "regression":
        return logits
    tensor = torch.from_numpy(logits)
    if problem_type == "multi_label_classification":
        return tensor.sigmoid().numpy()
    return tensor.softmax(dim=-1).numpy()
