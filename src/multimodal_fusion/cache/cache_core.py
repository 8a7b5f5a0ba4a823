"""What every cache of this package shares: storage dtypes, fingerprints, the modality -> column mapping, and the
one decode-map step (decode a column of raw samples, locate a bad one by row and column, skip and count it or
raise).

The pooled-vector and token caches (``embedding_cache``), the frozen-prefix cache (``prefix_cache``) and the
scoring engine (``inference.scoring``) all build on these functions; none of them keeps a private copy.

Bad samples: with ``skip_bad_samples`` a cache pass leaves a bad sample's cached value empty (``None``) while its
raw value stays in the row. A row whose cached value is empty but whose raw value is not is a bad row wherever it
is read (``is_bad_cached_row``): the collators and the scoring engine drop it from *every* column of the batch,
cached and live alike, and count it once per pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset

from ..data.column_mapping import modality_columns
from ..model.bad_samples import BadSampleError, SkipCounter
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)

STORAGE_DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float16": np.float16}
"""Storage dtype name -> numpy type, for every cache (pooled vectors, token sequences, prefix hidden states)."""

UNSTABLE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures", "id2label", "label2id")
"""Encoder-config keys that do not change what an encoder computes (left out of fingerprints)."""


# ---------------------------------------------------------------------------------------------------- storage
def check_storage_dtype(storage_dtype: str) -> np.dtype:
    """The numpy dtype of a storage dtype name; ``ValueError`` naming the allowed names for any other value."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"`storage_dtype` must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    return np.dtype(STORAGE_DTYPES[storage_dtype])


# ---------------------------------------------------------------------------------------------------- fingerprints
def stable_json(value: Any) -> str:
    """``value`` as JSON with sorted keys (unknown types by ``repr``): the same text for the same settings."""
    return json.dumps(value, sort_keys=True, default=repr)


