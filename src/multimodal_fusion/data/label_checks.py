"""Warnings about label names that look like mistakes, for data loaded without a declared label set.

A typo in a label cell ('dgo' for 'dog') silently becomes a class of its own: the model gets an extra head row
and the typo'd rows count as wrong. [`label_warnings`] names classes with very few rows and pairs of class
names that are nearly the same; a declared label set (``label_names``) turns any other value into an error
instead (see ``encode_labels``).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)

RARE_ROWS = 2
"""A class with fewer rows than this is always named."""
RARE_SHARE = 0.01
"""A class with fewer than this share of the rows is named too, when it also has under a tenth of the median
class's rows (so that many balanced classes of under 1% each are not all named)."""
SIMILAR_RATIO = 0.8
"""``difflib.SequenceMatcher.ratio`` at or above which two names are near duplicates."""
MAX_PAIR_CHECK = 2000
"""Above this many classes the pairwise name check is skipped (it is quadratic)."""


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance: insertions, deletions, substitutions and adjacent transpositions
    each cost 1 (``'dgo'`` -> ``'dog'`` is 1)."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


def _numbering(name: str) -> str:
    return re.sub(r"\d+", "#", name)


def near_duplicate(a: str, b: str) -> bool:
    """Whether two class names look like one name mistyped: equal ignoring case and surrounding spaces, or
    (``difflib`` ratio >= 0.8, or an edit distance of 1 between names of 3+ characters). Names that differ only
    in their numbers (``class_1`` / ``class_2``, ``1`` / ``2``) are a numbering, not a typo."""
    if a.strip().casefold() == b.strip().casefold():
        return True
    if _numbering(a) == _numbering(b):
        return False
    if min(len(a), len(b)) >= 3 and abs(len(a) - len(b)) <= 1 and edit_distance(a, b) <= 1:
        return True
    matcher = difflib.SequenceMatcher(None, a, b)
    return matcher.real_quick_ratio() >= SIMILAR_RATIO and matcher.ratio() >= SIMILAR_RATIO


def rare_classes(counts: Mapping[str, int]) -> list[str]:
    """Classes with under 2 rows, or under 1% of the rows and under a tenth of the median class's rows."""
    total = sum(counts.values())
    ordered = sorted(counts.values())
    median = ordered[len(ordered) // 2] if ordered else 0
    return [
        name
        for name, count in counts.items()
        if count < RARE_ROWS or (count < RARE_SHARE * total and count * 10 < median)
    ]


def similar_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Pairs of names that [`near_duplicate`] says look alike (none above ``MAX_PAIR_CHECK`` names)."""
    if len(names) > MAX_PAIR_CHECK:
        return []
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1 :] if near_duplicate(a, b)]


def label_warnings(label_column: str, counts: Mapping[Any, int]) -> list[str]:
    """The messages about rare classes and near-duplicate names among ``counts`` (class -> rows); empty when
    nothing looks wrong. Near-duplicate names are checked for string classes only."""
    messages = []
    by_name = {str(k): v for k, v in counts.items()}
    rare = rare_classes(by_name)
    if rare:
        shown = ", ".join(f"{name!r} ({by_name[name]} row{'s' * (by_name[name] != 1)})" for name in rare[:10])
        messages.append(
            f"label column '{label_column}': {len(rare)} class(es) with very few rows of {sum(by_name.values())}: "
            f"{shown}"
        )
    if all(isinstance(k, str) for k in counts):
        pairs = similar_pairs(sorted(by_name))
        if pairs:
            shown = ", ".join(f"{a!r} ({by_name[a]}) / {b!r} ({by_name[b]})" for a, b in pairs[:10])
            messages.append(
                f"label column '{label_column}': class names that look like typos of each other: {shown}"
            )
    if messages:
        messages.append("if these are real classes, pass `label_names` (all class names) to declare them")
    return messages


def count_labels(values: list[Any]) -> Counter:
    """Rows per class value (missing labels not counted)."""
    return Counter(v for v in values if v is not None)


def warn_about_labels(dataset: Mapping[str, Any], label_column: str) -> list[str]:
    """Log (one warning) and return [`label_warnings`] for the label values of every split of ``dataset``."""
    counts = count_labels([v for split in dataset.values() for v in split[label_column]])
    messages = label_warnings(label_column, counts)
    if messages:
        logger.warning("; ".join(messages))
    return messages
