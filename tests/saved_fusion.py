"""A saved fusion model folder (model + processor) over the tiny encoders, with raw files to feed it."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny_data import LABELS, write_tiny_dataset

from multimodal_fusion import FusionModel, FusionProcessor

ID2LABEL = dict(enumerate(LABELS))


def save_fusion_folder(paths: dict[str, str], folder: Path, fusion: str = "gated", seed: int = 0) -> Path:
    """``folder`` with a randomly initialised (untrained) fusion of ``paths``; its head is scaled up so classes
    get clearly different scores."""
    torch.manual_seed(seed)
    model = FusionModel.from_encoders(
        paths, fusion=fusion, projection_dim=32, fusion_hidden_size=32, fusion_heads=2,
        id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()},
    )  # fmt: skip
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    model.save_pretrained(folder)
    FusionProcessor.from_encoders(paths).save_pretrained(folder)
    return folder


def raw_files(root: Path) -> dict[str, Path]:
    """The tiny dataset's csv files (and images/audio beside them)."""
    return write_tiny_dataset(root, n_train=6, n_eval=6, missing_every=3)
