"""Pre-processing for module encoders: default image processor, frames (feature extractor or precomputed), tokenizer."""

import runpy
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from own_networks import TextTransformer
from torch import nn
from transformers import AutoTokenizer, Speech2TextFeatureExtractor

from multimodal_fusion import FusionModel, FusionProcessor
from multimodal_fusion.model.bad_samples import BadSampleError

SMALL = {"projection_dim": 16, "fusion_hidden_size": 16}
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def test_default_image_processor_resizes_and_normalises_with_imagenet_statistics(tmp_path):
    spec = {"module": "torchvision.models:resnet18", "kind": "image", "image_size": 24}
    processor = FusionProcessor.from_encoders({"image": spec})
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    batch = processor(image=[PIL.Image.fromarray(pixels), PIL.Image.new("RGB", (50, 31))])
    assert batch["image_pixel_values"].shape == (2, 3, 24, 24)
    expected = ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1)  # independent: the ImageNet recipe
    np.testing.assert_allclose(batch["image_pixel_values"][0].numpy(), expected, atol=1e-5)
    processor.save_pretrained(tmp_path)
    reloaded = FusionProcessor.from_pretrained(tmp_path)
    assert torch.equal(
        reloaded(image=[PIL.Image.fromarray(pixels)])["image_pixel_values"][0], batch["image_pixel_values"][0]
    )


def test_precomputed_frames_are_padded_with_a_mask_and_feed_an_lstm(tmp_path):
    lstm = nn.LSTM(input_size=6, hidden_size=8, batch_first=True)
    encoders = {"audio": {"module": lstm, "kind": "audio"}}
    model = FusionModel.from_encoders(encoders, num_labels=2, **SMALL).eval()
    processor = FusionProcessor.from_encoders(model.config.modalities)  # input_dim recorded by the model
    frames = [np.random.default_rng(i).normal(size=(t, 6)).astype(np.float32) for i, t in enumerate((5, 3))]
    batch = processor(audio=frames)
    assert batch["audio_input_features"].shape == (2, 5, 6)
    assert batch["audio_attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    pooled = model.get_modality_embeddings(**batch)["audio"]
    with torch.no_grad():
        assert torch.allclose(pooled[1], lstm(torch.from_numpy(frames[1])[None])[0][0, -1], atol=1e-6)
    with pytest.raises(BadSampleError, match="audio.*expected \\(frames >= 1, 6\\)"):
        processor(audio=[np.zeros((4, 5))])
    processor.save_pretrained(tmp_path)
    reloaded = FusionProcessor.from_pretrained(tmp_path)
    assert torch.equal(reloaded(audio=frames)["audio_input_features"], batch["audio_input_features"])


def test_feature_extractor_frames_and_tokenizer_folder(tiny_dir, tmp_path):
    extractor = Speech2TextFeatureExtractor(feature_size=40, num_mel_bins=40)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "bert")
    encoders = {
        "audio": {"module": "torch.nn:LSTM", "kind": "audio", "processor": extractor,
                  "module_kwargs": {"input_size": 40, "hidden_size": 8, "batch_first": True}},
        "text": {"module": TextTransformer(vocab_size=tokenizer.vocab_size), "kind": "text", "path": tiny_dir / "bert"},
    }  # fmt: skip
    processor = FusionProcessor.from_encoders(encoders)
    waves = [
        np.random.default_rng(0).normal(size=16000).astype(np.float32),
        np.random.default_rng(1).normal(size=8000).astype(np.float32),
    ]
    batch = processor(audio=waves, text=["one two", "the digit is nine"], sampling_rate=16000)
    reference = extractor(
        waves, sampling_rate=16000, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    assert torch.equal(batch["audio_input_features"], reference["input_features"])
    assert torch.equal(
        batch["text_input_ids"],
        tokenizer(["one two", "the digit is nine"], padding=True, return_tensors="pt")["input_ids"],
    )
    model_specs = {
        name: {k: v for k, v in spec.items() if k != "processor"} for name, spec in encoders.items()
    }
    model = FusionModel.from_encoders(model_specs, num_labels=2, **SMALL)
    assert model(**batch).logits.shape == (2, 2)


def test_own_networks_example_runs(tmp_path):
    """examples/own_networks.py: both scenarios, processor -> train steps -> save -> reload (identical logits)."""
    example = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "own_networks.py"))
    example["main"](["--image-size", "32", "--steps", "1", "--output-dir", str(tmp_path)])
    assert (tmp_path / "scenario_a" / "model.safetensors").is_file() and (tmp_path / "resnet18.pth").is_file()


def test_embedding_cache_and_data_pipeline_with_module_encoders(tiny_dir, tmp_path):
    """Files on disk -> load_fusion_dataset -> collator -> module encoders; cached vectors give the live logits."""
    from tiny_data import write_tiny_dataset

    from multimodal_fusion import (
        FusionDataCollator,
        cache_embeddings,
        embedding_fingerprint,
        load_fusion_dataset,
    )

    files = write_tiny_dataset(tmp_path / "data", n_train=6, n_eval=2, missing_every=3)
    tokenizer_folder = tiny_dir / "bert"
    encoders = {
        "image": {"module": "torchvision.models:resnet18", "kind": "image", "feature_layer": "avgpool", "image_size": 32},
        "audio": {"module": "torch.nn:LSTM", "kind": "audio",
                  "processor": Speech2TextFeatureExtractor(feature_size=40, num_mel_bins=40),
                  "module_kwargs": {"input_size": 40, "hidden_size": 8, "batch_first": True}},
        "text": {"module": "own_networks:TextTransformer", "kind": "text", "path": tokenizer_folder,
                 "module_kwargs": {"vocab_size": AutoTokenizer.from_pretrained(tokenizer_folder).vocab_size}},
    }  # fmt: skip
    processor = FusionProcessor.from_encoders(encoders)
    model_specs = {
        name: {k: v for k, v in spec.items() if k != "processor"} for name, spec in encoders.items()
    }
    model = FusionModel.from_encoders(model_specs, trainable_layers=0, num_labels=3, **SMALL).eval()
    columns = {"image": "image", "audio": "audio", "text": "text"}
    loaded = load_fusion_dataset({k: str(v) for k, v in files.items()}, columns, kinds=processor)
    cached = cache_embeddings(loaded.dataset["train"], model, processor, loaded.columns, batch_size=4)
    rows = list(cached)
    cached_batch = FusionDataCollator(processor, loaded.columns)(rows)
    live_batch = FusionDataCollator(processor, loaded.columns, embeds_columns={})(rows)
    assert "audio_embeds" in cached_batch and "audio_input_features" in live_batch
    with torch.no_grad():
        assert (model(**live_batch).logits - model(**cached_batch).logits).abs().max() <= 1e-5
    before = embedding_fingerprint(model, processor, "text")
    model.encoders["text"].module.positions.data[0, 0] += 1.0
    assert embedding_fingerprint(model, processor, "text") != before
