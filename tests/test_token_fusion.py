"""Token-level fusions (cross_attention / bottleneck / perceiver): masks, batch invariance, max_tokens reduction
against independent computations, attention maps, save/reload (incl. remote code), token cache == live training.

(Forward + backward, a missing modality and an absent one are covered for every fusion, token-level included,
by the parametrised tests of test_model_fusion.py.)"""

import math
import os
import subprocess
import sys

import pytest
import torch
from test_model_io import REMOTE_SCRIPT
from tiny_data import write_tiny_dataset

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset
from multimodal_fusion.cache.embedding_cache import cache_embeddings, embedding_fingerprint
from multimodal_fusion.model.token_fusion_layers import sinusoidal_positions
from multimodal_fusion.model.token_sequences import reduce_tokens
from tiny_encoders import random_batch, select_rows

TOKEN_FUSIONS = ["cross_attention", "bottleneck", "perceiver"]
SMALL = {
    "projection_dim": 32,
    "fusion_hidden_size": 32,
    "fusion_heads": 2,
    "fusion_layers": 2,
    "num_labels": 3,
}
MAX_TOKENS = {"image": 5, "audio": 3, "text": 4}
COLUMNS = {"image": "image", "audio": "audio", "text": "text"}


def build(tiny_paths, fusion, max_tokens=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    specs = {
        name: {"path": path, "max_tokens": (max_tokens or {}).get(name)} for name, path in tiny_paths.items()
    }
    return FusionModel.from_encoders(specs, fusion=fusion, **{**SMALL, **kwargs})


# ---------------------------------------------------------------------------------------------------- max_tokens
def test_reduce_tokens_matches_independent_computations():
    torch.manual_seed(0)
    hidden = torch.randn(3, 10, 4)
    mask = torch.tensor(
        [[1] * 10, [1] * 7 + [0] * 3, [0, 0] + [1] * 5 + [0] * 3]
    ).bool()  # incl. left padding
    # audio: each row's own valid frames in min(k, length) equal consecutive bins (np.array_split-like)
    tokens, new_mask = reduce_tokens("audio", hidden, mask, 3)
    for row in range(3):
        frames = hidden[row][mask[row]]
        edges = [math.ceil(i * len(frames) / 3) for i in range(4)]  # frame t -> bin floor(3 t / length)
        bins = [frames[edges[i] : edges[i + 1]] for i in range(3)]
        expected = torch.stack([b.mean(0) for b in bins])
        torch.testing.assert_close(tokens[row][new_mask[row]], expected)
    short = reduce_tokens("audio", hidden[:, :2], torch.ones(3, 2, dtype=torch.bool), 3)
    torch.testing.assert_close(short[0], hidden[:, :2])  # fewer frames than max_tokens: unchanged
    # text: the first k valid tokens, in order
    tokens, new_mask = reduce_tokens("text", hidden, mask, 4)
    for row in range(3):
        torch.testing.assert_close(tokens[row][new_mask[row]], hidden[row][mask[row]][:4])
    # image: CLS kept, the 4x4 patch grid average-pooled to 2x2
    grid = torch.randn(2, 1 + 16, 4)
    tokens, new_mask = reduce_tokens("image", grid, None, 5)
    patches = grid[:, 1:].reshape(2, 2, 2, 2, 2, 4)  # [B, gy, y, gx, x, D]
    expected = patches.mean(dim=(2, 4)).reshape(2, 4, 4)
    torch.testing.assert_close(tokens, torch.cat([grid[:, :1], expected], dim=1))
    assert new_mask.all() and tokens.shape[1] == 5
    with pytest.raises(ValueError, match="max_tokens"):
        reduce_tokens("image", grid, None, 1)


@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_sample_alone_equals_sample_in_padded_batch(tiny_paths, fusion):
    model = build(tiny_paths, fusion, MAX_TOKENS).eval()
    batch = random_batch(3, audio_lengths=[700, 1600, 1100], text_lengths=[3, 7, 5])
    together = model(**batch).logits
    for row in range(3):
        alone = model(**select_rows(batch, [row])).logits
        assert (alone[0] - together[row]).abs().max() <= 1e-4


# ---------------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_masked_token_cannot_change_that_samples_logits(tiny_paths, fusion):
    model = build(tiny_paths, fusion).eval()
    batch = random_batch(2, text_lengths=[4, 7])
    tokens = model.get_modality_tokens(**batch)
    cached = {k: v for k, v in batch.items() if not k.startswith("text")}
    cached["text_token_embeds"], cached["text_token_mask"] = tokens["text"]
    reference = model(**cached).logits
    torch.testing.assert_close(reference, model(**batch).logits, rtol=0, atol=1e-5)
    assert not cached["text_token_mask"][0, 4:].any()
    changed = dict(cached, text_token_embeds=cached["text_token_embeds"].clone())
    changed["text_token_embeds"][0, 4:] = 1e3 * torch.randn(3, 32)
    torch.testing.assert_close(model(**changed).logits, reference, rtol=0, atol=1e-6)
    changed["text_token_embeds"][0, 1] += 1.0  # a real token does change it (the test can fail)
    assert (model(**changed).logits[0] - reference[0]).abs().max() > 1e-4


@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_one_modality_left_and_weights(tiny_paths, fusion):
    model = build(tiny_paths, fusion).eval()
    batch = random_batch(3)
    batch["image_mask"] = torch.tensor([False, True, False])
    batch["audio_mask"] = torch.tensor([False, True, True])
    out = model(**batch)
    assert torch.isfinite(out.logits).all()
    assert out.modality_weights[0].tolist() == [0.0, 0.0, 1.0]  # text alone carries all the weight
    assert out.modality_weights[2, 0] == 0 and out.modality_weights[2, 1:].min() > 0
    torch.testing.assert_close(out.modality_weights.sum(dim=1), torch.ones(3))
    alone = model(**select_rows({k: v for k, v in batch.items()}, [0])).logits
    torch.testing.assert_close(alone[0], out.logits[0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- positions
def test_sinusoidal_positions_count_real_tokens_only():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 1, 0, 1]]).bool()  # right, left, gaps
    features = sinusoidal_positions(mask, 6)
    frequencies = [10000.0 ** (-i / 3) for i in range(3)]  # independent: the Transformer's formula, d = 6
    for row in range(3):
        for position, index in enumerate(mask[row].nonzero().flatten().tolist()):
            expected = [math.sin(position * f) for f in frequencies] + [
                math.cos(position * f) for f in frequencies
            ]
            torch.testing.assert_close(features[row, index], torch.tensor(expected))
    assert sinusoidal_positions(mask, 7).shape == (3, 5, 7)  # odd size: zero-padded last feature


