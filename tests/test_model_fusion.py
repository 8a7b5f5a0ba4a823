"""Forward/backward of every fusion, missing modalities, batch invariance, auxiliary losses, modality dropout."""

import pytest
import torch

from multimodal_fusion import FUSION_REGISTRY, FusionModel
from multimodal_fusion.model.block_checkpointing import checkpointed_modules
from tiny_encoders import IMAGE_SIZE, random_batch, select_rows

FUSIONS = sorted(FUSION_REGISTRY)
TOKEN_LEVEL = {"cross_attention", "bottleneck", "perceiver"}
WEIGHING = {"gated", "attention", "transformer", *TOKEN_LEVEL}
SMALL = {"projection_dim": 32, "fusion_hidden_size": 32, "fusion_heads": 2}


def build(paths, fusion="concat", **kwargs):
    torch.manual_seed(0)
    return FusionModel.from_encoders(paths, fusion=fusion, num_labels=3, **{**SMALL, **kwargs})


def test_registry_holds_the_six_pooled_and_three_token_level_fusions():
    pooled = {"concat", "gated", "attention", "transformer", "tensor", "low_rank_tensor"}
    assert set(FUSIONS) == pooled | TOKEN_LEVEL


@pytest.mark.parametrize("fusion", FUSIONS)
def test_fusion_forward_backward_three_modalities(tiny_paths, fusion):
    model = build(tiny_paths, fusion).train()
    batch = random_batch(4, audio_lengths=[1600, 1200, 800, 1600], text_lengths=[7, 5, 3, 6])
    out = model(**batch, labels=torch.tensor([0, 1, 2, 1]))
    assert out.logits.shape == (4, 3)
    assert out.fused_embedding.shape == (4, 32)
    assert set(out.modality_embeddings) == {"image", "audio", "text"}
    assert all(v.shape == (4, 32) for v in out.modality_embeddings.values())
    if fusion in WEIGHING:
        assert out.modality_weights.shape == (4, 3)
        torch.testing.assert_close(out.modality_weights.sum(dim=1), torch.ones(4))
    else:
        assert out.modality_weights is None
    out.loss.backward()
    # Every trainable parameter takes part in the graph (DDP needs no unused-parameter search) ...
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    # ... and the gradient reaches the fusion module and every encoder.
    for name in ("fusion", "encoders.image", "encoders.audio", "encoders.text"):
        grads = [
            p.grad.abs().sum()
            for n, p in model.named_parameters()
            if n.startswith(name) and p.grad is not None
        ]
        assert torch.stack(grads).sum() > 0, name


