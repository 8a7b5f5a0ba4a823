"""The one scoring engine: logits for every row of a dataset of raw samples, with the embedding cache built,
reused or off.

[`score_rows`] is what [`score_dataset`], ``prediction.predict_dataset`` (and so ``multimodal-fusion predict`` /
``evaluate``) run on. Its ``cache`` option says what happens to the modalities a cache can serve (frozen at
inference: every modality with a column whose processor does not augment):

- ``"build"``: ``cache_embeddings`` computes their pooled vectors (or token sequences) once and stores them in
  ``datasets``' cache (file-backed datasets), so scoring the same data again, or with another head that shares
  the encoders, runs no encoder; an existing cache file is loaded.
- ``"reuse"``: only embeddings an earlier run already cached for exactly this data, weights and processor settings
  are read ([`find_cached_embeddings`]); nothing is written (for a single pass a cache would only add a write).
- ``"off"``: every encoder runs live.

Each batch goes through the cache core's decode-map step (``cache.cache_core.decode_column``): a bad sample raises
its located ``BadSampleError``, or with ``skip_bad_samples`` its row is dropped from every modality of the batch
(cached and live alike) and reported in ``errors``. A cached value the cache pass left empty for a bad sample
counts as that sample's error (decoding it again gives the error).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..cache.cache_core import decode_column, has_random_augmentation, is_bad_cached_row
from ..cache.embedding_cache import (
    cache_embeddings,
    cache_fingerprint,
    caches_tokens,
    embedding_fingerprint,
    embeds_column,
)
from ..data.column_mapping import modality_columns as map_modality_columns
from ..data.data_collator import ROW_INDEX_COLUMN, embeds_fields
from ..model.bad_samples import BadSampleError
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)

SCORING_CACHE_MODES = ("build", "reuse", "off")
"""Values of [`score_rows`]' ``cache``."""


@dataclass
class PredictionOutput:
    """What [`score_rows`] (and ``predict_dataset``) returns.

    Attributes:
        logits: ``{ablation: [N_ok, num_labels] float32}``; key ``None`` = every modality the row has, key
            ``"image"`` = the same rows with ``image`` masked out, and so on.
        rows: dataset positions of the ``N_ok`` predicted rows (in order).
        present: ``[N_ok, M]`` bool, which modalities each row had (model order).
        modalities: the model's modality names (columns of ``present``).
        errors: one dict per unreadable row (``row``, ``modality``, ``column``, ``path``, ``reason``).
        labels: the label column of the predicted rows (``None`` without one).
        cached_modalities: modalities read from the embedding cache.
    """

    logits: dict[str | None, np.ndarray]
    rows: list[int]
    present: np.ndarray
    modalities: list[str]
    errors: list[dict[str, Any]] = field(default_factory=list)
    labels: np.ndarray | None = None
    cached_modalities: list[str] = field(default_factory=list)


@dataclass
class ScoringOutput:
    """What [`score_dataset`] returns.

    Attributes:
        logits: ``[N, num_labels]`` float32, in dataset order (``N``: the rows scored; all of them unless
            ``skip_bad_samples`` dropped some).
        labels: the label column of the scored rows as an array (``None`` without ``label_column``).
        cached_modalities: modalities scored from cached embeddings.
        rows: dataset positions of the scored rows.
        errors: one dict per skipped row (``row``, ``modality``, ``column``, ``path``, ``reason``).
    """

    logits: np.ndarray
    labels: np.ndarray | None
    cached_modalities: list[str]
    rows: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)


def find_cached_embeddings(
    dataset: Dataset, model: FusionModel, processor: FusionProcessor, modality_columns: Mapping[str, str]
) -> list[str]:
    """The largest set of modalities whose embeddings an earlier run cached for exactly this ``dataset``, model
    weights and processor settings (``[]`` when none). Looks for the cache file only; builds nothing.

    A training run caches its frozen modalities together, so every subset of the modalities with a column is
    tried, largest first. Only file-backed datasets have cache files.
    """
    if not dataset.cache_files:
        return []
    folder = os.path.dirname(dataset.cache_files[0]["filename"])
    candidates = [
        name
        for name, column in modality_columns.items()
        if column in dataset.column_names and not has_random_augmentation(processor, name)
    ]
    fingerprints = {name: embedding_fingerprint(model, processor, name) for name in candidates}
    for size in range(len(candidates), 0, -1):
        for names in itertools.combinations(candidates, size):
            fingerprint = cache_fingerprint(dataset, modality_columns, names, fingerprints)
            if os.path.exists(os.path.join(folder, f"cache-{fingerprint}.arrow")):
                return list(names)
    return []