def _with_image_tokens(model, batch, order):
    tokens = model.get_modality_tokens(**batch)
    cached = {k: v for k, v in batch.items() if not k.startswith("image")}
    cached["image_token_embeds"] = tokens["image"][0][:, order]
    cached["image_token_mask"] = tokens["image"][1][:, order]
    return cached


def _strong_positions(model):
    """Unit-scale position maps, so the positions' effect on the (tiny, freshly initialised) logits is large."""
    with torch.no_grad():
        model.fusion.position_proj.normal_(generator=torch.Generator().manual_seed(1))
    return model


@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_position_embeddings_make_token_order_matter(tiny_paths, fusion):
    """Without positions every token fusion is a set function of each modality's tokens (it cannot tell which
    image cell a token comes from); with ``sinusoidal`` (the default) reordering the patch tokens changes the
    logits."""
    batch = random_batch(2, audio_lengths=[900, 1600], text_lengths=[3, 6])
    for positions in ("none", "sinusoidal"):
        model = build(tiny_paths, fusion, MAX_TOKENS, fusion_position_embeddings=positions).eval()
        assert model.config.fusion_position_embeddings == positions
        if positions == "sinusoidal":
            _strong_positions(model)
        with torch.no_grad():
            reference = model(**_with_image_tokens(model, batch, [0, 1, 2, 3, 4])).logits
            reordered = model(**_with_image_tokens(model, batch, [0, 3, 1, 4, 2])).logits
        change = (reordered - reference).abs().max() / reference.abs().max()
        assert change > 1e-3 if positions == "sinusoidal" else change < 1e-5, (positions, change)
    with pytest.raises(ValueError, match="fusion_position_embeddings"):
        build(tiny_paths, fusion, fusion_position_embeddings="rotary")


