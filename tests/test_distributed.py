"""Two-process DDP on CPU (gloo) through ``accelerate launch --multi_gpu``: frozen image encoder, trainable text
encoder; saved weights equal rank 0's, ranks agree, and the logged loss equals a single-process run's."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_data import write_tiny_dataset

from multimodal_fusion import FusionModel
from tiny_encoders import make_bert

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).with_name("ddp_run.py")


@pytest.fixture(scope="module")
def setup(tiny_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    make_bert(root / "bert_no_dropout", dropout=0.0)
    files = write_tiny_dataset(root / "data", n_train=16, n_eval=4)
    config = {
        "encoders": {"image": str(tiny_dir / "vit"), "text": str(root / "bert_no_dropout")},
        "fusion": "concat", "trainable_layers": {"image": 0, "text": "all"}, "dropout": 0.0,
        "projection_dim": 32, "fusion_hidden_size": 32,
        "train_file": str(files["train"]), "validation_file": str(files["validation"]),
        "max_steps": 3, "learning_rate": 1e-3, "use_cpu": True, "report_to": "none", "save_strategy": "no",
        "logging_steps": 1, "seed": 0, "disable_tqdm": True, "dataloader_num_workers": 0,
    }  # fmt: skip
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return root, path


def run_single_and_ddp(config, single, double, *overrides):
    """The same config once in one process (batch 4) and once in two DDP processes (2 x 2)."""
    launch(
        [
            sys.executable,
            str(SCRIPT),
            str(config),
            "--output_dir",
            str(single),
            "--per_device_train_batch_size",
            "4",
            *overrides,
        ]
    )
    accelerate = Path(sys.executable).with_name("accelerate")
    launch(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
         "no", "--dynamo_backend", "no", str(SCRIPT), str(config), "--output_dir", str(double),
         "--per_device_train_batch_size", "2", *overrides],
    )  # fmt: skip
    return torch.load(single / "rank0.pt"), torch.load(double / "rank0.pt"), torch.load(double / "rank1.pt")


def launch(command, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-30000:]
    return result


def test_two_process_ddp_matches_single_process(setup):
    root, config = setup
    single, double = root / "single", root / "double"
    one, rank0, rank1 = run_single_and_ddp(config, single, double)
    assert one["world_size"] == 1 and rank0["world_size"] == 2
    # every trainable parameter is used each step: DDP runs without the unused-parameter search
    assert rank0["find_unused"] is False
    saved = load_file(double / "model.safetensors")
    reloaded = FusionModel.from_pretrained(double).state_dict()
    for key, value in rank0["state"].items():
        assert torch.equal(reloaded[key], value), key
        assert torch.equal(rank1["state"][key], value), key
    assert saved  # weights were written as safetensors
    losses = {
        name: [e["loss"] for e in run["log_history"] if "loss" in e]
        for name, run in (("one", one), ("two", rank0))
    }
    assert len(losses["one"]) == len(losses["two"]) == 3
    for a, b in zip(losses["one"], losses["two"], strict=True):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), losses
    # and the trained text encoder moved identically in both set-ups
    for key, value in one["state"].items():
        assert torch.allclose(rank0["state"][key], value, atol=1e-5), key


def test_unfreezing_mid_training_keeps_ddp_ranks_identical(setup):
    """DDP only syncs parameters that required grad when it wrapped the model; the text encoder is unfrozen at
    step 1, after wrapping. Ranks see different data, so identical weights prove the gradients were averaged;
    matching the single-process run proves they were averaged correctly."""
    root, config = setup
    overrides = ["--trainable_layers", '{"image": 0, "text": 0}', "--unfreeze_schedule", '{"1": {"text": "all"}}',
                 "--unfreeze_unit", "step"]  # fmt: skip
    one, rank0, rank1 = run_single_and_ddp(
        config, root / "unfreeze_single", root / "unfreeze_double", *overrides
    )
    pretrained = FusionModel.from_encoders({"text": str(root / "bert_no_dropout")}, num_labels=3).state_dict()
    text_keys = [k for k in rank0["state"] if k.startswith("encoders.text.")]
    assert any(
        not torch.equal(rank0["state"][k], pretrained[k]) for k in text_keys
    )  # the text encoder trained
    for key, value in rank0["state"].items():
        assert torch.equal(rank1["state"][key], value), key
        assert torch.allclose(one["state"][key], value, atol=1e-5), key


def test_uneven_ranks_give_the_full_batch_step(setup, tiny_dir):
    """Exact gradient accumulation across ranks: a row dropped by `skip_bad_samples` on one rank and missing text
    modalities make the ranks' labelled counts differ (per modality too); with plain SGD, 2 x 2 DDP must still
    train exactly like the single-process batch of 4 (main + auxiliary losses + L2-SP)."""
    root, _ = setup
    data = root / "uneven"
    files = write_tiny_dataset(data, n_train=16, n_eval=4, missing_every=3)
    lines = files["train"].read_text().splitlines()
    lines[2] = lines[2].replace("images/train_1.png", "images/missing.png")  # row 1: a bad sample
    files["train"].write_text("\n".join(lines) + "\n")
    config = yaml.safe_load((root / "config.yaml").read_text())
    config.update(
        train_file=str(files["train"]), validation_file=str(files["validation"]), skip_bad_samples=True,
        aux_loss_weight=0.5, l2sp_weight=0.05, optim="sgd", weight_decay=0.0, lr_scheduler_type="constant",
        max_grad_norm=0.0, learning_rate=0.05,
    )  # fmt: skip
    path = data / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    one, rank0, rank1 = run_single_and_ddp(path, data / "single", data / "double")
    start = FusionModel.from_encoders(
        {"image": str(tiny_dir / "vit"), "text": str(root / "bert_no_dropout")}, num_labels=3
    ).state_dict()
    assert any(
        not torch.equal(one["state"][k], start[k]) for k in one["state"] if k.startswith("encoders.text.")
    )
    for key, value in rank0["state"].items():
        assert torch.equal(rank1["state"][key], value), key
        torch.testing.assert_close(
            value, one["state"][key], atol=2e-6, rtol=0, msg=lambda m, key=key: f"{key}: {m}"
        )
