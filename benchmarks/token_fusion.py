"""Token-level vs pooled fusion on a task whose answer depends on a cross-modal reference, frozen encoders.

Task (``multimodal_fusion.demo.reference_task``): a 32x32 image of four handwritten digits in a 2x2 grid and a
text instruction naming a quadrant ("the upper-left digit", "bottom right please"...); the label is the digit in
that quadrant. Stage 1 pretrains each encoder on its own modality with objectives that never see the fusion label
(image: the digit under each patch token; text: which quadrant is named; see that module).

Stage 2, encoders frozen (``trainable_layers=0``), every fusion with the same budget (epochs, batch size, AdamW
learning rate and schedule, projection / hidden sizes, seed):

- token-level: ``cross_attention`` (MulT), ``bottleneck`` (MBT), ``perceiver``, trained from cached token
  sequences (``cache_embeddings`` stores ``{name}_token_embeds``);
- pooled: every pooled fusion of the registry with each pooling (``cls``, ``mean``: cached pooled vectors;
  trained ``attention`` pooling: cached tokens, pooled by the trained query). The best pooled run is chosen on
  the validation split; its test accuracy is reported.

Also the time per training step (forward + backward + AdamW step, median over steps) of a token-level and a
pooled fusion, live (files decoded, encoders run) and cached, measured in this process.

The token-level fusions use their default ``fusion_position_embeddings="sinusoidal"`` (the stage-1 image tokens
say *what* digit they show, the position embeddings say *which cell*); with ``--no-positions`` they run with
``"none"`` (unordered token sets), the ablation.

Run: ``python benchmarks/token_fusion.py`` (stage 2 took 565 s on 2 shared CPU cores with ``--work-dir`` reusing
the data and stage-1 encoders; a fresh run trains stage 1 first; ``--quick`` for a smoke run). Prints a table; the last line is JSON ``{"best_token_fusion", "best_pooled_fusion", "margin", ...}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset  # noqa: E402
from multimodal_fusion.cache.embedding_cache import cache_embeddings  # noqa: E402
from multimodal_fusion.demo.reference_task import (  # noqa: E402
    generate_reference_dataset,
    pretrain_reference_encoders,
)
from multimodal_fusion.model.fusion_layers import POOLED_FUSIONS as POOLED_FUSION_TABLE  # noqa: E402
from multimodal_fusion.model.fusion_layers import TOKEN_FUSIONS as TOKEN_FUSION_TABLE  # noqa: E402

T.logging.set_verbosity_error()
datasets.disable_progress_bars()
COLUMNS = {"image": "image", "text": "text"}
TOKEN_FUSIONS = sorted(TOKEN_FUSION_TABLE)
POOLED_FUSIONS = ("concat", "attention", "transformer")
"""The late-fusion MLP, attention-weighted sum and a transformer over the pooled vectors (the strongest pooled
ones on the digits demo; ``gated`` / ``tensor`` / ``low_rank_tensor`` behave like them here, see ``--all-pooled``)."""
POOLINGS = ("cls", "mean", "attention")
SIZES = {
    "projection_dim": 64,
    "fusion_hidden_size": 64,
    "fusion_layers": 2,
    "fusion_heads": 4,
    "dropout": 0.1,
}


def build(encoders: Path, fusion: str, pooling: str) -> FusionModel:
    torch.manual_seed(0)
    specs = {name: {"path": str(encoders / name), "pooling": pooling} for name in COLUMNS}
    return FusionModel.from_encoders(specs, trainable_layers=0, fusion=fusion, num_labels=10, **SIZES)


def batches(dataset, collator, batch_size: int, generator: torch.Generator | None = None):
    order = (
        torch.randperm(len(dataset), generator=generator) if generator is not None else range(len(dataset))
    )
    order = list(order)
    for start in range(0, len(order), batch_size):
        part = dataset[[int(i) for i in order[start : start + batch_size]]]
        yield collator([dict(zip(part, values, strict=True)) for values in zip(*part.values(), strict=True)])


def train(model, dataset, collator, epochs: int, batch_size: int, lr: float) -> list[float]:
    """AdamW, linear warmup (10%) + cosine decay; returns the seconds of each step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    total = epochs * math.ceil(len(dataset) / batch_size)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        ),
    )
    generator = torch.Generator().manual_seed(0)
    model.train()
    seconds = []
    for _ in range(epochs):
        for batch in batches(dataset, collator, batch_size, generator):
            start = time.perf_counter()
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            seconds.append(time.perf_counter() - start)
    return seconds


@torch.no_grad()
def accuracy(model, dataset, collator) -> float:
    model.eval()
    correct = total = 0
    for batch in batches(dataset, collator, 256):
        labels = batch.pop("labels")
        correct += int((model(**batch).logits.argmax(-1) == labels).sum())
        total += len(labels)
    return correct / total


