"""Dataset loading for training: a Hub dataset, csv/jsonl/parquet files whose columns hold file paths, or a
``save_to_disk`` folder -> a ``DatasetDict`` of raw rows for [`FusionDataCollator`].

What it does on top of ``datasets.load_dataset``:

- relative media paths in local data files are resolved against *that file's* folder (``datasets`` resolves
  them against the working directory);
- ``Image``/``Audio`` columns are cast to ``decode=False``, so decoding happens in the collator (soundfile, no
  torchcodec needed; a bad file is one bad sample, not a failed batch);
- the label column becomes a ``ClassLabel`` with the same names in every split (``id2label``/``label2id``);
- a ``length`` column (audio duration from the file header, or text length in characters) for length-grouped
  batching without decoding every row, and a ``row_index`` column that errors name.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import datasets
import pyarrow
import pyarrow.compute
from datasets import ClassLabel, Dataset, DatasetDict, Value

from ..model.bad_samples import BadSampleError
from ..model.label_validation import label_problem
from ..model.modality_kinds import MODALITY_KIND_REGISTRY, get_kind, kind_names
from ..model.processing_fusion import FusionProcessor
from .column_mapping import modality_columns
from .data_collator import ROW_INDEX_COLUMN
from .label_checks import warn_about_labels

logger = logging.getLogger(__name__)

DATA_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""File suffix -> ``datasets`` builder for local data files."""

LENGTH_COLUMN = "length"


@dataclass
class LoadedDataset:
    """What [`load_fusion_dataset`] returns.

    Attributes:
        dataset: the splits, raw rows (file paths / undecoded media, labels as class ids).
        columns: modality -> column (checked; the former column -> modality direction turned around).
        label_column: the label column (``None`` without labels).
        id2label / label2id: class names for the model config (``None`` for regression).
        num_labels: classes (single- or multi-label), or 1 for regression.
        problem_type: ``single_label_classification`` | ``multi_label_classification`` | ``regression``.
        length_column: the added length column, or ``None``.
        missing_files: media files named by the data that do not exist (only with ``skip_bad_samples``; else
            the first of them is an error).
    """

    dataset: DatasetDict
    columns: dict[str, str]
    label_column: str | None = None
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    num_labels: int | None = None
    problem_type: str | None = None
    length_column: str | None = None
    missing_files: int = 0


def _kinds(columns: Mapping[str, str], kinds: Mapping[str, str] | FusionProcessor | None) -> dict[str, str]:
    """modality -> kind for the modalities in ``columns`` (modality -> column)."""
    out = {}
    for name, column in columns.items():
        if isinstance(kinds, FusionProcessor):
            kind = kinds.modalities[name].kind if name in kinds.modalities else None
        elif kinds is not None:
            kind = kinds.get(name)
        else:
            kind = name if name in MODALITY_KIND_REGISTRY else None
        if kind not in MODALITY_KIND_REGISTRY:
            raise ValueError(
                f"column '{column}': cannot tell the kind of modality '{name}'; pass `kinds` (a FusionProcessor "
                f"or modality -> one of {kind_names()})"
            )
        out[name] = kind
    return out


def _is_save_to_disk_folder(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, f)) for f in ("dataset_dict.json", "state.json")
    )


def _resolve_paths(batch: dict[str, list], columns: Sequence[str], base: str) -> dict[str, list]:
    for column in columns:
        values = batch[column]
        batch[column] = [
            os.path.normpath(os.path.join(base, v))
            if isinstance(v, str) and v and "://" not in v and not os.path.isabs(v)
            else v
            for v in values
        ]
    return batch


def _has_no_rows(file: str, suffix: str) -> bool:
    """A csv/tsv with at most a header line, or a json/jsonl/parquet file that loads as nothing."""
    if suffix not in (".csv", ".tsv"):
        return os.path.getsize(file) == 0
    with open(file, encoding="utf-8", errors="replace") as handle:
        lines = [line for _, line in zip(range(3), handle, strict=False) if line.strip()]
    return len(lines) <= 1


