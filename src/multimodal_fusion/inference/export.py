"""Export a fusion model's inference graph for serving: ONNX (onnxruntime) or a ``torch.export`` program.

The graph takes the processor's tensors and returns logits. Inputs, in this order, per modality of the model:
its batch fields (``image_pixel_values``; ``audio_input_values``, ``audio_attention_mask``; ``text_input_ids``,
``text_attention_mask`` (+ ``text_token_type_ids``); ``sensors_values``) and ``{name}_mask`` (bool ``[B]``, False =
missing). Axis 0 (batch) of every input and axis 1 of audio samples and text tokens are dynamic.

Unlike the eager model, which runs an encoder only on the rows where its modality is present, the graph runs
every encoder on every row (a graph cannot change shape by data) and then replaces a missing row's vector with the
learned missing-modality placeholder; the fusion gets the same masks. So a missing row needs a placeholder input
of the right shape, as the processor's padded batch holds. [`export_model`] checks the exported graph against the
eager model on a batch with a missing modality and raises when the logits differ by more than ``atol``.

A wav2vec2 encoder with group normalisation (the ``base`` checkpoints) normalises over each clip's valid frames
only (the masked GroupNorm of ``encoder_adapters``), in the graph as in the eager model, so it is exact at any
padding. Families that the eager model encodes length by length (``exact_by_unpadding``: Data2VecAudio,
Wav2Vec2-Conformer, SEW) are exact in the graph only on unpadded (equal-length) audio.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import nn

from ..model.configuration_fusion import KIND_FIELDS
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torch_export")
SEQUENCE_FIELDS = {
    "audio": ("input_values", "attention_mask"),
    "text": KIND_FIELDS["text"][0] + KIND_FIELDS["text"][1],
}
"""Per kind: the fields whose axis 1 is a dynamic sequence axis."""


class FusionInferenceGraph(nn.Module):
    """``FusionModel`` inference as a fixed-shape graph: ``forward(*tensors)`` in ``input_names`` order -> logits
    ``[B, num_labels]``. Dropout and modality dropout are off (eval mode)."""

    def __init__(self, model: FusionModel, input_names: list[str]):
        super().__init__()
        self.model = model.eval()
        self.input_names = list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.input_names, tensors, strict=True))
        model = self.model
        projected, masks = [], []
        for name in model.config.modalities:
            prefix = f"{name}_"
            fields = {
                k[len(prefix) :]: v for k, v in inputs.items() if k.startswith(prefix) and k != f"{name}_mask"
            }
            mask = inputs[f"{name}_mask"].to(torch.bool)
            vectors = model.projections[name](model._run_encoder(name, fields))
            placeholder = model.missing_embeddings[name].to(vectors.dtype).unsqueeze(0)
            projected.append(torch.where(mask.unsqueeze(1), vectors, placeholder))
            masks.append(mask)
        fused = model.fusion(torch.stack(projected, dim=1), torch.stack(masks, dim=1))
        return model.classifier(fused.fused)


def example_batch(
    processor: FusionProcessor, model: FusionModel, batch_size: int = 3
) -> dict[str, torch.Tensor]:
    """A processor batch of synthetic samples of different lengths; the last sample misses its first modality
    (for checking the masks). Every modality gets an explicit ``{name}_mask``."""
    rng = np.random.default_rng(0)
    inputs: dict[str, list[Any]] = {}
    for name, spec in processor.modalities.items():
        kind = spec["kind"]
        if kind == "image":
            samples = [
                PIL.Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8))
                for i in range(batch_size)
            ]
        elif kind == "audio":
            rate = spec["sampling_rate"]
            samples = [{"array": rng.standard_normal(int(rate * (0.2 + 0.1 * i))).astype(np.float32),
                        "sampling_rate": rate} for i in range(batch_size)]  # fmt: skip
        elif kind == "text":
            samples = [" ".join(["a short sample"] * (i + 1)) for i in range(batch_size)]
        else:
            samples = [rng.standard_normal(spec["input_dim"]).astype(np.float32) for _ in range(batch_size)]
        inputs[name] = samples
    first = next(iter(inputs))
    inputs[first][-1] = None
    batch = dict(processor(**inputs, return_tensors="pt"))
    for name in model.config.modalities:
        batch.setdefault(f"{name}_mask", torch.ones(batch_size, dtype=torch.bool))
    return batch


def graph_inputs(model: FusionModel, batch: Mapping[str, torch.Tensor]) -> list[str]:
    """Input names in graph order: per modality (model order) its fields in the batch, then its mask."""
    names = []
    for name in model.config.modalities:
        adapter = model.adapters[name]
        fields = (*adapter.input_fields, *adapter.optional_fields)
        names += [f"{name}_{f}" for f in fields if f"{name}_{f}" in batch]
        names.append(f"{name}_mask")
    return names


def _dynamic_shapes(model: FusionModel, input_names: list[str]) -> tuple[dict[int, Any], ...]:
    dynamic = torch.export.Dim.DYNAMIC
    shapes = []
    for input_name in input_names:
        axes = {0: dynamic}
        for name, spec in model.config.modalities.items():
            field = input_name[len(name) + 1 :]
            if input_name.startswith(f"{name}_") and field in SEQUENCE_FIELDS.get(spec["kind"], ()):
                axes[1] = dynamic
        shapes.append(axes)
    return tuple(shapes)


def _export_program(
    graph: FusionInferenceGraph, args: tuple, model: FusionModel
) -> torch.export.ExportedProgram:
    return torch.export.export(
        graph, args, dynamic_shapes=(_dynamic_shapes(model, graph.input_names),), strict=False
    )


def export_model(
    model_dir: str | Path | FusionModel,
    output: str | Path,
    format: str = "onnx",
    *,
    processor: FusionProcessor | None = None,
    opset: int = 18,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export the inference graph of ``model_dir`` (a saved folder, or a model with ``processor``) to ``output``
    and verify it against the eager model on a batch with a missing modality.

    Returns ``{"output", "inputs", "max_abs_diff"}``. Raises ``ValueError`` for an unknown ``format`` and
    ``AssertionError`` when the exported logits differ from eager ones by more than ``atol``.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"`format` must be one of {EXPORT_FORMATS}, got {format!r}")
    if isinstance(model_dir, FusionModel):
        model = model_dir
        if processor is None:
            raise ValueError("pass the model's `processor` with a model object")
    else:
        model = FusionModel.from_pretrained(model_dir)
        processor = processor or FusionProcessor.from_pretrained(model_dir)
    model = model.float().cpu().eval()
    batch = example_batch(processor, model)
    input_names = graph_inputs(model, batch)
    graph = FusionInferenceGraph(model, input_names).eval()
    args = tuple(batch[n] for n in input_names)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = model(**batch).logits
        program = _export_program(graph, args, model)
        if format == "torch_export":
            torch.export.save(program, str(output))
            actual = torch.export.load(str(output)).module()(*args)
        else:
            torch.onnx.export(program, args, str(output), input_names=input_names, output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=False)  # fmt: skip
            actual = torch.from_numpy(run_onnx(output, {n: batch[n] for n in input_names}))
    diff = float((actual - expected).abs().max())
    if diff > atol:
        raise AssertionError(f"exported logits differ from the eager model's by {diff:.2e} (> {atol})")
    logger.info(
        f"export: {output} ({format}); max |exported - eager| = {diff:.2e} on a batch with a missing modality"
    )
    return {"output": str(output), "inputs": ", ".join(input_names), "max_abs_diff": diff}


def run_onnx(path: str | Path, inputs: Mapping[str, torch.Tensor]) -> np.ndarray:
    """Logits of an exported ONNX graph through onnxruntime (CPU)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return session.run(["logits"], {k: v.numpy() for k, v in inputs.items() if k in names})[0]
