"""One modality of one demo csv split, turned into batches of model inputs by that modality's processor.

Images and texts are small, so the whole split is processed once and batches are slices. Waveforms are
processed per batch, padded to a multiple of ``AUDIO_PAD_MULTIPLE`` samples: with few distinct shapes, the
CPU conv kernels are planned once per shape instead of once per batch (that alone made the first epoch 5x
slower), and batches are drawn from length-sorted buckets so little compute goes to padding.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from PIL import Image

AUDIO_PAD_MULTIPLE = 2000
IMAGE_MAX_SHIFT = 2


def random_translate(pixel_values: torch.Tensor, max_shift: int, rng: np.random.Generator) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels per axis, filling with the image's minimum (black).

    Training-time augmentation: a ViT has no built-in translation invariance, and the handful of shifts the
    dataset holds per glyph are not enough for a tiny one to learn it.
    """
    batch, _, height, width = pixel_values.shape
    padded = torch.nn.functional.pad(pixel_values, (max_shift,) * 4, value=float(pixel_values.min()))
    offsets = rng.integers(0, 2 * max_shift + 1, size=(batch, 2))
    return torch.stack([padded[i, :, y : y + height, x : x + width] for i, (y, x) in enumerate(offsets)])


def read_split(data_dir: str | Path, split: str) -> list[dict[str, str]]:
    """Rows of ``{data_dir}/{split}.csv`` as dicts of strings, with file paths made absolute."""
    data_dir = Path(data_dir)
    with open(data_dir / f"{split}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in ("image", "audio"):
            row[column] = str(data_dir / row[column])
    return rows


def _read_images(rows: list[dict[str, str]], processor: Any) -> tuple[dict[str, torch.Tensor], None]:
    images = [Image.open(row["image"]).convert("RGB") for row in rows]
    return dict(processor(images, return_tensors="pt")), None


def _read_texts(rows: list[dict[str, str]], processor: Any) -> tuple[dict[str, torch.Tensor], None]:
    texts = [row["text"] for row in rows]
    return dict(processor(texts, padding=True, truncation=True, return_tensors="pt")), None


def _read_waves(
    rows: list[dict[str, str]], processor: Any
) -> tuple[dict[str, torch.Tensor], list[np.ndarray]]:
    return {}, [sf.read(row["audio"], dtype="float32")[0] for row in rows]


_READERS = {"image": _read_images, "text": _read_texts, "audio": _read_waves}
"""The demo csv's columns: how each is read (the whole split processed at once, or waveforms kept per row)."""


class ModalityInputs:
    """The ``modality`` column of ``rows`` as model inputs; ``batch(indices)`` returns the processor's tensors.

    Args:
        modality: ``image``, ``audio`` or ``text`` (the csv column).
        rows: from ``read_split``.
        processor: the encoder's image processor, feature extractor or tokenizer.
    """

    def __init__(self, modality: str, rows: list[dict[str, str]], processor: Any):
        if modality not in _READERS:
            raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(_READERS)}")
        self.modality = modality
        self.processor = processor
        self._tensors, self._waves = _READERS[modality](rows, processor)
        self.lengths = np.array([len(w) for w in self._waves]) if self._waves is not None else None
        self._size = len(rows)

    def __len__(self) -> int:
        return self._size

    def batch(self, indices: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Model inputs for rows ``indices``; with ``rng`` (training), images are randomly translated."""
        if self._waves is not None:  # waveforms: processed per batch
            return dict(
                self.processor(
                    [self._waves[i] for i in indices],
                    sampling_rate=self.processor.sampling_rate,
                    padding=True,
                    pad_to_multiple_of=AUDIO_PAD_MULTIPLE,
                    return_tensors="pt",
                )
            )
        index = torch.as_tensor(indices)
        batch = {k: v[index] for k, v in self._tensors.items()}
        if "pixel_values" in batch and rng is not None:
            batch["pixel_values"] = random_translate(batch["pixel_values"], IMAGE_MAX_SHIFT, rng)
        if "attention_mask" in batch:  # drop columns that are padding for every row of this batch
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        return batch

    def index_batches(self, batch_size: int, rng: np.random.Generator | None = None) -> Iterator[np.ndarray]:
        """Row indices per batch: shuffled when ``rng`` is given; grouped by length for audio."""
        if self.lengths is None:
            order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        else:
            jitter = rng.uniform(0, AUDIO_PAD_MULTIPLE, len(self)) if rng is not None else 0
            order = np.argsort(self.lengths + jitter, kind="stable")
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        if rng is not None:
            rng.shuffle(chunks)
        yield from chunks
