"""FusionTrainer: parameter groups, DDP unused-parameter choice, resume and best-model restore of every encoder."""

import pytest
import torch
from transformers import TrainerCallback, default_data_collator

from multimodal_fusion import FusionModel
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments, may_skip_parameters
from tiny_encoders import random_batch

SMALL = {"projection_dim": 32, "fusion_hidden_size": 32, "fusion_heads": 2, "num_labels": 3}


class TensorRows(torch.utils.data.Dataset):
    """Pre-processed rows (what the collator would produce), so these tests isolate the trainer."""

    def __init__(self, n=16, seed=0):
        batch = random_batch(n, audio_lengths=[1600] * n, text_lengths=[7] * n, seed=seed)
        labels = torch.arange(n) % 3
        self.rows = [{**{k: v[i] for k, v in batch.items()}, "labels": labels[i]} for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        seed=0,
        data_seed=0,
        disable_tqdm=True,
        save_strategy="steps",
        save_steps=3,
        logging_steps=1,
        dataloader_num_workers=0,
    )
    return FusionTrainingArguments(**{**defaults, **kwargs})


def build(paths, **kwargs):
    torch.manual_seed(0)
    return FusionModel.from_encoders(paths, fusion="gated", **{**SMALL, **kwargs})


def test_param_groups_per_encoder_and_frozen_parameters_included(tiny_paths, tmp_path):
    paths = {**tiny_paths, "text": {"path": tiny_paths["text"], "learning_rate": 3e-5}}
    model = build(paths, trainable_layers={"image": 0})
    trainer = FusionTrainer(model, args(tmp_path, weight_decay=0.01), train_dataset=TensorRows(4))
    optimizer = trainer.create_optimizer()
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert (
        groups["text"]["lr"] == 3e-5 and groups["image"]["lr"] == 1e-3 and groups["fusion_head"]["lr"] == 1e-3
    )
    assert groups["text.no_decay"]["weight_decay"] == 0.0 and groups["text"]["weight_decay"] == 0.01
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters()}  # frozen image encoder included
    decay_names = {n for n, p in model.named_parameters() if any(p is q for q in groups["text"]["params"])}
    assert decay_names and not [n for n in decay_names if n.endswith("bias") or "LayerNorm" in n]


def test_find_unused_parameters_is_chosen_from_the_model(tiny_paths, tmp_path):
    frozen_image = build(tiny_paths, trainable_layers={"image": 0})
    assert may_skip_parameters(frozen_image) is False
    assert may_skip_parameters(frozen_image, expect_missing_modalities=True) is True
    assert may_skip_parameters(build(tiny_paths, modality_dropout=0.1)) is True
    trainer = FusionTrainer(
        frozen_image, args(tmp_path, remove_unused_columns=True), train_dataset=TensorRows(4)
    )
    assert trainer.args.ddp_find_unused_parameters is False
    assert trainer.args.remove_unused_columns is False


class Crash(TrainerCallback):
    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            raise KeyboardInterrupt("simulated kill after the checkpoint")


def test_kill_and_resume_matches_an_uninterrupted_run(tiny_paths, tmp_path):
    data = TensorRows(16)
    common = dict(max_steps=6, save_steps=100)
    full = build(tiny_paths, dropout=0.1)
    FusionTrainer(full, args(tmp_path / "full", **common), train_dataset=data).train()

    interrupted = build(tiny_paths, dropout=0.1)
    trainer = FusionTrainer(
        interrupted, args(tmp_path / "run", **common), train_dataset=data, callbacks=[Crash(3)]
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    resumed = build(tiny_paths, dropout=0.1)  # a fresh process would rebuild the model from the encoders
    FusionTrainer(resumed, args(tmp_path / "run", **common), train_dataset=data).train(
        resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3")
    )
    expected = full.state_dict()
    for key, value in resumed.state_dict().items():
        assert (value.float() - expected[key].float()).abs().max() <= 1e-6, key
    # the ViT encoder really moved during training (so the check above covers restored, trained weights)
    fresh = build(tiny_paths)
    assert not torch.equal(
        fresh.encoders["image"].layers[0].attention.q_proj.weight,
        resumed.encoders["image"].layers[0].attention.q_proj.weight,
    )


def test_load_best_model_at_end_restores_every_encoder(tiny_paths, tmp_path):
    data = TensorRows(8)
    model = build(tiny_paths)
    training_args = args(
        tmp_path, max_steps=6, eval_strategy="steps", eval_steps=3, save_steps=3, load_best_model_at_end=True,
        metric_for_best_model="loss", greater_is_better=False,
    )  # fmt: skip
    trainer = FusionTrainer(model, training_args, train_dataset=data, eval_dataset=data)
    trainer.train()
    best = FusionModel.from_pretrained(trainer.state.best_model_checkpoint)
    for key, value in best.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_aux_losses_are_logged(tiny_paths, tmp_path):
    model = build(tiny_paths, aux_loss_weight=0.5)
    trainer = FusionTrainer(
        model, args(tmp_path, max_steps=2), train_dataset=TensorRows(8), data_collator=default_data_collator
    )
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(
        {"aux_loss_image", "aux_loss_audio", "aux_loss_text"} <= set(entry) for entry in logged
    )


def test_log_events_print_as_one_readable_line(capsys):
    """Each log event is one line: the split named once, runtimes left out, per-class F1 folded into a group
    (not transformers' dict of every metric), for the progress bar and for ``disable_tqdm``'s printer."""
    from transformers import TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerState

    from multimodal_fusion.training.progress import ReadablePrinterCallback, format_logs, use_readable_logs

    logs = {"eval_loss": 0.41234, "eval_accuracy": 0.93, "eval_macro_f1": 0.92, "eval_f1_red": 0.95,
            "eval_f1_green": 0.9, "eval_runtime": 1.2, "eval_samples_per_second": 300.0, "epoch": 3.0}  # fmt: skip
    assert format_logs(logs) == (
        "epoch 3 | eval: loss 0.4123, accuracy 0.93, macro_f1 0.92 | f1 per class: red 0.95, green 0.9"
    )
    assert format_logs({"loss": 1.0986, "learning_rate": 0.002, "epoch": 0.6667, "total_flos": 1e9}) == (
        "epoch 0.67 | loss 1.099, learning_rate 0.002"
    )

    class Fake:
        def __init__(self, first):
            self.callbacks = [first]

        def pop_callback(self, cls):
            found = [c for c in self.callbacks if c is cls or isinstance(c, cls)]
            for c in found:
                self.callbacks.remove(c)
            return found[0] if found else None

        def add_callback(self, cls):
            self.callbacks.append(cls)

    for default in (ProgressCallback, PrinterCallback):
        fake = Fake(default)
        use_readable_logs(fake)
        assert [c.__name__ for c in fake.callbacks] == [f"Readable{default.__name__}"]
    state = TrainerState()
    ReadablePrinterCallback().on_log(
        TrainingArguments("unused", report_to="none"), state, None, logs=dict(logs)
    )
    assert capsys.readouterr().out == format_logs(logs) + "\n"
