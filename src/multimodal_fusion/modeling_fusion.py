"""FusionModel: pretrained encoders (one per named modality) -> pooling -> projection -> fusion -> head.

``save_pretrained`` copies this file and its sibling imports next to the weights, so the checkpoint loads
with ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` where this package is not installed. Keep
imports to torch, transformers, timm and flat relative imports of this folder.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .batch_inputs import batch_size_of, check_fields, drop_modalities, presence, split_inputs
from .configuration_fusion import FusionConfig, ModalitySpec, encoder_tower_config, infer_kind
from .encoder_layout import EncoderLayout
from .feature_encoder import FeatureEncoder
from .fusion_layers import FUSION_REGISTRY
from .input_validation import InputLimits, input_limits
from .label_validation import IGNORE_INDEX, check_labels
from .modality_encoding import ModalityEncodingMixin
from .model_freezing import EncoderFreezingMixin
from .module_encoder import ModuleEncoder, build_module_encoder
from .pooling_layers import POOLING_REGISTRY


@dataclass
class FusionModelOutput(ModelOutput):
    """Output of [`FusionModel`].

    Args:
        loss: main loss plus ``aux_loss_weight`` x mean auxiliary loss, when ``labels`` are given.
        logits: ``[B, num_labels]``.
        fused_embedding: ``[B, fusion_hidden_size]``, the fusion module's output (input of the head).
        modality_embeddings: name -> ``[B, projection_dim]`` projected vectors as fed to the fusion; a sample
            whose modality is missing holds that modality's learned placeholder.
        aux_logits: name -> ``[B, num_labels]`` from the per-modality heads (``None`` without aux heads).
        modality_weights: ``[B, M]`` in config order for fusions that weigh modalities, else ``None``.
        aux_losses: name -> auxiliary loss of that modality over the samples where it is present.
        modality_mask: ``[B, M]`` bool, which modalities each sample had (after modality dropout).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    fused_embedding: torch.Tensor | None = None
    modality_embeddings: dict[str, torch.Tensor] | None = None
    aux_logits: dict[str, torch.Tensor] | None = None
    modality_weights: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] | None = None
    modality_mask: torch.Tensor | None = None


def problem_type_for(config: FusionConfig, labels: torch.Tensor) -> str:
    """transformers' rule: ``num_labels == 1`` -> regression, integer labels -> single-label, else multi-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Cross-entropy, BCE-with-logits or MSE, computed in float32. Single-label rows labelled ``-100`` are
    ignored; a batch of only ``-100`` rows has loss 0 (see ``label_validation``)."""
    logits = logits.float()
    if problem_type == "regression":
        if logits.shape[-1] == 1:
            return nn.functional.mse_loss(logits.squeeze(-1), labels.float().view(-1))
        return nn.functional.mse_loss(logits, labels.float())
    if problem_type == "single_label_classification":
        # Mean over the labelled rows; rows labelled -100 are ignored, and an all -100 batch gives 0 (with a
        # graph), not the 0/0 = NaN of the "mean" reduction.
        labels = labels.reshape(-1).long()
        total = nn.functional.cross_entropy(
            logits.view(-1, logits.shape[-1]), labels, ignore_index=IGNORE_INDEX, reduction="sum"
        )
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())


