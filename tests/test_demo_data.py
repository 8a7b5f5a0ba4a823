"""The demo dataset generator (balance, corruption rate, decodable files, DTMF content, relative paths,
determinism) and a smoke run of stage 1 (pretraining the three unimodal encoders)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoModel, AutoTokenizer

from multimodal_fusion.demo import generate_demo_dataset, pretrain_unimodal
from multimodal_fusion.demo.dataset import CSV_COLUMNS, MODALITIES, SPLITS
from multimodal_fusion.demo.dataset import main as dataset_main
from multimodal_fusion.demo.pretrain import main as pretrain_main
from multimodal_fusion.demo.pretrain import predict_log_probs
from multimodal_fusion.demo.synthesis import DTMF_FREQUENCIES, FILLER_PHRASES
from multimodal_fusion.demo.unimodal import HEAD_CONFIG_NAME, HEAD_WEIGHTS_NAME, UnimodalClassifier
from multimodal_fusion.demo.unimodal_inputs import ModalityInputs, read_split

NUM_SAMPLES = 400


def _rows(csv_path: Path) -> list[dict[str, str]]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo_data")
    generate_demo_dataset(out, num_samples=NUM_SAMPLES, seed=0, progress=False)
    return out


@pytest.fixture(scope="module")
def all_rows(demo_data) -> list[dict[str, str]]:
    return [row for split in SPLITS for row in _rows(demo_data / f"{split}.csv")]


def test_layout_and_columns(demo_data, all_rows):
    assert len(all_rows) == NUM_SAMPLES
    for split in SPLITS:
        with open(demo_data / f"{split}.csv", newline="") as f:
            assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    info = json.loads((demo_data / "dataset_info.json").read_text())
    assert sum(s["num_samples"] for s in info["splits"].values()) == NUM_SAMPLES
    assert len(info["label_names"]) == 10
    assert len({row["image"] for row in all_rows}) == NUM_SAMPLES  # one file per sample


def test_class_balance(demo_data):
    for split in SPLITS:
        counts = np.bincount([int(r["label"]) for r in _rows(demo_data / f"{split}.csv")], minlength=10)
        assert counts.max() - counts.min() <= 1, (split, counts)


def test_corruption_rate_within_tolerance(all_rows):
    flags = np.array([[int(r[f"{m}_corrupted"]) for m in MODALITIES] for r in all_rows], dtype=bool)
    rates = flags.mean(0)
    assert np.all(np.abs(rates - 0.3) < 0.05), rates
    # Chosen independently per modality: neither identical nor disjoint, and all three at ~0.3 ** 3.
    assert 0 < flags.all(1).mean() < 0.08
    assert not np.array_equal(flags[:, 0], flags[:, 1])


def test_corruption_prob_zero_and_one(tmp_path):
    generate_demo_dataset(tmp_path / "clean", num_samples=20, corruption_prob=0.0, progress=False)
    generate_demo_dataset(tmp_path / "noise", num_samples=20, corruption_prob=1.0, progress=False)
    for name, expected in (("clean", "0"), ("noise", "1")):
        rows = _rows(tmp_path / name / "train.csv")
        assert all(r[f"{m}_corrupted"] == expected for r in rows for m in MODALITIES)


def test_files_decode(demo_data, all_rows):
    for row in all_rows:
        image = Image.open(demo_data / row["image"])
        image.load()
        assert image.size == (32, 32) and image.mode == "RGB"
        wave, rate = sf.read(demo_data / row["audio"], dtype="float32")
        assert rate == 16000 and wave.ndim == 1
        assert 0.25 * 16000 - 1 <= len(wave) <= 1.0 * 16000
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0.005


def _tone_power(spectrum: np.ndarray, freqs: np.ndarray, f: float) -> float:
    band = (freqs > f * 0.98) & (freqs < f * 1.02)
    return float(spectrum[band].max())


def test_dtmf_frequencies_in_clean_audio(demo_data, all_rows):
    lows = sorted({low for low, _ in DTMF_FREQUENCIES.values()})
    highs = sorted({high for _, high in DTMF_FREQUENCIES.values()})
    checked = 0
    for row in all_rows:
        if row["audio_corrupted"] == "1":
            continue
        wave, rate = sf.read(demo_data / row["audio"], dtype="float32")
        spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
        freqs = np.fft.rfftfreq(len(wave), 1 / rate)
        low = max(lows, key=lambda f: _tone_power(spectrum, freqs, f))
        high = max(highs, key=lambda f: _tone_power(spectrum, freqs, f))
        assert (low, high) == DTMF_FREQUENCIES[int(row["label"])], row
        # The two tones dominate the spectrum: the global peak lies at one of them.
        peak = freqs[spectrum.argmax()]
        assert min(abs(peak - low) / low, abs(peak - high) / high) < 0.02, (row, peak)
        checked += 1
    assert checked > 0.6 * len(all_rows)


def test_text_names_digit_or_is_filler(all_rows):
    fillers = {p.lower() for p in FILLER_PHRASES}
    for row in all_rows:
        is_filler = row["text"].lower() in fillers
        assert is_filler == (row["text_corrupted"] == "1"), row
        assert row["text"].strip().lower() not in {"", "null", "nan", "none", "na", "n/a"}, row
        with pytest.raises(ValueError):
            float(row["text"])


def test_relative_paths_work_from_another_cwd(demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = _rows(demo_data / "test.csv")
    assert all(not Path(r["image"]).is_absolute() and not Path(r["audio"]).is_absolute() for r in rows)
    assert all((demo_data / r["image"]).is_file() and (demo_data / r["audio"]).is_file() for r in rows)
    for row in read_split(demo_data, "test"):
        assert Path(row["image"]).is_file() and Path(row["audio"]).is_file()


def test_seeded_determinism(tmp_path):
    first = generate_demo_dataset(tmp_path / "a", num_samples=30, seed=3, progress=False)
    second = generate_demo_dataset(tmp_path / "b", num_samples=30, seed=3, progress=False)
    other = generate_demo_dataset(tmp_path / "c", num_samples=30, seed=4, progress=False)
    for split in SPLITS:
        assert first[split].read_bytes() == second[split].read_bytes()
    assert first["train"].read_bytes() != other["train"].read_bytes()
    for row in _rows(first["train"]):
        for column in ("image", "audio"):
            assert (tmp_path / "a" / row[column]).read_bytes() == (tmp_path / "b" / row[column]).read_bytes()


def test_csv_text_column_reads_as_strings(demo_data, tmp_path):
    """No phrase is a bare number or a missing-value marker (``null`` is German for zero), so generic csv
    readers keep the text column as strings even on tiny splits."""
    datasets = pytest.importorskip("datasets")
    ds = datasets.load_dataset(
        "csv", data_files=str(demo_data / "validation.csv"), split="train", cache_dir=str(tmp_path)
    )
    assert all(isinstance(t, str) and t for t in ds["text"])
    assert sorted(set(ds["label"])) == list(range(10))


# --------------------------------------------------------------------------------------------------- stage 1


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """Stage 1 on a tiny set, once with 2 optimizer steps and once with none (= the initial weights)."""
    root = tmp_path_factory.mktemp("stage1")
    dataset_main(["--out-dir", str(root / "data"), "--num-samples", "40", "--seed", "1"])
    threads = torch.get_num_threads()
    try:
        pretrain_main(
            ["--data-dir", str(root / "data"), "--out-dir", str(root / "trained")]
            + ["--batch-size", "8", "--max-steps", "2"]
        )
    finally:
        torch.set_num_threads(threads)
    pretrain_unimodal(root / "data", root / "initial", batch_size=8, max_steps=0, progress=False)
    return root, json.loads((root / "trained" / "unimodal_results.json").read_text())


EXPECTED = {
    "image": ("ViTModel", AutoImageProcessor, "ViTImageProcessor"),
    "audio": ("Wav2Vec2Model", AutoFeatureExtractor, "Wav2Vec2FeatureExtractor"),
    "text": ("BertModel", AutoTokenizer, "BertTokenizer"),
}


@pytest.mark.parametrize("modality", MODALITIES)
def test_pretrained_folders_load_with_auto_classes(stage1, modality):
    root, _ = stage1
    folder = root / "trained" / modality
    model_class, auto_processor, processor_class = EXPECTED[modality]
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == model_class
    assert not info["missing_keys"] and not info["unexpected_keys"]
    processor = auto_processor.from_pretrained(folder)
    assert type(processor).__name__.startswith(processor_class)
    if modality == "audio":
        assert processor.return_attention_mask and processor.sampling_rate == 16000
        assert model.config.feat_extract_norm == "layer" and model.config.layerdrop == 0.0
    if modality == "text":
        assert processor("le chiffre sept")["input_ids"][0] == processor.cls_token_id
        for row in read_split(root / "data", "train"):  # the vocabulary covers its training corpus
            assert processor.unk_token_id not in processor(row["text"])["input_ids"], row["text"]
    assert (folder / HEAD_WEIGHTS_NAME).is_file() and (folder / HEAD_CONFIG_NAME).is_file()


@pytest.mark.parametrize("modality", MODALITIES)
def test_training_changed_the_encoder(stage1, modality):
    root, _ = stage1
    trained = load_file(str(root / "trained" / modality / "model.safetensors"))
    initial = load_file(str(root / "initial" / modality / "model.safetensors"))
    assert trained.keys() == initial.keys()
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert len(changed) > len(trained) // 2, f"only {len(changed)} of {len(trained)} tensors changed"


def test_results_and_saved_heads_reproduce_accuracy(stage1):
    root, results = stage1
    assert set(results) == {*MODALITIES, "late_fusion"}
    assert 0.0 <= results["late_fusion"]["test_accuracy"] <= 1.0
    test_rows = read_split(root / "data", "test")
    labels = torch.tensor([int(r["label"]) for r in test_rows])
    for modality in MODALITIES:
        folder = root / "trained" / modality
        model = UnimodalClassifier.from_pretrained(folder)
        processor = EXPECTED[modality][1].from_pretrained(folder)
        log_probs = predict_log_probs(model, ModalityInputs(modality, test_rows, processor))
        accuracy = (log_probs.argmax(-1) == labels).float().mean().item()
        assert accuracy == pytest.approx(results[modality]["test_accuracy"], abs=1e-4)
        # The saved head also goes on an encoder given explicitly (e.g. one fine-tuned in a fusion model).
        on_encoder = UnimodalClassifier.from_pretrained(folder, encoder=AutoModel.from_pretrained(folder))
        torch.testing.assert_close(
            predict_log_probs(on_encoder, ModalityInputs(modality, test_rows, processor)), log_probs
        )


def test_report_plots_have_no_overlapping_tick_labels(tmp_path, monkeypatch):
    """With all nine fusions (long names such as ``low_rank_tensor``), no two x tick labels of accuracy.png or
    modality_weights.png overlap, and none leaves the saved figure."""
    import matplotlib.figure

    from multimodal_fusion.demo.report import plot_accuracy_bars, plot_modality_weights
    from multimodal_fusion.model.fusions import FUSION_REGISTRY

    checked = []
    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(fig, path, **kwargs):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            labels = [label for label in ax.get_xticklabels() if label.get_text()]
            assert len(labels) >= 6
            boxes = [label.get_window_extent(renderer) for label in labels]
            anchors = [label.get_transform().transform(label.get_position())[0] for label in labels]
            for i in range(len(labels) - 1):
                angle = np.deg2rad(labels[i].get_rotation())
                if angle == 0:
                    assert not boxes[i].overlaps(boxes[i + 1]), path
                else:  # parallel slanted lines of text: their baselines must be a text height apart
                    height = labels[i].get_fontsize() * fig.dpi / 72
                    assert (anchors[i + 1] - anchors[i]) * np.sin(angle) >= height, (
                        path,
                        labels[i].get_text(),
                    )
            assert all(box.x0 >= 0 and box.y0 >= 0 for box in boxes), path  # inside the saved figure
        checked.append(path)
        return real_savefig(fig, path, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    fusions = sorted(FUSION_REGISTRY)
    results = {"unimodal": {"image": 0.7, "audio": 0.7, "text": 0.7}, "fused": {f: 0.95 for f in fusions}}
    plot_accuracy_bars(results, tmp_path / "accuracy.png")
    plot_modality_weights({f: {"image": 0.2, "audio": 0.3, "text": 0.5} for f in fusions}, tmp_path / "w.png")
    assert len(checked) == 2 and all(path.stat().st_size > 1000 for path in checked)


TOKENIZER_SCRIPT = """
import csv, hashlib, json, sys
from multimodal_fusion.demo.text_tokenizer import train_wordpiece_tokenizer
texts = [row["text"] for row in csv.DictReader(open(sys.argv[1], encoding="utf-8"))]
tokenizer = train_wordpiece_tokenizer(texts)
print(hashlib.sha256(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode()).hexdigest())
"""


def test_the_demo_text_vocabulary_is_the_same_in_every_process(tmp_path):
    """The demo's text tokenizer (hence its text encoder and every fused result) does not change from one run to the
    next: two processes (each with its own hash seeds) build the same vocabulary from the demo corpus."""
    import subprocess
    import sys

    generate_demo_dataset(tmp_path / "data", num_samples=300, seed=0)
    digests = {
        subprocess.run(
            [sys.executable, "-c", TOKENIZER_SCRIPT, str(tmp_path / "data" / "train.csv")],
            check=True, capture_output=True, text=True, env={**__import__("os").environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }  # fmt: skip
    assert len(digests) == 1 and len(next(iter(digests))) == 64
