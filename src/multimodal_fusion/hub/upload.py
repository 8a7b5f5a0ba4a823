"""The Hub: a fusion model's card (README.md) and its upload, used by ``FusionModel.push_to_hub`` and by
``training/run.py --push_to_hub``.

The model layer cannot import this module (its files must stay self-contained for ``trust_remote_code``), so the
package root wires [`push_model_to_hub`] in as ``FusionPreTrainedModel.hub_uploader``; a model loaded as remote
code, without this package, falls back to transformers' own ``push_to_hub``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..model.configuration_fusion import FusionConfig

PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "runs/**", "*.pt", "*.pth"]
"""What a training output folder holds that is not part of the model (checkpoints, logs, optimizer states)."""

COMMIT_MESSAGE = "Upload multimodal fusion model"


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
    encoders = [spec.path for spec in config.modalities.values() if spec.path]
    metadata = {"library_name": "transformers", "tags": ["multimodal-fusion", "multimodal", config.fusion]}
    if encoders:
        metadata["base_model"] = sorted(set(encoders))
    if dataset:
        metadata["datasets"] = [dataset]
    header = "---\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in metadata.items()) + "\n---\n"
    rows = []
    for name, spec in config.modalities.items():
        encoder = spec.network.module if spec.network is not None else spec.path  # your own network: its path
        encoder = encoder or (spec.config.model_type if spec.config is not None else "MLP")
        rows.append(
            f"| `{name}` | {spec.kind} | `{encoder}` | {spec.pooling or '-'} | {spec.trainable_layers} |"
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


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool | None = None,
    token: str | None = None,
    *,
    commit_message: str = COMMIT_MESSAGE,
) -> Any:
    """Upload exactly ``folder`` (weights, config, code, processor, model card; not checkpoints or logs, see
    ``PUSH_IGNORE_PATTERNS``) to the Hub repo ``repo_id`` in one commit, creating the repo when needed.

    Returns what ``HfApi.upload_folder`` returns (the commit info)."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        ignore_patterns=PUSH_IGNORE_PATTERNS,
    )


def push_model_to_hub(
    model: Any,
    repo_id: str,
    *,
    processor: Any = None,
    commit_message: str = COMMIT_MESSAGE,
    private: bool | None = None,
    token: str | None = None,
    **save_kwargs: Any,
) -> Any:
    """``FusionModel.push_to_hub``: save ``model`` (and ``processor`` when given) with a model card into a
    temporary folder and upload it with [`push_folder`] in one commit. ``save_kwargs`` go to ``save_pretrained``."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, **save_kwargs)
        if processor is not None:
            processor.save_pretrained(folder)
        write_model_card(folder, model.config)
        return push_folder(folder, repo_id, private, token, commit_message=commit_message)
