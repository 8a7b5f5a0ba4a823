"""FusionDataCollator: raw dataset rows -> one model batch, inside the DataLoader (worker processes).

Decoding (files, resampling) happens here, on the fly and per batch, so a dataset of file paths never has to be
decoded up front and the work spreads over ``dataloader_num_workers``. The collator is picklable (workers
receive a copy); its skip counter is shared with the workers.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature

from ..model.bad_samples import BadSampleError, SkipCounter
from ..model.label_validation import PROBLEM_TYPES, label_problem
from ..model.processing_fusion import FusionProcessor
from .column_mapping import modality_columns

logger = logging.getLogger(__name__)

ROW_INDEX_COLUMN = "row_index"
"""Column holding each row's position in its source split (added by ``load_fusion_dataset``); errors and skip
logs name it, since shuffling hides a row's position."""


def labels_to_tensor(
    labels: Sequence[Any],
    rows: Sequence[Any] | None = None,
    *,
    problem_type: str | None = None,
    num_labels: int | None = None,
    column: str = "label",
) -> torch.Tensor:
    """Labels of one batch as the model's loss expects them: integers -> ``long`` ``[B]`` (single-label
    classification), floats -> ``float`` ``[B]`` (regression), multi-hot lists -> ``float`` ``[B, num_labels]``
    (multi-label). Each label is checked with [`label_validation.label_problem`] (``problem_type`` and
    ``num_labels`` make the check complete); ``rows`` name the samples in errors (``ValueError`` naming the row,
    the column and the value)."""
    rows = list(rows) if rows is not None else list(range(len(labels)))
    values = []
    for row, label in zip(rows, labels, strict=True):
        label = label.tolist() if hasattr(label, "tolist") else label
        problem = label_problem(label, problem_type, num_labels)
        if problem is not None:
            where = row if isinstance(row, str) else f"row {row}"
            raise ValueError(f"{where}: {problem} (column '{column}')")
        values.append(label)
    lists = [isinstance(v, (list, tuple)) for v in values]
    if any(lists):
        widths = {
            row: len(v) if is_list else "a single number"
            for row, v, is_list in zip(rows, values, lists, strict=True)
        }
        if not all(lists) or len(set(widths.values())) != 1:
            raise ValueError(
                f"column '{column}': multi-hot labels of one batch must all be lists of one width; widths by row: "
                f"{dict(list(widths.items())[:10])}"
            )
        return torch.tensor(values, dtype=torch.float32)
    if all(isinstance(v, (numbers.Integral, bool)) for v in values):
        return torch.tensor([int(v) for v in values], dtype=torch.long)
    if problem_type == "single_label_classification":  # whole floats such as 2.0 (checked above)
        return torch.tensor([int(v) for v in values], dtype=torch.long)
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


def _token_fields(name: str, sequences: Sequence[np.ndarray | None]) -> dict[str, torch.Tensor]:
    """Cached token sequences ``[T_i, D]``, right-padded: ``{name}_token_embeds`` ``[B, T, D]`` float32 and
    ``{name}_token_mask`` ``[B, T]`` (a missing row has no real token)."""
    present = [i for i, tokens in enumerate(sequences) if tokens is not None]
    width = max(len(sequences[i]) for i in present)
    embeds = torch.zeros(len(sequences), width, sequences[present[0]].shape[1], dtype=torch.float32)
    token_mask = torch.zeros(len(sequences), width, dtype=torch.bool)
    for i in present:
        embeds[i, : len(sequences[i])] = torch.from_numpy(sequences[i])
        token_mask[i, : len(sequences[i])] = True
    return {f"{name}_token_embeds": embeds, f"{name}_token_mask": token_mask}


def embeds_fields(name: str, vectors: Sequence[np.ndarray | None]) -> dict[str, torch.Tensor]:
    """``{name}_embeds`` ``[B, D]`` float32 (zeros where missing), or for cached token sequences (2-D values)
    ``{name}_token_embeds`` / ``{name}_token_mask``; when a row is missing, ``{name}_mask``; nothing when every
    row is missing (the modality is then absent from the batch)."""
    present = [i for i, vector in enumerate(vectors) if vector is not None]
    if not present:
        return {}
    if vectors[present[0]].ndim == 2:
        fields = _token_fields(name, vectors)
    else:
        embeds = torch.zeros(len(vectors), len(vectors[present[0]]), dtype=torch.float32)
        embeds[present] = torch.from_numpy(np.stack([vectors[i] for i in present]))
        fields = {f"{name}_embeds": embeds}
    if len(present) == len(vectors):
        return fields
    mask = torch.zeros(len(vectors), dtype=torch.bool)
    mask[present] = True
    return {**fields, f"{name}_mask": mask}


