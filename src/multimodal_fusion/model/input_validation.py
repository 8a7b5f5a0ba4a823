"""Value checks on a model batch, per modality: what shapes cannot tell.

Model layer: imports only torch (``save_pretrained`` copies it next to the weights). [`FusionModel`] runs these
on every batch, whatever built it (``FusionProcessor``, a user's own collator, a hand-made dict), so a bad value
is an error naming the modality, the field, the row and the limit, never NaN logits, a CUDA assert or a pooled
vector of padding:

- every float field (``pixel_values``, ``input_values``, ``values``, ``embeds``...) is finite;
- token ids lie in ``[0, vocab_size)``, ``token_type_ids`` in ``[0, type_vocab_size)``, and a text fits the
  encoder's learned position table (the adapter's ``max_text_positions()``: ``max_position_embeddings``, less
  the padding offset of RoBERTa-like models); encoders without such a table (relative / rotary positions) have no length limit here;
- attention masks hold 0/1;
- an audio clip's valid length (its ``attention_mask`` sum, else the padded length) reaches the receptive field
  of the encoder's convolutional front-end (the adapter's ``min_audio_samples()``), else it would yield no frame.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

_POSITION_TABLE_NAMES = ("position_embeddings", "position_embedding", "wpe", "embed_positions")


@dataclass(frozen=True)
class InputLimits:
    """What one modality's encoder accepts beyond shapes (``None`` = no limit known)."""

    vocab_size: int | None = None
    type_vocab_size: int | None = None
    max_positions: int | None = None
    position_table_size: int | None = None
    min_audio_samples: int = 1


def text_input_limits(encoder: nn.Module, config: Any, adapter: Any) -> InputLimits:
    """A text encoder's limits (vocabulary, token types, the learned position table: the family ``adapter``'s
    ``max_text_positions()``), read from it and its config (call once, then cache)."""
    vocab_size = getattr(config, "vocab_size", None)
    with contextlib.suppress(AttributeError, NotImplementedError):  # the real table, resized or not
        vocab_size = encoder.get_input_embeddings().num_embeddings
    table = next(
        (
            module
            for module_name, module in encoder.named_modules()
            if isinstance(module, nn.Embedding) and module_name.rsplit(".", 1)[-1] in _POSITION_TABLE_NAMES
        ),
        None,
    )
    type_vocab_size = getattr(config, "type_vocab_size", None)
    return InputLimits(
        vocab_size=vocab_size if isinstance(vocab_size, int) else None,
        type_vocab_size=type_vocab_size if isinstance(type_vocab_size, int) and type_vocab_size > 0 else None,
        max_positions=adapter.max_text_positions() if table is not None else None,
        position_table_size=table.num_embeddings if table is not None else None,
    )


def _fail(name: str, kind: str, field: str, message: str) -> None:
    raise ValueError(f"modality '{name}' ({kind}): field '{name}_{field}' {message}")


def _present_rows(fields: dict[str, torch.Tensor]) -> torch.Tensor | None:
    mask = fields.get("mask")
    return None if mask is None else mask.bool()


def check_finite(name: str, kind: str, fields: dict[str, torch.Tensor]) -> None:
    """Every float field holds finite values; the error names the first bad row."""
    for field, value in fields.items():
        if field == "mask" or not value.is_floating_point():
            continue
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            row = int(bad.reshape(bad.shape[0], -1).any(dim=1).nonzero()[0])
            _fail(name, kind, field, f"holds NaN or inf values (first in row {row}); expected finite values")


def _check_range(
    name: str, kind: str, field: str, value: torch.Tensor, limit: int, what: str, present: torch.Tensor | None
) -> None:
    rows = value if present is None else value[present]
    bad = (rows < 0) | (rows >= limit)
    if bool(bad.any()):
        index = bad.nonzero()[0]
        row = int(index[0]) if present is None else int(present.nonzero()[int(index[0])])
        _fail(
            name,
            kind,
            field,
            f"holds {int(rows[tuple(index)])} in row {row}, position {int(index[1])}; expected {what} in "
            f"[0, {limit - 1}]",
        )


def check_token_ids(name: str, kind: str, fields: dict[str, torch.Tensor], limits: InputLimits) -> None:
    """Token ids within the vocabulary, token types within ``type_vocab_size``, length within the positions."""
    present = _present_rows(fields)
    ids = fields.get("input_ids")
    if ids is not None and limits.vocab_size is not None:
        what = f"token ids of the encoder's vocabulary (vocab_size={limits.vocab_size})"
        _check_range(name, kind, "input_ids", ids, limits.vocab_size, what, present)
    types = fields.get("token_type_ids")
    if types is not None and limits.type_vocab_size is not None:
        what = f"token type ids (type_vocab_size={limits.type_vocab_size})"
        _check_range(name, kind, "token_type_ids", types, limits.type_vocab_size, what, present)
    if ids is not None and limits.max_positions is not None and ids.shape[-1] > limits.max_positions:
        _fail(
            name,
            kind,
            "input_ids",
            f"has {ids.shape[-1]} tokens per row; the encoder's position table holds at most "
            f"{limits.max_positions} (max_position_embeddings); truncate the text (the processor's max_length)",
        )
    positions = fields.get("position_ids")
    if positions is not None and limits.position_table_size is not None:
        what = f"positions of the encoder's table (max_position_embeddings={limits.position_table_size})"
        _check_range(name, kind, "position_ids", positions, limits.position_table_size, what, present)


def check_attention_mask(name: str, kind: str, fields: dict[str, torch.Tensor]) -> None:
    """``attention_mask`` holds only 0 and 1."""
    mask = fields.get("attention_mask")
    if mask is None or mask.dtype == torch.bool:
        return
    bad = (mask != 0) & (mask != 1)
    if bool(bad.any()):
        index = bad.nonzero()[0]
        _fail(
            name,
            kind,
            "attention_mask",
            f"holds {mask[tuple(index)].item()} in row {int(index[0])}; expected 0 (padding) or 1 (valid)",
        )


def check_audio_lengths(name: str, kind: str, fields: dict[str, torch.Tensor], min_samples: int) -> None:
    """Each present clip has at least ``min_samples`` valid samples (the encoder's receptive field)."""
    values = fields.get("input_values")
    if values is None or min_samples <= 1 and "attention_mask" not in fields:
        return
    mask = fields.get("attention_mask")
    lengths = (
        mask.long().sum(dim=-1)
        if mask is not None
        else torch.full((values.shape[0],), values.shape[-1], device=values.device)
    )
    present = _present_rows(fields)
    short = lengths < max(min_samples, 1)
    if present is not None:
        short = short & present.to(short.device)
    if bool(short.any()):
        row = int(short.nonzero()[0])
        source = (
            f"from '{name}_attention_mask'" if mask is not None else "no attention mask: the padded length"
        )
        _fail(
            name,
            kind,
            "input_values",
            f"row {row} has {int(lengths[row])} valid samples ({source}); the encoder's convolutional front-end "
            f"needs at least {max(min_samples, 1)} (its receptive field), else the clip yields no frame and "
            "pools padding",
        )
