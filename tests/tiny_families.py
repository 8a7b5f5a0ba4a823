"""Tiny random checkpoints of 54 popular encoder architectures, each saved with ``save_pretrained`` next to its
own processor (tokenizers built offline from small vocabularies), for the encoder-family matrix test.

``FAMILIES`` maps an architecture name to ``(builder, kind, spec_kind, expected_blocks)``: ``builder(path)``
writes the folder; ``spec_kind`` is what the modality spec must name (dual-encoder folders need it);
``expected_blocks`` is the encoder's depth as its config defines it (an independent count of the blocks).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import transformers as T

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37}
WORDS = ["a", "red", "dog", "the", "blue", "cat", "sat", "on", "mat", "one", "two", "three", "four", "five"]
LETTERS = list("abcdefghijklmnopqrstuvwxyz")


def _byte_symbols() -> list[str]:
    """GPT-2's byte -> printable unicode table (byte-level BPE alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = keep[:], 0
    order = keep[:]
    for byte in range(256):
        if byte not in keep:
            order.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def byte_bpe(cls: type, specials: list[str], specials_first: bool = False, **kwargs):
    symbols = _byte_symbols()
    tokens = [*specials, *symbols] if specials_first else [*symbols, *specials]
    return cls(vocab={t: i for i, t in enumerate(tokens)}, merges=[], **kwargs)


def unigram(cls: type, specials: list[str], **kwargs):
    pieces = [(s, 0.0) for s in specials] + [("▁", -2.0)] + [("▁" + w, -3.0) for w in WORDS]
    return cls(vocab=pieces + [(c, -5.0) for c in LETTERS], **kwargs)


def wordpiece(cls: type = T.BertTokenizer, specials=("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"), **kwargs):
    vocab = [*specials, *WORDS, *LETTERS]
    return cls(vocab={w: i for i, w in enumerate(vocab)}, **kwargs)


ORIGINALS: dict[str, dict[str, torch.Tensor]] = {}
"""Folder -> the state dict of the model as built in memory (the reference the loaded encoders must equal)."""


def _save(model, processors, path: Path) -> None:
    for module in model.modules():  # non-trivial norm statistics and affine values, as a pretrained CNN has
        if isinstance(module, torch.nn.Conv2d):  # and convolutions that keep the signal's scale
            torch.nn.init.kaiming_normal_(module.weight)
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.1, 0.1)
    ORIGINALS[str(path)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.save_pretrained(path)
    for processor in processors:
        processor.save_pretrained(path)


def _seeded(build: Callable[[Path], None]) -> Callable[[Path], None]:
    def run(path: Path) -> None:
        torch.manual_seed(0)
        build(path)

    return run


def _image_processor(cls: type = T.ViTImageProcessor, **kwargs):
    return cls(size={"height": 32, "width": 32}, **kwargs)


def _square_crop(cls: type):
    return cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


# ------------------------------------------------------------------------------------------ images
VIT = dict(SMALL, image_size=32, patch_size=8)


def vit(path):
    _save(T.ViTModel(T.ViTConfig(**VIT)), [_image_processor()], path)


def deit(path):
    processor = T.DeiTImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    _save(T.DeiTModel(T.DeiTConfig(**VIT)), [processor], path)


def beit(path):
    config = T.BeitConfig(**VIT, use_relative_position_bias=True, vocab_size=64)
    processor = T.BeitImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    _save(T.BeitModel(config), [processor], path)


def dinov2(path):
    _save(T.Dinov2Model(T.Dinov2Config(**VIT)), [_square_crop(T.BitImageProcessor)], path)


def dinov2_registers(path):
    config = T.Dinov2WithRegistersConfig(**VIT, num_register_tokens=2)
    _save(T.Dinov2WithRegistersModel(config), [_square_crop(T.BitImageProcessor)], path)


def swin(path):
    config = T.SwinConfig(
        image_size=32,
        patch_size=4,
        window_size=4,
        embed_dim=16,
        depths=[1, 1],
        num_heads=[1, 2],
        mlp_ratio=2.0,
    )
    _save(T.SwinModel(config), [_image_processor()], path)


def convnext(path):
    config = T.ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)
    _save(T.ConvNextModel(config), [T.ConvNextImageProcessor(size={"shortest_edge": 32})], path)


