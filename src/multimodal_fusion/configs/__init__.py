"""Ready training configs shipped with the package: ``demo.yaml``, ``hub-base.yaml`` and accelerate launch configs
under ``accelerate/``. Found through ``importlib.resources``, so they work from an installed (non-editable) copy."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_path(name: str) -> Path:
    """The file of packaged config ``name`` (``"demo.yaml"``, ``"accelerate/multi_gpu.yaml"``).

    Raises:
        FileNotFoundError: naming the packaged configs when ``name`` is not one of them.
    """
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"no packaged config '{name}'; the package ships {available_configs()}")
    return path


def available_configs() -> list[str]:
    """Names of every packaged config, relative to this folder (``accelerate/...`` for launch configs)."""
    root = Path(str(resources.files(__name__)))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))
