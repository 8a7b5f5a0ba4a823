"""The README's model and processor examples run as written: the tiny test encoders are placed in the offline
Hub cache under the very repo ids the README uses."""

import re
from pathlib import Path

import pytest
from conftest import HUB_CACHE

from tiny_encoders import write_hub_cache

README = Path(__file__).resolve().parents[1] / "README.md"
README_IDS = {
    "google/vit-base-patch16-224-in21k": "vit",
    "facebook/wav2vec2-base": "wav2vec2_group",  # the base checkpoint has group norm
    "bert-base-uncased": "bert",
}


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.fixture(scope="module")
def readme_ids(tiny_dir):
    for repo_id, folder in README_IDS.items():
        write_hub_cache(HUB_CACHE, repo_id, tiny_dir / folder)


@pytest.mark.parametrize(
    "marker",
    [
        "model = FusionModel.from_encoders(\n    encoders,",
        'batch = processor(\n    image=[Image.new("L"',
        'fusion="cross_attention",',
        "model.activation_checkpointing_enable()  #",
    ],
)
def test_readme_example_runs(readme_ids, marker, tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if marker in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    logits = namespace["model"](**namespace["batch"]).logits
    assert logits.shape[0] == 2 and logits.shape[1] in (3, 7)


def test_readme_input_data_format_and_ignore_index_example(readme_ids, tmp_path, monkeypatch):
    blocks = python_blocks()
    setup = next(b for b in blocks if 'batch = processor(\n    image=[Image.new("L"' in b)
    example = next(b for b in blocks if 'input_data_format="channels_first"' in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(setup, "README.md", "exec"), namespace)
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["loss"].item() == 0.0 and namespace["batch"]["image_pixel_values"].shape[0] == 1


def test_readme_scoring_engine_example(readme_ids, tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if 'cache="build", skip_bad_samples=True' in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    first, again = namespace["first"], namespace["again"]
    assert first.rows == again.rows == [0, 1, 2] and [e["row"] for e in first.errors] == [3]
    assert first.errors[0]["column"] == "photo" and first.errors[0]["path"].endswith("photo3.png")
    assert first.cached_modalities == again.cached_modalities == ["image", "text"]
    assert abs(first.logits[None] - again.logits[None]).max() <= 1e-6


def test_readme_custom_kind_example(tmp_path, monkeypatch):
    from multimodal_fusion.model.modality_kinds import MODALITY_KIND_REGISTRY

    block = next(b for b in python_blocks() if '@register_modality_kind("event_counts")' in b)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)
        batch = namespace["processor"](visits=[[4], [1, 1]], profile=[[0.0, 0.0], [1.0, 1.0]])
        assert batch["visits_values"].tolist() == [[0, 0, 0, 0, 1], [0, 2, 0, 0, 0]]  # the kind decoded them
    finally:
        MODALITY_KIND_REGISTRY.unregister("event_counts")
