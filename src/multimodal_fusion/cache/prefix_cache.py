"""Frozen-prefix cache: train the top blocks of a partly frozen encoder at the speed of the top blocks.

With ``trainable_layers: k`` an encoder of ``n`` blocks is frozen below block ``j = n - k`` (embeddings,
convolutional front-end and blocks ``1..j``), and those parts run in eval mode: the hidden states entering block
``j + 1`` are the same for a sample at every epoch. [`cache_hidden_states`] computes them once per sample (decoding,
processing and the frozen prefix, with ``Dataset.map``) and keeps the valid tokens (variable length; float32 or
float16); training then runs only blocks ``j + 1..n``, the final norm and the pooling (``prefix_layers.py``), fed by
[`PrefixCacheCollator`] as ``{name}_hidden_states`` / ``{name}_hidden_mask`` / ``{name}_hidden_layer``.

Exactness: only families whose encoder adapter has a prefix runner (``adapter.prefix_blocks``) whose prefix is not
random in training mode are cached; [`prefix_cache_plan`] gives every other modality its one-line reason. The cache
file is named by [`prefix_fingerprint`]: what the pooled-vector fingerprint covers (``embedding_cache``), restricted
to the frozen tensors, plus the boundary ``j`` and the storage dtype.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import torch
from datasets import Dataset

from ..data.data_collator import FusionDataCollator
from ..model import prefix_layers
from ..model.bad_samples import BadSampleError
from ..model.fusions import is_token_level
from ..model.modality_kinds import get_kind
from ..model.modeling_fusion import FusionModel
from ..model.prefix_layers import prefix_exact_reason
from ..model.processing_fusion import FusionProcessor
from .cache_core import (
    STORAGE_DTYPES,
    check_storage_dtype,
    decode_column,
    encoder_config_settings,
    has_random_augmentation,
    is_bad_cached_row,
    map_present,
    media_files_signature,
    processor_settings,
    resolve_modality_columns,
    short_fingerprint,
    stable_json,
    update_with_tensors,
)

logger = logging.getLogger(__name__)

PREFIX_CACHE_VERSION = 1
PREFIX_ROW_COLUMN = "prefix_cache_row"
"""Column [`PrefixCacheCollator`] reads to find a row's cached hidden states (added by the training policy)."""
__all__ = ["STORAGE_DTYPES", "PrefixCache", "PrefixCacheCollator", "PrefixStore", "cache_hidden_states"]


def frozen_boundary(model: FusionModel, name: str) -> int | None:
    """Blocks frozen below the first trainable one, when the embeddings and front-end are frozen too and at least
    one block trains; ``None`` otherwise (fully frozen encoders use the pooled-vector cache)."""
    layout = model.encoder_layout(name)
    params = dict(model.encoders[name].named_parameters())
    if not layout.blocks or any(params[n].requires_grad for n in layout.embeddings + layout.feature_encoder):
        return None
    for index, block in enumerate(layout.blocks):
        if any(params[n].requires_grad for n in block):
            return index
    return None


@dataclass
class PrefixPlan:
    """What the prefix cache does for one modality: ``boundary`` (blocks cached) or ``reason`` it runs live."""

    boundary: int | None
    reason: str | None


def prefix_cache_plan(model: FusionModel, processor: FusionProcessor | None = None) -> dict[str, PrefixPlan]:
    """For every modality: the block boundary its hidden states can be cached at, or why it runs live.

    Exactness is judged in training mode (the mode the live path trains in): a family without a prefix runner,
    SpecAugment, LayerDrop or active dropout before the boundary make a modality run live."""
    was_training = model.training
    model.train()
    try:
        plan = {}
        for name, spec in model.config.modalities.items():
            boundary = frozen_boundary(model, name)
            reason = None
            if get_kind(spec.kind).pooled_only:
                reason = f"kind '{spec.kind}' has no block stack (its encoder gives one vector)"
            elif is_token_level(model.config.fusion):
                reason = f"the token-level fusion '{model.config.fusion}' reads live token sequences"
            elif boundary is None:
                trains = any(p.requires_grad for p in model.encoders[name].parameters())
                reason = (
                    "its embeddings train (trainable_layers='all')"
                    if trains
                    else "fully frozen (the pooled-vector cache covers it)"
                )
            elif (
                processor is not None
                and name in processor.modalities
                and has_random_augmentation(processor, name)
            ):
                reason = "its processor applies random augmentation"
            else:
                reason = prefix_exact_reason(model.adapters[name], model.encoders[name], boundary, spec.layer)
            plan[name] = PrefixPlan(boundary if reason is None else None, reason)
        return plan
    finally:
        model.train(was_training)