def convnextv2(path):
    config = T.ConvNextV2Config(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2)
    _save(T.ConvNextV2Model(config), [T.ConvNextImageProcessor(size={"shortest_edge": 32})], path)


def resnet(path):
    config = T.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")
    _save(T.ResNetModel(config), [T.ConvNextImageProcessor(size={"shortest_edge": 32})], path)


def efficientnet(path):
    config = T.EfficientNetConfig(
        image_size=32,
        width_coefficient=0.25,
        depth_coefficient=0.25,
        hidden_dim=320,  # = round_filters(1280) at width 0.25: the top conv's width
        in_channels=[32, 16, 24],
        out_channels=[16, 24, 40],
        kernel_sizes=[3, 3, 5],
        strides=[1, 2, 2],
        num_block_repeats=[1, 1, 1],
        expand_ratios=[1, 6, 6],
    )
    _save(T.EfficientNetModel(config), [_image_processor(T.EfficientNetImageProcessor)], path)


def mobilevit(path):
    config = T.MobileViTConfig(
        image_size=32,
        patch_size=2,
        hidden_sizes=[16, 24, 32],
        neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 48],
        num_attention_heads=2,
    )
    _save(T.MobileViTModel(config), [_square_crop(T.MobileViTImageProcessor)], path)


def clip_dual(path):
    config = T.CLIPConfig(
        text_config=dict(
            SMALL, vocab_size=520, max_position_embeddings=32, eos_token_id=513, bos_token_id=512
        ),
        vision_config=VIT,
        projection_dim=16,
    )
    tokenizer = _clip_tokenizer()
    _save(T.CLIPModel(config), [tokenizer, _square_crop(T.CLIPImageProcessor)], path)


def _clip_tokenizer():
    symbols = _byte_symbols()
    vocab = {c: i for i, c in enumerate(symbols)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(symbols)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = 512, 513
    return T.CLIPTokenizer(vocab=vocab, merges=[])


def siglip_dual(path):
    config = T.SiglipConfig(
        text_config=dict(SMALL, vocab_size=64, max_position_embeddings=16), vision_config=VIT
    )
    # SiglipTokenizer needs sentencepiece (not installed): a T5-style unigram tokenizer of the same kind.
    tokenizer = unigram(T.T5Tokenizer, ["<pad>", "</s>", "<unk>"], extra_ids=0)
    _save(T.SiglipModel(config), [tokenizer, _image_processor(T.SiglipImageProcessor)], path)


def siglip2_dual(path):
    """SigLIP2 (NaFlex): the image processor patchifies at the image's aspect ratio into at most
    ``max_num_patches`` patches, returning ``pixel_values`` [B, P, 3 * patch^2] + ``pixel_attention_mask`` +
    ``spatial_shapes``."""
    config = T.Siglip2Config(
        text_config=dict(SMALL, vocab_size=64, max_position_embeddings=16),
        vision_config=dict(SMALL, patch_size=8, num_patches=16),
    )
    tokenizer = unigram(T.T5Tokenizer, ["<pad>", "</s>", "<unk>"], extra_ids=0)
    processor = T.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    _save(T.Siglip2Model(config), [tokenizer, processor], path)


def chinese_clip_dual(path):
    config = T.ChineseCLIPConfig(
        text_config=dict(TEXT, vocab_size=len(wordpiece())), vision_config=VIT, projection_dim=16
    )
    _save(T.ChineseCLIPModel(config), [wordpiece(), _square_crop(T.ChineseCLIPImageProcessor)], path)


def data2vec_vision(path):
    config = T.Data2VecVisionConfig(**VIT, use_relative_position_bias=True, use_mean_pooling=True)
    processor = T.BeitImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    _save(T.Data2VecVisionModel(config), [processor], path)


def levit(path):
    """LeViT: three stages (its config hard-codes two subsampling steps), 64 px -> 4 x 4 -> 2 x 2 -> 1 x 1."""
    config = T.LevitConfig(
        image_size=64,
        hidden_sizes=[16, 24, 32],
        num_attention_heads=[2, 3, 4],
        depths=[1, 1, 1],
        key_dim=[8, 8, 8],
        mlp_ratio=[2, 2, 2],
        attention_ratio=[2, 2, 2],
    )
    processor = T.LevitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    model = T.LevitModel(config)
    for (
        module
    ) in model.modules():  # std 0.02 in every linear layer shrinks the signal to ~1e-10 over 13 layers
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=module.in_features**-0.5)
    _save(model, [processor], path)


