"""What a training run writes, kept whole: the output folder is checked before training, metrics files are merged
(never replaced), checkpoints appear atomically and ``last`` means the last complete one.

- [`prepare_output_dir`]: an existing non-empty ``output_dir`` is refused unless ``overwrite_output_dir`` (then
  the earlier run's checkpoints and results are removed, so the two runs cannot mix) or a resume is asked for.
- [`check_output_space`]: before the first training step, the folder must be writable and hold one checkpoint
  (weights + optimizer state, estimated from the parameter count).
- [`merge_metrics`]: ``all_results.json`` is updated key by key.
- [`last_complete_checkpoint`]: the newest ``checkpoint-N`` whose trainer state and weights read back.
- [`STAGING_DIR`]: ``FusionTrainer`` writes each checkpoint there, then renames it to ``checkpoint-N``.
- [`save_data_settings`] / [`load_data_settings`]: the modality -> column mapping and label column the run trained
  with, next to the weights (``predict`` / ``evaluate`` default to them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)

STAGING_DIR = ".checkpoint-staging"
"""Folder inside ``output_dir`` where a checkpoint is written before it is renamed to ``checkpoint-N``."""

DATA_SETTINGS_NAME = "fusion_data.json"
"""File in the trained folder holding ``{"columns": modality -> column, "label_column": str | None}``."""

RUN_ARTIFACTS = (
    "*_results.json", "trainer_state.json", DATA_SETTINGS_NAME, STAGING_DIR, f"{PREFIX_CHECKPOINT_DIR}-*",
)  # fmt: skip
"""What an earlier run left in ``output_dir`` that ``overwrite_output_dir`` removes (so runs cannot mix)."""

_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_OPTIMIZER_STATES = {"sgd": 1, "adafactor": 1, "lion": 1}
"""Optimizer state tensors per parameter (``optim`` name prefix); AdamW-like optimizers keep 2."""


class OutputDirError(RuntimeError):
    """The output location cannot take this run's results (exists, read-only, or too small)."""


def prepare_output_dir(output_dir: str, overwrite: bool, resume: bool) -> None:
    """Refuse a non-empty ``output_dir`` unless ``overwrite`` (earlier run outputs are then deleted) or ``resume``.

    Raises:
        OutputDirError: the folder holds files, and neither ``overwrite_output_dir`` nor a resume was asked for.
    """
    path = Path(output_dir)
    if resume or not path.is_dir() or not any(path.iterdir()):
        return
    if not overwrite:
        raise OutputDirError(
            f"output_dir {path} exists and is not empty; set `overwrite_output_dir: true` to replace the earlier "
            "run's outputs, `resume_from_checkpoint: last` to continue it, or choose another `output_dir`"
        )
    for pattern in RUN_ARTIFACTS:
        for stale in path.glob(pattern):
            logger.warning(f"overwrite_output_dir: removing {stale} from an earlier run")
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def refuse_output_dir_reuse(training_args: Any) -> None:
    """[`prepare_output_dir`] for a run's ``TrainingArguments`` (main process first, then the others)."""
    with training_args.main_process_first(desc="checking output_dir"):
        prepare_output_dir(
            training_args.output_dir,
            training_args.overwrite_output_dir,
            resume=training_args.resume_from_checkpoint is not None,
        )


def check_output_room(training_args: Any, model: torch.nn.Module) -> None:
    """[`check_output_space`] for one checkpoint of ``model`` as ``training_args`` would save it (the optimizer
    state only when checkpoints are saved with it)."""
    with_optimizer = training_args.save_strategy != "no" and not training_args.save_only_model
    with training_args.main_process_first(desc="checking output space"):
        check_output_space(
            training_args.output_dir, checkpoint_bytes(model, training_args.optim, with_optimizer)
        )


def checkpoint_bytes(model: torch.nn.Module, optim: str, with_optimizer: bool = True) -> int:
    """Estimated size of one checkpoint: every parameter and buffer at its dtype, plus the optimizer state
    (float32, ``_OPTIMIZER_STATES`` tensors per trainable parameter: 2 for AdamW) when ``with_optimizer``."""
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if not with_optimizer:
        return weights
    states = next((n for prefix, n in _OPTIMIZER_STATES.items() if str(optim).startswith(prefix)), 2)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return weights + states * 4 * trainable


