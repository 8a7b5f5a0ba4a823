"""Hyperparameter search from a config's ``hpo:`` section: trials run from the embedding cache, results written."""

import csv

import pytest
import torch
import yaml
from tiny_data import write_tiny_dataset

import multimodal_fusion.training.hpo as hpo_module
from multimodal_fusion.training.hpo import HEAD_FIELDS, parse_space, run_hpo


@pytest.fixture
def config(tiny_paths, tmp_path):
    files = write_tiny_dataset(tmp_path / "data", n_train=12, n_eval=6)
    values = {
        "encoders": tiny_paths,
        "trainable_layers": 0,
        "projection_dim": 16,
        "fusion_hidden_size": 16,
        "train_file": str(files["train"]),
        "validation_file": str(files["validation"]),
        "output_dir": str(tmp_path / "out"),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 6,
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "hpo": {
            "backend": "optuna",
            "n_trials": 3,
            "metric": "eval_loss",
            "space": {
                "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                "fusion": ["concat", "gated"],
            },
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_three_trials_reuse_the_cache_and_write_the_best_config(config, monkeypatch):
    encoder_calls = []
    encoder_types = ("ViTModel", "Wav2Vec2Model", "BertModel")

    def count(module, args, output):
        if type(module).__name__ in encoder_types:
            encoder_calls.append(type(module).__name__)

    calls_after_caching = []
    apply_cache = hpo_module.apply_embedding_cache

    def caching(*args, **kwargs):
        result = apply_cache(*args, **kwargs)
        calls_after_caching.append(len(encoder_calls))
        return result

    monkeypatch.setattr(hpo_module, "apply_embedding_cache", caching)
    handle = torch.nn.modules.module.register_module_forward_hook(count)
    try:
        result = run_hpo([str(config)])
    finally:
        handle.remove()
    assert calls_after_caching[0] > 0  # the frozen encoders ran once, for the cache
    assert len(encoder_calls) == calls_after_caching[0]  # and never again in any of the 3 trials
    with open(result.trials_file) as handle:
        trials = list(csv.DictReader(handle))
    assert len(trials) == 3 and {t["state"] for t in trials} == {"COMPLETE"}
    best = min(trials, key=lambda t: float(t["value"]))  # eval_loss is minimised
    assert result.best_run.run_id == best["number"]
    saved = yaml.safe_load(result.best_config_file.read_text())
    assert "hpo" not in saved and saved["encoders"]
    assert saved["fusion"] == best["params_fusion"]
    assert saved["learning_rate"] == pytest.approx(float(best["params_learning_rate"]))


def test_space_errors_name_the_key():
    allowed = {"learning_rate", *HEAD_FIELDS}
    with pytest.raises(ValueError, match="hpo.space.encoders: not a training argument"):
        parse_space({"encoders": [1, 2]}, allowed)
    with pytest.raises(ValueError, match="hpo.space.learning_rate: a float range needs"):
        parse_space({"learning_rate": {"type": "float", "low": 1e-4}}, allowed)
    with pytest.raises(ValueError, match="`type` must be one of"):
        parse_space({"dropout": {"type": "uniform"}}, allowed)
