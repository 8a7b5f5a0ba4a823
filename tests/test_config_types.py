"""A wrong value type in a run's YAML config is an error naming the key and the expected type (flags are typed by
argparse already)."""

import pytest
import yaml

from multimodal_fusion.training.run_fusion import parse_arguments

BASE = {
    "encoders": {"sensors": {"kind": "features", "input_dim": 3}},
    "train_file": "train.csv",
    "output_dir": "o",
}


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("learning_rate", [0.001], "`learning_rate` must be a float, got list [0.001]"),
        ("per_device_train_batch_size", "8", "`per_device_train_batch_size` must be an int, got str '8'"),
        ("max_steps", 2.5, "`max_steps` must be an int, got float 2.5"),
        ("skip_bad_samples", "yes", "`skip_bad_samples` must be a bool, got str 'yes'"),
        ("fusion", 3, "`fusion` must be a str, got int 3"),
        ("seed", True, "`seed` must be an int, got bool True"),
        ("encoders", ["a"], "`encoders` must be a dict, a str or null, got list ['a']"),
    ],
)
def test_wrong_value_type_names_the_key_and_the_type(tmp_path, key, value, expected):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, key: value}))
    with pytest.raises(TypeError) as error:
        parse_arguments([str(path)])
    assert str(error.value) == f"{path}: {expected}"


def test_values_of_the_right_types_pass(tmp_path):
    path = tmp_path / "run.yaml"
    values = {
        **BASE,
        "learning_rate": 1,
        "trainable_layers": 2,
        "warmup_steps": 0.1,
        "columns": {"sensors": "x"},
    }
    path.write_text(yaml.safe_dump({**values, "lr_scheduler_type": "cosine", "overwrite_output_dir": True}))
    model_args, data_args, training_args = parse_arguments([str(path)])
    assert training_args.learning_rate == 1 and model_args.trainable_layers == 2
    assert training_args.overwrite_output_dir is True and data_args.columns == {"sensors": "x"}
