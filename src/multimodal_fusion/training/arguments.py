"""Argument dataclasses of ``training/run.py`` (parsed by ``HfArgumentParser`` from YAML/JSON or flags).

Key names are a public contract: ``encoders``, ``fusion``, ``trainable_layers``, ``num_labels``,
``dataset_name``, ``train_file``, ``validation_file``, ``test_file``, ``dataset_dir``, ``columns``,
``label_column``, ``class_names``, plus every ``TrainingArguments`` field.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from ..model.configuration_fusion import FusionConfig
from ..model.fusions import FUSION_REGISTRY
from .config_types import did_you_mean


def _json_or_value(value: Any) -> Any:
    """Flags arrive as strings: ``'{"image": 0}'`` -> dict, ``'2'`` -> 2, ``'all'`` stays."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


CONFIG_FILE_TYPES: dict[str, Any] = {
    "trainable_layers": dict | int | str | None,
    "gradual_unfreeze_limit": dict | int | str | None,
}
"""Types a config *file* may give where the annotation is narrower (the flag arrives as a string)."""


@dataclass
class ModelArguments:
    """Which encoders to fuse and how (names as in ``FusionConfig``), or a fusion checkpoint to continue."""

    encoders: dict | str | None = field(
        default=None,
        metadata={"help": "Modality -> Hub id / folder / spec dict (JSON on the command line)."},
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A saved fusion model (folder or Hub id) to continue from."}
    )
    extend_labels: bool = field(
        default=False,
        metadata={"help": "With `model_name_or_path`: add classes of the data that the checkpoint does not know as "
                  "new head rows (otherwise they are an error); the checkpoint's classes keep their ids and rows."},
    )  # fmt: skip
    fusion: str = field(
        default="concat",
        metadata={
            "help": "A registered fusion: `multimodal_fusion.list_fusions()` (concat, gated, attention, ...)."
        },
    )
    trainable_layers: dict | str | None = field(
        default=None, metadata={"help": "0, k, 'all', or modality -> value (JSON on the command line)."}
    )
    num_labels: int | None = field(
        default=None, metadata={"help": "Inferred from the label column when absent."}
    )
    problem_type: str | None = field(
        default=None,
        metadata={"help": "single_label_classification | multi_label_classification | regression"},
    )
    projection_dim: int = field(default=256, metadata={"help": "Size of the projected modality vectors."})
    fusion_hidden_size: int = field(default=256, metadata={"help": "Size of the fused embedding."})
    fusion_layers: int = field(default=1, metadata={"help": "MLP depth / transformer layers of the fusion."})
    fusion_heads: int = field(default=4, metadata={"help": "Attention heads of the transformer fusion."})
    fusion_rank: int = field(default=4, metadata={"help": "Rank of the low_rank_tensor fusion."})
    tensor_fusion_dim: int = field(default=16, metadata={"help": "Per-modality size in the tensor fusion."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout in the fusion module and head."})
    modality_dropout: float = field(
        default=0.0, metadata={"help": "Per-sample probability of dropping a modality."}
    )
    aux_loss_weight: float = field(default=0.0, metadata={"help": "Weight of per-modality auxiliary losses."})
    attn_implementation: str | None = field(
        default=None, metadata={"help": "eager | sdpa | flash_attention_2"}
    )

    def __post_init__(self) -> None:
        self.encoders = _json_or_value(self.encoders)
        self.trainable_layers = _json_or_value(self.trainable_layers)
        if self.encoders is None and self.model_name_or_path is None:
            raise ValueError(
                "give `encoders` (modality -> encoder) or `model_name_or_path` (a fusion checkpoint)"
            )
        if self.encoders is not None and not isinstance(self.encoders, dict):
            raise ValueError(f"`encoders` must map modality names to encoders, got {self.encoders!r}")
        self._check_names()

    def _check_names(self) -> None:
        """Fail before any data is read: an unknown fusion, or ``trainable_layers`` naming no modality."""
        try:
            FUSION_REGISTRY.get(self.fusion)
        except KeyError as error:
            raise ValueError(f"`fusion`: {error.args[0]}") from None
        if isinstance(self.encoders, dict) and isinstance(self.trainable_layers, dict):
            unknown = sorted(set(self.trainable_layers) - set(self.encoders))
            if unknown:
                raise ValueError(
                    f"`trainable_layers` names unknown modalities {unknown}; the modalities are "
                    f"{list(self.encoders)}{did_you_mean(unknown, self.encoders)}"
                )

    def config_kwargs(self) -> dict[str, Any]:
        """The ``FusionConfig`` fields set by these arguments (those of its fields that share a name here)."""
        config_fields = {f.name for f in dataclasses.fields(FusionConfig)} - {"modalities", "problem_type"}
        kwargs = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in config_fields}
        if self.problem_type:
            kwargs["problem_type"] = self.problem_type
        return kwargs


@dataclass
class DataArguments:
    """Where the data is and which column feeds which modality."""

    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset name."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's config."})
    train_file: str | None = field(default=None, metadata={"help": "csv / jsonl / parquet with file paths."})
    validation_file: str | None = field(default=None, metadata={"help": "csv / jsonl / parquet."})
    test_file: str | None = field(default=None, metadata={"help": "csv / jsonl / parquet."})
    dataset_dir: str | None = field(default=None, metadata={"help": "A `save_to_disk` folder."})
    columns: dict | str | None = field(
        default=None, metadata={"help": "Modality -> column (JSON on the command line); default: same names."}
    )
    label_column: str = field(default="label", metadata={"help": "Column holding the labels."})
    class_names: list[str] | None = field(
        default=None,
        metadata={"help": "The declared class names in id order (TrainingArguments.label_names is the batch key; a list; flags: `--class_names dog cat` or a JSON "
                  "list): any other label value is an error naming its row. Without it, rare classes and "
                  "near-duplicate names (likely typos) are logged as a warning."},
    )  # fmt: skip
    train_split: str = field(default="train", metadata={"help": "Split name of the training data."})
    validation_split: str = field(
        default="validation", metadata={"help": "Split name of the validation data."}
    )
    test_split: str = field(default="test", metadata={"help": "Split name of the test data."})
    validation_split_percentage: float = field(
        default=0.1,
        metadata={"help": "Share of train carved out for validation when there is no validation split."},
    )
    max_audio_seconds: float | None = field(default=None, metadata={"help": "Truncate audio to this length."})
    max_text_length: int | None = field(default=None, metadata={"help": "Truncate text to this many tokens."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only this many training rows."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only this many eval/test rows."}
    )
    skip_bad_samples: bool = field(
        default=False,
        metadata={"help": "Drop unreadable samples from batches (logged and counted) instead of failing."},
    )
    metric: str | None = field(
        default=None,
        metadata={"help": "An `evaluate` metric name or path; default: the shipped fusion metric."},
    )

    def __post_init__(self) -> None:
        self.columns = _json_or_value(self.columns)
        if isinstance(self.class_names, str):
            self.class_names = [self.class_names]
        if (
            self.class_names is not None
            and len(self.class_names) == 1
            and self.class_names[0].startswith("[")
        ):
            self.class_names = _json_or_value(self.class_names[0])  # a JSON list given as one flag value
        if self.class_names is not None:
            if not isinstance(self.class_names, list) or not all(
                isinstance(n, str) for n in self.class_names
            ):
                raise ValueError(f"`class_names` must be a list of class names, got {self.class_names!r}")
            duplicates = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
            if duplicates:
                raise ValueError(f"`class_names` names {duplicates} more than once")
        sources = [self.dataset_name, self.train_file, self.dataset_dir]
        if not any(sources):
            raise ValueError("give a dataset: `dataset_name`, `train_file` or `dataset_dir`")

    def check_files(self) -> None:
        """Raise ``FileNotFoundError`` naming the argument for a local data file or folder that does not exist
        (URLs and glob patterns are left to ``datasets``)."""
        for key in ("train_file", "validation_file", "test_file", "dataset_dir"):
            path = getattr(self, key)
            local = isinstance(path, str) and "://" not in path and not any(c in path for c in "*?[")
            if local and not os.path.exists(path):
                raise FileNotFoundError(f"`{key}` '{path}' not found (working directory: {os.getcwd()})")


