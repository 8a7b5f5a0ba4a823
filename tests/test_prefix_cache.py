"""Frozen-prefix cache: a training step from cached hidden states equals the live step (loss, gradients) for every
prefix-cacheable family, dropout in the trainable blocks included; not-exact families never use it; the cache
pass, fingerprint and collator; gradual unfreezing recomputes or falls back as logged; run.py integration."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import transformers as T
from tiny_data import write_tiny_dataset

from multimodal_fusion import (
    FusionConfig,
    FusionDataCollator,
    FusionModel,
    FusionProcessor,
    load_fusion_dataset,
)
from multimodal_fusion.cache.prefix_cache import (
    PREFIX_ROW_COLUMN,
    PrefixCacheCollator,
    hidden_fields,
    prefix_cache_plan,
    prefix_fingerprint,
    prefix_hidden_states,
)
from multimodal_fusion.model.modality_encoding import ModalityEncoding
from multimodal_fusion.model.prefix_layers import prefix_exact_reason
from multimodal_fusion.training.prefix_policy import PrefixBoundaryCallback, apply_prefix_cache
from multimodal_fusion.training.unfreezing import UnfreezeCallback
from tiny_encoders import random_batch, select_rows

SMALL = {"projection_dim": 16, "fusion_hidden_size": 16, "num_labels": 3}
KIND = {"vit": "image", "bert": "text", "roberta": "text", "wav2vec2": "audio", "wav2vec2_group": "audio"}


def tiny_config(family: str, layers: int = 3):
    common = {
        "hidden_size": 32,
        "num_hidden_layers": layers,
        "num_attention_heads": 2,
        "intermediate_size": 37,
    }
    if family == "vit":
        return T.ViTConfig(**common, image_size=32, patch_size=8, hidden_dropout_prob=0.2,
                           attention_probs_dropout_prob=0.2)  # fmt: skip
    if family in ("bert", "roberta"):
        config_class = T.BertConfig if family == "bert" else T.RobertaConfig
        return config_class(**common, vocab_size=40, max_position_embeddings=64, hidden_dropout_prob=0.2,
                            attention_probs_dropout_prob=0.2)  # fmt: skip
    norm = "group" if family == "wav2vec2_group" else "layer"
    return T.Wav2Vec2Config(
        **common, conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
        layerdrop=0.0, mask_time_prob=0.0, hidden_dropout=0.0, attention_dropout=0.2, activation_dropout=0.2,
    )  # fmt: skip


def build(family: str, trainable_layers=1, pooling=None, seed=0, config=None):
    torch.manual_seed(seed)
    config = config or tiny_config(family)
    encoder = T.AutoModel.from_config(config)
    spec = {"config": config, "kind": KIND[family], "trainable_layers": trainable_layers}
    if pooling:
        spec["pooling"] = pooling
    model = FusionModel(FusionConfig(modalities={"x": spec}, **SMALL), encoders={"x": encoder})
    return model


def live_batch(family: str, seed: int = 0):
    name = KIND[family]
    batch = random_batch(batch_size=4, audio_lengths=[1600, 1200, 900, 1600], text_lengths=[7, 5, 3, 6],
                         seed=seed, modalities=(name,))  # fmt: skip
    return {"x_" + k[len(name) + 1 :]: v for k, v in batch.items()}


def cached_batch(model, batch):
    """Hidden states at the model's boundary, stored per sample (valid tokens only) and collated again."""
    fields = {k[2:]: v for k, v in batch.items()}
    boundary = prefix_cache_plan(model)["x"].boundary
    model.eval()
    hidden, mask = prefix_hidden_states(model, "x", fields, boundary)
    model.train()
    rows = [hidden[i][mask[i]].numpy() for i in range(hidden.shape[0])]
    return hidden_fields("x", rows, boundary)


