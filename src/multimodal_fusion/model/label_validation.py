"""Label validation shared by the data layer (``load_fusion_dataset``, ``FusionDataCollator``) and the model's loss.

Model layer: imports only torch (``save_pretrained`` copies it next to the weights).

What a valid label is, per ``problem_type`` (transformers' names):

- ``single_label_classification``: an integer class id in ``0 .. num_labels - 1``, or ``-100`` (``IGNORE_INDEX``,
  as in transformers and ``torch.nn.CrossEntropyLoss``): the row is ignored by the loss. A fractional id
  (``2.5``) is refused, never truncated. A batch whose every label is ``-100`` has loss 0 (with a graph, so
  ``backward`` works and changes nothing), not NaN.
- ``multi_label_classification``: a multi-hot row of exactly ``num_labels`` values, each 0 or 1.
- ``regression``: finite numbers (one per row, or ``num_labels`` per row).

Errors name the row, the column (``labels`` or the dataset's label column), the value and what was expected.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

IGNORE_INDEX = -100
"""A single-label class id that marks a row the loss ignores (transformers' and PyTorch's convention)."""

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def _row_name(row: Any) -> str:
    return row if isinstance(row, str) else f"row {row}"


def _scalar_problem(value: Any, problem_type: str | None, num_labels: int | None) -> str | None:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, numbers.Real):
        return f"label of type {type(value).__name__} ({value!r:.50}); expected a class id or a number"
    if not math.isfinite(value):
        return f"label {value} is not finite; expected a finite number"
    if problem_type == "multi_label_classification":
        return f"label {value!r} is a single number; multi-label classification expects a multi-hot list of {num_labels}"
    if problem_type == "regression":
        if num_labels is not None and num_labels > 1:
            return f"label {value!r} is a single number; regression with num_labels={num_labels} expects {num_labels} values"
        return None
    integral = isinstance(value, numbers.Integral) or float(value).is_integer()
    if problem_type == "single_label_classification" and not integral:
        return f"class id {value!r} is fractional; expected an integer class id (it is never truncated)"
    if not integral:
        return None  # no problem type known: a float may be a regression target
    value = int(value)
    if value == IGNORE_INDEX:
        return None
    if value < 0 or (num_labels is not None and value >= num_labels):
        expected = f"0..{num_labels - 1} (num_labels={num_labels})" if num_labels else "a class id >= 0"
        return f"class id {value} is out of range; expected {expected}, or {IGNORE_INDEX} to ignore the row"
    return None


def _list_problem(values: list, problem_type: str | None, num_labels: int | None) -> str | None:
    if problem_type == "single_label_classification":
        return f"label {values!r:.60} is a list; single-label classification expects one class id"
    if num_labels is not None and len(values) != num_labels:
        return f"label list of width {len(values)}; expected {num_labels} values (num_labels)"
    for column, value in enumerate(values):
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, numbers.Real):
            return f"column {column} holds {value!r:.30} ({type(value).__name__}); expected numbers"
        if not math.isfinite(value):
            return f"column {column} holds {value}; expected finite numbers"
        if problem_type == "multi_label_classification" and value not in (0, 1):
            return f"column {column} holds {value!r}; multi-hot labels hold 0 or 1"
    return None


def label_problem(value: Any, problem_type: str | None = None, num_labels: int | None = None) -> str | None:
    """What is wrong with one label (a Python/numpy scalar or list, or ``None``), or ``None`` when it is valid.

    With ``problem_type`` / ``num_labels`` unknown (``None``) only what holds for every problem type is checked:
    present, numeric, finite, no negative class id other than ``-100``.
    """
    if hasattr(value, "tolist"):  # numpy / torch values
        value = value.tolist()
    if value is None:
        return "label is missing (None); every training sample needs a label"
    if isinstance(value, str):
        return f"label {value!r:.50} is a string; expected a class id (load_fusion_dataset encodes names)"
    if isinstance(value, (list, tuple)):
        return _list_problem(list(value), problem_type, num_labels)
    return _scalar_problem(value, problem_type, num_labels)


def _first(bad: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in bad.nonzero()[0].tolist())


def check_labels(labels: torch.Tensor, problem_type: str, num_labels: int, column: str = "labels") -> None:
    """Validate a batch of labels for the loss; raises ``ValueError`` naming the row, column and value.

    Args:
        labels: ``[batch]`` class ids (single-label) / targets (regression), or ``[batch, num_labels]``
            multi-hot rows (multi-label) / targets (regression).
        problem_type: one of ``PROBLEM_TYPES``.
        num_labels: the model's ``num_labels``.
        column: the name used in errors.
    """
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"`{column}` must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() == 0:
        raise ValueError(f"`{column}` needs a batch dimension, got a scalar {labels.item()}")
    where = f"`{column}`"
    if labels.is_floating_point() or labels.is_complex():
        bad = ~torch.isfinite(labels)
        if bool(bad.any()):
            index = _first(bad)
            raise ValueError(
                f"{where}: row {index[0]}{_column(index)} holds {labels[index].item()}; expected finite values"
            )
    if problem_type == "single_label_classification":
        if labels.dim() > 2 or (labels.dim() == 2 and labels.shape[1] != 1):
            raise ValueError(
                f"{where} of shape {tuple(labels.shape)}; single-label classification expects [batch] class ids"
            )
        if labels.is_floating_point():
            bad = labels != labels.round()
            if bool(bad.any()):
                index = _first(bad)
                raise ValueError(
                    f"{where}: row {index[0]} holds the fractional class id {labels[index].item()}; expected "
                    "integer class ids (they are never truncated)"
                )
        bad = (labels != IGNORE_INDEX) & ((labels < 0) | (labels >= num_labels))
        if bool(bad.any()):
            index = _first(bad)
            raise ValueError(
                f"{where}: row {index[0]} holds class id {int(labels[index].item())}, out of range; expected "
                f"0..{num_labels - 1} (num_labels={num_labels}) or {IGNORE_INDEX} to ignore the row"
            )
    elif problem_type == "multi_label_classification":
        if labels.dim() != 2 or labels.shape[1] != num_labels:
            raise ValueError(
                f"{where} of shape {tuple(labels.shape)}; multi-label classification expects [batch, "
                f"{num_labels}] multi-hot rows (num_labels={num_labels})"
            )
        bad = (labels != 0) & (labels != 1)
        if bool(bad.any()):
            index = _first(bad)
            raise ValueError(
                f"{where}: row {index[0]}, column {index[1]} holds {labels[index].item()}; multi-hot labels "
                "hold 0 or 1"
            )
    elif problem_type == "regression":
        width = 1 if labels.dim() == 1 else labels[0].numel()
        if width != num_labels:
            raise ValueError(
                f"{where} of shape {tuple(labels.shape)}; regression with num_labels={num_labels} expects "
                f"{num_labels} value(s) per row"
            )
    else:
        raise ValueError(f"`problem_type` must be one of {PROBLEM_TYPES}, got {problem_type!r}")


def _column(index: tuple[int, ...]) -> str:
    return f", column {index[1]}" if len(index) > 1 else ""
