"""Block-level activation checkpointing (``model/block_checkpointing.py``): the tiny encoders and your own
networks (the 41-family matrix runs the same check in ``test_encoder_families``), frozen blocks, ``every_n_layers``,
disabling, saving and reloading, copies, and the training argument."""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from checkpoint_checks import check_block_checkpointing, counting_checkpoint
from safetensors.torch import load_file

from multimodal_fusion import FusionModel
from multimodal_fusion.model.block_checkpointing import CheckpointedForward, checkpointed_modules
from multimodal_fusion.training import FusionTrainer, FusionTrainingArguments
from tiny_encoders import IMAGE_SIZE, random_batch

SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}
LABELS = torch.tensor([0, 2])

TINY_ENCODERS = {  # folder in the session's tiny_dir -> modality (the name random_batch gives its fields)
    "vit": "image",
    "wav2vec2": "audio",
    "wav2vec2_group": "audio",
    "bert": "text",
    "timm": "image",
}


@pytest.mark.parametrize("folder", list(TINY_ENCODERS))
def test_tiny_encoders_give_the_plain_gradients(folder, tiny_dir):
    name = TINY_ENCODERS[folder]
    torch.manual_seed(0)
    model = FusionModel.from_encoders({name: str(tiny_dir / folder)}, **SMALL)
    batch = random_batch(2, audio_lengths=[1600, 1100], text_lengths=[7, 4], modalities=(name,))
    check_block_checkpointing(model, name, batch, LABELS)


def test_regnet_a_family_transformers_cannot_checkpoint(tmp_path):
    import transformers as T

    torch.manual_seed(0)
    config = T.RegNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[1, 1], groups_width=8)
    T.RegNetModel(config).save_pretrained(tmp_path / "regnet")
    assert not T.RegNetModel.supports_gradient_checkpointing
    model = FusionModel.from_encoders({"x": str(tmp_path / "regnet")}, **SMALL)
    check_block_checkpointing(model, "x", _pixels(), LABELS)


def _frames() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    return {"x_input_features": torch.randn(2, 7, 8, generator=g), "x_attention_mask": mask}


def _tokens() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    return {"x_input_ids": torch.randint(0, 100, (2, 6), generator=g), "x_attention_mask": mask}


def _pixels() -> dict[str, torch.Tensor]:
    return {
        "x_pixel_values": torch.randn(
            2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0)
        )
    }


TRANSFORMER = {"module": "own_networks:TextTransformer", "kind": "text", "module_kwargs": {"vocab_size": 100}}
LSTM = {"input_size": 8, "hidden_size": 16, "num_layers": 2, "batch_first": True}
OWN_NETWORKS = {  # spec, batch, checkpointed units expected
    "torchvision_resnet": (
        {"module": "torchvision.models:resnet18", "kind": "image"},
        _pixels,
        [["module.conv1"], ["module.bn1"], *[[f"module.layer{i}"] for i in range(1, 5)], ["module.fc"]],
    ),
    # cut at a feature layer, the network is an FX graph that inlines its blocks: one unit, the graph
    "torchvision_resnet_feature_layer": (
        {"module": "torchvision.models:resnet18", "kind": "image", "feature_layer": "avgpool"},
        _pixels,
        [["module"]],
    ),
    "lstm": ({"module": "torch.nn:LSTM", "kind": "audio", "module_kwargs": LSTM}, _frames, [[""]]),
    "transformer_layers": (
        {**TRANSFORMER, "blocks": "encoder.layers"},
        _tokens,
        [["module.encoder.layers.0"], ["module.encoder.layers.1"]],
    ),
    "transformer": (TRANSFORMER, _tokens, [["module.embed"], ["module.encoder"]]),
}


@pytest.mark.parametrize("network", list(OWN_NETWORKS))
def test_own_networks_give_the_plain_gradients(network):
    from multimodal_fusion.model.block_checkpointing import checkpoint_units

    spec, batch, units = OWN_NETWORKS[network]
    torch.manual_seed(0)
    model = FusionModel.from_encoders({"x": spec}, **SMALL)
    assert checkpoint_units(model.encoders["x"], model.encoder_layout("x").blocks) == units
    check_block_checkpointing(model, "x", batch(), LABELS)


