"""The one typed spec model: ``ModalitySpec`` with its own-network part (``OwnNetworkSpec``), the processor's
``ProcessorSpec``, their saved forms (v0.1 files read and written back unchanged) and the deprecated mapping reads."""

import json
import warnings
from pathlib import Path

import pytest

from multimodal_fusion import FusionConfig, FusionProcessor
from multimodal_fusion.model.configuration_fusion import ModalitySpec
from multimodal_fusion.model.spec_parts import OwnNetworkSpec, ProcessorSpec

V0_1 = Path(__file__).parent / "fixtures" / "v0_1" / "own_network"

OWN = {
    "module": "torchvision.models:resnet18",
    "module_kwargs": {"num_classes": 10},
    "weights": Path("w.pt"),
    "feature_layer": "avgpool",
    "blocks": "layer4",
    "trainable_modules": "fc",
    "image_size": 32,
}


def test_own_network_fields_flat_or_nested_give_one_typed_part():
    flat = ModalitySpec.from_dict("photo", {"kind": "image", **OWN})
    nested = ModalitySpec.from_dict("photo", {"kind": "image", "network": OWN})
    assert flat == nested
    assert flat.network == OwnNetworkSpec(
        module="torchvision.models:resnet18",
        module_kwargs={"num_classes": 10},
        module_from_instance=False,
        weights="w.pt",
        feature_layer="avgpool",
        blocks="layer4",
        trainable_modules=["fc"],
        image_size=32,
    )
    assert flat.trainable_layers == 0  # naming the submodules that train freezes the rest
    saved = flat.to_dict()
    assert "network" not in saved  # written flat, as v0.1 wrote them
    assert {key: saved[key] for key in OWN} == {**OWN, "weights": "w.pt", "trainable_modules": ["fc"]}
    assert ModalitySpec.from_dict("photo", saved) == flat


def test_a_pretrained_encoder_has_no_network_part():
    spec = ModalitySpec.from_dict("vec", {"kind": "features", "input_dim": 3})
    assert spec.network is None
    saved = spec.to_dict()
    assert (saved["module"], saved["module_kwargs"], saved["module_from_instance"]) == (None, None, False)
    assert saved["trainable_modules"] is None and saved["image_size"] is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"kind": "features", "input_dim": 3, "image_size": 32}, r"'vec'.*\['image_size'\].*give `module`"),
        ({"kind": "image", **OWN, "network": OWN}, r"'vec'.*either flat or under `network`"),
        ({"kind": "image", "module": "no_colon"}, r"'vec'.*`module` must be an nn.Module or an import path"),
        ({"kind": "image", "network": {**OWN, "image_size": 0}}, r"'vec'.*`image_size` must be a positive"),
        ({"kind": "image", "network": {**OWN, "trainable_modules": [3]}}, r"'vec'.*`trainable_modules`"),
        (
            {"kind": "image", "network": {**OWN, "pooling": "cls"}},
            r"'vec'.*unknown own-network keys \['pooling'\]",
        ),
    ],
)
def test_own_network_errors_name_the_modality_and_field(spec, message):
    with pytest.raises(ValueError, match=message):
        ModalitySpec.from_dict("vec", spec)


def test_v0_1_config_specs_are_written_back_unchanged():
    saved = json.loads((V0_1 / "config.json").read_text())["modalities"]
    config = FusionConfig(modalities=saved)
    assert config.modalities["text"].network.module == "own_networks:TextTransformer"
    assert config.modalities["image"].network is None
    written = config.to_dict()["modalities"]
    for before, after in zip(saved, written, strict=True):
        before = {k: v for k, v in before.items() if k != "config"}
        assert {k: after[k] for k in before} == before


def test_v0_1_processor_specs_are_typed_and_written_back_unchanged():
    saved = json.loads((V0_1 / "processor_config.json").read_text())["modalities"]
    processor = FusionProcessor.from_pretrained(V0_1)
    text = processor.modalities["text"]
    assert isinstance(text, ProcessorSpec) and text.kind == "text" and text.max_length is None
    assert processor.modalities["image"].timm is False
    assert processor.to_dict()["modalities"] == saved


