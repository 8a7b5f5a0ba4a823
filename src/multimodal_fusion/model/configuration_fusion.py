"""Configuration of a fusion model: named modalities, each with its encoder config, plus fusion and head settings.

This file is copied next to the weights by ``save_pretrained`` (``trust_remote_code`` loading), so it imports
only torch, transformers and sibling modules of this folder.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from transformers import CONFIG_MAPPING, PretrainedConfig

from .encoder_adapters import adapter_class_for, tower_config
from .encoder_adapters import infer_kind as adapter_infer_kind
from .fusions import FUSION_REGISTRY, is_token_level
from .modality_kind import check_input_dim  # noqa: F401 (re-exported)
from .modality_kinds import MODALITY_KIND_REGISTRY, get_kind, kind_class_path, kind_names, reads_encoder
from .pooling_layers import POOLING_REGISTRY
from .spec_parts import DeprecatedMappingReads, OwnNetworkSpec

MODALITY_KINDS = MODALITY_KIND_REGISTRY
"""What a modality can hold: the registered [`ModalityKind`]s (``image``, ``audio``, ``text``, ``features`` and any
kind you register), a live name -> class table (``"image" in MODALITY_KINDS``, ``list(MODALITY_KINDS)``)."""


def _resolve_encoder_config(name: str, value: Any) -> PretrainedConfig | None:
    """Turn a saved encoder-config dict (with ``model_type``) back into the right config class."""
    if value is None or isinstance(value, PretrainedConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError(
            f"modality '{name}': `config` must be a transformers config or a dict with `model_type`, "
            f"got {type(value).__name__}"
        )
    value = dict(value)
    model_type = value.pop("model_type", None)
    value.pop("transformers_version", None)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(
            f"modality '{name}': `config.model_type` must name a transformers model type, got {model_type!r}"
        )
    return CONFIG_MAPPING[model_type](**value)


def encoder_tower_config(kind: str, config: PretrainedConfig) -> PretrainedConfig:
    """Return the tower of a dual-encoder config (CLIP, SigLIP, CLAP) that matches ``kind``, else ``config``."""
    return tower_config(kind, config)


def infer_kind(name: str, config: PretrainedConfig) -> str:
    """Infer a modality's kind from its encoder family (see ``encoder_adapters``).

    Raises:
        ValueError: naming the modality, for a dual-encoder config (ambiguous) or an unknown family.
    """
    kind = adapter_infer_kind(config)
    if kind is None:
        raise ValueError(
            f"modality '{name}': cannot infer `kind` from encoder type '{config.model_type}'; "
            f"give `kind` explicitly (one of {kind_names()})"
        )
    return kind


def encoder_kind(name: str, kind: str | None, config: PretrainedConfig) -> str:
    """The kind of a modality read by the encoder ``config``: the given ``kind``, checked against what the encoder
    (its tower, for a dual encoder) reads, else inferred from it.

    Raises:
        ValueError: naming the modality: an unknown kind, a kind the encoder does not read (a ViT given kind
            ``text``), or no kind given for an encoder whose kind cannot be inferred.
    """
    if kind is None:
        return infer_kind(name, config)
    if kind not in MODALITY_KIND_REGISTRY:
        raise ValueError(f"modality '{name}': `kind` must be one of {kind_names()}, got {kind!r}")
    reads = adapter_infer_kind(encoder_tower_config(kind, config))
    if reads is not None and reads != kind:
        raise ValueError(
            f"modality '{name}': `kind` is {kind!r} but the '{config.model_type}' encoder reads kind {reads!r}; "
            f"give kind {reads!r} (or leave it out), or an encoder of kind {kind!r}"
        )
    return kind


def default_pooling(kind: str, config: PretrainedConfig | None) -> str | None:
    """The encoder family's default pooling (``cls``, ``last``, ``mean`` or its own ``pooler``); ``None`` when
    the family's adapter decides it from the built encoder (the generic image adapter's probe)."""
    return adapter_class_for(config, kind).default_pooling


def check_trainable_layers(name: str, value: Any) -> int | str:
    """``trainable_layers``: 0 (frozen), a positive number of top blocks, or ``"all"``."""
    if value == "all":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"modality '{name}': `trainable_layers` must be 0 (frozen), a positive number of top blocks, "
            f"or 'all'; got {value!r}"
        )
    return value


def resolve_kind(name: str, kind: str | None, has_encoder: bool, input_dim: Any) -> str | None:
    """The one place of the rule "no encoder (config, path or processor) but an ``input_dim`` means kind
    ``features``"; checks a given kind. ``None`` when the kind is still open (to be inferred from the encoder)."""
    if kind is not None and kind not in MODALITY_KIND_REGISTRY:
        raise ValueError(f"modality '{name}': `kind` must be one of {kind_names()}, got {kind!r}")
    if kind is None and not has_encoder and input_dim is not None:
        return "features"
    return kind