def timm_model(architecture: str):
    def build(path):
        import timm

        model = timm.create_model(architecture, pretrained=False, num_classes=0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        ORIGINALS[str(path)] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        timm.models.save_for_hf(model, str(path), safe_serialization=True)

    return build


# ------------------------------------------------------------------------------------------ audio
WAVE = dict(
    SMALL,
    conv_dim=(32, 32, 32),
    conv_stride=(5, 4, 4),
    conv_kernel=(10, 4, 4),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    layerdrop=0.0,
    mask_time_prob=0.0,
)


def _wave_extractor(rate: int = 16000):
    return T.Wav2Vec2FeatureExtractor(sampling_rate=rate, return_attention_mask=True, do_normalize=True)


def waveform(model_cls: type, config_cls: type, **extra):
    def build(path):
        _save(model_cls(config_cls(**{**WAVE, **extra})), [_wave_extractor()], path)

    return build


def whisper(path):
    config = T.WhisperConfig(
        vocab_size=100,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=37,
        decoder_ffn_dim=37,
        num_mel_bins=80,
        max_source_positions=50,
        max_target_positions=16,
        decoder_start_token_id=1,
        pad_token_id=0,
        eos_token_id=2,
        bos_token_id=1,
    )
    extractor = T.WhisperFeatureExtractor(
        feature_size=80, chunk_length=1
    )  # 100 mel frames = 2 x 50 positions
    _save(T.WhisperForConditionalGeneration(config), [extractor], path)


def ast(path):
    config = T.ASTConfig(**SMALL, max_length=100, num_mel_bins=128)
    _save(T.ASTModel(config), [T.ASTFeatureExtractor(max_length=100, num_mel_bins=128)], path)


def clap_dual(path):
    config = T.ClapConfig(
        text_config=dict(SMALL, vocab_size=261, max_position_embeddings=40),
        audio_config=dict(
            hidden_size=32,
            patch_embeds_hidden_size=16,
            depths=[1, 1],
            num_attention_heads=[2, 2],
            window_size=4,
            spec_size=64,
            num_mel_bins=16,
            patch_stride=(4, 4),
            patch_size=4,
        ),
        projection_dim=16,
    )
    tokenizer = byte_bpe(T.RobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], specials_first=True)
    extractor = T.ClapFeatureExtractor(feature_size=16, sampling_rate=16000, max_length_s=1, hop_length=160)
    _save(T.ClapModel(config), [tokenizer, extractor], path)


def wav2vec2_bert(path):
    """Wav2Vec2-BERT: log-mel ``input_features`` [B, frames, 160] (80 bins stacked by stride 2) from the
    SeamlessM4T feature extractor."""
    config = T.Wav2Vec2BertConfig(
        **SMALL,
        feature_projection_input_dim=160,
        conv_depthwise_kernel_size=3,
        position_embeddings_type="relative_key",
        left_max_position_embeddings=8,
        right_max_position_embeddings=8,
        layerdrop=0.0,
        mask_time_prob=0.0,
        add_adapter=False,
    )
    _save(T.Wav2Vec2BertModel(config), [T.SeamlessM4TFeatureExtractor()], path)


# ------------------------------------------------------------------------------------------ text
TEXT = dict(SMALL, max_position_embeddings=64)


def bert_like(model_cls: type, config_cls: type, tokenizer_factory: Callable, **extra):
    def build(path):
        tokenizer = tokenizer_factory()
        config = config_cls(
            **{**TEXT, **extra}, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
        )
        _save(model_cls(config), [tokenizer], path)

    return build


def distilbert(path):
    tokenizer = wordpiece(T.DistilBertTokenizer)
    config = T.DistilBertConfig(
        vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=37, max_position_embeddings=64
    )
    _save(T.DistilBertModel(config), [tokenizer], path)


