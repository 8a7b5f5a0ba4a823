"""trainable_layers 0 / k / "all": exact trainable sets, eval mode of frozen parts, no autograd graph."""

import pytest
import torch

from multimodal_fusion import FusionModel
from tiny_encoders import IMAGE_SIZE, random_batch

SMALL = {"projection_dim": 32, "fusion_hidden_size": 32, "fusion_heads": 2, "num_labels": 3}


def trainable(model, name):
    return {n for n, p in model.encoders[name].named_parameters() if p.requires_grad}


def names(model, name, *prefixes, exclude=()):
    """Independent expectation: parameter names of the encoder starting with any prefix."""
    return {
        n
        for n, _ in model.encoders[name].named_parameters()
        if n.startswith(prefixes) and not n.startswith(tuple(exclude))
    }


def test_vit_bert_wav2vec2_trainable_sets(tiny_paths):
    model = FusionModel.from_encoders(
        tiny_paths, trainable_layers={"image": 0, "audio": 1, "text": 2}, **SMALL
    )
    assert trainable(model, "image") == set()
    # wav2vec2 (stable layer norm): top block + the final encoder norm; conv front-end stays frozen.
    assert trainable(model, "audio") == names(model, "audio", "encoder.layers.1.", "encoder.layer_norm.")
    # BERT with CLS pooling: its pooler is never used, so it never trains.
    assert trainable(model, "text") == names(model, "text", "encoder.layer.")
    model.set_trainable_layers("image", 1)
    assert trainable(model, "image") == names(model, "image", "layers.1.", "layernorm.")
    model.set_trainable_layers("image", "all")
    assert trainable(model, "image") == names(model, "image", "", exclude=("pooler.",))
    model.set_trainable_layers("audio", "all")
    assert trainable(model, "audio") == names(model, "audio", "", exclude=("feature_extractor.",))
    assert model.trainable_layers == {"image": "all", "audio": "all", "text": 2}
    # New layers always train.
    new = [p for n, p in model.named_parameters() if not n.startswith("encoders.")]
    assert new and all(p.requires_grad for p in new)


def test_feature_encoder_and_pooler_options(tiny_paths):
    paths = {
        "audio": {"path": tiny_paths["audio"], "train_feature_encoder": True},
        "text": {"path": tiny_paths["text"], "pooling": "pooler", "trainable_layers": 1},
    }
    model = FusionModel.from_encoders(paths, **SMALL)
    assert trainable(model, "audio") == names(model, "audio", "")
    assert trainable(model, "text") == names(model, "text", "encoder.layer.1.", "pooler.")


def test_intermediate_layer_leaves_upper_blocks_untrainable(tiny_paths):
    model = FusionModel.from_encoders({"text": {"path": tiny_paths["text"], "layer": 1}}, **SMALL)
    assert trainable(model, "text") == names(model, "text", "embeddings.", "encoder.layer.0.")
    with pytest.raises(ValueError, match="'text'.*trainable_layers.*2.*1 usable"):
        model.set_trainable_layers("text", 2)
    out = model(**random_batch(2, modalities=("text",)), labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_timm_blocks_are_stages(tiny_dir):
    model = FusionModel.from_encoders({"cam": str(tiny_dir / "timm")}, trainable_layers=1, **SMALL)
    assert trainable(model, "cam") == names(model, "cam", "timm_model.layer4.")
    blocks = model.encoder_blocks("cam")
    assert [type(b).__name__ for b in blocks] == ["Sequential"] * 4
    assert blocks[-1] is model.encoders["cam"].timm_model.layer4
    model.set_trainable_layers("cam", "all")
    assert trainable(model, "cam") == names(model, "cam", "")


def test_encoder_blocks_in_order(tiny_paths):
    model = FusionModel.from_encoders(tiny_paths, **SMALL)
    assert model.encoder_blocks("image") == list(model.encoders["image"].layers)
    assert model.encoder_blocks("text") == list(model.encoders["text"].encoder.layer)
    assert model.encoder_blocks("audio") == list(model.encoders["audio"].encoder.layers)


def test_frozen_encoders_stay_in_eval_mode_and_build_no_graph(tiny_dir, tiny_paths):
    paths = {"text": tiny_paths["text"], "cam": str(tiny_dir / "timm")}
    model = FusionModel.from_encoders(paths, trainable_layers=0, **SMALL).train()
    assert not model.encoders["text"].training and not model.encoders["cam"].training
    assert model.fusion.training and model.projections["text"].training
    batch = {
        **random_batch(4, modalities=("text",)),
        "cam_pixel_values": torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE),
    }
    stats = {n: b.clone() for n, b in model.encoders["cam"].named_buffers()}
    first = model.get_modality_embeddings(**batch)
    second = model.get_modality_embeddings(**batch)
    for name in first:  # BERT has dropout 0.1 and the CNN BatchNorm: identical only if both are in eval mode
        assert torch.equal(first[name], second[name])
        assert not first[name].requires_grad  # ran under no_grad
    for n, b in model.encoders["cam"].named_buffers():
        assert torch.equal(b, stats[n]), n  # no BatchNorm statistics drift


def test_partially_frozen_encoder_modes(tiny_paths):
    model = FusionModel.from_encoders({"text": tiny_paths["text"]}, trainable_layers=1, **SMALL).train()
    text = model.encoders["text"]
    assert not text.embeddings.training and not text.encoder.layer[0].training
    assert text.encoder.layer[1].training
    model.set_trainable_layers("text", 0)
    assert not text.encoder.layer[1].training
    model.set_trainable_layers("text", "all")
    assert text.embeddings.training and text.encoder.layer[0].training
    model.eval()
    assert not text.encoder.layer[1].training


def test_frozen_encoder_output_identical_across_train_passes_with_logits(tiny_paths):
    model = FusionModel.from_encoders(tiny_paths, trainable_layers=0, dropout=0.0, **SMALL).train()
    batch = random_batch(3)
    first, second = model(**batch), model(**batch)
    for name in ("image", "audio", "text"):
        assert torch.equal(first.modality_embeddings[name], second.modality_embeddings[name])
