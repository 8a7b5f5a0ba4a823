"""Every fusion of the package, in its two tables: the pooled fusions (``fusion_layers.POOLED_FUSIONS``) and the
token-level ones (``token_fusion_layers`` registers them in ``fusion_layers.TOKEN_FUSIONS``). Importing this file
imports both modules, so the tables are complete; the model and the config ask here.
"""

from __future__ import annotations

from torch import nn

from .fusion_layers import POOLED_FUSIONS
from .registry import RegistryUnion
from .token_fusion_layers import (
    TOKEN_FUSIONS,  # importing it fills the table (cross_attention, bottleneck, perceiver)
)

FUSION_REGISTRY = RegistryUnion("fusion", POOLED_FUSIONS, TOKEN_FUSIONS)
"""Every fusion by name, pooled first (read-only; register in ``POOLED_FUSIONS`` or ``TOKEN_FUSIONS``)."""


def fusion_class(name: str) -> type[nn.Module]:
    """The fusion class registered as ``name`` (KeyError listing the names otherwise)."""
    return FUSION_REGISTRY.get(name)


def is_token_level(name: str) -> bool:
    """Whether fusion ``name`` takes token sequences (registered in ``TOKEN_FUSIONS``) rather than one pooled
    vector per modality."""
    return name in TOKEN_FUSIONS
