"""``transformers.pipeline`` task ``fused-classification``: one dict of raw inputs per sample -> top-k labels.

Flat and self-contained (imports torch and transformers only), because ``FusionModel.save_pretrained`` copies it
next to the weights and ``config.json`` names it in ``custom_pipelines``: ``pipeline(model=folder,
trust_remote_code=True)`` then works where ``multimodal_fusion`` is not installed (the processor comes from the
folder's own remote code, ``processor_config.json``'s ``auto_map``). With the package imported the task is also
registered in-process: ``pipeline("fused-classification", model=folder)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import AutoProcessor, Pipeline

TASK = "fused-classification"
"""The pipeline task name."""


class FusedClassificationPipeline(Pipeline):
    """Classify samples made of any subset of a fusion model's modalities.

    Input: one dict per sample, ``{"image": path | PIL image | array, "audio": path | array | {"array",
    "sampling_rate"}, "text": str, ...}`` (keys are the model's modality names; a key left out, or ``None``, is a
    missing modality), or a list of them. Output per sample: the ``top_k`` classes as ``[{"label": str, "score":
    float}]``, best first (softmax for single-label models, a sigmoid per class for multi-label ones).

    Call arguments: ``top_k`` (default 5, capped at the number of classes), ``batch_size`` (samples processed
    together, default 8), ``sampling_rate`` (of raw audio arrays that carry none).

    Raises ``ValueError`` for a key that is not a modality of the model, and the processor's ``BadSampleError``
    (naming the modality, the sample and the file) for unusable data.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            # Loaded as the folder's remote code (the user passed trust_remote_code=True): the processor is remote
            # code of the same folder. From the installed package, AutoProcessor knows FusionProcessor.
            remote = not __name__.startswith("multimodal_fusion")
            self.processor = AutoProcessor.from_pretrained(self.model.name_or_path, trust_remote_code=remote)
        self.model.eval()

    def _sanitize_parameters(self, top_k: int | None = None, sampling_rate: Any = None, **kwargs: Any):
        preprocess = {"sampling_rate": sampling_rate} if sampling_rate is not None else {}
        postprocess = {"top_k": top_k} if top_k is not None else {}
        return preprocess, {}, postprocess

    def __call__(self, inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]], **kwargs: Any) -> Any:
        """Classify one sample (a dict; returns a list of ``{"label", "score"}``) or a list of samples (a list
        of such lists), ``batch_size`` samples per model call."""
        single = isinstance(inputs, Mapping)
        samples = [inputs] if single else list(inputs)
        batch_size = int(kwargs.pop("batch_size", None) or self._batch_size or 8)
        preprocess, forward, postprocess = self._sanitize_parameters(**kwargs)
        results: list[Any] = []
        for start in range(0, len(samples), batch_size):
            batch = self.preprocess(samples[start : start + batch_size], **preprocess)
            with torch.inference_mode():
                outputs = self._forward(batch, **forward)
            results.extend(self.postprocess(outputs, **postprocess))
        return results[0] if single else results

    def preprocess(self, samples: Sequence[Mapping[str, Any]], sampling_rate: Any = None) -> dict[str, Any]:
        """Samples -> the processor's padded batch (``{name}_mask`` False where a sample lacks a modality)."""
        names = list(self.processor.modalities)
        columns: dict[str, list[Any]] = {}
        for position, sample in enumerate(samples):
            if not isinstance(sample, Mapping):
                raise ValueError(
                    f"sample {position}: expected a dict of modality -> input, got {type(sample)}"
                )
            unknown = sorted(set(sample) - set(names))
            if unknown:
                raise ValueError(f"sample {position}: unknown modalities {unknown}; the model takes {names}")
        for name in names:
            values = [sample.get(name) for sample in samples]
            if any(value is not None for value in values):
                columns[name] = values
        if not columns:
            raise ValueError(f"no sample holds any input; give at least one of {names}")
        return dict(self.processor(**columns, sampling_rate=sampling_rate, return_tensors="pt"))

    def _forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = {key: value.to(self.device) for key, value in batch.items()}
        return {"logits": self.model(**batch).logits.float().cpu()}

    def postprocess(self, outputs: dict[str, torch.Tensor], top_k: int = 5) -> list[list[dict[str, Any]]]:
        logits = outputs["logits"]
        config = self.model.config
        if config.problem_type == "regression":
            return [[{"label": "value", "score": float(row[0])}] for row in logits]
        multi_label = config.problem_type == "multi_label_classification"
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
        top_k = max(1, min(int(top_k), scores.shape[-1]))
        values, indices = scores.topk(top_k, dim=-1)
        return [
            [
                {"label": config.id2label[int(index)], "score": float(value)}
                for value, index in zip(row_values, row_indices, strict=True)
            ]
            for row_values, row_indices in zip(values, indices, strict=True)
        ]
