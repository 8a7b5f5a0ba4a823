"""Model card (README.md) of a trained fusion model: encoders, fusion, freezing, data and metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..configuration_fusion import FusionConfig


def _metrics_table(metrics: Mapping[str, Any]) -> str:
    rows = [
        f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"
        for key, value in sorted(metrics.items())
    ]
    return (
        "\n".join(["| metric | value |", "|---|---|", *rows])
        if rows
        else "No evaluation metrics were recorded."
    )


def model_card(
    config: FusionConfig,
    *,
    dataset: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
) -> str:
    """Markdown with Hub metadata for a fusion model trained on ``dataset`` with ``metrics``."""
    encoders = [spec.get("path") for spec in config.modalities.values() if spec.get("path")]
    metadata = {"library_name": "transformers", "tags": ["multimodal-fusion", "multimodal", config.fusion]}
    if encoders:
        metadata["base_model"] = sorted(set(encoders))
    if dataset:
        metadata["datasets"] = [dataset]
    header = "---\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in metadata.items()) + "\n---\n"
    rows = []
    for name, spec in config.modalities.items():
        encoder = spec.get("path") or (spec["config"].model_type if spec.get("config") is not None else "MLP")
        rows.append(
            f"| `{name}` | {spec['kind']} | `{encoder}` | {spec.get('pooling') or '-'} | {spec['trainable_layers']} |"
        )
    labels = ", ".join(config.id2label[i] for i in sorted(config.id2label)) if config.id2label else "-"
    parts = [
        header,
        "# Multimodal fusion model\n",
        f"Pretrained encoders fused with **{config.fusion}** fusion (projection {config.projection_dim}, fused "
        f"size {config.fusion_hidden_size}) and a {config.problem_type or 'classification'} head with "
        f"{config.num_labels} output(s) ({labels}). Built with "
        "[multimodal-fusion](https://github.com/) on transformers.\n",
        "## Encoders and freezing\n",
        "| modality | kind | encoder | pooling | trainable layers |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "`trainable_layers`: 0 = frozen, k = top k blocks, all = fully fine-tuned.\n",
        "## Data\n",
        f"Trained on {dataset or 'a local dataset'}.\n",
        "## Metrics\n",
        _metrics_table(metrics or {}),
        "",
    ]
    if training:
        parts += [
            "## Training settings\n",
            "```json",
            json.dumps(dict(training), indent=2, default=str),
            "```",
            "",
        ]
    parts += [
        "## Use\n",
        "```python",
        "from transformers import AutoModel",
        "model = AutoModel.from_pretrained(REPO_OR_DIR, trust_remote_code=True)",
        "```",
        "",
    ]
    return "\n".join(parts)


def write_model_card(output_dir: str | Path, config: FusionConfig, **kwargs: Any) -> Path:
    """Write ``README.md`` into ``output_dir`` and return its path."""
    path = Path(output_dir) / "README.md"
    path.write_text(model_card(config, **kwargs))
    return path
