"""Bad-sample skipping with every cache and every encoder state: a missing image file in the train and the
validation split, ``skip_bad_samples: true``, through ``training/run_fusion.run``.

Each encoder state uses its own cache: frozen -> pooled-vector (or, with a token-level fusion, token) embedding
cache, partly trainable -> frozen-prefix cache, fully trainable -> no cache. The skipped row must be dropped from
every cached column of the batch alike (the prefix cache once kept it: ``inconsistent batch sizes``), be counted
once per pass over its split, and training and evaluation must see exactly the other rows."""

import functools
import json

import pytest
import torch
from test_training_run import write_config
from tiny_data import write_tiny_dataset

from multimodal_fusion import FusionModel
from multimodal_fusion.training.run_fusion import parse_arguments, run

N_TRAIN, N_EVAL = 8, 4

CASES = {
    # name: (trainable_layers, fusion, which cache each modality should use)
    "image embedding cache, text prefix cache": ({"image": 0, "text": 1}, "gated", ("embeds", "prefix")),
    "image prefix cache, text embedding cache": ({"image": 1, "text": 0}, "gated", ("prefix", "embeds")),
    "image live, text prefix cache": ({"image": "all", "text": 1}, "gated", ("live", "prefix")),
    # a token-level fusion reads live token sequences: the partly trainable text runs live (no prefix cache)
    "image token cache, text partly trainable": (
        {"image": 0, "text": 1},
        "cross_attention",
        ("tokens", "live"),
    ),
    "image prefix cache, text live": ({"image": 1, "text": "all"}, "concat", ("prefix", "live")),
    "image embedding cache, text live": ({"image": 0, "text": "all"}, "concat", ("embeds", "live")),
}


@pytest.fixture(scope="module")
def broken_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("broken")
    files = write_tiny_dataset(root, n_train=N_TRAIN, n_eval=N_EVAL)
    (root / "images" / "train_2.png").unlink()  # one missing file in train ...
    (root / "images" / "validation_1.png").unlink()  # ... and one in validation (test is intact)
    return files


@pytest.mark.parametrize("case", list(CASES))
def test_a_missing_file_is_skipped_with_every_cache_and_encoder_state(case, broken_data, hub_ids, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    trainable_layers, fusion, expected = CASES[case]
    seen = []  # (training, rows, batch keys) of every forward pass with labels
    original = FusionModel.forward

    @functools.wraps(original)  # Trainer finds `labels` in the signature
    def recording_forward(self, *args, **kwargs):
        if kwargs.get("labels") is not None:
            sizes = {k: v.shape[0] for k, v in kwargs.items() if isinstance(v, torch.Tensor) and v.dim()}
            assert len(set(sizes.values())) == 1, sizes  # every field (cached or live) has the same rows
            seen.append((self.training, kwargs["labels"].shape[0], set(kwargs)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(FusionModel, "forward", recording_forward)
    encoders = {"image": hub_ids["vit"], "text": hub_ids["bert"]}
    config = write_config(
        tmp_path / "config.yaml", encoders, broken_data, tmp_path / "out", fusion=fusion,
        trainable_layers=trainable_layers, skip_bad_samples=True, max_steps=-1, num_train_epochs=1,
        per_device_train_batch_size=4, per_device_eval_batch_size=4,
    )  # fmt: skip
    result = run(*parse_arguments([str(config)]))
    saved = json.loads(
        (tmp_path / "out" / "fusion_data.json").read_text()
    )  # what predict / evaluate default to
    assert saved == {"columns": {"image": "image", "text": "text"}, "label_column": "label"}

    train = [rows for training, rows, _ in seen if training]
    evaluation = [rows for training, rows, _ in seen if not training]
    assert sum(train) == N_TRAIN - 1  # one epoch without the bad train row
    # validation without its bad row, then the whole test split; each once more per masked modality for the
    # evaluation report's ablation (image, text)
    assert sum(evaluation) == ((N_EVAL - 1) + N_EVAL) * (1 + 2)
    # skipped: the train row once (one epoch), the validation row once (one evaluation)
    assert result.metrics["skipped_samples"] == 2
    for key in ("train_loss", "eval_loss", "test_loss"):
        assert torch.isfinite(torch.tensor(result.metrics[key])), key
    # each modality went through the cache its encoder state calls for
    keys = set().union(*(k for training, _, k in seen if training))
    marker = {"embeds": "{}_embeds", "tokens": "{}_token_embeds", "prefix": "{}_hidden_states", "live": None}
    for name, kind in zip(("image", "text"), expected, strict=True):
        if marker[kind] is not None:
            assert marker[kind].format(name) in keys, (name, kind, sorted(keys))
        else:
            assert not {f"{name}_embeds", f"{name}_token_embeds", f"{name}_hidden_states"} & keys, keys
