"""Fine-tuning strategies on the demo data: fused test accuracy and pretrained-task retention.

Strategies (same data, encoders, fusion and budget): all encoders frozen, full fine-tuning, top-2 blocks,
gradual unfreezing (one block per epoch), and gradual unfreezing + L2-SP. *Retention* puts each encoder's
stage-1 unimodal head back on the encoder after fusion training and measures that head's test accuracy on its
own modality (its pretraining task); frozen encoders retain it exactly.

Run: ``.venv/bin/python benchmarks/finetune_strategies.py [--num-samples 1500 --epochs 4]``. The last line is
one JSON object with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer  # noqa: E402

from multimodal_fusion.configs import config_path  # noqa: E402
from multimodal_fusion.demo.dataset import generate_demo_dataset  # noqa: E402
from multimodal_fusion.demo.pretrain import predict_log_probs, pretrain_unimodal  # noqa: E402
from multimodal_fusion.demo.unimodal import UnimodalClassifier  # noqa: E402
from multimodal_fusion.demo.unimodal_inputs import ModalityInputs, read_split  # noqa: E402
from multimodal_fusion.training.run_fusion import main as run_training  # noqa: E402

MODALITIES = ("image", "audio", "text")
CONFIG = config_path("demo.yaml")
STRATEGIES = {
    "all frozen": ["--trainable_layers", "0"],
    "full fine-tune": ["--trainable_layers", "all"],
    "top-2 blocks": ["--trainable_layers", "2"],
    "gradual unfreezing": ["--trainable_layers", "0", "--unfreeze_schedule", "gradual"],
    "gradual + L2-SP": ["--trainable_layers", "0", "--unfreeze_schedule", "gradual", "--l2sp_weight", "1.0"],
}
PROCESSORS = {"image": AutoImageProcessor, "audio": AutoFeatureExtractor, "text": AutoTokenizer}


def retention(fused_dir: Path, pretrained_dir: Path, data_dir: Path) -> dict[str, float]:
    """Each stage-1 head's test accuracy on top of the fused model's (possibly fine-tuned) encoder."""
    from multimodal_fusion import FusionModel

    fused = FusionModel.from_pretrained(fused_dir).eval()
    rows = read_split(data_dir, "test")
    labels = torch.tensor([int(row["label"]) for row in rows])
    scores = {}
    for modality in MODALITIES:
        head = UnimodalClassifier.from_pretrained(pretrained_dir / modality, encoder=fused.encoders[modality])
        inputs = ModalityInputs(
            modality, rows, PROCESSORS[modality].from_pretrained(pretrained_dir / modality)
        )
        scores[modality] = round(
            (predict_log_probs(head, inputs).argmax(-1) == labels).float().mean().item(), 4
        )
    return scores


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-samples", type=int, default=1500)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    root = Path(args.out_dir or tempfile.mkdtemp(prefix="finetune-strategies-"))
    data_dir, pretrained_dir = root / "data", root / "pretrained"
    generate_demo_dataset(data_dir, num_samples=args.num_samples, progress=False)
    stage1 = pretrain_unimodal(data_dir, pretrained_dir, progress=False)
    encoders = json.dumps({m: str(pretrained_dir / m) for m in MODALITIES})
    table = {
        "pretrained (stage 1)": {
            "fused_accuracy": None,
            "retention": {m: stage1[m]["test_accuracy"] for m in MODALITIES},
        }
    }
    for name, flags in STRATEGIES.items():
        out = root / name.replace(" ", "_").replace("+", "plus")
        start = time.perf_counter()
        results = run_training(
            [str(CONFIG), "--encoders", encoders, "--train_file", str(data_dir / "train.csv"),
             "--validation_file", str(data_dir / "validation.csv"), "--test_file", str(data_dir / "test.csv"),
             "--output_dir", str(out), "--num_train_epochs", str(args.epochs), "--fusion", "attention",
             "--disable_tqdm", "true", "--eval_strategy", "no", "--learning_rate", "1e-3",
             "--encoder_learning_rate", "2e-4", *flags]
        )  # fmt: skip
        table[name] = {
            "fused_accuracy": round(results["test_accuracy"], 4),
            "retention": retention(out, pretrained_dir, data_dir),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(name, table[name], flush=True)
    print("| strategy | fused test acc | image head | audio head | text head |")
    print("|---|---|---|---|---|")
    for name, row in table.items():
        fused = "-" if row["fused_accuracy"] is None else f"{row['fused_accuracy']:.3f}"
        print(f"| {name} | {fused} | " + " | ".join(f"{row['retention'][m]:.3f}" for m in MODALITIES) + " |")
    print(json.dumps(table))
    return table


if __name__ == "__main__":
    main()
