"""A modality kind added from outside the package: one class registered here, run through processor -> model ->
embedding cache -> save / reload -> remote code, without touching a package file.

The toy kind ``counts``: a sample is a list of event ids (e.g. the pages a user visited), decoded into a bag of
counts ``[input_dim]`` and encoded like dense features. Everything it needs beyond ``FeaturesKind`` is its decoding.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from multimodal_fusion import FusionModel, FusionProcessor
from multimodal_fusion.cache.embedding_cache import cache_embeddings
from multimodal_fusion.model.bad_samples import BadSampleError
from multimodal_fusion.model.kind_features import FeaturesKind
from multimodal_fusion.model.modality_kinds import MODALITY_KIND_REGISTRY, kind_names, register_modality_kind

INPUT_DIM = 6
SPECS = {
    "visits": {"kind": "counts", "input_dim": INPUT_DIM},
    "profile": {"kind": "features", "input_dim": 3},
}
SMALL = {"projection_dim": 8, "fusion_hidden_size": 8, "num_labels": 3}


class CountsKind(FeaturesKind):
    """Event ids -> a bag of counts ``[input_dim]`` (float32); ids outside ``[0, input_dim)`` are bad samples."""

    def is_batch(self, value):
        return isinstance(value, (list, tuple)) and all(
            isinstance(v, (list, tuple)) or v is None for v in value
        )

    def decode(self, processor, name, value, options):
        dim = processor.modalities[name]["input_dim"]
        ids = np.asarray(value, dtype=np.int64)
        if ids.ndim != 1 or ((ids < 0) | (ids >= dim)).any():
            raise BadSampleError(f"event ids {list(value)} must be a list of integers in [0, {dim})")
        return np.bincount(ids, minlength=dim).astype(np.float32)

    def example_sample(self, spec, length, rng):
        return list(rng.integers(0, spec["input_dim"], 3 + length))


SAMPLES = [[0, 2, 2, 5], None, [1], [3, 3, 3, 0]]
PROFILES = [[0.5, -1.0, 2.0], [1.0, 1.0, 0.0], [0.0, 0.3, -0.2], [2.0, 0.0, 1.0]]


@pytest.fixture
def counts_kind():
    register_modality_kind("counts")(CountsKind)
    yield CountsKind
    MODALITY_KIND_REGISTRY.unregister("counts")


def _expected_counts():
    counts = [np.bincount(s, minlength=INPUT_DIM) if s is not None else np.zeros(INPUT_DIM) for s in SAMPLES]
    return torch.tensor(np.stack(counts), dtype=torch.float32)


def test_custom_kind_runs_through_processor_model_cache_save_and_reload(counts_kind, tmp_path):
    assert "counts" in kind_names()
    processor = FusionProcessor.from_encoders(SPECS)
    batch = processor(visits=SAMPLES, profile=PROFILES)
    assert torch.equal(batch["visits_values"], _expected_counts())  # decoded by the kind, placeholder row 1
    assert batch["visits_mask"].tolist() == [True, False, True, True]
    with pytest.raises(BadSampleError, match="sample 0, modality 'visits'.*event ids"):
        processor(visits=[[9]], profile=PROFILES[:1])

    torch.manual_seed(0)
    model = FusionModel.from_encoders(SPECS, fusion="gated", **SMALL).eval()
    assert model.config.modalities["visits"].kind_class == f"{__name__}:CountsKind"
    with torch.no_grad():
        logits = model(**batch).logits
        pooled = model.get_modality_embeddings(**batch)["visits"]
    present = batch["visits_mask"]
    with torch.no_grad():  # the features MLP on the bag of counts, computed outside the fusion model
        direct = model.encoders["visits"](batch["visits_values"][present])
    assert torch.allclose(pooled[present], direct, atol=1e-6)

    rows = datasets.Dataset.from_dict({"visits": SAMPLES, "profile": PROFILES, "label": [0, 1, 2, 0]})
    cached = cache_embeddings(rows, model, processor, modalities=["visits"], batch_size=2)
    embeds = torch.tensor([e if e is not None else [0.0] * pooled.shape[1] for e in cached["visits_embeds"]])
    assert torch.allclose(embeds[present], pooled[present], atol=1e-6)

    model.save_pretrained(tmp_path / "ckpt")
    processor.save_pretrained(tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    visits = next(spec for spec in saved["modalities"] if spec["name"] == "visits")
    assert visits["kind_class"] == f"{__name__}:CountsKind"
    MODALITY_KIND_REGISTRY.unregister("counts")  # a fresh process: the checkpoint registers the kind again
    reloaded = FusionModel.from_pretrained(tmp_path / "ckpt").eval()
    assert "counts" in kind_names()
    reprocessed = FusionProcessor.from_pretrained(tmp_path / "ckpt")(visits=SAMPLES, profile=PROFILES)
    assert torch.equal(reprocessed["visits_values"], batch["visits_values"])
    with torch.no_grad():
        assert torch.equal(reloaded(**reprocessed).logits, logits)
    torch.save({"batch": dict(batch), "logits": logits}, tmp_path / "expected.pt")


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from transformers import AutoModel, AutoProcessor
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(sys.argv[1], trust_remote_code=True)
    expected = torch.load(sys.argv[2])
    batch = processor(visits=[[0, 2, 2, 5], None, [1], [3, 3, 3, 0]], profile=expected["batch"]["profile_values"])
    assert torch.equal(batch["visits_values"], expected["batch"]["visits_values"])
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected["logits"])
    print(type(model).__module__, type(processor).__module__)
    """
)


def test_custom_kind_loads_through_remote_code(counts_kind, tmp_path):
    test_custom_kind_runs_through_processor_model_cache_save_and_reload(counts_kind, tmp_path)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    tests = str(Path(__file__).resolve().parent)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": tests}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(tmp_path / "ckpt"), str(tmp_path / "expected.pt")],
        env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    model_module, _processor_module = result.stdout.split()
    # the model's code is the checkpoint's copy (the processor may be the package's own: importing the kind's
    # module imports the package, which registers FusionProcessor with AutoProcessor)
    assert model_module.startswith("transformers_modules.")


def test_the_architecture_guide_example_runs():
    """docs/architecture.md's "How to add a modality kind" example runs as written (and registers its kind)."""
    import re

    guide = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", guide, re.S) if "register_modality_kind" in b)
    namespace = {}
    try:
        exec(compile(block, "architecture.md", "exec"), namespace)
        assert namespace["logits"].shape == (2, 3)
        assert MODALITY_KIND_REGISTRY["counts"] is namespace["CountsKind"]
    finally:
        MODALITY_KIND_REGISTRY.unregister("counts")
