"""Keep transformers' LOAD REPORT for real problems only.

transformers 5 logs a "LOAD REPORT" table (``transformers.utils.loading_report.log_state_dict_report``, on the
``transformers.modeling_utils`` logger) whenever a checkpoint lacks weights the model class defines. A fusion
encoder may leave a part unused on purpose: a ViT or BERT pooled with ``cls``/``mean`` never runs its
``pooler``, so a checkpoint without pooler weights is expected there. ``load_encoder`` loads such an encoder
inside [`expected_missing_keys`]; the filter then drops a report only when *every* key it lists is a ``MISSING``
key matching those patterns. Any other key (or any report outside the context, e.g. ``pooling: pooler`` with a
pooler-less checkpoint, where the random pooler would be used) keeps the whole report.

Flat and self-contained (standard library only): the model code imports it, and ``save_pretrained`` copies it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
from collections.abc import Iterator

UNUSED_POOLER = (r"(^|\.)pooler\.dense\.(weight|bias)$",)
"""Parameter names an encoder lacks harmlessly when its modality pools with anything but ``pooler``."""

REPORT_LOGGER = "transformers.modeling_utils"

_expected: contextvars.ContextVar[tuple[re.Pattern, ...]] = contextvars.ContextVar(
    "expected_missing", default=()
)
_ROW = re.compile(r"^\s*(\S+)\s*\|\s*([A-Z]+)\s*\|", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _expand(key: str) -> list[str]:
    """``pooler.dense.{weight, bias}`` -> both names (the report may group keys with braces)."""
    match = re.search(r"\{([^}]*)\}", key)
    if not match:
        return [key]
    return [key[: match.start()] + part.strip() + key[match.end() :] for part in match.group(1).split(",")]


class ExpectedMissingFilter(logging.Filter):
    """Drops a LOAD REPORT whose rows are all ``MISSING`` keys expected by the active [`expected_missing_keys`]."""

    def filter(self, record: logging.LogRecord) -> bool:
        patterns = _expected.get()
        if not patterns:
            return True
        message = _ANSI.sub("", str(record.msg))
        if "LOAD REPORT" not in message:
            return True
        rows = _ROW.findall(message)
        if not rows:
            return True
        expected = all(
            status == "MISSING" and all(any(p.search(name) for p in patterns) for name in _expand(key))
            for key, status in rows
        )
        return not expected


@contextlib.contextmanager
def expected_missing_keys(patterns: tuple[str, ...] = UNUSED_POOLER) -> Iterator[None]:
    """Within the block, a LOAD REPORT listing only missing keys matching ``patterns`` is not logged."""
    target = logging.getLogger(REPORT_LOGGER)
    if not any(isinstance(f, ExpectedMissingFilter) for f in target.filters):
        target.addFilter(ExpectedMissingFilter())
    token = _expected.set(tuple(re.compile(p) for p in patterns))
    try:
        yield
    finally:
        _expected.reset(token)
