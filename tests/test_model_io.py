"""Loading encoders (folders, Hub ids, timm, dual encoders), weight preservation, save/reload, remote code."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers as T
from transformers import AutoConfig, AutoModel

from multimodal_fusion import FusionConfig, FusionModel
from tiny_encoders import IMAGE_SIZE, random_batch

SMALL = {"projection_dim": 32, "fusion_hidden_size": 32, "fusion_heads": 2, "num_labels": 3}


def reference_state(path):
    config = AutoConfig.from_pretrained(path)
    if config.model_type == "timm_wrapper":
        config.model_args.pop("num_classes", None)
    return AutoModel.from_pretrained(path, config=config).state_dict()


def assert_encoders_bit_identical(model, paths):
    for name, path in paths.items():
        expected = reference_state(path)
        actual = model.encoders[name].state_dict()
        assert actual.keys() == expected.keys(), name
        for key in expected:
            assert torch.equal(actual[key], expected[key]), f"{name}.{key}"


@pytest.fixture(scope="module")
def four_paths(tiny_dir):
    return {
        "image": str(tiny_dir / "vit"),
        "audio": str(tiny_dir / "wav2vec2_group"),
        "text": str(tiny_dir / "bert"),
        "cam": str(tiny_dir / "timm"),
    }


def four_batch():
    return {**random_batch(2), "cam_pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)}


@pytest.mark.parametrize("fusion", ["transformer", "low_rank_tensor"])
def test_pretrained_weights_bit_for_bit_after_from_encoders_and_reload(four_paths, tmp_path, fusion):
    model = FusionModel.from_encoders(
        four_paths, fusion=fusion, trainable_layers={"image": 1, "cam": 0}, **SMALL
    )
    assert_encoders_bit_identical(model, four_paths)
    # The new layers were initialised (not left at zero / empty).
    assert model.classifier.weight.std() > 0 and model.projections["text"][0].weight.std() > 0
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and "config.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    reloaded = FusionModel.from_pretrained(tmp_path)
    assert_encoders_bit_identical(reloaded, four_paths)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    model.eval(), reloaded.eval()
    batch = four_batch()
    assert torch.equal(model(**batch).logits, reloaded(**batch).logits)
    # Freezing survives the round trip (transformers' loader makes everything trainable; we re-apply it).
    for name, param in model.named_parameters():
        assert reloaded.get_parameter(name).requires_grad == param.requires_grad, name
    assert not reloaded.encoders["cam"].training or not reloaded.training


def test_config_round_trip_keeps_modality_order_and_classes(four_paths, tmp_path):
    model = FusionModel.from_encoders(four_paths, fusion="gated", **SMALL)
    model.config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert [m["name"] for m in saved["modalities"]] == ["image", "audio", "text", "cam"]
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, FusionConfig)
    assert config.modality_names == ["image", "audio", "text", "cam"]
    assert type(config.encoder_config("audio")).__name__ == "Wav2Vec2Config"
    assert type(config.encoder_config("cam")).__name__ == "TimmWrapperConfig"
    assert config.to_dict()["modalities"] == model.config.to_dict()["modalities"]


def test_attn_implementation_and_dtype_reach_every_encoder(tiny_paths, tmp_path):
    FusionModel.from_encoders(tiny_paths, **SMALL).save_pretrained(tmp_path)
    eager = FusionModel.from_pretrained(tmp_path, attn_implementation="eager")
    for name in ("image", "audio", "text"):
        assert eager.encoders[name].config._attn_implementation == "eager", name
    mixed = FusionModel.from_pretrained(tmp_path, attn_implementation={"text": "eager", "": "sdpa"})
    assert mixed.encoders["text"].config._attn_implementation == "eager"
    assert mixed.encoders["image"].config._attn_implementation == "sdpa"
    half = FusionModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    out = half.eval()(**random_batch(2))
    assert torch.isfinite(out.logits.float()).all()
    eager_direct = FusionModel.from_encoders(
        tiny_paths, encoder_kwargs={"attn_implementation": "eager"}, **SMALL
    )
    assert eager_direct.encoders["text"].config._attn_implementation == "eager"


def test_hub_repo_ids_load_through_the_hub_cache(hub_ids, tiny_dir):
    ids = {
        "image": hub_ids["vit"],
        "audio": hub_ids["wav2vec2"],
        "text": hub_ids["bert"],
        "cam": hub_ids["timm"],
    }
    model = FusionModel.from_encoders(ids, **SMALL)
    assert model.config.modalities["image"]["path"] == "tiny-org/vit"
    paths = {
        "image": tiny_dir / "vit",
        "audio": tiny_dir / "wav2vec2",
        "text": tiny_dir / "bert",
        "cam": tiny_dir / "timm",
    }
    assert_encoders_bit_identical(model, {k: str(v) for k, v in paths.items()})
    with pytest.raises(OSError, match="'image'.*tiny-org/not-there"):
        FusionModel.from_encoders({"image": "tiny-org/not-there"}, **SMALL)


def test_dual_encoder_checkpoint_loads_matching_tower(tmp_path):
    torch.manual_seed(0)
    config = T.CLIPConfig(
        text_config={"vocab_size": 50, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "intermediate_size": 37, "max_position_embeddings": 16, "eos_token_id": 49},
        vision_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
                       "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    clip = T.CLIPModel(config)
    clip.save_pretrained(tmp_path / "clip")
    with pytest.raises(ValueError, match="'photo'.*kind"):
        FusionModel.from_encoders({"photo": str(tmp_path / "clip")}, **SMALL)
    model = FusionModel.from_encoders(
        {"photo": {"path": str(tmp_path / "clip"), "kind": "image"}, "caption": {"path": str(tmp_path / "clip"), "kind": "text"}},
        **SMALL,
    )  # fmt: skip
    assert type(model.encoders["photo"]).__name__ == "CLIPVisionModel"
    assert type(model.encoders["caption"]).__name__ == "CLIPTextModel"
    for name, prefix in (("photo", "vision_model"), ("caption", "text_model")):
        state = model.encoders[name].state_dict()
        for key, value in getattr(clip, prefix).state_dict().items():
            assert torch.equal(state[key], value), key
    ids = torch.cat([torch.randint(0, 49, (2, 5)), torch.full((2, 1), 49)], dim=1)  # CLIP pools at the EOS
    out = model(
        photo_pixel_values=torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE),
        caption_input_ids=ids,
        caption_attention_mask=torch.ones(2, 6, dtype=torch.long),
    )
    assert out.logits.shape == (2, 3)
    with pytest.raises(ValueError, match="'caption'.*rows \\[1\\].*end-of-text"):
        model(caption_input_ids=torch.cat([ids[:1], ids[1:, :5].repeat(1, 2)[:, :6]]))


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["multimodal_fusion"] = None  # the package cannot be imported here
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert "multimodal_fusion" not in type(model).__module__, type(model).__module__
    batch = torch.load(sys.argv[2])
    with torch.no_grad():
        logits = model(**batch).logits
    torch.save({"logits": logits, "module": type(model).__module__}, sys.argv[3])
    """
)


