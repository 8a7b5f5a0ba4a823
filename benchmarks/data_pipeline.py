"""Data pipeline throughput: decode + process (FusionDataCollator in DataLoader workers) for 1 vs 2 workers, next
to the tiny model's training-step throughput measured in the same run.

Writes PNG files, WAV files at mixed sampling rates (8 / 22.05 / 44.1 kHz, resampled to 16 kHz) and texts into a
temporary csv dataset, loads it with ``load_fusion_dataset`` and times one epoch per worker count (after a
warm-up epoch, persistent workers, so process start-up is not counted). The last line is one JSON object.

    python benchmarks/data_pipeline.py [--samples 96] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from multimodal_fusion import (  # noqa: E402
    FusionDataCollator,
    FusionModel,
    FusionProcessor,
    load_fusion_dataset,
)
from tiny_encoders import WORDS, make_bert, make_vit, make_wav2vec2  # noqa: E402

RATES = (8000, 22050, 44100)


def write_dataset(folder: Path, count: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (folder / "media").mkdir(parents=True)
    lines = ["image,audio,text,label"]
    for i in range(count):
        size = int(rng.integers(48, 160))
        PIL.Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(
            folder / f"media/{i}.png"
        )
        rate = RATES[i % len(RATES)]
        seconds = float(rng.uniform(0.5, 1.5))
        sf.write(folder / f"media/{i}.wav", 0.1 * rng.standard_normal(int(rate * seconds)).astype("f4"), rate)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 20))))
        lines.append(f"media/{i}.png,media/{i}.wav,{text},{i % 3}")
    (folder / "data.csv").write_text("\n".join(lines) + "\n")
    return folder / "data.csv"


def data_throughput(dataset, collator, batch_size: int, workers: int) -> float:
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=collator, num_workers=workers, persistent_workers=True
    )
    for _ in loader:  # warm-up epoch: starts the workers
        pass
    start = time.perf_counter()
    count = sum(batch["labels"].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def train_throughput(model: FusionModel, batches: list, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])  # warm-up
    start, samples = time.perf_counter(), 0
    for i in range(steps):
        batch = batches[i % len(batches)]
        step(batch)
        samples += batch["labels"].shape[0]
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = {
            "image": str(make_vit(root / "vit")),
            "audio": str(make_wav2vec2(root / "wav2vec2")),
            "text": str(make_bert(root / "bert")),
        }
        csv = write_dataset(root / "data", args.samples)
        processor = FusionProcessor.from_encoders(paths)
        loaded = load_fusion_dataset(
            csv, {"image": "image", "audio": "audio", "text": "text"}, kinds=processor
        )
        dataset = loaded.dataset["train"]
        collator = FusionDataCollator(processor, loaded.columns)
        figures = {
            "samples": args.samples,
            "batch_size": args.batch_size,
            "torch_threads": torch.get_num_threads(),
        }
        for workers in (1, 2):
            figures[f"data_samples_per_s_{workers}_worker{'s' if workers > 1 else ''}"] = data_throughput(
                dataset, collator, args.batch_size, workers
            )
        batches = [
            collator([dataset[j] for j in range(i, min(i + args.batch_size, len(dataset)))])
            for i in range(0, len(dataset), args.batch_size)
        ]
        model = FusionModel.from_encoders(
            paths, num_labels=3, projection_dim=32, fusion_hidden_size=32, fusion_heads=2
        )
        figures["train_samples_per_s"] = train_throughput(model, batches, args.train_steps)
    one, two = figures["data_samples_per_s_1_worker"], figures["data_samples_per_s_2_workers"]
    figures["worker_speedup_2_vs_1"] = two / one
    figures["data_over_train_1_worker"] = one / figures["train_samples_per_s"]
    figures["data_over_train_2_workers"] = two / figures["train_samples_per_s"]
    figures = {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}
    print(f"decode + process, 1 DataLoader worker : {one:8.1f} samples/s")
    print(
        f"decode + process, 2 DataLoader workers: {two:8.1f} samples/s  ({figures['worker_speedup_2_vs_1']:.2f}x)"
    )
    print(f"tiny model training step              : {figures['train_samples_per_s']:8.1f} samples/s")
    print(
        f"data / training throughput: {figures['data_over_train_1_worker']:.2f} (1 worker), "
        f"{figures['data_over_train_2_workers']:.2f} (2 workers); above 1 the data pipeline keeps up"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