def albert(path):
    tokenizer = unigram(T.AlbertTokenizer, ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"])
    config = T.AlbertConfig(**TEXT, embedding_size=16, vocab_size=len(tokenizer), pad_token_id=0)
    _save(T.AlbertModel(config), [tokenizer], path)


def modernbert(path):
    tokenizer = wordpiece(T.BertTokenizer)
    config = T.ModernBertConfig(
        **TEXT, vocab_size=len(tokenizer), pad_token_id=0, global_attn_every_n_layers=2, local_attention=16
    )
    _save(T.ModernBertModel(config), [tokenizer], path)


def mpnet(path):
    tokenizer = wordpiece(T.MPNetTokenizer, specials=("<s>", "<pad>", "</s>", "[UNK]", "<mask>"))
    config = T.MPNetConfig(**TEXT, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    _save(T.MPNetModel(config), [tokenizer], path)


def t5(model_cls: type):
    def build(path):
        tokenizer = unigram(T.T5Tokenizer, ["<pad>", "</s>", "<unk>"], extra_ids=0)
        config = T.T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=16,
            d_ff=37,
            num_layers=2,
            num_decoder_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
        )
        _save(model_cls(config), [tokenizer], path)

    return build


def decoder_lm(model_cls: type, config_cls: type, tokenizer_cls: type, specials: list[str], **extra):
    def build(path):
        tokenizer = byte_bpe(tokenizer_cls, specials)
        eos = tokenizer.convert_tokens_to_ids(tokenizer.eos_token)
        config = config_cls(
            **{**TEXT, **extra}, vocab_size=len(tokenizer), eos_token_id=eos, bos_token_id=eos
        )
        _save(model_cls(config), [tokenizer], path)

    return build


def gpt2(path):
    tokenizer = byte_bpe(T.GPT2Tokenizer, ["<|endoftext|>"])
    config = T.GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        bos_token_id=256,
        eos_token_id=256,
    )
    _save(T.GPT2Model(config), [tokenizer], path)


def bart(path):
    tokenizer = byte_bpe(T.BartTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], specials_first=True)
    config = T.BartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )  # fmt: skip
    _save(T.BartForConditionalGeneration(config), [tokenizer], path)


def mt5(path):
    tokenizer = unigram(T.T5Tokenizer, ["<pad>", "</s>", "<unk>"], extra_ids=0)
    config = T.MT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=37, num_layers=2, num_decoder_layers=1,
        num_heads=2, decoder_start_token_id=0,
    )  # fmt: skip
    _save(T.MT5ForConditionalGeneration(config), [tokenizer], path)


def opt(path):
    tokenizer = byte_bpe(
        T.GPT2Tokenizer, ["</s>", "<pad>"], eos_token="</s>", bos_token="</s>", pad_token="<pad>"
    )
    config = T.OPTConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, ffn_dim=37, num_attention_heads=2,
        max_position_embeddings=64, word_embed_proj_dim=32, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    _save(T.OPTModel(config), [tokenizer], path)


LLAMA = dict(num_key_value_heads=2, head_dim=16)

