"""The three tiny "pretrained networks" of the demo and the classifier used to pretrain each on its modality.

``build_encoder(modality)`` returns a fresh, randomly initialised base model (``ViTModel``, ``Wav2Vec2Model``,
``BertModel``) with its processor, sized so that stage 1 trains in seconds on a CPU. ``UnimodalClassifier``
puts a linear head on the encoder's pooled output, pooled the same way ``FusionModel`` pools that kind by
default (CLS token for ViT and BERT, mask-aware mean over frames for wav2vec2), so the embedding the head was
trained on is the one the fusion model receives. The head is saved next to the encoder
(``unimodal_head.safetensors`` + ``unimodal_head.json``) so the encoder's accuracy on its pretraining task can
be measured again after fusion fine-tuning ("pretrained-task retention").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    BertConfig,
    BertModel,
    BertTokenizer,
    PreTrainedModel,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
    Wav2Vec2Config,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2Model,
)

from ..model.pooling_layers import POOLING_REGISTRY

HEAD_WEIGHTS_NAME = "unimodal_head.safetensors"
HEAD_CONFIG_NAME = "unimodal_head.json"
DEFAULT_POOLING = {"image": "cls", "audio": "mean", "text": "cls"}
"""Pooling per modality; matches ``FusionConfig``'s defaults for ViT (cls), wav2vec2 (mean) and BERT (cls)."""


def build_image_encoder(
    image_size: int = 32, hidden_size: int = 64, num_layers: int = 2, patch_size: int = 4
) -> tuple[ViTModel, ViTImageProcessor]:
    """A ViT on ``image_size`` RGB images with ``patch_size`` patches (default 4: 64 tokens + CLS for 32x32)."""
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    return ViTModel(config), processor


def build_audio_encoder(
    sampling_rate: int = 16000, hidden_size: int = 64, num_layers: int = 2
) -> tuple[Wav2Vec2Model, Wav2Vec2FeatureExtractor]:
    """A wav2vec2 with a two-layer conv front-end (stride 256: 62.5 frames/s) and layer norms throughout.

    The first conv (128 taps = 8 ms) acts as a learned filter bank fine enough to separate DTMF tones; layer-norm feature extraction makes the
    masked mean over frames exactly padding-invariant, and layerdrop / time masking are off so short runs are
    deterministic and DDP-safe.
    """
    config = Wav2Vec2Config(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        conv_dim=(32, 64),
        conv_kernel=(128, 4),
        conv_stride=(64, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        layerdrop=0.0,
        mask_time_prob=0.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        final_dropout=0.0,
    )
    processor = Wav2Vec2FeatureExtractor(
        sampling_rate=sampling_rate, return_attention_mask=True, do_normalize=True
    )
    return Wav2Vec2Model(config), processor


def build_text_encoder(tokenizer: BertTokenizer, hidden_size: int = 64, num_layers: int = 2) -> BertModel:
    """A BERT over ``tokenizer``'s vocabulary (e.g. one from ``train_wordpiece_tokenizer``)."""
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=tokenizer.model_max_length,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertModel(config)


class UnimodalClassifier(nn.Module):
    """``encoder`` -> pooling (mask-aware) -> dropout -> linear head: the pretraining model of one modality.

    Call it with the processor's output (``pixel_values`` / ``input_values`` + ``attention_mask`` /
    ``input_ids`` + ``attention_mask``); it returns logits ``[B, num_labels]``.
    """

    def __init__(self, encoder: PreTrainedModel, num_labels: int, pooling: str, dropout: float = 0.1):
        super().__init__()
        if pooling not in POOLING_REGISTRY:
            raise ValueError(f"`pooling` must be one of {sorted(POOLING_REGISTRY)}, got {pooling!r}")
        self.encoder = encoder
        self.pooling_name = pooling
        self.pooling = POOLING_REGISTRY[pooling](encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)

    def pool(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The pooled encoder output ``[B, hidden_size]`` (what a fusion model receives from this encoder)."""
        outputs = self.encoder(**inputs, return_dict=True)
        hidden = outputs.last_hidden_state
        mask = inputs.get("attention_mask")
        if mask is not None and hasattr(self.encoder, "_get_feature_vector_attention_mask"):
            mask = self.encoder._get_feature_vector_attention_mask(hidden.shape[1], mask)
        mask = mask.bool() if mask is not None else None
        return self.pooling(hidden, mask, getattr(outputs, "pooler_output", None))

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(**inputs)))

    def save_pretrained(self, directory: str | Path, id2label: dict[int, str] | None = None) -> None:
        """Save the encoder (``save_pretrained``) and, next to it, the head weights and a json describing how
        to apply them (pooling, sizes, labels)."""
        directory = Path(directory)
        self.encoder.save_pretrained(directory)
        state = {f"classifier.{k}": v.detach().contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(state, str(directory / HEAD_WEIGHTS_NAME))
        num_labels = self.classifier.out_features
        id2label = id2label or {i: str(i) for i in range(num_labels)}
        head_config: dict[str, Any] = {
            "architecture": "linear",
            "pooling": self.pooling_name,
            "hidden_size": self.classifier.in_features,
            "num_labels": num_labels,
            "id2label": {str(k): v for k, v in id2label.items()},
            "label2id": {v: int(k) for k, v in id2label.items()},
            "weights": HEAD_WEIGHTS_NAME,
        }
        (directory / HEAD_CONFIG_NAME).write_text(json.dumps(head_config, indent=2) + "\n")

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, encoder: PreTrainedModel | None = None, **model_kwargs: Any
    ) -> UnimodalClassifier:
        """Load an encoder saved by ``save_pretrained`` with ``AutoModel`` and put its saved head back on.

        Pass ``encoder`` (e.g. the same encoder after fusion fine-tuning) to put the saved head on it instead:
        its accuracy then measures how much of the pretraining task the encoder retained.
        """
        directory = Path(directory)
        head_config = json.loads((directory / HEAD_CONFIG_NAME).read_text())
        if encoder is None:
            encoder = AutoModel.from_pretrained(directory, **model_kwargs)
        model = cls(
            encoder,
            num_labels=head_config["num_labels"],
            pooling=head_config["pooling"],
        )
        state = load_file(str(directory / head_config["weights"]))
        model.classifier.load_state_dict({k.removeprefix("classifier."): v for k, v in state.items()})
        return model.eval()
