"""Training: FusionTrainer, argument dataclasses, parameter groups, metrics."""

from .arguments import DataArguments, FusionTrainingArguments, ModelArguments
from .metrics import FUSION_METRIC_PATH, build_compute_metrics, load_metric
from .param_groups import build_param_groups
from .trainer import FusionTrainer, may_skip_parameters

__all__ = [
    "FUSION_METRIC_PATH",
    "DataArguments",
    "FusionTrainer",
    "FusionTrainingArguments",
    "ModelArguments",
    "build_compute_metrics",
    "build_param_groups",
    "load_metric",
    "may_skip_parameters",
]
