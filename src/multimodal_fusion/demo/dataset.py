"""Generator of the tri-modal demo dataset: 10 classes (the digits 0-9), each sample an image, a waveform and
a phrase, written as real files plus one csv per split so the normal file-loading path is exercised.

Layout of ``out_dir``::

    images/{split}_{index:05d}.png      32x32 RGB handwritten digit (or noise)
    audio/{split}_{index:05d}.wav       16 kHz mono PCM-16 DTMF tone (or noise)
    train.csv, validation.csv, test.csv columns: image, audio, text, label, image_corrupted,
                                        audio_corrupted, text_corrupted (paths relative to the csv folder)
    dataset_info.json                   generation settings, label names, per-split counts and rates

Each modality of each sample is replaced by uninformative content with probability ``corruption_prob``
(exactly ``round(p * n)`` samples per split and modality, chosen independently per modality). A model that
sees one modality is then capped near ``(1 - p) + p / 10`` accuracy (0.73 for p = 0.3), while the three
together are informative unless all three are corrupted (``1 - p**3 * 0.9`` = 0.976).

Images come from scikit-learn's bundled handwritten digits (offline); the 1797 glyphs are split per class
between train / validation / test, so test images are handwriting the models never saw.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf
from sklearn.datasets import load_digits
from tqdm.auto import tqdm

from .synthesis import (
    DIGIT_NAMES,
    digit_phrase,
    dtmf_waveform,
    filler_phrase,
    noise_glyph,
    noise_waveform,
    render_glyph,
)

SPLITS = ("train", "validation", "test")
MODALITIES = ("image", "audio", "text")
CSV_COLUMNS = ("image", "audio", "text", "label", *(f"{m}_corrupted" for m in MODALITIES))
SAMPLING_RATE = 16000
IMAGE_SIZE = 32


def _split_sizes(num_samples: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    if len(fractions) != 3 or any(f <= 0 for f in fractions):
        raise ValueError(f"`split_fractions` must be three positive numbers, got {fractions!r}")
    total = sum(fractions)
    sizes = [int(round(num_samples * f / total)) for f in fractions[1:]]
    sizes.insert(0, num_samples - sum(sizes))
    if min(sizes) < 1:
        raise ValueError(f"num_samples={num_samples} is too small for split fractions {fractions}")
    return dict(zip(SPLITS, sizes, strict=True))


def _glyph_pools(
    rng: np.random.Generator, fractions: tuple[float, float, float]
) -> dict[str, dict[int, np.ndarray]]:
    """split -> digit -> the glyphs (8x8) of that digit reserved for that split (disjoint between splits)."""
    digits = load_digits()
    pools: dict[str, dict[int, np.ndarray]] = {split: {} for split in SPLITS}
    cumulative = np.cumsum(fractions) / sum(fractions)
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(digits.target == digit))
        bounds = [0, *(int(round(c * len(indices))) for c in cumulative)]
        for split, start, stop in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
            pools[split][digit] = digits.images[indices[start:stop]]
    return pools


def _corruption_flags(rng: np.random.Generator, size: int, prob: float) -> np.ndarray:
    flags = np.zeros(size, dtype=bool)
    flags[rng.permutation(size)[: int(round(prob * size))]] = True
    return flags


def _write_sample(
    out_dir: Path,
    stem: str,
    label: int,
    corrupted: dict[str, bool],
    pools: dict[int, list],
    rng: np.random.Generator,
    audio_kwargs: dict,
) -> dict:
    """Render one sample's image and waveform into ``out_dir`` and return its csv row (draws from ``rng`` in a fixed
    order: image, audio, text)."""
    if corrupted["image"]:
        glyph = noise_glyph(rng)
    else:
        pool = pools[label]
        glyph = pool[rng.integers(len(pool))]
    render_glyph(glyph, rng, IMAGE_SIZE).save(out_dir / "images" / f"{stem}.png")
    if corrupted["audio"]:
        wave = noise_waveform(rng, **audio_kwargs)
    else:
        wave = dtmf_waveform(label, rng, **audio_kwargs)
    sf.write(out_dir / "audio" / f"{stem}.wav", wave, SAMPLING_RATE, subtype="PCM_16")
    text = filler_phrase(rng) if corrupted["text"] else digit_phrase(label, rng)
    return {
        "image": f"images/{stem}.png",
        "audio": f"audio/{stem}.wav",
        "text": text,
        "label": label,
        **{f"{m}_corrupted": int(corrupted[m]) for m in MODALITIES},
    }


def generate_demo_dataset(
    out_dir: str | Path,
    num_samples: int = 3000,
    seed: int = 0,
    corruption_prob: float = 0.3,
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    min_seconds: float = 0.25,
    max_seconds: float = 1.0,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the demo dataset to ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: target folder, created if needed; existing files of the same names are overwritten.
        num_samples: total over the three splits; every split is class-balanced (counts differ by at most 1).
        seed: the only source of randomness: the same seed gives byte-identical csv files and waveforms.
        corruption_prob: per-modality probability that a sample's content is replaced by noise / filler.
        split_fractions: relative sizes of train, validation and test.
        min_seconds, max_seconds: range of the audio durations.
        progress: show a tqdm bar.

    Returns:
        split name -> path of its csv file.
    """
    if not 0.0 <= corruption_prob <= 1.0:
        raise ValueError(f"`corruption_prob` must be in [0, 1], got {corruption_prob}")
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sizes = _split_sizes(num_samples, split_fractions)
    pools = _glyph_pools(rng, split_fractions)
    audio_kwargs = {"sampling_rate": SAMPLING_RATE, "min_seconds": min_seconds, "max_seconds": max_seconds}

    paths: dict[str, Path] = {}
    stats: dict[str, dict] = {}
    bar = tqdm(total=num_samples, desc="demo dataset", unit="sample", disable=not progress)
    for split, size in sizes.items():
        labels = rng.permutation(np.arange(size) % 10)
        flags = {m: _corruption_flags(rng, size, corruption_prob) for m in MODALITIES}
        rows = []
        for index, label in enumerate(labels):
            corrupted = {m: bool(flags[m][index]) for m in MODALITIES}
            stem = f"{split}_{index:05d}"
            rows.append(_write_sample(out_dir, stem, int(label), corrupted, pools[split], rng, audio_kwargs))
            bar.update()
        paths[split] = out_dir / f"{split}.csv"
        with open(paths[split], "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        stats[split] = {
            "num_samples": size,
            "class_counts": np.bincount(labels, minlength=10).tolist(),
            "corruption_rate": {m: float(flags[m].mean()) for m in MODALITIES},
            "all_corrupted_rate": float(np.logical_and.reduce([flags[m] for m in MODALITIES]).mean()),
        }
    bar.close()

    info = {
        "num_samples": num_samples,
        "seed": seed,
        "corruption_prob": corruption_prob,
        "label_names": list(DIGIT_NAMES),
        "modalities": list(MODALITIES),
        "sampling_rate": SAMPLING_RATE,
        "image_size": IMAGE_SIZE,
        "audio_seconds": [min_seconds, max_seconds],
        "splits": stats,
    }
    (out_dir / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tri-modal digits demo dataset (files + csv).")
    parser.add_argument(
        "--out-dir", required=True, help="folder to write images/, audio/ and the csv files to"
    )
    parser.add_argument("--num-samples", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--corruption-prob", type=float, default=0.3)
    args = parser.parse_args(argv)
    paths = generate_demo_dataset(
        args.out_dir, num_samples=args.num_samples, seed=args.seed, corruption_prob=args.corruption_prob
    )
    for split, path in paths.items():
        print(f"{split}: {path}")


if __name__ == "__main__":
    main()
