"""A BERT WordPiece tokenizer trained on the demo corpus with the ``tokenizers`` library (no download).

The pipeline is BERT's (lower-casing + accent stripping, whitespace/punctuation split, ``[CLS] A [SEP]``), so
the result behaves like any BERT checkpoint's tokenizer and loads with ``AutoTokenizer.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, model_max_length: int = 64
) -> BertTokenizer:
    """Train a WordPiece vocabulary (at most ``vocab_size`` entries) on ``texts`` and wrap it as a
    transformers ``BertTokenizer`` (the tokenizers-backed class in transformers 5)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(texts, trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizer(tokenizer_object=tokenizer, model_max_length=model_max_length)
