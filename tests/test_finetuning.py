"""Fine-tuning controls: per-encoder / layer-wise learning rates, unfreezing schedules, L2-SP, aux-loss schedule,
evaluation-time modality weights."""

import json

import pytest
import torch
import yaml
from test_trainer import TensorRows
from tiny_data import write_tiny_dataset
from transformers import TrainerCallback

from multimodal_fusion import FusionModel
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments
from multimodal_fusion.training.run_fusion import main

SMALL = {"projection_dim": 32, "fusion_hidden_size": 32, "fusion_heads": 2, "num_labels": 3}


def build(paths, **kwargs):
    torch.manual_seed(0)
    return FusionModel.from_encoders(paths, fusion="attention", **{**SMALL, **kwargs})


def args(tmp_path, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, learning_rate=1e-3, use_cpu=True, report_to="none",
        seed=0, disable_tqdm=True, save_strategy="no", logging_steps=1, dataloader_num_workers=0,
    )  # fmt: skip
    return FusionTrainingArguments(**{**defaults, **kwargs})


def test_layerwise_and_per_encoder_learning_rates(tiny_paths, tmp_path):
    paths = {**tiny_paths, "text": {"path": tiny_paths["text"], "learning_rate": 1e-4}}
    model = build(paths)
    trainer = FusionTrainer(
        model, args(tmp_path, encoder_learning_rate=5e-5, layerwise_lr_decay=0.5), train_dataset=TensorRows(4)
    )
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    # Independent expectation from the block order: block i of L gets rate * 0.5 ** (L - i), embeddings 0.5 ** L.
    for name, rate in (("text", 1e-4), ("image", 5e-5), ("audio", 5e-5)):
        blocks = model.encoder_blocks(name)
        top = len(blocks)
        for i, block in enumerate(blocks, start=1):
            for param in block.parameters():
                assert lr_of[id(param)] == pytest.approx(rate * 0.5 ** (top - i)), (name, i)
    text = model.encoders["text"]
    assert all(lr_of[id(p)] == pytest.approx(1e-4 * 0.5**2) for p in text.embeddings.parameters())
    assert all(lr_of[id(p)] == pytest.approx(5e-5) for p in model.encoders["image"].layernorm.parameters())
    assert all(
        lr_of[id(p)] == pytest.approx(5e-5 * 0.25)
        for p in model.encoders["audio"].feature_projection.parameters()
    )
    assert all(lr_of[id(p)] == 1e-3 for p in model.fusion.parameters())
    assert all(lr_of[id(p)] == 1e-3 for p in model.classifier.parameters())


def test_scheduler_scales_every_group_alike(tiny_paths, tmp_path):
    model = build(tiny_paths)
    training_args = args(
        tmp_path, max_steps=4, layerwise_lr_decay=0.8, lr_scheduler_type="linear", warmup_steps=1
    )
    trainer = FusionTrainer(model, training_args, train_dataset=TensorRows(16))
    trainer.train()
    groups = trainer.optimizer.param_groups
    factors = {round(g["lr"] / g["initial_lr"], 9) for g in groups}
    assert len(factors) == 1 and len(groups) > 5


class Recorder(TrainerCallback):
    """Text-encoder weights and mode at the end of every step."""

    def __init__(self):
        self.weights, self.modes = [], []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights.append(
            model.encoders["text"].encoder.layer[0].attention.self.query.weight.detach().clone()
        )
        self.modes.append(model.encoders["text"].training)


def test_explicit_step_schedule_unfreezes_on_time(tiny_paths, tmp_path):
    model = build(tiny_paths, trainable_layers={"text": 0, "image": 0})
    pretrained = model.encoders["text"].encoder.layer[0].attention.self.query.weight.detach().clone()
    recorder = Recorder()
    training_args = args(
        tmp_path, max_steps=5, unfreeze_schedule={"2": {"text": "all"}}, unfreeze_unit="step"
    )
    trainer = FusionTrainer(model, training_args, train_dataset=TensorRows(20), callbacks=[recorder])
    trainer.train()
    # steps 1-2 run frozen (eval mode, unchanged); the change applies before step 3
    assert [torch.equal(w, pretrained) for w in recorder.weights] == [True, True, False, False, False]
    assert recorder.modes == [False, False, True, True, True]
    assert trainer.unfreezer.changes == [{"epoch": 0, "step": 2, "modality": "text", "from": 0, "to": "all"}]
    assert model.config.modalities["text"]["trainable_layers"] == "all"
    assert not model.encoders["image"].training  # never scheduled, stays frozen


