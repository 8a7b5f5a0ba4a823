"""Regressions found by comparing the refactored package with v0.1 (a reviewer's equivalence run): each was a
wrong error, a bare crash or a silently accepted bad spec."""

import json

import pytest
import torch
from tiny_families import clip_dual

from multimodal_fusion import FusionModel, FusionProcessor

SMALL = {"projection_dim": 8, "fusion_hidden_size": 8, "num_labels": 3}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    clip_dual(folder)
    return str(folder)


def test_a_missing_clip_text_is_not_an_end_of_text_error(clip_folder):
    """The end-of-text check of CLIP text reads present rows only: a missing sample's placeholder row has none."""
    specs = {"caption": {"path": clip_folder, "kind": "text"}, "vec": {"kind": "features", "input_dim": 2}}
    processor, model = FusionProcessor.from_encoders(specs), FusionModel.from_encoders(specs, **SMALL).eval()
    batch = processor(caption=["a b", None], vec=[[0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(**processor(caption=["a b"], vec=[[0.0, 1.0]])).logits
    assert torch.allclose(logits[:1], alone, atol=1e-5)
    broken = dict(batch, caption_input_ids=torch.zeros_like(batch["caption_input_ids"]))
    with pytest.raises(
        ValueError, match=r"'caption'.*rows \[0\].*end-of-text"
    ):  # a present row still checked
        model(**broken)


def test_saved_config_has_no_kind_class_for_built_in_kinds(tiny_paths, tmp_path):
    """config.json of a model with built-in kinds holds no ``kind_class`` key (v0.1 rejects unknown spec keys)."""
    FusionModel.from_encoders({"image": tiny_paths["image"]}, **SMALL).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["modalities"] and all("kind_class" not in spec for spec in saved["modalities"])


def test_pooled_vectors_of_a_token_level_fusion_are_a_clear_error(tiny_paths):
    model = FusionModel.from_encoders({"image": tiny_paths["image"]}, fusion="cross_attention", **SMALL)
    with pytest.raises(
        ValueError, match="'image'.*token-level fusion 'cross_attention'.*get_modality_tokens"
    ):
        model.get_modality_embeddings(image_pixel_values=torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize(
    ("spec", "pattern"),
    [
        ({"kind": "text"}, r"'image': `kind` is 'text' but the 'vit' encoder reads kind 'image'"),
        ({"kind": "video"}, r"'image': `kind` must be one of \('image', 'audio', 'text', 'features'\)"),
    ],
)
def test_a_kind_the_encoder_does_not_read_is_an_error(tiny_paths, spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        FusionModel.from_encoders({"image": {"path": tiny_paths["image"], **spec}}, **SMALL)


def test_bad_spec_entries_name_the_modality():
    with pytest.raises(
        ValueError, match="modality 'image': expected a Hub id / folder path or a spec dict, got int"
    ):
        FusionModel.from_encoders({"image": 5}, **SMALL)
    for key, value in (("pooling", "mean"), ("layer", -2)):
        with pytest.raises(
            ValueError, match=f"'vec': kind 'features' is encoded by an MLP, which has no `{key}`"
        ):
            FusionModel.from_encoders({"vec": {"kind": "features", "input_dim": 2, key: value}}, **SMALL)


def test_integer_feature_values_are_a_field_error():
    model = FusionModel.from_encoders({"vec": {"kind": "features", "input_dim": 2}}, **SMALL)
    with pytest.raises(
        ValueError, match=r"'vec' \(features\): field 'vec_values' must be \[batch, 2\] floats.*int64"
    ):
        model(vec_values=torch.ones(3, 2, dtype=torch.long))


def test_reloaded_weights_sit_in_aligned_memory(tiny_paths, tmp_path):
    """Weights memory-mapped at their safetensors offsets are copied to aligned memory on load: CPU kernels choose
    their code path by alignment, and unaligned weights gave a reloaded model logits 4.8e-7 off the saved one's
    (the quickstart notebook's exact-reload check)."""
    torch.manual_seed(0)
    model = FusionModel.from_encoders({"image": tiny_paths["image"]}, **SMALL).eval()
    model.save_pretrained(tmp_path)
    reloaded = FusionModel.from_pretrained(tmp_path).eval()
    assert all(p.data_ptr() % 64 == 0 for p in reloaded.parameters())
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(
            reloaded(image_pixel_values=pixels).logits, model(image_pixel_values=pixels).logits
        )