def _load_file(file: str, media_columns: Sequence[str], load_kwargs: dict[str, Any]) -> Dataset:
    suffix = os.path.splitext(file)[1].lower()
    if not any(c in file for c in "*?[") and "://" not in file and not os.path.isfile(file):
        raise FileNotFoundError(f"data file '{file}' not found (working directory: {os.getcwd()})")
    if suffix not in DATA_FILE_BUILDERS:
        raise ValueError(
            f"data file '{file}': unsupported suffix '{suffix}'; expected one of {sorted(DATA_FILE_BUILDERS)}"
        )
    kwargs = dict(load_kwargs)
    if suffix == ".tsv":
        kwargs.setdefault("delimiter", "\t")
    try:
        dataset = datasets.load_dataset(DATA_FILE_BUILDERS[suffix], data_files=file, split="train", **kwargs)
    except Exception as error:  # datasets raises ValueError or StopIteration for a file with no rows
        if _has_no_rows(file, suffix):
            raise ValueError(
                f"data file '{file}' has no rows (a header only?); expected at least one sample"
            ) from None
        if isinstance(error, ValueError):
            raise ValueError(f"data file '{file}': cannot load it ({error})") from error
        raise
    if len(dataset) == 0:
        raise ValueError(f"data file '{file}' has no rows; expected at least one sample")
    present = [c for c in media_columns if c in dataset.column_names]
    string_columns = [
        c for c in present if isinstance(dataset.features[c], Value) and "string" in dataset.features[c].dtype
    ]
    if string_columns:
        base = os.path.dirname(os.path.abspath(file))
        dataset = dataset.map(
            _resolve_paths,
            batched=True,
            fn_kwargs={"columns": string_columns, "base": base},
            desc=f"resolving paths against {base}",
        )
    return dataset


def _load_raw(
    source: str | os.PathLike | Sequence[str] | Mapping[str, Any],
    media_columns: Sequence[str],
    split: str | None,
    load_kwargs: dict[str, Any],
) -> DatasetDict:
    if isinstance(source, Mapping) or (isinstance(source, Sequence) and not isinstance(source, str)):
        files = dict(source) if isinstance(source, Mapping) else {"train": list(source)}
    else:
        path = os.fspath(source)
        if _is_save_to_disk_folder(path):
            loaded = datasets.load_from_disk(path)
            loaded = loaded if isinstance(loaded, DatasetDict) else DatasetDict({split or "train": loaded})
            return DatasetDict({split: loaded[split]}) if split else loaded
        if os.path.isfile(path):
            files = {"train": [path]}
        elif os.path.isdir(path):  # a local dataset folder (data files + optional README/metadata)
            loaded = datasets.load_dataset(path, **load_kwargs)
            return _resolve_folder_paths(loaded, media_columns, path, split)
        else:  # a Hub dataset
            loaded = datasets.load_dataset(path, split=split, **load_kwargs)
            return loaded if isinstance(loaded, DatasetDict) else DatasetDict({split or "train": loaded})
    splits = {}
    for name, split_files in files.items():
        split_files = [split_files] if isinstance(split_files, (str, os.PathLike)) else list(split_files)
        if not split_files:
            raise ValueError(f"split '{name}' has no data files")
        parts = [_load_file(os.fspath(f), media_columns, load_kwargs) for f in split_files]
        splits[name] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    if split is not None:
        if split not in splits:
            raise ValueError(f"split '{split}' not among the data files' splits {sorted(splits)}")
        splits = {split: splits[split]}
    return DatasetDict(splits)


def _resolve_folder_paths(
    loaded: DatasetDict, media_columns: Sequence[str], folder: str, split: str | None
) -> DatasetDict:
    base = os.path.abspath(folder)
    out = {}
    for name, dataset in loaded.items():
        if split is not None and name != split:
            continue
        columns = [
            c
            for c in media_columns
            if c in dataset.column_names
            and isinstance(dataset.features[c], Value)
            and "string" in dataset.features[c].dtype
        ]
        if columns:
            dataset = dataset.map(_resolve_paths, batched=True, fn_kwargs={"columns": columns, "base": base})
        out[name] = dataset
    return DatasetDict(out)


def _undecoded_media(dataset: DatasetDict) -> DatasetDict:
    """Cast ``Image``/``Audio`` columns to ``decode=False``: rows then hold ``{"bytes", "path"}`` and the
    collator decodes them (per sample, with bad-sample handling, without torchcodec)."""
    for name, split in dataset.items():
        for column, feature in split.features.items():
            if isinstance(feature, (datasets.Image, datasets.Audio)) and feature.decode:
                split = split.cast_column(column, type(feature)(decode=False))
        dataset[name] = split
    return dataset


