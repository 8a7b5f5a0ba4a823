"""A REAL sentencepiece tokenizer (trained offline on generated sentences), not the tokenizers-library stand-in
of ``tiny_families``: T5 checkpoints that ship only ``spiece.model`` and SigLIP's sentencepiece-runtime
tokenizer must load through ``FusionProcessor.from_encoders`` and tokenize exactly as sentencepiece does."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch
import transformers as T

from multimodal_fusion import FusionModel, FusionProcessor

spm = pytest.importorskip("sentencepiece")

WORDS = [
    "red",
    "dog",
    "blue",
    "cat",
    "sat",
    "on",
    "the",
    "mat",
    "one",
    "two",
    "green",
    "bird",
    "flew",
    "tree",
]
SMALL = {"num_labels": 3, "projection_dim": 16, "fusion_hidden_size": 16, "dropout": 0.0}
TEXTS = ["the red dog sat on the mat", "one green bird flew over two trees"]


def train_spiece(path: Path) -> Path:
    """Train a 32-piece unigram model (pad 0, eos 1, unk 2, as T5's) on 200 generated sentences."""
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(6)) for _ in range(200)]
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=buffer,
        vocab_size=32,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    path.mkdir(parents=True, exist_ok=True)
    model_file = path / "spiece.model"
    model_file.write_bytes(buffer.getvalue())
    return model_file


def t5_encoder(path: Path, vocab_size: int) -> None:
    torch.manual_seed(0)
    config = T.T5Config(vocab_size=vocab_size, d_model=32, d_kv=16, d_ff=37, num_layers=2, num_heads=2)
    T.T5EncoderModel(config).save_pretrained(path)


def t5_spiece_only(path: Path) -> Path:
    """A T5 folder as many hub checkpoints are: ``spiece.model`` and no ``tokenizer.json`` (transformers converts
    the sentencepiece model; 100 sentinel ids are added by default, hence the larger embedding table)."""
    model_file = train_spiece(path)
    t5_encoder(path, vocab_size=32 + 100)
    return model_file


def siglip_tokenizer(path: Path) -> Path:
    """SigLIP's tokenizer runs the sentencepiece library itself (``SentencePieceBackend``)."""
    model_file = train_spiece(path / "spm")
    tokenizer = T.SiglipTokenizer(vocab_file=str(model_file))
    tokenizer.save_pretrained(path)
    t5_encoder(path, vocab_size=len(tokenizer))
    return model_file


@pytest.mark.parametrize("build", [t5_spiece_only, siglip_tokenizer])
def test_sentencepiece_text_encoder(build, tmp_path):
    folder = tmp_path / "enc"
    model_file = build(folder)
    assert not (folder / "tokenizer.json").exists()
    spec = {"x": {"path": str(folder)}}
    processor = FusionProcessor.from_encoders(spec)
    torch.manual_seed(0)
    model = FusionModel.from_encoders(spec, **SMALL).eval()

    reference = spm.SentencePieceProcessor(model_file=str(model_file))
    batch = processor(x=TEXTS)
    for row, text in enumerate(TEXTS):  # independent: the sentencepiece runtime's pieces + </s>
        expected = [*reference.encode(text), 1]
        mask = batch["x_attention_mask"][row].bool() if "x_attention_mask" in batch else slice(None)
        assert batch["x_input_ids"][row][mask].tolist() == expected
    assert 2 not in reference.encode(TEXTS[0]), "the trained vocabulary covers the test text (no <unk>)"

    with torch.no_grad():
        out = model(**batch)
        pooled = model.get_modality_embeddings(**batch)["x"]
    assert out.logits.shape == (2, 3) and torch.isfinite(out.logits).all()
    assert (pooled[0] - pooled[1]).abs().max() > 1e-4, "two different texts give the same pooled vector"
