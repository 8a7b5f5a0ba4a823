"""The modality-kind protocol: everything the package knows about one kind of input (image, audio, text, dense
features, or a kind you add) lives in one class, registered in ``MODALITY_KIND_REGISTRY``; the rest of the package
asks ``get_kind(spec.kind)`` instead of branching on the kind's name.

A kind declares:

- its batch fields (``batch_fields``: generic ``(required, optional)``; an encoder family's own fields come from its
  adapter) and those of your own network of that kind (``module_fields``);
- its sub-processor: how it is told from its type (``processor_types``), loaded from an encoder checkpoint
  (``load_processor``) or a saved processor folder (``load_saved_processor``), validated
  (``processor_settings``), and the settings read from the encoder (``encoder_settings``);
- how a raw sample is recognised (``is_batch``), decoded (``decode``) and batched with a zero placeholder for
  missing rows (``batch``);
- value validation of a model batch (``input_limits``, ``check_values``);
- its token output for token-level fusion (``reduce_tokens``) and the default pooling of a sequence from your own
  network (``sequence_pooling``);
- a small example input for export and for measuring your own network (``example_sample``,
  ``module_example_inputs``).

This file is model-layer code (copied next to the weights as remote code): kinds reach their processing helpers
(``image_decoding``, ``audio_decoding``, ``module_processing``: PIL, soundfile, soxr) through
[`processing_module`] at call time, so the model's remote code neither copies nor needs them; the processor's
(``processing_fusion``) imports them.

Adding a kind is one file with one class and its registration (``docs/architecture.md`` has a worked example):

```python
@register_modality_kind("counts")
class CountsKind(FeaturesKind):
    def decode(self, processor, name, value, options):
        return np.bincount(value, minlength=processor.modalities[name].input_dim).astype("float32")
```
"""

from __future__ import annotations

import importlib
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .input_validation import InputLimits, check_attention_mask, check_finite
from .registry import Registry

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec

MODALITY_KIND_REGISTRY: Registry[type[ModalityKind]] = Registry("modality kind", attribute="name")
"""Kind name -> [`ModalityKind`] class. Filled by explicit imports in ``modality_kinds``."""


