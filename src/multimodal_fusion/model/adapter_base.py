"""The encoder-adapter base: [`EncoderAdapter`] (the defaults every family adapter overrides), the registry
``ENCODER_ADAPTERS`` and the helpers the family files share (model class of a config, dual-encoder towers, output
width of a CNN). The family adapters live in ``adapters_image.py``, ``adapters_audio.py``, ``adapters_text.py``
and ``module_adapter.py``; ``encoder_adapters.py`` imports them all and holds the one selection rule.

This file is copied next to the weights for ``trust_remote_code`` loading: it imports only torch, transformers
and sibling files.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import MODEL_MAPPING, PretrainedConfig

from .encoder_layout import EncoderLayout, encoder_layout
from .modality_kinds import get_kind, kind_names
from .prefix_layers import PrefixRunnerMixin
from .registry import Registry

logger = logging.getLogger(__name__)

ENCODER_ADAPTERS: Registry[type[EncoderAdapter]] = Registry("encoder adapter", attribute="name")
"""Adapter name -> class (``list_encoder_adapters``); which one an encoder gets is ``encoder_adapters.ADAPTER_ORDER``."""

TOWERS = {name: get_kind(name).tower for name in kind_names() if get_kind(name).tower is not None}
"""Per kind: the dual-encoder config attribute holding the tower config, and the parent's module (key prefix);
each kind's ``ModalityKind.tower``."""

KIND_OF_MAIN_INPUT = {field: name for name in kind_names() for field in get_kind(name).main_input_names}
"""A transformers model class's ``main_input_name`` -> the kind it reads (each kind's ``main_input_names``)."""


register_adapter = ENCODER_ADAPTERS.register
"""Class decorator adding an encoder adapter to ``ENCODER_ADAPTERS`` under ``name``."""


@dataclass
class EncoderOutput:
    """What pooling reads: ``hidden`` ``[B, T, D]`` (a CNN map is flattened to ``H*W`` tokens), the token mask
    ``[B, T]`` (True = real token; ``None`` = all real), the family's own ``pooler_output`` ``[B, D]`` and, for a
    flattened CNN map, its ``grid`` ``(H, W)``."""

    hidden: torch.Tensor
    mask: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    grid: tuple[int, int] | None = None


def model_class_for(config: PretrainedConfig) -> type[nn.Module]:
    """The transformers model class of ``config``: ``MODEL_MAPPING``, else ``XxxModel`` next to ``XxxConfig``
    (dual-encoder towers such as ``SiglipTextConfig`` or ``ClapAudioConfig`` are not in ``MODEL_MAPPING``)."""
    if type(config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(config)]
    module = importlib.import_module(type(config).__module__.replace(".configuration_", ".modeling_"))
    name = type(config).__name__.removesuffix("Config") + "Model"
    if not hasattr(module, name):
        raise ValueError(f"no transformers model class for config {type(config).__name__}")
    return getattr(module, name)


def main_input_kind(config: PretrainedConfig) -> str | None:
    """``image`` / ``audio`` / ``text`` from the model class's ``main_input_name``; ``None`` if unknown."""
    if config.model_type == "timm_wrapper":
        return "image"
    try:
        model_class = model_class_for(config)
    except (ValueError, ImportError):
        return None
    return KIND_OF_MAIN_INPUT.get(getattr(model_class, "main_input_name", None))


def is_dual_config(config: PretrainedConfig) -> bool:
    """A dual-encoder (multi-tower) config, e.g. ``CLIPConfig`` with ``text_config`` and ``vision_config``."""
    return sum(isinstance(getattr(config, key, None), PretrainedConfig) for key, _ in TOWERS.values()) > 1


def tower_config(kind: str, config: PretrainedConfig) -> PretrainedConfig:
    """The tower of a dual-encoder config matching ``kind`` (CLIP's ``text_config``...), else ``config``."""
    tower = getattr(config, TOWERS.get(kind, ("_", "_"))[0], None)
    return tower if isinstance(tower, PretrainedConfig) else config


def _accepts(module: nn.Module, argument: str) -> bool:
    try:
        return argument in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _init_accepts(model_class: type, argument: str) -> bool:
    try:
        return argument in inspect.signature(model_class.__init__).parameters
    except (TypeError, ValueError):
        return False


