"""Frozen-prefix cache: a training step from cached hidden states equals the live step (loss, gradients) for every
prefix-cacheable family, dropout in the trainable blocks included; not-exact families never use it; the cache
pass, fingerprint and collator; gradual unfreezing recomputes or falls back as logged; run.py integration."""

import logging

import numpy as np
import pytest
import torch
import transformers as T
from tiny_data import write_tiny_dataset
from tiny_encoders import random_batch, select_rows

from multimodal_fusion import FusionConfig, FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset
from multimodal_fusion.prefix_cache import (
    PREFIX_ROW_COLUMN,
    PrefixCache,
    PrefixCacheCollator,
    cache_hidden_states,
    hidden_fields,
    prefix_cache_plan,
    prefix_fingerprint,
    prefix_hidden_states,
)
from multimodal_fusion.prefix_layers import PREFIX_RUNNER_REGISTRY, prefix_exact_reason

SMALL = {"projection_dim": 16, "fusion_hidden_size": 16, "num_labels": 3}
KIND = {"vit": "image", "bert": "text", "roberta": "text", "wav2vec2": "audio", "wav2vec2_group": "audio"}


def tiny_config(family: str, layers: int = 3):
    common = {"hidden_size": 32, "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": 37}
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
    model = FusionModel(
        FusionConfig(modalities={"x": spec}, **SMALL), encoders={"x": encoder}
    )
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
    loss = model(**batch, labels=labels).loss
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
    config = T.DistilBertConfig(vocab_size=40, dim=32, n_layers=3, n_heads=2, hidden_dim=37, max_position_embeddings=64)
    torch.manual_seed(0)
    encoder = T.AutoModel.from_config(config)
    spec = {"config": config, "kind": "text", "trainable_layers": 1}
    model = FusionModel(FusionConfig(modalities={"x": spec}, **SMALL), {"x": encoder})
    assert type(encoder).__name__ not in PREFIX_RUNNER_REGISTRY
    plan = prefix_cache_plan(model)["x"]
    assert plan.boundary is None and "DistilBertModel" in plan.reason and "not exact" in plan.reason
    assert prefix_exact_reason(encoder, 2) is not None
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
