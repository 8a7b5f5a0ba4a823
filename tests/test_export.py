"""Exported inference graphs (ONNX through onnxruntime, torch.export) against the eager model, missing modalities
included, at batch sizes and sequence lengths other than the ones exported with."""

import numpy as np
import pytest
import torch
from saved_fusion import save_fusion_folder

from multimodal_fusion import FusionModel, FusionProcessor
from multimodal_fusion.inference.export import export_model, run_onnx


@pytest.fixture(scope="module", params=["wav2vec2", "wav2vec2_group"])
def folder(request, tiny_paths, tiny_dir, tmp_path_factory):
    """Layer-norm and group-norm (masked GroupNorm over each clip's valid frames) wav2vec2 audio encoders."""
    paths = {**tiny_paths, "audio": str(tiny_dir / request.param)}
    return save_fusion_folder(paths, tmp_path_factory.mktemp("export") / "model", fusion="attention")


def new_batch(processor):
    """Batch size 2 (export used 3), other text/audio lengths; row 1 misses its text, row 0 its image."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    audio = [
        {"array": rng.standard_normal(n).astype(np.float32), "sampling_rate": 16000} for n in (5000, 2500)
    ]
    return dict(processor(image=[None, image], audio=audio, text=["one two three four five six", None]))


@pytest.mark.parametrize("format", ["onnx", "torch_export"])
def test_exported_logits_equal_eager_with_a_missing_modality(folder, tmp_path, format):
    output = tmp_path / ("model.onnx" if format == "onnx" else "program.pt2")
    result = export_model(folder, output, format)
    assert result["max_abs_diff"] <= 1e-4 and output.is_file()
    model = FusionModel.from_pretrained(folder).eval()
    processor = FusionProcessor.from_pretrained(folder)
    batch = new_batch(processor)
    assert not batch["text_mask"][1] and not batch["image_mask"][0]
    with torch.no_grad():
        expected = model(**batch).logits
        all_present = model(**{k: v for k, v in batch.items() if not k.endswith("_mask")}).logits
    names = result["inputs"].split(", ")
    inputs = {name: batch.get(name, torch.ones(2, dtype=torch.bool)) for name in names}
    if format == "onnx":
        actual = torch.from_numpy(run_onnx(output, inputs))
    else:
        actual = torch.export.load(str(output)).module()(*inputs.values())
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    # the masks work in the graph: with every modality marked present the logits change
    assert (all_present - expected).abs().max() > 1e-3


def test_unknown_format_is_an_error(folder, tmp_path):
    with pytest.raises(ValueError, match="`format` must be one of"):
        export_model(folder, tmp_path / "x", "tflite")


TOKEN_FUSIONS = ["cross_attention", "bottleneck", "perceiver"]


@pytest.fixture(scope="module", params=[*TOKEN_FUSIONS, "gated", "transformer"])
def exported(request, tiny_paths, tmp_path_factory):
    """An ONNX export (through the model's own forward) of a fusion of the tiny vit + wav2vec2 + bert."""
    root = tmp_path_factory.mktemp(f"export_{request.param}")
    folder = save_fusion_folder(tiny_paths, root / "model", fusion=request.param)
    result = export_model(folder, root / "model.onnx")
    model = FusionModel.from_pretrained(folder).eval()
    return model, FusionProcessor.from_pretrained(folder), root / "model.onnx", result


def test_every_fusion_exports_and_equals_eager_with_missing_rows(exported):
    model, processor, onnx_path, result = exported
    assert result["max_abs_diff"] <= 1e-4
    batch = new_batch(processor)
    assert not batch["text_mask"][1] and not batch["image_mask"][0]
    with torch.no_grad():
        expected = model(**batch).logits  # eager: encoders on the present rows only
        all_present = model(**{k: v for k, v in batch.items() if not k.endswith("_mask")}).logits
    # the batch as the processor made it: it has no audio_mask, which run_onnx fills with all-True
    assert "audio_mask" not in batch and "audio_mask" in result["inputs"].split(", ")
    actual = torch.from_numpy(run_onnx(onnx_path, batch))
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=0)
    assert (all_present - expected).abs().max() > 1e-3  # the masks reach the graph


def test_a_processor_batch_without_mask_keys_runs_as_is(exported):
    model, processor, onnx_path, _ = exported
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (32, 36, 3), dtype=np.uint8) for _ in range(4)]
    audio = [
        {"array": rng.standard_normal(n).astype(np.float32), "sampling_rate": 16000}
        for n in (3000, 6000, 4000, 3500)
    ]
    texts = ["one", "two three", "four five six seven", "eight nine"]
    batch = dict(processor(image=images, audio=audio, text=texts))
    assert not any(k.endswith("_mask") and k.count("_") == 1 for k in batch)  # every modality present
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(torch.from_numpy(run_onnx(onnx_path, batch)), expected, atol=1e-4, rtol=0)


def test_export_without_mask_inputs(tiny_paths, tmp_path):
    folder = save_fusion_folder(tiny_paths, tmp_path / "model", fusion="cross_attention")
    result = export_model(folder, tmp_path / "model.onnx", masks=False)
    assert not [n for n in result["inputs"].split(", ") if n.count("_") == 1 and n.endswith("_mask")]
    model, processor = FusionModel.from_pretrained(folder).eval(), FusionProcessor.from_pretrained(folder)
    rng = np.random.default_rng(3)
    audio = [
        {"array": rng.standard_normal(n).astype(np.float32), "sampling_rate": 16000} for n in (5000, 2500)
    ]
    batch = dict(
        processor(
            image=[rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)] * 2, audio=audio, text=["a b", "c"]
        )
    )
    with torch.no_grad():
        expected = model(**batch).logits
    torch.testing.assert_close(
        torch.from_numpy(run_onnx(tmp_path / "model.onnx", batch)), expected, atol=1e-4, rtol=0
    )
    with pytest.raises(ValueError, match="the batch has no 'text_input_ids'"):
        run_onnx(tmp_path / "model.onnx", {k: v for k, v in batch.items() if k != "text_input_ids"})