def test_trust_remote_code_reload_in_a_process_without_the_package(four_paths, tmp_path):
    model = FusionModel.from_encoders(four_paths, fusion="transformer", **SMALL).eval()
    model.save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_fusion.FusionConfig",
        "AutoModel": "modeling_fusion.FusionModel",
    }
    batch = four_batch()
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())  # same thread count: same float summation order
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "ckpt"), str(tmp_path / "batch.pt"),
         str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    with torch.no_grad():
        assert torch.equal(result["logits"], model(**batch).logits)


def test_from_encoders_errors_name_the_modality(tiny_paths, tmp_path):
    with pytest.raises(ValueError, match="'sensors'.*input_dim"):
        FusionModel.from_encoders({"sensors": {"kind": "features"}}, **SMALL)
    with pytest.raises(ValueError, match="'image'.*path"):
        FusionModel.from_encoders({"image": {"pooling": "cls"}}, **SMALL)
    with pytest.raises(ValueError, match="trainable_layers.*unknown modalities.*video"):
        FusionModel.from_encoders(tiny_paths, trainable_layers={"video": 0}, **SMALL)
    with pytest.raises(ValueError, match="'image'.*trainable_layers.*5.*2 usable"):
        FusionModel.from_encoders(tiny_paths, trainable_layers={"image": 5}, **SMALL)
    Path(tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="'image'.*empty"):
        FusionModel.from_encoders({"image": str(tmp_path / "empty")}, **SMALL)


def test_push_to_hub_uploads_weights_code_processor_and_card(tiny_paths, monkeypatch):
    import huggingface_hub

    from multimodal_fusion import FusionProcessor

    uploaded = {}

    def create_repo(self, repo_id, **kwargs):
        uploaded["repo"] = repo_id

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploaded["files"] = sorted(
            str(p.relative_to(folder_path)) for p in Path(folder_path).rglob("*") if p.is_file()
        )
        uploaded["card"] = (Path(folder_path) / "README.md").read_text()
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = FusionModel.from_encoders(tiny_paths, fusion="gated", **SMALL)
    assert model.push_to_hub("me/fused", processor=FusionProcessor.from_encoders(tiny_paths)) == "commit"
    files = set(uploaded["files"])
    assert uploaded["repo"] == "me/fused"
    assert {"model.safetensors", "config.json", "modeling_fusion.py", "configuration_fusion.py"} <= files
    assert {"processor_config.json", "README.md"} <= files and any(f.startswith("text/") for f in files)
    assert "gated" in uploaded["card"] and "trainable layers" in uploaded["card"]