def test_frozen_blocks_run_plainly_and_the_top_block_is_checkpointed(tiny_dir, caplog):
    model = FusionModel.from_encoders({"text": str(tiny_dir / "bert")}, trainable_layers=1, **SMALL).train()
    batch = random_batch(2, modalities=("text",))
    with counting_checkpoint() as counts, caplog.at_level(logging.WARNING):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    assert any("use_reentrant=False" in r.getMessage() for r in caplog.records)
    layers = model.encoders["text"].encoder.layer
    assert checkpointed_modules(model.encoders["text"]) == ["encoder.layer.0", "encoder.layer.1"]
    model(**batch, labels=LABELS).loss.backward()
    assert counts[id(layers[0])] == 0, "a frozen block below every trainable one needs no checkpoint"
    assert counts[id(layers[1])] == 1
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layers[1].parameters())
    with torch.no_grad():  # no autograd, nothing to recompute
        model(**batch)
    model.set_trainable_layers("text", 0)  # followed at each call: a fully frozen encoder runs plainly
    model(**batch, labels=LABELS).loss.backward()
    model.set_trainable_layers("text", "all")
    model(**batch, labels=LABELS).loss.backward()
    assert (counts[id(layers[0])], counts[id(layers[1])]) == (1, 2)


def test_every_n_layers_and_features_modalities(tiny_dir):
    spec = {
        "text": str(tiny_dir / "bert"),
        "sensors": {"kind": "features", "input_dim": 4, "hidden_sizes": [8]},
    }
    model = FusionModel.from_encoders(spec, **SMALL)
    model.activation_checkpointing_enable(every_n_layers=2)
    assert checkpointed_modules(model.encoders["text"]) == ["encoder.layer.0"]
    assert checkpointed_modules(model.encoders["sensors"]) == []  # an MLP: nothing worth recomputing
    model.activation_checkpointing_enable()  # enabling again re-wraps, never twice
    assert checkpointed_modules(model.encoders["text"]) == ["encoder.layer.0", "encoder.layer.1"]
    layer = model.encoders["text"].encoder.layer[0]
    assert isinstance(layer.forward, CheckpointedForward) and layer.forward.previous is None
    only_features = FusionModel.from_encoders({"sensors": spec["sensors"]}, **SMALL)
    with pytest.raises(ValueError, match=r"no encoder of modalities \[.sensors.\]"):
        only_features.activation_checkpointing_enable()


def test_checkpointed_model_saves_the_same_keys_reloads_and_copies(tiny_dir, tiny_paths, tmp_path):
    paths = {**tiny_paths, "cam2": str(tiny_dir / "timm")}
    batch = {**random_batch(2), "cam2_pixel_values": torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)}
    torch.manual_seed(0)
    model = FusionModel.from_encoders(paths, **SMALL)
    plain_keys = set(model.state_dict())
    model.save_pretrained(tmp_path / "plain")
    model.activation_checkpointing_enable()
    assert all(checkpointed_modules(model.encoders[name]) for name in paths)
    assert set(model.state_dict()) == plain_keys
    model.save_pretrained(tmp_path / "checkpointed")
    saved = load_file(tmp_path / "checkpointed" / "model.safetensors")
    assert set(saved) == set(load_file(tmp_path / "plain" / "model.safetensors"))
    assert (tmp_path / "checkpointed" / "block_checkpointing.py").is_file()  # remote code closure
    reloaded = FusionModel.from_pretrained(tmp_path / "checkpointed").eval()
    assert set(reloaded.state_dict()) == plain_keys
    assert not reloaded.is_activation_checkpointing
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits, atol=1e-6, rtol=0)
    # a deep copy's patched forwards run the copy's blocks, not the original's
    twin = copy.deepcopy(model)
    for path in checkpointed_modules(twin.encoders["text"]):
        block = twin.encoders["text"].get_submodule(path)
        assert block.forward.module is block
    twin.activation_checkpointing_disable()
    assert not twin.is_activation_checkpointing and model.is_activation_checkpointing


class Rows(torch.utils.data.Dataset):
    def __init__(self, batch, labels):
        self.rows = [{**{k: v[i] for k, v in batch.items()}, "labels": labels[i]} for i in range(len(labels))]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_training_argument_gradient_checkpointing_checkpoints_every_encoder(tmp_path):
    spec = {"x": {"module": "torch.nn:LSTM", "kind": "audio", "module_kwargs": LSTM}, "t": TRANSFORMER}
    torch.manual_seed(0)
    model = FusionModel.from_encoders(spec, **SMALL)
    batch = {**_frames(), **{k.replace("x_", "t_"): v for k, v in _tokens().items()}}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = FusionTrainingArguments(
        output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=2, use_cpu=True,
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
        gradient_checkpointing=True,
    )  # fmt: skip
    with counting_checkpoint() as counts:
        FusionTrainer(model, args, train_dataset=Rows(batch, LABELS)).train()
    assert model.is_activation_checkpointing
    for name, unit in (("x", ""), ("t", "module.encoder")):
        assert counts[id(model.encoders[name].get_submodule(unit))] == 2, name  # once per step
    assert any(
        not torch.equal(p, before[n]) for n, p in model.named_parameters() if n.startswith("encoders.x")
    )
