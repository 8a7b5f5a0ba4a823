"""training/run.py end to end: csv of relative file paths, Hub ids, saved folder reloads and reproduces metrics."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from tiny_data import write_tiny_dataset

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor, load_fusion_dataset
from multimodal_fusion.training.run_fusion import main, parse_arguments

ROOT = Path(__file__).resolve().parents[1]


def write_config(path: Path, encoders, files, output_dir, **overrides) -> Path:
    config = {
        "encoders": encoders,
        "fusion": "gated",
        "trainable_layers": {"image": 0, "audio": 1, "text": "all"},
        "projection_dim": 32,
        "fusion_hidden_size": 32,
        "train_file": str(files["train"]),
        "validation_file": str(files["validation"]),
        "test_file": str(files["test"]),
        "label_column": "label",
        "output_dir": str(output_dir),
        "max_steps": 8,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 2e-3,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "logging_steps": 2,
        "seed": 0,
        "disable_tqdm": True,
        "max_audio_seconds": 0.2,
        **overrides,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def evaluate_by_hand(output_dir: Path, csv_file: Path) -> tuple[float, float, torch.Tensor]:
    """Accuracy, mean loss and logits of the saved model on a csv, without the Trainer."""
    model = FusionModel.from_pretrained(output_dir).eval()
    processor = FusionProcessor.from_pretrained(output_dir)
    label_names = [
        model.config.id2label[i] for i in sorted(model.config.id2label)
    ]  # the ids used in training
    loaded = load_fusion_dataset(
        {"validation": str(csv_file)},
        {c: c for c in ("image", "audio", "text")},
        kinds=processor,
        label_names=label_names,
    )
    rows = list(loaded.dataset["validation"])
    batch = FusionDataCollator(processor, loaded.columns, label_column="label")(rows)
    labels = batch.pop("labels")
    with torch.no_grad():
        logits = model(**batch).logits
    loss = torch.nn.functional.cross_entropy(logits, labels).item()
    return (logits.argmax(-1) == labels).float().mean().item(), loss, logits


def test_run_py_trains_on_csv_files_and_saved_folder_reproduces_metrics(hub_ids, tmp_path, monkeypatch):
    files = write_tiny_dataset(tmp_path / "data")
    encoders = {"image": hub_ids["vit"], "audio": hub_ids["wav2vec2"], "text": hub_ids["bert"]}
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", encoders, files, output_dir)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative media paths resolve against the csv, not the working directory
    results = main([str(config), "--fusion", "attention"])  # flags override the file
    names = {p.name for p in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_fusion.py", "configuration_fusion.py"} <= names
    assert {"all_results.json", "trainer_state.json", "README.md", "processor_config.json"} <= names
    all_results = json.loads((output_dir / "all_results.json").read_text())
    assert {"eval_accuracy", "eval_macro_f1", "test_accuracy", "test_loss", "train_loss"} <= set(all_results)
    assert all_results["eval_accuracy"] == results["eval_accuracy"]
    saved = json.loads((output_dir / "config.json").read_text())
    assert saved["fusion"] == "attention" and saved["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    card = (output_dir / "README.md").read_text()
    assert "attention" in card and "tiny-org/vit" in card and "eval_accuracy" in card
    # The saved folder reproduces the logged eval metrics.
    accuracy, loss, logits = evaluate_by_hand(output_dir, files["validation"])
    assert accuracy == pytest.approx(all_results["eval_accuracy"], abs=1e-6)
    assert loss == pytest.approx(all_results["eval_loss"], abs=1e-4)
    # Freezing from the config survived training and saving.
    model = FusionModel.from_pretrained(output_dir)
    assert model.trainable_layers == {"image": 0, "audio": 1, "text": "all"}
    # ... and so does loading through remote code in a process that cannot import the package.
    batch_file = tmp_path / "batch.pt"
    processor = FusionProcessor.from_pretrained(output_dir)
    label_names = [model.config.id2label[i] for i in sorted(model.config.id2label)]
    loaded = load_fusion_dataset(
        {"validation": str(files["validation"])},
        {c: c for c in ("image", "audio", "text")},
        kinds=processor,
        label_names=label_names,
    )
    batch = FusionDataCollator(processor, loaded.columns, label_column=None)(
        list(loaded.dataset["validation"])
    )
    torch.save(dict(batch), batch_file)
    script = textwrap.dedent(
        """
        import sys, torch
        sys.modules["multimodal_fusion"] = None
        from transformers import AutoModel
        model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
        with torch.no_grad():
            torch.save(model(**torch.load(sys.argv[2])).logits, sys.argv[3])
        """
    )
    (tmp_path / "remote.py").write_text(script)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": ""}
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(output_dir), str(batch_file), str(tmp_path / "logits.pt")],
        check=True, env=env, cwd=tmp_path, capture_output=True,
    )  # fmt: skip
    remote_logits = torch.load(tmp_path / "logits.pt")
    assert torch.allclose(remote_logits, logits, atol=1e-6)
    remote_accuracy = (
        (remote_logits.argmax(-1) == torch.tensor(list(loaded.dataset["validation"]["label"]))).float().mean()
    )
    assert remote_accuracy.item() == pytest.approx(all_results["eval_accuracy"], abs=1e-6)


def test_run_carves_validation_and_infers_labels_from_flags_only(tiny_paths, tmp_path):
    files = write_tiny_dataset(tmp_path / "data", n_train=20, n_eval=4, missing_every=4)
    output_dir = tmp_path / "out"
    results = main(
        [
            "--encoders", json.dumps(tiny_paths), "--train_file", str(files["train"]), "--output_dir", str(output_dir),
            "--max_steps", "2", "--per_device_train_batch_size", "4", "--use_cpu", "true", "--report_to", "none",
            "--projection_dim", "32", "--fusion_hidden_size", "32", "--fusion", "transformer", "--fusion_heads", "2",
            "--trainable_layers", "0", "--save_strategy", "no", "--disable_tqdm", "true",
            "--bf16", "true", "--report_to", "tensorboard", "--logging_steps", "1",
        ]
    )  # fmt: skip
    assert list(output_dir.rglob("events.out.tfevents*"))  # tensorboard logging
    assert "eval_accuracy" in results and "test_accuracy" not in results
    config = json.loads((output_dir / "config.json").read_text())
    assert len(config["id2label"]) == 3
    assert {m["trainable_layers"] for m in config["modalities"]} == {0}


def test_config_file_keys_are_validated(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {"encoders": {"image": "x"}, "train_file": "t.csv", "output_dir": "o", "fussion": "gated"}
        )
    )
    with pytest.raises(ValueError, match=r"unknown keys \['fussion'\]"):
        parse_arguments([str(path)])
    with pytest.raises(ValueError, match="give a dataset"):
        parse_arguments(["--encoders", '{"image": "x"}', "--output_dir", "o"])


def test_push_uploads_exactly_the_output_folder(tiny_paths, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, **kwargs):
        import fnmatch

        files = [
            str(p.relative_to(folder_path))
            for p in Path(folder_path).rglob("*")
            if p.is_file()
            and not any(
                fnmatch.fnmatch(str(p.relative_to(folder_path)), pat) for pat in ignore_patterns or []
            )
        ]
        calls["upload_folder"] = (repo_id, folder_path, sorted(files))
        return "https://hub/commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    files = write_tiny_dataset(tmp_path / "data", n_train=8, n_eval=4)
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tiny_paths, files, output_dir, max_steps=1, push_to_hub=True,
                          hub_model_id="me/fused", save_strategy="steps", save_steps=1)  # fmt: skip
    main([str(config)])
    repo_id, folder, uploaded = calls["upload_folder"]
    assert calls["create_repo"][0] == "me/fused" and repo_id == "me/fused" and Path(folder) == output_dir
    assert {
        "model.safetensors",
        "config.json",
        "modeling_fusion.py",
        "processor_config.json",
        "README.md",
    } <= set(uploaded)
    assert any(f.startswith(("image/", "text/", "audio/")) for f in uploaded)  # the per-modality processors
    assert not [f for f in uploaded if f.startswith("checkpoint-")]
    assert (output_dir / "checkpoint-1").exists()


def test_train_writes_the_evaluate_report_for_validation_and_test(tiny_paths, tmp_path):
    """`train` writes what `evaluate` writes, per evaluated split; its numbers are the run's own metrics, and the
    confusion matrix is recounted from the saved model's logits on the test rows (an independent pass)."""
    import csv

    import numpy as np

    files = write_tiny_dataset(tmp_path / "data", n_train=12, n_eval=6)
    output_dir = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", tiny_paths, files, output_dir, max_steps=4)
    metrics = main([str(config)])
    for split, prefix in (("validation", "eval"), ("test", "test")):
        folder = output_dir / "evaluation" / split
        report = json.loads((folder / "metrics.json").read_text())
        for key in ("accuracy", "macro_f1", "f1_red", "f1_green", "f1_blue"):
            assert report[key] == pytest.approx(metrics[f"{prefix}_{key}"], abs=1e-6), (split, key)
        assert report["num_samples"] == 6 and report["skipped_samples"] == 0
        matrix = list(csv.reader((folder / "confusion_matrix.csv").read_text().splitlines()))
        assert matrix[0] == ["true \\ predicted", "blue", "green", "red"]  # the model's id order
        counts = np.array([[int(v) for v in row[1:]] for row in matrix[1:]])
        assert counts.sum() == 6 and np.trace(counts) / 6 == pytest.approx(report["accuracy"])
        ablation = {
            row["setting"]: row for row in csv.DictReader((folder / "ablation.csv").read_text().splitlines())
        }
        assert set(ablation) == {"all modalities", "without image", "without audio", "without text"}
        assert float(ablation["all modalities"]["accuracy"]) == pytest.approx(report["accuracy"])
        for plot in ("confusion_matrix.png", "ablation.png"):
            assert (folder / plot).stat().st_size > 1000, plot
    _, _, logits = evaluate_by_hand(output_dir, files["test"])
    model = FusionModel.from_pretrained(output_dir)
    names = [model.config.id2label[i] for i in range(3)]
    truth = [names.index(row["label"]) for row in csv.DictReader(files["test"].read_text().splitlines())]
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (truth, logits.argmax(-1).numpy()), 1)
    matrix = list(
        csv.reader((output_dir / "evaluation" / "test" / "confusion_matrix.csv").read_text().splitlines())
    )
    assert np.array_equal(np.array([[int(v) for v in row[1:]] for row in matrix[1:]]), expected)
