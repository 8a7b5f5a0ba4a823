"""Checkpoints saved by the v0.1 release (``tests/fixtures/v0_1``, made by ``make_fixtures.py`` there with the
v0.1 code) load with today's code, through ``FusionModel.from_pretrained`` and through ``AutoModel`` with the
folder's own remote code, and give the logits they gave when saved; their processors rebuild the same batch;
a pickled ``training_args.bin`` of a v0.1 run still loads."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from multimodal_fusion import FusionModel, FusionProcessor

FIXTURES = Path(__file__).parent / "fixtures" / "v0_1"
TESTS = Path(__file__).parent
FOLDERS = ["gated", "cross_attention", "own_network"]


def fixture_copy(name: str, tmp_path: Path) -> Path:
    """A copy elsewhere (the folders must not depend on where they were saved)."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


@pytest.fixture(autouse=True)
def own_networks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


@pytest.mark.parametrize("name", FOLDERS)
def test_v0_1_checkpoint_gives_its_logits(name, tmp_path):
    folder = fixture_copy(name, tmp_path)
    model = FusionModel.from_pretrained(folder).eval()
    batch = torch.load(folder / "batch.pt")
    expected = load_file(folder / "logits.safetensors")["logits"]
    with torch.no_grad():
        logits = model(**batch).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["gated", "cross_attention"])
def test_v0_1_processor_rebuilds_the_saved_batch(name, tmp_path):
    sys.path.insert(0, str(FIXTURES))
    try:
        from make_fixtures import batch_for
    finally:
        sys.path.remove(str(FIXTURES))
    folder = fixture_copy(name, tmp_path)
    batch = batch_for(FusionProcessor.from_pretrained(folder))
    saved = torch.load(folder / "batch.pt")
    assert set(batch) == set(saved)
    for key, value in saved.items():
        assert torch.equal(batch[key], value), key


REMOTE = textwrap.dedent(
    """
    import sys, torch
    sys.modules["multimodal_fusion"] = None  # the package cannot be imported here
    from transformers import AutoModel
    model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        torch.save(model(**torch.load(sys.argv[1] + "/batch.pt")).logits, sys.argv[2])
    """
)


@pytest.mark.parametrize("name", FOLDERS)
def test_v0_1_checkpoint_through_its_remote_code(name, tmp_path):
    folder = fixture_copy(name, tmp_path)
    (tmp_path / "remote.py").write_text(REMOTE)
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": str(TESTS),
    }
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "out.pt")],
        check=True, env=env, cwd=tmp_path, capture_output=True, text=True,
    )  # fmt: skip
    expected = load_file(folder / "logits.safetensors")["logits"]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=0, atol=1e-6)


def test_v0_1_training_args_still_unpickle():
    args = torch.load(FIXTURES / "training_args.bin", weights_only=False)
    assert type(args).__name__ == "FusionTrainingArguments"
    assert args.learning_rate == 1e-3
