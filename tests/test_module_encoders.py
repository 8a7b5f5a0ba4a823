"""Your own networks as encoders: torchvision models, an LSTM, a TransformerEncoder and MLPs (issue 13 scenarios)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torchvision
from own_networks import ScaledMLP, TextTransformer, sensor_mlp
from safetensors.torch import save_file
from torch import nn

from multimodal_fusion import FusionModel
from multimodal_fusion.model.pooling_layers import LastTokenPooling
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments

SMALL = {"projection_dim": 32, "fusion_hidden_size": 32}
TESTS = Path(__file__).parent


class Rows(torch.utils.data.Dataset):
    """Pre-processed rows (what the collator would produce)."""

    def __init__(self, batch, labels):
        self.rows = [{**{k: v[i] for k, v in batch.items()}, "labels": labels[i]} for i in range(len(labels))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def train_lowers_loss(model, batch, labels, tmp_path, steps=4):
    """Loss on the training rows (eval mode) before and after a few FusionTrainer steps."""

    def loss():
        model.eval()
        with torch.no_grad():
            return model(**batch, labels=labels).loss.item()

    before = loss()
    args = FusionTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=len(labels), learning_rate=3e-3,
        max_steps=steps, use_cpu=True, report_to="none", seed=0, disable_tqdm=True, save_strategy="no",
        logging_steps=1, dataloader_num_workers=0,
    )  # fmt: skip
    FusionTrainer(model, args, train_dataset=Rows(batch, labels)).train()
    return before, loss()


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def running_stats(module):
    return {
        n: (m.running_mean.clone(), m.running_var.clone())
        for n, m in module.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    }


# ---------------------------------------------------------------------------------------------- scenario B
@pytest.fixture(scope="module")
def scenario_b(tmp_path_factory):
    """resnet18 (complete .pth state dict, fc included) + an MLP instance + mobilenet_v2 (.safetensors)."""
    root = tmp_path_factory.mktemp("scenario_b")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "resnet18.pth")
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    save_file({k: v.contiguous() for k, v in mobilenet.state_dict().items()}, root / "mobilenet.safetensors")
    mlp = sensor_mlp()
    encoders = {
        "image": {"module": "torchvision.models:resnet18", "kind": "image", "weights": root / "resnet18.pth",
                  "feature_layer": "avgpool", "trainable_modules": ["layer4"]},
        "sensors": {"module": mlp, "kind": "features", "trainable_modules": ["2"]},
        "photo": {"module": "torchvision.models:mobilenet_v2", "kind": "image",
                  "weights": str(root / "mobilenet.safetensors"), "feature_layer": "flatten",
                  "trainable_modules": ["features.17"]},
    }  # fmt: skip
    model = FusionModel.from_encoders(encoders, num_labels=5, **SMALL)
    g = torch.Generator().manual_seed(1)
    batch = {
        "image_pixel_values": torch.randn(4, 3, 32, 32, generator=g),
        "sensors_values": torch.randn(4, 100, generator=g),
        "photo_pixel_values": torch.randn(4, 3, 32, 32, generator=g),
    }
    return {"root": root, "model": model, "mlp": mlp, "batch": batch, "labels": torch.arange(4)}


def test_scenario_b_trains_exactly_the_named_modules(scenario_b):
    model = scenario_b["model"]
    expected = {n for n, _ in model.named_parameters() if not n.startswith("encoders.")}
    expected |= {f"encoders.image.module.{n}" for n, _ in model.encoders["image"].module.named_parameters()
                 if n.startswith("layer4.")}  # fmt: skip
    expected |= {"encoders.sensors.module.2.weight", "encoders.sensors.module.2.bias"}
    expected |= {f"encoders.photo.module.{n}" for n, _ in model.encoders["photo"].module.named_parameters()
                 if n.startswith("features.17.")}  # fmt: skip
    assert any(n.startswith("encoders.photo.module.features.17.") for n in expected)
    assert trainable(model) == expected
    # the complete torchvision state dict (with fc) loaded strictly, kept bit-for-bit; fc is not part of the encoder
    state = torch.load(scenario_b["root"] / "resnet18.pth", weights_only=True)
    encoder_state = model.encoders["image"].module.state_dict()
    assert "fc.weight" in state and not any(k.startswith("fc.") for k in encoder_state)
    assert all(torch.equal(v, state[k]) for k, v in encoder_state.items())
    assert (
        model.config.modalities["image"]["output_dim"] == 512
        and model.config.modalities["photo"]["output_dim"] == 1280
    )


def test_scenario_b_training_keeps_frozen_batchnorm_and_lowers_the_loss(scenario_b, tmp_path):
    model, batch, labels = scenario_b["model"], scenario_b["batch"], scenario_b["labels"]
    frozen_before = {name: running_stats(model.encoders[name].module) for name in ("image", "photo")}
    before, after = train_lowers_loss(model, batch, labels, tmp_path)
    assert after < before
    model.train()
    image_bn = running_stats(model.encoders["image"].module)
    for name, (mean, var) in frozen_before["image"].items():
        unchanged = torch.equal(mean, image_bn[name][0]) and torch.equal(var, image_bn[name][1])
        assert unchanged != name.startswith("layer4."), name  # frozen BN fixed, trainable layer4 BN updated
    photo_bn = running_stats(model.encoders["photo"].module)
    for name, (mean, var) in frozen_before["photo"].items():
        unchanged = torch.equal(mean, photo_bn[name][0]) and torch.equal(var, photo_bn[name][1])
        assert unchanged != name.startswith("features.17."), name
    assert not model.encoders["image"].module.bn1.training and model.encoders["image"].module.layer4.training


def test_scenario_b_reloads_with_identical_logits_and_needs_its_instance(scenario_b, tmp_path):
    model, batch = scenario_b["model"].eval(), scenario_b["batch"]
    model.save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"modality 'sensors'.*instance.*encoders=\{'sensors': module\}"):
        FusionModel.from_pretrained(tmp_path / "ckpt")
    wrong = nn.Sequential(
        *sensor_mlp(), nn.ReLU(), nn.Linear(64, 64)
    )  # one layer more than the saved network
    with pytest.raises(
        ValueError, match=r"modality 'sensors'.*missing keys \['encoders.sensors.module.4.bias'"
    ):
        FusionModel.from_pretrained(tmp_path / "ckpt", encoders={"sensors": wrong})
    reloaded = FusionModel.from_pretrained(tmp_path / "ckpt", encoders={"sensors": sensor_mlp()}).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)
    assert trainable(reloaded) == trainable(model)


# ---------------------------------------------------------------------------------------------- scenario A
SCENARIO_A = {
    "image": {"module": "torchvision.models:vgg16", "kind": "image", "feature_layer": "features"},
    "audio": {"module": "torch.nn:LSTM", "kind": "audio",
              "module_kwargs": {"input_size": 40, "hidden_size": 128, "num_layers": 2, "batch_first": True}},
    "text": {"module": "own_networks:TextTransformer", "kind": "text", "module_kwargs": {"vocab_size": 100}},
}  # fmt: skip


def scenario_a_batch(n=4, seed=2):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randint(3, 12, (n,), generator=g)
    tokens = torch.randint(2, 9, (n,), generator=g)
    return {
        "image_pixel_values": torch.randn(n, 3, 32, 32, generator=g),
        "audio_input_features": torch.randn(n, 12, 40, generator=g),
        "audio_attention_mask": (torch.arange(12) < frames.unsqueeze(1)).long(),
        "text_input_ids": torch.randint(0, 100, (n, 9), generator=g),
        "text_attention_mask": (torch.arange(9) < tokens.unsqueeze(1)).long(),
    }


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    sys.modules["multimodal_fusion"] = None  # the package cannot be imported here
    from transformers import AutoModel
    torch.set_num_threads(int(sys.argv[6]))  # as in the test process: the same kernels, bit-identical logits
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    with torch.no_grad():
        logits = model(**torch.load(sys.argv[2])).logits
    errors = []
    for folder in sys.argv[3:5]:  # an instance-built encoder; an import path that is not importable here
        try:
            AutoModel.from_pretrained(folder, trust_remote_code=True)
            errors.append(None)
        except (ValueError, ImportError) as exc:
            errors.append(str(exc))
    torch.save({"logits": logits, "module": type(model).__module__, "errors": errors}, sys.argv[5])
    """
)


