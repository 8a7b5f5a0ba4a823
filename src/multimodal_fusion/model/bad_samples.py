"""Bad input samples: the error that names where a sample came from, and a skip counter shared across
DataLoader worker processes.

A sample is *bad* when it cannot become model input: a missing or corrupt file, an empty waveform, NaN/inf
values, an audio array with no sampling rate, a text that is not a string, a vector of the wrong size. By
default that stops training with a [`BadSampleError`]; with ``skip_bad_samples`` the collator drops the sample,
logs it once and counts it in a [`SkipCounter`], so nothing disappears silently.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import get_spawning_popen
from typing import Any


class BadSampleError(ValueError):
    """One sample that cannot be decoded or processed.

    Decoders raise it with ``reason`` (what is wrong and what was expected) and ``path`` (the file, if any);
    the processor adds ``modality`` and ``row`` (the sample's position), the collator ``column`` and the dataset
    row. ``str(error)`` names everything known.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str | None = None,
        modality: str | None = None,
        column: str | None = None,
        row: Any = None,
    ):
        self.reason = reason
        self.path = path
        self.modality = modality
        self.column = column
        self.row = row
        super().__init__(reason)

    def locate(
        self, *, modality: str | None = None, column: str | None = None, row: Any = None
    ) -> BadSampleError:
        """Fill in where the sample came from (keeps what is already known) and return ``self``."""
        self.modality = self.modality if modality is None else modality
        self.column = self.column if column is None else column
        self.row = self.row if row is None else row
        self.args = (str(self),)
        return self

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(str(self.row) if isinstance(self.row, str) else f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.modality is not None:
            where.append(f"modality '{self.modality}'")
        if self.path is not None:
            where.append(f"file '{self.path}'")
        prefix = "bad sample" + (f" ({', '.join(where)})" if where else "")
        return f"{prefix}: {self.reason}"

    def __reduce__(self):  # keep the fields across DataLoader worker processes
        return (
            _rebuild_bad_sample_error,
            (self.reason, self.path, self.modality, self.column, self.row),
        )


def _rebuild_bad_sample_error(reason, path, modality, column, row) -> BadSampleError:
    return BadSampleError(reason, path=path, modality=modality, column=column, row=row)


class SkipCounter:
    """Number of skipped samples, shared by the main process and its DataLoader workers.

    Backed by a ``multiprocessing.Value`` that worker processes inherit (fork) or receive while being started
    (spawn/forkserver). Pickled any other way (``pickle.dumps``, ``copy.deepcopy``) it becomes an independent
    counter starting at the current value.
    """

    def __init__(self, start: int = 0):
        self._value = multiprocessing.Value("q", start)

    @property
    def value(self) -> int:
        """Samples skipped so far, in every process that shares this counter."""
        return int(self._value.value)

    def increment(self, amount: int = 1) -> None:
        with self._value.get_lock():
            self._value.value += amount

    def reset(self) -> None:
        with self._value.get_lock():
            self._value.value = 0

    def __getstate__(self) -> dict[str, Any]:
        if get_spawning_popen() is not None:  # starting a worker process: share the memory
            return {"shared": self._value}
        return {"start": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "shared" in state:
            self._value = state["shared"]
        else:
            self._value = multiprocessing.Value("q", state["start"])

    def __repr__(self) -> str:
        return f"SkipCounter({self.value})"