def test_four_modalities_two_image_encoders_timm_and_features(tiny_dir):
    paths = {
        "left_camera": str(tiny_dir / "vit"),
        "right_camera": str(tiny_dir / "timm"),
        "sensors": {"kind": "features", "input_dim": 6, "hidden_sizes": [16, 16]},
        "text": str(tiny_dir / "bert"),
    }
    model = build(paths, "attention").train()
    assert [s["kind"] for s in model.config.modalities.values()] == ["image", "image", "features", "text"]
    assert model.config.modalities["right_camera"]["pooling"] == "pooler"  # a CNN has no CLS token
    text = random_batch(2, modalities=("text",))
    batch = {
        "left_camera_pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE),
        "right_camera_pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE),
        "sensors_values": torch.randn(2, 6),
        **text,
    }
    out = model(**batch, labels=torch.tensor([1, 2]))
    assert out.modality_weights.shape == (2, 4)
    out.loss.backward()
    assert model.encoders["right_camera"].timm_model.conv1[0].weight.grad.abs().sum() > 0
    assert model.encoders["sensors"].layers[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("fusion", FUSIONS)
def test_masked_modality_cannot_change_that_samples_logits(tiny_paths, fusion):
    model = build(tiny_paths, fusion).eval()
    batch = random_batch(3)
    batch["audio_mask"] = torch.tensor([False, True, True])
    reference = model(**batch).logits
    changed = dict(batch, audio_input_values=batch["audio_input_values"].clone())
    changed["audio_input_values"][0] = torch.randn(1600) * 10
    logits = model(**changed).logits
    assert torch.equal(logits[0], reference[0])
    assert torch.equal(logits[1:], reference[1:])  # masked rows are not even encoded
    out = model(**batch)
    if fusion in TOKEN_LEVEL:  # no placeholder: a missing modality contributes no token at all
        assert "audio" not in model.missing_embeddings
        assert (out.modality_embeddings["audio"][0] == 0).all()
    else:
        torch.testing.assert_close(
            out.modality_embeddings["audio"][0], model.missing_embeddings["audio"].detach()
        )
    if fusion in WEIGHING:
        assert out.modality_weights[0, 1] == 0  # no weight on the missing modality


@pytest.mark.parametrize("fusion", FUSIONS)
def test_modality_absent_from_batch_equals_masked_out(tiny_paths, fusion):
    model = build(tiny_paths, fusion).eval()
    batch = random_batch(2)
    masked = dict(batch, text_mask=torch.tensor([False, False]))
    absent = {k: v for k, v in batch.items() if not k.startswith("text")}
    torch.testing.assert_close(model(**masked).logits, model(**absent).logits, rtol=0, atol=0)


def test_all_modalities_missing_gives_finite_output(tiny_paths):
    model = build(tiny_paths, "transformer").eval()
    batch = random_batch(2)
    for name in ("image", "audio", "text"):
        batch[f"{name}_mask"] = torch.tensor([False, True])
    out = model(**batch)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("fusion", ["concat", "transformer"])
def test_sample_alone_equals_sample_in_padded_batch(tiny_paths, fusion):
    model = build(tiny_paths, fusion).eval()
    batch = random_batch(3, audio_lengths=[700, 1600, 1100], text_lengths=[3, 7, 5])
    together = model(**batch).logits
    for row in range(3):
        alone = model(**select_rows(batch, [row])).logits
        assert (alone[0] - together[row]).abs().max() <= 1e-4


def test_group_norm_wav2vec2_is_batch_invariant_and_naive_padding_is_not(tiny_dir):
    """Group-norm wav2vec2 (the ``base`` checkpoints) normalises over the padded waveform; the model encodes each
    distinct length unpadded instead. Measure both."""
    model = build({"audio": str(tiny_dir / "wav2vec2_group")}).eval()
    batch = random_batch(3, audio_lengths=[600, 1600, 1000], modalities=("audio",))
    together = model.get_modality_embeddings(**batch)["audio"]
    encoder = model.encoders["audio"]
    naive_deviation = 0.0
    for row in range(3):
        alone = model.get_modality_embeddings(**select_rows(batch, [row]))["audio"]
        assert (alone[0] - together[row]).abs().max() <= 1e-5
        # What plain padded encoding would give.
        with torch.no_grad():
            hidden = encoder(batch["audio_input_values"][row : row + 1]).last_hidden_state
            length = int(batch["audio_attention_mask"][row].sum())
            frames = encoder._get_feature_vector_attention_mask(
                hidden.shape[1], batch["audio_attention_mask"][row : row + 1]
            )
            padded_mean = (hidden * frames.unsqueeze(-1)).sum(1) / frames.sum()
            exact = encoder(batch["audio_input_values"][row : row + 1, :length]).last_hidden_state.mean(1)
        naive_deviation = max(naive_deviation, float((padded_mean - exact).abs().max()))
    print(f"group-norm wav2vec2: naive padded pooling deviates by {naive_deviation:.3g}; ours by <= 1e-5")
    assert naive_deviation > 1e-3  # padding does leak into group norm, so the unpadded path matters


def test_aux_losses_add_weighted_mean_of_per_modality_losses(tiny_paths):
    model = build(tiny_paths, "gated", aux_loss_weight=0.3).eval()
    batch = random_batch(4)
    batch["text_mask"] = torch.tensor([True, False, True, False])
    labels = torch.tensor([0, 2, 1, 1])
    out = model(**batch, labels=labels)
    ce = torch.nn.functional.cross_entropy
    main = ce(out.logits, labels)
    present = batch["text_mask"]
    aux = [
        ce(out.aux_logits["image"], labels),
        ce(out.aux_logits["audio"], labels),
        ce(out.aux_logits["text"][present], labels[present]),  # only where text is present
    ]
    torch.testing.assert_close(out.loss, main + 0.3 * torch.stack(aux).mean())
    torch.testing.assert_close(out.aux_losses["text"], aux[2])
    no_aux = build(tiny_paths, "gated").eval()
    assert no_aux.aux_heads is None and no_aux(**batch, labels=labels).aux_logits is None


def test_problem_types_multi_label_and_regression(tiny_paths):
    batch = random_batch(2)
    model = build(tiny_paths, problem_type="multi_label_classification").eval()
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    out = model(**batch, labels=labels)
    torch.testing.assert_close(
        out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, labels)
    )
    torch.manual_seed(0)
    regressor = FusionModel.from_encoders(tiny_paths, num_labels=1, **SMALL).eval()
    target = torch.tensor([0.5, -1.0])
    out = regressor(**batch, labels=target)
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), target))


