"""Module paths of the flat v0.1 layout (``multimodal_fusion.modeling_fusion``, ``multimodal_fusion.train``...),
importable for one more release: each old name is the new module itself (so pickles and ``isinstance`` checks
keep working), imported with a ``DeprecationWarning`` naming the new path. ``python -m multimodal_fusion.train``
runs ``multimodal_fusion.training.launch``. Removed in 0.3."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import CodeType, ModuleType

_MODEL = [
    "audio_decoding",
    "bad_samples",
    "batch_inputs",
    "configuration_fusion",
    "encoder_adapters",
    "encoder_layout",
    "feature_encoder",
    "fusion_layers",
    "image_decoding",
    "input_validation",
    "label_validation",
    "load_report",
    "modality_encoding",
    "model_freezing",
    "modeling_fusion",
    "module_adapter",
    "module_encoder",
    "module_processing",
    "pipeline_fusion",
    "pooling_layers",
    "prefix_layers",
    "processing_fusion",
    "processor_loading",
    "token_fusion_layers",
    "token_sequences",
]

MOVED: dict[str, str] = {
    **{name: f"model.{name}" for name in _MODEL},
    "column_mapping": "data.column_mapping",
    "data_collator": "data.data_collator",
    "data_loading": "data.data_loading",
    "embedding_cache": "cache.embedding_cache",
    "prefix_cache": "cache.prefix_cache",
    "cache_files": "cache.cache_files",
    "prediction": "inference.prediction",
    "evaluation": "inference.evaluation",
    "export": "inference.export",
    "hpo": "training.hpo",
    "train": "training.launch",
    "cli_inference": "cli.inference_commands",
}
"""Old module (under ``multimodal_fusion.``) -> its new path. ``hub``, ``inference`` and ``cli`` became packages
that re-export what the old modules' users import."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str, new: str):
        self.old, self.new = old, new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"`{self.old}` moved to `{self.new}`; the old path is removed in multimodal-fusion 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[self.old] = module

    def get_code(self, fullname: str) -> CodeType:
        """``python -m OLD``: run the new module as ``__main__``."""
        return compile(f"import runpy\nrunpy.run_module({self.new!r}, run_name='__main__', alter_sys=True)\n",
                       f"<{self.old}>", "exec")  # fmt: skip


class LegacyPathFinder(importlib.abc.MetaPathFinder):
    """Finds ``multimodal_fusion.<old>`` for every entry of ``MOVED`` (and only those)."""

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        prefix, _, old = fullname.partition(".")
        if prefix != __package__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname, f"{__package__}.{MOVED[old]}"))


def install() -> None:
    if not any(isinstance(finder, LegacyPathFinder) for finder in sys.meta_path):
        sys.meta_path.append(LegacyPathFinder())