def _moved_to_network(key: str) -> property:
    """A read-only ``spec.<key>`` for a field that moved to ``spec.network`` (deprecated; ``None`` / the v0.1
    default without an own network)."""

    def read(self: ModalitySpec) -> Any:
        warnings.warn(
            f"`ModalitySpec.{key}` moved to `ModalitySpec.network.{key}` (the own-network part)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._read(key)

    return property(read, doc=f"Deprecated: ``spec.network.{key}``.")


@dataclass
class ModalitySpec(DeprecatedMappingReads):
    """One modality of a [`FusionConfig`]: its encoder and how it is pooled and trained (see ``FusionConfig``'s
    ``modalities`` for each field). Build it with [`ModalitySpec.from_dict`], which fills the defaults and
    validates it once; errors name the modality and the field.

    The fields only your own network uses are its typed ``network`` part ([`OwnNetworkSpec`], ``None`` for a
    pretrained encoder or a ``features`` MLP). ``from_dict`` takes them flat (``module``, ``module_kwargs``...,
    the saved form) or nested (``network``); ``to_dict`` always writes them flat, so ``config.json`` keeps its
    v0.1 keys.

    Adding a field is one line here (with its default); give it a check in ``_validate`` when it needs one.
    Mapping-style reads (``spec["kind"]``, ``spec.get("path")``) of the former dict form still work for one
    release, with a ``DeprecationWarning``.
    """

    kind: str | None = None
    path: str | None = None
    config: PretrainedConfig | None = None
    pooling: str | None = None
    layer: int | None = None
    max_tokens: int | None = None
    trainable_layers: int | str = "all"
    learning_rate: float | None = None
    train_feature_encoder: bool = False
    input_dim: int | None = None
    hidden_sizes: list[int] | None = None
    interpolate_pos_encoding: bool | None = None
    network: OwnNetworkSpec | None = None
    output_dim: int | None = None
    kind_class: str | None = None

    module = _moved_to_network("module")
    module_kwargs = _moved_to_network("module_kwargs")
    module_from_instance = _moved_to_network("module_from_instance")
    weights = _moved_to_network("weights")
    feature_layer = _moved_to_network("feature_layer")
    blocks = _moved_to_network("blocks")
    trainable_modules = _moved_to_network("trainable_modules")
    image_size = _moved_to_network("image_size")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The keys of a spec dict, flat: the fields with ``network`` spelled out as its own fields (what
        ``to_dict`` writes; ``from_dict`` also takes ``network``)."""
        out: list[str] = []
        for spec_field in fields(cls):
            out.extend(OwnNetworkSpec.field_names() if spec_field.name == "network" else (spec_field.name,))
        return tuple(out)

    def _read(self, key: str) -> Any:
        if key in OwnNetworkSpec.field_names():
            network = self.network
            return getattr(network, key) if network is not None else OwnNetworkSpec.defaults()[key]
        return getattr(self, key)

    def _write(self, key: str, value: Any) -> None:
        if key not in OwnNetworkSpec.field_names():
            setattr(self, key, value)
        elif self.network is not None:
            setattr(self.network, key, value)
        else:
            raise KeyError(f"{key} (a field of your own network; this modality has no `module`)")

    @classmethod
    def from_dict(cls, name: str, spec: Any) -> ModalitySpec:
        """Validate the spec of modality ``name`` and fill its defaults.

        Args:
            name: the modality name (for error messages).
            spec: a path string, an encoder config, a dict of spec fields (saved or user-written), or a
                ``ModalitySpec``.

        Raises:
            ValueError: naming the modality and the field: unknown keys (listing the allowed ones), a bad kind,
                pooling, layer, ``trainable_layers``, ``learning_rate``, or a missing encoder.
        """
        if isinstance(spec, ModalitySpec):
            spec = spec.to_dict(serializable=False)
        if isinstance(spec, str):
            spec = {"path": spec}
        if isinstance(spec, PretrainedConfig):
            spec = {"config": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"modality '{name}': spec must be a path string or a dict, got {type(spec).__name__}"
            )
        unknown = set(spec) - set(cls.field_names()) - {"network"}
        if unknown:
            raise ValueError(
                f"modality '{name}': unknown spec keys {sorted(unknown)}; allowed: {list(cls.field_names())}"
            )
        values = {key: value for key, value in spec.items() if value is not None}
        values["config"] = _resolve_encoder_config(name, copy.deepcopy(values.get("config")))
        values["network"] = _network_part(name, values)
        if values["network"] is not None and values["network"].trainable_modules:
            values.setdefault("trainable_layers", 0)  # naming the submodules that train freezes the rest
        out = cls(**values)
        out._validate(name)
        return out

    def _validate(self, name: str) -> None:
        self.kind_class = kind_class_path(self.kind, self.kind_class)  # a kind registered outside the package
        if self.network is None:
            self.kind = resolve_kind(name, self.kind, self.config is not None, self.input_dim)
        if self.network is not None:
            self._validate_module(name)
        elif not reads_encoder(self.kind):
            get_kind(self.kind).validate_spec(name, self)
        else:
            self._validate_encoder(name)
        max_tokens = self.max_tokens
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise ValueError(
                f"modality '{name}': `max_tokens` must be a positive integer or None, got {max_tokens!r}"
            )
        self.trainable_layers = check_trainable_layers(name, self.trainable_layers)
        self.train_feature_encoder = bool(self.train_feature_encoder)
        lr = self.learning_rate
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr < 0):
            raise ValueError(f"modality '{name}': `learning_rate` must be a non-negative number, got {lr!r}")

    def _validate_encoder(self, name: str) -> None:
        if self.config is None:
            raise ValueError(
                f"modality '{name}': no encoder; give `config` (an encoder config), load it with "
                "`FusionModel.from_encoders` from a `path`, or use kind 'features' with `input_dim`"
            )
        self.kind = encoder_kind(name, self.kind, self.config)
        self.config = encoder_tower_config(self.kind, self.config)
        self.pooling = self.pooling or default_pooling(self.kind, self.config)
        if self.pooling is not None and self.pooling not in POOLING_REGISTRY:
            raise ValueError(
                f"modality '{name}': `pooling` must be one of {sorted(POOLING_REGISTRY)}, got {self.pooling!r}"
            )
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ValueError(f"modality '{name}': `layer` must be an integer hidden-state index or None")
        if self.layer is not None and self.pooling == "pooler":
            raise ValueError(
                f"modality '{name}': pooling 'pooler' reads the final output; it cannot use `layer`"
            )
        if self.interpolate_pos_encoding not in (None, True, False):
            raise ValueError(f"modality '{name}': `interpolate_pos_encoding` must be true, false or null")
        if self.layer is not None and not adapter_class_for(self.config, self.kind).supports_layer:
            raise ValueError(f"modality '{name}': `layer` is not supported for timm encoders; leave it None")

    def _validate_module(self, name: str) -> None:
        """Your own network (``module_encoder.py``; its own fields are checked by ``OwnNetworkSpec``): a kind,
        positive widths, ``feature_layer`` instead of ``layer``, a registered pooling."""
        if self.kind not in MODALITY_KIND_REGISTRY:
            raise ValueError(
                f"modality '{name}': a `module` encoder needs `kind`, one of {kind_names()}; got {self.kind!r}"
            )
        for key in ("output_dim", "input_dim"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise ValueError(f"modality '{name}': `{key}` must be a positive integer, got {value!r}")
        if self.layer is not None:
            raise ValueError(f"modality '{name}': a `module` encoder picks its output with `feature_layer`")
        if self.pooling is not None and self.pooling not in POOLING_REGISTRY:
            raise ValueError(
                f"modality '{name}': `pooling` must be one of {sorted(POOLING_REGISTRY)}, got {self.pooling!r}"
            )

    def to_dict(self, serializable: bool = True) -> dict[str, Any]:
        """Every field, flat (``network``'s fields at the top level, their defaults for a pretrained encoder);
        with ``serializable`` the encoder config as a JSON-able dict (with ``model_type``)."""
        network = self.network.to_dict() if self.network is not None else OwnNetworkSpec.defaults()
        out = {key: network[key] if key in network else getattr(self, key) for key in self.field_names()}
        if serializable and isinstance(self.config, PretrainedConfig):
            out["config"] = self.config.to_dict()
            out["config"].pop("transformers_version", None)
        if serializable and out["kind_class"] is None:  # a built-in kind: config.json stays readable by v0.1
            del out["kind_class"]
        return out

    def replace(self, name: str, **changes: Any) -> ModalitySpec:
        """A validated copy with ``changes`` applied (the encoder config object is shared, not copied)."""
        values = {**self.to_dict(serializable=False), **changes}
        config = values.pop("config")
        out = ModalitySpec.from_dict(name, values)
        out.config = config if get_kind(out.kind).has_encoder else None
        return out


def _network_part(name: str, values: dict[str, Any]) -> OwnNetworkSpec | None:
    """Pop the own-network fields of a spec dict (flat, or nested as ``network``) into an [`OwnNetworkSpec`];
    ``None`` without ``module``.

    Raises:
        ValueError: naming the modality: both forms given, or an own-network field set without ``module``.
    """
    flat = {key: values.pop(key) for key in OwnNetworkSpec.field_names() if key in values}
    nested = values.pop("network", None)
    if isinstance(nested, OwnNetworkSpec):
        nested = nested.to_dict()
    if nested is not None and not isinstance(nested, Mapping):
        raise ValueError(f"modality '{name}': `network` must be a dict of own-network fields")
    if nested is not None and flat:
        raise ValueError(
            f"modality '{name}': give the own-network fields either flat or under `network`, not both "
            f"(flat: {sorted(flat)})"
        )
    given = dict(nested if nested is not None else flat)
    if given.get("module") is None:
        defaults = OwnNetworkSpec.defaults()
        stray = sorted(key for key, value in given.items() if value is not None and value != defaults[key])
        if stray:
            raise ValueError(f"modality '{name}': {stray} describe your own network; give `module` too")
        return None
    return OwnNetworkSpec.from_dict(name, given)


SPEC_KEYS = ModalitySpec.field_names()
"""Keys a per-modality spec may hold (see ``FusionConfig``)."""


def normalize_spec(name: str, spec: Any) -> ModalitySpec:
    """Validate one modality spec and fill its defaults (``ModalitySpec.from_dict``)."""
    return ModalitySpec.from_dict(name, spec)


def _default_modalities() -> dict[str, dict[str, Any]]:
    return {
        "image": {"config": CONFIG_MAPPING["vit"]()},
        "audio": {"config": CONFIG_MAPPING["wav2vec2"]()},
        "text": {"config": CONFIG_MAPPING["bert"]()},
    }


CUSTOM_PIPELINES = {
    # Not "fused-classification": transformers sends a task named in config.json to the remote code even when
    # the package registered it in-process, so the in-process name would then demand trust_remote_code=True.
    "fused-classification-remote": {
        "impl": "pipeline_fusion.FusedClassificationPipeline",
        "pt": ["AutoModel"],
        "tf": [],
        "type": "multimodal",
    }
}
"""``config.json``'s ``custom_pipelines``: the task and the remote-code file that ``save_pretrained`` copies."""


class FusionConfig(PretrainedConfig):
    r"""Configuration of a [`FusionModel`].

    Args:
        modalities (`dict[str, ModalitySpec | dict]`, *optional*):
            Modality name -> spec, in the order the fusion sees them (saved as a list of specs with a ``name``
            key, since JSON files sort dict keys; that list form is accepted too). Names are free (``image``, ``left_camera``,
            ``sensors``...); the batch fields of a modality are prefixed ``{name}_``. Spec keys:

            - ``config``: the encoder's transformers config (object, or dict with ``model_type``). A dual-encoder
              config (CLIP, SigLIP, CLAP) is reduced to the tower matching ``kind``.
            - ``kind``: ``image`` | ``audio`` | ``text`` | ``features``; inferred from the encoder when absent.
            - ``path``: where the encoder was loaded from (Hub id or folder), for the record and the processor.
            - ``pooling``: ``cls`` | ``mean`` | ``last`` | ``pooler`` | ``attention`` (all mask-aware). Default:
              the encoder family's (``encoder_adapters``): ``cls`` for BERT/ViT-like, ``last`` for decoder-only
              LMs, the family's own ``pooler`` (CLIP/SigLIP, Swin, ConvNeXt, timm, AST, CLAP), ``mean`` for
              wav2vec2/Whisper audio and encoder-decoder text.
            - ``interpolate_pos_encoding``: ViT-like encoders interpolate position embeddings (``None``:
              automatically when the image size differs from the checkpoint's).
            - ``layer``: index into the encoder's ``hidden_states`` to pool (0 = embeddings); ``None`` = the
              encoder's final output.
            - ``max_tokens``: cap on the tokens the encoder hands over (token-level fusions, and before pooling):
              audio averages each sample's valid frames into equal bins, images pool the patch grid (prefix
              tokens kept), text keeps its first valid tokens. ``None`` (default) = every token.
            - ``trainable_layers``: ``0`` frozen, ``k`` the top k blocks (plus the final norm), ``"all"``.
            - ``learning_rate``: optional per-encoder learning rate (used by the trainer).
            - ``train_feature_encoder``: train wav2vec2's convolutional front-end too (default ``False``).
            - ``input_dim`` / ``hidden_sizes``: the MLP of a ``features`` modality.
            - ``module`` (your own network: an ``nn.Module`` instance, recorded as its class path with
              ``module_from_instance``, or ``"package.module:factory"``), ``module_kwargs``, ``weights`` (a
              state-dict file, loaded by ``from_encoders``), ``feature_layer``, ``blocks``,
              ``trainable_modules``, ``image_size``; ``output_dim`` is measured when the model is built. See
              ``module_encoder.py``.

            Defaults to ``image`` (ViT), ``audio`` (wav2vec2) and ``text`` (BERT) with default-size configs.
        fusion (`str`, *optional*, defaults to `"concat"`):
            pooled: ``concat`` | ``gated`` | ``attention`` | ``transformer`` | ``tensor`` | ``low_rank_tensor``;
            token-level (modalities attend to each other's tokens): ``cross_attention`` (MulT) |
            ``bottleneck`` (MBT) | ``perceiver``.
        projection_dim (`int`, defaults to 256): size every pooled encoder vector is projected to.
        fusion_hidden_size (`int`, defaults to 256): size of the fused embedding fed to the head.
        fusion_layers (`int`, defaults to 1): MLP depth (``concat``) or transformer layers (``transformer``).
        fusion_heads (`int`, defaults to 4): attention heads of the ``transformer`` fusion.
        fusion_rank (`int`, defaults to 4): rank of the ``low_rank_tensor`` fusion.
        fusion_bottleneck_tokens (`int`, defaults to 4): shared bottleneck tokens of the ``bottleneck`` fusion.
        fusion_latent_tokens (`int`, defaults to 8): latent array size of the ``perceiver`` fusion.
        fusion_position_embeddings (`str`, defaults to `"sinusoidal"`): position information the token-level
            fusions add to each modality's tokens: ``sinusoidal`` (MulT-style sinusoids of each token's index among
            its row's real tokens, through a learned per-modality linear map) | ``none``.
        tensor_fusion_dim (`int`, defaults to 16): per-modality size before the outer product of ``tensor``.
        dropout (`float`, defaults to 0.1): dropout in the fusion module and before the head.
        modality_dropout (`float`, defaults to 0.0): probability, per sample and modality, of masking a whole
            modality during training (at least one modality per sample is kept).
        aux_loss_weight (`float`, defaults to 0.0): weight of the auxiliary per-modality losses; when > 0 each
            modality gets its own head on its projected vector and ``loss = main + w * mean(aux losses)``.
        initializer_range (`float`, defaults to 0.02): std of the normal init of the new layers.
    """

    model_type = "fusion"

    modalities: dict | None = None
    fusion: str = "concat"
    projection_dim: int = 256
    fusion_hidden_size: int = 256
    fusion_layers: int = 1
    fusion_heads: int = 4
    fusion_rank: int = 4
    fusion_bottleneck_tokens: int = 4
    fusion_latent_tokens: int = 8
    fusion_position_embeddings: str = "sinusoidal"
    tensor_fusion_dim: int = 16
    dropout: float = 0.1
    modality_dropout: float = 0.0
    aux_loss_weight: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        modalities = _default_modalities() if self.modalities is None else self.modalities
        if isinstance(
            modalities, (list, tuple)
        ):  # the saved form: JSON sorts dict keys, a list keeps the order
            modalities = {
                saved["name"]: {k: v for k, v in saved.items() if k != "name"} for saved in modalities
            }
        if not isinstance(modalities, dict) or not modalities:
            raise ValueError("`modalities` must be a non-empty dict of modality name -> spec")
        for name in modalities:
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"modality name {name!r} must be a valid identifier (it prefixes batch keys)"
                )
        self.modalities = {name: ModalitySpec.from_dict(name, spec) for name, spec in modalities.items()}
        super().__post_init__(**kwargs)
        if not getattr(self, "custom_pipelines", None):  # pipeline(model=folder, trust_remote_code=True)
            self.custom_pipelines = dict(CUSTOM_PIPELINES)
        self._validate_fusion_fields()

    def _validate_fusion_fields(self) -> None:
        if self.fusion not in FUSION_REGISTRY:
            raise ValueError(f"`fusion` must be one of {sorted(FUSION_REGISTRY)}, got {self.fusion!r}")
        for field in (
            "projection_dim",
            "fusion_hidden_size",
            "fusion_layers",
            "fusion_heads",
            "fusion_rank",
            "fusion_bottleneck_tokens",
            "fusion_latent_tokens",
            "tensor_fusion_dim",
        ):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"`{field}` must be a positive integer, got {value!r}")
        attends = is_token_level(self.fusion) or self.fusion == "transformer"
        if attends and self.projection_dim % self.fusion_heads:
            raise ValueError(
                f"`projection_dim` ({self.projection_dim}) must be divisible by `fusion_heads` ({self.fusion_heads})"
            )
        if self.fusion_position_embeddings not in ("sinusoidal", "none"):
            raise ValueError(
                "`fusion_position_embeddings` must be 'sinusoidal' or 'none', "
                f"got {self.fusion_position_embeddings!r}"
            )
        for field in ("dropout", "modality_dropout"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"`{field}` must be in [0, 1), got {value!r}")
        if not isinstance(self.aux_loss_weight, (int, float)) or self.aux_loss_weight < 0:
            raise ValueError(f"`aux_loss_weight` must be >= 0, got {self.aux_loss_weight!r}")

    @property
    def modality_names(self) -> list[str]:
        """Modality names in fusion order."""
        return list(self.modalities)

    def encoder_config(self, name: str) -> PretrainedConfig | None:
        """The live encoder config of modality ``name`` (``None`` for ``features``)."""
        return self.modalities[name].config

    @property
    def _attn_implementation(self):
        return self._attn_implementation_internal

    @_attn_implementation.setter
    def _attn_implementation(self, value: str | dict | None):
        """Set on the composite and, unless ``None``, on every encoder config (a dict may name modalities)."""
        current = getattr(self, "_attn_implementation_internal", None)
        self._attn_implementation_internal = value if not isinstance(value, dict) else value.get("", current)
        if value is None:
            return
        for name, spec in (getattr(self, "modalities", None) or {}).items():
            sub = spec.config if isinstance(spec, ModalitySpec) else None
            if isinstance(sub, PretrainedConfig):
                sub._attn_implementation = (
                    value if not isinstance(value, dict) else value.get(name, value.get(""))
                )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        modalities = []
        for name, spec in self.modalities.items():
            modalities.append({"name": name, **spec.to_dict()})
        output["modalities"] = modalities  # a list: JSON files sort dict keys, and modality order matters
        return output
