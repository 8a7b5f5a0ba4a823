"""``train``'s evaluation report: for the validation and test splits, the files ``multimodal-fusion evaluate``
writes (``metrics.json`` with per-class F1, ``confusion_matrix.csv``/``.png``, ``ablation.csv``/``.png``; made by
[`inference.evaluation.evaluation_report`]) from the trainer's own prediction passes (cached embeddings and all),
to ``output_dir/evaluation/{split}/``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..data.data_collator import ROW_INDEX_COLUMN

logger = logging.getLogger(__name__)

REPORT_DIR = "evaluation"
"""Folder under ``output_dir`` holding one report folder per split."""


def masked_collator(collator: Callable, modality: str) -> Callable:
    """``collator`` with ``modality`` masked out (``{modality}_mask`` False) for every sample of each batch."""

    def collate(rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        batch = collator(rows)
        batch[f"{modality}_mask"] = torch.zeros(len(batch["labels"]), dtype=torch.bool)
        return batch

    return collate


def _logits(predictions: Any) -> np.ndarray:
    return np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions, np.float32)


def _kept_rows(dataset: Dataset, skipped: list[dict[str, Any]], count: int) -> list[int]:
    """Positions of the ``count`` predicted rows: all but the skipped ones (by their row index column)."""
    names = dataset[ROW_INDEX_COLUMN] if ROW_INDEX_COLUMN in dataset.column_names else range(len(dataset))
    gone = {record.get("row") for record in skipped}
    rows = [i for i, name in enumerate(names) if name not in gone]
    return rows if len(rows) == count else list(range(count))  # skips seen only in DataLoader workers


def _presence(dataset: Dataset, columns: Mapping[str, str], rows: list[int]) -> np.ndarray:
    """``[len(rows), M]`` bool: whether each row has a value for each modality (read from Arrow)."""
    present = []
    for column in columns.values():
        if column not in dataset.column_names:
            present.append(np.zeros(len(rows), dtype=bool))
            continue
        valid = dataset.select_columns([column]).flatten_indices().data.column(0).is_valid()
        present.append(np.asarray(valid.to_pylist(), dtype=bool)[rows])
    return np.stack(present, axis=1) if present else np.zeros((len(rows), 0), dtype=bool)


def split_report(
    trainer: Any,
    dataset: Dataset,
    evaluation: Any,
    columns: Mapping[str, str],
    out_dir: str | Path,
    skipped: list[dict[str, Any]] = (),
) -> dict[str, Any] | None:
    """Write ``evaluate``'s report of one split to ``out_dir`` and return it (``None`` without labels).

    Args:
        trainer: the run's ``FusionTrainer`` (its collator and model; one more prediction pass per modality for
            the ablation, on every process).
        dataset: the split as the trainer saw it.
        evaluation: the trainer's prediction pass over it (``predictions``, ``label_ids``).
        columns: modality -> column.
        out_dir: the report folder.
        skipped: samples the collator skipped in that pass (``row``, ``column``, ``modality``, ``path``,
            ``reason``).
    """
    from ..inference.evaluation import evaluation_report
    from ..inference.prediction import PredictionOutput

    if evaluation.label_ids is None:
        return None
    logits: dict[str | None, np.ndarray] = {None: _logits(evaluation.predictions)}
    collator = trainer.data_collator
    try:
        for name in columns:
            trainer.data_collator = masked_collator(collator, name)
            logits[name] = _logits(trainer.predict(dataset, metric_key_prefix="ablation").predictions)
    finally:
        trainer.data_collator = collator
    if not trainer.is_world_process_zero():
        return None
    rows = _kept_rows(dataset, list(skipped), len(logits[None]))
    output = PredictionOutput(
        logits=logits, rows=rows, present=_presence(dataset, columns, rows), modalities=list(columns),
        errors=[dict(record) for record in skipped], labels=np.asarray(evaluation.label_ids),
    )  # fmt: skip
    plots = importlib.util.find_spec("matplotlib") is not None
    if not plots:
        logger.info(
            "evaluation report: no plots (they need matplotlib: pip install 'multimodal-fusion[demo]')"
        )
    report = evaluation_report(output, trainer.model.config, out_dir, plots=plots)
    logger.info(f"evaluation report of {len(rows)} rows written to {out_dir}")
    return report


def skip_mark(collator: Any) -> tuple[int, int]:
    """Where the collator's skip count and record list stand now (see [`skipped_since`])."""
    return getattr(collator, "num_skipped", 0), len(getattr(collator, "skipped_samples", []))


def skipped_since(collator: Any, mark: tuple[int, int]) -> list[dict[str, Any]]:
    """The samples the collator skipped since ``mark``; those skipped in DataLoader workers (counted, not
    recorded here) as records with ``row`` None."""
    records = list(getattr(collator, "skipped_samples", [])[mark[1] :])
    missing = getattr(collator, "num_skipped", 0) - mark[0] - len(records)
    return records + [{"row": None, "reason": "skipped in a DataLoader worker"}] * max(missing, 0)
