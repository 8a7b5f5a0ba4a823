"""The bad-input table of issue 12: every kind of bad image, audio, text, batch value or label gives an error
naming the modality/column and the field/row, a counted skip, or the correct value (checked against an
independent computation or transformers' own conversion), never a silent wrong result."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import torch
import yaml
from transformers import AutoFeatureExtractor
from transformers.image_transforms import convert_to_rgb

from multimodal_fusion import BadSampleError, FusionDataCollator, FusionModel, FusionProcessor
from multimodal_fusion.data.data_loading import load_fusion_dataset
from multimodal_fusion.model.image_decoding import decode_image
from multimodal_fusion.training.run_fusion import main
from tiny_encoders import random_batch

RATE = 16000
GRADIENT_16 = np.linspace(0, 65535, 48).round().astype(np.uint16).reshape(6, 8)


def grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=2)


def over_white(rgba: np.ndarray) -> np.ndarray:
    """Independent alpha compositing on white: c * a + 255 * (1 - a)."""
    rgb, alpha = rgba[..., :3].astype(np.float64), rgba[..., 3:].astype(np.float64) / 255.0
    return np.round(rgb * alpha + 255.0 * (1.0 - alpha))


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    PIL.Image.frombytes("I;16", (8, 6), GRADIENT_16.astype("<u2").tobytes()).save(root / "grey16.png")
    PIL.Image.frombytes("I;16B", (8, 6), GRADIENT_16.astype(">u2").tobytes()).save(root / "grey16b.tiff")
    big = np.linspace(0, 2**31 - 1, 48).astype(np.int32).reshape(6, 8)
    PIL.Image.fromarray(big).save(root / "int32.tiff")
    PIL.Image.fromarray(np.full((6, 8), -5, np.int32)).save(root / "negative_int32.tiff")
    unit = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    PIL.Image.fromarray(unit).save(root / "float.tiff")
    PIL.Image.fromarray(unit * 3).save(root / "float_above_1.tiff")
    PIL.Image.fromarray(np.full((6, 8), np.nan, np.float32)).save(root / "float_nan.tiff")
    PIL.Image.fromarray(_rgba()).save(root / "rgba.png")
    la = np.stack([np.full((6, 8), 40, np.uint8), _rgba()[..., 3]], axis=-1)
    PIL.Image.fromarray(la, mode="LA").save(root / "la.png")
    palette = PIL.Image.new("P", (8, 6), 1)
    palette.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    palette.putpixel((0, 0), 0)
    palette.save(root / "palette.png", transparency=0)
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 1] = 90
    rgb[0, 0] = (1, 2, 3)
    PIL.Image.fromarray(rgb).save(root / "rgb_trns.png", transparency=(1, 2, 3))
    (root / "a_folder.png").mkdir()
    return root


def _rgba() -> np.ndarray:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent pixel
    rgba[0, 1, 3] = 255
    return rgba


def _palette_expected(root: Path) -> np.ndarray:
    expected = np.zeros((6, 8, 3))
    expected[...] = (200, 10, 10)
    expected[0, 0] = 255  # the transparent palette entry
    return expected


def _trns_expected(root: Path) -> np.ndarray:
    expected = np.zeros((6, 8, 3))
    expected[..., 1] = 90
    expected[0, 0] = 255  # the transparent colour
    return expected


# (id, value builder, decode kwargs, expected uint8 RGB builder, tolerance in levels)
VALUE_CASES = [
    ("png_I;16", lambda d: d / "grey16.png", {}, lambda d: grey3(np.round(GRADIENT_16 / 257)), 1),
    ("tiff_I;16B", lambda d: d / "grey16b.tiff", {}, lambda d: grey3(np.round(GRADIENT_16 / 257)), 1),
    (
        "pil_I;16L",
        lambda d: PIL.Image.frombytes("I;16L", (8, 6), GRADIENT_16.astype("<u2").tobytes()),
        {},
        lambda d: grey3(np.round(GRADIENT_16 / 257)),
        1,
    ),
    ("array_uint16", lambda d: GRADIENT_16, {}, lambda d: grey3(np.round(GRADIENT_16 / 257)), 1),
    (
        "tiff_I_32bit",
        lambda d: d / "int32.tiff",
        {},
        lambda d: grey3(np.round(np.linspace(0, 2**31 - 1, 48).reshape(6, 8) * 255 / (2**32 - 1))),
        1,
    ),
    (
        "tiff_F_unit",
        lambda d: d / "float.tiff",
        {},
        lambda d: grey3(np.round(np.linspace(0, 1, 48).reshape(6, 8) * 255)),
        1,
    ),
    ("png_RGBA_on_white", lambda d: d / "rgba.png", {}, lambda d: over_white(_rgba()), 1),
    ("array_RGBA_HWC_on_white", lambda d: _rgba(), {}, lambda d: over_white(_rgba()), 1),
    (
        "array_RGBA_CHW_named",
        lambda d: np.moveaxis(_rgba()[:, :3], -1, 0),  # [4, 6, 3]: CHW RGBA of a 6x3 image
        {"input_data_format": "channels_first"},
        lambda d: over_white(_rgba()[:, :3]),
        1,
    ),
    (
        "png_LA_on_white",
        lambda d: d / "la.png",
        {},
        lambda d: grey3(over_white(np.dstack([grey3(np.full((6, 8), 40)), _rgba()[..., 3]]))[..., 0]),
        1,
    ),
    ("png_P_transparency", lambda d: d / "palette.png", {}, _palette_expected, 0),
    ("png_RGB_tRNS", lambda d: d / "rgb_trns.png", {}, _trns_expected, 0),
    (
        "array_333_channels_last",
        lambda d: np.arange(27, dtype=np.uint8).reshape(3, 3, 3),
        {"input_data_format": "channels_last"},
        lambda d: np.arange(27).reshape(3, 3, 3),
        0,
    ),
    (
        "array_333_channels_first",
        lambda d: np.arange(27, dtype=np.uint8).reshape(3, 3, 3),
        {"input_data_format": "channels_first"},
        lambda d: np.moveaxis(np.arange(27).reshape(3, 3, 3), 0, -1),
        0,
    ),
    (
        "tensor_float_CHW",
        lambda d: torch.linspace(0, 1, 3 * 5 * 7).reshape(3, 5, 7),
        {},
        lambda d: np.moveaxis(np.round(np.linspace(0, 1, 105).reshape(3, 5, 7) * 255), 0, -1),
        1,
    ),
]


@pytest.mark.parametrize(("value", "kwargs", "expected", "tolerance"), [c[1:] for c in VALUE_CASES],
                         ids=[c[0] for c in VALUE_CASES])  # fmt: skip
def test_images_decode_to_the_right_values(image_dir, value, kwargs, expected, tolerance):
    source = value(image_dir)
    decoded = np.asarray(decode_image(str(source) if isinstance(source, Path) else source, **kwargs))
    want = expected(image_dir)
    assert decoded.dtype == np.uint8 and decoded.shape == want.shape
    assert np.abs(decoded.astype(int) - want.astype(int)).max() <= tolerance


@pytest.mark.parametrize("name", ["rgba.png", "la.png", "palette.png", "rgb_trns.png"])
def test_transparency_matches_transformers_convert_to_rgb(image_dir, name):
    opened = PIL.Image.open(image_dir / name)
    assert np.array_equal(
        np.asarray(decode_image(str(image_dir / name))), convert_to_rgb(opened, return_numpy=True)
    )
    assert tuple(np.asarray(decode_image(str(image_dir / name)))[0, 0]) == (255, 255, 255)


# (id, value builder, decode kwargs, message pattern, names the file)
IMAGE_ERRORS = [
    ("tiff_I_negative", lambda d: d / "negative_int32.tiff", {}, r"outside its range \[0, 4\.29497e\+09\]", True),
    ("tiff_F_above_1", lambda d: d / "float_above_1.tiff", {}, r"'F' image holds values in \[0, 3\]", True),
    ("tiff_F_nan", lambda d: d / "float_nan.tiff", {}, "'F' image holds NaN or inf", True),
    ("pil_F_negative", lambda d: PIL.Image.fromarray(np.full((2, 2), -0.5, np.float32)), {}, "outside its range", False),
    ("array_float_above_1", lambda d: np.full((5, 6, 3), 2.0), {}, r"float image array holds values in \[2, 2\]", False),
    ("array_333_ambiguous", lambda d: np.zeros((3, 3, 3), np.uint8), {}, r"shape \(3, 3, 3\) is ambiguous.*input_data_format", False),
    ("array_483_ambiguous", lambda d: np.zeros((4, 8, 3), np.uint8), {}, r"shape \(4, 8, 3\) is ambiguous", False),
    ("array_183_ambiguous", lambda d: np.zeros((1, 8, 3), np.uint8), {}, "ambiguous", False),
    ("array_no_channel_axis", lambda d: np.zeros((2, 5, 7), np.uint8), {}, r"shape \(2, 5, 7\); expected", False),
    ("array_named_wrong_axis", lambda d: np.zeros((5, 8, 3), np.uint8), {"input_data_format": "channels_first"}, "has 5 channels", False),
    ("array_int64", lambda d: np.zeros((5, 6, 3), np.int64), {}, "dtype int64; expected uint8, uint16", False),
    ("array_0x0", lambda d: np.zeros((0, 0, 3), np.uint8), {}, r"shape \(0, 0, 3\)", False),
    ("pil_0x0", lambda d: PIL.Image.new("RGB", (0, 0)), {}, "image of 0x0 pixels", False),
    ("pil_RGBA_0x5", lambda d: PIL.Image.new("RGBA", (0, 5)), {}, "image of 0x5 pixels", False),
    ("directory", lambda d: d / "a_folder.png", {}, "image path is a directory", True),
]  # fmt: skip


@pytest.mark.parametrize(("value", "kwargs", "pattern", "names_file"), [c[1:] for c in IMAGE_ERRORS],
                         ids=[c[0] for c in IMAGE_ERRORS])  # fmt: skip
def test_bad_images_are_bad_samples_naming_modality_row_and_file(processor, image_dir, value, kwargs, pattern,
                                                                 names_file):  # fmt: skip
    source = value(image_dir)
    source = str(source) if isinstance(source, Path) else source
    with pytest.raises(BadSampleError, match=pattern) as info:
        processor(image=[PIL.Image.new("RGB", (4, 4)), source], **kwargs)
    assert (info.value.modality, info.value.row) == ("image", "sample 1")
    assert "modality 'image'" in str(info.value) and "sample 1" in str(info.value)
    if names_file:
        assert info.value.path == source and source in str(info.value)


def test_input_data_format_is_validated_and_saved(processor, tiny_paths, tmp_path):
    with pytest.raises(ValueError, match="`input_data_format` must be one of"):
        processor(image=[np.zeros((3, 3, 3), np.uint8)], input_data_format="NCHW")
    named = FusionProcessor.from_encoders(
        {"image": {"path": tiny_paths["image"], "input_data_format": "channels_first"}}
    )
    named.save_pretrained(tmp_path / "p")
    reloaded = FusionProcessor.from_pretrained(tmp_path / "p")
    chw = np.arange(27, dtype=np.uint8).reshape(3, 3, 3)
    assert np.array_equal(np.asarray(reloaded.decode("image", chw)), np.moveaxis(chw, 0, -1))


# ---------------------------------------------------------------------------------------------- audio
def test_header_only_wav_is_reported_empty(processor, tmp_path):
    sf.write(tmp_path / "header_only.wav", np.zeros((0, 2), np.float32), RATE)
    with pytest.raises(BadSampleError, match="empty waveform") as info:
        processor(audio=[str(tmp_path / "header_only.wav")])
    assert "NaN" not in str(info.value) and info.value.path == str(tmp_path / "header_only.wav")
    with pytest.raises(BadSampleError, match=r"empty waveform \(array of shape \(2, 0\)"):
        processor(audio=[{"array": np.zeros((2, 0), np.float32), "sampling_rate": RATE}])


@pytest.fixture(scope="module")
def model(tiny_paths):
    paths = {**tiny_paths, "sensors": {"kind": "features", "input_dim": 4}}
    return FusionModel.from_encoders(paths, num_labels=3, projection_dim=32, fusion_hidden_size=32).eval()


@pytest.fixture(scope="module")
def processor(tiny_paths):
    return FusionProcessor.from_encoders(tiny_paths)


def test_short_clip_from_a_bare_feature_extractor_is_refused_by_the_model(model, tiny_paths):
    bare = FusionProcessor({"audio": AutoFeatureExtractor.from_pretrained(tiny_paths["audio"])})
    assert bare.modalities["audio"]["min_audio_samples"] == 1  # the processor alone does not know the encoder
    batch = bare(audio=[np.ones(1600, np.float32), np.ones(40, np.float32)], sampling_rate=RATE)
    with pytest.raises(ValueError, match=r"modality 'audio' \(audio\): field 'audio_input_values' row 1 has 40 "
                                         r"valid samples.*at least 85"):  # fmt: skip
        model(**batch)
    # a user's collator without attention mask: the padded length is the clip length
    with pytest.raises(ValueError, match=r"row 0 has 60 valid samples \(no attention mask"):
        model(audio_input_values=torch.randn(2, 60))
    # a missing clip (audio_mask False) is not a short clip
    batch = bare(audio=[np.ones(1600, np.float32), None], sampling_rate=RATE)
    assert model(**batch).logits.shape == (2, 3)


# ---------------------------------------------------------------------------------------------- batch values
def batch(**overrides):
    base = {**random_batch(2), "sensors_values": torch.randn(2, 4)}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def _with(key, row, position, value):
    def build():
        tensor = batch()[key].clone()
        tensor[(row, *position)] = value
        return {key: tensor}

    return build


def _long_text():
    ids = torch.full((2, 65), 6, dtype=torch.long)
    return {"text_input_ids": ids, "text_attention_mask": torch.ones_like(ids)}


BATCH_ERRORS = [
    ("pixel_nan", _with("image_pixel_values", 1, (0, 3, 4), float("nan")), r"'image' \(image\): field 'image_pixel_values' holds NaN or inf values \(first in row 1\)"),
    ("pixel_inf", _with("image_pixel_values", 0, (2, 0, 0), float("inf")), r"'image_pixel_values' holds NaN or inf values \(first in row 0\)"),
    ("pixel_all_nan", lambda: {"image_pixel_values": torch.full((2, 3, 32, 32), float("nan"))}, "'image_pixel_values' holds NaN"),
    ("audio_nan", _with("audio_input_values", 1, (5,), float("nan")), r"'audio_input_values' holds NaN or inf values \(first in row 1\)"),
    ("features_inf", _with("sensors_values", 1, (2,), float("-inf")), r"'sensors' \(features\): field 'sensors_values' holds NaN"),
    ("embeds_nan", lambda: {"text_input_ids": None, "text_attention_mask": None, "text_embeds": torch.full((2, 32), float("nan"))}, "'text_embeds' holds NaN"),
    ("token_id_beyond_vocab", _with("text_input_ids", 1, (3,), 29), r"'text' \(text\): field 'text_input_ids' holds 29 in row 1, position 3; expected token ids .*vocab_size=29\) in \[0, 28\]"),
    ("token_id_negative", _with("text_input_ids", 0, (1,), -1), r"'text_input_ids' holds -1 in row 0, position 1"),
    ("text_beyond_positions", _long_text, r"'text_input_ids' has 65 tokens per row; .*at most 64 \(max_position_embeddings\)"),
    ("token_type_beyond", lambda: {"text_token_type_ids": torch.full((2, 7), 2, dtype=torch.long)}, r"'text_token_type_ids' holds 2 in row 0, position 0; expected token type ids \(type_vocab_size=2\)"),
    ("position_id_beyond", lambda: {"text_position_ids": torch.arange(7).repeat(2, 1) + 60}, r"'text_position_ids' holds 64 in row 0, position 4.*max_position_embeddings=64"),
    ("text_mask_not_binary", _with("text_attention_mask", 1, (0,), 2), r"'text_attention_mask' holds 2 in row 1; expected 0 \(padding\) or 1"),
    ("audio_mask_not_binary", _with("audio_attention_mask", 0, (0,), 3), r"'audio_attention_mask' holds 3 in row 0"),
    ("audio_row_shorter_than_receptive_field", lambda: random_batch(2, audio_lengths=[1600, 84]), r"'audio_input_values' row 1 has 84 valid samples"),
    ("audio_row_empty", lambda: _empty_audio_row(), r"row 1 has 0 valid samples"),
]  # fmt: skip


def _empty_audio_row():
    fields = random_batch(2)
    fields["audio_attention_mask"][1] = 0
    return {
        "audio_input_values": fields["audio_input_values"],
        "audio_attention_mask": fields["audio_attention_mask"],
    }


@pytest.mark.parametrize(
    ("overrides", "pattern"), [c[1:] for c in BATCH_ERRORS], ids=[c[0] for c in BATCH_ERRORS]
)
def test_bad_batch_values_name_modality_field_and_row(model, overrides, pattern):
    with pytest.raises(ValueError, match=pattern):
        model(**batch(**overrides()))


def test_valid_edge_values_pass(model):
    ids = batch()["text_input_ids"].clone()
    ids[0, 1] = 28  # last id of the vocabulary
    long = torch.full((2, 64), 6, dtype=torch.long)  # exactly the position table
    assert model(**batch(text_input_ids=ids)).logits.isfinite().all()
    assert (
        model(**batch(text_input_ids=long, text_attention_mask=torch.ones_like(long))).logits.isfinite().all()
    )
    short = random_batch(2, audio_lengths=[1600, 85])  # exactly the receptive field
    assert model(**batch(**short)).logits.isfinite().all()


# ---------------------------------------------------------------------------------------------- labels: model
LABEL_ERRORS = [
    ("class_id_7_of_3", None, torch.tensor([7, 0]), r"`labels`: row 0 holds class id 7, out of range; expected 0..2 \(num_labels=3\) or -100"),
    ("class_id_3_of_3", None, torch.tensor([0, 3]), "row 1 holds class id 3, out of range"),
    ("class_id_negative", None, torch.tensor([1, -1]), "row 1 holds class id -1"),
    ("class_id_fractional", "single_label_classification", torch.tensor([1.0, 1.5]), r"row 1 holds the fractional class id 1.5.*never truncated"),
    ("class_id_nan", "single_label_classification", torch.tensor([float("nan"), 1.0]), r"row 0 holds nan; expected finite"),
    ("class_ids_2d", None, torch.tensor([[0, 1], [1, 2]]), r"shape \(2, 2\); single-label classification expects \[batch\]"),
    ("labels_scalar", None, torch.tensor(1), "needs a batch dimension"),
    ("regression_nan", "regression", torch.tensor([[0.0, float("nan"), 1.0], [0.0, 0.0, 0.0]]), r"row 0, column 1 holds nan; expected finite"),
    ("regression_inf", "regression", torch.tensor([[0.0, 0.0, 0.0], [float("inf"), 0.0, 0.0]]), r"row 1, column 0 holds inf"),
    ("regression_width", "regression", torch.tensor([0.5, 1.0]), r"regression with num_labels=3 expects 3 value"),
    ("multi_hot_2", "multi_label_classification", torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]), r"row 0, column 2 holds 2.0; multi-hot labels hold 0 or 1"),
    ("multi_hot_minus_1", "multi_label_classification", torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0]]), r"row 1, column 0 holds -1.0"),
    ("multi_hot_width", "multi_label_classification", torch.tensor([[1.0, 0.0], [0.0, 1.0]]), r"shape \(2, 2\); multi-label classification expects \[batch, 3\]"),
    ("multi_hot_nan", "multi_label_classification", torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, 0.0]]), "row 0, column 1 holds nan"),
]  # fmt: skip


@pytest.fixture
def problem(model):
    def set_problem_type(problem_type):
        model.config.problem_type = problem_type

    yield set_problem_type
    model.config.problem_type = None


@pytest.mark.parametrize(
    ("problem_type", "labels", "pattern"), [c[1:] for c in LABEL_ERRORS], ids=[c[0] for c in LABEL_ERRORS]
)
def test_bad_labels_through_the_model_name_row_column_and_value(
    model, problem, problem_type, labels, pattern
):
    problem(problem_type)
    with pytest.raises(ValueError, match=pattern):
        model(**batch(), labels=labels)


def test_ignore_index_rows_and_an_all_ignored_batch(model):
    model.train()
    try:
        inputs = {**random_batch(4), "sensors_values": torch.randn(4, 4)}
        model.zero_grad()
        out = model(**inputs, labels=torch.full((4,), -100))
        assert out.loss.item() == 0.0 and out.loss.requires_grad
        out.loss.backward()
        assert all(p.grad is None or not p.grad.any() for p in model.parameters())
        torch.manual_seed(0)
        out = model(**inputs, labels=torch.tensor([2, -100, 0, -100]))
        logits = out.logits.detach().double()
        expected = -(logits.log_softmax(-1)[[0, 2], [2, 0]]).mean()  # mean over the two labelled rows only
        assert abs(out.loss.item() - expected.item()) < 1e-6
    finally:
        model.eval()


# ---------------------------------------------------------------------------------------------- labels: collator
COLLATOR_LABELS = [
    ("none", {}, None, "label is missing"),
    ("string", {}, "cat", "label 'cat' is a string"),
    ("class_id_7_of_3", {"num_labels": 3, "problem_type": "single_label_classification"}, 7, r"class id 7 is out of range; expected 0..2"),
    ("negative_id", {}, -3, "class id -3 is out of range"),
    ("fractional", {"num_labels": 3, "problem_type": "single_label_classification"}, 1.5, "class id 1.5 is fractional"),
    ("nan_regression", {"num_labels": 1, "problem_type": "regression"}, float("nan"), "label nan is not finite"),
    ("inf_unknown_problem", {}, float("inf"), "label inf is not finite"),
    ("multi_hot_2", {"num_labels": 3, "problem_type": "multi_label_classification"}, [1, 2, 0], "column 1 holds 2; multi-hot labels hold 0 or 1"),
    ("multi_hot_width", {"num_labels": 3, "problem_type": "multi_label_classification"}, [1, 0], r"label list of width 2; expected 3 values \(num_labels\)"),
    ("multi_hot_scalar", {"num_labels": 3, "problem_type": "multi_label_classification"}, 1, "single number; multi-label classification expects a multi-hot list"),
    ("list_for_single_label", {"num_labels": 3, "problem_type": "single_label_classification"}, [0, 1, 0], "is a list; single-label classification"),
    ("object", {}, {"id": 1}, "label of type dict"),
]  # fmt: skip


def _rows(bad_label, good_label):
    return [
        {"text": "one two", "label": good_label, "row_index": 10},
        {"text": "three", "label": bad_label, "row_index": 11},
        {"text": "four", "label": good_label, "row_index": 12},
    ]


def _good(kwargs):
    return {"multi_label_classification": [0, 1, 0], "regression": 0.5}.get(kwargs.get("problem_type"), 1)


@pytest.mark.parametrize(
    ("kwargs", "bad", "pattern"), [c[1:] for c in COLLATOR_LABELS], ids=[c[0] for c in COLLATOR_LABELS]
)
def test_bad_labels_in_the_collator_error_or_counted_skip(processor, kwargs, bad, pattern):
    strict = FusionDataCollator(processor, {"text": "text"}, **kwargs)
    with pytest.raises(BadSampleError, match=pattern) as info:
        strict(_rows(bad, _good(kwargs)))
    assert (info.value.row, info.value.column) == (11, "label")
    assert "row 11" in str(info.value) and "column 'label'" in str(info.value)
    skipping = FusionDataCollator(processor, {"text": "text"}, skip_bad_samples=True, **kwargs)
    out = skipping(_rows(bad, _good(kwargs)))
    assert skipping.num_skipped == 1 and out["labels"].shape[0] == 2 and out["text_input_ids"].shape[0] == 2


def test_ragged_multi_hot_rows_without_num_labels_name_the_widths(processor):
    collator = FusionDataCollator(processor, {"text": "text"})
    rows = [
        {"text": "one", "label": [1, 0, 1], "row_index": 4},
        {"text": "two", "label": [1, 0], "row_index": 5},
    ]
    with pytest.raises(
        ValueError, match=r"column 'label': multi-hot labels .* widths by row: \{4: 3, 5: 2\}"
    ):
        collator(rows)


@pytest.mark.parametrize(("name", "make"), [
    ("image_0x0", lambda tmp: PIL.Image.new("RGB", (0, 0))),
    ("image_directory", lambda tmp: str(tmp)),
    ("image_ambiguous_array", lambda tmp: np.zeros((3, 3, 3), np.uint8)),
    ("image_16bit_out_of_range", lambda tmp: PIL.Image.fromarray(np.full((2, 2), 7.0, np.float32))),
])  # fmt: skip
def test_bad_images_are_counted_skips(processor, tmp_path, name, make):
    rows = [
        {"image": PIL.Image.new("RGB", (5, 5)), "label": 0, "row_index": 0},
        {"image": make(tmp_path), "label": 1, "row_index": 1},
    ]
    with pytest.raises(BadSampleError, match=r"row 1, column 'image', modality 'image'"):
        FusionDataCollator(processor, {"image": "image"})(rows)
    skipping = FusionDataCollator(processor, {"image": "image"}, skip_bad_samples=True)
    out = skipping(rows)
    assert skipping.num_skipped == 1 and out["labels"].tolist() == [0]


# ---------------------------------------------------------------------------------------------- labels: dataset
def _jsonl(path: Path, labels) -> Path:
    path.write_text("".join(json.dumps({"text": "one", "label": label}) + "\n" for label in labels))
    return path


DATASET_ERRORS = [
    ("header_only_csv", lambda tmp: _write(tmp / "h.csv", "text,label\n"), {}, r"data file '.*h\.csv' has no rows \(a header only\?\)"),
    ("empty_jsonl", lambda tmp: _write(tmp / "e.jsonl", ""), {}, r"data file '.*e\.jsonl'"),
    ("class_id_beyond_num_labels", lambda tmp: _jsonl(tmp / "a.jsonl", [0, 1, 7]), {"num_labels": 3}, r"values \[7\] are not among the label names .*split 'train' row 2: 7"),
    ("four_names_for_num_labels_3", lambda tmp: _jsonl(tmp / "s.jsonl", ["a", "b", "c", "d"]), {"num_labels": 3}, r"holds 4 label names \['a', 'b', 'c', 'd'\] but num_labels is 3"),
    ("regression_empty_cell", lambda tmp: _write(tmp / "r.csv", "text,label\none,0.5\ntwo,\n"), {}, r"label column 'label' \(regression.*split 'train' row 1: label is missing"),
    ("regression_nan", lambda tmp: _parquet(tmp / "n.parquet", [0.5, float("nan")]), {}, r"\(regression, num_labels=1\).*split 'train' row 1: label nan is not finite"),
    ("regression_inf", lambda tmp: _parquet(tmp / "i.parquet", [float("-inf"), 0.5]), {}, r"split 'train' row 0: label -inf is not finite"),
    ("multi_hot_2", lambda tmp: _jsonl(tmp / "m.jsonl", [[0, 1], [2, 0]]), {}, r"split 'train' row 1: column 0 holds 2"),
    ("multi_hot_ragged", lambda tmp: _jsonl(tmp / "g.jsonl", [[0, 1], [1, 0], [1, 0, 1]]), {}, r"row 2: label list of width 3; expected 2"),
    ("fractional_class_ids", lambda tmp: _jsonl(tmp / "f.jsonl", [0.0, 1.0, 2.5]), {"label_names": ["a", "b", "c"]}, r"row 2: class id 2.5 is fractional"),
]  # fmt: skip


def _parquet(path: Path, labels) -> Path:
    datasets.Dataset.from_dict({"text": ["one"] * len(labels), "label": labels}).to_parquet(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "kwargs", "pattern"), [c[1:] for c in DATASET_ERRORS], ids=[c[0] for c in DATASET_ERRORS]
)
def test_bad_dataset_files_and_labels_name_file_or_row(tmp_path, make, kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_fusion_dataset(str(make(tmp_path)), {"text": "text"}, length_column=None, **kwargs)


def test_skip_mode_leaves_bad_label_values_to_the_collator(tmp_path, processor):
    file = _jsonl(tmp_path / "m.jsonl", [[0, 1], [2, 0], [1, 1]])
    loaded = load_fusion_dataset(str(file), {"text": "text"}, length_column=None, skip_bad_samples=True)
    assert (loaded.problem_type, loaded.num_labels) == ("multi_label_classification", 2)
    collator = FusionDataCollator(processor, {"text": "text"}, skip_bad_samples=True,
                                  num_labels=2, problem_type="multi_label_classification")  # fmt: skip
    out = collator(list(loaded.dataset["train"]))
    assert collator.num_skipped == 1 and out["labels"].tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_run_refuses_class_ids_beyond_num_labels_before_training(tiny_paths, tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\none,0\ntwo,1\nthree,7\n")
    config = {
        "encoders": {"text": tiny_paths["text"]},
        "num_labels": 3,
        "train_file": str(train),
        "validation_split_percentage": 0,
        "output_dir": str(tmp_path / "out"),
        "max_steps": 1,
        "use_cpu": True,
        "report_to": "none",
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        ValueError, match=r"values \[7\] are not among the label names \['0', '1', '2'\].*row 2: 7"
    ):
        main([str(tmp_path / "run.yaml")])
    assert not (tmp_path / "out" / "model.safetensors").exists()
