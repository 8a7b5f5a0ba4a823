import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tiny_encoders import make_bert, make_timm, make_vit, make_wav2vec2  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Folder with tiny saved encoders: vit, wav2vec2 (layer norm), wav2vec2_group, bert, timm (resnet)."""
    root = tmp_path_factory.mktemp("encoders")
    make_vit(root / "vit")
    make_wav2vec2(root / "wav2vec2", norm="layer")
    make_wav2vec2(root / "wav2vec2_group", norm="group", seed=1)
    make_bert(root / "bert")
    make_timm(root / "timm")
    return root


@pytest.fixture(scope="session")
def tiny_paths(tiny_dir):
    return {
        "image": str(tiny_dir / "vit"),
        "audio": str(tiny_dir / "wav2vec2"),
        "text": str(tiny_dir / "bert"),
    }