def update_with_tensors(digest: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    """Feed every tensor of ``tensors`` (name, dtype, shape and bytes, in name order) into a hashlib ``digest``."""
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def encoder_config_settings(config: Any) -> dict[str, Any]:
    """An encoder config's ``to_dict()`` without the keys that do not change its outputs (``UNSTABLE_CONFIG_KEYS``)."""
    settings = config.to_dict()
    for key in UNSTABLE_CONFIG_KEYS:
        settings.pop(key, None)
    return settings


def short_fingerprint(payload: Any) -> str:
    """32 hex characters of the SHA-256 of ``stable_json(payload)``: the name of a ``Dataset.map`` cache file."""
    return hashlib.sha256(stable_json(payload).encode()).hexdigest()[:32]


def has_random_augmentation(processor: FusionProcessor, name: str) -> bool:
    """Whether modality ``name``'s processor applies random training transforms, so a sample's input (and pooled
    vector) differs between epochs and cannot be cached.

    The package itself never augments (timm image processors run their evaluation transforms); a processor spec or
    sub-processor with a truthy ``augment`` attribute declares augmentation (where an augmentation option would
    set it)."""
    spec = processor.modalities.get(name)
    sub = processor.processors.get(name)
    return bool(getattr(spec, "augment", False) or getattr(sub, "augment", False))


def processor_settings(processor: FusionProcessor, name: str) -> dict[str, Any]:
    """Every setting of ``processor`` that changes modality ``name``'s model input: the processor spec (kind,
    sampling rate, text ``max_length``...), ``max_audio_seconds`` and the sub-processor's saved configuration (an
    image processor's / feature extractor's ``to_dict()``; a tokenizer's full ``tokenizer.json`` without the
    truncation/padding state a call leaves behind, plus its special tokens)."""
    spec = {k: v for k, v in processor.modalities[name].to_dict().items() if k != "path"}
    sub = processor.processors.get(name)
    settings: dict[str, Any] = {"spec": spec, "type": type(sub).__name__ if sub is not None else None}
    if name in processor.audio_modalities:  # waveforms (max_audio_seconds crops them)
        settings["max_audio_seconds"] = processor.max_audio_seconds_of(name)
    if sub is None:
        return settings
    backend = getattr(sub, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)
        state.pop("padding", None)
        settings["tokenizer"] = state
        settings["special_tokens"] = {
            k: str(v) for k, v in getattr(sub, "special_tokens_map", {}).items() if isinstance(v, str)
        }
        settings["padding_side"] = getattr(sub, "padding_side", None)
    elif hasattr(sub, "get_vocab") and not hasattr(sub, "to_dict"):
        # a tokenizer without a tokenizers backend
        settings["vocab"] = sorted(sub.get_vocab().items())
        settings["init_kwargs"] = {
            k: v for k, v in getattr(sub, "init_kwargs", {}).items() if k != "name_or_path"
        }
    else:
        settings["processor"] = {
            k: v for k, v in sub.to_dict().items() if k not in ("_processor_class", "processor_class")
        }
    settings["augment"] = has_random_augmentation(processor, name)
    return settings


def media_files_signature(dataset: Dataset, columns: Sequence[str]) -> str:
    """Hash of the size and modification time of every local file named in ``columns`` (string columns only).

    A dataset of file paths keeps its fingerprint when a file it names is rewritten in place; this signature does
    not, so the cache is recomputed. Paths that do not exist (or are not strings) count as such."""
    digest = hashlib.sha256()
    for column in columns:
        feature = dataset.features.get(column)
        if not isinstance(feature, datasets.Value) or "string" not in feature.dtype:
            continue  # embedded media (bytes) are covered by the dataset's own fingerprint
        digest.update(f"|{column}|".encode())
        for value in dataset.data.column(column).to_pylist():
            if isinstance(value, str) and value and "://" not in value:
                try:
                    stat = os.stat(value)
                    digest.update(f"{value}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                except OSError:
                    digest.update(f"{value}\0missing\n".encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- columns
def resolve_modality_columns(
    processor: FusionProcessor, columns: Mapping[str, str] | None, names: Sequence[str]
) -> dict[str, str]:
    """modality -> column for ``names`` (``columns``: modality -> column; default: same names).

    Raises ``ValueError`` naming the modalities that have no column and the mapping in use."""
    by_modality = modality_columns(columns, processor.modality_names)
    missing = [name for name in names if name not in by_modality]
    if missing:
        raise ValueError(
            f"modalities {missing} have no column; `columns` (modality -> column) maps {by_modality}"
        )
    return {name: by_modality[name] for name in names}


# ---------------------------------------------------------------------------------------------------- decode-map
@dataclass
class DecodedColumn:
    """One modality's raw values of a batch of rows, decoded.

    Attributes:
        samples: the decoded sample per row; ``None`` where the value is missing or the sample was bad and skipped.
        errors: position in the batch -> the located ``BadSampleError`` of each skipped row.
    """

    samples: list[Any]
    errors: dict[int, BadSampleError] = field(default_factory=dict)

    @property
    def present(self) -> list[int]:
        """Positions whose sample decoded (neither missing nor skipped)."""
        return [i for i, sample in enumerate(self.samples) if sample is not None]


def decode_column(
    processor: FusionProcessor,
    name: str,
    values: Sequence[Any],
    rows: Sequence[Any],
    *,
    column: str | None,
    sampling_rate: int | Mapping[str, int] | None = None,
    skip_bad_samples: bool = False,
    counter: SkipCounter | None = None,
    what: str = "cache",
) -> DecodedColumn:
    """Decode modality ``name``'s raw ``values`` (file path, bytes, array, text; ``None`` = missing) for the rows
    named ``rows`` (row index or name, same length), as the collator decodes them.

    A bad sample's ``BadSampleError`` is located (``row``, ``column``); without ``skip_bad_samples`` it is raised,
    with it the sample is logged (``what`` names the pass), left ``None``, recorded in ``errors`` and counted in
    ``counter`` (when given).
    """
    decoded = DecodedColumn(samples=[])
    for position, (value, row) in enumerate(zip(values, rows, strict=True)):
        if value is None:
            decoded.samples.append(None)
            continue
        try:
            decoded.samples.append(processor.decode(name, value, sampling_rate))
        except BadSampleError as error:
            error.locate(column=column, row=row)
            if not skip_bad_samples:
                raise
            logger.warning("%s: %s (left empty; skipped wherever the row is read)", what, error)
            decoded.samples.append(None)
            decoded.errors[position] = error
            if counter is not None:
                counter.increment()
    return decoded


def is_bad_cached_row(cached: Any, raw: Any) -> bool:
    """Whether a row's cached value marks a bad sample: the cache pass left it empty (``None``) although the raw
    value is there (a missing modality has neither)."""
    return cached is None and raw is not None


def map_present(
    decoded: DecodedColumn, compute: Any, processor: FusionProcessor, name: str
) -> tuple[list[Any], int]:
    """Run ``compute(batch)`` on the present samples of ``decoded`` (processed together by ``processor``) and
    spread its per-sample results back to the rows: ``(results with None elsewhere, rows computed)``.

    ``compute`` takes the processed ``{name}_{field}`` batch and returns one value per present sample."""
    present = decoded.present
    results: list[Any] = [None] * len(decoded.samples)
    if not present:
        return results, 0
    batch = processor.process_decoded({name: [decoded.samples[i] for i in present]})
    for position, value in zip(present, compute(batch), strict=True):
        results[position] = value
    return results, len(present)
