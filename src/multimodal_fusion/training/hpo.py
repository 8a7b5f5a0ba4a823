"""Hyperparameter search from a training config: ``multimodal-fusion hpo CONFIG [--flag value ...]``.

The config is a ``training/run.py`` config with an ``hpo:`` section::

    hpo:
      backend: optuna            # the one supported backend (pip install 'multimodal-fusion[hpo]')
      n_trials: 20
      metric: eval_accuracy      # default eval_loss
      direction: maximize        # default: minimize for *loss, else maximize
      space:
        learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
        per_device_train_batch_size: [16, 32]      # a list = categorical
        fusion: {type: categorical, choices: [concat, gated, attention]}
        dropout: {type: float, low: 0.0, high: 0.3}

Space keys are ``TrainingArguments`` fields (set per trial by ``Trainer``) or the fusion head's ``ModelArguments``
(``HEAD_FIELDS``; each trial builds its model with them). The search runs through
``Trainer.hyperparameter_search`` with optuna (TPE sampler seeded with ``seed``). Frozen encoders are encoded once
into the embedding cache before the first trial; every trial then trains from the cached vectors, so no encoder
runs during the search. Writes ``{output_dir}/hpo/trials.csv`` (one row per trial: number, value, params, state)
and ``{output_dir}/hpo/best_config.yaml`` (the config with the best values, ready for ``multimodal-fusion train``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..data.data_collator import FusionDataCollator
from .embedding_cache_policy import apply_embedding_cache
from .launch import load_config, training_argv
from .metrics import build_compute_metrics
from .run_fusion import build_model, build_processor, has_missing_values, load_data, parse_arguments
from .trainer import FusionTrainer

logger = logging.getLogger(__name__)

HEAD_FIELDS = (
    "fusion", "projection_dim", "fusion_hidden_size", "fusion_layers", "fusion_heads", "fusion_rank",
    "tensor_fusion_dim", "dropout", "modality_dropout", "aux_loss_weight",
)  # fmt: skip
"""Model settings a search may vary: the new layers only, so the encoders (and their cached vectors) stay."""

SUGGEST = {"float": "suggest_float", "int": "suggest_int", "categorical": "suggest_categorical"}


@dataclass
class HPOResult:
    """What [`run_hpo`] returns: the best trial (``transformers.trainer_utils.BestRun``) and the written files."""

    best_run: Any
    trials_file: Path
    best_config_file: Path
    n_trials: int

    def summary(self) -> dict[str, Any]:
        return {
            "trials": self.n_trials,
            "best trial": self.best_run.run_id,
            "best objective": float(self.best_run.objective),
            **{f"best {k}": v for k, v in self.best_run.hyperparameters.items()},
            "trials table": str(self.trials_file),
            "best config": str(self.best_config_file),
        }


def parse_space(space: Mapping[str, Any], allowed: set[str]) -> Callable[[Any], dict[str, Any]]:
    """The ``hp_space(trial)`` function of a config's ``space`` (see the module docstring).

    Raises ``ValueError`` naming the key for an unknown field, type or a malformed range."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("hpo.space must map at least one hyperparameter to its range")
    suggestions: dict[str, tuple[str, dict[str, Any]]] = {}
    for key, search_range in space.items():
        if key not in allowed:
            raise ValueError(
                f"hpo.space.{key}: not a training argument or fusion-head setting ({', '.join(HEAD_FIELDS)})"
            )
        if isinstance(search_range, (list, tuple)):
            search_range = {"type": "categorical", "choices": list(search_range)}
        kind = search_range.get("type") if isinstance(search_range, Mapping) else None
        if kind not in SUGGEST:
            raise ValueError(
                f"hpo.space.{key}: `type` must be one of {sorted(SUGGEST)}, got {search_range!r}"
            )
        kwargs = {k: v for k, v in search_range.items() if k != "type"}
        needed = ("choices",) if kind == "categorical" else ("low", "high")
        if any(k not in kwargs for k in needed):
            raise ValueError(f"hpo.space.{key}: a {kind} range needs {needed}, got {search_range!r}")
        suggestions[key] = (SUGGEST[kind], kwargs)

    def hp_space(trial: Any) -> dict[str, Any]:
        """Suggest every value (all land in ``trial.params``, which ``model_init`` reads); return the training
        arguments, which ``Trainer`` sets."""
        values = {key: getattr(trial, method)(key, **kwargs) for key, (method, kwargs) in suggestions.items()}
        return {key: value for key, value in values.items() if key not in HEAD_FIELDS}

    return hp_space


