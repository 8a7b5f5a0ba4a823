"""A BERT WordPiece tokenizer for the demo corpus, built with the ``tokenizers`` library (no download).

The pipeline is BERT's (lower-casing + accent stripping, whitespace/punctuation split, ``[CLS] A [SEP]``), so
the result behaves like any BERT checkpoint's tokenizer and loads with ``AutoTokenizer.from_pretrained``.

The vocabulary is counted from the corpus in Python: the special tokens, every character (and its ``##``
continuation), then the words by frequency (ties by spelling). ``tokenizers``' ``WordPieceTrainer`` breaks ties
between equally frequent merges differently in every process (its hash maps are randomly seeded), so a trained
vocabulary -- and with it the demo's text encoder and every fused result -- changed from run to run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertTokenizer

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece_tokenizer(
    texts: Iterable[str], vocab_size: int = 1000, model_max_length: int = 64
) -> BertTokenizer:
    """Build a WordPiece vocabulary (at most ``vocab_size`` entries; the same for the same ``texts`` in every
    process) from ``texts`` and wrap it as a transformers ``BertTokenizer`` (the tokenizers-backed class in
    transformers 5)."""
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        words.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = sorted({char for word in words for char in word})
    entries = [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]
    entries += [
        word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0])) if len(word) > 1
    ]
    vocab = {token: i for i, token in enumerate(dict.fromkeys(entries[:vocab_size]))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizer(tokenizer_object=tokenizer, model_max_length=model_max_length)
