"""The ready configs shipped in the package (multimodal_fusion/configs) parse: run configs through run.py's parser, accelerate configs through
accelerate's own config class."""

import pytest
from accelerate.commands.config.config_args import ClusterConfig

from multimodal_fusion.configs import config_path
from multimodal_fusion.training.run_fusion import parse_arguments

CONFIGS = config_path("demo.yaml").parent


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_run_configs_parse(path):
    model_args, data_args, training_args = parse_arguments(
        [str(path), "--train_file", "train.csv", "--use_cpu", "true", "--bf16", "false"]
    )
    assert model_args.encoders and model_args.fusion
    assert training_args.remove_unused_columns is False


@pytest.mark.parametrize("path", sorted((CONFIGS / "accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_parse(path):
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.distributed_type.value == "MULTI_GPU" and config.num_processes >= config.num_machines
