"""Continuing from a checkpoint (`model_name_or_path`) maps the data's label names through the checkpoint's classes.

A blue/green/red model trained further on green/red rows (a subset, ids 0/1 in the data alone) or on a dataset
whose ClassLabel lists the names in another order must keep predicting the same names; a class the checkpoint does
not know is an error unless `extend_labels`, which adds head rows and keeps the old ones bit for bit. Accuracy is
computed here from the label *names* of the rows, independently of any id mapping.
"""

import json

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value
from safetensors.torch import load_file

from multimodal_fusion import FusionDataCollator, FusionModel, FusionProcessor
from multimodal_fusion.training.run_fusion import main

NAMES = ["blue", "green", "red"]
CENTERS = {"blue": [3, 0, 0, 0], "green": [0, 3, 0, 0], "red": [0, 0, 3, 0], "purple": [0, 0, 0, 3]}


def rows(names, per_class, seed):
    rng = np.random.default_rng(seed)
    out = [
        {"sensors": (np.array(CENTERS[n], dtype=float) + rng.normal(0, 0.7, 4)).tolist(), "label": n}
        for n in names
        for _ in range(per_class)
    ]
    return [out[i] for i in rng.permutation(len(out))]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def run(tmp_path, name, **overrides):
    args = {
        "encoders": json.dumps({"sensors": {"kind": "features", "input_dim": 4, "hidden_sizes": [16]}}),
        "validation_split_percentage": 0,
        "output_dir": str(tmp_path / name),
        "projection_dim": 16,
        "fusion_hidden_size": 16,
        "dropout": 0.0,
        "aux_loss_weight": 0.3,
        "max_steps": 40,
        "per_device_train_batch_size": 8,
        "learning_rate": 0.02,
        "lr_scheduler_type": "constant",
        "use_cpu": True,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        **overrides,
    }
    if "model_name_or_path" in args:
        args.pop("encoders")
    argv = [x for k, v in args.items() for x in (f"--{k}", str(v))]
    main(argv)
    return tmp_path / name


def predicted_names(output_dir, records):
    model = FusionModel.from_pretrained(output_dir).eval()
    processor = FusionProcessor.from_pretrained(output_dir)
    batch = FusionDataCollator(processor, {"sensors": "sensors"})(
        [{"sensors": r["sensors"]} for r in records]
    )
    with torch.no_grad():
        ids = model(**batch).logits.argmax(-1).tolist()
    return [model.config.id2label[i] for i in ids]


def accuracy(output_dir, records):
    predicted = predicted_names(output_dir, records)
    return float(np.mean([p == r["label"] for p, r in zip(predicted, records, strict=True)]))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("base")
    out = run(tmp, "base", train_file=write_jsonl(tmp / "train.jsonl", rows(NAMES, 16, 0)))
    return tmp, out


def reordered_dataset_dir(path, records):
    """A save_to_disk dataset whose ClassLabel lists the names in another order than the checkpoint."""
    order = ["red", "green"]  # subset and reordered: red is id 0 here, 2 in the checkpoint
    features = Features({"sensors": List(Value("float32")), "label": ClassLabel(names=order)})
    data = {"sensors": [r["sensors"] for r in records], "label": [order.index(r["label"]) for r in records]}
    DatasetDict({"train": Dataset.from_dict(data, features=features)}).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("source", ["subset_jsonl", "reordered_classlabel"])
def test_same_names_predicted_at_lr0_and_accuracy_kept_after_training(base, source, tmp_path):
    tmp, base_out = base
    subset = rows(["green", "red"], 12, 1)
    test_rows = rows(["green", "red"], 20, 2)
    if source == "subset_jsonl":
        data = {"train_file": write_jsonl(tmp_path / "gr.jsonl", subset)}
    else:
        data = {"dataset_dir": reordered_dataset_dir(tmp_path / "gr_disk", subset)}
    base_accuracy = accuracy(base_out, test_rows)
    assert base_accuracy > 0.9  # the checkpoint has learned the three classes

    frozen = run(tmp_path, "lr0", model_name_or_path=base_out, learning_rate=0.0, max_steps=2, **data)
    assert predicted_names(frozen, test_rows) == predicted_names(base_out, test_rows)
    assert (
        FusionModel.from_pretrained(frozen).config.id2label
        == FusionModel.from_pretrained(base_out).config.id2label
    )

    trained = run(tmp_path, "trained", model_name_or_path=base_out, max_steps=15, **data)
    assert accuracy(trained, test_rows) >= base_accuracy


def test_unknown_class_is_an_error_unless_extend_labels(base, tmp_path):
    tmp, base_out = base
    train = write_jsonl(tmp_path / "gp.jsonl", rows(["green", "purple"], 12, 3))
    with pytest.raises(
        ValueError, match=r"classes \['purple'\] are not classes of the checkpoint.*extend_labels"
    ):
        run(tmp_path, "refused", model_name_or_path=base_out, train_file=train)

    out = run(
        tmp_path,
        "extended",
        model_name_or_path=base_out,
        train_file=train,
        extend_labels=True,
        learning_rate=0.0,
        max_steps=1,
    )
    config = FusionModel.from_pretrained(out).config
    assert config.id2label == {0: "blue", 1: "green", 2: "red", 3: "purple"}
    before, after = load_file(str(base_out / "model.safetensors")), load_file(str(out / "model.safetensors"))
    heads = [k for k in before if k.startswith(("classifier.", "aux_heads."))]
    assert any(k.startswith("aux_heads.") for k in heads)
    for key in heads:
        assert after[key].shape[0] == 4 and before[key].shape[0] == 3
        assert torch.equal(after[key][:3], before[key]), key  # old rows bit for bit
    assert after["classifier.weight"][3].abs().sum() > 0  # the new row is initialised, not zeros
    # and it learns the new class at a normal learning rate, keeping green
    trained = run(
        tmp_path,
        "extended_trained",
        model_name_or_path=base_out,
        train_file=train,
        extend_labels=True,
        max_steps=40,
    )
    test_rows = rows(["green", "purple"], 20, 4)
    assert accuracy(trained, test_rows) > 0.9