def _without_pooler(config: PretrainedConfig | None, model_class: type) -> bool:
    """Whether ``config`` records a checkpoint without the pooling head and ``model_class`` can leave it out."""
    return getattr(config, "add_pooling_layer", True) is False and _init_accepts(
        model_class, "add_pooling_layer"
    )


def drop_absent_pooler(
    model: nn.Module, config: PretrainedConfig | None, missing: Any, pooling: str | None
) -> list[str]:
    """A checkpoint without the encoder's ``pooler`` (e.g. Chinese-CLIP's text tower, which the dual model builds
    with ``add_pooling_layer=False``): drop the freshly initialised, random pooler from ``model`` and record
    ``add_pooling_layer=False`` on ``config`` (and the model's), so a rebuilt encoder has none either. Only when
    every pooler weight is missing, the pooling is not ``pooler`` and the class takes ``add_pooling_layer``.
    Returns the missing keys that remain."""
    missing = list(missing)
    pooler = getattr(model, "pooler", None)
    if (
        pooling == "pooler"
        or not isinstance(pooler, nn.Module)
        or not _init_accepts(type(model), "add_pooling_layer")
    ):
        return missing
    pooler_keys = {f"pooler.{n}" for n, _ in pooler.named_parameters()}
    if not pooler_keys or not pooler_keys <= set(missing):
        return missing
    model.pooler = None
    for target in {id(c): c for c in (config, model.config) if c is not None}.values():
        target.add_pooling_layer = False
    return [key for key in missing if key not in pooler_keys]


