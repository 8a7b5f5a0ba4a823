"""Batch prediction over a dataset of raw samples, with bad rows reported instead of fatal.

[`predict_dataset`] runs the scoring engine (``scoring.score_rows``) with ``cache="reuse"``: each row is decoded
through the model's processor (files, bytes, arrays, strings; ``None`` = missing modality), the model runs batch
by batch with a progress bar, and it returns the logits, which modalities each row had, and the rows that could not
be read. It reuses embeddings an earlier run already cached for the same data, weights and processor settings
([`find_cached_embeddings`]) but builds none by default: for a single pass over the data a cache would only add a
write (``cache="build"`` builds one). ``multimodal-fusion predict`` and ``evaluate`` run on it; with ``ablations`` it
also scores every row with modalities masked out, from the same decoded batch.

Defaults from the trained folder: ``training/run.py`` saves the modality -> column mapping and the label column it
trained with next to the weights (``training.run_outputs.DATA_SETTINGS_NAME``); when ``modality_columns`` /
``label_column`` are not given they are read from the folder the model was loaded from ([`trained_data_settings`]).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor
from ..training.run_outputs import load_data_settings
from .scoring import PredictionOutput, find_cached_embeddings, score_rows

__all__ = ["PredictionOutput", "find_cached_embeddings", "predict_dataset", "scores_from_logits",
           "trained_data_settings"]  # fmt: skip

logger = logging.getLogger(__name__)


def trained_data_settings(model: FusionModel) -> dict[str, Any]:
    """``{"columns": modality -> column, "label_column": ...}`` the run that trained ``model`` saved in its folder
    (``model.name_or_path``, the folder ``from_pretrained`` loaded); ``{}`` for a model not loaded from such a
    folder (built in memory, or saved by ``save_pretrained`` alone)."""
    return load_data_settings(getattr(model, "name_or_path", None) or "")


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
    cache: str | None = None,
) -> PredictionOutput:
    """Logits for every readable row of ``dataset``, in order (the scoring engine, ``scoring.score_rows``).

    Args:
        model / processor: a fusion model and its processor.
        dataset: raw rows (as [`load_fusion_dataset`] gives them).
        modality_columns: modality -> column (default: the mapping the trained folder saved, else each modality
            reads its own name; a modality with no column is missing for every row).
        label_column: also return this column for the predicted rows (default: the trained folder's label column
            when the dataset has it, else none).
        batch_size: rows per model call.
        skip_bad_samples: report unreadable rows in ``errors`` and go on; ``False`` raises the first
            [`BadSampleError`] (it names the row, column, modality and file).
        ablations: modalities to mask out, one at a time, for extra logits (``logits[name]``).
        use_cache: read embeddings an earlier run cached for this data and model ([`find_cached_embeddings`]);
            ``False`` is ``cache="off"``.
        device: where to run (default: where the model is).
        progress: show a progress bar.
        cache: ``"reuse"`` (default with ``use_cache``) | ``"build"`` | ``"off"``; overrides ``use_cache``.

    Raises ``ValueError`` naming unknown modalities.
    """
    saved = trained_data_settings(model)
    if modality_columns is None and saved.get("columns"):
        modality_columns = {n: c for n, c in saved["columns"].items() if c in dataset.column_names} or None
    if label_column is None and saved.get("label_column") in dataset.column_names:
        label_column = saved["label_column"]
    if modality_columns is None:
        modality_columns = {
            name: name for name in model.config.modality_names if name in dataset.column_names
        }
    return score_rows(
        model, processor, dataset, modality_columns, cache=cache or ("reuse" if use_cache else "off"),
        label_column=label_column, batch_size=batch_size, skip_bad_samples=skip_bad_samples,
        ablations=ablations, device=device, progress=progress,
    )  # fmt: skip


def scores_from_logits(logits: np.ndarray, problem_type: str | None) -> np.ndarray:
    """Class probabilities: softmax (single-label), a sigmoid per class (multi-label), the value (regression)."""
    if problem_type == "regression":
        return logits
    tensor = torch.from_numpy(logits)
    if problem_type == "multi_label_classification":
        return tensor.sigmoid().numpy()
    return tensor.softmax(dim=-1).numpy()