def test_scenario_a_frozen_trains_head_and_reloads_in_a_fresh_process(scenario_b, tmp_path):
    torch.manual_seed(0)
    model = FusionModel.from_encoders(SCENARIO_A, trainable_layers=0, fusion="concat", num_labels=10, **SMALL)
    pooling = {name: spec["pooling"] for name, spec in model.config.modalities.items()}
    assert pooling == {"image": "mean", "audio": "last", "text": "cls"}
    assert trainable(model) == {n for n, _ in model.named_parameters() if not n.startswith("encoders.")}
    assert not any(
        k.startswith("classifier") for k in model.encoders["image"].state_dict()
    )  # vgg head dropped
    batch, labels = scenario_a_batch(), torch.arange(4)
    before, after = train_lowers_loss(model, batch, labels, tmp_path)
    assert after < before
    model.eval().save_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        expected = model(**batch).logits
        assert torch.equal(FusionModel.from_pretrained(tmp_path / "ckpt").eval()(**batch).logits, expected)
    # remote code in a process without the package; own_networks is importable there, torchvision and torch are
    scenario_b["model"].save_pretrained(tmp_path / "ckpt_b")
    local = tmp_path / "only_here"  # a package importable in this process only
    local.mkdir()
    (local / "local_nets.py").write_text("from own_networks import ScaledMLP\n")
    sys.path.insert(0, str(local))
    try:
        spec = {"module": "local_nets:ScaledMLP", "kind": "features"}
        FusionModel.from_encoders({"vec": spec}, num_labels=2, **SMALL).save_pretrained(tmp_path / "ckpt_c")
    finally:
        sys.path.remove(str(local))
    torch.save(batch, tmp_path / "batch.pt")
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(TESTS),
    }
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "ckpt"), str(tmp_path / "batch.pt"),
         str(tmp_path / "ckpt_b"), str(tmp_path / "ckpt_c"), str(tmp_path / "out.pt"), str(torch.get_num_threads())],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    result = torch.load(tmp_path / "out.pt")
    assert result["module"].startswith("transformers_modules.")
    assert torch.equal(result["logits"], expected)
    instance_error, import_error = result["errors"]
    assert "modality 'sensors'" in instance_error and "encoders={'sensors': module}" in instance_error
    assert "modality 'vec': cannot import `module` 'local_nets:ScaledMLP'" in import_error


