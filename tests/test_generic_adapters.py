"""Vision architectures no adapter names get the generic image adapter, which probes what the built encoder returns
(its own ``pooler_output`` -> ``pooler``, else ``mean`` over tokens / the feature map) instead of guessing from the
family: the default spec builds, carries information, and equals an independent computation from the bare model."""

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image
from tiny_families import _save

from multimodal_fusion import FusionModel, FusionProcessor
from multimodal_fusion.model import adapters_image
from multimodal_fusion.model.encoder_adapters import ProbedVisionAdapter, adapter_class_for

SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}


def _bit(size: int):
    return T.BitImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def pvt_v2(path):
    config = T.PvtV2Config(
        image_size=32, hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, num_attention_heads=[1, 2],
        sr_ratios=[2, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
    )  # fmt: skip
    _save(T.PvtV2Model(config), [T.PvtImageProcessor(size={"height": 32, "width": 32})], path)


def regnet(path):
    config = T.RegNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8)
    _save(T.RegNetModel(config), [T.ConvNextImageProcessor(size={"shortest_edge": 32})], path)


def hiera(path):
    config = T.HieraConfig(
        image_size=[64, 64], embed_dim=8, patch_size=[7, 7], patch_stride=[4, 4], patch_padding=[3, 3],
        query_stride=[2, 2], num_heads=[1, 2], depths=[1, 1], embed_dim_multiplier=2.0, num_query_pool=1,
        masked_unit_size=[4, 4],
    )  # fmt: skip
    _save(T.HieraModel(config), [_bit(64)], path)


def focalnet(path):
    config = T.FocalNetConfig(
        image_size=32, embed_dim=8, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3], patch_size=4
    )
    _save(T.FocalNetModel(config), [_bit(32)], path)


UNNAMED = {"pvt_v2": (pvt_v2, "mean"), "regnet": (regnet, "pooler"), "hiera": (hiera, "pooler"),
           "focalnet": (focalnet, "pooler")}  # fmt: skip
"""Architecture -> (tiny checkpoint builder, the pooling the probe must pick: PVTv2 returns no pooled output)."""


def _images(seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.mark.parametrize("arch", sorted(UNNAMED))
def test_architecture_without_adapter_builds_with_the_default_spec_and_carries_information(arch, tmp_path):
    build, pooling = UNNAMED[arch]
    torch.manual_seed(0)
    build(tmp_path / arch)
    config = T.AutoConfig.from_pretrained(tmp_path / arch)
    assert adapter_class_for(config) is ProbedVisionAdapter  # no adapter names the family
    model = FusionModel.from_encoders({"image": str(tmp_path / arch)}, **SMALL).eval()
    processor = FusionProcessor.from_encoders({"image": str(tmp_path / arch)})
    spec = model.config.modalities["image"]
    assert spec.pooling == pooling
    with torch.no_grad():
        first = model.get_modality_embeddings(**processor(image=_images(1), return_tensors="pt"))["image"]
        second = model.get_modality_embeddings(**processor(image=_images(2), return_tensors="pt"))["image"]
        logits = model(**processor(image=_images(1), return_tensors="pt")).logits
    assert first.shape == (2, spec.output_dim) and torch.isfinite(first).all() and logits.shape == (2, 3)
    assert not torch.allclose(first, second, atol=1e-4)  # different images, different pooled vectors
    assert not torch.allclose(first[0], first[1], atol=1e-4)
    # the probed choice is recorded: the saved model reloads with the same pooling and width, no probe needed
    model.save_pretrained(tmp_path / "saved")
    loaded = FusionModel.from_pretrained(tmp_path / "saved").eval()
    assert loaded.config.modalities["image"].pooling == pooling
    with torch.no_grad():
        again = loaded.get_modality_embeddings(**processor(image=_images(1), return_tensors="pt"))["image"]
    torch.testing.assert_close(again, first)


def _bare_reference(bare: torch.nn.Module, pixel_values: torch.Tensor, pooling: str) -> torch.Tensor:
    """What the pooling must give, from the bare model's own outputs: its pooled output, or the mean over every
    spatial position of its last feature map / every token."""
    with torch.no_grad():
        out = bare(pixel_values=pixel_values)
    if pooling == "pooler":
        return out.pooler_output.flatten(1)
    hidden = out.last_hidden_state
    return hidden.flatten(2).mean(-1) if hidden.dim() == 4 else hidden.mean(1)


@pytest.mark.parametrize(("arch", "pooling"), [("resnet", "pooler"), ("pvt_v2", "mean")])
def test_unknown_architecture_pools_what_the_bare_model_returns(arch, pooling, tmp_path, monkeypatch):
    """ResNet with its adapter unregistered (the pooled-vision adapter no longer names it), and PVTv2 (named by
    none): the generic adapter's pooled vector equals the bare model's pooler_output / mean of last_hidden_state."""
    if arch == "resnet":
        names = tuple(t for t in adapters_image.PooledVisionAdapter.model_types if t != "resnet")
        monkeypatch.setattr(adapters_image.PooledVisionAdapter, "model_types", names)
        config = T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
        torch.manual_seed(0)
        _save(T.ResNetModel(config), [T.ConvNextImageProcessor(size={"shortest_edge": 32})], tmp_path / arch)
    else:
        torch.manual_seed(0)
        pvt_v2(tmp_path / arch)
    path = str(tmp_path / arch)
    assert adapter_class_for(T.AutoConfig.from_pretrained(path)) is ProbedVisionAdapter
    model = FusionModel.from_encoders({"image": path}, **SMALL).eval()
    assert type(model.adapters["image"]) is ProbedVisionAdapter
    assert model.config.modalities["image"].pooling == pooling
    bare = T.AutoModel.from_pretrained(path).eval()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        pooled = model.get_modality_embeddings(image_pixel_values=pixel_values)["image"]
    expected = _bare_reference(bare, pixel_values, pooling)
    assert model.pooled_dims["image"] == expected.shape[1]
    torch.testing.assert_close(pooled, expected)


def test_explicit_pooling_is_kept_and_sets_the_width(tmp_path):
    """A spec's own pooling wins over the probe (RegNet returns a pooled output, `mean` is asked for)."""
    torch.manual_seed(0)
    regnet(tmp_path / "regnet")
    path = str(tmp_path / "regnet")
    model = FusionModel.from_encoders({"image": {"path": path, "pooling": "mean"}}, **SMALL).eval()
    assert model.config.modalities["image"].pooling == "mean"
    bare = T.AutoModel.from_pretrained(path).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled = model.get_modality_embeddings(image_pixel_values=pixel_values)["image"]
    torch.testing.assert_close(pooled, _bare_reference(bare, pixel_values, "mean"))