class EncoderAdapter(PrefixRunnerMixin):
    """A transformers encoder: ``AutoModel``-style loading, ``last_hidden_state`` + ``pooler_output``.

    Subclasses set the class attributes and override the hooks they need. Instances are cheap, hold the
    encoder's (tower) config and the modality's ``spec`` (the modality's ``ModalitySpec``), and never own parameters. The ``prefix_*`` hooks
    ([`PrefixRunnerMixin`]) enter the family's block stack from cached hidden states (frozen-prefix cache).
    """

    name: ClassVar[str] = "base"
    kind: ClassVar[str] = "text"
    model_types: ClassVar[tuple[str, ...]] = ()
    default_pooling: ClassVar[str | None] = "cls"
    input_fields: ClassVar[tuple[str, ...]] = ("input_ids",)
    """Required batch fields (without the ``{name}_`` prefix); the first is the main input."""
    optional_fields: ClassVar[tuple[str, ...]] = ("attention_mask",)
    pooler_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    """Parameter prefixes of the family's pooling head: trained with pooling ``pooler``, unused otherwise."""
    optional_weights: ClassVar[tuple[str, ...]] = ()
    """Parameter prefixes a checkpoint may lack without harm (besides the pooling head when it is unused)."""
    inactive_weights: ClassVar[tuple[str, ...]] = ()
    """Parameter prefixes never on the forward path of a fusion model (e.g. ViT's ``mask_token``, used only
    for masked-image pretraining): kept frozen, so they need no gradient."""
    block_path: ClassVar[str | None] = None
    """Module path of the repeated blocks when the generic search (largest homogeneous list) is wrong."""
    feature_encoder_prefixes: ClassVar[tuple[str, ...]] = ()
    """Parameter prefixes of a convolutional front-end that is not a block (trains only with
    ``train_feature_encoder``), e.g. wav2vec2's ``feature_extractor.``."""
    supports_layer: ClassVar[bool] = True
    """Whether the spec's ``layer`` (pool an intermediate hidden state) works for this family."""

    def __init__(self, config: PretrainedConfig | None, spec: Any = None):
        self.config = config
        self.spec = spec
        """The modality's ``ModalitySpec`` (read by attribute); ``None`` for an adapter asked about a config
        alone (its defaults, its processor)."""

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        """Whether this adapter handles an encoder with (tower) ``config``, of ``kind`` when one is given
        (``spec``: the modality spec, where there is one). ``encoder_adapters.adapter_class_for`` asks the
        adapters of ``ADAPTER_ORDER`` in turn; the first that matches wins. Default: ``config.model_type`` is
        one of ``model_types`` and ``kind`` (if given) is the adapter's."""
        return config is not None and config.model_type in cls.model_types and kind in (None, cls.kind)

    # ------------------------------------------------------------------ loading
    def model_class(self) -> type[nn.Module]:
        return model_class_for(self.config)

    def build(self) -> nn.Module:
        """A randomly initialised encoder from the config (weights are loaded over it); without its pooling
        head where the checkpoint had none (``add_pooling_layer`` False on the config, see ``load``)."""
        model_class = self.model_class()
        kwargs = {"add_pooling_layer": False} if _without_pooler(self.config, model_class) else {}
        if hasattr(model_class, "_from_config"):
            return model_class._from_config(self.config, **kwargs)
        return model_class(self.config, **kwargs)

    def load(self, name: str, path: str, source: PretrainedConfig, pooling: str | None, **kwargs: Any):
        """Load the pretrained encoder of modality ``name`` from ``path``, whose config is ``source`` (a dual
        encoder's parent config when the encoder is one of its towers)."""
        if source is not self.config:  # a tower of a dual checkpoint: drop the parent's prefix of the tower
            prefix = TOWERS[self.kind][1]
            kwargs.setdefault("key_mapping", {rf"^{prefix}\.": ""})
        model, info = self.model_class().from_pretrained(
            path, config=self.config, output_loading_info=True, **kwargs
        )
        pooling = self.loaded_pooling(model, pooling)
        missing = drop_absent_pooler(model, self.config, info.get("missing_keys", ()), pooling)
        self.check_loaded(name, path, missing, pooling)
        return model

    def loaded_pooling(self, encoder: nn.Module, pooling: str | None) -> str | None:
        """The pooling the loaded ``encoder`` will run (``pooling`` as given, else the family's default)."""
        return pooling or self.default_pooling

    def load_processor(self, path: str, **kwargs: Any) -> Any:
        """The family's sub-processor saved at ``path``: image processor, feature extractor or tokenizer."""
        return get_kind(self.kind).load_processor(path, **kwargs)

    def settle_spec(self, name: str, encoder: nn.Module, spec: Any) -> None:
        """Fill what the modality ``spec`` leaves to the built ``encoder`` (a probed default pooling / width);
        families with a known default need nothing."""

    def min_audio_samples(self) -> int:
        """Fewest input samples the encoder turns into at least one frame (1: no limit known)."""
        return 1

    def max_text_positions(self) -> int | None:
        """Most tokens the config's learned position table holds (``max_position_embeddings``), or ``None``."""
        positions = getattr(self.config, "max_position_embeddings", None) if self.config is not None else None
        return positions if isinstance(positions, int) and positions > 0 else None

    def check_loaded(self, name: str, path: str, missing: Any, pooling: str | None) -> None:
        """Fail when a weight on the forward path is missing (it would silently be random)."""
        harmless = tuple(self.optional_weights) + (() if pooling == "pooler" else tuple(self.pooler_prefixes))
        missing = sorted(k for k in missing if not k.startswith(harmless))
        if missing:
            shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise ValueError(
                f"modality '{name}': '{path}' lacks weights the {type(self.config).__name__} encoder uses: "
                f"{shown}; they would be random. Is this the right checkpoint (or tower) for kind '{self.kind}'?"
            )

    def attach(self, encoder: nn.Module) -> None:
        """Adjust a freshly built or loaded encoder in place (same parameter names and values)."""

    # ------------------------------------------------------------------ shape
    def output_dim(self, encoder: nn.Module) -> int:
        """Width of the pooled vector, read from the model: ``hidden_size`` for transformer families."""
        size = getattr(encoder.config, "hidden_size", None)
        return int(size) if size else last_width(encoder)

    def unused_weights(self, encoder: nn.Module) -> tuple[str, ...]:
        """Parameter prefixes that never get a gradient in this encoder (frozen by ``trainable_layers``)."""
        return self.inactive_weights

    def block_list(self, encoder: nn.Module) -> str | None:
        """Module path of the encoder's repeated blocks (``None``: the generic search decides)."""
        return self.block_path

    def final_prefixes(self, encoder: nn.Module) -> tuple[str, ...]:
        """Parameter prefixes of a final norm that sits before the blocks in parameter order."""
        return ()

    def layout(self, name: str, encoder: nn.Module, spec: Any) -> EncoderLayout:
        """Where modality ``name``'s parameters sit (embeddings, blocks, final norm, front-end, unused) for
        its ``spec`` (``pooling``, ``layer``): what freezing and layer-wise learning rates read."""
        return encoder_layout(
            encoder,
            spec.pooling,
            spec.layer,
            pooler_prefixes=self.pooler_prefixes,
            block_list=self.block_list(encoder),
            unused_prefixes=self.unused_weights(encoder),
            feature_encoder_prefixes=self.feature_encoder_prefixes,
            final_prefixes=self.final_prefixes(encoder),
        )

    # ------------------------------------------------------------------ forward
    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        """Shape checks of the encoder inputs; errors name the modality and the field."""
        main = self.input_fields[0]
        for field in ("attention_mask", "token_type_ids"):
            if main in fields and field in fields and fields[field].shape != fields[main].shape:
                raise ValueError(
                    f"modality '{name}' ({self.kind}): field '{name}_{field}' must be the shape of "
                    f"'{name}_{main}' {tuple(fields[main].shape)}, got shape {tuple(fields[field].shape)}"
                )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments of the encoder call (fields its ``forward`` accepts)."""
        return {k: v for k, v in fields.items() if _accepts(encoder, k)}

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        mask = fields.get("attention_mask")
        return mask.bool() if mask is not None and mask.shape[1] == hidden.shape[1] else None

    def encode(self, encoder: nn.Module, fields: dict[str, torch.Tensor], layer: int | None) -> EncoderOutput:
        """Run the encoder on one batch; ``layer`` picks a hidden state (``None`` = the final output)."""
        outputs = encoder(
            **self.forward_kwargs(encoder, fields), output_hidden_states=layer is not None, return_dict=True
        )
        hidden = outputs.last_hidden_state if layer is None else outputs.hidden_states[layer]
        grid = None
        if hidden.dim() == 4:  # a feature map [B, C, H, W] -> tokens [B, H*W, C]
            grid = (hidden.shape[2], hidden.shape[3])
            hidden = hidden.flatten(2).transpose(1, 2)
        pooled = getattr(outputs, "pooler_output", None)
        return EncoderOutput(hidden, self.token_mask(encoder, fields, hidden), pooled, grid)

    def exact_batches(
        self, fields: dict[str, torch.Tensor]
    ) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]] | None:
        """Row groups ``(rows [n], fields)`` to encode apart because one padded call would not be exact (each
        clip length unpadded), or ``None`` when the batch runs as one call."""
        return None

    # ------------------------------------------------------------------ processor
    def processor_kwargs(self) -> dict[str, Any]:
        """Settings of the sub-processor call that produce this family's fields (saved with the processor)."""
        return {}

    # ------------------------------------------------------------------ activation checkpointing
    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return bool(getattr(encoder, "supports_gradient_checkpointing", False))

    def set_checkpointing(
        self, encoder: nn.Module, enable: bool, function: Any, every_n_layers: int = 1
    ) -> bool:
        """Switch activation checkpointing on the encoder's layers (``function`` is transformers' partial of
        ``torch.utils.checkpoint.checkpoint``); returns ``False`` where the family has none."""
        if not self.supports_checkpointing(encoder):
            return False
        return _set_layer_checkpointing(encoder, enable, function, every_n_layers)


def _set_layer_checkpointing(encoder: nn.Module, enable: bool, function: Any, every_n_layers: int) -> bool:
    """What ``PreTrainedModel._set_gradient_checkpointing`` does, for one encoder (also a bare sub-module such
    as a seq2seq model's ``get_encoder()``)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    found, index = False, 0
    for module in encoder.modules():
        if hasattr(module, "gradient_checkpointing"):
            module._gradient_checkpointing_func = function
            if enable and isinstance(module, GradientCheckpointingLayer):
                module.gradient_checkpointing = index % every_n_layers == 0
                index += 1
            else:
                module.gradient_checkpointing = enable
            found = True
    return found


def last_width(encoder: nn.Module) -> int:
    """Output width of a CNN-style encoder: the size of its last normalisation / convolution / linear layer."""
    for module in reversed(list(encoder.modules())):
        if isinstance(module, nn.LayerNorm):
            return int(module.normalized_shape[-1])
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            return int(module.num_features)
        if isinstance(module, nn.GroupNorm):
            return int(module.num_channels)
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            return int(module.out_channels)
        if isinstance(module, nn.Linear):
            return int(module.out_features)
    raise ValueError(f"cannot tell the output width of {type(encoder).__name__}")