def fusion_loss(
    config: FusionConfig,
    logits: torch.Tensor,
    aux_logits: dict[str, torch.Tensor] | None,
    labels: torch.Tensor,
    masks: torch.Tensor,
    aux_weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Main loss plus ``aux_weight`` x the mean of the per-modality auxiliary losses, each over the samples where
    that modality is present (``masks`` ``[B, M]``). Returns ``(loss, aux losses by name or None)``."""
    problem_type = problem_type_for(config, labels)
    loss = classification_loss(logits, labels, problem_type)
    aux_losses = None
    if aux_logits is not None and aux_weight > 0:
        aux_losses = {
            name: classification_loss(aux_logits[name][masks[:, i]], labels[masks[:, i]], problem_type)
            for i, name in enumerate(config.modalities)
            if bool(masks[:, i].any())
        }
        if aux_losses:
            loss = loss + aux_weight * torch.stack(list(aux_losses.values())).mean()
    return loss, aux_losses


def load_encoder(name: str, path: str, kind: str | None = None, **kwargs: Any) -> tuple[PreTrainedModel, str]:
    """Load the encoder of modality ``name`` from a Hub id or folder with the transformers Auto classes.

    timm checkpoints load through transformers' timm wrapper; a dual-encoder checkpoint (CLIP, SigLIP, CLAP)
    loads only the tower matching ``kind``. Returns ``(model, kind)``.
    """
    hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    try:
        config = AutoConfig.from_pretrained(path, **hub_kwargs)
    except OSError as error:
        raise OSError(f"modality '{name}': cannot load the encoder config from '{path}': {error}") from error
    except ValueError as error:
        raise ValueError(f"modality '{name}': '{path}' is not a usable encoder: {error}") from error
    if config.model_type == "timm_wrapper" and isinstance(getattr(config, "model_args", None), dict):
        config.model_args.pop("num_classes", None)  # timm's save_for_hf writes it; the wrapper passes its own
    kind = kind or infer_kind(name, config)
    tower = encoder_tower_config(kind, config)
    if tower is config:
        model = AutoModel.from_pretrained(path, config=config, **kwargs)
    else:
        model = MODEL_MAPPING[type(tower)].from_pretrained(path, config=tower, **kwargs)
    return model, kind


def _encoder_output_dim(name: str, spec: ModalitySpec, encoder: nn.Module) -> int:
    if isinstance(encoder, ModuleEncoder):
        return spec.output_dim
    if isinstance(encoder, FeatureEncoder):
        return encoder.output_dim
    if hasattr(encoder, "timm_model"):
        return encoder.timm_model.num_features
    config = spec.config
    if getattr(config, "hidden_size", None):
        return config.hidden_size
    if getattr(config, "hidden_sizes", None):
        return config.hidden_sizes[-1]
    raise ValueError(f"modality '{name}': cannot tell the output size of encoder type '{config.model_type}'")


def _build_encoder(name: str, spec: ModalitySpec) -> nn.Module:
    if spec.module is not None:
        return build_module_encoder(name, spec)
    if spec.kind == "features":
        return FeatureEncoder(spec.input_dim, spec.hidden_sizes)
    config = spec.config
    if type(config) in MODEL_MAPPING:
        return MODEL_MAPPING[type(config)]._from_config(config)
    return AutoModel.from_config(config)


class FusionPreTrainedModel(PreTrainedModel):
    config_class = FusionConfig
    base_model_prefix = "fusion"
    main_input_name = "image_pixel_values"
    """The first modality's main batch field (``{name}_{field}``, set per instance from the config; this class
    value fits the default config). transformers' Trainer reads it to count input tokens and FLOPs."""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    accepts_loss_kwargs = False
    hub_uploader: ClassVar[Callable[..., Any] | None] = None
    """``push_to_hub``'s implementation, set by the package root (the model layer cannot import the Hub layer)."""

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.normal_(module.in_proj_weight, std=std)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, (*FUSION_REGISTRY.values(), *POOLING_REGISTRY.values())):
            if hasattr(module, "init_weights"):  # each fusion/pooling initialises its own parameters
                module.init_weights(std)
        elif isinstance(module, FusionModel):
            for placeholder in module.missing_embeddings.values():
                init.normal_(placeholder, std=std)


