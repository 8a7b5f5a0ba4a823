"""The package works as installed (``pip install .``, not editable), from any folder: the imported package is
the installed copy, its configs ship with it, and the main job (``python -m multimodal_fusion.demo``) runs."""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_installed_copy_is_imported_and_ships_its_configs(installed_package):
    out = installed_package.python(
        "-c",
        "import multimodal_fusion, multimodal_fusion.configs as c; "
        "print(multimodal_fusion.__file__); print(c.config_path('demo.yaml')); print(c.available_configs())",
    ).stdout.splitlines()
    module_file, demo_config, names = Path(out[0]), Path(out[1]), out[2]
    assert module_file.is_relative_to(installed_package.site), module_file  # not the editable checkout
    assert demo_config.is_relative_to(installed_package.site) and demo_config.is_file()
    assert "hub-base.yaml" in names and "accelerate/multi_gpu.yaml" in names
    assert not any(installed_package.workdir.iterdir())


def test_installed_demo_runs_from_an_empty_folder(installed_demo):
    out_dir, result = installed_demo  # `multimodal-fusion demo --num-samples 300 --fusions concat`, run once
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((out_dir / "results.json").read_text())
    assert set(results["unimodal"]) == {"image", "audio", "text"}
    accuracies = [
        *results["unimodal"].values(),
        results["fused"]["concat"],
        *results["ablation"]["concat"].values(),
    ]
    assert all(0.0 <= a <= 1.0 for a in accuracies), results
    assert results["fused"]["concat"] > 0.3, results  # 10 balanced classes: chance is 0.1
    assert (out_dir / "report.md").is_file() and "report:" in result.stdout + result.stderr


def test_demo_names_its_extra_when_a_dependency_is_missing(installed_package):
    result = installed_package.python(
        "-c", "import sys; sys.modules['sklearn'] = None; import multimodal_fusion.demo", check=False
    )
    assert result.returncode != 0
    assert "scikit-learn" in result.stderr and 'pip install "multimodal-fusion[demo]"' in result.stderr