def test_gradual_unfreezing_adds_one_block_per_epoch_up_to_the_limit(tiny_paths, tmp_path):
    model = build(tiny_paths, trainable_layers={"text": 0, "image": 0, "audio": "all"})
    training_args = args(
        tmp_path, num_train_epochs=4, unfreeze_schedule="gradual", gradual_unfreeze_limit={"image": 1}
    )
    trainer = FusionTrainer(model, training_args, train_dataset=TensorRows(8))
    trainer.train()
    steps = [(c["epoch"], c["modality"], c["to"]) for c in trainer.unfreezer.changes]
    assert steps == [(1, "image", 1), (1, "text", 1), (2, "text", 2)]
    text_trainable = {n for n, p in model.encoders["text"].named_parameters() if p.requires_grad}
    assert text_trainable == {
        n for n, _ in model.encoders["text"].named_parameters() if n.startswith("encoder.layer.")
    }


def test_l2sp_is_zero_at_step_zero_then_matches_the_formula(tiny_paths, tmp_path):
    model = build(tiny_paths, trainable_layers={"image": 0, "audio": 1, "text": "all"})
    trainer = FusionTrainer(model, args(tmp_path, max_steps=3, l2sp_weight=0.5), train_dataset=TensorRows(12))
    trainer.train()
    logged = [e["l2sp_loss"] for e in trainer.state.log_history if "l2sp_loss" in e]
    assert logged[0] == 0.0 and logged[-1] > 0
    pretrained = build(tiny_paths).state_dict()
    expected = 0.5 * sum(
        ((param.detach() - pretrained[name]) ** 2).sum()
        for name, param in model.named_parameters()
        if name.startswith("encoders.") and param.requires_grad
    )
    assert trainer.l2sp(model).item() == pytest.approx(expected.item(), rel=1e-5)
    # no reference is held for the frozen image encoder
    assert not [n for n in trainer.l2sp.reference if n.startswith("encoders.image.")]


def test_aux_loss_weight_linear_decay(tiny_paths, tmp_path):
    model = build(tiny_paths, aux_loss_weight=0.4)
    trainer = FusionTrainer(
        model, args(tmp_path, max_steps=4, aux_loss_schedule="linear_decay"), train_dataset=TensorRows(16)
    )
    seen = []
    original = model.forward

    def spy(*a, **kw):
        seen.append(kw.get("aux_loss_weight"))
        return original(*a, **kw)

    model.forward = spy
    trainer.train()
    assert seen == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert model.config.aux_loss_weight == 0.4  # the saved config keeps the base weight


def test_training_config_expresses_all_controls_without_code(tiny_paths, tmp_path):
    files = write_tiny_dataset(tmp_path / "data", n_train=16, n_eval=4)
    config = {
        "encoders": tiny_paths, "fusion": "gated", "trainable_layers": {"image": 0, "audio": 0, "text": 0},
        "projection_dim": 32, "fusion_hidden_size": 32, "aux_loss_weight": 0.2, "aux_loss_schedule": "linear_decay",
        "encoder_learning_rate": 1e-4, "layerwise_lr_decay": 0.8, "unfreeze_schedule": "gradual",
        "gradual_unfreeze_limit": 1, "l2sp_weight": 0.01, "train_file": str(files["train"]),
        "validation_file": str(files["validation"]), "output_dir": str(tmp_path / "out"), "num_train_epochs": 2,
        "per_device_train_batch_size": 8, "use_cpu": True, "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "disable_tqdm": True, "cache_embeddings": "false",
    }  # fmt: skip
    path = tmp_path / "controls.yaml"
    path.write_text(yaml.safe_dump(config))
    results = main([str(path)])
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert {m["name"]: m["trainable_layers"] for m in saved["modalities"]} == {
        "image": 1,
        "audio": 1,
        "text": 1,
    }
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "loss" in e]
    assert all("l2sp_loss" in e and "aux_loss_text" in e for e in logged)
    weights = [results[f"eval_modality_weight_{n}"] for n in ("image", "audio", "text")]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
