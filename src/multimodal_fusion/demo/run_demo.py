"""The offline demo, end to end (``make demo`` / ``python -m multimodal_fusion.demo``).

1. Generate the tri-modal digits dataset (real files + csv).
2. Stage 1: pretrain a tiny ViT, wav2vec2 and BERT, each on its own modality -- the "pretrained networks".
3. Stage 2: fuse them with ``training/run.py``'s pipeline and the packaged ``configs/demo.yaml``, once per fusion
   type; evaluate on the test split and with each modality masked out (ablation).
4. Write ``results.json``, ``report.md`` and plots to the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configs import config_path
from ..model.fusions import FUSION_REGISTRY
from .report import write_report

logger = logging.getLogger(__name__)

MODALITIES = ("image", "audio", "text")
DEFAULT_CONFIG = config_path("demo.yaml")


def _ablation_collator(collator, modality: str):
    """The collator with ``modality`` masked out for every sample (the model then ignores its input)."""

    def collate(rows):
        batch = collator(rows)
        size = len(batch["labels"])
        batch[f"{modality}_mask"] = torch.zeros(size, dtype=torch.bool)
        return batch

    return collate


def fuse(
    fusion: str, config: Path, encoders: dict[str, str], data_dir: Path, out_dir: Path, extra: list[str]
) -> dict[str, Any]:
    """Stage 2 for one fusion type: train, test, ablate; returns its figures."""
    from ..training.run_fusion import parse_arguments, run

    argv = [
        str(config),
        "--fusion", fusion,
        "--encoders", json.dumps(encoders),
        "--train_file", str(data_dir / "train.csv"),
        "--validation_file", str(data_dir / "validation.csv"),
        "--test_file", str(data_dir / "test.csv"),
        "--output_dir", str(out_dir),
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    output = run(*parse_arguments(argv))
    trainer, test = output.trainer, output.splits["test"]
    prediction = trainer.predict(test, metric_key_prefix="test")
    ablation = {}
    collator = trainer.data_collator
    for modality in MODALITIES:
        trainer.data_collator = _ablation_collator(collator, modality)
        ablation[modality] = trainer.predict(test, metric_key_prefix="test").metrics["test_accuracy"]
    trainer.data_collator = collator
    return {
        "test_accuracy": prediction.metrics["test_accuracy"],
        "test_macro_f1": prediction.metrics["test_macro_f1"],
        "ablation": ablation,
        "modality_weights": {
            m: prediction.metrics[f"test_modality_weight_{m}"]
            for m in MODALITIES
            if f"test_modality_weight_{m}" in prediction.metrics
        },
        "predictions": np.asarray(
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        .argmax(-1)
        .tolist(),
        "labels": np.asarray(prediction.label_ids).tolist(),
        "log_history": trainer.state.log_history,
        "seconds": round(time.perf_counter() - start, 1),
    }


def run_demo(
    out_dir: str | Path = "outputs/demo",
    num_samples: int = 3000,
    fusions: list[str] | None = None,
    config: str | Path = DEFAULT_CONFIG,
    seed: int = 0,
    extra_args: list[str] | None = None,
    stage1_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole demo and return ``results.json``'s content.

    ``extra_args`` are training flags for every stage-2 run (e.g. ``["--num_train_epochs", "1"]``);
    ``stage1_kwargs`` go to ``pretrain_unimodal`` (e.g. ``{"max_steps": 5}`` for a smoke run).
    """
    from .dataset import generate_demo_dataset
    from .pretrain import pretrain_unimodal

    out_dir = Path(out_dir)
    fusions = fusions or sorted(FUSION_REGISTRY)
    timings = {}
    start = time.perf_counter()
    data_dir, pretrained_dir = out_dir / "data", out_dir / "pretrained"
    generate_demo_dataset(data_dir, num_samples=num_samples, seed=seed)
    timings["data_s"] = round(time.perf_counter() - start, 1)
    stage1 = pretrain_unimodal(data_dir, pretrained_dir, seed=seed, **(stage1_kwargs or {}))
    timings["stage1_s"] = round(time.perf_counter() - start - timings["data_s"], 1)
    encoders = {m: str(pretrained_dir / m) for m in MODALITIES}
    per_fusion = {}
    for fusion in fusions:
        logger.warning(f"stage 2: training the '{fusion}' fusion")
        per_fusion[fusion] = fuse(
            fusion,
            Path(config),
            encoders,
            data_dir,
            out_dir / "fusion" / fusion,
            ["--seed", str(seed), *(extra_args or [])],
        )
    timings["stage2_s"] = round(time.perf_counter() - start - timings["data_s"] - timings["stage1_s"], 1)
    timings["total_s"] = round(time.perf_counter() - start, 1)
    results = {
        "unimodal": {m: stage1[m]["test_accuracy"] for m in MODALITIES},
        "fused": {f: r["test_accuracy"] for f, r in per_fusion.items()},
        "ablation": {f: r["ablation"] for f, r in per_fusion.items()},
        "late_fusion_of_unimodal_heads": stage1.get("late_fusion", {}).get("test_accuracy"),
        "ideal_unimodal": {m: stage1[m].get("ideal_test_accuracy") for m in MODALITIES},
        "modality_weights": {
            f: r["modality_weights"] for f, r in per_fusion.items() if r["modality_weights"]
        },
        "fused_macro_f1": {f: r["test_macro_f1"] for f, r in per_fusion.items()},
        "seconds": {**timings, **{f"fusion_{f}_s": r["seconds"] for f, r in per_fusion.items()}},
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    write_report(out_dir, results, per_fusion)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out-dir", default="outputs/demo")
    parser.add_argument("--num-samples", type=int, default=3000)
    parser.add_argument(
        "--fusions", nargs="*", default=None, help=f"default: all of {sorted(FUSION_REGISTRY)}"
    )
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-threads", type=int, default=1,
        help="torch threads; these models are tiny, and a second thread slows them down badly on busy cores",
    )  # fmt: skip
    args, extra = parser.parse_known_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.num_threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    results = run_demo(args.out_dir, args.num_samples, args.fusions, args.config, args.seed, extra)
    print(json.dumps({k: results[k] for k in ("unimodal", "fused", "ablation")}, indent=2))
    print(f"report: {Path(args.out_dir) / 'report.md'}  (total {results['seconds']['total_s']} s)")
    return results


if __name__ == "__main__":
    main()
