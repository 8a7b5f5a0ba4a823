"""FusionProcessor: equality with each encoder's own processor, resampling against independent methods,
save/load/AutoProcessor/Hub ids, missing modalities honoured by the model, bad-data errors."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import soundfile as sf
import timm
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    TimmWrapperImageProcessor,
    Wav2Vec2FeatureExtractor,
)
from transformers.image_transforms import convert_to_rgb

from multimodal_fusion import BadSampleError, FusionModel, FusionProcessor

RATE = 16000
TONES = ((220.0, 0.5), (1000.0, 0.3), (3000.0, 0.2))  # (Hz, amplitude): band-limited well below 4 kHz


def tone(rate: int, seconds: float = 0.5, phase: float = 0.0) -> np.ndarray:
    """The test signal evaluated exactly at ``rate`` (an independent reference for any resampler)."""
    t = np.arange(round(rate * seconds)) / rate
    return sum(a * np.sin(2 * np.pi * f * t + phase) for f, a in TONES).astype(np.float32)


def fft_resample(x: np.ndarray, n_out: int) -> np.ndarray:
    """Ideal band-limited resampling of a periodic signal with numpy's FFT (independent of soxr)."""
    spectrum = np.fft.rfft(x.astype(np.float64))
    out = np.zeros(n_out // 2 + 1, dtype=complex)
    keep = min(len(spectrum), len(out))
    out[:keep] = spectrum[:keep]
    return np.fft.irfft(out, n_out) * (n_out / len(x))


def rgb(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    return PIL.Image.fromarray(
        np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    )


def png_bytes(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def normalized(x: np.ndarray) -> np.ndarray:
    """wav2vec2's zero-mean unit-variance normalisation, written out."""
    x = x.astype(np.float64)
    return (x - x.mean()) / np.sqrt(x.var() + 1e-7)


class FakeAudioDecoder:
    """Mimics datasets 5's lazy ``AudioDecoder``: not a dict; ``["array"]``, ``["sampling_rate"]``,
    ``get_all_samples()`` -> ``AudioSamples(data=[C, N], sample_rate)``. torchcodec is not installed here."""

    def __init__(self, data: np.ndarray, rate: int):
        self._data, self._rate = data, rate

    def get_all_samples(self):
        return SimpleNamespace(data=torch.from_numpy(self._data), sample_rate=self._rate)

    def __getitem__(self, key):
        if key == "array":
            return self._data.mean(axis=0)
        if key == "sampling_rate":
            return self._rate
        raise TypeError("'AudioDecoder' object is not subscriptable")


@pytest.fixture(scope="module")
def processor(tiny_paths) -> FusionProcessor:
    return FusionProcessor.from_encoders(tiny_paths)


@pytest.fixture(scope="module")
def own(tiny_paths):
    """Each encoder's own processor, loaded independently of FusionProcessor."""
    return SimpleNamespace(
        image=AutoImageProcessor.from_pretrained(tiny_paths["image"]),
        audio=AutoFeatureExtractor.from_pretrained(tiny_paths["audio"]),
        text=AutoTokenizer.from_pretrained(tiny_paths["text"]),
    )


def test_outputs_equal_each_encoders_own_processor(processor, own, tmp_path):
    images = [rgb(20, 30, 0), rgb(41, 17, 1), rgb(32, 32, 2), rgb(25, 25, 3)]
    images[2].save(tmp_path / "img.png")
    inputs = [images[0], np.asarray(images[1]), str(tmp_path / "img.png"), png_bytes(images[3])]
    waves = [
        tone(RATE, 0.3),
        tone(RATE, 0.12, phase=1.0),
        np.random.default_rng(0).normal(size=3000).astype("f4"),
    ]
    texts = ["one two three", "the digit is seven", "nine"]
    batch = processor(image=inputs[:3], audio=waves, text=texts, sampling_rate=RATE)
    expected_pixels = own.image(images[:3], return_tensors="pt")["pixel_values"]
    assert torch.equal(batch["image_pixel_values"], expected_pixels)
    expected_audio = own.audio(
        waves, sampling_rate=RATE, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    assert torch.equal(batch["audio_input_values"], expected_audio["input_values"])
    assert torch.equal(batch["audio_attention_mask"], expected_audio["attention_mask"])
    assert batch["audio_attention_mask"].sum(1).tolist() == [len(w) for w in waves]
    expected_text = own.text(texts, padding=True, return_tensors="pt")
    for field in ("input_ids", "attention_mask", "token_type_ids"):
        assert torch.equal(batch[f"text_{field}"], expected_text[field])
    assert not {"image_mask", "audio_mask", "text_mask"} & set(batch)  # nothing missing, no masks
    # file bytes decode like the file itself
    single = processor(image=inputs[3])
    assert torch.equal(
        single["image_pixel_values"], own.image(images[3], return_tensors="pt")["pixel_values"]
    )


def test_text_is_truncated_to_the_encoders_max_length(processor, own):
    # The tiny BERT tokenizer has no model_max_length (1e30): the limit comes from max_position_embeddings=64.
    assert own.text.model_max_length > 10**6
    assert processor.modalities["text"]["max_length"] == 64
    long_text = " ".join(["one two three four five"] * 30)
    ids = own.text(long_text)["input_ids"]
    assert len(ids) > 64
    batch = processor(text=[long_text, "two"])
    expected = ids[:63] + [own.text.sep_token_id]
    assert batch["text_input_ids"][0].tolist() == expected
    assert batch["text_attention_mask"][1].tolist() == [1, 1, 1] + [0] * 61


def test_image_modes_and_arrays_become_rgb(processor, own):
    base = np.random.default_rng(1).integers(0, 256, (24, 20, 3), dtype=np.uint8)
    gray = PIL.Image.fromarray(base[..., 0])
    rgba = PIL.Image.fromarray(np.dstack([base, np.full((24, 20), 7, np.uint8)]))
    palette = PIL.Image.fromarray(base).convert("P")
    chw_float = torch.from_numpy(base).permute(2, 0, 1).float() / 255.0
    batch = processor(image=[gray, rgba, palette, chw_float, base[..., 0]])
    expected = own.image(
        [
            PIL.Image.fromarray(np.repeat(base[..., :1], 3, axis=2)),  # gray -> RGB repeats the channel
            # RGBA -> composited on white, as transformers' convert_to_rgb does (alpha 7: nearly white)
            PIL.Image.fromarray(convert_to_rgb(rgba, return_numpy=True)),
            palette.convert("RGB"),
            PIL.Image.fromarray(base),  # float [0, 1] CHW -> uint8 HWC
            PIL.Image.fromarray(np.repeat(base[..., :1], 3, axis=2)),
        ],
        return_tensors="pt",
    )["pixel_values"]
    torch.testing.assert_close(batch["image_pixel_values"], expected, atol=0, rtol=0)


def test_exif_orientation_is_applied_like_datasets_does(processor, tmp_path):
    pixels = np.random.default_rng(2).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    exif = PIL.Image.Exif()
    exif[PIL.Image.ExifTags.Base.Orientation] = 6  # "rotate 90 degrees clockwise to display"
    PIL.Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    stored = np.asarray(PIL.Image.open(tmp_path / "photo.jpg"))  # the JPEG's pixels, orientation not applied
    decoded = np.asarray(processor.decode("image", str(tmp_path / "photo.jpg")))
    assert decoded.shape == (24, 16, 3)
    assert np.array_equal(decoded, np.rot90(stored, k=-1))


def test_timm_encoder_gets_timms_own_eval_transform(tiny_dir):
    processor = FusionProcessor.from_encoders({"cam": str(tiny_dir / "timm")})
    assert isinstance(processor.processors["cam"], TimmWrapperImageProcessor)
    # independent: timm's own eval transform for the architecture the checkpoint was saved from
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    transform = timm.data.create_transform(
        **timm.data.resolve_data_config({}, model=model), is_training=False
    )
    images = [rgb(50, 70, 0), rgb(90, 60, 1)]
    expected = torch.stack([transform(image) for image in images])
    torch.testing.assert_close(processor(cam=images)["cam_pixel_values"], expected)
    assert expected.shape[-1] == 160  # test_resnet's pretrained_cfg input size, not a generic 224


def test_save_pretrained_from_pretrained_and_auto_processor(tiny_paths, tiny_dir, tmp_path):
    encoders = {**tiny_paths, "cam": str(tiny_dir / "timm"), "sensors": {"kind": "features", "input_dim": 3}}
    processor = FusionProcessor.from_encoders(encoders, max_audio_seconds={"audio": 0.2})
    processor.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "processor_config.json").read_text())
    assert saved["processor_class"] == "FusionProcessor"
    assert [m["name"] for m in saved["modalities"]] == ["image", "audio", "text", "cam", "sensors"]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.suffix != ".py") == [
        "audio", "cam", "image", "processor_config.json", "text"
    ]  # fmt: skip
    # plus the processor's own code, flat, for AutoProcessor.from_pretrained(..., trust_remote_code=True)
    assert saved["auto_map"] == {"AutoProcessor": "processing_fusion.FusionProcessor"}
    assert (tmp_path / "ckpt" / "processing_fusion.py").is_file()
    # the timm sub-folder is timm-format, so transformers' own loader reads it too
    assert isinstance(
        AutoImageProcessor.from_pretrained(tmp_path / "ckpt" / "cam"), TimmWrapperImageProcessor
    )

    inputs = {
        "image": [rgb(30, 30, 0), None],
        "audio": [tone(44100, 0.5), tone(8000, 0.1)],
        "text": ["one two", "three"],
        "cam": [rgb(40, 50, 1), rgb(60, 50, 2)],
        "sensors": [[1.0, 2.0, 3.0], None],
    }
    expected = processor(**inputs, sampling_rate={"audio": 8000})
    assert expected["audio_input_values"].shape[1] == round(0.2 * RATE)  # max_audio_seconds kept
    for loaded in (
        FusionProcessor.from_pretrained(tmp_path / "ckpt"),
        AutoProcessor.from_pretrained(tmp_path / "ckpt"),
    ):
        assert isinstance(loaded, FusionProcessor)
        assert loaded.modalities == processor.modalities
        assert loaded.max_audio_seconds == {"audio": 0.2}
        got = loaded(**inputs, sampling_rate={"audio": 8000})
        assert got.keys() == expected.keys()
        for key in expected:
            assert torch.equal(got[key], expected[key]), key


def _write_hub_tree(cache_dir: str, repo_id: str, source: Path) -> None:
    """Like tiny_encoders.write_hub_cache, but with sub-folders (a saved FusionProcessor has one per modality)."""
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    shutil.copytree(source, repo_dir / "snapshots" / commit, dirs_exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)


def test_hub_repo_ids_load_through_the_hub_cache(hub_ids, tiny_paths, processor, tmp_path):
    import huggingface_hub.constants

    ids = {
        "image": hub_ids["vit"],
        "audio": hub_ids["wav2vec2"],
        "text": hub_ids["bert"],
        "cam": hub_ids["timm"],
    }
    from_hub = FusionProcessor.from_encoders(ids)
    assert from_hub.modalities["image"]["path"] == "tiny-org/vit"
    assert isinstance(from_hub.processors["cam"], TimmWrapperImageProcessor)
    inputs = {"image": [rgb(30, 20, 0)], "audio": [tone(RATE, 0.2)], "text": ["one digit"]}
    expected = processor(**inputs, sampling_rate=RATE)
    got = from_hub(**inputs, sampling_rate=RATE)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    # a saved FusionProcessor pushed as a repo loads by id as well
    from_hub.save_pretrained(tmp_path / "saved")
    _write_hub_tree(huggingface_hub.constants.HF_HUB_CACHE, "tiny-org/fusion-processor", tmp_path / "saved")
    for loaded in (
        FusionProcessor.from_pretrained("tiny-org/fusion-processor"),
        AutoProcessor.from_pretrained("tiny-org/fusion-processor"),
    ):
        assert loaded.modalities == from_hub.modalities
        again = loaded(**inputs, cam=[rgb(40, 40, 3)], sampling_rate=RATE)
        assert torch.equal(again["text_input_ids"], expected["text_input_ids"])
        assert torch.equal(again["cam_pixel_values"], from_hub(cam=[rgb(40, 40, 3)])["cam_pixel_values"])


# ---------------------------------------------------------------------------------------------- audio inputs
@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_mixed_sample_rates_match_independent_resampling(processor, rate):
    decoded = processor.decode("audio", {"array": tone(rate), "sampling_rate": rate})
    assert decoded.dtype == np.float32 and decoded.shape == (RATE // 2,)
    interior = slice(400, -400)  # resampler edge effects at the clip ends
    exact = tone(RATE)  # the same signal evaluated at 16 kHz
    np.testing.assert_allclose(decoded[interior], exact[interior], atol=2e-3)
    fft = fft_resample(tone(rate), RATE // 2)  # 0.5 s holds whole periods of every tone
    np.testing.assert_allclose(decoded[interior], fft[interior], atol=2e-3)


def test_batch_of_mixed_rates_and_containers(processor, own, tmp_path):
    sf.write(tmp_path / "clip.wav", tone(22050, 0.4), 22050, subtype="FLOAT")
    stereo = np.stack([tone(44100, 0.3), 0.5 * tone(44100, 0.3)])  # [channels, samples]
    samples = [
        {"array": tone(8000, 0.25), "sampling_rate": 8000},
        str(tmp_path / "clip.wav"),
        torch.from_numpy(stereo),  # torch [C, N] with sampling_rate from the call
        FakeAudioDecoder(stereo, 44100),
        {"bytes": (tmp_path / "clip.wav").read_bytes(), "path": "clip.wav"},  # datasets Audio(decode=False)
        (tone(RATE, 0.1) * 32767).astype(np.int16),  # int16 PCM
    ]
    rates = [8000, 22050, 44100, 44100, 22050, RATE]
    with pytest.raises(BadSampleError, match="sample 2.*without a sampling rate"):
        processor(audio=samples)  # the raw tensor has no rate
    samples[2] = {"array": stereo.T, "sampling_rate": 44100}  # [N, C] numpy works as well
    samples[5] = {"array": samples[5], "sampling_rate": RATE}
    batch = processor(audio=samples)
    lengths = [
        round(0.25 * RATE),
        round(0.4 * RATE),
        round(0.3 * RATE),
        round(0.3 * RATE),
        round(0.4 * RATE),
        1600,
    ]
    assert batch["audio_attention_mask"].sum(1).tolist() == lengths
    # independent reference: each clip's signal evaluated at 16 kHz (mono = channel mean = 0.75 x tone)
    scale = [1.0, 1.0, 0.75, 0.75, 1.0, 1.0]
    for i, (n, s, r) in enumerate(zip(lengths, scale, rates, strict=True)):
        reference = normalized(s * tone(RATE, n / RATE))
        got = batch["audio_input_values"][i, :n].numpy()
        edge = 0 if r == RATE else 300
        np.testing.assert_allclose(got[edge : n - edge], reference[edge : n - edge], atol=1e-2)
        assert not batch["audio_input_values"][i, n:].any()  # padding is zeros


def test_audio_attention_mask_is_returned_even_when_the_extractor_would_not():
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=RATE, return_attention_mask=False, do_normalize=True)
    processor = FusionProcessor({"audio": extractor})
    waves = [tone(RATE, 0.1), tone(RATE, 0.05, phase=0.3)]
    batch = processor(audio=waves, sampling_rate=RATE)
    assert batch["audio_attention_mask"].tolist() == [[1] * 1600, [1] * 800 + [0] * 800]
    # each clip is normalised over its own samples, independent of padding (what the model's mask relies on)
    for i, wave in enumerate(waves):
        np.testing.assert_allclose(
            batch["audio_input_values"][i, : len(wave)].numpy(), normalized(wave), atol=1e-5
        )


def test_max_audio_seconds_truncates_after_resampling(tiny_paths):
    processor = FusionProcessor.from_encoders({"audio": tiny_paths["audio"]}, max_audio_seconds=0.25)
    full = FusionProcessor.from_encoders({"audio": tiny_paths["audio"]})
    clip = {"array": tone(44100, 1.0), "sampling_rate": 44100}
    cut = processor.decode("audio", clip)
    assert cut.shape == (4000,)
    np.testing.assert_allclose(cut[:-50], full.decode("audio", clip)[:4000][:-50], atol=1e-5)


# ---------------------------------------------------------------------------------------------- missing modalities
def test_missing_samples_get_masks_and_zero_placeholders(processor, own):
    image, waves, texts = rgb(30, 30), [tone(RATE, 0.1), tone(RATE, 0.2)], ["one", "two three"]
    batch = processor(
        image=[image, None, None],
        audio=[None, waves[0], waves[1]],
        text=[texts[0], texts[1], None],
        sampling_rate=RATE,
    )
    assert batch["image_mask"].tolist() == [True, False, False]
    assert batch["audio_mask"].tolist() == [False, True, True]
    assert batch["text_mask"].tolist() == [True, True, False]
    assert torch.equal(
        batch["image_pixel_values"][0], own.image(image, return_tensors="pt")["pixel_values"][0]
    )
    assert not batch["image_pixel_values"][1:].any()
    present_audio = own.audio(
        waves, sampling_rate=RATE, padding=True, return_attention_mask=True, return_tensors="pt"
    )
    assert torch.equal(batch["audio_input_values"][1:], present_audio["input_values"])
    assert not batch["audio_input_values"][0].any() and not batch["audio_attention_mask"][0].any()
    present_text = own.text(texts, padding=True, return_tensors="pt")
    assert torch.equal(batch["text_input_ids"][:2], present_text["input_ids"])
    assert batch["text_input_ids"][2].tolist() == [own.text.pad_token_id] * present_text["input_ids"].shape[1]
    # a modality missing for every sample still stacks, at the encoder's input size
    none = processor(image=[None, None], text=["one", "two"])
    assert none["image_pixel_values"].shape == (2, 3, 32, 32) and not none["image_mask"].any()


def test_model_ignores_the_raw_input_of_a_missing_modality(tiny_paths, processor):
    torch.manual_seed(0)
    model = FusionModel.from_encoders(
        tiny_paths, num_labels=3, projection_dim=32, fusion_hidden_size=32, fusion_heads=2, fusion="attention"
    ).eval()
    # the model's saved modality specs rebuild the same processor
    assert FusionProcessor.from_encoders(model.config.modalities).modalities == processor.modalities
    texts = ["one two", "three four five six"]
    first = processor(
        image=[None, rgb(32, 32, 1)], audio=[tone(RATE, 0.1), None], text=texts, sampling_rate=RATE
    )
    second = (
        processor(  # different raw inputs for the *other* sample change every placeholder's shape/content
            image=[None, rgb(64, 48, 2)],
            audio=[tone(RATE, 0.3, phase=2.0), None],
            text=texts,
            sampling_rate=RATE,
        )
    )
    assert first["audio_input_values"].shape != second["audio_input_values"].shape
    with torch.no_grad():
        logits_first = model(**first).logits
        logits_second = model(**second).logits
        # garbage in the masked placeholders changes nothing either
        noisy = dict(first)
        noisy["image_pixel_values"] = (
            torch.randn_like(first["image_pixel_values"]).masked_fill(
                first["image_mask"][:, None, None, None], 0
            )
            + first["image_pixel_values"]
        )
        noisy["audio_input_values"] = first["audio_input_values"].clone()
        noisy["audio_input_values"][1] = torch.randn(first["audio_input_values"].shape[1])
        logits_noisy = model(**noisy).logits
        # sample 0 lacks the image: its logits depend on its own audio only; sample 1 lacks audio
        alone_0 = model(**processor(audio=[tone(RATE, 0.1)], text=texts[:1], sampling_rate=RATE)).logits
        alone_1 = model(**processor(image=[rgb(32, 32, 1)], text=texts[1:])).logits
    torch.testing.assert_close(logits_noisy, logits_first)
    torch.testing.assert_close(logits_first[0], alone_0[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_first[1], alone_1[0], atol=1e-5, rtol=1e-5)
    # the present inputs did change, so the logits must differ where they are present
    assert not torch.allclose(logits_first, logits_second)


# ---------------------------------------------------------------------------------------------- bad data
def _bad_cases(tmp: Path):
    (tmp / "corrupt.png").write_bytes(b"not an image at all")
    (tmp / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    rgb(64, 64).save(tmp / "whole.png")
    (tmp / "truncated.png").write_bytes((tmp / "whole.png").read_bytes()[:2000])
    nan_wave = tone(RATE, 0.1)
    nan_wave[5] = np.nan
    inf_wave = tone(RATE, 0.1)
    inf_wave[7] = np.inf
    return [
        ("image", str(tmp / "nope.png"), "image file not found", str(tmp / "nope.png")),
        ("image", str(tmp / "corrupt.png"), "cannot decode image", str(tmp / "corrupt.png")),
        ("image", str(tmp / "truncated.png"), "cannot decode image", str(tmp / "truncated.png")),
        ("audio", str(tmp / "nope.wav"), "audio file not found", str(tmp / "nope.wav")),
        ("audio", str(tmp / "corrupt.wav"), "cannot decode audio", str(tmp / "corrupt.wav")),
        ("audio", {"array": np.zeros(0, np.float32), "sampling_rate": RATE}, "empty waveform", None),
        ("audio", {"array": nan_wave, "sampling_rate": RATE}, "1 NaN/inf samples", None),
        ("audio", {"array": inf_wave, "sampling_rate": RATE}, "1 NaN/inf samples", None),
        ("audio", tone(RATE, 0.1), "without a sampling rate", None),
        ("audio", {"array": tone(RATE, 0.1), "sampling_rate": -5}, "positive whole number", None),
        (
            "audio",
            {"array": np.ones(40, np.float32), "sampling_rate": RATE},
            "too short; the encoder needs at least 85",
            None,
        ),
        ("text", 42, "text of type int", None),
    ]


def test_every_bad_sample_raises_an_error_naming_modality_sample_and_file(processor, tmp_path):
    good = {"image": rgb(20, 20), "audio": {"array": tone(RATE, 0.1), "sampling_rate": RATE}, "text": "one"}
    for modality, value, reason, path in _bad_cases(tmp_path):
        with pytest.raises(BadSampleError) as info:
            processor(**{modality: [good[modality], value]})
        error = info.value
        assert (error.modality, error.row, error.path) == (modality, "sample 1", path)
        assert reason in str(error) and f"modality '{modality}'" in str(error)
        if path:
            assert path in str(error)


def test_feature_vectors_are_checked(tiny_paths):
    processor = FusionProcessor({"sensors": {"kind": "features", "input_dim": 3}})
    batch = processor(sensors=np.array([[1, 2, 3], [4, 5, 6]]))
    assert torch.equal(batch["sensors_values"], torch.tensor([[1.0, 2, 3], [4, 5, 6]]))
    with pytest.raises(BadSampleError, match=r"modality 'sensors'.*shape \(2,\); expected \(3,\)"):
        processor(sensors=[[1, 2, 3], [1, 2]])
    with pytest.raises(BadSampleError, match="NaN/inf"):
        processor(sensors=[[1, 2, float("nan")]])


def test_call_errors_name_what_was_expected(processor):
    with pytest.raises(ValueError, match=r"unknown modalities \['video'\].*\['image', 'audio', 'text'\]"):
        processor(video=[1])
    with pytest.raises(ValueError, match="one entry per sample"):
        processor(image=[rgb(8, 8)], text=["a", "b"])
    with pytest.raises(ValueError, match="`processor` must be a tokenizer"):
        FusionProcessor({"text": {"kind": "text", "processor": Wav2Vec2FeatureExtractor()}})