class FusionDataCollator:
    """Applies a [`FusionProcessor`] to raw dataset rows and carries their labels, for ``Trainer``'s
    ``data_collator`` (use ``remove_unused_columns=False`` so the raw columns reach it).

    Args:
        processor: the processor of the model's modalities.
        columns: modality name -> dataset column (default: each modality reads the column of its own name; the
            former column -> modality direction still works, with a ``FutureWarning``). Modalities with no column
            are left out of the batch (missing for every sample).
        label_column: column with the labels (``None``: no labels, e.g. for prediction); rows without it, or
            without ``"labels"``, give a batch without labels.
        sampling_rate: rate of raw audio arrays that carry none (one number or modality -> number).
        skip_bad_samples: drop unusable samples (missing/corrupt file, empty or non-finite audio, non-string
            text, a bad label...) instead of raising; each is logged once with its row, column and file, and
            counted in ``num_skipped`` (shared with DataLoader workers).
        row_column: column naming each row in errors (default ``row_index``, added by ``load_fusion_dataset``);
            without it the position in the batch is named.
        embeds_columns: modality -> column holding its precomputed pooled vector (added by
            ``embedding_cache.cache_embeddings``), or its token sequence ``[T_i, D]`` (``{name}_token_embeds``,
            right-padded into ``{name}_token_embeds`` / ``{name}_token_mask``); such a modality goes to the
            model as ``{name}_embeds`` (its encoder is skipped) and its raw column is not decoded. Default: a
            modality whose ``{name}_embeds`` or ``{name}_token_embeds`` column is in the rows uses it; ``{}`` turns that off. A row with no vector is missing
            (``{name}_mask`` False) when its raw value is missing too, else a bad sample (the cache left it
            empty), whose error decoding the raw value again reproduces.
        num_labels / problem_type: the model's (``model.config``); with them every label is checked completely
            (class id in ``0..num_labels-1`` or ``-100`` = ignore, no fractional id, multi-hot rows of
            ``num_labels`` values in {0, 1}, finite regression targets); without them only what holds for
            every problem type (present, numeric, finite, no negative id but ``-100``). A bad label is a bad
            sample: an error naming the row, the label column and the value, or a counted skip.
    """

    def __init__(
        self,
        processor: FusionProcessor,
        columns: Mapping[str, str] | None = None,
        *,
        label_column: str | None = "label",
        sampling_rate: int | Mapping[str, int] | None = None,
        skip_bad_samples: bool = False,
        row_column: str | None = ROW_INDEX_COLUMN,
        return_tensors: str = "pt",
        embeds_columns: Mapping[str, str] | None = None,
        num_labels: int | None = None,
        problem_type: str | None = None,
    ):
        if not isinstance(processor, FusionProcessor):
            raise TypeError(f"`processor` must be a FusionProcessor, got {type(processor).__name__}")
        columns = modality_columns(columns, processor.modality_names)
        if embeds_columns is not None:
            unknown = sorted(set(embeds_columns) - set(processor.modalities))
            if unknown:
                raise ValueError(
                    f"`embeds_columns` names unknown modalities {unknown}; the processor's modalities are "
                    f"{processor.modality_names}"
                )
        self.embeds_columns = dict(embeds_columns) if embeds_columns is not None else None
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise ValueError(f"`problem_type` must be one of {PROBLEM_TYPES}, got {problem_type!r}")
        if num_labels is not None and (
            isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1
        ):
            raise ValueError(f"`num_labels` must be a positive integer, got {num_labels!r}")
        self.num_labels = num_labels
        self.problem_type = problem_type
        self.processor = processor
        self.columns = columns
        self.label_column = label_column
        self.sampling_rate = sampling_rate
        self.skip_bad_samples = skip_bad_samples
        self.row_column = row_column
        self.return_tensors = return_tensors
        self.skip_counter = SkipCounter()
        self.skipped_samples: list[dict[str, Any]] = []
        """Skipped samples seen by *this* process (row, column, modality, file, reason); with DataLoader
        workers they are logged there, while ``num_skipped`` counts all of them."""

    @property
    def num_skipped(self) -> int:
        """Samples dropped so far by this collator and its DataLoader workers."""
        return self.skip_counter.value

    def reset_skip_count(self) -> None:
        """Start counting skipped samples from zero again."""
        self.skip_counter.reset()
        self.skipped_samples.clear()

    def _row_name(self, row: Mapping[str, Any], position: int) -> Any:
        if self.row_column is not None and row.get(self.row_column) is not None:
            return row[self.row_column]
        return f"batch position {position}"

    def _skip(self, error: BadSampleError) -> None:
        self.skip_counter.increment()
        record = {
            "row": error.row,
            "column": error.column,
            "modality": error.modality,
            "path": error.path,
            "reason": error.reason,
        }
        if record not in self.skipped_samples:  # log each bad sample once per process, not every epoch
            self.skipped_samples.append(record)
            logger.warning("skipping %s", error)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> BatchFeature:
        """Decode and batch ``features`` (a list of dataset rows)."""
        return self.collate(features)[0]

    def collate(self, features: Sequence[Mapping[str, Any]]) -> tuple[BatchFeature, list[int]]:
        """Decode and batch ``features``; also return the positions (in ``features``) of the rows the batch holds,
        in order: every row but the bad samples skipped. Raises ``ValueError`` when every row was bad."""
        if not features:
            raise ValueError("the collator got an empty list of rows")
        embeds = self._embeds_columns(features[0])
        sources = [(column, name) for name, column in self.columns.items()]
        sources += [(None, n) for n in embeds if n not in self.columns]
        decoded: dict[str, list[Any]] = {name: [] for _, name in sources if name not in embeds}
        vectors: dict[str, list[Any]] = {name: [] for name in embeds}
        labels, rows, bad, kept = [], [], [], []
        for position, row in enumerate(features):
            row_name = self._row_name(row, position)
            sample: dict[str, Any] = {}
            label_key = self._label_key(row)
            try:
                if label_key is not None:
                    problem = label_problem(row[label_key], self.problem_type, self.num_labels)
                    if problem is not None:
                        raise BadSampleError(problem, column=label_key, row=row_name)
                for column, name in sources:
                    if name in embeds:
                        try:
                            sample[name] = self._cached_vector(name, embeds[name], column, row, row_name)
                        except BadSampleError as error:
                            raise error.locate(column=column, row=row_name) from error.__cause__
                        continue
                    if column not in row:
                        raise KeyError(
                            f"column '{column}' (modality '{name}') is not in the dataset row (columns: "
                            f"{sorted(row)}); pass `remove_unused_columns=False` to TrainingArguments so raw "
                            "columns reach the collator"
                        )
                    value = row[column]
                    try:
                        sample[name] = (
                            None if value is None else self.processor.decode(name, value, self.sampling_rate)
                        )
                    except BadSampleError as error:
                        raise error.locate(column=column, row=row_name) from error.__cause__
            except BadSampleError as error:
                if not self.skip_bad_samples:
                    raise
                self._skip(error)
                bad.append(str(error))
                continue
            for name, value in sample.items():
                (vectors if name in embeds else decoded)[name].append(value)
            rows.append(row_name)
            kept.append(position)
            if label_key is not None:
                labels.append(row[label_key])
        if not rows:
            raise ValueError(
                f"every sample of this batch was bad ({len(bad)} skipped): " + "; ".join(bad[:5])
            )
        batch = self.processor.process_decoded(decoded, return_tensors=self.return_tensors)
        for name, values in vectors.items():
            for key, value in embeds_fields(name, values).items():
                batch[key] = value.numpy() if self.return_tensors == "np" else value
        if labels:
            if len(labels) != len(rows):
                raise ValueError(f"some rows of this batch have labels and some do not (rows {rows})")
            tensor = labels_to_tensor(
                labels,
                rows,
                problem_type=self.problem_type,
                num_labels=self.num_labels,
                column=self.label_column or "labels",
            )
            batch["labels"] = tensor.numpy() if self.return_tensors == "np" else tensor
        return batch, kept

    def _embeds_columns(self, row: Mapping[str, Any]) -> dict[str, str]:
        """modality -> column of precomputed pooled vectors used for this batch."""
        if self.embeds_columns is not None:
            return self.embeds_columns
        columns = {}
        for name in self.processor.modality_names:
            for column in (f"{name}_embeds", f"{name}_token_embeds"):  # pooled vectors / token sequences
                if column in row:
                    columns[name] = column
        return columns

    def _cached_vector(
        self, name: str, embeds_column: str, column: str | None, row: Mapping[str, Any], row_name: Any
    ) -> np.ndarray | None:
        if embeds_column not in row:
            raise KeyError(
                f"column '{embeds_column}' (cached embeddings of modality '{name}') is not in the dataset row "
                f"(columns: {sorted(row)})"
            )
        vector = row[embeds_column]
        if vector is not None:
            return np.asarray(vector, dtype=np.float32)
        value = row.get(column) if column is not None else None
        if value is None:
            return None  # a missing modality stays missing
        # The cache pass left this vector empty because the sample was bad: decoding it again raises that error.
        self.processor.decode(name, value, self.sampling_rate)
        raise ValueError(
            f"{row_name if isinstance(row_name, str) else f'row {row_name}'}: modality '{name}' has no cached vector "
            f"in '{embeds_column}' but its raw value in '{column}' decodes; the embedding cache is out of date, "
            "compute it again"
        )

    def _label_key(self, row: Mapping[str, Any]) -> str | None:
        if self.label_column is None:
            return None
        if self.label_column in row:
            return self.label_column
        return "labels" if "labels" in row else None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(columns={self.columns}, label_column={self.label_column!r}, "
            f"skip_bad_samples={self.skip_bad_samples}, num_skipped={self.num_skipped})"
        )
