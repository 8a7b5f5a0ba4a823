"""Integrity of ``datasets`` cache files (the embedding cache): a SHA-256 recorded next to each file when it is
written, checked before it is reused; a damaged file is named in a warning and deleted, so it is rebuilt.

A file without a recorded checksum (written before this check existed) gets a verified read instead: every
record batch of the Arrow stream must read back.
"""

from __future__ import annotations

import hashlib
import logging
import os

import datasets
import pyarrow as pa

logger = logging.getLogger(__name__)

CHECKSUM_SUFFIX = ".sha256"


def cache_file_path(dataset: datasets.Dataset, fingerprint: str) -> str | None:
    """Where ``dataset.map(..., new_fingerprint=fingerprint)`` keeps its cache file (``None``: no cache file, e.g.
    an in-memory dataset or caching disabled). Mirrors ``datasets``' own naming (``cache-{fingerprint}.arrow`` in
    the folder of the dataset's first cache file)."""
    if not (datasets.is_caching_enabled() and dataset.cache_files):
        return None
    return os.path.join(os.path.dirname(dataset.cache_files[0]["filename"]), f"cache-{fingerprint}.arrow")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _damage(path: str) -> str | None:
    """Why the cache file at ``path`` cannot be trusted, or ``None`` when it checks out."""
    sidecar = path + CHECKSUM_SUFFIX
    if os.path.isfile(sidecar):
        with open(sidecar) as handle:
            recorded = handle.read().strip()
        return (
            None
            if _sha256(path) == recorded
            else "its SHA-256 differs from the one recorded when it was written"
        )
    try:
        with pa.memory_map(path) as source:
            pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, OSError) as error:
        return f"it does not read back: {error}"
    return None


def discard_if_damaged(path: str | None, what: str = "cache file") -> bool:
    """Check the cache file at ``path`` (if it exists); when damaged, warn naming it, delete it and its checksum,
    and return True (the caller's ``map`` then rebuilds it)."""
    if path is None or not os.path.isfile(path):
        return False
    reason = _damage(path)
    if reason is None:
        return False
    logger.warning(f"{what}: {path} is damaged ({reason}); deleting it and computing it again")
    for stale in (path, path + CHECKSUM_SUFFIX):
        if os.path.exists(stale):
            os.remove(stale)
    return True


def record_checksum(path: str | None, overwrite: bool = False) -> None:
    """Write the SHA-256 of the cache file at ``path`` next to it: when none is recorded yet (a verified old file),
    or with ``overwrite`` (the file was just written)."""
    if path is None or not os.path.isfile(path):
        return
    if os.path.isfile(path + CHECKSUM_SUFFIX) and not overwrite:
        return
    tmp = f"{path}{CHECKSUM_SUFFIX}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        handle.write(_sha256(path))
    os.replace(tmp, path + CHECKSUM_SUFFIX)
