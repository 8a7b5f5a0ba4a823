"""Merge your own pretrained PyTorch networks into one model and train it end to end, offline.

Scenario A: torchvision VGG16 (images) + a 2-layer LSTM over 40-dim speech frames (its last valid step) + a
token-embedding + TransformerEncoder text network (first position); all frozen; concat + MLP head; 10 classes.
Scenario B: torchvision ResNet-18 (images, from a local ``.pth`` state dict) + an MLP on a 100-dim vector +
torchvision MobileNetV2 (a second camera); everything frozen except ResNet's ``layer4``, the MLP's last
``Linear`` and MobileNet's ``features.17``; 5 classes.

The weights are random here (``weights=None``): swap in your own state-dict files. Run:
``python examples/own_networks.py --image-size 64 --steps 3``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn

from multimodal_fusion import FusionModel, FusionProcessor
from multimodal_fusion.demo.text_tokenizer import train_wordpiece_tokenizer


class TextEncoder(nn.Module):
    """Token embedding + learned positions + ``nn.TransformerEncoder`` (batch_first); output ``[B, T, 64]``."""

    def __init__(self, vocab_size: int, d_model: int = 64, max_length: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(torch.randn(max_length, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, 4, 128, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.embed(input_ids) + self.positions[: input_ids.shape[1]]
        padding = None if attention_mask is None else ~attention_mask.bool()
        return self.encoder(hidden, src_key_padding_mask=padding)


def train_a_few_steps(model: FusionModel, batch: dict, labels: torch.Tensor, steps: int) -> list[float]:
    """Plain AdamW steps on one batch (use FusionTrainer / training/run.py for real data)."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


def scenario_a(folder: Path, image_size: int, steps: int) -> FusionModel:
    texts = ["a dog barks twice", "rain on the window", "the engine starts", "a bird sings"]
    tokenizer = train_wordpiece_tokenizer(texts * 10, vocab_size=200)
    tokenizer.save_pretrained(folder / "tokenizer")  # "the user's tokenizer folder"
    text_network = TextEncoder(vocab_size=len(tokenizer))
    encoders = {
        # by import path: rebuilt from it when the saved model is loaded
        "image": {"module": "torchvision.models:vgg16", "kind": "image", "feature_layer": "features",
                  "image_size": image_size},
        "audio": {"module": "torch.nn:LSTM", "kind": "audio", "input_dim": 40,
                  "module_kwargs": {"input_size": 40, "hidden_size": 128, "num_layers": 2, "batch_first": True}},
        # an instance: passed back with FusionModel.from_pretrained(dir, encoders={"text": network})
        "text": {"module": text_network, "kind": "text", "path": str(folder / "tokenizer")},
    }  # fmt: skip
    model = FusionModel.from_encoders(encoders, trainable_layers=0, fusion="concat", num_labels=10)
    processor = FusionProcessor.from_encoders(encoders)  # ImageNet resize/normalise; frames; the tokenizer
    rng = np.random.default_rng(0)
    batch = processor(
        image=[Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(4)],
        audio=[rng.normal(size=(n, 40)).astype(np.float32) for n in (30, 22, 41, 9)],  # precomputed frames
        text=texts,
    )
    losses = train_a_few_steps(model, batch, torch.tensor([0, 3, 7, 9]), steps)
    print(f"scenario A: poolings {[s.pooling for s in model.config.modalities.values()]}, loss {losses}")
    model.eval().save_pretrained(folder / "scenario_a")
    reloaded = FusionModel.from_pretrained(
        folder / "scenario_a", encoders={"text": TextEncoder(len(tokenizer))}
    )
    with torch.no_grad():
        assert torch.equal(reloaded.eval()(**batch).logits, model(**batch).logits)
    return model


def scenario_b(folder: Path, image_size: int, steps: int) -> FusionModel:
    # "pretrained" ResNet-18: a complete torchvision state dict (fc included) in a local .pth file
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), folder / "resnet18.pth")
    encoders = {
        "image": {"module": "torchvision.models:resnet18", "kind": "image", "weights": str(folder / "resnet18.pth"),
                  "feature_layer": "avgpool", "trainable_modules": ["layer4"], "image_size": image_size},
        "sensors": {"module": nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 64)),
                    "kind": "features", "trainable_modules": ["2"]},
        "camera2": {"module": "torchvision.models:mobilenet_v2", "kind": "image", "feature_layer": "flatten",
                    "trainable_modules": ["features.17"], "image_size": image_size},
    }  # fmt: skip
    model = FusionModel.from_encoders(encoders, num_labels=5)
    trainable = sorted(
        {".".join(n.split(".")[:4]) for n, p in model.encoders.named_parameters() if p.requires_grad}
    )
    print(f"scenario B: trainable encoder parts {trainable}")
    rng = np.random.default_rng(1)
    processor = FusionProcessor.from_encoders(
        model.config.modalities
    )  # input_dim of the MLP recorded by the model
    images = [Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)) for _ in range(4)]
    batch = processor(
        image=images, camera2=images[::-1], sensors=rng.normal(size=(4, 100)).astype(np.float32)
    )
    print(f"scenario B: loss {train_a_few_steps(model, batch, torch.tensor([0, 1, 2, 4]), steps)}")
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.output_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        scenario_a(folder, args.image_size, args.steps)
        scenario_b(folder, args.image_size, args.steps)


if __name__ == "__main__":
    main()
