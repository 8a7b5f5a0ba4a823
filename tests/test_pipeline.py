"""The ``fused-classification`` pipeline: in-process and as the saved folder's remote code, against the model."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from saved_fusion import raw_files, save_fusion_folder
from transformers import pipeline

from multimodal_fusion import FusedClassificationPipeline, FusionModel, FusionProcessor


@pytest.fixture(scope="module")
def setup(tiny_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    folder = save_fusion_folder(tiny_paths, root / "model")
    raw_files(root / "data")
    data = root / "data"
    image, audio = str(data / "images" / "test_0.png"), str(data / "audio" / "test_1.wav")
    samples = [
        {"image": image, "text": "the digit is one"},  # audio missing
        {"audio": audio, "text": "the digit is two"},  # image missing
        {"image": image, "audio": audio, "text": None},  # text missing (None)
    ]
    model = FusionModel.from_pretrained(folder).eval()
    processor = FusionProcessor.from_pretrained(folder)
    batch = processor(
        image=[image, None, image], audio=[None, audio, audio],
        text=["the digit is one", "the digit is two", None],
    )  # fmt: skip
    with torch.no_grad():
        probabilities = model(**batch).logits.softmax(-1)
    scores, labels = probabilities.max(-1)
    expected = [(model.config.id2label[int(i)], float(s)) for s, i in zip(scores, labels, strict=True)]
    # the masks matter: the same rows with every modality present score differently
    assert not torch.allclose(probabilities[0], probabilities[2])
    return folder, samples, expected


def assert_matches(results, expected):
    assert len(results) == len(expected)
    for result, (label, score) in zip(results, expected, strict=True):
        assert result[0]["label"] == label
        assert result[0]["score"] == pytest.approx(score, abs=1e-5)
        assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)


def test_in_process_pipeline_matches_the_model_on_the_processor_batch(setup):
    folder, samples, expected = setup
    pipe = pipeline("fused-classification", model=str(folder), device="cpu")
    assert type(pipe) is FusedClassificationPipeline
    results = pipe(samples, top_k=3, batch_size=2)  # batched: 2 + 1 samples
    assert_matches(results, expected)
    assert len(results[0]) == 3
    single = pipe(samples[1], top_k=1)
    assert single[0]["label"] == expected[1][0]
    with pytest.raises(ValueError, match="unknown modalities \\['video'\\]"):
        pipe({"video": "x.mp4"})


def test_remote_code_pipeline_without_the_package(setup, tmp_path):
    folder, samples, expected = setup
    files = {p.name for p in folder.iterdir()}
    assert {"pipeline_fusion.py", "processing_fusion.py", "audio_decoding.py", "image_decoding.py"} <= files
    saved = json.loads((folder / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": "processing_fusion.FusionProcessor"}
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["multimodal_fusion"] = None  # the package cannot be imported
        from transformers import pipeline
        pipe = pipeline(model={str(folder)!r}, trust_remote_code=True, device="cpu")
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe)
        assert type(pipe.processor).__module__.startswith("transformers_modules"), type(pipe.processor)
        print(json.dumps(pipe({samples!r}, top_k=2, batch_size=2)))
    """)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_matches(json.loads(done.stdout.strip().splitlines()[-1]), expected)
