"""Continuing from a fusion checkpoint: the data's class ids follow the checkpoint's classes by *name*.

``load_fusion_dataset`` numbers classes from the data alone (sorted names), so a subset of the checkpoint's
classes, or the same names in another order, would get other ids than the checkpoint's head rows. Here each
split's label column is re-encoded through the checkpoint's ``label2id``. A class the checkpoint does not know is
an error listing them, unless ``extend_labels``: then the head (and the auxiliary heads) get new rows for the new
classes, initialised like a new head, the existing rows kept bit for bit.
"""

from __future__ import annotations

import re

import torch
from datasets import ClassLabel
from torch import nn

from ..data.data_loading import LoadedDataset
from ..model.modeling_fusion import FusionModel

_DEFAULT_NAME = re.compile(r"^LABEL_(\d+)$")


def checkpoint_label_names(model: FusionModel) -> list[str]:
    """The checkpoint's class names in id order; transformers' placeholder names ``LABEL_i`` read as ``"i"`` (what
    integer labels are called in the data)."""
    names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    if all(_DEFAULT_NAME.match(name) for name in names):
        names = [_DEFAULT_NAME.match(name).group(1) for name in names]
    return names


def align_labels_to_checkpoint(loaded: LoadedDataset, model: FusionModel, extend: bool = False) -> list[str]:
    """Re-encode ``loaded``'s single-label class ids as the checkpoint ``model``'s ids, matched by name.

    Returns the names of classes the checkpoint did not know (added after its classes, in the data's order; empty
    unless ``extend``). Multi-hot labels must have the checkpoint's width (positions are its classes); regression
    labels need nothing.

    Raises:
        ValueError: a class name of the data is not one of the checkpoint's (and not ``extend``), or a multi-hot
            width differs from the checkpoint's ``num_labels``.
    """
    if loaded.label_column is None or loaded.problem_type == "regression":
        return []
    known = checkpoint_label_names(model)
    if loaded.problem_type == "multi_label_classification":
        if loaded.num_labels != len(known):
            raise ValueError(
                f"label column '{loaded.label_column}': multi-hot labels of width {loaded.num_labels}, but the "
                f"checkpoint has {len(known)} classes {known} (positions are the checkpoint's classes)"
            )
        return []
    data_names = [str(loaded.id2label[i]) for i in sorted(loaded.id2label)]
    added = [name for name in data_names if name not in known]
    if added and not extend:
        raise ValueError(
            f"label column '{loaded.label_column}': classes {added} are not classes of the checkpoint (its classes: "
            f"{known}); set `extend_labels: true` to add them to the head as new classes"
        )
    names = known + added
    new_id = {old: names.index(name) for old, name in enumerate(data_names)}
    column = loaded.label_column
    for split, part in loaded.dataset.items():
        features = part.features.copy()
        features[column] = ClassLabel(names=names)
        part = part.map(
            lambda batch: {column: [None if v is None else new_id.get(v, v) for v in batch[column]]},
            batched=True,
            features=features,
            desc=f"mapping labels to the checkpoint's classes ({split})",
        )
        loaded.dataset[split] = part
    loaded.id2label = dict(enumerate(names))
    loaded.label2id = {name: i for i, name in enumerate(names)}
    loaded.num_labels = len(names)
    return added


def extend_classification_heads(model: FusionModel, added: list[str]) -> None:
    """Append one output row per name in ``added`` to the classifier and every auxiliary head, and to the config's
    ``id2label`` / ``label2id``. Existing rows are copied bit for bit; new weights ~ N(0, initializer_range), new
    biases 0 (the head's own initialisation)."""
    if not added:
        return
    old = model.config.num_labels
    names = checkpoint_label_names(model) + list(added)
    std = model.config.initializer_range

    def grow(linear: nn.Linear) -> nn.Linear:
        bigger = nn.Linear(
            linear.in_features, len(names), device=linear.weight.device, dtype=linear.weight.dtype
        )
        with torch.no_grad():
            nn.init.normal_(bigger.weight, std=std)
            nn.init.zeros_(bigger.bias)
            bigger.weight[:old] = linear.weight
            bigger.bias[:old] = linear.bias
        bigger.weight.requires_grad_(linear.weight.requires_grad)
        bigger.bias.requires_grad_(linear.bias.requires_grad)
        return bigger

    model.classifier = grow(model.classifier)
    if model.aux_heads is not None:
        for name in list(model.aux_heads):
            model.aux_heads[name] = grow(model.aux_heads[name])
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    if model.config.num_labels != len(names):
        raise RuntimeError(
            f"config.num_labels {model.config.num_labels} != {len(names)} classes after extending"
        )