def _local_paths(split: Dataset, column: str) -> list[Any]:
    """The column's file paths read from Arrow without decoding (``None`` where a row holds bytes, an array, a
    URL or nothing): strings, or the ``path`` of ``Image``/``Audio`` structs that carry no bytes."""
    values = (
        split.data.column(column) if split._indices is None else split.flatten_indices().data.column(column)
    )
    if pyarrow.types.is_struct(values.type):
        names = [values.type.field(i).name for i in range(values.type.num_fields)]
        if "path" not in names:
            return []
        paths = pyarrow.compute.struct_field(values, "path").to_pylist()
        if "bytes" in names:
            has_bytes = pyarrow.compute.is_valid(pyarrow.compute.struct_field(values, "bytes")).to_pylist()
            paths = [None if inline else path for path, inline in zip(paths, has_bytes, strict=True)]
    elif pyarrow.types.is_string(values.type) or pyarrow.types.is_large_string(values.type):
        paths = values.to_pylist()
    else:
        return []
    return [p if isinstance(p, str) and p and "://" not in p else None for p in paths]


def check_media_files(
    dataset: DatasetDict,
    columns: Mapping[str, str],
    *,
    skip_bad_samples: bool = False,
    where: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Check that every local file named in the media ``columns`` (modality -> column) exists, with ``os.path``
    only (nothing is opened or decoded), so a missing file is reported before any encoder runs.

    Returns one dict per missing file (``split``, ``row``, ``modality``, ``column``, ``path``). Raises
    ``FileNotFoundError`` naming the split (or ``where[split]``, e.g. the data file), row, column and path of
    the first missing files, unless ``skip_bad_samples`` (then they are logged as a count and skipped, counted,
    where the rows are decoded).
    """
    where = where or {}
    missing = []
    for split_name, split in dataset.items():
        rows = split[ROW_INDEX_COLUMN] if ROW_INDEX_COLUMN in split.column_names else range(len(split))
        for name, column in columns.items():
            for row, path in zip(rows, _local_paths(split, column), strict=False):
                if path is not None and not os.path.exists(path):
                    missing.append({"split": split_name, "row": row, "modality": name, "column": column,
                                    "path": path})  # fmt: skip
    places = [where.get(m["split"], f"split '{m['split']}'") for m in missing[:5]]
    shown = "; ".join(
        f"{place} row {m['row']}, column '{m['column']}': {m['path']}"
        for place, m in zip(places, missing, strict=False)
    )
    more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
    if missing and not skip_bad_samples:
        raise FileNotFoundError(f"{len(missing)} media file(s) not found: {shown}{more}")
    if missing:
        logger.warning(
            "%d media files not found; those rows are skipped and counted (skip_bad_samples): %s%s",
            len(missing), shown, more,
        )  # fmt: skip
    return missing


def _check_media(
    source: Any, dataset: DatasetDict, columns: Mapping[str, str], kind_of: Mapping[str, str], skip: bool
) -> int:
    """[`check_media_files`] on the image/audio columns; a single data file is named as itself (``datasets``
    calls its one split 'train' whatever it holds). Returns the number of missing files."""
    media = {name: column for name, column in columns.items() if get_kind(kind_of[name]).media}
    single_file = isinstance(source, (str, os.PathLike)) and os.path.isfile(source)
    where = {name: f"data file '{os.fspath(source)}'" for name in dataset} if single_file else None
    return len(check_media_files(dataset, media, skip_bad_samples=skip, where=where))


def _label_rows(split: Dataset, label_column: str) -> list[tuple[Any, Any]]:
    rows = split[ROW_INDEX_COLUMN] if ROW_INDEX_COLUMN in split.column_names else range(len(split))
    return list(zip(rows, split[label_column], strict=True))


def check_label_values(
    dataset: DatasetDict,
    label_column: str,
    problem_type: str,
    num_labels: int,
    *,
    skip_bad_samples: bool = False,
) -> int:
    """Check every label with [`label_validation.label_problem`]; returns the number of bad labels.

    Raises ``ValueError`` naming the split, row, column and value of the first bad labels, unless
    ``skip_bad_samples`` (then they are logged as a count here and skipped, counted, by the collator).
    """
    bad = []
    for split_name, split in dataset.items():
        for row, value in _label_rows(split, label_column):
            problem = label_problem(value, problem_type, num_labels)
            if problem is not None:
                bad.append(f"split '{split_name}' row {row}: {problem}")
    if bad and not skip_bad_samples:
        raise ValueError(
            f"label column '{label_column}' ({problem_type}, num_labels={num_labels}): {len(bad)} bad label(s): "
            + "; ".join(bad[:5])
        )
    if bad:
        logger.warning(
            "label column '%s': %d bad labels; the collator skips those rows (skip_bad_samples): %s",
            label_column,
            len(bad),
            "; ".join(bad[:5]),
        )
    return len(bad)


def _unknown_rows(dataset: DatasetDict, label_column: str, unknown: set) -> str:
    found = []
    for split_name, split in dataset.items():
        for row, value in _label_rows(split, label_column):
            if value in unknown:
                found.append(f"split '{split_name}' row {row}: {value!r}")
                if len(found) == 5:
                    return "; ".join(found)
    return "; ".join(found)


def _multi_hot_names(
    dataset: DatasetDict, label_column: str, label_names: Sequence[str] | None, num_labels: int | None
) -> list[str]:
    """Class names of multi-hot labels: ``label_names``, else ``"0".."width-1"`` (``num_labels``, else the most
    common width)."""
    widths = Counter(len(v) for split in dataset.values() for v in split[label_column] if v is not None)
    if label_names is not None:
        size = len(label_names)
    elif num_labels is not None:
        size = num_labels
    elif widths:
        size = widths.most_common(1)[0][0]
    else:
        raise ValueError(f"label column '{label_column}': every multi-hot label is missing")
    return list(label_names) if label_names is not None else [str(i) for i in range(size)]


def _class_names(
    label_column: str,
    feature: Value,
    values: set[Any],
    label_names: Sequence[str] | None,
    num_labels: int | None,
) -> tuple[list[str], set[Any]]:
    """``(class names in id order, values that are none of them)`` of string or integer labels."""
    if "string" in feature.dtype:
        names = list(label_names) if label_names is not None else sorted(values)
        unknown = values - set(names)
        if num_labels is not None and not unknown and len(names) != num_labels:
            raise ValueError(
                f"label column '{label_column}' holds {len(names)} label names {names[:20]} but num_labels is "
                f"{num_labels}; pass `label_names` (all {num_labels} names in id order) or fix num_labels"
            )
        return names, unknown
    if feature.dtype.startswith(("int", "uint", "bool")):
        values = {int(v) for v in values}
        if label_names is not None:
            names = list(label_names)
        elif num_labels is not None:
            names = [str(i) for i in range(num_labels)]
        else:
            names = [str(i) for i in range(max(values, default=0) + 1)]
        return names, {v for v in values if not 0 <= v < len(names)}
    raise ValueError(
        f"label column '{label_column}' has dtype {feature.dtype}; expected strings, ints or floats"
    )


def encode_labels(
    dataset: DatasetDict,
    label_column: str,
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
) -> tuple[DatasetDict, dict[int, str] | None, str, int]:
    """Make ``label_column`` model-ready in every split; returns ``(dataset, id2label, problem_type, num_labels)``.

    Strings and integers become a ``ClassLabel`` whose names are the same in every split (``label_names``, else
    the sorted string values, else ``"0".."num_labels-1"``, else ``"0".."max"``); a ``ClassLabel`` is kept;
    floats mean regression (class ids when ``label_names`` or ``num_labels`` > 1 is given: then they must be
    whole numbers); lists (multi-hot) mean multi-label classification, of width ``len(label_names)``,
    ``num_labels`` or else the most common width. Values outside the names are an error naming the rows; the
    label values themselves are checked by [`check_label_values`]. Without ``label_names``, rare classes and
    near-duplicate names (``'dgo'``/``'dog'``) are a warning ([`label_checks.label_warnings`]).
    """
    first = next(iter(dataset.values()))
    feature = first.features[label_column]
    if isinstance(feature, ClassLabel):
        names = list(feature.names)
        return dataset, dict(enumerate(names)), "single_label_classification", len(names)
    if isinstance(feature, (datasets.List, datasets.Sequence, datasets.LargeList)):
        names = _multi_hot_names(dataset, label_column, label_names, num_labels)
        return dataset, dict(enumerate(names)), "multi_label_classification", len(names)
    if not isinstance(feature, Value):
        raise ValueError(
            f"label column '{label_column}' has feature {feature}; expected strings, ints, floats or lists"
        )
    class_ids = label_names is not None or (num_labels is not None and num_labels > 1)
    if feature.dtype.startswith("float"):
        if not class_ids:
            return dataset, None, "regression", 1
        count = num_labels if label_names is None else len(label_names)
        whole = DatasetDict({k: v.filter(lambda r: r[label_column] is not None) for k, v in dataset.items()})
        check_label_values(whole, label_column, "single_label_classification", count)  # whole numbers
        for name, split in dataset.items():
            dataset[name] = split.cast_column(label_column, Value("int64"))
        feature = Value("int64")
    values = {v for split in dataset.values() for v in split.unique(label_column) if v is not None}
    names, unknown = _class_names(label_column, feature, values, label_names, num_labels)
    if unknown:
        raise ValueError(
            f"label column '{label_column}': values {sorted(unknown, key=str)[:10]} are not among the label names "
            f"{names[:20]} ({len(names)} classes; e.g. {_unknown_rows(dataset, label_column, unknown)})"
        )
    if label_names is None:  # no declared label set: name rare classes and near-duplicate names (typos)
        warn_about_labels(dataset, label_column)
    class_label = ClassLabel(names=names)
    for name, split in dataset.items():
        dataset[name] = split.cast_column(label_column, class_label)
    return dataset, dict(enumerate(names)), "single_label_classification", len(names)


def _length_of(value: Any, kind: str) -> float:
    if value is None:
        return 0.0
    return get_kind(kind).sample_length(value) or 0.0


def _lengths(batch: dict[str, list], column: str, kind: str, output: str) -> dict[str, list]:
    lengths, unreadable = [], 0
    for value in batch[column]:
        try:
            lengths.append(_length_of(value, kind))
        except BadSampleError:
            lengths.append(0.0)  # the collator reports (or skips) the bad file when the row is used
            unreadable += 1
    if unreadable:
        logger.warning(
            "%d rows of column '%s' have unreadable audio headers; their length is 0", unreadable, column
        )
    batch[output] = lengths
    return batch


def add_length_column(
    dataset: DatasetDict | Dataset,
    column: str,
    kind: str,
    *,
    output_column: str = LENGTH_COLUMN,
    num_proc: int | None = None,
) -> DatasetDict | Dataset:
    """Add ``output_column`` with each row's length for length-grouped batching, read without decoding: audio
    duration in seconds from the file header (soundfile), or text length in characters."""
    if not get_kind(kind).has_length:
        lengths = [name for name in kind_names() if get_kind(name).has_length]
        raise ValueError(f"length column: kind '{kind}' has no length; use a column of kind {lengths}")
    return dataset.map(
        _lengths,
        batched=True,
        num_proc=num_proc,
        fn_kwargs={"column": column, "kind": kind, "output": output_column},
        desc=f"reading lengths of '{column}'",
    )


def _add_labels(
    result: LoadedDataset,
    dataset: DatasetDict,
    label_column: str,
    label_names: Sequence[str] | None,
    num_labels: int | None,
    skip_bad_samples: bool,
) -> DatasetDict:
    """Encode and check the label column (see [`encode_labels`], [`check_label_values`]); fill ``result``."""
    dataset, id2label, problem_type, num_labels = encode_labels(
        dataset, label_column, label_names, num_labels
    )
    check_label_values(dataset, label_column, problem_type, num_labels, skip_bad_samples=skip_bad_samples)
    result.label_column = label_column
    result.id2label = id2label
    result.label2id = {v: k for k, v in id2label.items()} if id2label is not None else None
    result.problem_type = problem_type
    result.num_labels = num_labels
    return dataset


def _add_lengths(
    result: LoadedDataset,
    dataset: DatasetDict,
    kind_of: Mapping[str, str],
    length_column: str,
    length_modality: str | None,
    num_proc: int | None,
) -> DatasetDict:
    """The length column of ``length_modality`` (default: the first modality with a length, media (audio) before
    text: it dominates a batch's cost); recorded in ``result.length_column``."""
    if length_modality is None:
        with_length = [n for n in kind_of if get_kind(kind_of[n]).has_length]
        length_modality = min(with_length, key=lambda n: not get_kind(kind_of[n]).media, default=None)
    if length_modality is None:
        return dataset
    if length_modality not in kind_of:
        raise ValueError(
            f"`length_modality` '{length_modality}' is not among the mapped modalities {sorted(kind_of)}"
        )
    column = result.columns[length_modality]
    dataset = add_length_column(
        dataset, column, kind_of[length_modality], output_column=length_column, num_proc=num_proc
    )
    result.length_column = length_column
    return dataset


def load_fusion_dataset(
    source: str | os.PathLike | Sequence[str] | Mapping[str, str | Sequence[str]],
    columns: Mapping[str, str],
    *,
    kinds: Mapping[str, str] | FusionProcessor | None = None,
    label_column: str | None = "label",
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
    skip_bad_samples: bool = False,
    length_column: str | None = LENGTH_COLUMN,
    length_modality: str | None = None,
    split: str | None = None,
    num_proc: int | None = None,
    **load_kwargs: Any,
) -> LoadedDataset:
    """Load a dataset of raw samples for a fusion model.

    Args:
        source: a Hub dataset id; a csv/tsv/jsonl/parquet file, a list of them (one ``train`` split) or
            ``{split: file(s)}``; a folder written by ``save_to_disk``; or a local dataset folder.
        columns: modality name -> column (the collator takes the same mapping; the former column -> modality
            direction still works, with a ``FutureWarning``).
        kinds: a [`FusionProcessor`] or modality -> kind, to know which columns hold image/audio paths; by default
            a modality named like a kind (``image``, ``audio``...) has that kind.
        label_column: the label column (``None`` or absent: no labels).
        label_names: class names in id order (default: sorted string labels, or ``"0".."max"`` for ints). A
            declared set: any other label value is an error naming its split, row and value. Without it, rare
            classes and near-duplicate names (likely typos) are logged as a warning.
        num_labels: the number of classes the model has, when known (a class id beyond it is then an error,
            not a larger head).
        skip_bad_samples: bad label values (missing, non-finite, fractional class ids, multi-hot values other
            than 0/1 or of the wrong width) and missing media files are logged here and skipped, counted, by
            a collator with ``skip_bad_samples``; by default they are an error naming split, row, column and value.
        length_column: name of the added length column (``None``: none).
        length_modality: the modality whose length it holds (default: the first audio one, else the first text one).
        split: keep only this split.
        num_proc: processes for the length pass.
        load_kwargs: passed to ``datasets.load_dataset`` (``name``, ``revision``, ``token``, ``cache_dir``...).

    Relative media paths in local data files resolve against the data file's folder, not the working directory.
    A data file with no rows (a header-only csv) is an error naming the file; a missing media file is one
    naming split, row, column and path, found before anything is decoded ([`check_media_files`]).
    """
    if isinstance(kinds, FusionProcessor):
        names = kinds.modality_names
    else:
        names = list(kinds) if kinds is not None else list(kind_names())
    columns = modality_columns(columns, names, check_unknown=False)  # `_kinds` names an unknown modality
    kind_of = _kinds(columns, kinds)
    media_columns = [c for name, c in columns.items() if get_kind(kind_of[name]).media]
    dataset = _undecoded_media(_load_raw(source, media_columns, split, load_kwargs))
    for name, part in dataset.items():
        missing = [c for c in columns.values() if c not in part.column_names]
        if missing:
            raise ValueError(
                f"split '{name}': columns {missing} not found; the dataset has {part.column_names}"
            )
        if ROW_INDEX_COLUMN not in part.column_names:
            dataset[name] = part.add_column(ROW_INDEX_COLUMN, list(range(len(part))))
    result = LoadedDataset(dataset=dataset, columns=columns)
    result.missing_files = _check_media(source, dataset, columns, kind_of, skip_bad_samples)
    if label_column is not None and all(label_column in part.column_names for part in dataset.values()):
        dataset = _add_labels(result, dataset, label_column, label_names, num_labels, skip_bad_samples)
    if length_column is not None:
        dataset = _add_lengths(result, dataset, kind_of, length_column, length_modality, num_proc)
    result.dataset = dataset
    return result
