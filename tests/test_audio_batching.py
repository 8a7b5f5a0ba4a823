"""Exact batching of group-norm wav2vec2 encoders in one call (masked GroupNorm), and SpecAugment on short clips."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from multimodal_fusion import FusionModel
from multimodal_fusion.model.encoder_adapters import MaskedGroupNorm
from tiny_encoders import make_wav2vec2

SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}
LENGTHS = [400, 650, 900, 1150, 1400, 1650, 1900, 2150]


def padded(clips: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    values = torch.zeros(len(clips), max(len(c) for c in clips))
    mask = torch.zeros(values.shape, dtype=torch.long)
    for i, clip in enumerate(clips):
        values[i, : len(clip)], mask[i, : len(clip)] = clip, 1
    return {"audio_input_values": values, "audio_attention_mask": mask}


def test_group_norm_batch_is_one_encoder_call_and_equals_per_clip(tmp_path):
    model = FusionModel.from_encoders(
        {"audio": str(make_wav2vec2(tmp_path / "w2v", norm="group"))}, **SMALL
    ).eval()
    norm = model.encoders["audio"].feature_extractor.conv_layers[0].layer_norm
    assert type(norm) is MaskedGroupNorm
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(n, generator=generator) for n in LENGTHS]
    calls = []
    hook = model.encoders["audio"].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        batch = model.get_modality_embeddings(**padded(clips))["audio"]
    hook.remove()
    assert len(calls) == 1
    with torch.no_grad():
        for row, clip in enumerate(clips):  # each clip alone: no padding, no mask, plain GroupNorm statistics
            alone = model.get_modality_embeddings(audio_input_values=clip[None])["audio"][0]
            torch.testing.assert_close(batch[row], alone, atol=1e-5, rtol=0)
        # the stock GroupNorm (statistics over the padded tail) is what the masked one fixes
        norm.__class__ = torch.nn.GroupNorm
        stock = model.get_modality_embeddings(**padded(clips))["audio"]
    assert (stock[0] - batch[0]).abs().max() > 1e-3


def test_specaugment_trains_on_a_short_and_a_long_clip(tmp_path):
    """A trainable wav2vec2-base-style encoder (group norm, SpecAugment on) trains on a 0.1 s + 1 s batch, as
    plain transformers does on the same padded batch; encoding the 0.1 s clip alone (the old per-length path)
    is shorter than SpecAugment's span and fails in transformers itself."""
    torch.manual_seed(0)
    config = T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        feat_extract_norm="group", do_stable_layer_norm=False, mask_time_prob=0.5, mask_time_length=30,
    )  # fmt: skip
    T.Wav2Vec2Model(config).save_pretrained(tmp_path / "base")
    model = FusionModel.from_encoders({"audio": str(tmp_path / "base")}, **SMALL).train()
    batch = padded([torch.randn(1600), torch.randn(16000)])
    out = model(**batch, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.encoders["audio"].masked_spec_embed.grad is not None  # SpecAugment really masked frames
    assert model.encoders["audio"].encoder.layers[-1].feed_forward.output_dense.weight.grad is not None
    plain = T.Wav2Vec2Model.from_pretrained(tmp_path / "base").train()
    plain(
        batch["audio_input_values"], attention_mask=batch["audio_attention_mask"]
    ).last_hidden_state.sum().backward()
    with pytest.raises(ValueError, match="mask_length"):
        plain(batch["audio_input_values"][:1, :1600])
