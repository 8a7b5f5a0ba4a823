"""The demo runner end to end at a tiny scale: stage 1, stage 2 for two fusions, ablation, report and plots."""

import json

import pytest
import torch
from PIL import Image

from multimodal_fusion.demo.report import confusion_matrix
from multimodal_fusion.demo.run_demo import main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    threads = torch.get_num_threads()
    results = main(
        ["--out-dir", str(out), "--num-samples", "200", "--fusions", "concat", "gated",
         "--num_train_epochs", "1", "--disable_tqdm", "true"]
    )  # fmt: skip
    torch.set_num_threads(threads)
    return out, results


def test_results_json_has_the_documented_shape(demo):
    out, results = demo
    saved = json.loads((out / "results.json").read_text())
    assert saved["unimodal"].keys() == {"image", "audio", "text"}
    assert saved["fused"].keys() == {"concat", "gated"}
    assert saved["ablation"]["gated"].keys() == {"image", "audio", "text"}
    # independent sources: stage 1's own results file and each fusion run's all_results.json
    stage1 = json.loads((out / "pretrained" / "unimodal_results.json").read_text())
    assert saved["unimodal"] == {m: stage1[m]["test_accuracy"] for m in ("image", "audio", "text")}
    for fusion in ("concat", "gated"):
        run = json.loads((out / "fusion" / fusion / "all_results.json").read_text())
        assert saved["fused"][fusion] == pytest.approx(run["test_accuracy"])
    assert set(saved["modality_weights"]) == {"gated"}  # concat does not weigh modalities
    assert sum(saved["modality_weights"]["gated"].values()) == pytest.approx(1.0, abs=1e-4)


def test_report_and_plots(demo):
    out, results = demo
    report = (out / "report.md").read_text()
    assert "| **gated fusion** |" in report and "without audio" in report
    for name in ("accuracy.png", "training_curves.png", "confusion_matrix.png", "modality_weights.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300


def test_confusion_matrix_counts():
    matrix = confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2], 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
