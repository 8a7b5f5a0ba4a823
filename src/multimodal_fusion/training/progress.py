"""Readable training logs: each log event (every ``logging_steps``, every evaluation) as one short line instead of
transformers' printed dict, with per-class metrics folded into one group (``f1 per class: red 0.91, ...``)."""

from __future__ import annotations

from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

PER_CLASS_PREFIX = "f1_"
"""Metric keys of one class each (``eval_f1_red``), as the shipped fusion metric names them."""

HIDDEN = ("total_flos",)


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_logs(logs: dict[str, Any]) -> str:
    """One line for a log event, e.g. ``epoch 3 | eval: loss 0.412, accuracy 0.93, macro_f1 0.92 | f1 per class:
    red 0.95, green 0.9, blue 0.93`` (the split prefix is named once; runtimes and throughputs are left out)."""
    logs = {k: v for k, v in logs.items() if k not in HIDDEN}
    epoch = logs.pop("epoch", None)
    prefixes = {key.split("_", 1)[0] for key in logs if key.startswith(("eval_", "test_"))}
    prefix = prefixes.pop() if len(prefixes) == 1 else None
    scalars, per_class = [], []
    for key, value in logs.items():
        name = key[len(prefix) + 1 :] if prefix and key.startswith(prefix + "_") else key
        if name == "runtime" or name.endswith(("_runtime", "_per_second")):
            continue
        if name.startswith(PER_CLASS_PREFIX):
            per_class.append(f"{name[len(PER_CLASS_PREFIX) :]} {_shown(value)}")
        else:
            scalars.append(f"{name} {_shown(value)}")
    parts = (
        [f"epoch {_shown(round(epoch, 2)) if isinstance(epoch, float) else epoch}"]
        if epoch is not None
        else []
    )
    parts.append((f"{prefix}: " if prefix else "") + ", ".join(scalars))
    if per_class:
        parts.append("f1 per class: " + ", ".join(per_class))
    return " | ".join(parts)


class ReadableProgressCallback(ProgressCallback):
    """transformers' progress bars, with each log event written as [`format_logs`]'s line."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(format_logs(logs))


class ReadablePrinterCallback(PrinterCallback):
    """``disable_tqdm``'s printer, printing [`format_logs`]'s line."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if state.is_local_process_zero and logs:
            print(format_logs(logs))


def use_readable_logs(trainer: Any) -> None:
    """Swap the trainer's log printer (progress bar or printer) for the readable one."""
    for default, readable in (
        (ProgressCallback, ReadableProgressCallback),
        (PrinterCallback, ReadablePrinterCallback),
    ):
        if trainer.pop_callback(default) is not None:
            trainer.add_callback(readable)