class FusionModel(ModalityEncodingMixin, EncoderFreezingMixin, FusionPreTrainedModel):
    """Pretrained encoders merged into one classifier/regressor. Build it with [`FusionModel.from_encoders`].

    Inputs are ``{name}_{field}`` tensors per modality (``image_pixel_values``, ``audio_input_values``,
    ``audio_attention_mask``, ``text_input_ids``, ``text_attention_mask``, ``sensors_values``...), optionally
    ``{name}_embeds`` (a precomputed pooled vector that skips the encoder) and ``{name}_mask`` (bool per
    sample, False = modality missing). A modality absent from the batch is missing for every sample.
    """

    def __init__(self, config: FusionConfig, encoders: Mapping[str, nn.Module] | None = None):
        super().__init__(config)
        encoders = dict(encoders or {})
        unknown = set(encoders) - set(config.modalities)
        if unknown:
            raise ValueError(f"encoders given for unknown modalities {sorted(unknown)}")
        self.encoders = nn.ModuleDict()
        self.poolers = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.missing_embeddings = nn.ParameterDict()
        self.pooled_dims: dict[str, int] = {}
        dim = config.projection_dim
        for name, spec in config.modalities.items():
            encoder = encoders.get(name)
            if encoder is None:
                encoder = _build_encoder(name, spec)
            elif spec.module is not None:  # your own network, passed back (or built by from_encoders)
                encoder = build_module_encoder(name, spec, encoder)
            elif spec.config is not None:
                spec.config._attn_implementation_internal = encoder.config._attn_implementation
                encoder.config = spec.config
            self.encoders[name] = encoder
            pooled_dim = _encoder_output_dim(name, spec, encoder)
            self.pooled_dims[name] = pooled_dim
            if spec.pooling is not None:
                self.poolers[name] = POOLING_REGISTRY[spec.pooling](pooled_dim)
            self.projections[name] = nn.Sequential(nn.Linear(pooled_dim, dim), nn.LayerNorm(dim))
            self.missing_embeddings[name] = nn.Parameter(torch.zeros(dim))
        self.fusion = FUSION_REGISTRY[config.fusion](len(config.modalities), dim, config)
        self.head_dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.aux_heads = (
            nn.ModuleDict({name: nn.Linear(dim, config.num_labels) for name in config.modalities})
            if config.aux_loss_weight > 0
            else None
        )
        self._layouts: dict[str, EncoderLayout] = {}
        self._input_limits: dict[str, InputLimits] = {}
        first = next(iter(config.modalities))
        self.main_input_name = f"{first}_{config.modalities[first].batch_fields[0][0]}"
        self.post_init()
        self.apply_trainable_layers()

    # ------------------------------------------------------------------ construction and loading
    @classmethod
    def from_encoders(
        cls,
        encoders: Mapping[str, str | dict[str, Any]],
        *,
        trainable_layers: int | str | Mapping[str, int | str] | None = None,
        encoder_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> FusionModel:
        """Load one pretrained encoder per modality and add new pooling, projection, fusion and head layers.

        Args:
            encoders: modality name -> Hub id / local folder, or a spec dict (``path``, ``kind``, ``pooling``,
                ``layer``, ``trainable_layers``, ``learning_rate``, ``train_feature_encoder``; ``kind:
                features`` with ``input_dim``/``hidden_sizes`` for dense vectors, no path needed; ``module``
                for your own network, see ``module_encoder.py``).
            trainable_layers: one value for every encoder, or name -> value (overrides the spec):
                ``0`` frozen, ``k`` top k blocks, ``"all"`` (default).
            encoder_kwargs: passed to every encoder's ``from_pretrained`` (``attn_implementation``,
                ``dtype``, ``revision``, ``token``...).
            config_kwargs: [`FusionConfig`] fields (``fusion``, ``num_labels``, ``projection_dim``...).

        Every pretrained weight is kept bit-for-bit; only the new layers are initialised.
        """
        specs: dict[str, dict[str, Any] | ModalitySpec] = {}
        models: dict[str, nn.Module] = {}
        for name, spec in encoders.items():
            spec = {"path": spec} if isinstance(spec, str) else dict(spec)
            if isinstance(trainable_layers, Mapping):
                if name in trainable_layers:
                    spec["trainable_layers"] = trainable_layers[name]
            elif trainable_layers is not None:
                spec["trainable_layers"] = trainable_layers
            if spec.get("module") is not None:  # your own network: weights loaded here, into the full network
                instance = spec["module"] if isinstance(spec["module"], nn.Module) else None
                spec = ModalitySpec.from_dict(name, spec)
                models[name] = build_module_encoder(name, spec, instance, load_weights=True)
            elif spec.get("kind") != "features" and spec.get("config") is None:
                if not spec.get("path"):
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                models[name], spec["kind"] = load_encoder(
                    name, str(spec["path"]), spec.get("kind"), **(encoder_kwargs or {})
                )
                spec["config"] = models[name].config
            specs[name] = spec
        unknown_modalities = (
            set(trainable_layers) - set(encoders) if isinstance(trainable_layers, Mapping) else ()
        )
        if unknown_modalities:
            raise ValueError(f"`trainable_layers` names unknown modalities {sorted(unknown_modalities)}")
        return cls(FusionConfig(modalities=specs, **config_kwargs), encoders=models)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """Load a saved fusion model; the saved ``trainable_layers`` are re-applied (transformers' loader makes
        every parameter trainable). Networks given as instances to ``from_encoders`` are passed back with
        ``encoders={name: network}`` (import-path ones are rebuilt from the config)."""
        model, info = super().from_pretrained(*args, **{**kwargs, "output_loading_info": True})
        model._finish_module_encoders(info)
        dtype = kwargs.get("dtype")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        if isinstance(dtype, torch.dtype) and any(p.dtype != dtype for p in model.parameters()):
            # Weights that went through transformers' key renaming (ViT's legacy names) keep the file's dtype.
            model.to(dtype)
        model.apply_trainable_layers()
        return (model, info) if kwargs.get("output_loading_info") else model

    def _finish_module_encoders(self, info: dict[str, Any]) -> None:
        """Every weight of a module encoder comes from the checkpoint (a network passed back with ``encoders=``
        that does not match is an error, not a silently re-initialised encoder); non-persistent buffers get back
        the values the network computed at construction."""
        for name, encoder in self.encoders.items():
            if not isinstance(encoder, ModuleEncoder):
                continue
            prefix = f"encoders.{name}."
            missing = sorted(k for k in info.get("missing_keys", ()) if k.startswith(prefix))
            unexpected = sorted(k for k in info.get("unexpected_keys", ()) if k.startswith(prefix))
            if missing or unexpected:
                raise ValueError(
                    f"modality '{name}': the module does not match the saved one: missing keys {missing[:10]}, "
                    f"unexpected keys {unexpected[:10]}"
                )
            encoder.restore_non_persistent_buffers()
            with torch.no_grad():  # own memory: tensors left in the mmapped file are misaligned, and some CPU
                for tensor in (
                    *encoder.parameters(),
                    *encoder.buffers(),
                ):  # kernels (LSTM) then round differently
                    tensor.data = tensor.data.clone()

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload to the Hub repo ``repo_id``. With the package installed: weights, config, code, the processor
        (``processor=``) and a model card in one commit (``multimodal_fusion.hub.push_model_to_hub``, which the
        package root sets as ``hub_uploader``). Loaded as remote code without the package: transformers' own
        ``push_to_hub`` (weights, config, code)."""
        uploader = type(self).hub_uploader
        if uploader is None:
            return super().push_to_hub(repo_id, **kwargs)
        return uploader(self, repo_id, **kwargs)

    def _set_gradient_checkpointing(self, enable: bool = True, *args: Any, **kwargs: Any) -> None:
        timm_encoders = [e.timm_model for e in self.encoders.values() if hasattr(e, "timm_model")]
        for timm_model in timm_encoders:
            timm_model.set_grad_checkpointing(enable)
        try:
            super()._set_gradient_checkpointing(enable, *args, **kwargs)
        except ValueError:
            if not timm_encoders:
                raise

    def _limits(self, name: str) -> InputLimits:
        """Modality ``name``'s value limits (vocabulary, positions, receptive field), read once from its encoder."""
        if name not in self._input_limits:
            spec = self.config.modalities[name]
            self._input_limits[name] = input_limits(spec.kind, self.encoders[name], spec.config)
        return self._input_limits[name]

    def _prepare(self, inputs: dict[str, Any], labels: torch.Tensor | None):
        """Split and validate the batch (see ``batch_inputs``): ``(fields per modality, B, masks [B, M])``."""
        batch = split_inputs(self.config, inputs)
        batch_size = batch_size_of(self.config, batch, labels)
        device = self.classifier.weight.device
        for name, fields in batch.items():
            check_fields(self.config, name, fields, self.pooled_dims[name], self._limits(name))
        masks = torch.stack(
            [presence(name, batch[name], batch_size, device) for name in self.config.modalities], dim=1
        )
        return batch, batch_size, masks

    def get_modality_embeddings(self, **inputs: Any) -> dict[str, torch.Tensor]:
        """Pooled encoder output per modality in the batch, ``name -> [B, pooled_dim]`` (before projection;
        what ``{name}_embeds`` takes). Rows whose ``{name}_mask`` is False are zeros."""
        batch, batch_size, masks = self._prepare(inputs, None)
        result = {}
        for i, name in enumerate(self.config.modalities):
            if not set(batch[name]) - {"mask"}:
                continue
            pooled = self._pooled(name, batch[name], masks[:, i])
            full = torch.zeros(batch_size, self.pooled_dims[name], device=masks.device)
            if pooled is not None:
                full = full.to(pooled.dtype).index_copy(0, masks[:, i].nonzero().squeeze(1), pooled)
            result[name] = full
        return result

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        aux_loss_weight: float | None = None,
        **inputs: Any,
    ) -> FusionModelOutput | tuple:
        r"""Encode, pool and project every modality in the batch, fuse them and classify; with ``labels`` also the
        loss. ``B`` is the batch size, ``M`` the number of modalities; every modality field is optional.

        Args:
            labels (`torch.Tensor`, *optional*): ``[B]`` class indices (single-label), ``[B, num_labels]`` floats
                (multi-label, 0/1) or ``[B]`` / ``[B, num_labels]`` floats (regression, ``num_labels == 1`` or
                ``problem_type="regression"``).
            return_dict (`bool`, *optional*): ``False`` returns a tuple instead of a [`FusionModelOutput`].
            aux_loss_weight (`float`, *optional*): overrides ``config.aux_loss_weight`` for this call (the
                trainer's schedule uses it).
            **inputs: ``{name}_{field}`` tensors per modality ``name`` (see ``configuration_fusion.KIND_FIELDS``):

                - image: ``{name}_pixel_values`` ``[B, C, H, W]`` float.
                - audio: ``{name}_input_values`` ``[B, samples]`` float (mono, at the feature extractor's rate),
                  ``{name}_attention_mask`` ``[B, samples]``.
                - text: ``{name}_input_ids`` ``[B, T]`` int, ``{name}_attention_mask`` / ``{name}_token_type_ids``
                  / ``{name}_position_ids`` ``[B, T]``.
                - features: ``{name}_values`` ``[B, input_dim]`` float.
                - any kind: ``{name}_embeds`` ``[B, pooled_dim]`` (a precomputed pooled vector, e.g. from the
                  embedding cache; skips the encoder) and ``{name}_mask`` ``[B]`` bool (False = the sample lacks
                  this modality). A modality absent from the batch is missing for every sample.

        Returns:
            [`FusionModelOutput`] (or its tuple): ``loss`` (with ``labels``), ``logits`` ``[B, num_labels]``,
            ``fused_embedding`` ``[B, fusion_hidden_size]``, ``modality_embeddings`` name -> ``[B,
            projection_dim]``, ``aux_logits``, ``modality_weights`` ``[B, M]`` (or ``None``), ``aux_losses``,
            ``modality_mask`` ``[B, M]``.

        Raises:
            ValueError: naming the modality and the field: a key of no modality, a field its kind does not take,
                missing required fields, both ``{name}_embeds`` and encoder inputs, a wrong shape or dtype,
                NaN/inf in any float field, token ids beyond the vocabulary or position table, an audio clip
                shorter than the encoder's receptive field (see ``input_validation``), a mask marking samples
                present without input, or batch sizes that differ between fields (see ``batch_inputs``); a bad
                label (naming row, column and value, see ``label_validation``).
        """
        if labels is not None:  # before any encoder runs
            check_labels(labels, problem_type_for(self.config, labels), self.config.num_labels)
        batch, batch_size, masks = self._prepare(inputs, labels)
        if self.training and self.config.modality_dropout > 0:
            masks = drop_modalities(masks, self.config.modality_dropout)
        projected = self._project(batch, masks, batch_size)
        dtype = functools.reduce(torch.promote_types, [v.dtype for v in projected.values()])
        embeddings = torch.stack([projected[name].to(dtype) for name in self.config.modalities], dim=1)
        fused = self.fusion(embeddings, masks)
        logits = self.classifier(self.head_dropout(fused.fused))
        aux_logits = (
            {name: head(projected[name]) for name, head in self.aux_heads.items()}
            if self.aux_heads is not None
            else None
        )
        loss, aux_losses = None, None
        if labels is not None:
            aux_weight = self.config.aux_loss_weight if aux_loss_weight is None else aux_loss_weight
            loss, aux_losses = fusion_loss(self.config, logits, aux_logits, labels, masks, aux_weight)
        output = FusionModelOutput(
            loss=loss,
            logits=logits,
            fused_embedding=fused.fused,
            modality_embeddings=projected,
            aux_logits=aux_logits,
            modality_weights=fused.weights,
            aux_losses=aux_losses,
            modality_mask=masks,
        )
        return output if return_dict is not False else output.to_tuple()
