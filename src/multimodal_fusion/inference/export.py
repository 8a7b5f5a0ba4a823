"""Export a fusion model's inference graph for serving: ONNX (onnxruntime) or a ``torch.export`` program.

The graph is the model's own ``forward`` (pooled and token-level fusions alike) traced on a processor batch: it
takes the processor's tensors and returns logits. Inputs, in this order, per modality of the model: its batch
fields (its adapter's ``input_fields`` then the ``optional_fields`` the processor gives, e.g.
``image_pixel_values``; ``audio_input_values``, ``audio_attention_mask``; ``text_input_ids``,
``text_attention_mask``, ``text_token_type_ids``) and, unless exported with ``masks=False``, ``{name}_mask``
(bool ``[B]``, False = missing). Axis 0 (batch) of every input and every axis whose size follows the samples'
lengths (audio samples, text tokens) are dynamic. [`run_onnx`] takes a processor batch as it is: a
``{name}_mask`` the batch lacks (the processor writes one only when a sample is missing) is all-True.

Unlike the eager model, which runs an encoder only on the rows where its modality is present, the model under
``torch.export`` (``torch.compiler.is_exporting()``) runs every encoder on every row (a graph cannot change shape
by data) and then masks the missing rows: a pooled fusion gets the learned missing-modality placeholder there, a
token-level fusion zero tokens with a False token mask, as in eager. So a missing row needs a placeholder input
of the right shape, as the processor's padded batch holds. [`export_model`] checks the exported graph against the
eager model on a batch with a missing modality and raises when the logits differ by more than ``atol``.

A wav2vec2 encoder with group normalisation (the ``base`` checkpoints) normalises over each clip's valid frames
only (the masked GroupNorm of ``encoder_adapters``), in the graph as in the eager model, so it is exact at any
padding. Families that the eager model encodes length by length (``exact_by_unpadding``: Data2VecAudio,
Wav2Vec2-Conformer, SEW) are exact in the graph only on unpadded (equal-length) audio. A ``max_tokens`` cap on
audio or text tokens has a data-dependent width and does not export.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..model.modality_kinds import get_kind
from ..model.modeling_fusion import FusionModel
from ..model.processing_fusion import FusionProcessor

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx", "torch_export")


class FusionInferenceGraph(nn.Module):
    """``FusionModel.forward`` in eval mode as a function of positional tensors: ``forward(*tensors)`` in
    ``input_names`` order -> logits ``[B, num_labels]``. Dropout and modality dropout are off."""

    def __init__(self, model: FusionModel, input_names: list[str]):
        super().__init__()
        self.model = model.eval()
        self.input_names = list(input_names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.input_names, tensors, strict=True))
        return self.model(**inputs, return_dict=True).logits


def example_batch(
    processor: FusionProcessor,
    model: FusionModel,
    batch_size: int = 3,
    longer: int = 0,
    missing: bool = True,
) -> dict[str, torch.Tensor]:
    """A processor batch of synthetic samples (each kind's ``example_sample``) of different lengths (``longer``
    makes every sample longer); with ``missing`` the last sample misses its first modality (for checking the
    masks). Every modality gets an explicit ``{name}_mask``.

    Raises:
        NotImplementedError: a modality kind with no example sample.
    """
    rng = np.random.default_rng(0)
    inputs: dict[str, list[Any]] = {}
    for name, spec in processor.modalities.items():
        kind = get_kind(spec.kind)
        inputs[name] = [kind.example_sample(spec, i + longer, rng) for i in range(batch_size)]
    first = next(iter(inputs))
    if missing:
        inputs[first][-1] = None
    batch = dict(processor(**inputs, return_tensors="pt"))
    for name in model.config.modalities:
        batch.setdefault(f"{name}_mask", torch.ones(batch_size, dtype=torch.bool))
    return batch


def graph_inputs(model: FusionModel, batch: Mapping[str, torch.Tensor], masks: bool = True) -> list[str]:
    """Input names in graph order: per modality (model order) its fields in the batch, then (``masks``) its
    mask."""
    names = []
    for name in model.config.modalities:
        adapter = model.adapters[name]
        fields = (*adapter.input_fields, *adapter.optional_fields)
        names += [f"{name}_{f}" for f in fields if f"{name}_{f}" in batch]
        if masks:
            names.append(f"{name}_mask")
    return names


def dynamic_axes(
    batch: Mapping[str, torch.Tensor], longer: Mapping[str, torch.Tensor], input_names: list[str]
) -> tuple[dict[int, Any], ...]:
    """Per input: axis 0 and every axis whose size differs between ``batch`` and ``longer`` (the same samples
    made longer, see [`example_batch`]) are ``Dim.DYNAMIC``."""
    dynamic = torch.export.Dim.DYNAMIC
    shapes = []
    for name in input_names:
        a, b = batch[name].shape, longer[name].shape
        shapes.append({0: dynamic} | {axis: dynamic for axis in range(1, len(a)) if a[axis] != b[axis]})
    return tuple(shapes)


def export_model(
    model_dir: str | Path | FusionModel,
    output: str | Path,
    format: str = "onnx",
    *,
    processor: FusionProcessor | None = None,
    opset: int = 18,
    atol: float = 1e-4,
    masks: bool = True,
) -> dict[str, Any]:
    """Export the inference graph of ``model_dir`` (a saved folder, or a model with ``processor``) to ``output``
    and verify it against the eager model on a batch with a missing modality.

    ``masks=False`` exports a graph without ``{name}_mask`` inputs (every modality present in every row; then
    verified on a batch with every modality present). [`run_onnx`] fills absent masks of a masked graph.

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
    batch = example_batch(processor, model, missing=masks)
    longer = example_batch(processor, model, longer=2, missing=masks)
    input_names = graph_inputs(model, batch, masks)
    graph = FusionInferenceGraph(model, input_names).eval()
    args = tuple(batch[n] for n in input_names)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        expected = model(**{n: batch[n] for n in input_names}).logits
        program = torch.export.export(
            graph, args, dynamic_shapes=(dynamic_axes(batch, longer, input_names),), strict=False
        )
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
    logger.info(f"export: {output} ({format}); max |exported - eager| = {diff:.2e}")
    return {"output": str(output), "inputs": ", ".join(input_names), "max_abs_diff": diff}


def run_onnx(path: str | Path, inputs: Mapping[str, Any]) -> np.ndarray:
    """Logits ``[B, num_labels]`` of an exported ONNX graph through onnxruntime (CPU).

    ``inputs``: a processor batch as it is (tensors or arrays; keys the graph does not take are ignored). A
    ``{name}_mask`` input of the graph that the batch lacks is all-True (the processor writes a mask only when a
    sample is missing).

    Raises:
        ValueError: the batch lacks another input of the graph (naming it).
    """
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = {k: v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in inputs.items()}
    batch_size = next(iter(arrays.values())).shape[0] if arrays else 0
    feed = {}
    for graph_input in session.get_inputs():
        name = graph_input.name
        if name in arrays:
            feed[name] = arrays[name]
        elif graph_input.type == "tensor(bool)" and len(graph_input.shape) == 1:  # a `{name}_mask`
            feed[name] = np.ones(batch_size, dtype=bool)
        else:
            raise ValueError(
                f"the batch has no '{name}' (the graph's inputs: {[i.name for i in session.get_inputs()]})"
            )
    return session.run(["logits"], feed)[0]