def prefix_fingerprint(
    model: FusionModel, processor: FusionProcessor, name: str, num_frozen: int, storage_dtype: str = "float32"
) -> str:
    """Fingerprint (hex) of what modality ``name``'s hidden states at boundary ``num_frozen`` depend on: the
    frozen tensors (embeddings, front-end, blocks ``1..num_frozen``, buffers), the encoder config, the processor
    settings, the boundary, the storage dtype and ``PREFIX_CACHE_VERSION``. Training the blocks above the
    boundary does not change it."""
    spec = model.config.modalities[name]
    layout = model.encoder_layout(name)
    live = {n for block in layout.blocks[num_frozen:] for n in block} | set(layout.final + layout.pooler)
    digest = hashlib.sha256()
    digest.update(
        f"multimodal_fusion.cache.prefix_cache v{PREFIX_CACHE_VERSION}|{num_frozen}|{storage_dtype}|".encode()
    )
    config = encoder_config_settings(spec.config)
    digest.update(stable_json({"kind": spec.kind, "encoder_config": config}).encode())
    digest.update(stable_json(processor_settings(processor, name)).encode())
    state = {k: v for k, v in model.encoders[name].state_dict().items() if k not in live}
    update_with_tensors(digest, state)
    return digest.hexdigest()


def hidden_column(name: str) -> str:
    return f"{name}_hidden_states"