# ---------------------------------------------------------------------------------------------- recurrent nets
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_last_valid_step_of_a_padded_sequence_equals_the_sequence_alone(bidirectional):
    torch.manual_seed(0)
    lstm = nn.LSTM(input_size=40, hidden_size=16, num_layers=2, batch_first=True, bidirectional=bidirectional)
    model = FusionModel.from_encoders(
        {"audio": {"module": lstm, "kind": "audio"}}, num_labels=2, **SMALL
    ).eval()
    frames = torch.randn(2, 9, 40)
    short = frames[1:, :5]
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 5:] = 0
    frames[1, 5:] = 1e3  # padding content must not matter
    padded = model.get_modality_embeddings(audio_input_features=frames, audio_attention_mask=mask)["audio"]
    alone = model.get_modality_embeddings(audio_input_features=short)["audio"]
    assert (padded[1] - alone[0]).abs().max() <= 1e-5
    with torch.no_grad():  # independent: the LSTM's own output at the last step of the unpadded sequence
        assert torch.allclose(alone[0], lstm(short)[0][0, -1], atol=1e-6)
    left = mask.flip(1)
    with pytest.raises(ValueError, match="'audio'.*right-padded"):
        model.get_modality_embeddings(audio_input_features=frames, audio_attention_mask=left)


def test_last_pooling_takes_the_last_valid_token_for_either_padding_side():
    hidden = torch.randn(3, 5, 4)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]).bool()
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]).bool()
    pool = LastTokenPooling(4)
    assert torch.equal(pool(hidden, right), torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 0]]))
    assert torch.equal(pool(hidden, left), hidden[:, 4])
    assert torch.equal(pool(hidden), hidden[:, -1])


# ---------------------------------------------------------------------------------------------- buffers, hooks
def test_non_persistent_buffer_and_hooked_feature_layer_survive_a_reload(tmp_path):
    spec = {"module": "own_networks:ScaledMLP", "kind": "features", "module_kwargs": {"input_dim": 12},
            "feature_layer": "layers.1"}  # fmt: skip
    model = FusionModel.from_encoders({"vec": spec}, num_labels=3, **SMALL).eval()
    layout = model.encoder_layout("vec")
    assert set(layout.unused) == {"module.layers.2.weight", "module.layers.2.bias"}  # after the hooked node
    assert "module.layers.2.weight" not in trainable(model.encoders["vec"])
    assert model.config.modalities["vec"]["output_dim"] == 24
    values = torch.randn(4, 12)
    network = model.encoders["vec"].module
    with torch.no_grad():  # independent: the network's own first layers
        expected = torch.relu(network.layers[0](values * network.scale))
        assert torch.equal(model.get_modality_embeddings(vec_values=values)["vec"], expected)
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
    assert torch.equal(reloaded.encoders["vec"].module.scale, torch.linspace(0.5, 2.0, 12))
    with torch.no_grad():
        assert torch.equal(reloaded(vec_values=values).logits, model(vec_values=values).logits)


