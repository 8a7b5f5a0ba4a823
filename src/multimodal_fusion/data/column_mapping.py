"""Which dataset column feeds which modality: ``columns`` is modality -> column everywhere (training config,
[`FusionDataCollator`], [`load_fusion_dataset`], the embedding cache, ``score_dataset``), defaulting to the column
named like the modality. Built here, once."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping


def modality_columns(
    columns: Mapping[str, str] | None, modality_names: Iterable[str], *, check_unknown: bool = True
) -> dict[str, str]:
    """``columns`` as a checked modality -> column dict (default: each modality reads the column of its name).

    The former direction, column -> modality, is still accepted for one release with a ``FutureWarning``: it is
    recognised when some key is not a modality name while every value is one (a mapping whose keys are all
    modality names is read as modality -> column). ``check_unknown=False`` lets keys outside ``modality_names``
    through (when the caller checks the modalities itself).

    Raises:
        ValueError: a key that is not a modality (naming the modalities), or, in the former direction, one
            modality read from two columns.
    """
    names = list(modality_names)
    if columns is None:
        return {name: name for name in names}
    columns = dict(columns)
    if not set(columns) <= set(names) and set(columns.values()) <= set(names):
        warnings.warn(
            f"`columns` {columns} maps column -> modality; it now maps modality -> column (as in the training "
            "config). The old direction is accepted for one release; swap keys and values.",
            FutureWarning,
            stacklevel=3,
        )
        inverted: dict[str, str] = {}
        for column, name in columns.items():
            if name in inverted:
                raise ValueError(
                    f"modality '{name}' is read from two columns, '{inverted[name]}' and '{column}'"
                )
            inverted[name] = column
        columns = inverted
    unknown = sorted(set(columns) - set(names))
    if unknown and check_unknown:
        raise ValueError(
            f"`columns` (modality -> column) names unknown modalities {unknown}; the modalities are {names}"
        )
    bad = {name: column for name, column in columns.items() if not isinstance(column, str)}
    if bad:
        raise ValueError(f"`columns` must map each modality to a column name (a string); got {bad}")
    return columns