def _scoring_columns(
    model: FusionModel, processor: FusionProcessor, dataset: Dataset, columns: Mapping[str, str] | None
) -> dict[str, str]:
    """modality -> column for the modalities whose column is in ``dataset`` (default: same names); ``ValueError``
    naming modalities the model does not have."""
    names = model.config.modality_names
    unknown = sorted(set(columns or {}) - set(names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; the model's modalities are {names}")
    mapped = map_modality_columns(dict(columns) if columns else None, processor.modality_names)
    return {name: column for name, column in mapped.items() if column in dataset.column_names}


def _apply_cache(
    dataset: Dataset,
    model: FusionModel,
    processor: FusionProcessor,
    columns: dict[str, str],
    cache: str,
    modalities: Sequence[str] | None,
    options: dict[str, Any],
) -> tuple[Dataset, list[str]]:
    """``dataset`` with the cached columns ``cache`` asks for, and the modalities they serve."""
    if cache not in SCORING_CACHE_MODES:
        raise ValueError(f"`cache` must be one of {SCORING_CACHE_MODES}, got {cache!r}")
    if cache == "off":
        return dataset, []
    if modalities is None:
        modalities = [name for name in columns if not has_random_augmentation(processor, name)]
    unknown = sorted(set(modalities) - set(columns))
    if unknown:
        raise ValueError(f"modalities {unknown} have no column in the dataset; modality -> column: {columns}")
    if cache == "reuse":
        found = find_cached_embeddings(dataset, model, processor, {n: columns[n] for n in modalities})
        if not found:
            return dataset, []
        logger.info(f"scoring: reusing the embedding cache of {found} (their encoders are skipped)")
        modalities = found
    if not modalities:
        return dataset, []
    return cache_embeddings(dataset, model, processor, columns, list(modalities), **options), list(modalities)


def _error_record(error: BadSampleError) -> dict[str, Any]:
    return {"row": error.row, "modality": error.modality, "column": error.column, "path": error.path,
            "reason": error.reason}  # fmt: skip


class _BatchScorer:
    """Decodes one columnar slice of rows into model inputs: cached vectors for cached modalities, decoded and
    processed samples for the others; a row bad in any modality is dropped from all of them."""

    def __init__(self, model, processor, columns, cached, sampling_rate, skip_bad_samples):
        self.model, self.processor, self.columns, self.cached = model, processor, columns, cached
        self.sampling_rate, self.skip_bad_samples = sampling_rate, skip_bad_samples

    def _cached_values(self, name: str, part: Mapping[str, list[Any]], row_names: list[Any]):
        column = self.columns[name]
        stored = part[embeds_column(name, caches_tokens(self.model, name))]
        raw = part[column]
        bad = [i for i, (v, r) in enumerate(zip(stored, raw, strict=True)) if is_bad_cached_row(v, r)]
        errors = {}
        if bad:  # the cache pass left them empty: decoding them again gives their error
            again = decode_column(self.processor, name, [raw[i] for i in bad], [row_names[i] for i in bad],
                                  column=column, sampling_rate=self.sampling_rate,
                                  skip_bad_samples=self.skip_bad_samples, what="scoring")  # fmt: skip
            errors = {bad[i]: error for i, error in again.errors.items()}
            if len(errors) < len(bad):
                raise ValueError(f"modality '{name}': rows {bad} have no cached vector in the embedding cache but "
                                 f"their raw values in '{column}' decode; compute the cache again")  # fmt: skip
        values = [None if v is None else np.asarray(v, dtype=np.float32) for v in stored]
        return values, errors

    def decode(self, part: Mapping[str, list[Any]], row_names: list[Any]):
        """``(values per modality, errors: position -> first BadSampleError of the row)``."""
        values, errors = {}, {}
        for name, column in self.columns.items():
            if name in self.cached:
                values[name], found = self._cached_values(name, part, row_names)
            else:
                decoded = decode_column(self.processor, name, part[column], row_names, column=column,
                                        sampling_rate=self.sampling_rate,
                                        skip_bad_samples=self.skip_bad_samples, what="scoring")  # fmt: skip
                values[name], found = decoded.samples, decoded.errors
            for position, error in found.items():
                errors.setdefault(position, error)
        return values, errors

    def batch(self, values: dict[str, list[Any]], kept: list[int], device: torch.device):
        """Model inputs of the ``kept`` positions and their ``[n, M]`` presence (model order)."""
        names = self.model.config.modality_names
        rows = {name: [values[name][i] for i in kept] for name in values}
        present = np.array([[name in rows and rows[name][k] is not None for name in names]
                            for k in range(len(kept))], dtype=bool).reshape(len(kept), len(names))  # fmt: skip
        live = {n: v for n, v in rows.items() if n not in self.cached and any(x is not None for x in v)}
        batch: dict[str, torch.Tensor] = dict(self.processor.process_decoded(live)) if live else {}
        for name in self.cached:
            batch.update(embeds_fields(name, rows[name]))
        return {key: value.to(device) for key, value in batch.items()}, present


@dataclass
class _Collected:
    """What [`score_rows`] gathers batch by batch."""

    logits: dict[str | None, list[np.ndarray]]
    rows: list[int] = field(default_factory=list)
    presence: list[np.ndarray] = field(default_factory=list)
    labels: list[Any] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def add(self, model, scorer: _BatchScorer, part: dict[str, list[Any]], start: int, label_column, device):
        """Score one columnar slice of rows (the first at dataset position ``start``)."""
        count = len(next(iter(part.values()))) if part else 0
        row_names = part.get(ROW_INDEX_COLUMN) or list(range(start, start + count))
        values, bad = scorer.decode(part, row_names)
        self.errors += [_error_record(bad[i]) for i in sorted(bad)]
        kept = [i for i in range(count) if i not in bad]
        if not kept:
            return
        self.rows += [start + i for i in kept]
        self.labels += [part[label_column][i] for i in kept] if label_column is not None else []
        batch, present = scorer.batch(values, kept, device)
        self.presence.append(present)
        with torch.no_grad():
            for key in self.logits:
                inputs = batch if key is None else _ablated(batch, key, len(kept))
                self.logits[key].append(model(**inputs).logits.float().cpu().numpy())

    def output(self, model: FusionModel, cached: list[str], with_labels: bool) -> PredictionOutput:
        names = model.config.modality_names
        empty = np.zeros((0, model.config.num_labels), np.float32)
        return PredictionOutput(
            logits={k: np.concatenate(v) if v else empty for k, v in self.logits.items()},
            rows=self.rows,
            present=np.concatenate(self.presence) if self.presence else np.zeros((0, len(names)), bool),
            modalities=list(names),
            errors=self.errors,
            labels=np.asarray(self.labels) if with_labels else None,
            cached_modalities=cached,
        )


def _ablated(batch: dict[str, torch.Tensor], name: str, size: int) -> dict[str, torch.Tensor]:
    """``batch`` with modality ``name`` masked out for every sample."""
    device = next(iter(batch.values())).device
    return {**batch, f"{name}_mask": torch.zeros(size, dtype=torch.bool, device=device)}


def score_rows(
    model: FusionModel,
    processor: FusionProcessor,
    dataset: Dataset,
    columns: Mapping[str, str] | None = None,
    *,
    cache: str = "reuse",
    modalities: Sequence[str] | None = None,
    label_column: str | None = None,
    batch_size: int = 32,
    skip_bad_samples: bool = False,
    ablations: Sequence[str] = (),
    sampling_rate: int | Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> PredictionOutput:
    """Logits for every readable row of ``dataset``, in order: the scoring engine.

    Args:
        model / processor: a fusion model and its processor.
        dataset: raw rows (as ``load_fusion_dataset`` gives them).
        columns: modality -> column (default: each modality reads its own name); a modality whose column is not in
            the dataset is missing for every row.
        cache: ``"build"`` | ``"reuse"`` | ``"off"`` (module docstring).
        modalities: which modalities a cache may serve (default: every one with a column whose processor does
            not augment; ``[]`` scores live).
        label_column: also return this column for the predicted rows.
        batch_size: rows per model call (and per cache-pass batch).
        skip_bad_samples: report unreadable rows in ``errors`` and go on; ``False`` raises the first
            ``BadSampleError`` (it names the row, column, modality and file).
        ablations: modalities to mask out, one at a time, for extra logits (``logits[name]``).
        sampling_rate: rate of raw audio arrays that carry none.
        device: where to run (default: where the model is); the model is moved back afterwards.
        progress: show a progress bar.

    Raises ``ValueError`` for unknown modalities (in ``columns``, ``modalities`` or ``ablations``) or ``cache``.
    """
    from tqdm.auto import tqdm

    columns = _scoring_columns(model, processor, dataset, columns)
    names = model.config.modality_names
    if sorted(set(ablations) - set(names)):
        raise ValueError(f"unknown modalities {sorted(set(ablations) - set(names))}; the model's are {names}")
    device = torch.device(device) if device is not None else model.classifier.weight.device
    options = {"batch_size": batch_size, "sampling_rate": sampling_rate, "skip_bad_samples": skip_bad_samples,
               "device": device}  # fmt: skip
    dataset, cached = _apply_cache(dataset, model, processor, columns, cache, modalities, options)
    scorer = _BatchScorer(model, processor, columns, cached, sampling_rate, skip_bad_samples)
    keep = [*columns.values(), *(embeds_column(n, caches_tokens(model, n)) for n in cached)]
    keep += [c for c in (ROW_INDEX_COLUMN, label_column) if c is not None and c in dataset.column_names]
    source = dataset.select_columns(list(dict.fromkeys(keep))).with_format(None)
    collected = _Collected({key: [] for key in (None, *ablations)})
    was_training, original_device = model.training, model.classifier.weight.device
    model.eval()
    model.to(device)
    try:
        for start in tqdm(range(0, len(source), batch_size), desc="scoring", disable=not progress):
            collected.add(model, scorer, source[start : start + batch_size], start, label_column, device)
    finally:
        model.to(original_device)
        model.train(was_training)
    return collected.output(model, cached, label_column is not None)


def score_dataset(
    model: FusionModel,
    processor: FusionProcessor,
    dataset: Dataset,
    columns: Mapping[str, str] | None = None,
    *,
    modalities: Sequence[str] | None = None,
    label_column: str | None = None,
    batch_size: int = 64,
    sampling_rate: int | Mapping[str, int] | None = None,
    device: str | torch.device | None = None,
    cache: str = "build",
    skip_bad_samples: bool = False,
) -> ScoringOutput:
    """Batch inference over ``dataset``: logits for every row, in order ([`score_rows`] with ``cache="build"`` by
    default).

    At inference no encoder trains, so by default every modality with a column is cached (``modalities=[]`` or
    ``cache="off"`` scores live). Embeddings already cached with the same weights and settings (for example the
    test split of a frozen-encoder training run) are loaded, not recomputed; scoring the same data with another
    head that shares the encoders costs one pass over the cached vectors. Bad samples raise unless
    ``skip_bad_samples`` (then ``rows`` / ``errors`` say which rows were scored and which were not).
    """
    output = score_rows(model, processor, dataset, columns, cache=cache, modalities=modalities,
                        label_column=label_column, batch_size=batch_size, skip_bad_samples=skip_bad_samples,
                        sampling_rate=sampling_rate, device=device)  # fmt: skip
    return ScoringOutput(logits=output.logits[None], labels=output.labels, cached_modalities=output.cached_modalities,
                         rows=output.rows, errors=output.errors)  # fmt: skip
