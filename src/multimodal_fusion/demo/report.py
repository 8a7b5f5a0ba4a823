"""The demo's report: ``report.md`` with its tables, and the plots it shows (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODALITIES = ("image", "audio", "text")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _slanted_labels(ax: Any) -> None:
    """Tick labels at 30 degrees, right-aligned under their bar, so long names (``low_rank_tensor``) never
    overlap however many bars there are."""
    ax.tick_params(axis="x", labelsize=8)
    for label in ax.get_xticklabels():
        label.set(rotation=30, ha="right", rotation_mode="anchor")


def plot_accuracy_bars(results: dict[str, Any], path: Path) -> None:
    """Test accuracy per unimodal network (grey) and per fusion (blue); the figure widens with the bar count."""
    plt = _pyplot()
    names = [f"{m} (unimodal)" for m in results["unimodal"]] + [f"{f} (fused)" for f in results["fused"]]
    values = list(results["unimodal"].values()) + list(results["fused"].values())
    colors = ["#9e9e9e"] * len(results["unimodal"]) + ["#1f77b4"] * len(results["fused"])
    fig, ax = plt.subplots(figsize=(max(8.0, 0.8 * len(names) + 2), 4.5))
    bars = ax.bar(names, values, color=colors)
    ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test accuracy")
    ax.set_title("Three pretrained unimodal networks vs. their fusion")
    _slanted_labels(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_curves(per_fusion: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for fusion, run in per_fusion.items():
        train = [(e["step"], e["loss"]) for e in run["log_history"] if "loss" in e]
        evals = [(e["epoch"], e["eval_accuracy"]) for e in run["log_history"] if "eval_accuracy" in e]
        if train:
            loss_ax.plot(*zip(*train, strict=True), label=fusion)
        if evals:
            acc_ax.plot(*zip(*evals, strict=True), marker="o", label=fusion)
    loss_ax.set(xlabel="step", ylabel="training loss", title="Training loss")
    acc_ax.set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy")
    for ax in (loss_ax, acc_ax):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def confusion_matrix(labels: list[int], predictions: list[int], num_labels: int) -> np.ndarray:
    matrix = np.zeros((num_labels, num_labels), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def plot_confusion(matrix: np.ndarray, title: str, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    image = ax.imshow(matrix, cmap="Blues")
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                    color="white" if value > matrix.max() / 2 else "black")  # fmt: skip
    ax.set(
        xlabel="predicted digit",
        ylabel="true digit",
        title=title,
        xticks=range(len(matrix)),
        yticks=range(len(matrix)),
    )
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_modality_weights(weights: dict[str, dict[str, float]], path: Path) -> None:
    """Stacked mean modality weight per weighing fusion; the legend sits outside the bars."""
    plt = _pyplot()
    fusions = list(weights)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(fusions) + 3), 4))
    bottom = np.zeros(len(fusions))
    for modality in MODALITIES:
        values = np.array([weights[f].get(modality, 0.0) for f in fusions])
        ax.bar(fusions, values, bottom=bottom, label=modality)
        bottom += values
    ax.set(ylabel="mean weight on the test split", title="Which modality the fusion relies on", ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    _slanted_labels(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out_dir: Path, results: dict[str, Any], per_fusion: dict[str, Any]) -> Path:
    """Plots plus ``report.md`` in ``out_dir``."""
    out_dir = Path(out_dir)
    plot_accuracy_bars(results, out_dir / "accuracy.png")
    plot_training_curves(per_fusion, out_dir / "training_curves.png")
    best = max(results["fused"], key=results["fused"].get)
    matrix = confusion_matrix(per_fusion[best]["labels"], per_fusion[best]["predictions"], 10)
    plot_confusion(matrix, f"{best} fusion, test split", out_dir / "confusion_matrix.png")
    if results["modality_weights"]:
        plot_modality_weights(results["modality_weights"], out_dir / "modality_weights.png")
    lines = [
        "# Demo: three pretrained unimodal networks, fused",
        "",
        "Data: generated digits 0-9 as handwriting images, DTMF tones and phrases; each modality of each sample is "
        "replaced by uninformative content with probability 0.3, so one modality alone cannot exceed ~0.73.",
        "",
        "| model | test accuracy |",
        "|---|---|",
        *[f"| {m} alone (stage 1) | {v:.3f} |" for m, v in results["unimodal"].items()],
        *[f"| **{f} fusion** | **{v:.3f}** |" for f, v in results["fused"].items()],
        "",
        "Ablation: test accuracy with one modality masked out at test time.",
        "",
        "| fusion | all | without image | without audio | without text |",
        "|---|---|---|---|---|",
        *[
            f"| {f} | {results['fused'][f]:.3f} | "
            + " | ".join(f"{results['ablation'][f][m]:.3f}" for m in MODALITIES)
            + " |"
            for f in results["fused"]
        ],
        "",
        "![accuracy](accuracy.png)",
        "",
        "![training curves](training_curves.png)",
        "",
        f"![confusion matrix of the best fusion ({best})](confusion_matrix.png)",
        "",
    ]
    if results["modality_weights"]:
        lines += ["![modality weights](modality_weights.png)", ""]
    lines += [
        "Time (s): " + ", ".join(f"{k[:-2]} {v}" for k, v in results["seconds"].items()),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
