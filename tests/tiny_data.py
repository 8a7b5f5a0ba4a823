"""A tiny learnable image/audio/text dataset written as real files plus csv files with relative paths."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

from tiny_encoders import IMAGE_SIZE, SAMPLING_RATE

LABELS = ["red", "green", "blue"]
WORDS = {"red": "one", "green": "two", "blue": "three"}


def write_tiny_dataset(
    root: Path, n_train: int = 24, n_eval: int = 12, seed: int = 0, missing_every: int = 0
) -> dict[str, Path]:
    """Write ``images/``, ``audio/`` and ``train.csv``/``validation.csv``/``test.csv`` under ``root``.

    The class shows in the image colour, the audio pitch and a word, so a tiny model can learn it. With
    ``missing_every=k`` every k-th row has an empty text cell (a missing modality).
    """
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(exist_ok=True)
    files = {}
    for split, count in (("train", n_train), ("validation", n_eval), ("test", n_eval)):
        rows = []
        for i in range(count):
            label = i % len(LABELS)
            pixels = rng.integers(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
            pixels[..., label] += 150
            image_path = f"images/{split}_{i}.png"
            Image.fromarray(pixels).save(root / image_path)
            seconds = rng.uniform(0.05, 0.15)
            t = np.arange(int(seconds * SAMPLING_RATE)) / SAMPLING_RATE
            wave = 0.5 * np.sin(2 * np.pi * (300 + 400 * label) * t) + 0.05 * rng.standard_normal(t.size)
            audio_path = f"audio/{split}_{i}.wav"
            soundfile.write(root / audio_path, wave.astype(np.float32), SAMPLING_RATE)
            text = f"the digit is {WORDS[LABELS[label]]}"
            if missing_every and i % missing_every == missing_every - 1:
                text = ""
            rows.append({"image": image_path, "audio": audio_path, "text": text, "label": LABELS[label]})
        files[split] = root / f"{split}.csv"
        with open(files[split], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image", "audio", "text", "label"])
            writer.writeheader()
            writer.writerows(rows)
    return files
