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


# ---------------------------------------------------------------------------------------------------- user errors
def small_config(tiny_paths, files, out, **overrides):
    return {
        "encoders": tiny_paths, "trainable_layers": 0, "projection_dim": 16, "fusion_hidden_size": 16,
        "train_file": str(files["train"]), "validation_file": str(files["validation"]),
        "test_file": str(files["test"]), "output_dir": str(out), "max_steps": 1, "report_to": "none",
        "use_cpu": True, "disable_tqdm": True, **overrides,
    }  # fmt: skip


def error_line(capsys, argv, code=1):
    """Run the command in-process; its stderr must end in exactly one error line, with no traceback (progress bars
    and log events of the work done before the error may precede it)."""
    from multimodal_fusion import cli

    assert cli.main(argv) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"multimodal-fusion {argv[0]}: error: ") and "Traceback" not in err
    assert sum("error: " in line for line in lines) == 1, lines
    return lines[-1]


@pytest.fixture()
def tiny_config(tiny_paths, tmp_path):
    import yaml
    from tiny_data import write_tiny_dataset

    files = write_tiny_dataset(tmp_path / "data", n_train=6, n_eval=3)
    config = small_config(tiny_paths, files, tmp_path / "out")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config, files


def test_user_errors_are_one_line_with_did_you_mean(tiny_config, tmp_path, capsys, monkeypatch):
    import yaml

    path, config, _ = tiny_config
    typo = tmp_path / "typo.yaml"
    typo.write_text(yaml.safe_dump({**config, "projection_dimm": 16, "learning_rat": 0.1}))
    line = error_line(capsys, ["train", str(typo)])
    assert "unknown keys ['learning_rat', 'projection_dimm']" in line
    assert (
        "did you mean 'learning_rate' (for 'learning_rat'), 'projection_dim' (for 'projection_dimm')?" in line
    )
    line = error_line(capsys, ["train", str(path), "--fusion", "concatt"])
    assert "unknown fusion 'concatt'" in line and "did you mean 'concat'?" in line
    line = error_line(capsys, ["train", str(path), "--fusin", "concat"])
    assert "unknown arguments ['--fusin', 'concat']; did you mean '--fusion'?" in line
    line = error_line(capsys, ["train", str(path), "--learning_rate", "abc"])
    assert "--learning_rate" in line and "invalid float value: 'abc'" in line  # not argparse's usage page
    line = error_line(capsys, ["train", "demoo"])
    assert "ready configs: ['demo', 'hub-base']; did you mean 'demo'?" in line
    line = error_line(capsys, ["train", str(path), "--trainable_layers", '{"imag": 0}'])
    assert "`trainable_layers` names unknown modalities ['imag']" in line and "did you mean 'image'?" in line
    pooling = json.dumps(
        {**config["encoders"], "image": {"path": config["encoders"]["image"], "pooling": "maen"}}
    )
    line = error_line(capsys, ["train", str(path), "--encoders", pooling])
    assert "modality 'image': `pooling` must be one of" in line and "did you mean 'mean'?" in line
    line = error_line(capsys, ["train", str(path), "--train_file", str(tmp_path / "nope.csv")])
    assert f"`train_file` '{tmp_path / 'nope.csv'}' not found" in line
    line = error_line(capsys, ["predict", str(tmp_path / "no-model"), str(path), "--output", "p.csv"])
    assert f"model '{tmp_path / 'no-model'}' is no local folder" in line
    with pytest.raises(SystemExit) as exit_info:  # argparse's own errors: one line too, exit status 2
        from multimodal_fusion import cli

        cli.main(["trian", str(path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().endswith("did you mean 'train'? (see --help)")
    with pytest.raises(ValueError, match="did you mean 'concat'"):  # --debug (anywhere): the traceback
        cli.main(["train", str(path), "--fusion", "concatt", "--debug"])
    monkeypatch.setenv("MULTIMODAL_FUSION_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="ready configs"):
        cli.main(["train", "demoo"])


def test_console_script_prints_one_line_and_exits_1(tiny_config, tmp_path):
    """The entry point in its own process: one stderr line, exit status 1, no traceback."""
    import os
    import sys

    from multimodal_fusion.model.fusions import FUSION_REGISTRY

    path, _, _ = tiny_config
    code = "from multimodal_fusion.cli import entry_point; entry_point()"
    done = subprocess.run(
        [sys.executable, "-c", code, "train", str(path), "--fusion", "gatd"], capture_output=True, text=True,
        timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        "multimodal-fusion train: error: `fusion`: unknown fusion 'gatd': known fusions are "
        f"{list(FUSION_REGISTRY)}; did you mean 'gated'? (--debug shows the traceback)"
    ]
    assert "Traceback" not in done.stderr


def break_media(files):
    """Remove one test image and one train audio file; returns their paths."""
    gone = [files["test"].parent / "images" / "test_1.png", files["train"].parent / "audio" / "train_2.wav"]
    for path in gone:
        path.unlink()
    return gone


def test_missing_media_files_are_reported_before_any_encoder_runs(tiny_config, tmp_path, capsys, monkeypatch):
    import yaml

    from multimodal_fusion import FusionModel

    path, config, files = tiny_config
    image, audio = break_media(files)
    built = []
    real = FusionModel.from_encoders.__func__
    monkeypatch.setattr(
        FusionModel, "from_encoders", classmethod(lambda *a, **k: built.append(1) or real(*a, **k))
    )
    line = error_line(capsys, ["train", str(path)])
    assert "2 media file(s) not found" in line and not built  # before the model (and any encoder) exists
    assert f"split 'train' row 2, column 'audio': {audio}" in line
    assert f"split 'test' row 1, column 'image': {image}" in line
    skipping = tmp_path / "skip.yaml"
    skipping.write_text(yaml.safe_dump({**config, "skip_bad_samples": True}))
    from multimodal_fusion import cli

    assert cli.main(["train", str(skipping)]) == 0  # a counted skip instead of an error
    results = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert results["skipped_samples"] == 2


def test_predict_and_evaluate_check_media_files_first(tiny_paths, tmp_path, capsys, caplog):
    from saved_fusion import raw_files, save_fusion_folder

    model_dir = save_fusion_folder(tiny_paths, tmp_path / "model")
    files = raw_files(tmp_path / "data")
    (image, _) = break_media(files)
    for command in (
        ["predict", str(model_dir), str(files["test"]), "--output", str(tmp_path / "p.csv")],
        [
            "evaluate",
            str(model_dir),
            str(files["test"]),
            "--output-dir",
            str(tmp_path / "eval"),
            "--no-plots",
        ],
    ):
        line = error_line(capsys, command)
        assert (
            f"1 media file(s) not found: data file '{files['test']}' row 1, column 'image': {image}" in line
        )
    assert not (tmp_path / "p.csv").exists()
    from multimodal_fusion import cli

    assert (
        cli.main(["predict", *command[1:3], "--output", str(tmp_path / "p.csv"), "--skip-bad-samples"]) == 0
    )
    with open(tmp_path / "p.csv") as handle:
        table = list(csv.DictReader(handle))
    assert "test_1.png" in table[1]["error"] and not table[0]["error"]
    loaded = [r.getMessage() for r in caplog.records if "rows; modality -> column" in r.getMessage()]
    assert loaded and all(f"{files['test']} (data file): 6 rows" in m for m in loaded)  # not "split 'train'"
