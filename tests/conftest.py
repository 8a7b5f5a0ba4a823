import os
import tempfile

# Before transformers/huggingface_hub are imported: offline, and a private Hub cache that tests fill with tiny
# encoders in the Hub's layout so repo ids ("tiny-org/vit") load through the real Hub code path.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_CACHE"] = HUB_CACHE = tempfile.mkdtemp(prefix="hub-cache-")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tiny_encoders import make_bert, make_timm, make_vit, make_wav2vec2, write_hub_cache  # noqa: E402

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
    """The default three modalities as local folders."""
    return {
        "image": str(tiny_dir / "vit"),
        "audio": str(tiny_dir / "wav2vec2"),
        "text": str(tiny_dir / "bert"),
    }


@pytest.fixture(scope="session")
def hub_ids(tiny_dir):
    """The tiny encoders as Hub repo ids ``tiny-org/{vit,wav2vec2,wav2vec2_group,bert,timm}`` in the offline
    Hub cache (``HF_HUB_CACHE``)."""
    ids = {}
    for name in ("vit", "wav2vec2", "wav2vec2_group", "bert", "timm"):
        ids[name] = f"tiny-org/{name.replace('_', '-')}"
        write_hub_cache(HUB_CACHE, ids[name], tiny_dir / name)
    return ids


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory):
    """A non-editable install of the package (``installed_package.InstalledPackage``): run commands against it
    with ``installed_package.python("-m", "multimodal_fusion.demo", ...)`` from an empty folder."""
    from installed_package import install_package

    return install_package(tmp_path_factory.mktemp("installed"))


@pytest.fixture(scope="session")
def installed_demo(installed_package, tmp_path_factory):
    """``multimodal-fusion demo --num-samples 300 --fusions concat`` run ONCE for the whole suite with the installed
    console script, from an empty folder: ``(outputs/demo folder, completed process)``. The
    tests of the installed demo and of predict/evaluate on its trained folder share it (it is the slow part)."""
    import subprocess

    folder = tmp_path_factory.mktemp("demo-run")
    done = subprocess.run(
        [str(installed_package.site / "bin" / "multimodal-fusion"), "demo", "--num-samples", "300",
         "--fusions", "concat"],
        cwd=folder, env=installed_package.env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    return folder / "outputs" / "demo", done
