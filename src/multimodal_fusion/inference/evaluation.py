"""Evaluation report of a trained fusion model on labelled data: metrics, confusion matrix, modality ablation.

[`evaluation_report`] turns a [`PredictionOutput`] with labels and ablations into ``metrics.json`` (the shipped
fusion metric: accuracy / macro-F1 / per-class F1, or the multi-label / regression metrics),
``confusion_matrix.csv`` and ``ablation.csv`` (the metrics with each modality masked out for every row), plus
``confusion_matrix.png`` and ``ablation.png`` (matplotlib, from the ``demo`` extra).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from transformers import EvalPrediction, PretrainedConfig

from ..training.metrics import build_compute_metrics
from .prediction import PredictionOutput


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> np.ndarray:
    """``[num_labels, num_labels]`` counts; row = true class, column = predicted class."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


def _metrics(logits: np.ndarray, labels: np.ndarray, problem_type: str, id2label: Any) -> dict[str, float]:
    compute = build_compute_metrics(problem_type, id2label if problem_type != "regression" else None)
    return compute(EvalPrediction(predictions=logits, label_ids=labels))


def evaluation_report(
    output: PredictionOutput, config: PretrainedConfig, out_dir: str | Path, plots: bool = True
) -> dict[str, Any]:
    """Write the report files to ``out_dir`` and return ``{"metrics", "ablation", "confusion_matrix"}``.

    ``output`` must hold labels (``label_column``) and may hold ablation logits (``logits[name]``).
    Raises ``ValueError`` when it holds no labelled row.
    """
    if output.labels is None or len(output.labels) == 0:
        raise ValueError("evaluation needs labelled rows; none of the data's rows could be predicted")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    problem_type = config.problem_type or "single_label_classification"
    id2label = {int(k): v for k, v in config.id2label.items()}
    metrics = _metrics(output.logits[None], output.labels, problem_type, id2label)
    metrics["num_samples"] = len(output.rows)
    metrics["skipped_samples"] = len(output.errors)
    ablation = {
        "all modalities": {k: v for k, v in metrics.items() if isinstance(v, float)},
        **{
            f"without {name}": _metrics(output.logits[name], output.labels, problem_type, id2label)
            for name in output.logits
            if name is not None
        },
    }
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    keys = sorted({k for row in ablation.values() for k in row if not k.startswith("f1_")})
    with open(out_dir / "ablation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", *keys])
        for setting, row in ablation.items():
            writer.writerow([setting, *(row.get(k, "") for k in keys)])
    result: dict[str, Any] = {"metrics": metrics, "ablation": ablation, "confusion_matrix": None}
    if problem_type == "single_label_classification":
        names = [id2label[i] for i in range(len(id2label))]
        matrix = confusion_matrix(output.labels, output.logits[None].argmax(-1), len(names))
        with open(out_dir / "confusion_matrix.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["true \\ predicted", *names])
            writer.writerows([[names[i], *map(int, matrix[i])] for i in range(len(names))])
        result["confusion_matrix"] = matrix
        if plots:
            plot_confusion_matrix(matrix, names, out_dir / "confusion_matrix.png")
    if plots:
        metric = "accuracy" if "accuracy" in metrics else next(iter(ablation["all modalities"]))
        plot_ablation(ablation, metric, out_dir / "ablation.png")
    return result


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "plots need matplotlib: pip install 'multimodal-fusion[demo]' (or pass --no-plots)"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray, names: list[str], path: Path) -> None:
    """Heat map of ``matrix`` with the counts written in the cells."""
    plt = _pyplot()
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ablation(ablation: dict[str, dict[str, float]], metric: str, path: Path) -> None:
    """Bar chart of ``metric`` with all modalities and with each one masked out."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(ablation)), 4))
    bars = ax.bar(list(ablation), [row.get(metric, np.nan) for row in ablation.values()], color="#1f77b4")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set(ylabel=metric, title="Modality ablation (each modality masked out for every sample)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
