"""Offline demo: a generated tri-modal digits dataset and stage 1, pretraining one tiny encoder per modality.

Names are imported lazily so ``python -m multimodal_fusion.demo.dataset`` / ``.pretrain`` run their module
once (an eager import here would load it a second time, with a runpy warning).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

DEMO_REQUIREMENTS = {"sklearn": "scikit-learn", "matplotlib": "matplotlib", "tokenizers": "tokenizers"}
"""Import name -> distribution of what the demo needs beyond the library (the ``demo`` extra)."""


def require_demo_extra() -> None:
    """Raise a clear ``ImportError`` naming the ``demo`` extra when one of its packages is missing."""
    missing = []
    for module, distribution in DEMO_REQUIREMENTS.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # ValueError: a module blocked with sys.modules[name] = None
            found = False
        if not found:
            missing.append(distribution)
    if missing:
        raise ImportError(
            f"the demo needs {missing}, which are not installed; install the demo extra: "
            'pip install "multimodal-fusion[demo]"'
        )


require_demo_extra()

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