def test_processor_spec_saves_only_what_is_set(tmp_path):
    processor = FusionProcessor(
        {
            "vec": {"kind": "features", "input_dim": 3},
            "frames": {"kind": "audio", "frames": True, "input_dim": 4},
        }
    )
    assert processor.modalities["frames"] == ProcessorSpec(kind="audio", input_dim=4, frames=True)
    processor.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "processor_config.json").read_text())["modalities"]
    assert written == [
        {"name": "vec", "kind": "features", "path": None, "input_dim": 3},
        {"name": "frames", "kind": "audio", "path": None, "input_dim": 4, "frames": True},
    ]
    assert FusionProcessor.from_pretrained(tmp_path).modalities == processor.modalities
    with pytest.raises(ValueError, match=r"modality 'vec': unknown processor spec keys \['pooling'\]"):
        FusionProcessor({"vec": {"kind": "features", "input_dim": 3, "pooling": "mean"}})
    with pytest.raises(ValueError, match=r"modality 'vec': `input_fields` must be a list"):
        FusionProcessor({"vec": {"kind": "features", "input_dim": 3, "input_fields": "values"}})


def test_mapping_reads_still_work_with_a_deprecation_warning():
    spec = ModalitySpec.from_dict("photo", {"kind": "image", **OWN})
    processor = FusionProcessor({"vec": {"kind": "features", "input_dim": 3}})
    settings = processor.modalities["vec"]
    with pytest.warns(DeprecationWarning, match=r"\.image_size"):
        assert spec["image_size"] == 32
    with pytest.warns(DeprecationWarning, match=r"ModalitySpec\.network\.feature_layer"):
        assert spec.feature_layer == "avgpool"  # the former attribute, moved to the network part
    with pytest.warns(DeprecationWarning):
        assert spec.get("kind") == "image" and spec.get("unknown", 5) == 5
    with pytest.warns(DeprecationWarning):
        assert settings["input_dim"] == 3 and settings.get("max_length") is None
    with pytest.warns(DeprecationWarning):
        settings["input_dim"] = 5
    assert settings.input_dim == 5
    assert "input_dim" in settings and "sampling_rate" not in settings  # the saved keys, as the former dicts
    with pytest.warns(DeprecationWarning):
        assert dict(settings) == {"kind": "features", "path": None, "input_dim": 5}
    with pytest.warns(DeprecationWarning):
        settings["sampling_rate"] = 8000  # any field may be set, as on the dict
    assert settings.to_dict()["sampling_rate"] == 8000
    settings.sampling_rate = None
    with pytest.raises(KeyError), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        settings["sampling_rate"]


def test_run_caps_only_text_lengths_and_model_card_reads_the_specs(tiny_dir):
    from multimodal_fusion.hub.upload import model_card
    from multimodal_fusion.training.arguments import DataArguments, ModelArguments
    from multimodal_fusion.training.run_fusion import build_processor

    encoders = {"text": str(tiny_dir / "bert"), "vec": {"kind": "features", "input_dim": 3}}
    processor = build_processor(
        ModelArguments(encoders=encoders), DataArguments(train_file="unused.csv", max_text_length=5)
    )
    assert processor.modalities["text"].max_length == 5  # the tokenizer's limit (64 here) capped
    assert processor.modalities["vec"].to_dict() == {"kind": "features", "path": None, "input_dim": 3}
    config = FusionConfig(
        modalities={
            "vec": {"kind": "features", "input_dim": 3, "trainable_layers": 0},
            "photo": {"kind": "image", "module": "torchvision.models:resnet18", "pooling": "mean"},
        }
    )
    card = model_card(config)
    assert "| `vec` | features | `MLP` | - | 0 |" in card
    assert "| `photo` | image | `torchvision.models:resnet18` | mean | all |" in card
