"""Bad config values and bad inputs raise errors that name the modality, the field and what was expected."""

import pytest
import torch
import transformers as T

from multimodal_fusion import FusionConfig, FusionModel
from tiny_encoders import random_batch

TINY_BERT = T.BertConfig(
    vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37
)


def config(**kwargs):
    return FusionConfig(modalities={"text": {"config": TINY_BERT}}, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"fusion": "sum"}, "`fusion` must be one of"),
        ({"projection_dim": 0}, "`projection_dim` must be a positive integer"),
        ({"fusion_layers": 1.5}, "`fusion_layers` must be a positive integer"),
        ({"dropout": 1.0}, r"`dropout` must be in \[0, 1\)"),
        ({"modality_dropout": -0.1}, "`modality_dropout`"),
        ({"aux_loss_weight": -1}, "`aux_loss_weight` must be >= 0"),
        ({"fusion": "transformer", "projection_dim": 30, "fusion_heads": 4}, "divisible by `fusion_heads`"),
    ],
)
def test_bad_fusion_fields(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        config(**kwargs)


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"config": TINY_BERT, "pooling": "max"}, "'text': `pooling` must be one of"),
        ({"config": TINY_BERT, "trainable_layers": -1}, "'text': `trainable_layers` must be 0"),
        ({"config": TINY_BERT, "trainable_layers": "top"}, "'text': `trainable_layers`"),
        ({"config": TINY_BERT, "trainable_layers": True}, "'text': `trainable_layers`"),
        ({"config": TINY_BERT, "kind": "video"}, "'text': `kind` must be one of"),
        ({"config": TINY_BERT, "layer": "last"}, "'text': `layer` must be an integer"),
        ({"config": TINY_BERT, "pooling": "pooler", "layer": 1}, "'text': pooling 'pooler'.*`layer`"),
        ({"config": TINY_BERT, "learning_rate": -1e-5}, "'text': `learning_rate`"),
        ({"config": TINY_BERT, "poolling": "cls"}, r"'text': unknown spec keys \['poolling'\]"),
        ({"kind": "text"}, "'text': no encoder"),
        ({"config": {"model_type": "nope"}}, "'text': `config.model_type`"),
        (
            {"kind": "features", "input_dim": 0},
            "'text': kind 'features' needs a positive integer `input_dim`",
        ),
        ({"kind": "features", "input_dim": 3, "hidden_sizes": []}, "'text': `hidden_sizes`"),
    ],
)
def test_bad_modality_specs(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        FusionConfig(modalities={"text": spec})


def test_bad_modality_names_and_empty():
    with pytest.raises(ValueError, match="non-empty"):
        FusionConfig(modalities={})
    with pytest.raises(ValueError, match="identifier"):
        FusionConfig(modalities={"my image": {"config": TINY_BERT}})


def test_dual_encoder_kind_must_be_given():
    with pytest.raises(ValueError, match="'pair': cannot infer `kind`"):
        FusionConfig(modalities={"pair": {"config": T.CLIPConfig()}})


@pytest.fixture(scope="module")
def model(tiny_paths):
    paths = {**tiny_paths, "sensors": {"kind": "features", "input_dim": 4}}
    return FusionModel.from_encoders(paths, num_labels=3, projection_dim=32, fusion_hidden_size=32).eval()


def batch(**overrides):
    base = {**random_batch(2), "sensors_values": torch.randn(2, 4)}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"image_pixel_values": torch.randn(2, 32, 32)}, r"'image' \(image\): field 'image_pixel_values' must be \[batch, 3, height, width\]"),
        ({"image_pixel_values": torch.randn(2, 1, 32, 32)}, "'image_pixel_values' must be"),
        ({"audio_input_values": torch.randn(2, 1, 1600)}, r"'audio' \(audio\): field 'audio_input_values' must be \[batch, samples\]"),
        ({"audio_attention_mask": torch.ones(2, 1500)}, "'audio_attention_mask' must be the shape of 'audio_input_values'"),
        ({"text_input_ids": torch.randn(2, 7)}, "'text_input_ids' must be .*integer token ids"),
        ({"sensors_values": torch.randn(2, 5)}, r"'sensors' \(features\): field 'sensors_values' must be \[batch, 4\]"),
        ({"sensors_values": torch.tensor([[0.0, 1.0, float("nan"), 0.0]] * 2)}, "'sensors'.*'sensors_values' holds NaN or inf"),
        ({"audio_input_values": torch.full((2, 1600), float("inf"))}, "'audio'.*'audio_input_values' holds NaN or inf"),
        ({"text_embeds": torch.randn(2, 31)}, "'text'.*give either 'text_embeds' or encoder inputs"),
        ({"image_mask": torch.ones(2, 1, dtype=torch.bool)}, "'image_mask' must be \\[batch\\] booleans"),
        ({"image_pixel_values": torch.randn(3, 3, 32, 32)}, "inconsistent batch sizes.*'image_pixel_values': 3, 'audio_input_values': 2"),
        ({"video_frames": torch.randn(2, 3)}, "unexpected input 'video_frames'.*modalities"),
        ({"text_token_typ_ids": torch.zeros(2, 7, dtype=torch.long)}, "'text' \\(text\\): unexpected field 'text_token_typ_ids'"),
        ({"audio_input_values": None, "audio_attention_mask": None, "audio_mask": torch.tensor([True, False])}, "'audio_mask' marks samples present but the batch has no audio input"),
        ({"text_input_ids": None}, r"'text' \(text\): missing field"),
    ],
)  # fmt: skip
def test_bad_inputs_name_modality_and_field(model, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(**batch(**overrides))


def test_bad_embeds_shape(model):
    inputs = {k: v for k, v in batch().items() if not k.startswith("text")}
    with pytest.raises(ValueError, match=r"'text_embeds' must be \[batch, 32\]"):
        model(**inputs, text_embeds=torch.randn(2, 16))


def test_set_trainable_layers_errors(model):
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        model.set_trainable_layers("video", 1)
    with pytest.raises(ValueError, match="'image': `trainable_layers`"):
        model.set_trainable_layers("image", -2)