def step_time(model, dataset, collator, batch_size: int, steps: int) -> float:
    """Median seconds of one training step, collation included (live: decoding the files + the encoders)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i, first in enumerate(range(0, steps * batch_size, batch_size)):
        start = time.perf_counter()
        part = dataset[first : first + batch_size]
        batch = collator(
            [dict(zip(part, values, strict=True)) for values in zip(*part.values(), strict=True)]
        )
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i:  # the first step warms up kernels and allocations
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def prepare(work: Path, num_samples: int, quick: bool) -> tuple[Path, dict, dict]:
    data, encoders = work / "data", work / "encoders"
    if not (encoders / "stage1_results.json").exists():
        generate_reference_dataset(data, num_samples)
        epochs = {"image": 2, "text": 1} if quick else None
        pretrain_reference_encoders(data, encoders, epochs=epochs)
    stage1 = json.loads((encoders / "stage1_results.json").read_text())
    files = {split: str(data / f"{split}.csv") for split in ("train", "validation", "test")}
    return encoders, files, stage1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work-dir", help="reuse data + stage-1 encoders here (default: a fresh temp folder)"
    )
    parser.add_argument("--num-samples", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (numbers meaningless)")
    parser.add_argument("--all-pooled", action="store_true", help="every pooled fusion of the registry")
    parser.add_argument("--pooled", nargs="+", default=list(POOLED_FUSIONS), help="pooled fusions to try")
    parser.add_argument("--token", nargs="+", default=TOKEN_FUSIONS, help="token-level fusions to try")
    parser.add_argument(
        "--no-positions", action="store_true", help='token fusions with fusion_position_embeddings="none"'
    )
    parser.add_argument("--max-rows", type=int, help="use at most this many rows of each split")
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch threads (1: tiny models, shared cores; see demo.pretrain)",
    )
    options = parser.parse_args()
    torch.set_num_threads(options.num_threads)
    if options.quick:
        options.num_samples, options.epochs = 400, 1
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(options.work_dir or tmp)
        encoders, files, stage1 = prepare(work, options.num_samples, options.quick)
        specs = {name: str(encoders / name) for name in COLUMNS}
        processor = FusionProcessor.from_encoders(specs)
        splits = load_fusion_dataset(files, COLUMNS, kinds=processor).dataset
        if options.max_rows:
            splits = datasets.DatasetDict(
                {k: v.select(range(min(options.max_rows, len(v)))) for k, v in splits.items()}
            )
        collator = FusionDataCollator(processor, COLUMNS)
        live_collator = FusionDataCollator(processor, COLUMNS, embeds_columns={})
        runs = []
        pooled = sorted(POOLED_FUSION_TABLE) if options.all_pooled else options.pooled
        configs = [(f, "cls") for f in options.token] + [(f, p) for p in POOLINGS for f in pooled]
        if options.no_positions:
            SIZES["fusion_position_embeddings"] = "none"
        for fusion, pooling in configs:
            model = build(encoders, fusion, pooling)
            cached = cache_embeddings(splits, model, processor, COLUMNS, list(COLUMNS))
            start = time.perf_counter()
            train(model, cached["train"], collator, options.epochs, options.batch_size, options.learning_rate)
            runs.append(
                {
                    "fusion": fusion,
                    "pooling": "tokens" if fusion in TOKEN_FUSIONS else pooling,
                    "validation": accuracy(model, cached["validation"], collator),
                    "test": accuracy(model, cached["test"], collator),
                    "train_seconds": round(time.perf_counter() - start, 1),
                }
            )
            print(
                "{fusion:>16} {pooling:>9}  val {validation:.3f}  test {test:.3f}  ({train_seconds} s)".format(
                    **runs[-1]
                ),
                flush=True,
            )

        timing = {}
        for label, fusion, pooling in (("token", "cross_attention", "cls"), ("pooled", "attention", "cls")):
            model = build(encoders, fusion, pooling)
            cached = cache_embeddings(splits["train"], model, processor, COLUMNS, list(COLUMNS))
            steps = 4 if options.quick else 12
            timing[f"{label}_live_ms"] = 1e3 * step_time(
                model, splits["train"], live_collator, options.batch_size, steps
            )
            timing[f"{label}_cached_ms"] = 1e3 * step_time(model, cached, collator, options.batch_size, steps)

    token_runs = [r for r in runs if r["pooling"] == "tokens"]
    pooled_runs = [r for r in runs if r["pooling"] != "tokens"]
    best_token = max(token_runs, key=lambda r: r["validation"])
    best_pooled = max(pooled_runs, key=lambda r: r["validation"])
    print(f"\nStage 1 (no fusion label): {json.dumps(stage1)}")
    print("\n| fusion | input | validation acc | test acc |\n|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["pooling"] != "tokens", -r["validation"])):
        print(f"| {r['fusion']} | {r['pooling']} | {r['validation']:.3f} | {r['test']:.3f} |")
    print(f"\n| ms per training step (batch {options.batch_size}) | live | cached |\n|---|---|---|")
    for label in ("token", "pooled"):
        print(f"| {label} | {timing[f'{label}_live_ms']:.1f} | {timing[f'{label}_cached_ms']:.1f} |")
    result = {
        "best_token_fusion": round(best_token["test"], 4),
        "best_token_fusion_name": best_token["fusion"],
        "best_pooled_fusion": round(best_pooled["test"], 4),
        "best_pooled_fusion_name": f"{best_pooled['fusion']}/{best_pooled['pooling']}",
        "margin": round(best_token["test"] - best_pooled["test"], 4),
        **{k: round(v, 1) for k, v in timing.items()},
        "seconds": round(time.perf_counter() - started),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
