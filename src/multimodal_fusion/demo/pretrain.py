"""Stage 1 of the demo: pretrain one tiny encoder per modality on its own modality of the demo dataset.

Each encoder is trained with a linear head (``UnimodalClassifier``) on *all* train rows, including the ~30%
whose content of that modality is noise / filler with a label it cannot predict. Training on them is
deliberate: the head learns to answer "uniform" on uninformative input instead of guessing confidently, so its
probabilities are calibrated (which is what makes combining modalities work), and the encoder has seen the
noise it will meet again in the fusion stage rather than treating it as out-of-distribution. The models still
reach 94-100% on clean rows, so little is lost on the informative part.

The command line runs torch with one intra-op thread by default: these models are so small that a second
thread gains only ~1.3x on idle cores, while on cores shared with other jobs two threads ran 10-30x slower
(each tiny op waits for the descheduled partner thread).

Image and audio training are bit-reproducible for a seed. The text vocabulary is not quite: the ``tokenizers``
WordPiece trainer breaks frequency ties in hash order, so intermediate sub-word tokens and token ids vary
between runs (every train word still ends up a single token), and with them the text model's exact numbers.

Layout of ``out_dir``::

    image/   config.json, model.safetensors (ViTModel), preprocessor_config.json (ViTImageProcessor),
             unimodal_head.safetensors, unimodal_head.json
    audio/   config.json, model.safetensors (Wav2Vec2Model), preprocessor_config.json
             (Wav2Vec2FeatureExtractor), unimodal_head.safetensors, unimodal_head.json
    text/    config.json, model.safetensors (BertModel), tokenizer.json, tokenizer_config.json
             (BertTokenizer with a WordPiece vocabulary trained on the train texts), unimodal_head.*
    unimodal_results.json   per modality: test / validation accuracy (overall, clean rows, corrupted rows),
                            training time; plus the accuracy of averaging the three heads' log-probabilities
                            ("late_fusion"). ``ideal_test_accuracy`` is what a perfect model is expected
                            to score given the test split's corruption flags (right on informative rows,
                            chance 1/10 on the rest), so luck on uninformative rows can exceed it.

Each folder loads with ``AutoModel.from_pretrained`` and ``AutoImageProcessor`` / ``AutoFeatureExtractor`` /
``AutoTokenizer.from_pretrained``, i.e. like any Hub encoder.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .synthesis import DIGIT_NAMES
from .text_tokenizer import train_wordpiece_tokenizer
from .unimodal import (
    DEFAULT_POOLING,
    UnimodalClassifier,
    build_audio_encoder,
    build_image_encoder,
    build_text_encoder,
)
from .unimodal_inputs import ModalityInputs, read_split

MODALITIES = ("image", "audio", "text")
DEFAULT_EPOCHS = {"image": 15, "audio": 2, "text": 10}
DEFAULT_LEARNING_RATE = {"image": 1e-3, "audio": 3e-3, "text": 3e-3}
"""Per modality, tuned on the validation split: each model gets close to 100% on clean rows in 5-30 s of one
CPU core (the ViT learns slowest: no convolutional prior and only ~1700 clean glyphs to learn from)."""
NUM_LABELS = 10


def _build_text(train_rows: list[dict[str, str]]) -> tuple[torch.nn.Module, Any]:
    tokenizer = train_wordpiece_tokenizer(row["text"] for row in train_rows)
    return build_text_encoder(tokenizer), tokenizer


_BUILDERS = {
    "image": lambda rows: build_image_encoder(),
    "audio": lambda rows: build_audio_encoder(),
    "text": _build_text,
}
"""The demo's columns -> its untrained encoder and processor (the text one's tokenizer is trained on the rows)."""


def _build(modality: str, train_rows: list[dict[str, str]]) -> tuple[torch.nn.Module, Any]:
    return _BUILDERS[modality](train_rows)


def _lr_lambda(total_steps: int, warmup_fraction: float = 0.1):
    warmup = max(1, int(warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def train_classifier(
    model: UnimodalClassifier,
    inputs: ModalityInputs,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    weight_decay: float = 0.01,
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
    loss_fn: Any = torch.nn.functional.cross_entropy,
) -> float | None:
    """AdamW with linear warmup + cosine decay, gradient clipping at 1.0; returns the mean loss of the last
    epoch (``None`` when no step ran). ``max_steps`` caps the number of optimizer steps (smoke tests);
    ``loss_fn(logits, labels)`` defaults to cross-entropy (``binary_cross_entropy_with_logits`` for multi-label)."""
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(total))
    model.train()
    step, epoch_loss = 0, None
    with tqdm(total=total, desc=f"stage 1 {inputs.modality}", unit="step", disable=not progress) as bar:
        while step < total:
            losses = []
            for indices in inputs.index_batches(batch_size, rng):
                if step >= total:
                    break
                logits = model(**inputs.batch(indices, rng))
                loss = loss_fn(logits, labels[torch.as_tensor(indices)])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
            epoch_loss = float(np.mean(losses))
    return epoch_loss


@torch.no_grad()
def predict_log_probs(
    model: UnimodalClassifier, inputs: ModalityInputs, batch_size: int = 128
) -> torch.Tensor:
    """Log-probabilities ``[N, num_labels]`` for every row of ``inputs``, in row order."""
    model.eval()
    out = torch.empty(len(inputs), model.classifier.out_features)
    for indices in inputs.index_batches(batch_size):
        out[torch.as_tensor(indices)] = model(**inputs.batch(indices)).log_softmax(-1)
    return out


def _accuracy(
    log_probs: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None
) -> float | None:
    correct = log_probs.argmax(-1) == labels
    if rows is not None:
        correct = correct[rows]
    return round(correct.float().mean().item(), 4) if len(correct) else None


def _per_modality(value: dict[str, Any] | float | None, default: dict[str, Any]) -> dict[str, Any]:
    if value is None:
        return dict(default)
    if isinstance(value, dict):
        return {**default, **value}
    return dict.fromkeys(MODALITIES, value)


def _labels(rows: list[dict[str, str]]) -> torch.Tensor:
    return torch.tensor([int(row["label"]) for row in rows])


def _flags(rows: list[dict[str, str]], modality: str) -> torch.Tensor:
    return torch.tensor([row[f"{modality}_corrupted"] == "1" for row in rows])


def _unimodal_metrics(
    log_probs: dict[str, torch.Tensor], labels: dict[str, torch.Tensor], corrupted: torch.Tensor
) -> dict[str, Any]:
    """Test accuracy overall, on clean and on corrupted samples (``corrupted``: the test split's flags), the
    ideal accuracy, validation accuracy and the mean confidence on corrupted samples."""
    test = log_probs["test"]
    return {
        "test_accuracy": _accuracy(test, labels["test"]),
        "test_accuracy_clean": _accuracy(test, labels["test"], ~corrupted),
        "test_accuracy_corrupted": _accuracy(test, labels["test"], corrupted),
        "ideal_test_accuracy": round((~corrupted).float().mean().item() * 0.9 + 0.1, 4),
        "validation_accuracy": _accuracy(log_probs["validation"], labels["validation"]),
        "mean_confidence_corrupted": round(test[corrupted].exp().amax(-1).mean().item(), 4)
        if corrupted.any()
        else None,
    }


def _late_fusion(
    test_log_probs: dict[str, torch.Tensor], test_rows: list[dict[str, str]], test_labels: torch.Tensor
) -> dict[str, Any]:
    """Late-fusion baseline: argmax of the mean of the unimodal heads' log-probabilities on the test split."""
    all_corrupted = torch.stack([_flags(test_rows, m) for m in test_log_probs]).all(0)
    combined = torch.stack(list(test_log_probs.values())).mean(0)
    return {
        "method": "argmax of the mean of the unimodal heads' log-probabilities",
        "modalities": list(test_log_probs),
        "test_accuracy": _accuracy(combined, test_labels),
        "ideal_test_accuracy": round(1.0 - all_corrupted.float().mean().item() * 0.9, 4),
    }


def _pretrain_modality(
    modality: str,
    rows: dict[str, list[dict[str, str]]],
    labels: dict[str, Any],
    out_dir: Path,
    seed: int,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    max_steps: int | None,
    progress: bool,
) -> tuple[dict[str, Any], Any]:
    """Train, evaluate and save the encoder of one modality; returns ``(its results, its test log-probs)``."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    encoder, processor = _build(modality, rows["train"])
    model = UnimodalClassifier(encoder, NUM_LABELS, pooling=DEFAULT_POOLING[modality])
    inputs = {split: ModalityInputs(modality, split_rows, processor) for split, split_rows in rows.items()}
    final_loss = train_classifier(
        model,
        inputs["train"],
        labels["train"],
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_steps=max_steps,
        seed=seed,
        progress=progress,
    )
    log_probs = {split: predict_log_probs(model, inputs[split]) for split in ("validation", "test")}
    model.save_pretrained(out_dir / modality, id2label=dict(enumerate(DIGIT_NAMES)))
    processor.save_pretrained(out_dir / modality)
    result = {
        **_unimodal_metrics(log_probs, labels, _flags(rows["test"], modality)),
        "final_train_loss": None if final_loss is None else round(final_loss, 4),
        "epochs": epochs,
        "learning_rate": learning_rate,
        "num_parameters": sum(p.numel() for p in encoder.parameters()),
        "seconds": round(time.perf_counter() - start, 1),
        "folder": modality,
    }
    return result, log_probs["test"]


def pretrain_unimodal(
    data_dir: str | Path,
    out_dir: str | Path,
    modalities: Sequence[str] = MODALITIES,
    epochs: dict[str, int] | int | None = None,
    batch_size: int = 32,
    learning_rate: dict[str, float] | float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and save one encoder per modality (stage 1); see the module docstring for ``out_dir``.

    Args:
        data_dir: a folder written by ``generate_demo_dataset`` (``train/validation/test.csv`` + files).
        out_dir: where ``{modality}/`` folders and ``unimodal_results.json`` go.
        modalities: which of ``image``, ``audio``, ``text`` to train.
        epochs: per modality (dict) or for all (int); default ``DEFAULT_EPOCHS``.
        batch_size: of every modality.
        learning_rate: peak AdamW learning rate (warmup + cosine schedule), per modality (dict) or for all
            (float); default ``DEFAULT_LEARNING_RATE``.
        max_steps: cap on optimizer steps per modality (smoke tests).
        seed: seeds initialisation, shuffling and dropout.
        progress: show tqdm bars.

    Returns:
        The content of ``unimodal_results.json``.
    """
    unknown = set(modalities) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; expected a subset of {MODALITIES}")
    epochs = _per_modality(epochs, DEFAULT_EPOCHS)
    learning_rate = _per_modality(learning_rate, DEFAULT_LEARNING_RATE)
    out_dir = Path(out_dir)
    rows = {split: read_split(data_dir, split) for split in ("train", "validation", "test")}
    labels = {split: _labels(split_rows) for split, split_rows in rows.items()}

    results: dict[str, Any] = {}
    test_log_probs = {}
    for modality in modalities:
        settings = {
            "epochs": epochs[modality],
            "learning_rate": learning_rate[modality],
            "batch_size": batch_size,
            "max_steps": max_steps,
            "progress": progress,
        }
        seed_of_modality = seed + MODALITIES.index(modality)  # the same model whichever modalities are run
        results[modality], test_log_probs[modality] = _pretrain_modality(
            modality, rows, labels, out_dir, seed_of_modality, **settings
        )

    if len(test_log_probs) > 1:
        results["late_fusion"] = _late_fusion(test_log_probs, rows["test"], labels["test"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "unimodal_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stage 1: pretrain tiny image / audio / text encoders.")
    parser.add_argument("--data-dir", required=True, help="folder written by multimodal_fusion.demo.dataset")
    parser.add_argument("--out-dir", required=True, help="where {image,audio,text}/ and results json go")
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    parser.add_argument(
        "--epochs", type=int, default=None, help=f"for every modality (default {DEFAULT_EPOCHS})"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help=f"for every modality (default {DEFAULT_LEARNING_RATE})",
    )
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: these tiny models gain ~1.3x from 2 threads on idle cores "
        "but run 10-30x slower with 2 when the cores are shared)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    results = pretrain_unimodal(
        args.data_dir,
        args.out_dir,
        modalities=args.modalities,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        seed=args.seed,
    )
    for name, result in results.items():
        print(f"{name}: test accuracy {result['test_accuracy']} (ideal {result['ideal_test_accuracy']})")


if __name__ == "__main__":
    main()
