"""``multimodal-fusion predict`` and ``evaluate``: load a trained folder and a dataset, run [`predict_dataset`]
(the scoring engine), write the predictions file or the evaluation report.

``--columns`` and ``--label-column`` default to what the training run saved in the folder
(``training.run_outputs.load_data_settings``), else to the modalities' own names and ``label``; ``predict`` adds
the true label and a ``correct`` column when the data has the label column."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.data_loading import load_fusion_dataset
from ..inference.prediction import PredictionOutput, predict_dataset, scores_from_logits
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor
from ..training.run_outputs import load_data_settings

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = (".csv", ".jsonl", ".parquet")


def load_trained(model_dir: str, device: str | None = None) -> tuple[FusionModel, FusionProcessor]:
    """The saved model (in eval mode, on ``device``; default cuda when available) and its processor."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = FusionModel.from_pretrained(model_dir).to(device).eval()
    except OSError as error:
        if os.path.isdir(model_dir):
            raise
        raise OSError(
            f"model '{model_dir}' is no local folder, and as a Hub id it did not load: {error}"
        ) from error
    return model, FusionProcessor.from_pretrained(model_dir)


def load_rows(
    data: str,
    processor: FusionProcessor,
    model: FusionModel,
    columns: dict[str, str] | None,
    split: str | None,
    label_column: str | None = None,
    label_optional: bool = False,
    partial_columns: bool = False,
    skip_bad_samples: bool = False,
) -> tuple[Any, dict[str, str]]:
    """One split of ``data`` with media paths resolved, and the modality -> column mapping used.

    Without ``columns`` every modality whose name is a column is read. With ``label_column`` the labels are
    mapped to the model's class ids through its ``label2id`` (an unknown label is an error naming it); a label
    column the data does not have is an error, or with ``label_optional`` left out. With ``partial_columns`` (a
    mapping saved by the training run) a mapped column the data lacks leaves that modality missing. A media file
    that does not exist is a ``FileNotFoundError`` naming row, column and path before anything runs, unless
    ``skip_bad_samples`` (then the row is reported as bad where it is predicted)."""
    probe = load_fusion_dataset(data, {}, label_column=None, length_column=None, split=split).dataset
    if split is None:
        split = next(iter(probe)) if len(probe) == 1 else "test"
    if split not in probe:
        raise SystemExit(f"{data}: no split '{split}'; choose one of {list(probe)} with --split")
    available = probe[split].column_names
    if columns is None:
        columns = {name: name for name in processor.modality_names if name in available}
    absent = {name: column for name, column in columns.items() if column not in available}
    if absent and partial_columns:
        columns = {name: column for name, column in columns.items() if name not in absent}
    elif absent:
        raise SystemExit(f"{data}: columns {absent} (modality: column) not found; the data has {available}")
    if not columns:
        raise SystemExit(
            f"{data}: no column named after a modality {processor.modality_names}; map them with --columns"
        )
    label_names = None
    if label_optional and label_column not in available:
        label_column = None
    if label_column is not None:
        if label_column not in available:
            raise SystemExit(f"{data}: no label column '{label_column}'; the data has {available}")
        id2label = model.config.id2label
        label_names = [id2label[i] for i in range(len(id2label))]
        logger.info(
            f"labels of '{label_column}' mapped to class ids through the model's label2id {label_names}"
        )
    loaded = load_fusion_dataset(
        data,
        columns,
        kinds=processor,
        label_column=label_column,
        label_names=label_names,
        length_column=None,
        split=split,
        skip_bad_samples=skip_bad_samples,
    )
    # a single data file is one split that `datasets` names 'train' whatever it holds: name the file only
    where = f"split '{split}'" if not os.path.isfile(data) else "data file"
    logger.info(f"{data} ({where}): {len(loaded.dataset[split])} rows; modality -> column {columns}")
    return loaded.dataset[split], columns


def predictions_table(output: PredictionOutput, config: Any, num_rows: int, row_names: list[Any]) -> Any:
    """One row per input row: ``row``, ``label``, ``score_{class}`` per class, ``present_{modality}``, ``error``
    (bad rows keep their place with an empty prediction)."""
    import pandas as pd

    table = pd.DataFrame({"row": row_names})
    scores = scores_from_logits(output.logits[None], config.problem_type)
    index = np.asarray(output.rows, dtype=np.int64)
    if config.problem_type == "regression":
        table["prediction"] = np.nan
        table.loc[index, "prediction"] = scores[:, 0]
    else:
        names = [config.id2label[i] for i in range(config.num_labels)]
        table["label"] = None
        if config.problem_type == "multi_label_classification":
            chosen = [";".join(n for n, s in zip(names, row, strict=True) if s > 0.5) for row in scores]
        else:
            chosen = [names[i] for i in scores.argmax(-1)]
        table.loc[index, "label"] = pd.Series(chosen, index=index, dtype=object)
        for i, name in enumerate(names):
            table[f"score_{name}"] = np.nan
            table.loc[index, f"score_{name}"] = scores[:, i]
    for i, name in enumerate(output.modalities):
        table[f"present_{name}"] = pd.Series([None] * num_rows, dtype=object)
        table.loc[index, f"present_{name}"] = pd.Series(
            output.present[:, i].tolist(), index=index, dtype=object
        )
    if output.labels is not None:
        _add_true_labels(table, output, config, index)
    table["error"] = ""
    by_row = {name: position for position, name in enumerate(row_names)}
    for error in output.errors:
        where = f" '{error['path']}'" if error.get("path") else ""
        table.loc[by_row[error["row"]], "error"] = (
            f"{error['modality']} ({error['column']}){where}: {error['reason']}"
        )
    return table


