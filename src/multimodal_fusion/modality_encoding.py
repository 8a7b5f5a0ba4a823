"""Per-modality encoding of a fusion model: run an encoder on the present rows (frozen ones without autograd),
pool its hidden states, project them and put each missing modality's learned placeholder in its rows.

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch and sibling modules of this folder.
"""

from __future__ import annotations

import contextlib

import torch


class ModalityEncodingMixin:
    """Encoding for [`FusionModel`]: reads ``self.config.modalities``, ``self.encoders``, ``self.poolers``,
    ``self.projections`` and ``self.missing_embeddings`` (each by modality name)."""

    def _encoder_dtype(self, name: str) -> torch.dtype | None:
        param = next(self.encoders[name].parameters(), None)
        return param.dtype if param is not None else None

    def _run_encoder(self, name: str, fields: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled output ``[n, pooled_dim]`` of modality ``name``'s encoder for these rows."""
        spec = self.config.modalities[name]
        encoder = self.encoders[name]
        dtype = self._encoder_dtype(name)
        fields = {
            k: v.to(dtype) if v.is_floating_point() and dtype is not None else v for k, v in fields.items()
        }
        if spec.module is not None:  # your own network (module_encoder.ModuleEncoder)
            hidden, token_mask = encoder(fields)
            return hidden if hidden.dim() == 2 else self.poolers[name](hidden, token_mask, None)
        if spec.kind == "features":
            return encoder(fields["values"])
        token_mask = None
        call_fields = dict(fields)
        if spec.kind == "audio":
            attention_mask = call_fields.pop("attention_mask", None)
            if attention_mask is not None and getattr(spec.config, "feat_extract_norm", "layer") == "group":
                if not bool(attention_mask.all()):
                    return self._run_unpadded_audio(name, fields["input_values"], attention_mask)
                attention_mask = None
            if attention_mask is not None:
                call_fields["attention_mask"] = attention_mask
        outputs = encoder(**call_fields, output_hidden_states=spec.layer is not None, return_dict=True)
        hidden = outputs.last_hidden_state if spec.layer is None else outputs.hidden_states[spec.layer]
        if hidden.dim() == 4:  # CNN feature map [B, C, H, W] -> tokens [B, H*W, C]
            hidden = hidden.flatten(2).transpose(1, 2)
        if spec.kind == "text" and "attention_mask" in fields:
            token_mask = fields["attention_mask"].bool()
        elif spec.kind == "audio" and "attention_mask" in call_fields:
            token_mask = encoder._get_feature_vector_attention_mask(
                hidden.shape[1], call_fields["attention_mask"]
            ).bool()
        return self.poolers[name](hidden, token_mask, getattr(outputs, "pooler_output", None))

    def _run_unpadded_audio(
        self, name: str, values: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Group-norm wav2vec2 encoders (the ``base`` checkpoints) normalise over the whole padded waveform, so
        padding changes the result; encode each distinct length unpadded to stay exactly batch-invariant."""
        lengths = attention_mask.long().sum(dim=1)
        pooled = None
        for length in lengths.unique().tolist():
            rows = (lengths == length).nonzero().squeeze(1)
            out = self._run_encoder(name, {"input_values": values[rows, :length]})
            if pooled is None:
                pooled = out.new_zeros(values.shape[0], out.shape[1])
            pooled = pooled.index_copy(0, rows, out)
        return pooled

    def _pooled(
        self, name: str, fields: dict[str, torch.Tensor], present: torch.Tensor
    ) -> torch.Tensor | None:
        """Pooled vectors ``[n_present, pooled_dim]`` for the present rows, or ``None`` when none is present."""
        if not bool(present.any()):
            return None
        if "embeds" in fields:  # cached float32 vectors follow the projection's dtype, as encoder inputs do
            return fields["embeds"][present].to(self.projections[name][0].weight.dtype)
        inputs = {k: v for k, v in fields.items() if k != "mask"}
        if not bool(present.all()):
            inputs = {k: v[present] for k, v in inputs.items()}
        encoder = self.encoders[name]
        frozen = not any(p.requires_grad for p in encoder.parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return self._run_encoder(name, inputs)

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
            scattered = vectors.new_zeros(batch_size, vectors.shape[1]).index_copy(
                0, present.nonzero().squeeze(1), vectors
            )
            projected[name] = torch.where(present.unsqueeze(1), scattered, placeholder.to(vectors.dtype))
        return projected
