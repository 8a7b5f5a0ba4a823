"""Training entry point of the installed package: ``multimodal-fusion train CONFIG [--flag value ...]`` and, for
several processes, ``accelerate launch -m multimodal_fusion.training.launch CONFIG [--flag value ...]``.

``CONFIG`` is a YAML/JSON file or the name of a ready config shipped with the package (``demo``, ``hub-base``);
flags override its values. A config's ``hpo:`` section is for ``multimodal-fusion hpo`` and is ignored here.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


def ready_configs() -> dict[str, Path]:
    """Ready training config name (``demo``, ``hub-base``) -> its file shipped in ``multimodal_fusion.configs``."""
    from ..configs import available_configs, config_path

    return {name[: -len(".yaml")]: config_path(name) for name in available_configs() if "/" not in name}


def resolve_config(name_or_path: str) -> Path:
    """A config file path, or a ready config's name (``demo``, ``hub-base``) -> its file.

    Raises ``FileNotFoundError`` naming the ready configs when it is neither."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    configs = ready_configs()
    if name_or_path in configs:
        return configs[name_or_path]
    from .config_types import did_you_mean

    raise FileNotFoundError(
        f"'{name_or_path}' is neither a config file nor a ready config; ready configs: {sorted(configs)}"
        + did_you_mean([name_or_path], configs)
    )


def load_config(name_or_path: str) -> dict[str, Any]:
    """The config's values (YAML or JSON)."""
    return yaml.safe_load(resolve_config(name_or_path).read_text()) or {}


def training_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """``[CONFIG, flags...]`` -> ``run_fusion``'s argv with the config resolved and without its ``hpo:`` section,
    plus that section (``{}`` when absent)."""
    argv = list(argv)
    if not argv or argv[0].startswith("-"):
        return argv, {}
    values = load_config(argv[0])
    hpo = values.pop("hpo", None) or {}
    if not hpo:
        return [str(resolve_config(argv[0])), *argv[1:]], {}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="config-", delete=False) as handle:
        yaml.safe_dump(values, handle)
    return [handle.name, *argv[1:]], hpo


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train as ``training/run.py`` does; returns the metrics written to ``all_results.json``."""
    from .run_fusion import main as run_main

    args, hpo = training_argv(sys.argv[1:] if argv is None else argv)
    if hpo:
        logger.info("train: the config's `hpo` section is ignored (run `multimodal-fusion hpo` for a search)")
    return run_main(args)


if __name__ == "__main__":
    main()
