"""Frozen-prefix cache vs the live path: five epochs with ``trainable_layers: 2`` on ViT + wav2vec2 + BERT.

Encoders: randomly initialised, shaped like the base checkpoints but shallower: 8 blocks x 384 wide (6 heads, 4x
MLP) each; ViT patch 16 at 224 px; wav2vec2 with wav2vec2-base's convolutional front-end (7 conv layers, 512
channels, group norm); BERT with a 1000-word vocabulary. Data (generated, fixed shapes, printed): PNG-encoded
224x224 RGB images, WAV-encoded 2 s clips at 16 kHz, texts of 32 tokens ([CLS] + 30 words + [SEP]), in a
file-backed ``datasets.Dataset``, batch 16.

Exactness settings (printed): wav2vec2 ``mask_time_prob=0`` (no SpecAugment), ``layerdrop=0`` and
``hidden_dropout=0`` (the dropout before block 1 would make the frozen prefix random); float32 storage. Dropout
*inside* the trainable blocks stays on (ViT/BERT 0.1, wav2vec2 attention/activation dropout 0.1): both paths draw
the same random numbers.

Both paths run in this one process and take turns epoch by epoch (live 1, cached 1, live 2, ...), each with its
own RNG state, model (same seed), AdamW and data order, so load from other processes on the shared machine hits
both alike:

- **live**: every step decodes the files, runs the processors, the full encoders (frozen blocks in eval mode,
  no grad) and the top 2 blocks + head with gradients;
- **cached**: ``cache_hidden_states`` runs the frozen prefix (front-end + 6 blocks) once per sample (timed, counted
  in the total), then every step runs only the top 2 blocks, the final norm, pooling and the head.

Figures (last line, JSON): ``later_epoch_ratio`` = median live epoch / median cached epoch over epochs 2-5 (goal
>= 2.5); ``total_ratio`` = live total / (cache pass + cached total) (goal >= 1.8); ``max_abs_weight_diff`` over
every parameter after training (goal <= 1e-5); ``peak_rss_ratio`` = cached / live peak resident memory above the
pre-training baseline (sampled every 5 ms during each path's epochs); ``cache_bytes`` = bytes of the cache files.

Run: ``.venv/bin/python benchmarks/prefix_cache.py [--samples 64]`` (about 5-8 minutes on 2 shared CPU cores).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import psutil  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor  # noqa: E402
from multimodal_fusion.cache.prefix_cache import (  # noqa: E402
    PREFIX_ROW_COLUMN,
    PrefixCache,
    PrefixCacheCollator,
    cache_hidden_states,
    prefix_cache_plan,
)

T.logging.set_verbosity_error()
datasets.disable_progress_bars()
torch.set_num_threads(2)
torch.set_flush_denormal(
    True
)  # random deep weights can give denormals, which would slow the live path artificially
SAMPLING_RATE = 16000
WIDTH, BLOCKS, HEADS = 384, 8, 6
COLUMNS = {"image": "image", "audio": "audio", "text": "text"}


def make_encoders(root: Path, vocab: list[str]) -> dict[str, str]:
    torch.manual_seed(0)
    shape = {"hidden_size": WIDTH, "num_hidden_layers": BLOCKS, "num_attention_heads": HEADS,
             "intermediate_size": 4 * WIDTH}  # fmt: skip
    T.ViTModel(T.ViTConfig(**shape, image_size=224, patch_size=16)).save_pretrained(root / "image")
    T.ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(root / "image")
    audio = T.Wav2Vec2Config(**shape, feat_extract_norm="group", do_stable_layer_norm=False, mask_time_prob=0.0,
                             layerdrop=0.0, hidden_dropout=0.0, num_conv_pos_embedding_groups=16)  # fmt: skip
    T.Wav2Vec2Model(audio).save_pretrained(root / "audio")
    T.Wav2Vec2FeatureExtractor(sampling_rate=SAMPLING_RATE, return_attention_mask=True).save_pretrained(
        root / "audio"
    )
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *vocab]
    T.BertTokenizer(vocab={w: i for i, w in enumerate(tokens)}).save_pretrained(root / "text")
    T.BertModel(T.BertConfig(**shape, vocab_size=len(tokens), max_position_embeddings=64)).save_pretrained(
        root / "text"
    )
    return {name: str(root / name) for name in ("image", "audio", "text")}


def make_data(root: Path, samples: int, vocab: list[str]) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    rows = {"image": [], "audio": [], "text": [], "label": [], PREFIX_ROW_COLUMN: list(range(samples))}
    for i in range(samples):
        buffer = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(buffer, format="PNG")
        rows["image"].append(buffer.getvalue())
        buffer = io.BytesIO()
        soundfile.write(buffer, rng.standard_normal(2 * SAMPLING_RATE).astype(np.float32) * 0.1, SAMPLING_RATE,
                        format="WAV")  # fmt: skip
        rows["audio"].append(buffer.getvalue())
        rows["text"].append(" ".join(rng.choice(vocab, 30)))
        rows["label"].append(i % 3)
    datasets.Dataset.from_dict(rows).save_to_disk(str(root / "data"))
    return datasets.load_from_disk(str(root / "data"))  # file-backed: the cache pass writes a cache file


class PeakRSS:
    """Peak resident memory while ``active`` (a sampling thread, every 5 ms)."""

    def __init__(self):
        self.process, self.peaks, self.active, self.stop = psutil.Process(), {}, None, False
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.stop:
            if self.active is not None:
                rss = self.process.memory_info().rss
                self.peaks[self.active] = max(self.peaks.get(self.active, 0), rss)
            time.sleep(0.005)


class Path_:
    """One training path: model, optimizer, collator, its own RNG state; runs one epoch at a time."""

    def __init__(self, name, folders, collator, dataset, batch_size, epochs):
        torch.manual_seed(0)
        self.name, self.collator, self.dataset, self.batch_size = name, collator, dataset, batch_size
        self.model = FusionModel.from_encoders(folders, trainable_layers=2, fusion="concat", num_labels=3)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-4)
        self.rng = torch.Generator().manual_seed(0)
        self.orders = [torch.randperm(len(dataset), generator=self.rng).tolist() for _ in range(epochs)]
        torch.manual_seed(1)
        self.torch_rng = torch.get_rng_state()
        self.epochs, self.losses = [], []

    def epoch(self, index: int) -> None:
        torch.set_rng_state(self.torch_rng)
        self.model.train()
        start = time.perf_counter()
        order = self.orders[index]
        for begin in range(0, len(order), self.batch_size):
            part = self.dataset[order[begin : begin + self.batch_size]]
            rows = [dict(zip(part, values, strict=True)) for values in zip(*part.values(), strict=True)]
            batch = self.collator(rows)
            loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            self.losses.append(loss.item())
        self.epochs.append(time.perf_counter() - start)
        self.torch_rng = torch.get_rng_state()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    vocab = [f"w{i}" for i in range(1000)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folders = make_encoders(root, vocab)
        dataset = make_data(root, args.samples, vocab)
        processor = FusionProcessor.from_encoders(folders)
        print(f"data: {args.samples} samples; image [3, 224, 224] (PNG), audio [{2 * SAMPLING_RATE}] (2 s WAV at "
              f"{SAMPLING_RATE} Hz), text [32] tokens; batch {args.batch_size}; {args.epochs} epochs")  # fmt: skip
        print(f"encoders: ViT / wav2vec2 (base conv front-end, group norm) / BERT, {BLOCKS} blocks x {WIDTH}, "
              "trainable_layers=2; wav2vec2 mask_time_prob=0, layerdrop=0, hidden_dropout=0; float32 storage")  # fmt: skip
        base = FusionDataCollator(processor, COLUMNS, label_column="label", sampling_rate=SAMPLING_RATE)
        live = Path_("live", folders, base, dataset, args.batch_size, args.epochs)
        cached = Path_("cached", folders, None, dataset, args.batch_size, args.epochs)
        plan = prefix_cache_plan(cached.model, processor)
        print("plan: " + ", ".join(f"{n}: block {p.boundary}" if p.reason is None else f"{n}: {p.reason}"
                                   for n, p in plan.items()))  # fmt: skip
        boundaries = {name: p.boundary for name, p in plan.items() if p.reason is None}
        for name, tokens in (("image", 197), ("audio", 99), ("text", 32)):
            print(f"  disk estimate {name}: {args.samples} x {tokens} tokens x {WIDTH} x 4 B = "
                  f"{args.samples * tokens * WIDTH * 4 / 1e6:.1f} MB")  # fmt: skip
        memory = PeakRSS()
        baseline = memory.process.memory_info().rss
        memory.active = "cached"
        start = time.perf_counter()
        stores = cache_hidden_states(dataset, cached.model, processor, boundaries, COLUMNS, batch_size=16,
                                     sampling_rate=SAMPLING_RATE)  # fmt: skip
        cache_seconds = time.perf_counter() - start
        cache_bytes = sum(
            os.path.getsize(f["filename"]) for s in stores.values() for f in s.table.cache_files
        )
        cached.collator = PrefixCacheCollator(base, PrefixCache(stores, dict(COLUMNS)))
        print(f"cache pass: {cache_seconds:.1f} s, {cache_bytes / 1e6:.1f} MB on disk")
        for epoch in range(args.epochs):
            for path in (live, cached):
                memory.active = path.name
                path.epoch(epoch)
                memory.active = None
            print(f"epoch {epoch + 1}: live {live.epochs[-1]:.1f} s, cached {cached.epochs[-1]:.1f} s, "
                  f"loss live {live.losses[-1]:.6f} cached {cached.losses[-1]:.6f}", flush=True)  # fmt: skip
        memory.stop = True
        loss_diff = max(abs(a - b) for a, b in zip(live.losses, cached.losses, strict=True))
        weight_diff = max(
            (a - b).abs().max().item()
            for a, b in zip(live.model.parameters(), cached.model.parameters(), strict=True)
        )
        later = statistics.median(live.epochs[1:]) / statistics.median(cached.epochs[1:])
        total = sum(live.epochs) / (cache_seconds + sum(cached.epochs))
        rss = (memory.peaks["cached"] - baseline) / max(1, memory.peaks["live"] - baseline)
        print(
            f"live epochs {[round(t, 1) for t in live.epochs]}, cached epochs {[round(t, 1) for t in cached.epochs]}"
        )
        print(
            f"max |loss diff| over {len(live.losses)} steps: {loss_diff:.2e}; max |weight diff|: {weight_diff:.2e}"
        )
        print(f"peak RSS above baseline: live {(memory.peaks['live'] - baseline) / 1e6:.0f} MB, cached "
              f"{(memory.peaks['cached'] - baseline) / 1e6:.0f} MB")  # fmt: skip
        print(json.dumps({"later_epoch_ratio": round(later, 2), "total_ratio": round(total, 2),
                          "max_abs_weight_diff": weight_diff, "peak_rss_ratio": round(rss, 2),
                          "cache_bytes": cache_bytes}))  # fmt: skip


if __name__ == "__main__":
    main()
