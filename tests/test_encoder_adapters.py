"""Encoder adapters beyond the family matrix: poolings against hand computations, Whisper's frame mask, tied
weights through reload, reentrant checkpointing, interpolate_pos_encoding, pad = eos, the adapter registry."""

from __future__ import annotations

import logging

import pytest
import torch
import transformers as T
from tiny_families import FAMILIES

from multimodal_fusion import ENCODER_ADAPTERS, FusionConfig, FusionModel, FusionProcessor
from multimodal_fusion.model.block_checkpointing import checkpointed_modules
from multimodal_fusion.model.encoder_adapters import adapter_class_for
from multimodal_fusion.model.pooling_layers import POOLING_REGISTRY
from tiny_encoders import IMAGE_SIZE, make_bert, make_vit

SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}


def test_cls_and_last_pooling_pick_the_first_and_last_valid_token_for_either_padding_side():
    hidden = torch.randn(2, 5, 4)
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    cls, last = POOLING_REGISTRY["cls"](4), POOLING_REGISTRY["last"](4)
    assert torch.equal(cls(hidden, left), torch.stack([hidden[0, 2], hidden[1, 0]]))
    assert torch.equal(last(hidden, left), torch.stack([hidden[0, 4], hidden[1, 4]]))
    assert torch.equal(cls(hidden, right), torch.stack([hidden[0, 0], hidden[1, 0]]))
    assert torch.equal(last(hidden, right), torch.stack([hidden[0, 2], hidden[1, 4]]))


@pytest.mark.parametrize(
    ("arch", "adapter", "pooling"),
    [
        ("gpt2", "decoder_only", "last"),
        ("t5_seq2seq", "encoder_decoder_text", "mean"),
        ("clip_text", "clip_text", "pooler"),
        ("siglip_vision", "vision_pooled", "pooler"),
        ("whisper", "whisper", "mean"),
        ("bert", "text_encoder", "cls"),
    ],
)
def test_family_adapter_and_default_pooling(arch, adapter, pooling, tmp_path):
    build, kind, spec_kind, _ = FAMILIES[arch]
    build(tmp_path / arch)
    config = T.AutoConfig.from_pretrained(tmp_path / arch)
    tower = getattr(config, {"image": "vision_config", "text": "text_config"}.get(spec_kind, "_"), config)
    assert adapter_class_for(tower, kind) is ENCODER_ADAPTERS[adapter]
    assert ENCODER_ADAPTERS[adapter].default_pooling == pooling


def test_left_padded_gpt2_pools_the_same_as_unpadded(tmp_path):
    """GPT-2 has learned absolute positions: left padding needs position_ids from the mask (else 2.9 off)."""
    FAMILIES["gpt2"][0](tmp_path / "gpt2")
    model = FusionModel.from_encoders({"text": str(tmp_path / "gpt2")}, **SMALL).eval()
    processor = FusionProcessor.from_encoders({"text": str(tmp_path / "gpt2")})
    processor.processors["text"].padding_side = "left"
    texts = ["a red dog", "the blue cat sat on the mat"]
    with torch.no_grad():
        both = model.get_modality_embeddings(**processor(text=texts))["text"]
        alone = model.get_modality_embeddings(**processor(text=texts[:1]))["text"]
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=0)


def test_tokenizer_without_pad_token_pads_with_eos_logged_once(tmp_path, caplog):
    FAMILIES["llama"][0](tmp_path / "llama")
    with caplog.at_level(logging.WARNING):
        processor = FusionProcessor.from_encoders({"words": str(tmp_path / "llama")})
        processor(words=["a red dog", "the cat"])
    tokenizer = processor.processors["words"]
    assert tokenizer.pad_token == tokenizer.eos_token
    assert sum("'words'" in r.getMessage() and "pad" in r.getMessage() for r in caplog.records) == 1


def test_whisper_mean_covers_the_clip_not_the_padding(tmp_path):
    """A 0.3 s clip padded to Whisper's fixed window: the pooled vector is the mean over its own encoder frames
    (mel frames / 2), recomputed here from transformers' WhisperModel encoder."""
    FAMILIES["whisper"][0](tmp_path / "whisper")
    model = FusionModel.from_encoders({"audio": str(tmp_path / "whisper")}, **SMALL).eval()
    processor = FusionProcessor.from_encoders({"audio": str(tmp_path / "whisper")})
    batch = processor(audio=[torch.randn(4800).numpy()], sampling_rate=16000)
    assert batch["audio_attention_mask"].sum() == 30
    reference = T.WhisperModel.from_pretrained(tmp_path / "whisper").get_encoder().eval()
    with torch.no_grad():
        pooled = model.get_modality_embeddings(**batch)["audio"][0]
        hidden = reference(batch["audio_input_features"]).last_hidden_state[0]
    torch.testing.assert_close(pooled, hidden[:15].mean(0), atol=1e-5, rtol=0)
    assert (pooled - hidden.mean(0)).abs().max() > 1e-3


