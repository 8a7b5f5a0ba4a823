"""``compute_metrics`` for Trainer, through `evaluate` with the metric module shipped in this package."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import evaluate
import numpy as np
from transformers import EvalPrediction

FUSION_METRIC_PATH = str(Path(__file__).parent / "fusion_metric" / "fusion_metric.py")
"""Local `evaluate` module: accuracy/F1 (single-label), micro/macro-F1 (multi-label), MSE/MAE/R^2."""


def load_metric(problem_type: str, metric: str | None = None) -> evaluate.EvaluationModule:
    """The shipped metric for ``problem_type``, or ``metric`` (a Hub metric name or a local path) when given."""
    if metric:
        return evaluate.load(metric)
    return evaluate.load(FUSION_METRIC_PATH, config_name=problem_type)


def _logits(predictions: Any) -> np.ndarray:
    return np.asarray(predictions[0] if isinstance(predictions, (tuple, list)) else predictions)


def build_compute_metrics(
    problem_type: str, id2label: dict[int, str] | None = None, metric: str | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A ``compute_metrics(eval_pred)`` turning logits into predictions for ``problem_type``."""
    module = load_metric(problem_type, metric)
    label_names = [id2label[i] for i in sorted(id2label)] if id2label else None

    def compute_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
        logits = _logits(eval_pred.predictions)
        references = np.asarray(eval_pred.label_ids)
        if problem_type == "regression":
            predictions = logits.reshape(len(references), -1)
            references = references.reshape(len(references), -1)
        elif problem_type == "multi_label_classification":
            predictions = (logits > 0).astype(np.int64)
            references = references.astype(np.int64)
        else:
            predictions = logits.argmax(axis=-1)
        kwargs = (
            {"label_names": label_names}
            if problem_type == "single_label_classification" and not metric
            else {}
        )
        return module.compute(predictions=predictions, references=references, **kwargs)

    return compute_metrics
