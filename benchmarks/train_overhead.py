"""FusionTrainer overhead vs a hand-written PyTorch loop, and length-grouped vs random batching on audio.

Both comparisons run in this one process on the same modules and batches:

1. ``overhead_ratio`` = FusionTrainer step time / hand-written loop step time (same model, data order, AdamW,
   linear schedule, grad clipping). Goal <= 1.10.
2. ``length_grouping_speedup`` = epoch time with random batches / with length-grouped batches
   (``train_sampling_strategy="group_by_length"`` + the length column), variable-length audio 0.25-4 s through
   the real processor + collator. Goal >= 1.3.

Run: ``.venv/bin/python benchmarks/train_overhead.py`` (about two minutes on 2 CPU cores). The last line is
one JSON object with the figures.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers as T  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback, default_data_collator, get_linear_schedule_with_warmup  # noqa: E402

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor  # noqa: E402
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments  # noqa: E402
from tiny_encoders import make_bert, make_vit  # noqa: E402

T.logging.set_verbosity_error()
torch.set_num_threads(2)
WARMUP_STEPS = 3


def make_wav2vec2(path: Path) -> Path:
    config = T.Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(64, 64, 64), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer", do_stable_layer_norm=True, layerdrop=0.0,
        mask_time_prob=0.0,
    )  # fmt: skip
    T.Wav2Vec2Model(config).save_pretrained(path)
    T.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(path)
    return path


class StepTimer(TrainerCallback):
    """Wall time from the end of the warm-up steps to the end of training."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == WARMUP_STEPS:
            self.start = time.perf_counter()

    def on_train_end(self, args, state, control, **kwargs):
        self.elapsed = time.perf_counter() - self.start


def training_args(output_dir: str, **kwargs) -> FusionTrainingArguments:
    defaults = dict(
        output_dir=output_dir, use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True,
        learning_rate=1e-4, seed=0, data_seed=0, logging_steps=10_000, dataloader_num_workers=0,
        optim="adamw_torch", max_grad_norm=1.0, weight_decay=0.0,
    )  # fmt: skip
    return FusionTrainingArguments(**{**defaults, **kwargs})


def overhead(
    paths: dict[str, str], workdir: str, steps: int = 23, batch_size: int = 8
) -> tuple[float, float]:
    """Seconds per step after warm-up: (FusionTrainer, hand-written loop) on identical pre-collated batches."""
    rng = torch.Generator().manual_seed(0)
    n = steps * batch_size
    rows = [
        {
            "image_pixel_values": torch.randn(3, 32, 32, generator=rng),
            "audio_input_values": torch.randn(16000, generator=rng),
            "audio_attention_mask": torch.ones(16000, dtype=torch.long),
            "text_input_ids": torch.randint(5, 29, (32,), generator=rng),
            "text_attention_mask": torch.ones(32, dtype=torch.long),
            "labels": torch.tensor(i % 3),
        }
        for i in range(n)
    ]

    def fresh_model() -> FusionModel:
        torch.manual_seed(0)
        return FusionModel.from_encoders(
            paths, fusion="attention", num_labels=3, projection_dim=64, fusion_hidden_size=64
        )

    timer = StepTimer()
    args = training_args(
        workdir, per_device_train_batch_size=batch_size, max_steps=steps, lr_scheduler_type="linear"
    )
    trainer = FusionTrainer(
        fresh_model(), args, train_dataset=rows, data_collator=default_data_collator, callbacks=[timer]
    )
    trainer.train()
    trainer_time = timer.elapsed / (steps - WARMUP_STEPS)

    model = fresh_model().train()
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.0
    )
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, steps)
    loader = torch.utils.data.DataLoader(
        rows, batch_size=batch_size, shuffle=True, collate_fn=default_data_collator,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    start = None
    for step, batch in enumerate(loader, start=1):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        loss.item()  # Trainer reads the loss each step as well
        if step == WARMUP_STEPS:
            start = time.perf_counter()
    loop_time = (time.perf_counter() - start) / (steps - WARMUP_STEPS)
    return trainer_time, loop_time


def length_grouping(
    audio_path: str, workdir: str, samples: int = 96, batch_size: int = 8
) -> tuple[float, float]:
    """Epoch seconds: (random batches, length-grouped batches), audio 0.25-4 s through processor + collator."""
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.25, 4.0, samples)
    waves = [rng.standard_normal(int(d * 16000)).astype(np.float32) * 0.1 for d in durations]
    dataset = Dataset.from_dict(
        {"audio": [{"array": w, "sampling_rate": 16000} for w in waves], "label": [i % 3 for i in range(samples)],
         "length": durations.tolist()}
    )  # fmt: skip
    processor = FusionProcessor.from_encoders({"audio": audio_path})
    collator = FusionDataCollator(processor, {"audio": "audio"}, label_column="label", row_column=None)
    times = {}
    for strategy in ("random", "group_by_length", "random", "group_by_length"):
        torch.manual_seed(0)
        model = FusionModel.from_encoders(
            {"audio": audio_path}, num_labels=3, projection_dim=64, fusion_hidden_size=64
        )
        args = training_args(
            workdir,
            per_device_train_batch_size=batch_size,
            num_train_epochs=1,
            train_sampling_strategy=strategy,
        )
        trainer = FusionTrainer(model, args, train_dataset=dataset, data_collator=collator)
        start = time.perf_counter()
        trainer.train()
        times.setdefault(strategy, []).append(time.perf_counter() - start)
    return min(times["random"]), min(times["group_by_length"])


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workdir:
        root = Path(workdir)
        paths = {
            "image": str(make_vit(root / "vit")),
            "audio": str(make_wav2vec2(root / "wav2vec2")),
            "text": str(make_bert(root / "bert")),
        }
        runs = [overhead(paths, str(root / "out")) for _ in range(3)]
        trainer_step = statistics.median(r[0] for r in runs)
        loop_step = statistics.median(r[1] for r in runs)
        random_epoch, grouped_epoch = length_grouping(paths["audio"], str(root / "out"))
    result = {
        "trainer_step_s": round(trainer_step, 4),
        "hand_loop_step_s": round(loop_step, 4),
        "overhead_ratio": round(trainer_step / loop_step, 3),
        "random_epoch_s": round(random_epoch, 2),
        "grouped_epoch_s": round(grouped_epoch, 2),
        "length_grouping_speedup": round(random_epoch / grouped_epoch, 3),
    }
    print(f"FusionTrainer step {trainer_step * 1000:.1f} ms vs hand-written loop {loop_step * 1000:.1f} ms "
          f"-> overhead ratio {result['overhead_ratio']} (goal <= 1.10)")  # fmt: skip
    print(f"epoch on 0.25-4 s audio: random {random_epoch:.2f} s vs length-grouped {grouped_epoch:.2f} s "
          f"-> speedup {result['length_grouping_speedup']} (goal >= 1.3)")  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