def test_tied_weights_inside_an_encoder_survive_save_and_reload(tmp_path):
    torch.manual_seed(0)
    config = T.T5Config(vocab_size=40, d_model=32, d_kv=16, d_ff=37, num_layers=2, num_heads=2)
    encoder = T.T5EncoderModel(config)
    fusion_config = FusionConfig(modalities={"text": {"config": config}}, **SMALL)
    model = FusionModel(fusion_config, encoders={"text": encoder}).eval()
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
    text = reloaded.encoders["text"]
    assert text.encoder.embed_tokens.weight is text.shared.weight
    assert torch.equal(text.shared.weight, encoder.shared.weight)
    ids = torch.randint(0, 40, (2, 5))
    with torch.no_grad():
        assert torch.equal(reloaded(text_input_ids=ids).logits, model(text_input_ids=ids).logits)


def test_reentrant_checkpointing_trains_the_top_block_above_frozen_embeddings(tiny_dir):
    model = FusionModel.from_encoders(
        {"image": str(tiny_dir / "vit"), "text": str(tiny_dir / "bert")}, trainable_layers=1, **SMALL
    ).train()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    ids = torch.randint(5, 20, (2, 6))
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    model(text_input_ids=ids, image_pixel_values=pixels, labels=torch.tensor([0, 1])).loss.backward()
    for name in ("image", "text"):
        top = model.encoder_blocks(name)[-1]
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters()), name


def test_checkpointing_covers_an_encoder_transformers_has_none_for(tmp_path, tiny_dir, caplog):
    FAMILIES["convnext"][0](tmp_path / "convnext")
    model = FusionModel.from_encoders(
        {"photo": str(tmp_path / "convnext"), "text": str(tiny_dir / "bert")}, **SMALL
    )
    with caplog.at_level(logging.WARNING):
        model.activation_checkpointing_enable()
    assert not any("checkpointing" in r.getMessage() for r in caplog.records)
    assert checkpointed_modules(model.encoders["photo"]) == ["encoder.stages.0", "encoder.stages.1"]
    assert checkpointed_modules(model.encoders["text"]) == ["encoder.layer.0", "encoder.layer.1"]


def test_interpolate_pos_encoding_is_automatic_at_another_image_size(tmp_path):
    path = make_vit(tmp_path / "vit")
    model = FusionModel.from_encoders({"image": str(path)}, **SMALL).eval()
    bigger = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert model(image_pixel_values=bigger).logits.shape == (1, 3)
    strict = FusionModel.from_encoders(
        {"image": {"path": str(path), "interpolate_pos_encoding": False}}, **SMALL
    )
    with pytest.raises(ValueError, match="doesn't match"):
        strict(image_pixel_values=bigger)


def test_missing_weight_on_the_forward_path_is_an_error_naming_the_modality(tmp_path):
    make_bert(tmp_path / "bert")
    config = T.AutoConfig.from_pretrained(tmp_path / "bert")
    T.BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "no_pooler")
    FusionModel.from_encoders({"text": str(tmp_path / "no_pooler")}, **SMALL)  # cls pooling: pooler unused
    with pytest.raises(ValueError, match="'text'.*lacks weights.*pooler"):
        FusionModel.from_encoders(
            {"text": {"path": str(tmp_path / "no_pooler"), "pooling": "pooler"}}, **SMALL
        )


TEXT_TOWER = dict(
    vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
)


def _align():
    vision = dict(image_size=32, hidden_dim=64, width_coefficient=0.25, depth_coefficient=0.25)
    return T.AlignModel(T.AlignConfig(text_config=TEXT_TOWER, vision_config=vision, projection_dim=16))


def _chinese_clip():
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, image_size=32,
                  patch_size=8)  # fmt: skip
    return T.ChineseCLIPModel(
        T.ChineseCLIPConfig(text_config=TEXT_TOWER, vision_config=vision, projection_dim=16)
    )


@pytest.mark.parametrize(
    ("make", "kind", "tower"),
    [
        (_align, "text", "text_model"),
        (_align, "image", "vision_model"),
        (_chinese_clip, "text", "text_model"),
    ],
)
def test_towers_that_need_a_prefix_mapping_load_the_checkpoint_weights(make, kind, tower, tmp_path):
    """ALIGN and Chinese-CLIP towers load as pure random weights from the parent folder without the mapping."""
    torch.manual_seed(0)
    dual = make()
    dual.save_pretrained(tmp_path / "dual")
    model = FusionModel.from_encoders({"x": {"path": str(tmp_path / "dual"), "kind": kind}}, **SMALL)
    reference = getattr(dual, tower).state_dict()
    state = model.encoders["x"].state_dict()
    for key, value in state.items():
        if key in reference:
            assert torch.equal(value, reference[key]), key
        else:
            assert key.startswith("pooler."), (
                key
            )  # Chinese-CLIP's dual model has no text pooler (unused by cls)
