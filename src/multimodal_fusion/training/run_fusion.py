"""The main job: fuse pretrained encoders and train them end to end on a dataset, through ``FusionTrainer``.

``accelerate launch training/run.py CONFIG.yaml [--flag value ...]`` (flags override the file), or
``python training/run.py --encoders '{"image": ...}' --train_file train.csv --output_dir out``.
Writes to ``output_dir``: safetensors weights + config + model code, the processor, ``all_results.json``,
``trainer_state.json`` and a model card; pushes exactly that folder with ``--push_to_hub``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import transformers
import yaml
from transformers import HfArgumentParser, set_seed

from ..cache.prefix_cache import PrefixCacheCollator
from ..configs import available_configs, config_path
from ..data.column_mapping import modality_columns
from ..data.data_collator import FusionDataCollator
from ..data.data_loading import LoadedDataset, load_fusion_dataset
from ..hub.upload import push_folder, write_model_card
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor
from ..model.spec_parts import AUTO
from .arguments import CONFIG_FILE_TYPES, DataArguments, FusionTrainingArguments, ModelArguments
from .config_types import check_config_types, did_you_mean
from .embedding_cache_policy import apply_embedding_cache
from .evaluation_reports import REPORT_DIR, skip_mark, skipped_since, split_report
from .label_mapping import align_labels_to_checkpoint, extend_classification_heads
from .metrics import build_compute_metrics
from .prefix_policy import PrefixBoundaryCallback, apply_prefix_cache
from .run_outputs import (
    check_output_room,
    last_complete_checkpoint,
    merge_metrics,
    refuse_output_dir_reuse,
    save_data_settings,
)
from .trainer import FusionTrainer

logger = logging.getLogger(__name__)


def parse_arguments(
    argv: Sequence[str] | None = None,
) -> tuple[ModelArguments, DataArguments, FusionTrainingArguments]:
    """Parse ``CONFIG.yaml|json [--flag value ...]`` or flags alone into the three argument dataclasses.
    ``CONFIG`` is a file, or the name of a packaged config (``demo.yaml``, ``hub-base.yaml``; see ``configs``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, FusionTrainingArguments))
    parser.error = _usage_error  # one line naming the flag, not argparse's page-long usage and exit
    if argv and argv[0].endswith((".yaml", ".yml", ".json")):
        if not Path(argv[0]).exists() and argv[0] in available_configs():
            argv[0] = str(config_path(argv[0]))  # a packaged config by name: `run.py demo.yaml`
        if not Path(argv[0]).is_file():
            raise FileNotFoundError(f"config file '{argv[0]}' not found")
        text = Path(argv[0]).read_text()
        values = (yaml.safe_load(text) if argv[0].endswith((".yaml", ".yml")) else json.loads(text)) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{argv[0]}: expected a mapping of argument names to values, got {values!r}")
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown keys {unknown}{did_you_mean(unknown, known)}")
        check_config_types(values, parser.dataclass_types, argv[0], CONFIG_FILE_TYPES)
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the file satisfies a required flag
            if action.dest in values:
                action.required = False
        argv = argv[1:]
    _, remaining = parser.parse_known_args(args=argv)  # before the dataclasses check their values
    unknown_flags = [a for a in remaining if a.startswith("-")]
    if remaining:
        flags = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
        raise ValueError(
            f"unknown arguments {remaining}{did_you_mean([a.split('=')[0] for a in unknown_flags], flags)}"
        )
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    return model_args, data_args, training_args


def _usage_error(message: str) -> None:
    """``ArgumentParser.error`` for the run's flags: a ``ValueError`` carrying argparse's message."""
    raise ValueError(f"command line: {message}")


def _data_source(data_args: DataArguments) -> Any:
    if data_args.dataset_dir:
        return data_args.dataset_dir
    if data_args.dataset_name:
        return data_args.dataset_name
    files = {data_args.train_split: data_args.train_file}
    if data_args.validation_file:
        files[data_args.validation_split] = data_args.validation_file
    if data_args.test_file:
        files[data_args.test_split] = data_args.test_file
    return files


def build_processor(model_args: ModelArguments, data_args: DataArguments) -> FusionProcessor:
    """The processor of the encoders (or of the fusion checkpoint), with the data arguments' length limits."""
    if model_args.model_name_or_path:
        processor = FusionProcessor.from_pretrained(model_args.model_name_or_path)
        if data_args.max_audio_seconds is not None:
            processor.max_audio_seconds = data_args.max_audio_seconds
    else:
        processor = FusionProcessor.from_encoders(
            model_args.encoders, max_audio_seconds=data_args.max_audio_seconds
        )
    if data_args.max_text_length is not None:
        for spec in processor.modalities.values():
            if spec.max_length != AUTO:  # modalities whose processor truncates (text)
                current = spec.max_length
                spec.max_length = (
                    min(current, data_args.max_text_length) if current else data_args.max_text_length
                )
    return processor


