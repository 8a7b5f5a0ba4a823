"""The scoring engine (``inference.scoring.score_rows``): ``cache="build" | "reuse" | "off"`` behind score_dataset
and predict_dataset, bad rows with a built cache, and predict / evaluate defaulting to the columns and label column
the training run saved in the folder (``fusion_data.json``), with ``true_label`` / ``correct`` in predictions."""

import csv
import json
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from saved_fusion import raw_files, save_fusion_folder
from tiny_data import LABELS

from multimodal_fusion import FusionModel, FusionProcessor, load_fusion_dataset
from multimodal_fusion.cli.inference_commands import evaluate_command, predict_command
from multimodal_fusion.inference.prediction import predict_dataset
from multimodal_fusion.inference.scoring import score_dataset, score_rows
from multimodal_fusion.training.run_outputs import DATA_SETTINGS_NAME, load_data_settings, save_data_settings

MODALITIES = {"image": "image", "audio": "audio", "text": "text"}
RENAMED = {"image": "picture", "audio": "audio", "text": "caption"}


@pytest.fixture(scope="module")
def setup(tiny_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    folder = save_fusion_folder(tiny_paths, root / "model")
    files = raw_files(root / "data")
    model = FusionModel.from_pretrained(folder).eval()
    return root, folder, files, model, FusionProcessor.from_pretrained(folder)


def reference_logits(model, processor, dataset, rows, columns=MODALITIES):
    """The model on the processor's own batch of ``rows`` (independent of the engine's decode and cache)."""
    part = dataset.select(rows)
    inputs = {name: [v or None for v in part[column]] for name, column in columns.items()}
    with torch.no_grad():
        return model(**processor(**inputs)).logits.numpy()


def count_encoder_calls(model):
    calls = []
    handles = [e.register_forward_hook(lambda *a: calls.append(1)) for e in model.encoders.values()]
    return calls, handles


def test_cache_build_reuse_and_off_agree_with_the_model(setup):
    root, folder, files, model, processor = setup
    dataset = load_fusion_dataset(str(files["validation"]), MODALITIES, kinds=processor).dataset["train"]
    reference = reference_logits(model, processor, dataset, list(range(len(dataset))))
    cache_folder = Path(dataset.cache_files[0]["filename"]).parent  # where datasets keeps map cache files
    arrows = lambda: sorted(cache_folder.glob("cache-*.arrow"))  # noqa: E731
    before = arrows()
    calls, handles = count_encoder_calls(model)
    try:
        off = score_rows(model, processor, dataset, MODALITIES, cache="off", batch_size=4)
        reuse_nothing = score_rows(model, processor, dataset, MODALITIES, cache="reuse", batch_size=4)
        assert off.cached_modalities == reuse_nothing.cached_modalities == [] and calls
        assert arrows() == before  # neither wrote a cache file
        built = score_rows(model, processor, dataset, MODALITIES, cache="build", batch_size=4)
        assert built.cached_modalities == ["image", "audio", "text"] and len(arrows()) == len(before) + 1
        calls.clear()
        reused = score_rows(model, processor, dataset, MODALITIES, cache="reuse", batch_size=4)
        assert reused.cached_modalities == ["image", "audio", "text"] and not calls  # no encoder ran
    finally:
        for handle in handles:
            handle.remove()
    for output in (off, reuse_nothing, built, reused):
        np.testing.assert_allclose(output.logits[None], reference, atol=1e-5)
        assert output.rows == list(range(len(dataset)))
    # score_dataset and predict_dataset are the same engine with other defaults
    scored = score_dataset(model, processor, dataset, MODALITIES, cache="off")
    np.testing.assert_allclose(scored.logits, reference, atol=1e-5)
    predicted = predict_dataset(model, processor, dataset, MODALITIES, cache="build", progress=False)
    assert predicted.cached_modalities == ["image", "audio", "text"]
    np.testing.assert_allclose(predicted.logits[None], reference, atol=1e-5)
    with pytest.raises(ValueError, match=r"`cache` must be one of \('build', 'reuse', 'off'\), got 'yes'"):
        score_rows(model, processor, dataset, MODALITIES, cache="yes")


def test_a_bad_row_is_dropped_from_cached_and_live_modalities_alike(setup):
    root, folder, files, model, processor = setup
    rows = list(csv.DictReader(files["test"].read_text().splitlines()))
    rows[2]["image"] = "images/no_such_file.png"
    bad_file = files["test"].parent / "bad_engine.csv"
    with open(bad_file, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    dataset = load_fusion_dataset(str(bad_file), MODALITIES, kinds=processor, skip_bad_samples=True).dataset[
        "train"
    ]
    kept = [i for i in range(len(dataset)) if i != 2]
    reference = reference_logits(model, processor, dataset, kept)
    for cache, modalities in (("build", None), ("build", ["image"]), ("build", ["audio"]), ("off", None)):
        output = score_dataset(model, processor, dataset, MODALITIES, cache=cache, modalities=modalities,
                               skip_bad_samples=True, batch_size=4, label_column="label")  # fmt: skip
        assert output.rows == kept and [e["row"] for e in output.errors] == [2], (cache, modalities)
        assert output.errors[0]["column"] == "image" and "no_such_file" in output.errors[0]["path"]
        np.testing.assert_allclose(output.logits, reference, atol=1e-5)
        assert list(output.labels) == [dataset[i]["label"] for i in kept]
    with pytest.raises(ValueError, match="no_such_file"):  # without skipping the cached bad row raises
        score_dataset(model, processor, dataset, MODALITIES, modalities=["image"])


@pytest.fixture(scope="module")
def trained_folder(setup):
    """The saved model plus the data settings a training run writes: renamed columns and label column."""
    root, folder, files, model, processor = setup
    save_data_settings(str(folder), RENAMED, "kind")
    renamed = root / "data" / "renamed.csv"
    rows = list(csv.DictReader(files["test"].read_text().splitlines()))
    with open(renamed, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["picture", "audio", "caption", "kind"])
        writer.writeheader()
        writer.writerows(
            {"picture": r["image"], "audio": r["audio"], "caption": r["text"], "kind": r["label"]}
            for r in rows
        )
    yield folder, renamed, processor
    (folder / DATA_SETTINGS_NAME).unlink()


def test_predict_dataset_defaults_to_the_trained_folders_columns_and_label(trained_folder):
    folder, renamed, processor = trained_folder
    assert load_data_settings(folder) == {"columns": RENAMED, "label_column": "kind"}
    model = FusionModel.from_pretrained(folder).eval()  # name_or_path: the folder
    dataset = load_fusion_dataset(str(renamed), RENAMED, kinds=processor, label_column="kind",
                                  label_names=LABELS).dataset["train"]  # fmt: skip
    output = predict_dataset(model, processor, dataset, progress=False)  # no columns, no label column
    reference = reference_logits(model, processor, dataset, list(range(len(dataset))), RENAMED)
    np.testing.assert_allclose(output.logits[None], reference, atol=1e-5)
    assert list(output.labels) == list(dataset["kind"])
    assert output.present[:, 0].all()  # the image was read from 'picture'


def test_predict_and_evaluate_commands_default_to_the_trained_folder(trained_folder, tmp_path):
    folder, renamed, processor = trained_folder
    args = Namespace(model_dir=str(folder), data=str(renamed), split=None, columns=None, label_column=None,
                     batch_size=4, device="cpu", skip_bad_samples=False, no_cache=True, overwrite=False,
                     output=str(tmp_path / "preds.csv"))  # fmt: skip
    counts = predict_command(args)
    assert counts["predicted"] == counts["rows"] == 6
    table = list(csv.DictReader((tmp_path / "preds.csv").read_text().splitlines()))
    truth = [row["kind"] for row in csv.DictReader(renamed.read_text().splitlines())]
    assert [row["true_label"] for row in table] == truth
    assert [row["correct"] for row in table] == [str(row["label"] == row["true_label"]) for row in table]
    model = FusionModel.from_pretrained(folder).eval()
    dataset = load_fusion_dataset(str(renamed), RENAMED, kinds=processor).dataset["train"]
    predicted = reference_logits(model, processor, dataset, list(range(len(dataset))), RENAMED).argmax(-1)
    assert [row["label"] for row in table] == [LABELS[i] for i in predicted]
    args = Namespace(**{**vars(args), "output_dir": str(tmp_path / "eval"), "no_plots": True})
    summary = evaluate_command(args)  # label column 'kind' from the folder
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    expected = np.mean([LABELS[i] == t for i, t in zip(predicted, truth, strict=True)])
    assert metrics["accuracy"] == pytest.approx(float(expected)) == summary["accuracy"]