def test_modality_dropout_masks_whole_modalities_in_training_only(tiny_paths):
    model = build(tiny_paths, "attention", modality_dropout=0.4)
    batch = random_batch(64, seed=1)
    model.train()
    torch.manual_seed(0)
    out = model(**batch)
    mask = out.modality_mask
    assert mask.any(dim=1).all()  # every sample keeps at least one modality
    dropped = 1 - mask.float().mean().item()
    assert 0.2 < dropped < 0.5
    placeholder = torch.stack([model.missing_embeddings[n] for n in ("image", "audio", "text")])
    embeddings = torch.stack([out.modality_embeddings[n] for n in ("image", "audio", "text")], dim=1)
    torch.testing.assert_close(embeddings[~mask], placeholder.expand(64, -1, -1)[~mask])
    assert (out.modality_weights[~mask] == 0).all()
    model.eval()
    assert model(**batch).modality_mask.all()
    # The loss changes with dropout on (placeholders replace real vectors), and is reproducible under a seed.
    labels = torch.randint(0, 3, (64,))
    model.train()
    torch.manual_seed(3)
    with_dropout = model(**batch, labels=labels).loss
    torch.manual_seed(3)
    assert torch.equal(model(**batch, labels=labels).loss, with_dropout)
    model.config.modality_dropout = 0.0
    torch.manual_seed(3)
    assert not torch.equal(model(**batch, labels=labels).loss, with_dropout)


def test_precomputed_embeds_skip_the_encoder_and_match_live_path(tiny_paths):
    model = build(tiny_paths, "transformer").eval()
    batch = random_batch(3, audio_lengths=[1600, 900, 1200])
    live = model(**batch).logits
    pooled = model.get_modality_embeddings(**batch)
    cached = {k: v for k, v in batch.items() if not k.startswith("image")}
    cached["image_embeds"] = pooled["image"]
    calls = []
    handle = model.encoders["image"].register_forward_hook(lambda *a: calls.append(1))
    torch.testing.assert_close(model(**cached).logits, live, rtol=0, atol=1e-6)
    handle.remove()
    assert calls == []


def test_gradient_checkpointing_gives_the_same_gradients(tiny_dir, tiny_paths):
    paths = {**tiny_paths, "cam2": str(tiny_dir / "timm")}
    batch = {**random_batch(2), "cam2_pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)}
    labels = torch.tensor([0, 1])
    grads = []
    for checkpointing in (False, True):
        model = build(paths, dropout=0.0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert checkpointed_modules(model.encoders["cam2"])[-1] == "timm_model.layer4"
            assert checkpointed_modules(model.encoders["image"]) == ["layers.0", "layers.1"]
        model(**batch, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_and_half_precision_weights(tiny_paths):
    model = build(tiny_paths, "low_rank_tensor").train()
    batch = random_batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch, labels=torch.tensor([0, 1]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    half = build(tiny_paths, "gated").to(torch.bfloat16).eval()
    out = half(**batch)  # float32 audio/image inputs are cast to the encoders' dtype
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits).all()