def _label_text(value: Any, config: Any) -> Any:
    """A label as the table shows it: the class name, the ``;``-joined names of a multi-hot row, or the value."""
    if config.problem_type == "regression":
        return float(value)
    if config.problem_type == "multi_label_classification":
        names = [config.id2label[i] for i in range(config.num_labels)]
        return ";".join(n for n, v in zip(names, np.asarray(value).tolist(), strict=True) if v > 0.5)
    return config.id2label[int(value)]


def _add_true_labels(table: Any, output: PredictionOutput, config: Any, index: np.ndarray) -> None:
    """``true_label`` (and, for classification, ``correct``: the predicted ``label`` equals it) of the predicted
    rows; bad rows keep empty cells."""
    import pandas as pd

    truth = [_label_text(value, config) for value in output.labels]
    table["true_label"] = pd.Series([None] * len(table), dtype=object)
    table.loc[index, "true_label"] = pd.Series(truth, index=index, dtype=object)
    if config.problem_type != "regression":
        table["correct"] = pd.Series([None] * len(table), dtype=object)
        correct = [bool(p == t) for p, t in zip(table.loc[index, "label"], truth, strict=True)]
        table.loc[index, "correct"] = pd.Series(correct, index=index, dtype=object)


def trained_defaults(args: argparse.Namespace, fallback_label: str | None) -> tuple[dict | None, str | None]:
    """``(columns, label_column)``: the command line's, else what the training run saved in ``args.model_dir``
    ([`load_data_settings`]), else ``None`` (same names) and ``fallback_label``."""
    saved = load_data_settings(args.model_dir)
    columns = json.loads(args.columns) if args.columns else saved.get("columns")
    label_column = getattr(args, "label_column", None) or saved.get("label_column") or fallback_label
    if not args.columns and columns:
        logger.info(f"modality -> column {columns} and label column {label_column!r} from {args.model_dir}")
    return columns, label_column


def write_table(table: Any, path: Path) -> None:
    """csv / jsonl / parquet by the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        table.to_json(path, orient="records", lines=True)
    else:
        table.to_parquet(path, index=False)


def _check_new(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it")


def predict_command(args: argparse.Namespace) -> dict[str, Any]:
    """``multimodal-fusion predict``; returns the summary counts."""
    output_path = Path(args.output)
    if output_path.suffix not in OUTPUT_FORMATS:
        raise SystemExit(f"--output must end in one of {OUTPUT_FORMATS}, got '{output_path.name}'")
    _check_new(output_path, args.overwrite)
    model, processor = load_trained(args.model_dir, args.device)
    columns, label_column = trained_defaults(args, fallback_label="label")
    rows, columns = load_rows(args.data, processor, model, columns, args.split, label_column,
                              label_optional=True, partial_columns=not args.columns,
                              skip_bad_samples=args.skip_bad_samples)  # fmt: skip
    label_column = label_column if label_column in rows.column_names else None
    output = predict_dataset(
        model, processor, rows, columns, label_column=label_column, batch_size=args.batch_size,
        skip_bad_samples=args.skip_bad_samples, use_cache=not args.no_cache,
    )  # fmt: skip
    row_names = rows["row_index"] if "row_index" in rows.column_names else list(range(len(rows)))
    write_table(predictions_table(output, model.config, len(rows), row_names), output_path)
    counts = {"rows": len(rows), "predicted": len(output.rows), "bad rows": len(output.errors)}
    counts["cached modalities"] = ", ".join(output.cached_modalities) or "none"
    counts["output"] = str(output_path)
    return counts


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    """``multimodal-fusion evaluate``; returns the summary rows."""
    from ..inference.evaluation import evaluation_report

    out_dir = Path(args.output_dir or Path(args.model_dir) / "evaluation")
    _check_new(out_dir / "metrics.json", args.overwrite)
    model, processor = load_trained(args.model_dir, args.device)
    columns, label_column = trained_defaults(args, fallback_label="label")
    rows, columns = load_rows(args.data, processor, model, columns, args.split, label_column,
                              partial_columns=not args.columns, skip_bad_samples=args.skip_bad_samples)  # fmt: skip
    output = predict_dataset(
        model, processor, rows, columns, label_column=label_column, batch_size=args.batch_size,
        skip_bad_samples=args.skip_bad_samples, ablations=list(columns), use_cache=not args.no_cache,
    )  # fmt: skip
    report = evaluation_report(output, model.config, out_dir, plots=not args.no_plots)
    rows_out: dict[str, Any] = {
        k: v for k, v in report["metrics"].items() if isinstance(v, (int, float)) and not k.startswith("f1_")
    }
    for setting, metrics in report["ablation"].items():
        if setting != "all modalities":
            key = "accuracy" if "accuracy" in metrics else next(iter(metrics))
            rows_out[f"{key} {setting}"] = metrics[key]
    rows_out["report"] = str(out_dir)
    return rows_out