@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_positions_keep_padding_invariance_masks_and_reload(tiny_paths, tmp_path, fusion):
    """With strong positions: a sample alone == in a right- or left-padded batch (positions count real tokens
    only), a padding token still cannot change the logits, and save -> from_pretrained is identical."""
    model = _strong_positions(build(tiny_paths, fusion, MAX_TOKENS).eval())
    batch = random_batch(3, audio_lengths=[700, 1600, 1100], text_lengths=[3, 7, 5])
    with torch.no_grad():
        together = model(**batch).logits
        for row in range(3):
            alone = model(**select_rows(batch, [row])).logits
            assert (alone[0] - together[row]).abs().max() <= 1e-4
        tokens, mask = model.get_modality_tokens(**batch)["text"]
        shifts = (mask.shape[1] - mask.sum(dim=1)).tolist()  # move each row's padding to the left
        cached = {k: v for k, v in batch.items() if not k.startswith("text")}
        cached["text_token_embeds"] = torch.stack([t.roll(n, 0) for t, n in zip(tokens, shifts, strict=True)])
        cached["text_token_mask"] = torch.stack([m.roll(n, 0) for m, n in zip(mask, shifts, strict=True)])
        assert not cached["text_token_mask"][0, 0]
        assert (model(**cached).logits - together).abs().max() <= 1e-4  # left padding, same positions
        padding = ~cached["text_token_mask"]
        cached["text_token_embeds"] = cached["text_token_embeds"].masked_fill(padding[..., None], 1e3)
        assert (model(**cached).logits - together).abs().max() <= 1e-4
        model.save_pretrained(tmp_path / "ckpt")
        reloaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
        assert reloaded.config.fusion_position_embeddings == "sinusoidal"
        assert torch.equal(reloaded(**batch).logits, together)


# ---------------------------------------------------------------------------------------------------- attentions
@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_attention_maps_only_on_request_and_equal_to_the_fused_kernel_path(tiny_paths, fusion):
    model = build(tiny_paths, fusion, MAX_TOKENS).eval()
    batch = random_batch(2, audio_lengths=[900, 1600], text_lengths=[3, 6])
    batch["audio_mask"] = torch.tensor([True, False])
    default = model(**batch)
    assert default.attentions is None
    out = model(**batch, output_attentions=True)
    torch.testing.assert_close(out.logits, default.logits, rtol=0, atol=1e-5)
    assert len(out.attentions) == SMALL["fusion_layers"] * (2 if fusion == "perceiver" else 3)
    for probs in out.attentions:
        assert probs.shape[:2] == (2, SMALL["fusion_heads"])
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    if fusion == "perceiver":  # weights = first cross-attention's mass per modality, from the explicit map
        tokens = model.get_modality_tokens(**batch)
        lengths = [tokens[name][0].shape[1] for name in ("image", "audio", "text")]
        mass = out.attentions[0][..., 1:].mean(dim=(1, 2)).split(lengths, dim=-1)
        mass = torch.stack([m.sum(-1) for m in mass], dim=-1)
        torch.testing.assert_close(out.modality_weights, mass / mass.sum(-1, keepdim=True))
        assert out.modality_weights[1, 1] == 0
    if fusion == "cross_attention":  # image queries: null key, then audio + text tokens; sample 1 lacks audio
        audio_tokens = model.get_modality_tokens(**batch)["audio"][0].shape[1]
        assert (out.attentions[0][1, :, :, 1 : 1 + audio_tokens] == 0).all()


