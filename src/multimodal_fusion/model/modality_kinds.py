"""The modality kinds of the package, registered by explicit import (one file per kind), and the query API:
``get_kind(name)``, ``kind_names()``, ``kind_of_processor(processor)``. Everything that depends on a kind asks its
[`ModalityKind`] here; a kind you add registers itself with ``register_modality_kind`` (see ``modality_kind``)."""

from __future__ import annotations

from typing import Any

# registration order = the order kinds are listed and a sub-processor's kind is looked up
# isort: off
from .kind_image import ImageKind
from .kind_audio import AudioKind
from .kind_text import TextKind
from .kind_features import FeaturesKind

# isort: on
from .modality_kind import (
    MODALITY_KIND_REGISTRY,
    ModalityKind,
    get_kind,
    kind_class_path,
    kind_names,
    reads_encoder,
    register_modality_kind,
)

__all__ = [
    "MODALITY_KIND_REGISTRY",
    "AudioKind",
    "FeaturesKind",
    "ImageKind",
    "ModalityKind",
    "TextKind",
    "get_kind",
    "kind_class_path",
    "kind_names",
    "kind_of_processor",
    "reads_encoder",
    "register_modality_kind",
]


def kind_of_processor(processor: Any) -> str | None:
    """The kind whose sub-processor type ``processor`` has (an image processor -> ``image``...), ``None`` when no
    kind takes it."""
    if processor is None:
        return None
    for name in kind_names():
        if get_kind(name).accepts_processor(processor):
            return name
    return None