def test_freezing_tools_work_on_module_encoder_blocks(tmp_path):
    from multimodal_fusion.training.param_groups import build_param_groups

    spec = {"module": "torchvision.models:resnet18", "kind": "image", "feature_layer": "avgpool"}
    model = FusionModel.from_encoders({"image": spec}, trainable_layers={"image": 1}, num_labels=2, **SMALL)
    blocks = model.encoder_blocks("image")
    assert [type(b).__name__ for b in blocks][:2] == ["Conv2d", "BatchNorm2d"] and len(blocks) == 6
    assert {n.split(".")[3] for n in trainable(model) if n.startswith("encoders.")} == {"layer4"}
    model.set_trainable_layers("image", 2)
    assert {n.split(".")[3] for n in trainable(model) if n.startswith("encoders.")} == {"layer3", "layer4"}
    groups = {g["name"]: g["lr"] for g in build_param_groups(model, 1e-3, 0.0, layerwise_lr_decay=0.5)}
    assert groups["image.block6"] == 1e-3 and groups["image.block5"] == 5e-4
    vgg = {
        "module": "torchvision.models:vgg11",
        "kind": "image",
        "feature_layer": "features",
        "blocks": "features",
    }
    model = FusionModel.from_encoders({"image": vgg}, trainable_layers=1, num_labels=2, **SMALL)
    assert {n for n in trainable(model) if n.startswith("encoders.")} == {
        "encoders.image.module.features.18.weight",
        "encoders.image.module.features.18.bias",
    }


# ---------------------------------------------------------------------------------------------- errors
def test_errors_name_the_modality_and_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"modality 'image'.*`feature_layer` 'avgpol'.*'avgpool'"):
        FusionModel.from_encoders(
            {"image": {"module": "torchvision.models:resnet18", "kind": "image", "feature_layer": "avgpol"}}
        )
    with pytest.raises(ValueError, match=r"modality 'vec'.*`feature_layer` 'layers.7'.*'layers.1'"):
        FusionModel.from_encoders(
            {"vec": {"module": ScaledMLP(), "kind": "features", "feature_layer": "layers.7"}}
        )
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["extra.weight"] = state.pop("layer1.0.conv1.weight")
    torch.save(state, tmp_path / "bad.pth")
    spec = {"module": "torchvision.models:resnet18", "kind": "image", "weights": tmp_path / "bad.pth"}
    with pytest.raises(
        ValueError, match=r"modality 'image'.*missing keys \['layer1.0.conv1.weight'\].*\['extra"
    ):
        FusionModel.from_encoders({"image": spec})
    torch.save(sensor_mlp(), tmp_path / "pickled.pth")  # a whole pickled module, not a state dict
    with pytest.raises(ValueError, match=r"modality 's'.*weights_only"):
        FusionModel.from_encoders(
            {"s": {"module": sensor_mlp(), "kind": "features", "weights": tmp_path / "pickled.pth"}}
        )
    with pytest.raises(ImportError, match=r"modality 'image'.*'no_such_package.nets:resnet'"):
        FusionModel.from_encoders({"image": {"module": "no_such_package.nets:resnet", "kind": "image"}})
    with pytest.raises(ValueError, match=r"modality 'audio'.*LSTM.*batch_first=False"):
        FusionModel.from_encoders({"audio": {"module": nn.LSTM(40, 8), "kind": "audio"}})
    with pytest.raises(ValueError, match=r"modality 'text'.*MultiheadAttention.*batch_first=False"):
        FusionModel.from_encoders({"text": {"module": TextTransformer(batch_first=False), "kind": "text"}})
    with pytest.raises(ValueError, match=r"modality 'x'.*`kind`"):
        FusionModel.from_encoders({"x": {"module": sensor_mlp()}})
    with pytest.raises(ValueError, match=r"modality 's'.*already pooled.*'attention'"):
        FusionModel.from_encoders({"s": {"module": sensor_mlp(), "kind": "features", "pooling": "attention"}})