def _settings(hpo: Mapping[str, Any]) -> tuple[int, str, str]:
    backend = hpo.get("backend", "optuna")
    if backend != "optuna":
        raise ValueError(f"hpo.backend: only 'optuna' is supported, got {backend!r}")
    n_trials = hpo.get("n_trials", 10)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"hpo.n_trials must be a positive integer, got {n_trials!r}")
    metric = hpo.get("metric", "eval_loss")
    direction = hpo.get("direction") or ("minimize" if metric.endswith("loss") else "maximize")
    return n_trials, metric, direction


def run_hpo(argv: Sequence[str]) -> HPOResult:
    """Run the search described by ``argv`` = ``[CONFIG, --flag value ...]`` (see the module docstring)."""
    import optuna

    args, hpo = training_argv(argv)
    if not hpo:
        raise ValueError(f"{argv[0]}: no `hpo:` section; see `multimodal-fusion hpo --help`")
    n_trials, metric, direction = _settings(hpo)
    model_args, data_args, training_args = parse_arguments(args)
    allowed = {f.name for f in dataclasses.fields(training_args)} | set(HEAD_FIELDS)
    hp_space = parse_space(hpo.get("space"), allowed)
    processor = build_processor(model_args, data_args)
    loaded = load_data(data_args, processor, training_args)
    base = build_model(model_args, loaded)
    splits, cached = apply_embedding_cache(
        loaded.dataset,
        base,
        processor,
        loaded.columns,
        training_args,
        skip_bad_samples=data_args.skip_bad_samples,
    )
    logger.info(f"hpo: {n_trials} trials; cached modalities {cached} are encoded once for all of them")

    def model_init(trial: Any = None) -> Any:
        params = dict(getattr(trial, "params", None) or {})
        overrides = {k: v for k, v in params.items() if k in HEAD_FIELDS}
        return (
            build_model(dataclasses.replace(model_args, **overrides), loaded)
            if overrides
            else build_model(model_args, loaded)
        )

    problem_type = base.config.problem_type or loaded.problem_type or "single_label_classification"
    trainer = FusionTrainer(
        args=training_args,
        model_init=model_init,
        train_dataset=splits[data_args.train_split],
        eval_dataset=splits.get(data_args.validation_split),
        data_collator=FusionDataCollator(processor, loaded.columns, label_column=loaded.label_column,
                                         skip_bad_samples=data_args.skip_bad_samples),
        processing_class=processor,
        compute_metrics=build_compute_metrics(problem_type, base.config.id2label, data_args.metric),
        expect_missing_modalities=has_missing_values(loaded),
    )  # fmt: skip
    del base
    storage, study_name = optuna.storages.InMemoryStorage(), "multimodal-fusion-hpo"
    best = trainer.hyperparameter_search(
        hp_space=hp_space, compute_objective=lambda metrics: metrics[metric], n_trials=n_trials,
        direction=direction, backend="optuna", storage=storage, study_name=study_name,
        sampler=optuna.samplers.TPESampler(seed=training_args.seed),
    )  # fmt: skip
    study = optuna.load_study(study_name=study_name, storage=storage)
    return _write_results(argv, best, study, Path(training_args.output_dir) / "hpo", len(study.trials))


def _write_results(argv: Sequence[str], best: Any, study: Any, out_dir: Path, n_trials: int) -> HPOResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    trials_file = out_dir / "trials.csv"
    study.trials_dataframe(attrs=("number", "value", "params", "state", "duration")).to_csv(
        trials_file, index=False
    )
    config, flags = argv[0], list(argv[1:])
    values = load_config(config)
    values.pop("hpo", None)
    for key, value in zip(flags[::2], flags[1::2], strict=False):  # command-line overrides of the config
        values[key.lstrip("-")] = yaml.safe_load(value)
    values.update(best.hyperparameters)
    best_config_file = out_dir / "best_config.yaml"
    header = f"# best of {n_trials} trials (trial {best.run_id}, objective {best.objective}); from {config}\n"
    best_config_file.write_text(header + yaml.safe_dump(values, sort_keys=False))
    logger.info(f"hpo: best trial {best.run_id} ({best.objective}) with {best.hyperparameters}")
    return HPOResult(best, trials_file, best_config_file, n_trials)
