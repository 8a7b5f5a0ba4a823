"""Frozen-encoder embedding cache vs the live path: ten epochs of fusion-head training, all three encoders frozen.

Both paths run in this one process, on the same files, model (same seed), ``FusionTrainer`` settings and data
order:

- **live**: every step decodes the files, runs the processor and the three frozen encoders, then the head;
- **cached**: ``cache_embeddings`` encodes every sample once (timed, counted in the first epoch), then every step
  trains the head from the ``{name}_embeds`` columns.

Data: the demo dataset (``multimodal_fusion.demo.dataset.generate_demo_dataset``: 32x32 digit images, 0.25-1 s
DTMF tones, phrases) in a fresh temporary folder, so the cache is always computed, never reused from an earlier
run; a comparable synthetic set when the demo package is not available. Encoders: randomly initialised ViT,
wav2vec2 and BERT shaped like the demo's stage-1 encoders (ViT patch 4 on the 32x32 images, wav2vec2 with a
stride-256 conv front-end), by default 512 wide and 8 deep with the usual 4x MLP. On the demo's small inputs that
is still about 5x cheaper per sample than the base checkpoints (ViT-B/16 at 224 px, wav2vec2-base, BERT-base), so
the figures are conservative for real encoders. ``--hidden-size 64 --layers 2`` gives the demo's own toy sizes,
whose forward pass costs about as much as decoding the files: the ratios then mostly measure data loading.
Weights do not change the cost; denormal floats, which random deep weights can produce, are flushed so they do
not slow the live path down artificially.

Figures: ``total_ratio`` = live time of the ten epochs / (caching time + cached ten epochs), goal >= 8;
``later_epoch_ratio`` = median live epoch / median cached epoch over epochs 2-10 (medians: the machine is
shared, one disturbed epoch should not decide the figure), goal >= 50;
``max_abs_logit_diff`` = largest |logit| difference on the validation split between the two models after the
ten epochs (live model on live inputs vs cached model on cached embeddings): the same training trajectory.

Run: ``.venv/bin/python benchmarks/feature_cache.py`` (about three minutes on 2 CPU cores). The last line
is one JSON object with the three figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset  # noqa: E402
from multimodal_fusion.cache.embedding_cache import cache_embeddings  # noqa: E402
from multimodal_fusion.demo.dataset import generate_demo_dataset  # noqa: E402
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments  # noqa: E402

T.logging.set_verbosity_error()
datasets.disable_progress_bars()
torch.set_num_threads(2)
# Randomly initialised deep encoders can produce denormal floats, which run many times slower on CPUs (a wav2vec2
# forward took 5x longer on some clip lengths) -- an artefact of random weights that would inflate the live path.
torch.set_flush_denormal(True)
COLUMNS = {"image": "image", "audio": "audio", "text": "text"}
SAMPLING_RATE = 16000


# ---------------------------------------------------------------------------------------------------- data
def make_data(root: Path, num_samples: int) -> dict[str, Path]:
    """The demo dataset (real files + csv splits)."""
    return generate_demo_dataset(root, num_samples=num_samples, progress=False)


# ---------------------------------------------------------------------------------------------------- encoders
def make_encoders(root: Path, texts: list[str], hidden: int, layers: int) -> dict[str, str]:
    """ViT / wav2vec2 / BERT shaped like the demo's stage-1 encoders (ViT patch 4 on 32x32 images, wav2vec2 with a
    stride-256 conv front-end, BERT on the phrases), ``hidden`` wide and ``layers`` deep, saved with processors."""
    torch.manual_seed(0)
    heads = 4
    vit = T.ViTConfig(
        image_size=32, patch_size=4, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden,
    )  # fmt: skip
    T.ViTModel(vit).save_pretrained(root / "image")
    T.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "image")
    wav2vec2 = T.Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=4 * hidden,
        conv_dim=(32, 64, 64), conv_kernel=(64, 8, 4), conv_stride=(16, 8, 2), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
        mask_time_prob=0.0,
    )  # fmt: skip
    T.Wav2Vec2Model(wav2vec2).save_pretrained(root / "audio")
    T.Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLING_RATE, return_attention_mask=True, do_normalize=True
    ).save_pretrained(root / "audio")
    words = sorted({w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = T.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    bert = T.BertConfig(
        vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=64,
    )  # fmt: skip
    T.BertModel(bert).save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    return {name: str(root / name) for name in ("image", "audio", "text")}


# ---------------------------------------------------------------------------------------------------- training
class Turns:
    """Two training threads take turns epoch by epoch (live 1, cached 1, live 2, ...), only one running at a time,
    so load from other processes on a shared machine hits both paths alike. Each path keeps its own RNG state
    across the switches, so its data order and dropout are what a run on its own would give."""

    def __init__(self, first: str):
        self.current = first
        self.failed = False
        self.condition = threading.Condition()

    def wait_for(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.current == name or self.failed)

    def hand_over(self, to: str) -> None:
        with self.condition:
            self.current = to
            self.condition.notify_all()

    def fail(self) -> None:
        with self.condition:
            self.failed = True
            self.condition.notify_all()


def _rng_state() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def _set_rng_state(state: tuple) -> None:
    torch.set_rng_state(state[0])
    random.setstate(state[1])
    np.random.set_state(state[2])


class EpochTimer(TrainerCallback):
    """Wall time of each epoch; with ``turns``, hands over to the other path after each epoch."""

    def __init__(self, name: str | None = None, other: str | None = None, turns: Turns | None = None):
        self.name, self.other, self.turns = name, other, turns
        self.epochs: list[float] = []
        self.extra_first_epoch = 0.0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epochs.append(time.perf_counter() - self.start)
        if self.turns is not None:
            rng = _rng_state()
            self.turns.hand_over(self.other)
            self.turns.wait_for(self.name)
            _set_rng_state(rng)

    def on_train_end(self, args, state, control, **kwargs):
        if self.turns is not None:
            self.turns.hand_over(self.other)


def train(
    model, train_dataset, collator, output_dir: Path, epochs: int, batch_size: int, timer=None
) -> list[float]:
    args = FusionTrainingArguments(
        output_dir=str(output_dir), num_train_epochs=epochs, per_device_train_batch_size=batch_size,
        learning_rate=1e-3, use_cpu=True, report_to="none", seed=0, data_seed=0, save_strategy="no",
        logging_strategy="no", eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    timer = timer or EpochTimer()
    FusionTrainer(model, args, train_dataset=train_dataset, data_collator=collator, callbacks=[timer]).train()
    return timer.epochs


def run_in_turns(live_job, cached_job) -> None:
    """Run the two jobs in threads that take turns (see [`Turns`]); re-raise the first error."""
    turns = Turns(first="live")
    errors: list[BaseException] = []

    def runner(name, job):
        try:
            turns.wait_for(name)
            job(turns)
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            turns.fail()

    threads = [threading.Thread(target=runner, args=a) for a in (("live", live_job), ("cached", cached_job))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def logits(model, dataset, collator, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collator(rows)
            batch.pop("labels", None)
            out.append(model(**batch).logits)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=300, help="demo samples over the three splits")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--hidden-size", type=int, default=512, help="encoder width (the demo's: 64)")
    parser.add_argument("--layers", type=int, default=8, help="encoder depth (the demo's: 2)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="feature-cache-bench-") as tmp:
        tmp = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(tmp / "datasets-cache")  # a fresh cache: nothing reused
        files = make_data(tmp / "data", options.num_samples)
        with open(files["train"], newline="") as handle:
            texts = [row["text"] for row in csv.DictReader(handle)]
        paths = make_encoders(tmp / "encoders", texts, options.hidden_size, options.layers)
        processor = FusionProcessor.from_encoders(paths)
        loaded = load_fusion_dataset(
            {"train": str(files["train"]), "validation": str(files["validation"])}, COLUMNS, kinds=processor
        )
        train_rows, validation_rows = loaded.dataset["train"], loaded.dataset["validation"]
        print(
            f"data: demo, {len(train_rows)} train / {len(validation_rows)} validation samples; "
            f"{options.epochs} epochs, batch {options.batch_size}, encoders {options.layers} layers x "
            f"{options.hidden_size} wide, all frozen"
        )

        def build() -> FusionModel:
            torch.manual_seed(0)
            return FusionModel.from_encoders(
                paths, trainable_layers=0, fusion="gated", projection_dim=64, fusion_hidden_size=64,
                id2label=loaded.id2label, label2id=loaded.label2id,
            )  # fmt: skip

        live_collator = FusionDataCollator(processor, COLUMNS, embeds_columns={})
        cached_collator = FusionDataCollator(processor, COLUMNS)

        # Warm-up of both paths (first calls of the decoders, encoders, Trainer, optimizer), not timed.
        warm = train_rows.select(range(2 * options.batch_size))
        train(build(), warm, live_collator, tmp / "warm", 1, options.batch_size)
        warm_model = build()
        warm = cache_embeddings(warm, warm_model, processor, COLUMNS, load_from_cache_file=False)
        train(warm_model, warm, cached_collator, tmp / "warm", 1, options.batch_size)

        # Same weights, cached vs live inputs (validation split).
        probe = build()
        probe_validation = cache_embeddings(
            validation_rows, probe, processor, COLUMNS, load_from_cache_file=False
        )
        untrained_diff = (
            (logits(probe, validation_rows, live_collator) - logits(probe, probe_validation, cached_collator))
            .abs()
            .max()
            .item()
        )

        live_model, cached_model = build(), build()
        result: dict[str, object] = {}

        def live_job(turns):
            timer = EpochTimer("live", "cached", turns)
            result["live_epochs"] = train(
                live_model, train_rows, live_collator, tmp / "live", options.epochs, options.batch_size, timer
            )

        def cached_job(turns):
            start = time.perf_counter()
            result["cached_train"] = cache_embeddings(
                train_rows,
                cached_model,
                processor,
                COLUMNS,
                batch_size=options.batch_size,
                load_from_cache_file=False,
            )
            result["cache_seconds"] = time.perf_counter() - start
            timer = EpochTimer("cached", "live", turns)
            result["cached_epochs"] = train(
                cached_model, result["cached_train"], cached_collator, tmp / "cached", options.epochs,
                options.batch_size, timer,
            )  # fmt: skip

        run_in_turns(live_job, cached_job)
        live_epochs, cached_epochs = result["live_epochs"], result["cached_epochs"]
        cache_seconds = result["cache_seconds"]
        # The encoders did not change, so this loads the validation embeddings cached for the probe above.
        cached_validation = cache_embeddings(validation_rows, cached_model, processor, COLUMNS)
        trained_diff = (
            (
                logits(live_model, validation_rows, live_collator)
                - logits(cached_model, cached_validation, cached_collator)
            )
            .abs()
            .max()
            .item()
        )

    print(f"{'epoch':>5} {'live s':>9} {'cached s':>9} {'ratio':>8}")
    for i, (live, cached) in enumerate(zip(live_epochs, cached_epochs, strict=True), 1):
        shown = cached + cache_seconds if i == 1 else cached
        print(
            f"{i:>5} {live:>9.3f} {shown:>9.3f} {live / shown:>8.1f}"
            + ("  (incl. caching)" if i == 1 else "")
        )
    live_total, cached_total = sum(live_epochs), cache_seconds + sum(cached_epochs)
    later = statistics.median(live_epochs[1:]) / statistics.median(cached_epochs[1:])
    print(f"caching pass: {cache_seconds:.2f} s for {len(train_rows)} samples")
    print(f"total: live {live_total:.2f} s, cached {cached_total:.2f} s (caching included)")
    print(
        f"total ratio {live_total / cached_total:.1f}x (goal >= 8), later-epoch ratio {later:.1f}x (goal >= 50)"
    )
    print(f"max |logit| diff, same weights, cached vs live inputs: {untrained_diff:.2e}")
    print(
        f"max |logit| diff after {options.epochs} epochs, live-trained vs cache-trained model: {trained_diff:.2e}"
    )
    print(
        json.dumps(
            {
                "total_ratio": round(live_total / cached_total, 2),
                "later_epoch_ratio": round(later, 1),
                "max_abs_logit_diff": float(f"{trained_diff:.3g}"),
            }
        )
    )


if __name__ == "__main__":
    main()
