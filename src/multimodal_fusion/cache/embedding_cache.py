"""Frozen-encoder embedding cache: encode each frozen modality once, then train (or score) from the pooled vectors.

A frozen encoder gives the same pooled vector for a sample at every step of every epoch, so recomputing it wastes
almost all of a fusion head's training compute. [`cache_embeddings`] runs each frozen encoder once over a
dataset with ``datasets.Dataset.map`` (batched, with a progress bar) and adds a ``{name}_embeds`` column holding
the pooled vector ``model.get_modality_embeddings`` returns. [`FusionDataCollator`] passes such columns to the
model as ``{name}_embeds``, which skips that encoder; trainable modalities keep running live.

The cache is ``datasets``' own cache file, named by a fingerprint that covers everything the vectors depend on:
the input dataset's fingerprint (and the size and modification time of each media file it names), the encoder's
weights and config, the pooling module (and its weights), the ``layer`` that is pooled, the processor's settings
for that modality and ``CACHE_VERSION``. Changing any of them gives a new cache file, never a stale one; the same
inputs in a later run load the existing file without running any encoder. Only a *file-backed* dataset (loaded
from files, e.g. by [`load_fusion_dataset`], or with ``load_from_disk``) gets a cache file; an in-memory dataset
(``Dataset.from_dict``) is encoded in memory every time.

A modality is cached when nothing about its pooled vector can change during training (see
[`embedding_cache_plan`]): its encoder and pooling have no trainable parameter, no ``unfreeze_schedule`` will
unfreeze it, and its processor applies no random augmentation. ``training/run.py`` applies the cache through
``training.embedding_cache_policy.apply_embedding_cache`` (``cache_embeddings: auto | true | false``);
``inference.score_dataset`` scores a dataset from cached embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset, DatasetDict

from ..data.data_collator import ROW_INDEX_COLUMN
from ..model.fusions import is_token_level
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor
from .cache_core import (
    STORAGE_DTYPES,
    check_storage_dtype,
    decode_column,
    encoder_config_settings,
    has_random_augmentation,
    map_present,
    media_files_signature,
    processor_settings,
    resolve_modality_columns,
    short_fingerprint,
    stable_json,
    update_with_tensors,
)
from .cache_files import cache_file_path, discard_if_damaged, record_checksum

__all__ = [  # the fingerprint parts live in cache_core; importing them from here keeps working
    "CACHE_MODES", "CACHE_VERSION", "EMBEDS_SUFFIX", "STORAGE_DTYPES", "TOKEN_EMBEDS_SUFFIX", "cache_embeddings",
    "cache_fingerprint", "cache_plan", "caches_tokens", "embedding_fingerprint", "embeds_column",
    "has_random_augmentation", "media_files_signature", "processor_settings",
]  # fmt: skip

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Part of every fingerprint; bump it when the way pooled vectors are computed or stored changes."""

EMBEDS_SUFFIX = "_embeds"
"""Cached column of modality ``name``: ``{name}_embeds``, the model's input name for a precomputed pooled vector."""

TOKEN_EMBEDS_SUFFIX = "_token_embeds"
"""Cached column of modality ``name`` when it is cached as a token sequence: ``{name}_token_embeds``, one
``[T_i, hidden]`` array per row (after ``max_tokens``)."""

CACHE_MODES = ("auto", "true", "false")


def embeds_column(name: str, tokens: bool = False) -> str:
    """The column that holds modality ``name``'s cached pooled vectors (``{name}_embeds``) or, with ``tokens``,
    its token sequences (``{name}_token_embeds``)."""
    return f"{name}{TOKEN_EMBEDS_SUFFIX if tokens else EMBEDS_SUFFIX}"


def caches_tokens(model: FusionModel, name: str) -> bool:
    """Whether modality ``name`` is cached as a token sequence rather than a pooled vector: the fusion is
    token-level, or the pooling has weights that train (``attention``), so only the tokens stay fixed."""
    if is_token_level(model.config.fusion):
        return True
    if name not in model.poolers:
        return False
    return any(p.requires_grad for p in model.poolers[name].parameters())


