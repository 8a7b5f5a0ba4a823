"""Offline demo: a generated tri-modal digits dataset and stage 1, pretraining one tiny encoder per modality.

Names are imported lazily so ``python -m multimodal_fusion.demo.dataset`` / ``.pretrain`` run their module
once (an eager import here would load it a second time, with a runpy warning).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "generate_demo_dataset": "dataset",
    "pretrain_unimodal": "pretrain",
    "train_wordpiece_tokenizer": "text_tokenizer",
    "UnimodalClassifier": "unimodal",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
