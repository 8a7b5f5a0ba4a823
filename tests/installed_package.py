"""A non-editable install of this repository for tests of the installed package (the ``installed_package``
fixture in conftest.py): ``pip install --no-deps --no-build-isolation --no-index --target DIR`` from a copy of the
project files, so nothing is downloaded (dependencies and build backend come from the test environment) and the
source tree gets no ``build/`` or ``*.egg-info``. Commands run from an empty folder outside the repository with
only DIR on ``PYTHONPATH`` (plus the environment's own site-packages for the dependencies)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pyproject.toml", "README.md", "src")


@dataclass
class InstalledPackage:
    """``site``: the ``--target`` folder holding ``multimodal_fusion``; ``workdir``: an empty folder to run in."""

    site: Path
    workdir: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=str(self.site), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        return env

    def python(
        self, *args: str, timeout: float = 600, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        """Run ``python ARGS`` of the test environment against the installed copy; output captured as text."""
        result = subprocess.run(
            [sys.executable, *args],
            cwd=cwd or self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"python {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result


def install_package(root: Path) -> InstalledPackage:
    """Install a non-editable copy of the project under ``root`` (see the module docstring)."""
    source, site, workdir = root / "source", root / "site", root / "empty"
    source.mkdir(parents=True)
    workdir.mkdir()
    for name in PROJECT_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return InstalledPackage(site=site, workdir=workdir)