# ---------------------------------------------------------------------------------------------------- fingerprints
def embedding_fingerprint(model: FusionModel, processor: FusionProcessor, name: str) -> str:
    """Fingerprint (hex) of everything modality ``name``'s pooled vector depends on, apart from the sample.

    Covers the encoder's weights and buffers (bytes, dtype, shape), the encoder config, the model config's
    ``kind``/``layer``/``max_tokens`` for the modality, whether tokens are cached ([`caches_tokens`]) and, for
    pooled vectors, ``pooling`` and the pooling module's weights, the processor settings of
    [`processor_settings`] and ``CACHE_VERSION``. Two models with equal weights and settings give the same
    fingerprint (so a cache is reused); changing any of them gives another one.
    """
    if name not in model.config.modalities:
        raise ValueError(
            f"unknown modality '{name}'; the model's modalities are {model.config.modality_names}"
        )
    if name not in processor.modalities:
        raise ValueError(f"modality '{name}' is not in the processor (modalities {processor.modality_names})")
    spec = model.config.modalities[name]
    digest = hashlib.sha256()
    digest.update(f"multimodal_fusion.cache.embedding_cache v{CACHE_VERSION}|".encode())
    tokens = caches_tokens(model, name)
    keys = ("kind", "layer", "max_tokens", "input_dim", "hidden_sizes", *(() if tokens else ("pooling",)))
    model_settings = {key: getattr(spec, key) for key in keys}
    model_settings["tokens"] = tokens
    network = spec.network
    if network is not None:  # your own network: what it is and which node it reads
        model_settings.update(
            module=network.module, module_kwargs=network.module_kwargs, feature_layer=network.feature_layer
        )
    encoder_config = spec.config
    if encoder_config is not None:
        model_settings["encoder_config"] = encoder_config_settings(encoder_config)
    digest.update(stable_json(model_settings).encode())
    digest.update(stable_json(processor_settings(processor, name)).encode())
    update_with_tensors(digest, model.encoders[name].state_dict())
    if hasattr(
        model.encoders[name], "non_persistent_buffers"
    ):  # module encoders: buffers outside the weights
        update_with_tensors(digest, model.encoders[name].non_persistent_buffers())
    if name in model.poolers and not tokens:
        update_with_tensors(digest, {f"pooler.{k}": v for k, v in model.poolers[name].state_dict().items()})
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------- what applies
def cache_plan(
    model: FusionModel, processor: FusionProcessor | None = None, unfrozen: Collection[str] = ()
) -> dict[str, str | None]:
    """For every modality of ``model``: ``None`` when its pooled vectors stay fixed (can be cached), else why not.

    A modality can be cached when its encoder has no trainable parameter (``trainable_layers: 0``) (with a
    token-level fusion its token sequences are cached: [`caches_tokens`]), its pooling has none either
    (``attention`` pooling learns; ``cache_embeddings`` caches its tokens when it is named in ``modalities``),
    it is not in ``unfrozen`` (the modalities an unfreezing schedule will make trainable; see
    ``training.embedding_cache_policy``), and its processor applies no random augmentation
    ([`has_random_augmentation`])."""
    plan: dict[str, str | None] = {}
    for name, spec in model.config.modalities.items():
        if any(p.requires_grad for p in model.encoders[name].parameters()):
            plan[name] = f"its encoder trains (trainable_layers={spec.trainable_layers!r})"
        elif name in model.poolers and any(p.requires_grad for p in model.poolers[name].parameters()):
            plan[name] = (
                f"its '{spec.pooling}' pooling has weights that train (pass it in `modalities` to "
                "`cache_embeddings` to cache its token sequences instead)"
            )
        elif name in unfrozen:
            plan[name] = "`unfreeze_schedule` will unfreeze it"
        elif (
            processor is not None
            and name in processor.modalities
            and has_random_augmentation(processor, name)
        ):
            plan[name] = "its processor applies random augmentation (a sample's input changes every epoch)"
        else:
            plan[name] = None
    return plan


