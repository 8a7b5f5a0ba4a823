"""The encoder-family matrix: 54 architectures, each a tiny random checkpoint with its own processor, built with
the default spec and checked for what silently goes wrong otherwise (see ``encoder_adapters``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from checkpoint_checks import check_block_checkpointing
from tiny_families import FAMILIES, ORIGINALS

from multimodal_fusion import FusionModel, FusionProcessor

SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}
RELOADED: list[dict] = []  # checkpoints of the matrix, reloaded with remote code in one subprocess at the end


def raw_samples(kind: str, processor: FusionProcessor) -> tuple[list, list]:
    """Two raw samples of different size / length, and (text) two strings differing only after the first word."""
    rng = np.random.default_rng(0)
    if kind == "image":
        images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 30), (64, 64))]
        return [PIL.Image.fromarray(a) for a in images], []
    if kind == "audio":
        rate = processor.sampling_rate("x")
        return [rng.standard_normal(int(rate * s)).astype(np.float32) * 0.1 for s in (0.3, 0.7)], []
    return ["a red dog", "the blue cat sat on the mat"], ["one two three", "one four five"]


def pooled(model: FusionModel, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.get_modality_embeddings(**batch)["x"]


TOWER = {"image": "vision_model.", "text": "text_model.", "audio": "audio_model."}


def assert_bit_identical(encoder: torch.nn.Module, folder: Path, kind: str) -> None:
    """Every encoder tensor equals the tensor of the model that was saved (a dual encoder's matching tower,
    a seq2seq model's encoder; T5's ``embed_tokens`` is its tied ``shared`` table)."""
    original = ORIGINALS[str(folder)]
    prefixes = ("", TOWER[kind], "encoder.", "model.encoder.")
    for key, value in encoder.state_dict().items():
        bare = key.removeprefix("timm_model.")
        found = next((p + bare for p in prefixes if p + bare in original), None)
        assert found is not None, f"{key} is not in the saved model"
        assert torch.equal(value, original[found]), key


def top_block_prefix(model: FusionModel) -> str:
    from multimodal_fusion.model.encoder_layout import block_module_names

    layout = model.encoder_layout("x")
    return block_module_names(model.encoders["x"], layout.usable_blocks[-1])[0] + "."


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_encoder_family(arch, tmp_path):
    build, kind, spec_kind, expected_blocks = FAMILIES[arch]
    folder = tmp_path / arch
    build(folder)
    spec = {"path": str(folder), **({"kind": spec_kind} if spec_kind else {})}
    torch.manual_seed(0)
    model = FusionModel.from_encoders({"x": spec}, **SMALL)
    processor = FusionProcessor.from_encoders({"x": spec})
    assert model.config.modalities["x"]["kind"] == kind
    assert_bit_identical(model.encoders["x"], folder, kind)
    assert len(model.encoder_layout("x").blocks) == expected_blocks

    samples, same_start = raw_samples(kind, processor)
    rate = {"sampling_rate": processor.sampling_rate("x")} if kind == "audio" else {}
    batch = processor(x=samples, **rate)
    both = pooled(model.eval(), batch)
    assert both.shape == (2, model.pooled_dims["x"])
    assert (both[0] - both[1]).abs().max() > 1e-4, "two different inputs give the same pooled vector"
    for row, sample in enumerate(samples):  # alone vs inside the padded batch
        alone = pooled(model, processor(x=[sample], **rate))
        torch.testing.assert_close(alone[0], both[row], atol=1e-4, rtol=0)
    if same_start:
        pair = pooled(model, processor(x=same_start))
        assert (pair[0] - pair[1]).abs().max() > 1e-4, "texts sharing the first word pool to the same vector"

    # forward + backward with everything trainable: every trainable tensor is on the forward path
    model.train()
    labels = torch.tensor([0, 2])
    model(**batch, labels=labels).loss.backward()
    dead = [n for n, p in model.encoders["x"].named_parameters() if p.requires_grad and p.grad is None]
    assert not dead, f"trainable parameters without gradient: {dead[:5]}"

    # trainable_layers=1: exactly the top encoder block (+ final norm, + the pooling head with pooling 'pooler')
    model.zero_grad()
    model.set_trainable_layers("x", 1)
    trainable = {n for n, p in model.encoders["x"].named_parameters() if p.requires_grad}
    top = top_block_prefix(model)
    layout = model.encoder_layout("x")
    in_top = {n for n, _ in model.encoders["x"].named_parameters() if n.startswith(top)}
    assert in_top <= set(layout.usable_blocks[-1]) <= trainable and in_top, (top, sorted(trainable)[:5])
    assert trainable - set(layout.usable_blocks[-1]) == (set(layout.final) | set(layout.pooler)) - set(
        layout.unused
    )
    if model.encoders[
        "x"
    ].config.is_encoder_decoder:  # (a decoder-only LM such as OPT names its stack `decoder`)
        assert not any("decoder" in n for n in trainable)
    model(**batch, labels=labels).loss.backward()
    assert all(p.grad is not None for n, p in model.encoders["x"].named_parameters() if n in trainable)
    assert all(p.grad is None for n, p in model.encoders["x"].named_parameters() if n not in trainable)

    check_activation_checkpointing(model, batch, labels, top)
    check_save_and_reload(model, batch, tmp_path)


def grads(model: FusionModel, batch, labels) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(1)
    model(**batch, labels=labels).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def check_activation_checkpointing(model: FusionModel, batch, labels, top: str) -> None:
    """Block-level checkpointing (every family): the plain gradients and buffers with the top block trainable
    and with everything trainable, a checkpoint call per trainable block (``checkpoint_checks``)."""
    checkpointed = check_block_checkpointing(model, "x", batch, labels)
    assert any(n.startswith("encoders.x." + top) for n in checkpointed)


def check_save_and_reload(model: FusionModel, batch, tmp_path: Path) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    folder = tmp_path / "fusion"
    model.save_pretrained(folder)
    reloaded = FusionModel.from_pretrained(folder).eval()
    assert (
        reloaded.state_dict().keys() == model.state_dict().keys()
    )  # rebuilt as loaded (no extra random head)
    for key, value in model.state_dict().items():  # tied weights included
        assert torch.equal(reloaded.state_dict()[key], value), key
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, logits, atol=1e-6, rtol=0)
    torch.save(dict(batch), tmp_path / "batch.pt")
    RELOADED.append({"folder": str(folder), "batch": str(tmp_path / "batch.pt"), "logits": logits})


REMOTE = textwrap.dedent(
    """
    import json, sys, torch
    sys.modules["multimodal_fusion"] = None  # the package cannot be imported here
    torch.set_num_threads(int(sys.argv[2]))
    from transformers import AutoModel
    results = []
    for job in json.loads(open(sys.argv[1]).read()):
        model = AutoModel.from_pretrained(job["folder"], trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            results.append(model(**torch.load(job["batch"])).logits)
    torch.save(results, sys.argv[3])
    """
)


def test_remote_code_reload_of_every_family(tmp_path):
    """One subprocess without the package reloads every checkpoint of the matrix with trust_remote_code."""
    if len(RELOADED) < len(FAMILIES):
        pytest.skip("needs the whole family matrix to run first in this session")
    jobs = [{"folder": j["folder"], "batch": j["batch"]} for j in RELOADED]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    (tmp_path / "remote.py").write_text(REMOTE)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "jobs.json"), str(torch.get_num_threads()),
         str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    for job, logits in zip(RELOADED, torch.load(tmp_path / "out.pt"), strict=True):
        torch.testing.assert_close(logits, job["logits"], atol=1e-6, rtol=0, msg=job["folder"])


def built(arch: str, tmp_path: Path, **spec_keys) -> tuple[Path, dict, FusionModel, FusionProcessor]:
    build, _, spec_kind, _ = FAMILIES[arch]
    folder = tmp_path / arch
    build(folder)
    spec = {"path": str(folder), **({"kind": spec_kind} if spec_kind else {}), **spec_keys}
    torch.manual_seed(0)
    model = FusionModel.from_encoders({"x": spec}, **SMALL).eval()
    return folder, spec, model, FusionProcessor.from_encoders({"x": spec})


@pytest.mark.parametrize("arch", ["siglip2_vision", "wav2vec2_bert"])
def test_missing_rows_of_family_declared_fields(arch, tmp_path):
    """Families whose adapter declares fields beyond the kind's (SigLIP2's patch mask and grid, Wav2Vec2-BERT's
    ``input_features``): a missing sample gets placeholder values in every field, the present rows pool as in a
    dense batch, and an all-missing batch still carries each field at its shape."""
    _, _, model, processor = built(arch, tmp_path)
    kind = FAMILIES[arch][1]
    samples, _ = raw_samples(kind, processor)
    rate = {"sampling_rate": processor.sampling_rate("x")} if kind == "audio" else {}
    dense = processor(x=samples, **rate)
    processor.save_pretrained(tmp_path / "processor")  # the family's fields and call settings are saved
    processor = FusionProcessor.from_pretrained(tmp_path / "processor")
    sparse = processor(x=[samples[0], None, samples[1]], **rate)
    assert sparse["x_mask"].tolist() == [True, False, True]
    fields = [f"x_{f}" for f in (*model.adapters["x"].input_fields, *model.adapters["x"].optional_fields)]
    assert sorted(k for k in sparse if k != "x_mask") == sorted(k for k in dense) == sorted(fields)
    for key, value in dense.items():
        assert sparse[key].dtype == value.dtype, key
        torch.testing.assert_close(sparse[key][[0, 2]], value, atol=0, rtol=0)  # same padding: same length
    embeddings = pooled(model, sparse)
    torch.testing.assert_close(embeddings[[0, 2]], pooled(model, dense), atol=1e-5, rtol=0)
    assert not embeddings[1].any()
    if arch == "siglip2_vision":  # a one-patch grid the encoder runs on (every row runs while exporting)
        assert sparse["x_spatial_shapes"][1].tolist() == [1, 1] and bool(
            sparse["x_pixel_attention_mask"][1].all()
        )
        assert not sparse["x_pixel_values"][1].any()
        row = {k.removeprefix("x_"): v[1:2] for k, v in sparse.items() if k != "x_mask"}
        with torch.no_grad():
            output = model.adapters["x"].encode(model.encoders["x"], row, None)
        assert torch.isfinite(output.pooler_output).all() and torch.isfinite(output.hidden).all()
        empty = processor(x=[None, None])
        assert {k: tuple(v.shape) for k, v in empty.items() if k != "x_mask"} == {
            k: (2, *v.shape[1:]) for k, v in dense.items()
        }
        with torch.no_grad():
            assert model(**empty).logits.shape == (2, 3)
    else:
        assert not sparse["x_input_features"][1].any() and not sparse["x_attention_mask"][1].any()


def test_tower_without_pooler_in_checkpoint(tmp_path):
    """Chinese-CLIP's dual model builds its text tower without a pooler: the tower loads without one (not a random
    one), a saved fusion model rebuilds it the same way, and asking for pooling 'pooler' names the missing keys."""
    folder, spec, model, _ = built("chinese_clip_text", tmp_path)
    assert model.encoders["x"].pooler is None
    assert not any(k.startswith("pooler.") for k in model.encoders["x"].state_dict())
    model.save_pretrained(tmp_path / "fusion")
    reloaded = FusionModel.from_pretrained(tmp_path / "fusion")
    assert reloaded.encoders["x"].pooler is None
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(ValueError, match=r"modality 'x'.*pooler\.dense"):
        FusionModel.from_encoders({"x": {**spec, "pooling": "pooler"}}, **SMALL)


def _siglip2_reference(folder: Path, fields: dict) -> torch.Tensor:
    from transformers import Siglip2Model

    return Siglip2Model.from_pretrained(folder).vision_model(**fields).pooler_output


def _wav2vec2_bert_reference(folder: Path, fields: dict) -> torch.Tensor:
    from transformers import Wav2Vec2BertModel

    hidden = Wav2Vec2BertModel.from_pretrained(folder)(**fields).last_hidden_state
    mask = fields["attention_mask"][..., None].to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1)


def _chinese_clip_reference(folder: Path, fields: dict) -> torch.Tensor:
    from transformers import ChineseCLIPModel

    return ChineseCLIPModel.from_pretrained(folder).text_model(**fields).last_hidden_state[:, 0]


@pytest.mark.parametrize(
    ("arch", "reference"),
    [
        ("siglip2_vision", _siglip2_reference),  # the dual model's MAP head over the real patches
        ("wav2vec2_bert", _wav2vec2_bert_reference),  # mean over the valid frames
        ("chinese_clip_text", _chinese_clip_reference),  # the dual model's own tower, CLS (right padding)
    ],
)
def test_pooled_vector_equals_the_bare_model(arch, reference, tmp_path):
    """The pooled vectors of the families fixed for their own fields / tower weights equal what the bare
    transformers model (the dual model for a tower) computes from the same processor output."""
    folder, _, model, processor = built(arch, tmp_path)
    kind = FAMILIES[arch][1]
    samples, _ = raw_samples(kind, processor)
    rate = {"sampling_rate": processor.sampling_rate("x")} if kind == "audio" else {}
    batch = processor(x=samples, **rate)
    with torch.no_grad():
        expected = reference(folder, {k.removeprefix("x_"): v for k, v in batch.items()})
    torch.testing.assert_close(pooled(model, batch), expected, atol=1e-5, rtol=0)
    assert (expected[0] - expected[1]).abs().max() > 1e-3
