"""Per-modality encoding of a fusion model: run an encoder on the present rows (frozen ones without autograd),
pool its hidden states, project them and put each missing modality's learned placeholder in its rows.

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch and sibling modules of this folder.
"""

from __future__ import annotations

import contextlib

import torch

from .prefix_layers import run_from_block


class ModalityEncodingMixin:
    """Encoding for [`FusionModel`]: reads ``self.config.modalities``, ``self.encoders``, ``self.adapters`` (each
    encoder's family adapter, which runs it), ``self.poolers``, ``self.projections`` and
    ``self.missing_embeddings`` (each by modality name)."""

    def _encoder_dtype(self, name: str) -> torch.dtype | None:
        param = next(self.encoders[name].parameters(), None)
        return param.dtype if param is not None else None

    def _encoder_hidden(self, name: str, fields: dict[str, torch.Tensor]):
        """The family adapter's ``EncoderOutput`` (hidden ``[n, T, H]``, token mask, ``pooler_output``, CNN
        ``grid``) of modality ``name``'s encoder at the spec's ``layer``, inputs cast to the encoder's dtype."""
        spec = self.config.modalities[name]
        dtype = self._encoder_dtype(name)
        fields = {
            k: v.to(dtype) if v.is_floating_point() and dtype is not None else v for k, v in fields.items()
        }
        return self.adapters[name].encode(self.encoders[name], fields, spec.layer)

    def _run_encoder(self, name: str, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled output ``[n, pooled_dim]`` of modality ``name``'s encoder for these rows (pooling the
        ``max_tokens``-reduced sequence when the spec sets one)."""
        spec = self.config.modalities[name]
        groups = self.adapters[name].exact_batches(fields)
        if groups is not None:
            return self._run_exact_batches(name, groups)
        if spec.max_tokens is not None and spec.pooling not in (None, "pooler"):
            return self.poolers[name](*self._encoder_tokens(name, fields))
        output = self._encoder_hidden(name, fields)
        if spec.pooling is None:
            return output.hidden
        return self.poolers[name](output.hidden, output.mask, output.pooler_output)

    def _run_exact_batches(self, name: str, groups: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
        """Pooled output ``[n, pooled_dim]`` from row groups encoded apart (the adapter's ``exact_batches``: e.g.
        each clip length unpadded, for encoders whose padding leaks into valid frames)."""
        batch = sum(len(rows) for rows, _ in groups)
        pooled = None
        for rows, part in groups:
            out = self._run_encoder(name, part)
            if pooled is None:
                pooled = out.new_zeros(batch, out.shape[1])
            pooled = pooled.index_copy(0, rows, out)
        return pooled

    def _pooled(
        self, name: str, fields: dict[str, torch.Tensor], present: torch.Tensor
    ) -> torch.Tensor | None:
        """Pooled vectors ``[n_present, pooled_dim]`` for the present rows, or ``None`` when none is present.
        While exporting (``torch.compiler.is_exporting()``): every row ``[B, pooled_dim]`` (no data-dependent
        row selection; the caller masks the missing rows)."""
        exporting = torch.compiler.is_exporting()
        if not exporting and not bool(present.any()):
            return None
        if "embeds" in fields:  # cached float32 vectors follow the projection's dtype, as encoder inputs do
            return fields["embeds"][present].to(self.projections[name][0].weight.dtype)
        if "token_embeds" in fields:  # cached tokens: pool them as the live path pools the encoder's
            return self.poolers[name](*self._token_states(name, fields, present))
        inputs = {k: v for k, v in fields.items() if k != "mask"}
        if not exporting and not bool(present.all()):
            inputs = {k: v[present] for k, v in inputs.items()}
        if "hidden_states" in inputs:
            return self._run_from_hidden_states(name, inputs)
        encoder = self.encoders[name]
        frozen = not any(p.requires_grad for p in encoder.parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return self._run_encoder(name, inputs)

    def _run_from_hidden_states(self, name: str, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled output from cached hidden states: only the blocks above ``hidden_layer`` run (they must be the
        only blocks that can train; the embeddings and the blocks below are frozen)."""
        encoder = self.encoders[name]
        adapter = self.adapters[name]
        layers = fields["hidden_layer"]
        num_frozen = int(layers[0])
        if adapter.prefix_blocks(encoder) is None or not bool((layers == num_frozen).all()):
            raise ValueError(
                f"modality '{name}': cached hidden states need one block boundary per batch and an encoder family "
                f"with a prefix runner ({type(encoder).__name__})"
            )
        layout = self.encoder_layout(name)
        above = {n for block in layout.blocks[num_frozen:] for n in block} | set(layout.final + layout.pooler)
        trainable_below = [n for n, p in encoder.named_parameters() if p.requires_grad and n not in above]
        if trainable_below:
            raise ValueError(
                f"modality '{name}': hidden states cached at block {num_frozen} skip trainable parameters "
                f"{trainable_below[:3]}; compute the cache again at the current boundary"
            )
        hidden, pooler_output = run_from_block(
            adapter,
            encoder,
            fields["hidden_states"].to(self._encoder_dtype(name)),
            fields["hidden_mask"],
            num_frozen,
        )
        return self.poolers[name](hidden, fields["hidden_mask"].bool(), pooler_output)

    def _project(
        self, batch: dict[str, dict[str, torch.Tensor]], masks: torch.Tensor, batch_size: int
    ) -> dict[str, torch.Tensor]:
        """``name -> [B, projection_dim]``: projected pooled vectors in the present rows (``masks`` ``[B, M]``),
        the modality's learned placeholder in the missing ones."""
        projected: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.config.modalities):
            present = masks[:, i]
            pooled = self._pooled(name, batch[name], present)
            placeholder = self.missing_embeddings[name].unsqueeze(0).expand(batch_size, -1)
            if pooled is None:
                projected[name] = placeholder
                continue
            vectors = self.projections[name](pooled)
            if torch.compiler.is_exporting():  # every row was encoded (see `_pooled`)
                projected[name] = torch.where(present.unsqueeze(1), vectors, placeholder.to(vectors.dtype))
                continue
            scattered = vectors.new_zeros(batch_size, vectors.shape[1]).index_copy(
                0, present.nonzero().squeeze(1), vectors
            )
            projected[name] = torch.where(present.unsqueeze(1), scattered, placeholder.to(vectors.dtype))
        return projected
