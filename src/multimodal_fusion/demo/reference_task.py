"""A demo task that needs token-level fusion: "which digit is at the position the instruction names?".

Each sample is a 32x32 image holding four handwritten digits in a 2x2 grid (each rendered like the digits demo's
glyphs, at 14 px in a 16 px cell) and a short text instruction naming one quadrant ("top left", "the lower right
one", "read the upper-right digit"...). The label is the digit in that quadrant (10 classes). The answer depends
on *which part* of the image the text refers to, so a fusion that sees one pooled vector per modality has to
guess among the image's digits, while a fusion whose text tokens can attend to the image's patch tokens can
read the right cell.

Stage 1 pretrains each encoder on its own modality with an objective that never sees the fusion label:

- image (tiny ViT, 16 px patches: one patch token per digit cell, + CLS): *which digit is under each patch* -- a
  dense (per-token, segmentation-style) cross-entropy of a linear head on every final patch token against the
  digit of the cell that patch lies in. It never sees an instruction, so it cannot learn which cell matters; its
  tokens stay local digit detectors (*what*, not *where*: the token fusions' position embeddings say which cell a
  token is), and any pooled vector of them (mean, CLS, a learned attention query) mixes the cells;
- text (tiny BERT, WordPiece trained on the train texts): *which quadrant is named* (4 classes) from ``[CLS]``.

Layout of ``out_dir`` (``generate_reference_dataset``)::

    images/{split}_{index:05d}.png  32x32 RGB
    train.csv, validation.csv, test.csv  columns: image, text, label, quadrant, digits

Glyphs are split per class between the splits (as in the digits demo), so test images hold unseen handwriting.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .dataset import SPLITS, _glyph_pools, _split_sizes
from .pretrain import predict_log_probs, train_classifier
from .synthesis import render_glyph
from .text_tokenizer import train_wordpiece_tokenizer
from .unimodal import UnimodalClassifier, build_image_encoder, build_text_encoder
from .unimodal_inputs import ModalityInputs

QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
_SYNONYMS = {
    "top": ("top", "upper", "top", "upper"),
    "bottom": ("bottom", "lower", "bottom", "lower"),
}
_TEMPLATES = (
    "{p}",
    "the {p} digit",
    "read the {p} one",
    "which digit is {p}?",
    "look at the {p} corner",
    "{p} please",
    "the number in the {p}",
)
CSV_COLUMNS = ("image", "text", "label", "quadrant", "digits")
PATCH_SIZE = 16
"""ViT patch size on the 32x32 images: 16 = one token per digit cell (4 patch tokens + CLS)."""
STAGE1_EPOCHS = {"image": 15, "text": 2}
STAGE1_LEARNING_RATE = {"image": 1e-3, "text": 3e-3}


def instruction(quadrant: int, rng: np.random.Generator) -> str:
    """A phrase naming quadrant ``quadrant`` (index into ``QUADRANTS``) in one of several wordings."""
    vertical, horizontal = QUADRANTS[quadrant].split()
    vertical = str(rng.choice(_SYNONYMS[vertical]))
    joiner = str(rng.choice([" ", "-"]))
    place = f"{vertical}{joiner}{horizontal}" if rng.random() < 0.8 else f"{horizontal} {vertical}"
    text = str(rng.choice(_TEMPLATES)).format(p=place)
    return text.capitalize() if rng.random() < 0.3 else text


def render_grid(glyphs: list[np.ndarray], rng: np.random.Generator, cell: int = 16) -> Image.Image:
    """Four 8x8 glyphs in a 2x2 grid (row-major: top left, top right, bottom left, bottom right), each rendered
    with ``render_glyph`` into a ``cell``-pixel square; returns a ``2 * cell`` RGB image."""
    canvas = Image.new("RGB", (2 * cell, 2 * cell))
    for position, glyph in enumerate(glyphs):
        tile = render_glyph(glyph, rng, image_size=cell, glyph_size=cell - 2, max_shift=1)
        canvas.paste(tile, ((position % 2) * cell, (position // 2) * cell))
    return canvas


def generate_reference_dataset(
    out_dir: str | Path,
    num_samples: int = 4000,
    seed: int = 0,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict[str, Path]:
    """Write the task (see the module docstring) to ``out_dir``; returns split -> csv path. Labels are balanced
    per split; the same seed gives the same files."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pools = _glyph_pools(rng, split_fractions)
    paths = {}
    for split, size in _split_sizes(num_samples, split_fractions).items():
        labels = rng.permutation(np.arange(size) % 10)
        rows = []
        for index, label in enumerate(labels):
            quadrant = int(rng.integers(4))
            digits = [int(d) for d in rng.integers(0, 10, size=4)]
            digits[quadrant] = int(label)
            glyphs = [pools[split][d][rng.integers(len(pools[split][d]))] for d in digits]
            stem = f"{split}_{index:05d}"
            render_grid(glyphs, rng).save(out_dir / "images" / f"{stem}.png")
            rows.append(
                {
                    "image": f"images/{stem}.png",
                    "text": instruction(quadrant, rng),
                    "label": int(label),
                    "quadrant": quadrant,
                    "digits": " ".join(map(str, digits)),
                }
            )
        paths[split] = out_dir / f"{split}.csv"
        with open(paths[split], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return paths


def read_rows(data_dir: str | Path, split: str) -> list[dict[str, str]]:
    """Rows of ``{split}.csv`` with absolute image paths."""
    data_dir = Path(data_dir)
    with open(data_dir / f"{split}.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["image"] = str(data_dir / row["image"])
    return rows


def _patch_digits(rows: list[dict[str, str]], grid: int = 32 // PATCH_SIZE) -> torch.Tensor:
    """``[N, grid * grid]``: the digit of the cell each patch (row-major) lies in."""
    cells = torch.tensor([[int(d) for d in row["digits"].split()] for row in rows]).view(-1, 2, 2)
    half = grid // 2
    return cells.repeat_interleave(half, dim=1).repeat_interleave(half, dim=2).flatten(1)


class DenseTokenClassifier(torch.nn.Module):
    """A linear head on every final patch token (CLS left out): logits ``[B, num_patches, num_labels]``."""

    def __init__(self, encoder: torch.nn.Module, num_labels: int):
        super().__init__()
        self.encoder = encoder
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.encoder(**inputs).last_hidden_state[:, 1:])


def _dense_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())


def pretrain_reference_encoders(
    data_dir: str | Path,
    out_dir: str | Path,
    epochs: dict[str, int] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Stage 1 (see the module docstring): train and save ``out_dir/image`` and ``out_dir/text`` (encoder,
    processor, stage-1 head); returns and writes ``stage1_results.json`` (image: test accuracy of the per-patch
    digit; text: test quadrant accuracy)."""
    epochs = {**STAGE1_EPOCHS, **(epochs or {})}
    out_dir = Path(out_dir)
    rows = {split: read_rows(data_dir, split) for split in SPLITS}
    results: dict[str, Any] = {}

    torch.manual_seed(seed)
    encoder, processor = build_image_encoder(patch_size=PATCH_SIZE)
    model = DenseTokenClassifier(encoder, 10)
    inputs = {split: ModalityInputs("image", split_rows, processor) for split, split_rows in rows.items()}
    targets = {split: _patch_digits(split_rows) for split, split_rows in rows.items()}
    train_classifier(
        model, inputs["train"], targets["train"], epochs["image"], learning_rate=STAGE1_LEARNING_RATE["image"],
        seed=seed, progress=progress, loss_fn=_dense_loss,
    )  # fmt: skip
    encoder.save_pretrained(out_dir / "image")
    processor.save_pretrained(out_dir / "image")
    with torch.no_grad():
        model.eval()
        logits = torch.cat([model(**inputs["test"].batch(i)) for i in inputs["test"].index_batches(256)])
    results["image"] = {
        "objective": "dense cross-entropy: the digit under each patch token (no instruction, no fusion label)",
        "test_patch_accuracy": round((logits.argmax(-1) == targets["test"]).float().mean().item(), 4),
        "epochs": epochs["image"],
    }

    torch.manual_seed(seed + 1)
    tokenizer = train_wordpiece_tokenizer(row["text"] for row in rows["train"])
    model = UnimodalClassifier(build_text_encoder(tokenizer), 4, pooling="cls")
    inputs = {split: ModalityInputs("text", split_rows, tokenizer) for split, split_rows in rows.items()}
    quadrants = {
        split: torch.tensor([int(r["quadrant"]) for r in split_rows]) for split, split_rows in rows.items()
    }
    train_classifier(
        model, inputs["train"], quadrants["train"], epochs["text"], learning_rate=STAGE1_LEARNING_RATE["text"],
        seed=seed + 1, progress=progress,
    )  # fmt: skip
    correct = predict_log_probs(model, inputs["test"]).argmax(-1) == quadrants["test"]
    model.save_pretrained(out_dir / "text", id2label=dict(enumerate(QUADRANTS)))
    tokenizer.save_pretrained(out_dir / "text")
    results["text"] = {
        "objective": "cross-entropy: which quadrant the instruction names (4 classes), [CLS]",
        "test_accuracy": round(correct.float().mean().item(), 4),
        "epochs": epochs["text"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "stage1_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Generate the quadrant-reference task and pretrain its encoders."
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--encoders-dir", required=True)
    parser.add_argument("--num-samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generate_reference_dataset(args.data_dir, args.num_samples, args.seed)
    print(
        json.dumps(
            pretrain_reference_encoders(args.data_dir, args.encoders_dir, seed=args.seed, progress=True)
        )
    )


if __name__ == "__main__":
    main()