@dataclass
class FusionTrainingArguments(TrainingArguments):
    """``TrainingArguments`` with defaults that suit raw multimodal columns."""

    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the collator needs the raw image/audio/text columns."},
    )
    encoder_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of every encoder (a modality spec's `learning_rate` wins); the new "
                  "layers use `learning_rate`."},
    )  # fmt: skip
    layerwise_lr_decay: float | None = field(
        default=None,
        metadata={"help": "Each encoder block below the top gets decay x the rate of the one above; embeddings "
                  "lowest (e.g. 0.8)."},
    )  # fmt: skip
    unfreeze_schedule: dict | str | None = field(
        default=None,
        metadata={"help": "'gradual' (one more block per epoch from the top, per modality) or "
                  "{epoch or step: {modality: trainable_layers}} (JSON on the command line)."},
    )  # fmt: skip
    unfreeze_unit: str = field(
        default="epoch", metadata={"help": "Keys of an explicit `unfreeze_schedule`: 'epoch' or 'step'."}
    )
    gradual_unfreeze_limit: dict | str | None = field(
        default=None,
        metadata={"help": "'gradual' stops at this many trainable blocks: a number or {modality: number} "
                  "(default: all blocks)."},
    )  # fmt: skip
    l2sp_weight: float = field(
        default=0.0,
        metadata={"help": "L2-SP: weight of the penalty pulling trainable encoder weights toward their pretrained "
                  "values (against forgetting)."},
    )  # fmt: skip
    aux_loss_schedule: str = field(
        default="constant",
        metadata={
            "help": "Weight of the auxiliary losses over training: 'constant' or 'linear_decay' (to 0)."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Allow a non-empty `output_dir`: the earlier run's checkpoints and results are removed "
                  "first (transformers 5 removed its own flag of this name). Without it such a folder is refused "
                  "unless `resume_from_checkpoint` is set."},
    )  # fmt: skip
    cache_embeddings: str = field(
        default="auto",
        metadata={"help": "Precompute frozen encoders' pooled embeddings once: 'auto' (when it applies), 'true', "
                  "'false'."},
    )  # fmt: skip
    cache_max_gb: float | None = field(
        default=None,
        metadata={"help": "Largest frozen-prefix hidden-state cache (GB, estimated before the cache pass); above it "
                  "the modality trains live. None: no limit."},
    )  # fmt: skip
    evaluation_report: bool = field(
        default=True,
        metadata={"help": "After training, write what `multimodal-fusion evaluate` writes (metrics.json with per-class "
                  "F1, confusion matrix, modality ablation, plots) for the validation and test splits to "
                  "`output_dir/evaluation/{split}/` (one more prediction pass per modality for the ablation)."},
    )  # fmt: skip
    prefix_cache_dtype: str = field(
        default="float32",
        metadata={"help": "Storage of cached hidden states: 'float32' (exact) or 'float16' (half the disk)."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("unfreeze_schedule", "gradual_unfreeze_limit"):
            setattr(self, name, _json_or_value(getattr(self, name)))
        if self.unfreeze_unit not in ("epoch", "step"):
            raise ValueError(f"`unfreeze_unit` must be 'epoch' or 'step', got {self.unfreeze_unit!r}")
        if self.aux_loss_schedule not in ("constant", "linear_decay"):
            raise ValueError(
                f"`aux_loss_schedule` must be 'constant' or 'linear_decay', got {self.aux_loss_schedule!r}"
            )
        if str(self.cache_embeddings).lower() not in ("auto", "true", "false"):
            raise ValueError(f"`cache_embeddings` must be auto, true or false, got {self.cache_embeddings!r}")
        self.cache_embeddings = str(self.cache_embeddings).lower()
        if self.prefix_cache_dtype not in ("float32", "float16"):
            raise ValueError(
                f"`prefix_cache_dtype` must be float32 or float16, got {self.prefix_cache_dtype!r}"
            )
        if self.layerwise_lr_decay is not None and not 0 < self.layerwise_lr_decay <= 1:
            raise ValueError(f"`layerwise_lr_decay` must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.l2sp_weight < 0:
            raise ValueError(f"`l2sp_weight` must be >= 0, got {self.l2sp_weight}")
