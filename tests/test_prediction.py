"""predict_dataset / predict / evaluate in-process: bad rows reported, an existing embedding cache reused (never
built), outputs against the model's own logits; no LOAD REPORT for a pooler the modality does not use."""

import csv
import json
import logging
from argparse import Namespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from saved_fusion import raw_files, save_fusion_folder
from transformers import ViTConfig, ViTModel

from multimodal_fusion import (
    BadSampleError,
    FusionModel,
    FusionProcessor,
    cache_embeddings,
    load_fusion_dataset,
)
from multimodal_fusion.cli.inference_commands import evaluate_command, predict_command
from multimodal_fusion.inference.prediction import predict_dataset

MODALITIES = {"image": "image", "audio": "audio", "text": "text"}


@pytest.fixture(scope="module")
def setup(tiny_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    folder = save_fusion_folder(tiny_paths, root / "model")
    files = raw_files(root / "data")
    rows = list(csv.DictReader(files["test"].read_text().splitlines()))
    rows[1]["image"] = "images/no_such_file.png"  # a bad row
    bad_file = root / "data" / "bad.csv"
    with open(bad_file, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    model = FusionModel.from_pretrained(folder).eval()
    return folder, files, bad_file, model, FusionProcessor.from_pretrained(folder)


def reference_logits(model, processor, dataset, rows):
    """The model on the processor's batch of ``rows`` (an independent path: processor call, not the collator)."""
    part = dataset.select(rows)
    inputs = {name: [v or None for v in part[name]] for name in MODALITIES}
    with torch.no_grad():
        return model(**processor(**inputs)).logits.numpy()


def test_bad_rows_are_reported_with_skip_and_raise_without(setup):
    folder, files, bad_file, model, processor = setup
    with pytest.raises(FileNotFoundError, match=r"row 1, column 'image': .*no_such_file"):  # before decoding
        load_fusion_dataset(str(bad_file), MODALITIES, kinds=processor)
    dataset = load_fusion_dataset(str(bad_file), MODALITIES, kinds=processor, skip_bad_samples=True)
    dataset = dataset.dataset["train"]
    with pytest.raises(BadSampleError, match="no_such_file"):
        predict_dataset(model, processor, dataset, MODALITIES, progress=False)
    output = predict_dataset(model, processor, dataset, MODALITIES, skip_bad_samples=True, batch_size=4)
    assert [e["row"] for e in output.errors] == [1] and output.errors[0]["modality"] == "image"
    kept = [i for i in range(len(dataset)) if i != 1]
    assert output.rows == kept
    np.testing.assert_allclose(
        output.logits[None], reference_logits(model, processor, dataset, kept), atol=1e-5
    )
    # every third row has no text (missing_every=3): reported per row
    assert output.present[:, 2].tolist() == [bool(dataset[i]["text"]) for i in kept]


def test_an_existing_cache_is_reused_and_none_is_built(setup, monkeypatch):
    folder, files, _, model, processor = setup
    dataset = load_fusion_dataset(str(files["validation"]), MODALITIES, kinds=processor).dataset["train"]
    calls = []
    for encoder in model.encoders.values():
        encoder.register_forward_hook(lambda *args: calls.append(1))
    live = predict_dataset(model, processor, dataset, MODALITIES, progress=False)
    assert live.cached_modalities == [] and calls  # no cache existed: encoders ran, nothing was written
    assert not [f for f in (files["validation"].parent).rglob("cache-*.arrow")]
    cache_embeddings(dataset, model, processor, MODALITIES, ["image", "audio"])
    calls.clear()
    cached = predict_dataset(model, processor, dataset, MODALITIES, progress=False)
    assert cached.cached_modalities == ["image", "audio"]
    assert len(calls) == len(range(0, len(dataset), 32))  # text only: one encoder call per batch
    np.testing.assert_allclose(cached.logits[None], live.logits[None], atol=1e-5)


def test_predict_and_evaluate_commands_write_their_outputs(setup, tmp_path):
    folder, files, bad_file, model, processor = setup
    args = Namespace(model_dir=str(folder), data=str(bad_file), split=None, columns=None, batch_size=4,
                     device="cpu", skip_bad_samples=True, no_cache=False, overwrite=False,
                     output=str(tmp_path / "preds.jsonl"))  # fmt: skip
    counts = predict_command(args)
    assert counts["predicted"] == 5 and counts["bad rows"] == 1
    table = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert table[1]["label"] is None and "no_such_file" in table[1]["error"]
    dataset = load_fusion_dataset(str(bad_file), MODALITIES, kinds=processor, skip_bad_samples=True)
    dataset = dataset.dataset["train"]
    probabilities = torch.from_numpy(reference_logits(model, processor, dataset, [0, 2])).softmax(-1)
    for row, expected in zip((table[0], table[2]), probabilities, strict=True):
        assert [row[f"score_{n}"] for n in ("red", "green", "blue")] == pytest.approx(
            expected.tolist(), abs=1e-5
        )
        assert row["label"] == model.config.id2label[int(expected.argmax())]
    with pytest.raises(SystemExit, match="exists; pass --overwrite"):
        predict_command(args)
    args = Namespace(**{**vars(args), "data": str(files["test"]), "label_column": "label", "no_plots": False,
                        "output_dir": str(tmp_path / "eval")})  # fmt: skip
    summary = evaluate_command(args)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test = load_fusion_dataset(str(files["test"]), MODALITIES, kinds=processor,
                               label_names=["red", "green", "blue"]).dataset["train"]  # fmt: skip
    predictions = reference_logits(model, processor, test, list(range(len(test)))).argmax(-1)
    assert metrics["accuracy"] == pytest.approx(float(np.mean(predictions == np.asarray(test["label"]))))
    assert summary["accuracy"] == metrics["accuracy"]
    assert {"without image", "without audio", "without text"} <= set(
        row["setting"]
        for row in csv.DictReader((tmp_path / "eval" / "ablation.csv").read_text().splitlines())
    )
    matrix = list(csv.reader((tmp_path / "eval" / "confusion_matrix.csv").read_text().splitlines()))
    assert sum(int(v) for row in matrix[1:] for v in row[1:]) == len(test)
    assert (tmp_path / "eval" / "confusion_matrix.png").stat().st_size > 1000


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_load_report_only_for_real_problems(tmp_path):
    config = ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)  # fmt: skip
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "no_pooler")
    ViTModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "broken")
    weights = load_file(tmp_path / "broken" / "model.safetensors")
    weights.pop("layernorm.weight")
    save_file(weights, tmp_path / "broken" / "model.safetensors", metadata={"format": "pt"})
    records = Records()
    logger = logging.getLogger("transformers.modeling_utils")
    logger.addHandler(records)
    try:
        FusionModel.from_encoders({"image": str(tmp_path / "no_pooler")}, num_labels=2)  # cls: pooler unused
        assert not [m for m in records.messages if "LOAD REPORT" in m]
        # the pooler would be random: reported, and the build fails naming the modality and the keys
        with pytest.raises(ValueError, match=r"modality 'image'.*pooler\.dense"):
            FusionModel.from_encoders(
                {"image": {"path": str(tmp_path / "no_pooler"), "pooling": "pooler"}}, num_labels=2
            )
        assert len([m for m in records.messages if "LOAD REPORT" in m]) == 1
        with pytest.raises(ValueError, match=r"modality 'image'.*layernorm\.weight"):  # a real missing weight
            FusionModel.from_encoders({"image": str(tmp_path / "broken")}, num_labels=2)
        assert len([m for m in records.messages if "LOAD REPORT" in m]) == 2
        assert "layernorm.weight" in records.messages[-1]
    finally:
        logger.removeHandler(records)
