"""Tiny pretrained-style encoders written with ``save_pretrained`` (no download), and a Hub-cache writer so the
repo-id code path is exercised offline."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch
import transformers as T

IMAGE_SIZE = 32
SAMPLING_RATE = 16000
WORDS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "the",
    "a",
    "is",
    "digit",
]


def make_vit(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = T.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=IMAGE_SIZE,
        patch_size=8,
    )
    T.ViTModel(config).save_pretrained(path)
    T.ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return path


def make_wav2vec2(path: Path, norm: str = "layer", seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = T.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        conv_dim=(32, 32, 32),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        feat_extract_norm=norm,
        do_stable_layer_norm=norm == "layer",
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    T.Wav2Vec2Model(config).save_pretrained(path)
    T.Wav2Vec2FeatureExtractor(
        sampling_rate=SAMPLING_RATE, return_attention_mask=True, do_normalize=True
    ).save_pretrained(path)
    return path


def make_bert(path: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    torch.manual_seed(seed)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *[str(i) for i in range(10)]]
    tokenizer = T.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = T.BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    T.BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def make_timm(path: Path, architecture: str = "test_resnet", seed: int = 0) -> Path:
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(architecture, pretrained=False, num_classes=0)
    # Non-trivial BatchNorm statistics, as a pretrained CNN has, so drift would show.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    timm.models.save_for_hf(model, str(path), safe_serialization=True)
    return path


def write_hub_cache(cache_dir: Path, repo_id: str, source: Path) -> None:
    """Lay ``source``'s files out as the Hub cache does (``models--org--name/{refs,snapshots}``)."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for file in Path(source).iterdir():
        if file.is_file():
            shutil.copy2(file, snapshot / file.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)


def random_batch(
    batch_size: int = 3,
    audio_lengths: list[int] | None = None,
    text_lengths: list[int] | None = None,
    seed: int = 0,
    modalities: tuple[str, ...] = ("image", "audio", "text"),
) -> dict[str, torch.Tensor]:
    """A padded model batch for the default image/audio/text modalities (tiny encoder sizes)."""
    generator = torch.Generator().manual_seed(seed)
    audio_lengths = audio_lengths or [1600] * batch_size
    text_lengths = text_lengths or [7] * batch_size
    batch: dict[str, torch.Tensor] = {}
    if "image" in modalities:
        batch["image_pixel_values"] = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    if "audio" in modalities:
        audio = torch.zeros(batch_size, max(audio_lengths))
        audio_mask = torch.zeros(batch_size, max(audio_lengths), dtype=torch.long)
        for i, length in enumerate(audio_lengths):
            audio[i, :length] = torch.randn(length, generator=generator)
            audio_mask[i, :length] = 1
        batch["audio_input_values"], batch["audio_attention_mask"] = audio, audio_mask
    if "text" in modalities:
        ids = torch.zeros(batch_size, max(text_lengths), dtype=torch.long)
        text_mask = torch.zeros_like(ids)
        for i, length in enumerate(text_lengths):
            ids[i, :length] = torch.randint(5, 29, (length,), generator=generator)
            ids[i, 0] = 2
            text_mask[i, :length] = 1
        batch["text_input_ids"], batch["text_attention_mask"] = ids, text_mask
    return batch


def select_rows(
    batch: dict[str, torch.Tensor], rows: list[int], trim: bool = True
) -> dict[str, torch.Tensor]:
    """Rows of a batch; with ``trim`` the audio/text padding beyond the longest kept row is cut off."""
    out = {k: v[rows] for k, v in batch.items()}
    if trim:
        for prefix, main in (("audio", "input_values"), ("text", "input_ids")):
            mask_key = f"{prefix}_attention_mask"
            if mask_key in out:
                length = int(out[mask_key].sum(dim=1).max())
                out[f"{prefix}_{main}"] = out[f"{prefix}_{main}"][:, :length]
                out[mask_key] = out[mask_key][:, :length]
    return out
