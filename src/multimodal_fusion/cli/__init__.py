"""The ``multimodal-fusion`` command (``train | predict | evaluate | export | hpo | demo``)."""

from .main import entry_point, main

__all__ = ["entry_point", "main"]
