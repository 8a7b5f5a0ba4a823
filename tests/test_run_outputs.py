"""Run outputs are kept whole: merged metrics, refused reuse of an output folder, a read-only or full output location
caught before the first training step, atomic checkpoints that survive a SIGKILL mid-save, a damaged embedding
cache file named and rebuilt."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import multimodal_fusion
from multimodal_fusion import FusionModel, FusionProcessor, load_fusion_dataset
from multimodal_fusion.cache.embedding_cache import cache_embeddings
from multimodal_fusion.training.run_fusion import main
from multimodal_fusion.training.run_outputs import OutputDirError, last_complete_checkpoint, merge_metrics

SRC = str(Path(multimodal_fusion.__file__).resolve().parents[1])


def write_data(folder: Path, rows: int = 24, bad_rows: int = 0, seed: int = 0) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in (("train", rows), ("validation", 8), ("test", 8)):
        lines = []
        for i in range(n):
            label = int(i % 2)
            values = (rng.normal(0, 1, 3) + 2 * label).tolist()
            if split == "train" and i < bad_rows:
                values[0] = math.nan  # a bad sample: skipped (counted) in skip mode
            lines.append(json.dumps({"sensors": values, "label": ["no", "yes"][label]}))
        files[split] = str(folder / f"{split}.jsonl")
        Path(files[split]).write_text("\n".join(lines) + "\n")
    return files


def argv(files, output_dir, hidden=(8,), **overrides) -> list[str]:
    args = {
        "encoders": json.dumps(
            {"sensors": {"kind": "features", "input_dim": 3, "hidden_sizes": list(hidden)}}
        ),
        "train_file": files["train"],
        "validation_file": files["validation"],
        "test_file": files["test"],
        "output_dir": str(output_dir),
        "projection_dim": 8,
        "fusion_hidden_size": 8,
        "dropout": 0.0,
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "learning_rate": 0.01,
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        **overrides,
    }
    return [x for k, v in args.items() for x in (f"--{k}", str(v))]


def test_all_results_keeps_every_metric_next_to_the_skip_count(tmp_path):
    files = write_data(tmp_path / "data", bad_rows=2)
    metrics = main(argv(files, tmp_path / "out", skip_bad_samples=True))
    saved = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert saved["skipped_samples"] == 2 == metrics["skipped_samples"]
    for key in ("train_loss", "eval_loss", "eval_accuracy", "test_loss", "test_accuracy"):
        assert key in saved, key
    merge_metrics(str(tmp_path / "out"), {"extra": 1})
    merged = json.loads((tmp_path / "out" / "all_results.json").read_text())
    assert merged == {**saved, "extra": 1}


def test_non_empty_output_dir_is_refused_unless_overwrite_or_resume(tmp_path):
    files = write_data(tmp_path / "data")
    out = tmp_path / "out"
    main(argv(files, out, save_strategy="steps", save_steps=3))
    assert (out / "checkpoint-3").is_dir() and (out / "test_results.json").is_file()
    with pytest.raises(
        OutputDirError, match=rf"output_dir {out} exists and is not empty.*overwrite_output_dir"
    ):
        main(argv(files, out, save_strategy="no"))
    main(argv(files, out, resume_from_checkpoint="last", max_steps=7, save_strategy="no"))  # a resume may
    main(argv(files, out, overwrite_output_dir=True, save_strategy="no", test_file=files["validation"]))
    assert not list(out.glob("checkpoint-*"))  # the first run's checkpoints do not mix with the second run
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 6


def test_kill_during_checkpoint_save_then_resume_last_matches_an_uninterrupted_run(tmp_path):
    files = write_data(tmp_path / "data")
    common = {"save_strategy": "steps", "save_steps": 2, "max_steps": 6}
    reference = tmp_path / "reference"
    main(argv(files, reference, **common))

    killed = tmp_path / "killed"
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            """
            import os, signal, sys
            from multimodal_fusion.training.trainer import FusionTrainer
            from multimodal_fusion.training.run_fusion import main

            original = FusionTrainer._save_optimizer_and_scheduler

            def save_then_die(self, output_dir):  # the weights of checkpoint 4 are written, the rest is not
                if self.state.global_step == 4:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(self, output_dir)

            FusionTrainer._save_optimizer_and_scheduler = save_then_die
            main(sys.argv[1:])
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, str(driver), *argv(files, killed, **common)], env=env, capture_output=True, text=True
    )
    assert done.returncode == -9, done.stderr[-3000:]
    partial = killed / ".checkpoint-staging" / "checkpoint-4"
    assert (partial / "model.safetensors").is_file() and not (partial / "optimizer.pt").exists()
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == ["checkpoint-2"]
    assert last_complete_checkpoint(str(killed)) == str(killed / "checkpoint-2")

    main(argv(files, killed, resume_from_checkpoint="last", **common))
    state = json.loads((killed / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    expected, resumed = (
        load_file(str(reference / "model.safetensors")),
        load_file(str(killed / "model.safetensors")),
    )
    assert expected.keys() == resumed.keys()
    start = load_file(str(killed / "checkpoint-2" / "model.safetensors"))
    assert any(not torch.equal(start[k], resumed[k]) for k in start)  # it trained after the resume
    for key, value in expected.items():
        torch.testing.assert_close(
            resumed[key], value, atol=1e-6, rtol=0, msg=lambda m, key=key: f"{key}: {m}"
        )
    assert sorted(p.name for p in killed.glob("checkpoint-*")) == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-6",
    ]


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs `unshare -rm` (a private user + mount namespace)")
def test_read_only_or_full_output_location_fails_before_the_first_training_step(tmp_path):
    """Root writes through chmod, so the faults are real mounts in a private mount namespace: a read-only bind
    mount of an existing output folder, and a 256 KiB tmpfs (one checkpoint of this model needs ~0.8 MiB)."""
    files = write_data(tmp_path / "data")
    read_only, small = tmp_path / "read_only", tmp_path / "small"
    read_only.mkdir()
    small.mkdir()
    cases = {
        "read_only": argv(files, read_only, hidden=(256, 256)),
        "small": argv(files, small / "out", hidden=(256, 256), save_strategy="steps", save_steps=3),
    }
    driver = tmp_path / "driver.py"
    driver.write_text(
        textwrap.dedent(
            f"""
            import json
            from multimodal_fusion.training.trainer import FusionTrainer
            from multimodal_fusion.training.run_fusion import main

            steps = []
            original = FusionTrainer.training_step
            FusionTrainer.training_step = lambda self, *a, **k: steps.append(1) or original(self, *a, **k)
            results = {{}}
            for name, args in {cases!r}.items():
                steps.clear()
                try:
                    main(args)
                    results[name] = {{"error": None, "steps": len(steps)}}
                except Exception as error:
                    results[name] = {{"error": f"{{type(error).__name__}}: {{error}}", "steps": len(steps)}}
            print("RESULTS " + json.dumps(results))
            """
        )
    )
    script = (
        f"mount --bind {read_only} {read_only} && mount -o remount,bind,ro {read_only} && "
        f"mount -t tmpfs -o size=256k tmpfs {small} && exec {sys.executable} {driver}"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(line[len("RESULTS ") :])
    assert results["read_only"]["steps"] == 0 and results["small"]["steps"] == 0
    assert results["read_only"]["error"].startswith(f"OutputDirError: output_dir {read_only} is not writable")
    assert results["small"]["error"].startswith(
        f"OutputDirError: output_dir {small / 'out'} has 0.2 MiB free"
    )
    assert "one checkpoint needs about 0.8 MiB" in results["small"]["error"]


def test_damaged_embedding_cache_file_is_named_in_a_warning_and_rebuilt(tmp_path, caplog):
    files = write_data(tmp_path / "data")
    torch.manual_seed(0)
    model = FusionModel.from_encoders(
        {"sensors": {"kind": "features", "input_dim": 3, "hidden_sizes": [8]}},
        trainable_layers=0,
        projection_dim=8,
        fusion_hidden_size=8,
    )
    processor = FusionProcessor({"sensors": {"kind": "features", "input_dim": 3}})

    def cached():
        loaded = load_fusion_dataset({"train": files["train"]}, {"sensors": "sensors"}, kinds=processor)
        return cache_embeddings(loaded.dataset["train"], model, processor, {"sensors": "sensors"})

    first = cached()
    vectors = np.array(first.with_format("numpy")["sensors_embeds"], copy=True)
    cache_file = first.cache_files[-1]["filename"]
    assert os.path.isfile(cache_file + ".sha256")
    del first
    for damage in ("flip", "truncate"):
        data = bytearray(Path(cache_file).read_bytes())
        if damage == "flip":  # a float inside the data: the file still reads, only the checksum sees it
            offset = data.rfind(vectors[5, 3].tobytes())
            assert offset > 0
            data[offset : offset + 4] = np.float32(123.0).tobytes()
        else:
            data = data[: len(data) // 2]
        Path(cache_file).write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="multimodal_fusion"):
            again = cached()
        warnings = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
        assert len(warnings) == 1 and cache_file in warnings[0], warnings
        np.testing.assert_array_equal(again.with_format("numpy")["sensors_embeds"], vectors)  # rebuilt
        del again


def test_staged_checkpoints_keep_best_model_and_rotation_working(tmp_path):
    files = write_data(tmp_path / "data")
    out = tmp_path / "out"
    main(
        argv(files, out, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
             save_total_limit=1, load_best_model_at_end=True, metric_for_best_model="eval_loss")
    )  # fmt: skip
    state = json.loads((out / "trainer_state.json").read_text())
    best = Path(state["best_model_checkpoint"])
    assert best.parent == out and best.is_dir()  # points at the renamed folder, not the staging one
    kept = sorted(p.name for p in out.glob("checkpoint-*"))
    assert best.name in kept and len(kept) <= 2  # rotation ran on output_dir (the best one is always kept)
    assert not (out / ".checkpoint-staging").exists()
    saved = json.loads((best / "trainer_state.json").read_text())
    assert (
        saved["best_model_checkpoint"] in (None, str(best))
        or Path(saved["best_model_checkpoint"]).parent == out
    )