# name -> (builder, kind, spec kind (dual folders need it), expected number of encoder blocks)
FAMILIES: dict[str, tuple[Callable[[Path], None], str, str | None, int]] = {
    "vit": (vit, "image", None, 2),
    "deit": (deit, "image", None, 2),
    "beit": (beit, "image", None, 2),
    "dinov2": (dinov2, "image", None, 2),
    "dinov2_registers": (dinov2_registers, "image", None, 2),
    "swin": (swin, "image", None, 2),
    "convnext": (convnext, "image", None, 2),
    "convnextv2": (convnextv2, "image", None, 2),
    "resnet": (resnet, "image", None, 2),
    "efficientnet": (efficientnet, "image", None, 3),
    "mobilevit": (mobilevit, "image", None, 5),
    "siglip_vision": (siglip_dual, "image", "image", 2),
    "clip_vision": (clip_dual, "image", "image", 2),
    "siglip2_vision": (siglip2_dual, "image", "image", 2),
    "data2vec_vision": (data2vec_vision, "image", None, 2),
    "levit": (levit, "image", None, 3),
    "timm_resnet": (timm_model("test_resnet"), "image", None, 4),
    "timm_vit": (timm_model("test_vit"), "image", None, 6),
    "wav2vec2_layer": (
        waveform(T.Wav2Vec2Model, T.Wav2Vec2Config, feat_extract_norm="layer", do_stable_layer_norm=True),
        "audio",
        None,
        2,
    ),
    "wav2vec2_group": (
        waveform(T.Wav2Vec2Model, T.Wav2Vec2Config, feat_extract_norm="group"),
        "audio",
        None,
        2,
    ),
    "hubert": (waveform(T.HubertModel, T.HubertConfig, feat_extract_norm="group"), "audio", None, 2),
    "wavlm": (waveform(T.WavLMModel, T.WavLMConfig, feat_extract_norm="group"), "audio", None, 2),
    "data2vec_audio": (
        waveform(
            T.Data2VecAudioModel, T.Data2VecAudioConfig, num_conv_pos_embeddings=3, conv_pos_kernel_size=5
        ),
        "audio",
        None,
        2,
    ),
    "sew": (waveform(T.SEWModel, T.SEWConfig, squeeze_factor=2), "audio", None, 2),
    "unispeech_sat": (
        waveform(T.UniSpeechSatModel, T.UniSpeechSatConfig, feat_extract_norm="group"),
        "audio",
        None,
        2,
    ),
    "wav2vec2_conformer": (
        waveform(T.Wav2Vec2ConformerModel, T.Wav2Vec2ConformerConfig, conv_depthwise_kernel_size=3),
        "audio",
        None,
        2,
    ),
    "wav2vec2_bert": (wav2vec2_bert, "audio", None, 2),
    "unispeech": (
        waveform(T.UniSpeechModel, T.UniSpeechConfig, feat_extract_norm="group"),
        "audio",
        None,
        2,
    ),
    "sew_d": (
        waveform(T.SEWDModel, T.SEWDConfig, squeeze_factor=2, position_buckets=16, max_relative_positions=16),
        "audio",
        None,
        2,
    ),
    "whisper": (whisper, "audio", None, 2),
    "ast": (ast, "audio", None, 2),
    "clap_audio": (clap_dual, "audio", "audio", 2),
    "bert": (bert_like(T.BertModel, T.BertConfig, wordpiece), "text", None, 2),
    "roberta": (
        bert_like(
            T.RobertaModel,
            T.RobertaConfig,
            lambda: byte_bpe(
                T.RobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], specials_first=True
            ),
        ),
        "text",
        None,
        2,
    ),
    "distilbert": (distilbert, "text", None, 2),
    "albert": (albert, "text", None, 1),  # ALBERT shares one layer group across its layers
    "electra": (
        bert_like(T.ElectraModel, T.ElectraConfig, lambda: wordpiece(T.ElectraTokenizer)),
        "text",
        None,
        2,
    ),
    "deberta_v2": (
        bert_like(
            T.DebertaV2Model,
            T.DebertaV2Config,
            lambda: unigram(T.DebertaV2Tokenizer, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
        ),
        "text",
        None,
        2,
    ),
    "xlm_roberta": (
        bert_like(
            T.XLMRobertaModel,
            T.XLMRobertaConfig,
            lambda: unigram(T.XLMRobertaTokenizer, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
        ),
        "text",
        None,
        2,
    ),
    "modernbert": (modernbert, "text", None, 2),
    "mpnet": (mpnet, "text", None, 2),
    "t5": (t5(T.T5EncoderModel), "text", None, 2),
    "t5_seq2seq": (t5(T.T5ForConditionalGeneration), "text", None, 2),
    "gpt2": (gpt2, "text", None, 2),
    "qwen2": (
        decoder_lm(T.Qwen2Model, T.Qwen2Config, T.Qwen2Tokenizer, ["<|endoftext|>"], **LLAMA),
        "text",
        None,
        2,
    ),
    "llama": (
        decoder_lm(T.LlamaModel, T.LlamaConfig, T.LlamaTokenizer, ["<unk>", "<s>", "</s>"], **LLAMA),
        "text",
        None,
        2,
    ),
    "bart": (bart, "text", None, 2),
    "mt5": (mt5, "text", None, 2),
    "opt": (opt, "text", None, 2),
    "gemma": (
        decoder_lm(
            T.GemmaModel, T.GemmaConfig, T.GemmaTokenizer, ["<pad>", "<eos>", "<bos>", "<unk>"], **LLAMA
        ),
        "text",
        None,
        2,
    ),
    "phi3": (
        decoder_lm(
            T.Phi3Model, T.Phi3Config, T.LlamaTokenizer, ["<unk>", "<s>", "</s>"], pad_token_id=None, **LLAMA
        ),
        "text",
        None,
        2,
    ),
    "chinese_clip_text": (chinese_clip_dual, "text", "text", 2),
    "clip_text": (clip_dual, "text", "text", 2),
    "siglip_text": (siglip_dual, "text", "text", 2),
}
FAMILIES = {name: (_seeded(build), *rest) for name, (build, *rest) in FAMILIES.items()}