class ModalityKind:
    """One modality kind (see the module docstring). Methods take the modality ``name`` for error messages;
    ``spec`` is the processor's per-modality settings (a ``ProcessorSpec``, ``FusionProcessor.modalities[name]``;
    while a processor is built, the settings asked for) or, on the model side, a ``ModalitySpec``; both are read
    by attribute.
    """

    name: str = ""
    batch_fields: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    """Generic ``(required, optional)`` batch fields, each prefixed ``{name}_`` in a batch."""
    module_fields: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
    """``(required, optional)`` fields of your own network of this kind (``module`` encoders)."""
    sequence_pooling: str = "mean"
    """Default pooling of a token sequence from your own network of this kind (a recurrent one pools ``last``)."""
    has_encoder: bool = True
    """Whether the kind is read by a pretrained encoder (an encoder config / checkpoint), as opposed to vectors fed
    to a small network the fusion model builds itself."""
    pooled_only: bool = False
    """Whether the kind's encoder returns one vector per sample and no token sequence (token-level fusions see it
    as one token; it has no pooling and no hidden states to cache)."""
    processor_types: tuple[str, ...] = ()
    """Import paths ``module:Class`` of the sub-processor base classes of this kind (how a sub-processor's kind is
    told from its type)."""
    processor_description: str = "a processor"
    """What the sub-processor is, for error messages ("a tokenizer")."""
    tower: tuple[str, str] | None = None
    """Dual-encoder configs (CLIP, CLAP): the config attribute holding this kind's tower and the module prefix."""
    main_input_names: tuple[str, ...] = ()
    """``main_input_name`` values of transformers model classes that read this kind."""
    media: bool = False
    """Whether raw samples may be media files (paths / bytes a datasets ``Image`` / ``Audio`` feature would
    decode): the data loader keeps such columns undecoded, and checks that local files exist."""

    # ------------------------------------------------------------------ processor
    def accepts_processor(self, processor: Any) -> bool:
        """Whether ``processor`` is a sub-processor of this kind (by its type)."""
        for path in self.processor_types:
            module, _, cls = path.partition(":")
            if isinstance(processor, getattr(importlib.import_module(module), cls)):
                return True
        return False

    def needs_processor(self, spec: ProcessorSpec) -> bool:
        """Whether this modality has a sub-processor (vectors and precomputed frames have none)."""
        return True

    def is_waveform(self, spec: ProcessorSpec) -> bool:
        """Whether raw samples are waveforms with a sampling rate (``sampling_rate`` / ``max_audio_seconds``
        apply)."""
        return False

    def processor_settings(self, name: str, spec: ProcessorSpec, processor: Any) -> dict[str, Any]:
        """The saved settings of a modality given a checked sub-processor (``FusionProcessor(...)``).

        Raises:
            ValueError: naming the modality and the field.
        """
        return {}

    def encoder_settings(self, spec: ProcessorSpec, processor: Any, adapter: Any) -> dict[str, Any]:
        """Settings read from the encoder's family ``adapter`` when the processor is built with ``from_encoders``
        (the text length limit, the audio receptive field...), before ``processor_settings`` checks them."""
        return {}

    def load_processor(self, path: str, **kwargs: Any) -> Any:
        """The kind's usual sub-processor saved at ``path`` (an adapter's ``load_processor`` default; a family
        with its own, e.g. timm, overrides it there)."""
        raise ValueError(f"kind '{self.name}' has no sub-processor to load from '{path}'")

    def load_saved_processor(self, path: str, spec: ProcessorSpec, subfolder: str, **kwargs: Any) -> Any:
        """The sub-processor saved by ``FusionProcessor.save_pretrained`` in ``subfolder`` (``None`` when the
        modality has none)."""
        if not self.needs_processor(spec):
            return None
        return self.load_processor(path, subfolder=subfolder, **kwargs)

    def save_processor(self, processor: Any, spec: ProcessorSpec, folder: str) -> list[str]:
        """Write the sub-processor's files into ``folder`` (``FusionProcessor.save_pretrained``); returns them."""
        return [str(f) for f in processor.save_pretrained(folder) or []]

    def module_processor_settings(
        self, name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
    ) -> dict[str, Any]:
        """The processor settings (with ``processor``) of your own network of this kind (``module`` encoders):
        ``spec`` the settings asked for, ``processor`` the given sub-processor (or ``None``), ``network`` the
        network's own fields (``image_size``...).

        Raises:
            ValueError: naming the modality, when the kind needs a sub-processor and none is given or found.
        """
        path = spec.path
        if processor is None and path:
            processor = self.load_processor(str(path), **hub_kwargs)
        if processor is None:
            raise ValueError(
                f"modality '{name}': a {self.name} module needs its {self.processor_description.split()[-1]} "
                "(`processor`, or its folder as `path`)"
            )
        return {"processor": processor}

    def processor_fields(self, spec: ProcessorSpec, processor: Any) -> tuple[str, ...]:
        """Batch fields the sub-processor yields: the encoder family's saved ``input_fields``, else the kind's."""
        if spec.input_fields:
            return tuple(spec.input_fields)
        return sum(self.batch_fields, ())

    # ------------------------------------------------------------------ samples
    def is_batch(self, value: Any) -> bool:
        """Whether ``value`` is a list of samples (as opposed to one sample) of this kind."""
        return not isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) and isinstance(
            value, Sequence
        )

    def decode(self, processor: Any, name: str, value: Any, options: Mapping[str, Any]) -> Any:
        """One raw sample -> its canonical form, checked (raises ``BadSampleError``). ``processor`` is the
        ``FusionProcessor``; ``options`` its per-call options (``sampling_rate``, ``input_data_format``...)."""
        raise NotImplementedError

    def batch(self, processor: Any, name: str, samples: list[Any]) -> dict[str, tuple[torch.Tensor, Any]]:
        """Decoded present samples -> ``field -> (tensor [n, ...], fill value of missing rows)``; with no sample,
        zero-row tensors that give the placeholder's shape."""
        raise NotImplementedError

    def example_sample(self, spec: ProcessorSpec, length: int, rng: Any) -> Any:
        """A synthetic raw sample (``length`` scales its size) for tracing an export."""
        raise NotImplementedError(f"kind '{self.name}' has no example sample")

    has_length: bool = False
    """Whether samples have a length for length-grouped batching (``sample_length``)."""

    def sample_length(self, value: Any) -> float:
        """A raw sample's length for length-grouped batching, read without decoding (0 when unknown)."""
        return 0.0

    # ------------------------------------------------------------------ model side
    def input_limits(self, encoder: nn.Module, config: Any, adapter: Any) -> InputLimits:
        """What the encoder accepts beyond shapes, from it, its config and its family ``adapter`` (read once per
        modality)."""
        return InputLimits()

    def check_values(self, name: str, fields: dict[str, torch.Tensor], limits: InputLimits) -> None:
        """Value checks of one modality's batch fields (finite floats, 0/1 masks; kinds add their own)."""
        check_finite(name, self.name, fields)
        check_attention_mask(name, self.name, fields)

    def reduce_tokens(
        self, hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int, grid: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cap a token sequence ``[B, T, D]`` (mask ``[B, T]`` bool) at ``max_tokens``: the first valid tokens."""
        from .token_reduction import first_valid_tokens

        return first_valid_tokens(hidden, mask, max_tokens)

    def module_example_inputs(self, name: str, spec: Any, network: nn.Module) -> dict[str, torch.Tensor]:
        """A small zero batch for your own network of this kind (to measure its output width)."""
        raise ValueError(f"modality '{name}': kind '{self.name}' has no own-network encoder")

    def validate_spec(self, name: str, spec: Any) -> None:
        """Kind-specific checks of a ``ModalitySpec`` with no pretrained encoder (``has_encoder`` False)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def processing_module(name: str) -> Any:
    """The processing-side sibling module ``name`` (``image_decoding``...), imported at call time by name: a
    ``from .x import`` line, even inside a function, would make transformers copy it (and demand its imports)
    with the model's remote code."""
    return importlib.import_module(f".{name}", __package__)


def option_for(value: Any, name: str) -> Any:
    """A per-call or per-processor option given as one value or as modality name -> value, for modality ``name``
    (``sampling_rate``, ``input_data_format``, ``image_bit_depth``, ``max_audio_seconds``)."""
    return value.get(name) if isinstance(value, Mapping) else value


def check_input_dim(name: str, input_dim: Any) -> int:
    """A vector / frame width (``input_dim``): a positive integer."""
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim <= 0:
        raise ValueError(f"modality '{name}': kind 'features' needs a positive integer `input_dim`")
    return input_dim


def is_one_numeric_sample(value: Any) -> bool:
    """A non-empty list of plain numbers: one waveform or one vector, not a batch."""
    return len(value) > 0 and all(isinstance(v, numbers.Number) and not isinstance(v, bool) for v in value)


def module_input_width(name: str, spec: Any, network: nn.Module) -> int:
    """The input width of your own network: the spec's ``input_dim``, else its first RNN / Linear / Conv1d's
    (recorded into ``spec.input_dim``).

    Raises:
        ValueError: naming the modality, when neither tells it.
    """
    width = spec.input_dim
    if width is None:
        first = next(
            (m for m in network.modules() if isinstance(m, (nn.RNNBase, nn.Linear, nn.Conv1d))), None
        )
        width = (
            getattr(first, "input_size", None)
            or getattr(first, "in_features", None)
            or getattr(first, "in_channels", None)
        )
    if width is None:
        raise ValueError(f"modality '{name}': cannot tell the module's input width; give `input_dim`")
    spec.input_dim = int(width)
    return spec.input_dim


def register_modality_kind(name: str, *, override: bool = False):
    """Class decorator: register a [`ModalityKind`] subclass as kind ``name`` (the spec's ``kind`` value)."""
    return MODALITY_KIND_REGISTRY.register(name, override=override)


_INSTANCES: dict[type, ModalityKind] = {}


def get_kind(kind: str | None) -> ModalityKind:
    """The [`ModalityKind`] of a kind name (one instance per class).

    Raises:
        KeyError: an unknown kind, listing the registered ones.
    """
    cls = MODALITY_KIND_REGISTRY.get(kind)
    if cls not in _INSTANCES:
        _INSTANCES[cls] = cls()
    return _INSTANCES[cls]


def reads_encoder(kind: str | None) -> bool:
    """Whether a modality of ``kind`` is read by a pretrained encoder (an unknown or not yet inferred kind counts
    as one: its checks come with the encoder)."""
    cls = MODALITY_KIND_REGISTRY.get(kind, None) if kind is not None else None
    return cls is None or cls.has_encoder


def kind_class_path(kind: str | None, kind_class: str | None = None) -> str | None:
    """Make sure ``kind`` is registered and return what a saved spec records to find it again.

    A kind of this package returns ``None``. A kind you registered returns ``"module:Class"`` (its import path), so
    a checkpoint or processor saved with it registers it again when loaded (also from remote code, as long as
    that module is importable there, like an own network's ``module``). An unregistered ``kind`` with a
    ``kind_class`` is imported and registered.

    Raises:
        ValueError: ``kind_class`` is not an importable ``module:Class`` path.
    """
    if kind is None:
        return None
    cls = MODALITY_KIND_REGISTRY.get(kind, None)
    if cls is None and kind_class:
        module, _, qualname = str(kind_class).partition(":")
        try:
            cls = getattr(importlib.import_module(module), qualname)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"kind '{kind}': cannot import its class '{kind_class}' ({error})") from None
        MODALITY_KIND_REGISTRY.register(kind, override=True)(cls)
    if cls is None or cls.__module__.rpartition(".")[0] == __package__:
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def kind_names() -> tuple[str, ...]:
    """The registered kind names, in registration order."""
    return tuple(MODALITY_KIND_REGISTRY.names())