# ---------------------------------------------------------------------------------------------------- caching
class _Encoder:
    """The ``Dataset.map`` function: decode one batch of raw rows per modality, run the model's encoder and
    pooling, return ``{name}_embeds`` (``None`` where the sample is missing, or bad and skipped)."""

    def __init__(
        self, model, processor, modality_columns, sampling_rate, skip_bad_samples, device, row_column, dtype
    ):
        self.dtype = np.dtype(dtype)
        self.model = model
        self.processor = processor
        self.modality_columns = modality_columns
        self.sampling_rate = sampling_rate
        self.skip_bad_samples = skip_bad_samples
        self.device = device
        self.row_column = row_column
        self.rows_encoded = 0
        self.skipped: list[str] = []

    def _compute(self, name: str, tokens: bool):
        def compute(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with torch.no_grad():
                if tokens:
                    values, token_mask = self.model.get_modality_tokens(**batch)[name]
                    token_mask = token_mask.cpu().numpy()
                else:
                    values = self.model.get_modality_embeddings(**batch)[name]
            values = values.float().cpu().numpy().astype(self.dtype)
            return [values[i][token_mask[i]] if tokens else values[i] for i in range(len(values))]

        return compute

    def __call__(self, *args: Any) -> dict[str, list[Any]]:
        *values, indices = args
        row_names = values.pop() if self.row_column is not None else indices
        out: dict[str, list[Any]] = {}
        for (name, column), raw in zip(self.modality_columns.items(), values, strict=True):
            decoded = decode_column(self.processor, name, raw, row_names, column=column,
                                    sampling_rate=self.sampling_rate, skip_bad_samples=self.skip_bad_samples,
                                    what="embedding cache")  # fmt: skip
            self.skipped += [str(error) for error in decoded.errors.values()]
            tokens = caches_tokens(self.model, name)
            vectors, encoded = map_present(decoded, self._compute(name, tokens), self.processor, name)
            self.rows_encoded += encoded
            out[embeds_column(name, tokens)] = vectors
        return out


def cache_embeddings(
    dataset: Dataset | DatasetDict,
    model: FusionModel,
    processor: FusionProcessor,
    columns: Mapping[str, str] | None = None,
    modalities: Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    sampling_rate: int | Mapping[str, int] | None = None,
    skip_bad_samples: bool = False,
    device: str | torch.device | None = None,
    load_from_cache_file: bool | None = None,
    storage_dtype: str = "float32",
) -> Dataset | DatasetDict:
    """Add a ``{name}_embeds`` column (``[pooled_dim]`` per row) for each modality in ``modalities``, or a
    ``{name}_token_embeds`` column (``[T_i, hidden]`` per row: the encoder's token sequence after ``max_tokens``,
    its real tokens only) for a modality the model needs tokens of ([`caches_tokens`]: token-level fusions,
    ``attention`` pooling).

    Each row's raw value (file path, bytes, array, text; ``None`` = missing) is decoded and processed as
    [`FusionDataCollator`] would, then ``model.get_modality_embeddings`` gives the pooled vector the live path
    computes. Runs as ``Dataset.map(batched=True)`` with a progress bar; the result is stored in ``datasets``'
    cache under a fingerprint of the input dataset and of [`embedding_fingerprint`] (weights, processor settings,
    pooling, layer), so a later call with the same inputs loads it without running an encoder. Only file-backed
    datasets get a cache file (see the module docstring).

    Args:
        dataset: raw rows (a ``Dataset`` or every split of a ``DatasetDict``).
        model: the fusion model; it is put in eval mode while encoding and restored afterwards.
        processor: the model's processor.
        columns: modality -> column, as the collator takes it (default: each modality reads its own name).
        modalities: which modalities to cache (default: those [`cache_plan`] finds fixed).
        batch_size: rows encoded together.
        sampling_rate: rate of raw audio arrays that carry none (as the collator's).
        skip_bad_samples: leave a bad sample's vector empty (logged) instead of raising; the collator then skips
            the row as it does live. Missing samples (``None``) always stay missing (``{name}_mask`` False).
        device: where to encode (default: where the model is); the model is moved back afterwards.
        load_from_cache_file: passed to ``Dataset.map`` (``None``: reuse cache files when caching is enabled).
        storage_dtype: ``"float32"`` (default: cached and live logits agree to float rounding) or ``"float16"``
            (half the disk and memory; the collator hands float32 tensors to the model either way).

    Returns the dataset with the added columns (the raw columns are kept).
    """
    check_storage_dtype(storage_dtype)
    if modalities is None:
        modalities = [name for name, reason in cache_plan(model, processor).items() if reason is None]
    names = list(modalities)
    for name in names:
        if name not in model.config.modalities:
            raise ValueError(
                f"unknown modality '{name}'; the model's modalities are {model.config.modality_names}"
            )
        if has_random_augmentation(processor, name):
            raise ValueError(
                f"modality '{name}': its processor applies random augmentation, so its embeddings change every "
                "epoch and cannot be cached; leave it out of `modalities`"
            )
    options = {
        "model": model,
        "processor": processor,
        "columns": columns,
        "names": names,
        "fingerprints": {name: embedding_fingerprint(model, processor, name) for name in names},
        "batch_size": batch_size,
        "sampling_rate": sampling_rate,
        "skip_bad_samples": skip_bad_samples,
        "device": device,
        "load_from_cache_file": load_from_cache_file,
        "storage_dtype": storage_dtype,
    }
    if isinstance(dataset, DatasetDict):
        return DatasetDict({split: _cache_split(part, split, **options) for split, part in dataset.items()})
    return _cache_split(dataset, None, **options)


def cache_fingerprint(
    dataset: Dataset,
    modality_columns: Mapping[str, str],
    names: Sequence[str],
    fingerprints: Mapping[str, str],
    sampling_rate: Any = None,
    storage_dtype: str = "float32",
) -> str:
    """Fingerprint of the cache file [`cache_embeddings`] writes for ``names`` cached together on ``dataset``:
    the input dataset's fingerprint, its media files, each modality's column and [`embedding_fingerprint`]
    (``fingerprints``), the sampling rate override and the storage dtype. 32 hex characters."""
    payload = {
        "dataset": dataset._fingerprint,
        "media": media_files_signature(dataset, [modality_columns[name] for name in names]),
        "modalities": [[name, modality_columns[name], fingerprints[name]] for name in names],
        "sampling_rate": sampling_rate,
        "version": CACHE_VERSION,
        "storage_dtype": storage_dtype,
    }
    return short_fingerprint(payload)


def _mtime(path: str | None) -> int | None:
    return os.stat(path).st_mtime_ns if path and os.path.isfile(path) else None


def _cache_split(
    dataset: Dataset,
    split: str | None,
    *,
    model: FusionModel,
    processor: FusionProcessor,
    columns: Mapping[str, str] | None,
    names: Sequence[str],
    fingerprints: Mapping[str, str],
    batch_size: int,
    sampling_rate: Any,
    skip_bad_samples: bool,
    device: Any,
    load_from_cache_file: bool | None,
    storage_dtype: str,
) -> Dataset:
    if not names:
        return dataset
    modality_columns = resolve_modality_columns(processor, columns, names)
    missing = [column for column in modality_columns.values() if column not in dataset.column_names]
    if missing:
        raise ValueError(f"columns {missing} not in the dataset (columns: {dataset.column_names})")
    row_column = ROW_INDEX_COLUMN if ROW_INDEX_COLUMN in dataset.column_names else None
    new_fingerprint = cache_fingerprint(
        dataset,
        modality_columns,
        names,
        fingerprints,
        sampling_rate=sampling_rate,
        storage_dtype=storage_dtype,
    )
    features = _cache_features(dataset, model, names, storage_dtype)
    original_device = model.classifier.weight.device
    device = torch.device(device) if device is not None else original_device
    encoder = _Encoder(
        model, processor, modality_columns, sampling_rate, skip_bad_samples, device, row_column, storage_dtype
    )
    was_training = model.training
    model.eval()
    if device != original_device:
        model.to(device)
    cache_file = cache_file_path(dataset, new_fingerprint)
    discard_if_damaged(cache_file if load_from_cache_file is not False else None, f"cache ({split})")
    written_before = _mtime(cache_file)
    try:
        result = dataset.map(
            encoder,
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            input_columns=[*modality_columns.values(), *([row_column] if row_column else [])],
            features=features,
            new_fingerprint=new_fingerprint,
            load_from_cache_file=load_from_cache_file,
            desc=f"caching {'/'.join(names)} embeddings" + (f" ({split})" if split else ""),
        )
    finally:
        if device != original_device:
            model.to(original_device)
        model.train(was_training)
    record_checksum(cache_file, overwrite=_mtime(cache_file) != written_before)  # rewritten: new checksum
    _log_cache_result(split, names, encoder, new_fingerprint)
    return result


def _cache_features(
    dataset: Dataset, model: FusionModel, names: Sequence[str], storage_dtype: str
) -> datasets.Features:
    """The dataset's features plus one cached column per modality: ``{name}_embeds`` ``[pooled_dim]`` or
    ``{name}_token_embeds`` ``[T_i, hidden]`` of ``storage_dtype``."""
    features = dataset.features.copy()
    for name in names:
        vector = datasets.List(datasets.Value(storage_dtype), length=model.pooled_dims[name])
        tokens = caches_tokens(model, name)
        features[embeds_column(name, tokens)] = datasets.List(vector) if tokens else vector
    return features


def _log_cache_result(split: str | None, names: Sequence[str], encoder: Any, fingerprint: str) -> None:
    where = f"split '{split}'" if split else "dataset"
    if encoder.rows_encoded:
        logger.info(
            f"embedding cache: {where}: encoded {encoder.rows_encoded} samples of {names} "
            f"(fingerprint {fingerprint}; {len(encoder.skipped)} bad samples left empty)"
        )
    else:
        logger.info(f"embedding cache: {where}: {names} loaded from the cache (fingerprint {fingerprint})")
