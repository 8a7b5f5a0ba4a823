"""One modality's way from its batch fields to the fusion: [`ModalityEncoding`], one object per modality that
[`FusionModel`] composes (``model.encodings[name]``).

Paths, chosen by the fields the batch carries:

- live (encoder inputs): the encoder runs on the present rows (frozen ones without autograd) and its output is
  pooled (``pooled``) or reduced to ``max_tokens`` tokens (``tokens``); an adapter whose padding would leak into
  valid positions encodes row groups apart (``exact_batches``);
- cached pooled vector (``{name}_embeds``): used as it is;
- cached token sequence (``{name}_token_embeds`` / ``{name}_token_mask``): pooled as the live tokens are;
- cached hidden states (``{name}_hidden_states``, the frozen-prefix cache): only the blocks above the frozen
  boundary run (``prefix_layers.run_from_block``).

Then ``projected`` / ``projected_tokens`` project to ``projection_dim`` and put the learned placeholder (pooled
fusions) or no token (token-level fusions) in the missing rows. While exporting (``torch.compiler.is_exporting()``)
every row is encoded and the missing ones are masked, so the graph has no data-dependent row selection.

Model layer: torch only (copied next to the weights for ``trust_remote_code``).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from .modality_kinds import get_kind
from .prefix_layers import run_from_block
from .token_fusion_layers import masked_mean
from .token_sequences import reduce_tokens, scatter_rows

Fields = dict[str, torch.Tensor]


class ModalityEncoding:
    """Modality ``name`` of ``model``: its encoder, family adapter, pooler and projection, read from the model's
    tables on every call (so ``model.to()``, wrapping or replacing an encoder is always seen).

    Shapes: ``n`` rows of the modality's batch fields in, ``[n, pooled_dim]`` pooled vectors or ``([n, T, hidden],
    mask [n, T])`` tokens out; ``projected`` gives ``[B, projection_dim]`` for the whole batch of ``B`` rows.
    """

    def __init__(self, model: nn.Module, name: str):
        self.model = model
        self.name = name

    # ------------------------------------------------------------------ what it reads
    @property
    def spec(self) -> Any:
        return self.model.config.modalities[self.name]

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoders[self.name]

    @property
    def adapter(self) -> Any:
        return self.model.adapters[self.name]

    @property
    def pooler(self) -> nn.Module:
        if self.name not in self.model.poolers:
            raise ValueError(
                f"modality '{self.name}': the token-level fusion '{self.model.config.fusion}' pools nothing, so "
                "there is no pooled vector; read its tokens with `get_modality_tokens`"
            )
        return self.model.poolers[self.name]

    @property
    def projection(self) -> nn.Module:
        return self.model.projections[self.name]

    def _dtype(self) -> torch.dtype | None:
        param = next(self.encoder.parameters(), None)
        return param.dtype if param is not None else None

    def _frozen(self) -> contextlib.AbstractContextManager:
        """``no_grad`` for an encoder with nothing to train."""
        frozen = not any(p.requires_grad for p in self.encoder.parameters())
        return torch.no_grad() if frozen else contextlib.nullcontext()

    # ------------------------------------------------------------------ live encoder
    def encoder_output(self, fields: Fields) -> Any:
        """The family adapter's ``EncoderOutput`` (hidden ``[n, T, H]``, token mask, ``pooler_output``, CNN
        ``grid``) at the spec's ``layer``, float inputs cast to the encoder's dtype."""
        dtype = self._dtype()
        fields = {
            k: v.to(dtype) if v.is_floating_point() and dtype is not None else v for k, v in fields.items()
        }
        return self.adapter.encode(self.encoder, fields, self.spec.layer)

    def encode_pooled(self, fields: Fields) -> torch.Tensor:
        """Pooled encoder output ``[n, pooled_dim]`` of these rows (pooling the ``max_tokens``-reduced sequence when
        the spec sets one)."""
        spec = self.spec
        groups = self.adapter.exact_batches(fields)
        if groups is not None:
            return self._pooled_groups(groups)
        if spec.max_tokens is not None and spec.pooling not in (None, "pooler"):
            return self.pooler(*self.encode_tokens(fields))
        output = self.encoder_output(fields)
        if spec.pooling is None:
            return output.hidden
        return self.pooler(output.hidden, output.mask, output.pooler_output)

    def encode_tokens(self, fields: Fields) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced token sequence ``([n, T, hidden], mask [n, T])`` of these rows (one token for a kind whose
        encoder gives one vector)."""
        spec = self.spec
        if get_kind(spec.kind).pooled_only:
            vector = self.encode_pooled(fields)
            return vector.unsqueeze(1), torch.ones(vector.shape[0], 1, dtype=torch.bool, device=vector.device)
        groups = self.adapter.exact_batches(fields)
        if groups is not None:
            return self._token_groups(groups)
        output = self.encoder_output(fields)
        return reduce_tokens(spec.kind, output.hidden, output.mask, spec.max_tokens, output.grid)

    def _pooled_groups(self, groups: list[tuple[torch.Tensor, Fields]]) -> torch.Tensor:
        """Pooled output from row groups encoded apart (the adapter's ``exact_batches``: e.g. each clip length
        unpadded, for encoders whose padding leaks into valid frames)."""
        batch = sum(len(rows) for rows, _ in groups)
        pooled = None
        for rows, part in groups:
            out = self.encode_pooled(part)
            if pooled is None:
                pooled = out.new_zeros(batch, out.shape[1])
            pooled = pooled.index_copy(0, rows, out)
        return pooled

    def _token_groups(self, groups: list[tuple[torch.Tensor, Fields]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token sequences of row groups encoded apart, padded back together."""
        parts = [(rows, *self.encode_tokens(part)) for rows, part in groups]
        batch = sum(len(rows) for rows, _, _ in parts)
        width = max(tokens.shape[1] for _, tokens, _ in parts)
        first = parts[0][1]
        tokens = first.new_zeros(batch, width, first.shape[-1])
        mask = torch.zeros(batch, width, dtype=torch.bool, device=first.device)
        for rows, part, part_mask in parts:
            tokens[rows, : part.shape[1]] = part
            mask[rows, : part.shape[1]] = part_mask
        return tokens, mask

    def from_hidden_states(self, fields: Fields) -> torch.Tensor:
        """Pooled output from cached hidden states: only the blocks above ``hidden_layer`` run (they must be the
        only blocks that can train; the embeddings and the blocks below are frozen).

        Raises:
            ValueError: naming the modality: several boundaries in one batch, a family with no prefix runner, or
                trainable parameters below the cached boundary.
        """
        encoder, adapter = self.encoder, self.adapter
        layers = fields["hidden_layer"]
        num_frozen = int(layers[0])
        if adapter.prefix_blocks(encoder) is None or not bool((layers == num_frozen).all()):
            raise ValueError(
                f"modality '{self.name}': cached hidden states need one block boundary per batch and an encoder "
                f"family with a prefix runner ({type(encoder).__name__})"
            )
        layout = self.model.encoder_layout(self.name)
        above = {n for block in layout.blocks[num_frozen:] for n in block} | set(layout.final + layout.pooler)
        trainable_below = [n for n, p in encoder.named_parameters() if p.requires_grad and n not in above]
        if trainable_below:
            raise ValueError(
                f"modality '{self.name}': hidden states cached at block {num_frozen} skip trainable parameters "
                f"{trainable_below[:3]}; compute the cache again at the current boundary"
            )
        hidden_states = fields["hidden_states"].to(self._dtype())
        hidden, pooler_output = run_from_block(
            adapter, encoder, hidden_states, fields["hidden_mask"], num_frozen
        )
        return self.pooler(hidden, fields["hidden_mask"].bool(), pooler_output)

    # ------------------------------------------------------------------ the present rows of a batch
    def _present_inputs(self, fields: Fields, present: torch.Tensor) -> Fields:
        inputs = {k: v for k, v in fields.items() if k != "mask"}
        if not torch.compiler.is_exporting() and not bool(present.all()):
            inputs = {k: v[present] for k, v in inputs.items()}
        return inputs

    def pooled(self, fields: Fields, present: torch.Tensor) -> torch.Tensor | None:
        """Pooled vectors ``[n_present, pooled_dim]`` of the present rows (``present`` ``[B]`` bool) from whatever
        the fields hold (cached vector, cached tokens, cached hidden states or encoder inputs); ``None`` when no
        row is present. While exporting: every row ``[B, pooled_dim]`` (the caller masks the missing ones)."""
        if not torch.compiler.is_exporting() and not bool(present.any()):
            return None
        if "embeds" in fields:  # cached float32 vectors follow the projection's dtype, as encoder inputs do
            return fields["embeds"][present].to(self.projection[0].weight.dtype)
        if "token_embeds" in fields:  # cached tokens: pool them as the live path pools the encoder's
            return self.pooler(*self.tokens(fields, present))
        inputs = self._present_inputs(fields, present)
        if "hidden_states" in inputs:
            return self.from_hidden_states(inputs)
        with self._frozen():
            return self.encode_pooled(inputs)

    def tokens(self, fields: Fields, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(tokens [n_present, T, hidden], mask [n_present, T])`` of the present rows, cached or encoded;
        ``None`` when no row is present. While exporting: every row."""
        if not torch.compiler.is_exporting() and not bool(present.any()):
            return None
        if "token_embeds" in fields:
            tokens = fields["token_embeds"][present].to(self.projection[0].weight.dtype)
            mask = fields.get("token_mask")
            mask = (
                torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device) if mask is None else mask
            )
            return tokens, mask[present].bool()
        with self._frozen():
            return self.encode_tokens(self._present_inputs(fields, present))

    # ------------------------------------------------------------------ into the fusion
    def projected(self, fields: Fields, present: torch.Tensor, batch_size: int) -> torch.Tensor:
        """``[B, projection_dim]``: the projected pooled vector in the present rows, the modality's learned
        placeholder (``missing_embeddings``) in the missing ones."""
        placeholder = self.model.missing_embeddings[self.name].unsqueeze(0).expand(batch_size, -1)
        pooled = self.pooled(fields, present)
        if pooled is None:
            return placeholder
        vectors = self.projection(pooled)
        if not torch.compiler.is_exporting():  # only the present rows were encoded
            rows = present.nonzero().squeeze(1)
            vectors = vectors.new_zeros(batch_size, vectors.shape[1]).index_copy(0, rows, vectors)
        return torch.where(present.unsqueeze(1), vectors, placeholder.to(vectors.dtype))

    def projected_tokens(
        self, fields: Fields, present: torch.Tensor, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(tokens [B, T, projection_dim], token mask [B, T], mean token [B, projection_dim])`` for a token-level
        fusion: a missing row has no real token and a zero mean."""
        states = self.tokens(fields, present)
        if states is not None:
            states = (self.projection(states[0]), states[1])
        dim = self.model.config.projection_dim
        tokens, mask = scatter_rows(states, present, batch_size, dim, present.device)
        return tokens, mask, masked_mean(tokens, mask)