def load_data(
    data_args: DataArguments,
    processor: FusionProcessor,
    training_args: FusionTrainingArguments,
    num_labels: int | None = None,
) -> LoadedDataset:
    """Load the splits, carve a validation split from train when none exists, apply sample limits.
    ``num_labels`` (the config's) makes a class id beyond it an error instead of a larger head."""
    columns = modality_columns(data_args.columns, processor.modality_names)
    load_kwargs = {"name": data_args.dataset_config_name} if data_args.dataset_config_name else {}
    loaded = load_fusion_dataset(
        _data_source(data_args),
        columns,
        kinds=processor,
        label_column=data_args.label_column,
        label_names=data_args.class_names,
        num_labels=num_labels,
        skip_bad_samples=data_args.skip_bad_samples,
        **load_kwargs,
    )
    splits = loaded.dataset
    if data_args.train_split not in splits:
        raise ValueError(f"no '{data_args.train_split}' split; the dataset has {list(splits)}")
    if data_args.validation_split not in splits and data_args.validation_split_percentage > 0:
        carved = splits[data_args.train_split].train_test_split(
            test_size=data_args.validation_split_percentage, seed=training_args.seed
        )
        splits[data_args.train_split], splits[data_args.validation_split] = carved["train"], carved["test"]
    limits = {data_args.train_split: data_args.max_train_samples}
    limits.update({s: data_args.max_eval_samples for s in (data_args.validation_split, data_args.test_split)})
    for split, limit in limits.items():
        if limit is not None and split in splits:
            splits[split] = splits[split].select(range(min(limit, len(splits[split]))))
    loaded.dataset = splits
    return loaded


def has_missing_values(loaded: LoadedDataset) -> bool:
    """Whether any modality column holds nulls (missing modalities), read from Arrow without decoding."""
    for part in loaded.dataset.values():
        for column in loaded.columns.values():
            if part.select_columns([column]).flatten_indices().data.column(0).null_count > 0:
                return True
    return False