def check_output_space(output_dir: str, needed_bytes: int) -> None:
    """Create ``output_dir`` if needed, write and delete a probe file in it, and check the free space.

    Raises:
        OutputDirError: naming the path, when it cannot be created or written, or has less than ``needed_bytes``
            free (the size of one checkpoint).
    """
    path = Path(output_dir).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-") as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise OutputDirError(
            f"output_dir {path} is not writable ({error.strerror or error}); checkpoints and the model go there"
        ) from error
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise OutputDirError(
            f"output_dir {path} has {free / 2**20:.1f} MiB free, but one checkpoint needs about "
            f"{needed_bytes / 2**20:.1f} MiB (weights + optimizer state); free space or choose another `output_dir`"
        )


def merge_metrics(output_dir: str, metrics: dict[str, Any], name: str = "all_results.json") -> None:
    """Update ``output_dir/name`` with ``metrics`` (other keys kept), written through a temporary file."""
    path = Path(output_dir) / name
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(metrics)
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(json.dumps(merged, indent=4, sort_keys=True))
    os.replace(tmp, path)


def save_data_settings(output_dir: str, columns: dict[str, str], label_column: str | None) -> None:
    """Write [`DATA_SETTINGS_NAME`] into ``output_dir``: the modality -> column mapping and the label column."""
    path = Path(output_dir) / DATA_SETTINGS_NAME
    path.write_text(json.dumps({"columns": dict(columns), "label_column": label_column}, indent=2) + "\n")


def load_data_settings(model_dir: str | os.PathLike) -> dict[str, Any]:
    """What [`save_data_settings`] wrote in ``model_dir`` (``{}`` when the folder has no such file, e.g. a Hub id
    or a folder saved by ``save_pretrained`` alone). Raises ``ValueError`` naming the file when it is not a JSON
    object with a ``columns`` mapping."""
    path = Path(model_dir) / DATA_SETTINGS_NAME if model_dir else None
    if path is None or not path.is_file():
        return {}
    settings = json.loads(path.read_text())
    if not isinstance(settings, dict) or not isinstance(settings.get("columns"), dict):
        raise ValueError(f"{path}: expected a JSON object with a 'columns' mapping (modality -> column)")
    return settings


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest ``checkpoint-N`` folder of ``output_dir`` whose ``trainer_state.json`` parses and which holds
    weights; incomplete ones (from a run killed before atomic saving, or damaged) are named in a warning."""
    path = Path(output_dir)
    found = sorted(
        (int(m.group(1)), p) for p in path.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ) if path.is_dir() else []  # fmt: skip
    for _, folder in reversed(found):
        try:
            json.loads((folder / "trainer_state.json").read_text())
            if any(folder.glob("model*.safetensors")) or any(folder.glob("pytorch_model*.bin")):
                logger.info(f"resume: the last complete checkpoint is {folder}")
                return str(folder)
        except (OSError, ValueError):
            pass
        logger.warning(f"resume: skipping incomplete checkpoint {folder}")
    logger.info(f"resume: no complete checkpoint in {output_dir}, training from the start")
    return None


def publish_checkpoint(staged: str, final: str) -> None:
    """Flush a completely written checkpoint folder to disk and rename it to ``final`` (an existing ``final``, e.g.
    the same step saved by an earlier attempt, is replaced). The rename is atomic: ``final`` never holds part of a
    checkpoint."""
    for root, _, files in os.walk(staged):
        for file in files:
            with open(os.path.join(root, file), "rb") as handle:
                os.fsync(handle.fileno())
    previous = None
    if os.path.exists(final):
        previous = f"{staged}.previous"
        os.replace(final, previous)
    os.replace(staged, final)
    _fsync_dir(os.path.dirname(final))
    if previous is not None:
        shutil.rmtree(previous)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