class _PrefixEncoder:
    """``Dataset.map`` function: decode + process a batch of raw rows, run the frozen prefix, keep valid tokens."""

    def __init__(
        self, model, processor, modality_columns, boundaries, storage, sampling_rate, skip_bad, device
    ):
        self.model, self.processor, self.device = model, processor, device
        self.modality_columns, self.boundaries = modality_columns, boundaries
        self.storage, self.sampling_rate, self.skip_bad = storage, sampling_rate, skip_bad
        self.rows_encoded = 0

    def _compute(self, name: str):
        def compute(batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
            fields = {k[len(name) + 1 :]: v.to(self.device) for k, v in batch.items()}
            hidden, mask = prefix_hidden_states(self.model, name, fields, self.boundaries[name])
            hidden = hidden.float().cpu().numpy().astype(self.storage)
            mask = mask.cpu().numpy()
            return [hidden[i][mask[i]].reshape(-1) for i in range(len(hidden))]

        return compute

    def __call__(self, *args: Any) -> dict[str, list[Any]]:
        *values, indices = args
        out = {}
        for (name, column), raw in zip(self.modality_columns.items(), values, strict=True):
            decoded = decode_column(self.processor, name, raw, indices, column=column,
                                    sampling_rate=self.sampling_rate, skip_bad_samples=self.skip_bad,
                                    what="prefix cache")  # fmt: skip
            out[hidden_column(name)], encoded = map_present(
                decoded, self._compute(name), self.processor, name
            )
            self.rows_encoded += encoded
        return out


def prefix_hidden_states(
    model: FusionModel, name: str, fields: dict[str, torch.Tensor], num_frozen: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states entering block ``num_frozen + 1`` of modality ``name`` (``[B, T, D]``) and their token mask
    (``[B, T]`` bool), computed as the live path computes them (the family adapter says how: e.g. a group-norm
    wav2vec2 front-end is run per clip length, see ``prefix_layers.prefix_hidden_states``)."""
    return prefix_layers.prefix_hidden_states(model.adapters[name], model.encoders[name], fields, num_frozen)


def estimate_cache_bytes(
    dataset: Dataset,
    model: FusionModel,
    processor: FusionProcessor,
    modality_columns: Mapping[str, str],
    boundaries: Mapping[str, int],
    storage_dtype: str,
    sampling_rate: Any = None,
    probes: int = 4,
) -> dict[str, int]:
    """Disk bytes of the cache per modality: samples x mean tokens x width x bytes, the tokens measured on up to
    ``probes`` rows spread over the dataset (before the cache pass)."""
    itemsize = np.dtype(STORAGE_DTYPES[storage_dtype]).itemsize
    picks = sorted({int(i) for i in np.linspace(0, len(dataset) - 1, num=min(probes, len(dataset)))})
    encoder = _PrefixEncoder(model, processor, dict(modality_columns), boundaries, np.float32, sampling_rate, True,
                             model.classifier.weight.device)  # fmt: skip
    probe = dataset.select(picks)
    out = encoder(*[probe[c] for c in modality_columns.values()], picks)
    estimate = {}
    for name in modality_columns:
        sizes = [len(v) for v in out[hidden_column(name)] if v is not None]
        estimate[name] = int(len(dataset) * (np.mean(sizes) if sizes else 0) * itemsize)
    return estimate


@dataclass
class PrefixStore:
    """One modality's cached hidden states: a ``Dataset`` with ``{name}_hidden_states`` (flat valid tokens)."""

    name: str
    num_frozen: int
    width: int
    table: Dataset
    seconds: float
    """Time the cache pass took (0 when loaded from an existing cache file)."""

    def lookup(self, rows: Sequence[int]) -> list[np.ndarray | None]:
        column = self.table.with_format("arrow")[list(rows)].column(hidden_column(self.name))
        out: list[np.ndarray | None] = []
        for value in column:
            if not value.is_valid:
                out.append(None)
            else:
                out.append(value.values.to_numpy(zero_copy_only=False).reshape(-1, self.width))
        return out


def cache_hidden_states(
    dataset: Dataset,
    model: FusionModel,
    processor: FusionProcessor,
    boundaries: Mapping[str, int],
    columns: Mapping[str, str] | None = None,
    *,
    storage_dtype: str = "float32",
    batch_size: int = 32,
    sampling_rate: int | Mapping[str, int] | None = None,
    skip_bad_samples: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, PrefixStore]:
    """Run each modality's frozen prefix once over ``dataset`` and store the hidden states entering block
    ``boundaries[name] + 1``: modality -> [`PrefixStore`] (row ``i`` of the store belongs to row ``i``).

    The result is a ``Dataset.map`` cache file named by the dataset fingerprint, its media files' signature and
    [`prefix_fingerprint`] (file-backed datasets only; in-memory ones are encoded every time). Rows whose sample
    is missing hold ``None``; with ``skip_bad_samples`` a bad sample is logged and left ``None`` too.
    """
    check_storage_dtype(storage_dtype)
    names = list(boundaries)
    modality_columns = resolve_modality_columns(processor, columns, names)
    original_device = model.classifier.weight.device
    device = torch.device(device) if device is not None else original_device
    stores = {}
    was_training = model.training
    model.eval()
    model.to(device)
    try:
        for name in names:
            column = modality_columns[name]
            fingerprint = short_fingerprint(
                {
                    "dataset": dataset._fingerprint,
                    "media": media_files_signature(dataset, [column]),
                    "prefix": prefix_fingerprint(model, processor, name, boundaries[name], storage_dtype),
                    "column": column,
                    "sampling_rate": sampling_rate,
                }
            )
            feature = datasets.Value(storage_dtype)
            encoder = _PrefixEncoder(model, processor, {name: column}, boundaries, STORAGE_DTYPES[storage_dtype],
                                     sampling_rate, skip_bad_samples, device)  # fmt: skip
            start = time.perf_counter()
            table = dataset.map(
                encoder,
                batched=True,
                batch_size=batch_size,
                with_indices=True,
                input_columns=[column],
                remove_columns=dataset.column_names,
                features=datasets.Features({hidden_column(name): datasets.List(feature)}),
                new_fingerprint=fingerprint,
                desc=f"caching {name} hidden states at block {boundaries[name]}",
            )
            seconds = time.perf_counter() - start if encoder.rows_encoded else 0.0
            width = model.pooled_dims[name]
            stores[name] = PrefixStore(name, boundaries[name], width, table, seconds)
            logger.info(
                f"prefix cache: modality '{name}': "
                + (
                    f"encoded {encoder.rows_encoded} samples in {seconds:.1f}s"
                    if encoder.rows_encoded
                    else "loaded from the cache"
                )  # fmt: skip
                + f" (boundary {boundaries[name]}, {storage_dtype}, fingerprint {fingerprint})"
            )
    finally:
        model.to(original_device)
        model.train(was_training)
    return stores


@dataclass
class PrefixCache:
    """The live state the collator reads: modality -> store in use (a modality that fell back is absent)."""

    stores: dict[str, PrefixStore]
    columns: dict[str, str]
    """modality -> raw column."""
    fallbacks: dict[str, str] = field(default_factory=dict)
    """modality -> why it runs live now."""

    def disable(self, name: str, reason: str) -> None:
        if self.stores.pop(name, None) is not None:
            logger.info(f"prefix cache: modality '{name}' runs live from now on: {reason}")
        self.fallbacks[name] = reason


def hidden_fields(
    name: str, vectors: Sequence[np.ndarray | None], num_frozen: int
) -> dict[str, torch.Tensor]:
    """``{name}_hidden_states`` ``[B, T, D]`` (zero-padded), ``{name}_hidden_mask`` ``[B, T]`` bool,
    ``{name}_hidden_layer`` ``[B]`` and, where a row has none, ``{name}_mask``."""
    present = [i for i, v in enumerate(vectors) if v is not None]
    mask = torch.tensor([v is not None for v in vectors], dtype=torch.bool)
    if not present:
        return {f"{name}_mask": mask}
    tokens = max(vectors[i].shape[0] for i in present)
    first = vectors[present[0]]
    hidden = torch.zeros(len(vectors), tokens, first.shape[1], dtype=torch.from_numpy(first[:0].copy()).dtype)
    token_mask = torch.zeros(len(vectors), tokens, dtype=torch.bool)
    for i in present:
        length = vectors[i].shape[0]
        hidden[i, :length] = torch.from_numpy(np.array(vectors[i]))
        token_mask[i, :length] = True
    out = {
        f"{name}_hidden_states": hidden,
        f"{name}_hidden_mask": token_mask,
        f"{name}_hidden_layer": torch.full((len(vectors),), num_frozen, dtype=torch.long),
    }
    if len(present) < len(vectors):
        out[f"{name}_mask"] = mask
    return out


class PrefixCacheCollator:
    """Wraps a [`FusionDataCollator`]: modalities with cached hidden states skip decoding and processing and go
    to the model as ``{name}_hidden_*`` fields; rows without ``prefix_cache_row`` (e.g. prediction data), and
    modalities that fell back to live, are collated as the wrapped collator does."""

    def __init__(self, collator: FusionDataCollator, cache: PrefixCache):
        self.collator = collator
        self.cache = cache

    def __getattr__(self, item: str) -> Any:  # num_skipped, skipped_samples... of the wrapped collator
        if item == "collator":  # not set yet (unpickling in a DataLoader worker)
            raise AttributeError(item)
        return getattr(self.collator, item)

    def _skip_bad_cached(self, name: str, row: Mapping[str, Any], position: int) -> None:
        """Count (and log once, with its row, column and reason) a row whose cached hidden states of modality
        ``name`` are empty: decoding its raw value again reproduces the cache pass's error."""
        column = self.cache.columns[name]
        try:
            self.collator.processor.decode(name, row[column], self.collator.sampling_rate)
        except BadSampleError as error:
            self.collator._skip(error.locate(column=column, row=self.collator._row_name(row, position)))
            return
        self.collator.skip_counter.increment()

    def __call__(self, features: Sequence[Mapping[str, Any]]):
        stores = dict(self.cache.stores)
        if not stores or not features or PREFIX_ROW_COLUMN not in features[0]:
            return self.collator(features)
        ids = [int(row[PREFIX_ROW_COLUMN]) for row in features]
        hidden = {name: store.lookup(ids) for name, store in stores.items()}
        kept = []
        for position, row in enumerate(features):
            bad = [
                n for n in stores if is_bad_cached_row(hidden[n][position], row.get(self.cache.columns[n]))
            ]
            if bad:  # the cache pass left it empty: a bad sample, skipped (and counted) as live
                self._skip_bad_cached(bad[0], row, position)
                continue
            kept.append(position)
        if not kept:
            raise ValueError("every sample of this batch was bad (their cached hidden states are empty)")
        # The wrapped collator decodes and processes only the modalities that run live (and the embedding-cache
        # columns); it may skip more rows (a bad sample of another modality, a bad label): the cached hidden
        # states keep exactly the rows it kept, so every field of the batch has the same rows.
        live = copy.copy(self.collator)
        live.columns = {n: c for n, c in self.collator.columns.items() if n not in stores}
        batch, live_kept = live.collate([features[i] for i in kept])
        kept = [kept[i] for i in live_kept]
        for name, store in stores.items():
            batch.update(hidden_fields(name, [hidden[name][i] for i in kept], store.num_frozen))
        return batch
