"""The ``multimodal-fusion`` command from a non-editable install, run from an empty folder: --help, the demo,
then predict and evaluate on the demo's test split, checked against ``FusionModel`` on the same rows."""

import csv
import json
import subprocess

import numpy as np
import pytest
import torch

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset


def run(installed_package, cwd, *args):
    done = subprocess.run(
        [str(installed_package.site / "bin" / "multimodal-fusion"), *args], cwd=cwd, env=installed_package.env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def test_help_of_every_command(installed_package, tmp_path, capsys):
    out = run(installed_package, tmp_path, "--help").stdout  # the installed console script
    for command in ("train", "predict", "evaluate", "export", "hpo", "demo"):
        assert command in out
    from multimodal_fusion import cli

    for command in (
        "train",
        "predict",
        "evaluate",
        "export",
        "hpo",
        "demo",
    ):  # in-process: no startup per command
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0
        help_text = capsys.readouterr().out
        assert (
            "--num-samples" in help_text
            if command == "demo"
            else f"usage: multimodal-fusion {command}" in help_text
        )


def model_probabilities(model_dir, test_csv):
    """Softmax of ``FusionModel`` on the test rows, batched by the collator (independent of predict's loop)."""
    model = FusionModel.from_pretrained(model_dir).eval()
    processor = FusionProcessor.from_pretrained(model_dir)
    columns = {"image": "image", "audio": "audio", "text": "text"}
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    rows = load_fusion_dataset(str(test_csv), columns, kinds=processor, label_names=names).dataset["train"]
    batch = FusionDataCollator(processor, columns)(list(rows))
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    return logits.softmax(-1).numpy(), batch["labels"].numpy(), names


def test_demo_then_predict_and_evaluate(installed_package, installed_demo):
    demo, done = installed_demo
    assert done.returncode == 0, done.stderr[-4000:]
    assert "demo finished" in done.stdout
    folder = demo.parents[1]
    model_dir, test_csv = demo / "fusion" / "concat", demo / "data" / "test.csv"
    out = run(
        installed_package, folder, "predict", str(model_dir), str(test_csv), "--output", "preds.csv"
    ).stdout
    assert "predictions written" in out
    with open(folder / "preds.csv") as handle:
        table = list(csv.DictReader(handle))
    probabilities, labels, names = model_probabilities(model_dir, test_csv)
    assert len(table) == len(probabilities) > 0
    scores = np.array([[float(row[f"score_{n}"]) for n in names] for row in table])
    np.testing.assert_allclose(scores, probabilities, atol=1e-5)
    assert [row["label"] for row in table] == [names[i] for i in probabilities.argmax(-1)]
    assert all(row["present_image"] == "True" for row in table)
    out = run(
        installed_package, folder, "evaluate", str(model_dir), str(test_csv), "--output-dir", "eval"
    ).stdout
    assert "accuracy without audio" in out
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(float(np.mean(probabilities.argmax(-1) == labels)))
    trained = json.loads((model_dir / "all_results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(trained["test_accuracy"])  # the trainer's own test pass
    for plot in ("confusion_matrix.png", "ablation.png"):
        assert (folder / "eval" / plot).stat().st_size > 1000


def test_ready_configs_resolve_by_name_and_unknown_names_list_them():
    from multimodal_fusion.training.launch import ready_configs, resolve_config

    assert {"demo", "hub-base"} <= set(ready_configs())
    assert resolve_config("demo").name == "demo.yaml"
    with pytest.raises(FileNotFoundError, match="ready configs: .*'demo'"):
        resolve_config("no-such-config")


def test_missing_extra_names_the_pip_install(monkeypatch):
    import importlib.util

    from multimodal_fusion import cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    with pytest.raises(SystemExit, match=r"pip install 'multimodal-fusion\[hpo\]'"):
        cli.main(["hpo", "config.yaml"])


def test_train_command_ignores_the_hpo_section_and_shows_package_events(tiny_paths, tmp_path, capsys, caplog):
    import yaml
    from tiny_data import write_tiny_dataset

    from multimodal_fusion import cli

    files = write_tiny_dataset(tmp_path / "data", n_train=6, n_eval=3)
    config = {
        "encoders": tiny_paths, "trainable_layers": 0, "projection_dim": 16, "fusion_hidden_size": 16,
        "train_file": str(files["train"]), "validation_file": str(files["validation"]),
        "output_dir": str(tmp_path / "out"), "max_steps": 1, "report_to": "none", "use_cpu": True,
        "hpo": {"n_trials": 2, "space": {"learning_rate": [0.1]}},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(tmp_path / "config.yaml"), "--per_device_train_batch_size", "3"]) == 0
    out = capsys.readouterr().out
    assert "training finished" in out and "eval_accuracy" in out
    events = [r.getMessage() for r in caplog.records if r.name.startswith("multimodal_fusion")]
    assert any("embedding cache: training" in m for m in events)  # INFO events pass the package's level
    assert any("`hpo` section is ignored" in m for m in events)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["custom_pipelines"]["fused-classification-remote"]["impl"] == (
        "pipeline_fusion.FusedClassificationPipeline"
    )
