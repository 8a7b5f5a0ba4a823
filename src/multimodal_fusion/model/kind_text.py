"""Kind ``text``: strings through the encoder's tokenizer -> ``{name}_input_ids`` + ``{name}_attention_mask``
(+ ``{name}_token_type_ids`` where the family takes them), padded on the tokenizer's side.

``max_length`` defaults to the tokenizer's ``model_max_length``, else the config's position table (less the padding
offset of RoBERTa-like models). Decoder-only tokenizers without a pad token pad with their eos token. Batches are
checked against the encoder's vocabulary, token types and position table (``input_validation``). Token-level fusion
keeps the first ``max_tokens`` valid tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .bad_samples import BadSampleError
from .input_validation import InputLimits, check_token_ids, text_input_limits
from .modality_kind import ModalityKind, register_modality_kind
from .spec_parts import AUTO

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec

_VERY_LARGE_MAX_LENGTH = 10**6


def text_max_length(tokenizer: Any, positions: int | None) -> int | None:
    """Longest input the text encoder takes: the tokenizer's ``model_max_length`` when set, else ``positions``
    (the family adapter's ``max_text_positions()``: ``max_position_embeddings`` minus the padding offset of
    RoBERTa-like models)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _VERY_LARGE_MAX_LENGTH:
        return limit
    return positions


_PAD_WARNED: set[str] = set()


def ensure_pad_token(name: str, tokenizer: Any) -> None:
    """Decoder-only tokenizers (GPT-2, Llama) have no pad token: use the eos token (logged once per modality),
    as transformers suggests. Padding is read from ``attention_mask``, never from the token id."""
    if getattr(tokenizer, "pad_token", None) is not None or getattr(tokenizer, "eos_token", None) is None:
        return
    tokenizer.pad_token = tokenizer.eos_token
    if name not in _PAD_WARNED:
        from transformers.utils import logging

        _PAD_WARNED.add(name)
        logging.get_logger(__name__).warning(
            f"modality '{name}': the tokenizer has no pad token; padding with its eos token "
            f"{tokenizer.eos_token!r} (the attention mask marks the padding)"
        )


@register_modality_kind("text")
class TextKind(ModalityKind):
    """Text: ``input_ids`` ``[B, T]`` + ``attention_mask`` (+ ``token_type_ids``) from the encoder's tokenizer."""

    batch_fields = (("input_ids",), ("attention_mask", "token_type_ids", "position_ids"))
    module_fields = (("input_ids",), ("attention_mask", "token_type_ids"))
    sequence_pooling = "cls"
    processor_types = ("transformers.tokenization_utils_base:PreTrainedTokenizerBase",)
    processor_description = "a tokenizer"
    tower = ("text_config", "text_model")
    main_input_names = ("input_ids",)
    has_length = True

    # ------------------------------------------------------------------ processor
    def load_processor(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, **kwargs)

    def load_saved_processor(self, path: str, spec: ProcessorSpec, subfolder: str, **kwargs: Any) -> Any:
        from transformers import AutoTokenizer, PretrainedConfig

        # a bare config: the sub-folder holds no model config.json, which AutoTokenizer would look up
        return AutoTokenizer.from_pretrained(path, subfolder=subfolder, config=PretrainedConfig(), **kwargs)

    def processor_settings(self, name: str, spec: ProcessorSpec, processor: Any) -> dict[str, Any]:
        ensure_pad_token(name, processor)  # max_length "auto" (not given): the tokenizer's own limit
        max_length = spec.max_length
        return {"max_length": text_max_length(processor, None) if max_length == AUTO else max_length}

    def encoder_settings(self, spec: ProcessorSpec, processor: Any, adapter: Any) -> dict[str, Any]:
        return {
            "max_length": spec.settled_max_length or text_max_length(processor, adapter.max_text_positions())
        }

    def module_processor_settings(
        self, name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
    ) -> dict[str, Any]:
        out = super().module_processor_settings(name, spec, processor, network, **hub_kwargs)
        if spec.settled_max_length:
            out["max_length"] = spec.settled_max_length
        return out

    # ------------------------------------------------------------------ samples
    def decode(self, processor: Any, name: str, value: Any, options: Mapping[str, Any]) -> str:
        if not isinstance(value, str):
            raise BadSampleError(f"text of type {type(value).__name__} ({value!r:.50}); expected a string")
        return value

    def batch(self, processor: Any, name: str, samples: list[Any]) -> dict[str, tuple[torch.Tensor, Any]]:
        tokenizer, spec = processor.processors[name], processor.modalities[name]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        max_length = spec.settled_max_length
        wanted = spec.input_fields or ("input_ids", "attention_mask", "token_type_ids")
        if not samples:
            fields = ["input_ids", "attention_mask"]
            if "token_type_ids" in tokenizer.model_input_names:
                fields.append("token_type_ids")
            fields = [f for f in fields if f in wanted]
            return {
                f: (torch.zeros(0, 1, dtype=torch.long), pad_id if f == "input_ids" else 0) for f in fields
            }
        call_kwargs = dict(padding=True, truncation=max_length is not None, max_length=max_length)
        call_kwargs.update(return_attention_mask=True, **(spec.call_kwargs or {}))
        out = tokenizer(samples, return_tensors="pt", **call_kwargs)
        return {
            field: (torch.as_tensor(out[field]), pad_id if field == "input_ids" else 0)
            for field in wanted
            if field in out
        }

    def example_sample(self, spec: ProcessorSpec, length: int, rng: Any) -> str:
        """``length + 1`` times "a short sample"."""
        return " ".join(["a short sample"] * (length + 1))

    def sample_length(self, value: Any) -> float:
        """Length in characters (0 for a missing text)."""
        return float(len(value)) if isinstance(value, str) else 0.0

    # ------------------------------------------------------------------ model side
    def input_limits(self, encoder: nn.Module, config: Any, adapter: Any) -> InputLimits:
        return text_input_limits(encoder, config, adapter)

    def check_values(self, name: str, fields: dict[str, torch.Tensor], limits: InputLimits) -> None:
        super().check_values(name, fields, limits)
        check_token_ids(name, self.name, fields, limits)

    def module_example_inputs(self, name: str, spec: Any, network: nn.Module) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.zeros(2, 4, dtype=torch.long),
            "attention_mask": torch.ones(2, 4, dtype=torch.long),
        }