def build_model(model_args: ModelArguments, loaded: LoadedDataset) -> FusionModel:
    """A new fusion of the given encoders, or a saved fusion model to continue training."""
    if model_args.model_name_or_path:
        kwargs = (
            {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
        )
        model = FusionModel.from_pretrained(model_args.model_name_or_path, **kwargs)
        if model_args.trainable_layers is not None:
            values = model_args.trainable_layers
            for name in model.config.modalities:
                if not isinstance(values, dict) or name in values:
                    model.set_trainable_layers(name, values[name] if isinstance(values, dict) else values)
        return model
    config_kwargs = model_args.config_kwargs()
    if loaded.id2label is not None:
        config_kwargs.update(id2label=loaded.id2label, label2id=loaded.label2id)
    elif model_args.num_labels or loaded.num_labels:
        config_kwargs["num_labels"] = model_args.num_labels or loaded.num_labels
    if "problem_type" not in config_kwargs and loaded.problem_type:
        config_kwargs["problem_type"] = loaded.problem_type
    encoder_kwargs = (
        {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    )
    return FusionModel.from_encoders(
        model_args.encoders,
        trainable_layers=model_args.trainable_layers,
        encoder_kwargs=encoder_kwargs,
        **config_kwargs,
    )


class RunOutput(NamedTuple):
    """What [`run`] returns: the trainer (with the trained model), every metric, and the dataset splits used."""

    trainer: FusionTrainer
    metrics: dict[str, Any]
    splits: Any


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse the arguments, then [`run`]; returns every metric written to ``all_results.json``."""
    return run(*parse_arguments(argv)).metrics


def run(
    model_args: ModelArguments, data_args: DataArguments, training_args: FusionTrainingArguments
) -> RunOutput:
    """Train, evaluate (validation and test), save and optionally push."""
    setup_logging(training_args)
    set_seed(training_args.seed)

    push_to_hub, training_args.push_to_hub = (
        training_args.push_to_hub,
        False,
    )  # we push the final folder ourselves
    refuse_output_dir_reuse(training_args)
    data_args.check_files()
    processor = build_processor(model_args, data_args)
    with training_args.main_process_first(desc="loading the dataset"):
        new_head = model_args.num_labels if not model_args.model_name_or_path else None
        loaded = load_data(data_args, processor, training_args, num_labels=new_head)
    model = build_model(model_args, loaded)
    if model_args.model_name_or_path:  # the data's classes by name, as the checkpoint numbers them
        extend_classification_heads(
            model, align_labels_to_checkpoint(loaded, model, model_args.extend_labels)
        )
    splits = loaded.dataset
    check_output_room(training_args, model)
    # Embedding cache: frozen encoders run once over the data, then train from `{name}_embeds`.
    splits, _ = apply_embedding_cache(
        splits, model, processor, loaded.columns, training_args, skip_bad_samples=data_args.skip_bad_samples
    )
    # Frozen-prefix cache: partly frozen encoders train their top blocks from cached hidden states.
    splits, prefix = apply_prefix_cache(
        splits, model, processor, loaded.columns, training_args, skip_bad_samples=data_args.skip_bad_samples,
        cache_splits=(data_args.train_split, data_args.validation_split),
    )  # fmt: skip
    problem_type = model.config.problem_type or loaded.problem_type or "single_label_classification"
    collator = FusionDataCollator(
        processor,
        loaded.columns,
        label_column=loaded.label_column,
        skip_bad_samples=data_args.skip_bad_samples,
        num_labels=model.config.num_labels,
        problem_type=problem_type,
    )
    eval_dataset = splits.get(data_args.validation_split)
    trainer = FusionTrainer(
        model,
        training_args,
        train_dataset=splits[data_args.train_split],
        eval_dataset=eval_dataset,
        data_collator=PrefixCacheCollator(collator, prefix.cache) if prefix else collator,
        processing_class=processor,
        compute_metrics=build_compute_metrics(problem_type, model.config.id2label, data_args.metric),
        expect_missing_modalities=has_missing_values(loaded),
    )
    if prefix is not None:
        trainer.add_callback(PrefixBoundaryCallback(prefix, trainer.unfreezer))
    results: dict[str, Any] = dict(fit(trainer, training_args))
    evaluated, passes = evaluate_splits(trainer, splits, data_args)
    results.update(evaluated)
    if collator.num_skipped:
        logger.warning(f"skipped {collator.num_skipped} unusable samples (see the log above for each)")
        results["skipped_samples"] = collator.num_skipped
    if training_args.evaluation_report:  # what `multimodal-fusion evaluate` writes, per evaluated split
        for split, (dataset, evaluation, skipped) in passes.items():
            report_dir = Path(training_args.output_dir) / REPORT_DIR / split
            split_report(trainer, dataset, evaluation, loaded.columns, report_dir, skipped)
    if trainer.is_world_process_zero():
        save_data_settings(training_args.output_dir, loaded.columns, loaded.label_column)
        merge_metrics(training_args.output_dir, results)
        publish(model, data_args, training_args, results, push_to_hub)
    return RunOutput(trainer, results, splits)


def fit(trainer: FusionTrainer, training_args: FusionTrainingArguments) -> dict[str, Any]:
    """Train (resuming from ``resume_from_checkpoint``; ``"last"`` = the newest complete checkpoint), save the
    model, the train metrics and the trainer state; returns the train metrics."""
    resume = training_args.resume_from_checkpoint
    if resume == "last":
        resume = last_complete_checkpoint(training_args.output_dir)
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    return train_result.metrics


def evaluate_splits(
    trainer: FusionTrainer, splits: datasets.DatasetDict, data_args: DataArguments
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any, list[dict[str, Any]]]]]:
    """Metrics on the validation split (``eval_*``) and the test split (``test_*``) where they exist; each set is
    logged and saved as ``{eval,test}_results.json``. Returns the metrics and, per split, ``(dataset, prediction
    pass (predictions, label_ids), samples the collator skipped in it)`` for [`split_report`]."""
    results: dict[str, Any] = {}
    passes = {}
    if trainer.eval_dataset is not None:
        mark = skip_mark(trainer.data_collator)
        metrics = trainer.evaluate(metric_key_prefix="eval")
        skipped = skipped_since(trainer.data_collator, mark)
        passes[data_args.validation_split] = (trainer.eval_dataset, trainer.last_evaluation, skipped)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results.update(metrics)
    if data_args.test_split in splits:
        mark = skip_mark(trainer.data_collator)
        prediction = trainer.predict(splits[data_args.test_split], metric_key_prefix="test")
        skipped = skipped_since(trainer.data_collator, mark)
        passes[data_args.test_split] = (splits[data_args.test_split], prediction, skipped)
        trainer.log_metrics("test", prediction.metrics)
        trainer.save_metrics("test", prediction.metrics)
        results.update(prediction.metrics)
    return results, passes


def setup_logging(training_args: FusionTrainingArguments) -> None:
    """Log to stdout at the process's level (``log_level`` / ``log_level_replica``), for this package,
    transformers and datasets alike."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = training_args.get_process_log_level()
    logger.setLevel(level)
    # the package's own events (unfreezing, caching, skipped samples, label mapping) show at INFO by default
    logging.getLogger("multimodal_fusion").setLevel(
        min(level, logging.INFO) if training_args.should_log else level
    )
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def publish(
    model: FusionModel,
    data_args: DataArguments,
    training_args: FusionTrainingArguments,
    results: dict[str, Any],
    push_to_hub: bool,
) -> None:
    """Write the model card into the output folder and, with ``push_to_hub``, upload that folder."""
    dataset_name = data_args.dataset_name or data_args.dataset_dir or data_args.train_file
    metrics = {k: v for k, v in results.items() if k.startswith(("eval_", "test_"))}
    training = {
        k: getattr(training_args, k)
        for k in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "seed")
    }
    write_model_card(
        training_args.output_dir, model.config, dataset=dataset_name, metrics=metrics, training=training
    )
    if push_to_hub:
        repo_id = training_args.hub_model_id or Path(training_args.output_dir).name
        push_folder(
            training_args.output_dir, repo_id, training_args.hub_private_repo, training_args.hub_token
        )


if __name__ == "__main__":
    main()