def step(model, batch, labels):
    model.zero_grad()
    torch.manual_seed(123)
    loss = model(**{k: v for k, v in batch.items() if k != "labels"}, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


@pytest.mark.parametrize("family", ["vit", "bert", "roberta", "wav2vec2", "wav2vec2_group"])
@pytest.mark.parametrize("pooling", [None, "attention"])
def test_training_step_from_cached_hidden_states_equals_live(family, pooling):
    model = build(family, pooling=pooling).train()
    plan = prefix_cache_plan(model)["x"]
    assert plan.reason is None and plan.boundary == 2
    batch = live_batch(family)
    labels = torch.tensor([0, 1, 2, 1])
    cached = cached_batch(model, batch)
    live_loss, live_grads = step(model, batch, labels)
    rng_after_live = torch.get_rng_state()
    cached_loss, cached_grads = step(model, cached, labels)
    assert torch.equal(rng_after_live, torch.get_rng_state())  # both paths draw the same random numbers
    assert abs(live_loss - cached_loss) <= 1e-5
    assert set(live_grads) == set(cached_grads)
    assert any(n.startswith("encoders.x.") for n in live_grads)  # the top block trains on both paths
    for name, grad in live_grads.items():
        assert (grad - cached_grads[name]).abs().max().item() <= 1e-5, name
    # Dropout in the trainable blocks is live: another seed gives another loss on the cached path too.
    model.zero_grad()
    torch.manual_seed(7)
    assert abs(model(**cached, labels=labels).loss.item() - cached_loss) > 1e-6


def test_padding_and_batch_composition_do_not_change_cached_hidden_states():
    for family in ("bert", "wav2vec2", "wav2vec2_group"):
        model = build(family).eval()
        batch = live_batch(family)
        fields = {k[2:]: v for k, v in batch.items()}
        hidden, mask = prefix_hidden_states(model, "x", fields, 2)
        for row in range(4):
            alone = {k[2:]: v for k, v in select_rows(batch, [row]).items()}
            single, single_mask = prefix_hidden_states(model, "x", alone, 2)
            assert torch.equal(mask[row][: single_mask.shape[1]], single_mask[0])
            diff = (hidden[row][mask[row]] - single[0][single_mask[0]]).abs().max().item()
            assert diff <= 1e-5, (family, row, diff)


@pytest.mark.parametrize(
    ("family", "change", "expected"),
    [
        ("wav2vec2", {"mask_time_prob": 0.05}, "SpecAugment"),
        ("wav2vec2", {"layerdrop": 0.1}, "LayerDrop"),
        ("wav2vec2", {"hidden_dropout": 0.1}, "dropout before the boundary"),
        ("bert", {"is_decoder": True}, "decoder"),
    ],
)
def test_random_or_unsupported_prefixes_are_not_exact(family, change, expected):
    config = tiny_config(family)
    for key, value in change.items():
        setattr(config, key, value)
    model = build(family, config=config)
    plan = prefix_cache_plan(model)["x"]
    assert plan.boundary is None and expected in plan.reason


def test_family_without_runner_never_uses_the_prefix_path():
    config = T.DistilBertConfig(
        vocab_size=40, dim=32, n_layers=3, n_heads=2, hidden_dim=37, max_position_embeddings=64
    )
    torch.manual_seed(0)
    encoder = T.AutoModel.from_config(config)
    spec = {"config": config, "kind": "text", "trainable_layers": 1}
    model = FusionModel(FusionConfig(modalities={"x": spec}, **SMALL), {"x": encoder})
    assert model.adapters["x"].prefix_blocks(encoder) is None  # the adapter has no prefix runner
    plan = prefix_cache_plan(model)["x"]
    assert plan.boundary is None and "DistilBertModel" in plan.reason and "not exact" in plan.reason
    assert prefix_exact_reason(model.adapters["x"], encoder, 2) is not None
    fake = {"x_hidden_states": torch.zeros(2, 3, 32), "x_hidden_mask": torch.ones(2, 3, dtype=torch.bool),
            "x_hidden_layer": torch.full((2,), 2)}  # fmt: skip
    with pytest.raises(ValueError, match="prefix runner"):
        model(**fake)


def test_plan_reasons_and_stale_boundaries_are_refused():
    assert "fully frozen" in prefix_cache_plan(build("vit", trainable_layers=0))["x"].reason
    assert "embeddings train" in prefix_cache_plan(build("vit", trainable_layers="all"))["x"].reason
    assert "intermediate" in prefix_cache_plan(_with_layer())["x"].reason
    model = build("vit", trainable_layers=1)
    cached = cached_batch(model, live_batch("vit"))
    model.set_trainable_layers("x", 2)  # the boundary moved down: block 2 trains now
    with pytest.raises(ValueError, match="skip trainable parameters"):
        model(**cached)


def _with_layer():
    torch.manual_seed(0)
    config = tiny_config("vit")
    spec = {"config": config, "kind": "image", "trainable_layers": 1, "layer": -2}
    encoder = T.AutoModel.from_config(config)
    return FusionModel(FusionConfig(modalities={"x": spec}, **SMALL), {"x": encoder})


# ---------------------------------------------------------------------------------------------------- policy
COLUMNS = {"image": "image", "audio": "audio", "text": "text"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("prefix_data"), n_train=8, n_eval=4, missing_every=3)


def three_modalities(tiny_dir, trainable_layers):
    encoders = {
        "image": str(tiny_dir / "vit"),
        "audio": str(tiny_dir / "wav2vec2"),
        "text": str(tiny_dir / "bert"),
    }
    torch.manual_seed(0)
    model = FusionModel.from_encoders(encoders, trainable_layers=trainable_layers, **SMALL)
    return model, FusionProcessor.from_encoders(encoders)


def policy_args(**overrides):
    values = {"cache_embeddings": "auto", "unfreeze_schedule": None, "unfreeze_unit": "epoch",
              "prefix_cache_dtype": "float32", "cache_max_gb": None, "per_device_eval_batch_size": 4,
              "device": None, "main_process_first": None, "num_train_epochs": 3}  # fmt: skip
    return SimpleNamespace(**{**values, **overrides})


def test_policy_caches_exact_modalities_and_collated_batches_train_as_live(tiny_dir, data, caplog):
    model, processor = three_modalities(tiny_dir, 1)
    loaded = load_fusion_dataset({k: str(v) for k, v in data.items()}, COLUMNS, kinds=processor)
    with caplog.at_level(logging.INFO, logger="multimodal_fusion"):
        splits, run = apply_prefix_cache(loaded.dataset, model, processor, loaded.columns, policy_args())
    text = caplog.text
    # The tiny wav2vec2 keeps hidden_dropout=0.1 before its first block: not exact, runs live, one logged line.
    assert (
        "modality 'audio' runs live: dropout before the boundary is active in training (encoder.dropout (p=0.1))"
        in text
    )
    assert "modality 'image' at block 1: 12 samples x ~17 tokens x 32 x 4 B (float32) = 0.0 MB" in text
    assert sorted(run.cache.stores) == ["image", "text"]
    assert (
        PREFIX_ROW_COLUMN in splits["train"].column_names
        and PREFIX_ROW_COLUMN not in splits["test"].column_names
    )
    rows = list(splits["validation"])
    base = FusionDataCollator(processor, loaded.columns)
    cached = PrefixCacheCollator(base, run.cache)(rows)
    live = base(rows)
    assert (
        "image_pixel_values" not in cached
        and "image_hidden_states" in cached
        and "audio_input_values" in cached
    )
    assert torch.equal(cached["text_mask"], live["text_mask"]) and not cached["text_mask"].all()
    model.train()
    results = [step(model, batch, live["labels"]) for batch in (live, cached)]
    assert abs(results[0][0] - results[1][0]) <= 1e-5
    for name, grad in results[0][1].items():
        assert (grad - results[1][1][name]).abs().max().item() <= 1e-5, name
    # Prediction rows carry no cache row id: the collator runs every modality live.
    test_rows = list(splits["test"])
    assert "image_pixel_values" in PrefixCacheCollator(base, run.cache)(test_rows)


def test_cache_max_gb_and_float16_storage(tiny_dir, data, caplog):
    model, processor = three_modalities(tiny_dir, 1)
    loaded = load_fusion_dataset({k: str(v) for k, v in data.items()}, COLUMNS, kinds=processor)
    with caplog.at_level(logging.INFO, logger="multimodal_fusion"):
        _, run = apply_prefix_cache(
            loaded.dataset, model, processor, loaded.columns, policy_args(cache_max_gb=1e-7)
        )
    assert run is None and "over cache_max_gb=1e-07" in caplog.text
    _, run = apply_prefix_cache(loaded.dataset, model, processor, loaded.columns,
                                policy_args(prefix_cache_dtype="float16"))  # fmt: skip
    assert run.cache.stores["image"].lookup([0])[0].dtype == np.float16
    fingerprints = {prefix_fingerprint(model, processor, "image", 1, d) for d in ("float32", "float16")}
    fingerprints.add(prefix_fingerprint(model, processor, "image", 0, "float32"))
    assert len(fingerprints) == 3
    # Training the blocks above the boundary keeps the fingerprint; a frozen weight below it changes it.
    before = prefix_fingerprint(model, processor, "image", 1)
    with torch.no_grad():
        model.encoders["image"].layers[1].mlp.fc1.weight.add_(1.0)
    assert prefix_fingerprint(model, processor, "image", 1) == before
    with torch.no_grad():
        model.encoders["image"].layers[0].mlp.fc1.weight.add_(1.0)
    assert prefix_fingerprint(model, processor, "image", 1) != before


@pytest.mark.parametrize(("limit", "action"), [(2, "recompute"), ("all", "live")])
def test_gradual_unfreezing_recomputes_or_falls_back_as_logged(tiny_dir, data, caplog, limit, action):
    model, processor = three_modalities(tiny_dir, {"image": 1, "audio": 0, "text": 0})
    loaded = load_fusion_dataset({k: str(v) for k, v in data.items()}, COLUMNS, kinds=processor)
    args = policy_args(unfreeze_schedule="gradual")
    splits, run = apply_prefix_cache(loaded.dataset, model, processor, loaded.columns, args)
    assert sorted(run.cache.stores) == ["image"] and run.cache.stores["image"].num_frozen == 1
    unfreezer = UnfreezeCallback("gradual", limit={"image": limit, "audio": 0, "text": 0})
    callback = PrefixBoundaryCallback(run, unfreezer)
    unfreezer.initial = dict(model.trainable_layers)
    with caplog.at_level(logging.INFO, logger="multimodal_fusion"):
        for epoch in range(3):  # 3 epochs: at epoch 1 the image boundary moves 1 -> 0
            state = SimpleNamespace(epoch=epoch, global_step=0)
            unfreezer.on_epoch_begin(args, state, None, model=model)
            callback.on_epoch_begin(args, state, None, model=model)
    assert [(d["epoch"], d["from"], d["to"], d["action"]) for d in run.decisions][0] == (1, 1, 0, action)
    if action == "recompute":  # limit 2: block 0 stays the boundary for epochs 1 and 2
        assert "boundary 1 -> 0: recomputing the cache" in caplog.text
        assert run.cache.stores["image"].num_frozen == 0 and len(run.decisions) == 1
    else:  # trainable_layers 2 at epoch 1, "all" at epoch 2: the new boundary would hold one epoch
        assert "runs live from now on: boundary 1 -> 0: recomputing would not pay off" in caplog.text
        assert "image" not in run.cache.stores
        return
    # After the recompute, a step from the new cache equals the live step with block 1 training too.
    rows = list(splits["validation"])
    base = FusionDataCollator(processor, loaded.columns)
    live, cached = base(rows), PrefixCacheCollator(base, run.cache)(rows)
    assert int(cached["image_hidden_layer"][0]) == 0
    model.train()
    (live_loss, live_grads), (cached_loss, cached_grads) = (
        step(model, b, live["labels"]) for b in (live, cached)
    )
    assert abs(live_loss - cached_loss) <= 1e-5
    assert "encoders.image.layers.0.attention.q_proj.weight" in cached_grads
    for name, grad in live_grads.items():
        assert (grad - cached_grads[name]).abs().max().item() <= 1e-5, name


def test_run_py_trains_from_the_prefix_cache_like_live_and_reuses_it(hub_ids, tmp_path, monkeypatch):
    from test_training_run import write_config

    from multimodal_fusion import prefix_cache
    from multimodal_fusion.training.run_fusion import main

    encoded = []
    original = prefix_cache._PrefixEncoder.__call__
    monkeypatch.setattr(
        prefix_cache._PrefixEncoder,
        "__call__",
        lambda self, *a: encoded.append(len(a[-1])) or original(self, *a),
    )
    from_hidden = []
    original_run = ModalityEncoding.from_hidden_states
    monkeypatch.setattr(
        ModalityEncoding,
        "from_hidden_states",
        lambda self, f: from_hidden.append(self.name) or original_run(self, f),
    )
    files = write_tiny_dataset(tmp_path / "data", n_train=8, n_eval=4)
    encoders = {"image": hub_ids["vit"], "audio": hub_ids["wav2vec2_group"], "text": hub_ids["bert"]}
    runs = {}
    for name, overrides in [("first", {}), ("second", {}), ("off", {"cache_embeddings": "false"})]:
        encoded.clear()
        from_hidden.clear()
        config = write_config(
            tmp_path / f"{name}.yaml", encoders, files, tmp_path / name, max_steps=4,
            trainable_layers={"image": 1, "audio": 0, "text": 1}, eval_strategy="no",
            **overrides,
        )  # fmt: skip
        runs[name] = (main([str(config)]), len(encoded), sorted(set(from_hidden)))
    (first, first_encoded, first_hidden), (second, second_encoded, _), (off, off_encoded, off_hidden) = (
        runs.values()
    )
    assert first_hidden == ["image", "text"] and off_hidden == []  # audio: wav2vec2 hidden_dropout -> live
    # The second run loads the cache files: only the disk estimate's probe batch runs (one per cached split).
    assert first_encoded > 2 and second_encoded == 2 and off_encoded == 0
    assert second["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-6)
    assert off["eval_loss"] == pytest.approx(first["eval_loss"], abs=1e-5)  # live == prefix-cached
    assert off["train_loss"] == pytest.approx(first["train_loss"], abs=1e-5)