# ---------------------------------------------------------------------------------------------------- save / reload
@pytest.mark.parametrize("fusion", TOKEN_FUSIONS)
def test_save_reload_and_remote_code_reload_identical(tiny_paths, tmp_path, fusion):
    model = build(tiny_paths, fusion, MAX_TOKENS).eval()
    model.save_pretrained(tmp_path / "ckpt")
    batch = random_batch(2, audio_lengths=[900, 1600], text_lengths=[3, 6])
    with torch.no_grad():
        expected = model(**batch).logits
        reloaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
        assert reloaded.config.modalities["audio"]["max_tokens"] == 3
        assert torch.equal(reloaded(**batch).logits, expected)
    if fusion != "perceiver":  # one remote-code process is enough to show the new files travel
        return
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "ckpt"), str(tmp_path / "batch.pt"),
         str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert (tmp_path / "ckpt" / "token_fusion_layers.py").exists()
    # same weights and code; the other process's thread count may change SDPA's summation order (last ulp)
    torch.testing.assert_close(torch.load(tmp_path / "out.pt")["logits"], expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- token cache
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), n_train=12, n_eval=4, missing_every=4)


def _train(model, rows, collator, steps=4):
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for step in range(steps):
        batch = collator([rows[i] for i in range(3 * step, 3 * step + 3)])
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_cached_token_training_equals_live_training(tiny_paths, data):
    specs = {name: {"path": path, "max_tokens": MAX_TOKENS[name]} for name, path in tiny_paths.items()}
    processor = FusionProcessor.from_encoders(specs)
    loaded = load_fusion_dataset({k: str(v) for k, v in data.items()}, COLUMNS, kinds=processor)
    train = loaded.dataset["train"]
    models = {}
    for path in ("live", "cached", "float16"):
        torch.manual_seed(0)
        models[path] = FusionModel.from_encoders(specs, fusion="cross_attention", trainable_layers=0, **SMALL)
    cached = cache_embeddings(train, models["cached"], processor, COLUMNS)
    half = cache_embeddings(train, models["float16"], processor, COLUMNS, storage_dtype="float16")
    assert {f"{n}_token_embeds" for n in COLUMNS} <= set(cached.column_names)
    assert cached.features["text_token_embeds"].feature.feature.dtype == "float32"
    assert half.features["text_token_embeds"].feature.feature.dtype == "float16"
    rows = {
        "live": list(train.with_format(None)),
        "cached": list(cached.with_format(None)),
        "float16": list(half.with_format(None)),
    }
    assert rows["cached"][3]["text_token_embeds"] is None  # a missing text stays missing
    assert len(rows["cached"][0]["audio_token_embeds"]) <= MAX_TOKENS["audio"]
    live_collator = FusionDataCollator(processor, COLUMNS, embeds_columns={})
    collator = FusionDataCollator(processor, COLUMNS)
    for path, model in models.items():
        _train(model, rows[path], live_collator if path == "live" else collator)
    with torch.no_grad():
        live = models["live"](**live_collator(rows["live"])).logits
        cached_logits = models["cached"](**collator(rows["cached"])).logits
        half_logits = models["float16"](**collator(rows["float16"])).logits
    assert (live - cached_logits).abs().max() <= 1e-5
    assert (live - half_logits).abs().max() <= 5e-2  # float16 storage: close, not equal
    for (name, a), (_, b) in zip(
        models["live"].named_parameters(), models["cached"].named_parameters(), strict=True
    ):
        assert (a - b).abs().max() <= 1e-5, name


def test_token_fingerprint_covers_max_tokens_and_ignores_pooling(tiny_paths):
    processor = FusionProcessor.from_encoders(tiny_paths)

    def fingerprint(fusion, **text_spec):
        torch.manual_seed(0)
        specs = {**tiny_paths, "text": {"path": tiny_paths["text"], **text_spec}}
        model = FusionModel.from_encoders(specs, fusion=fusion, **SMALL)
        return embedding_fingerprint(model, processor, "text")

    tokens = fingerprint("bottleneck")
    assert fingerprint("perceiver", pooling="mean") == tokens  # tokens depend on neither pooling nor fusion
    assert len({tokens, fingerprint("bottleneck", max_tokens=4), fingerprint("attention")}) == 3
