"""FusionModel: pretrained encoders (one per named modality) -> pooling -> projection -> fusion -> head.

``save_pretrained`` copies this file and its sibling imports next to the weights, so the checkpoint loads
with ``AutoModel.from_pretrained(dir, trust_remote_code=True)`` where this package is not installed. Keep
imports to torch, transformers, timm and flat relative imports of this folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .batch_inputs import batch_size_of, check_fields, drop_modalities, presence, split_inputs
from .block_checkpointing import BlockCheckpointingMixin
from .configuration_fusion import FusionConfig, ModalitySpec, encoder_kind, encoder_tower_config
from .encoder_adapters import EncoderAdapter, adapter_class_for, adapter_for
from .encoder_layout import EncoderLayout
from .fusions import FUSION_REGISTRY, is_token_level
from .input_validation import InputLimits
from .label_validation import IGNORE_INDEX, check_labels
from .load_report import expected_missing_keys
from .modality_encoding import ModalityEncoding
from .modality_kinds import get_kind, kind_class_path, reads_encoder
from .model_freezing import EncoderFreezingMixin
from .module_encoder import build_module_encoder, finish_module_encoders
from .pooling_layers import POOLING_REGISTRY
from .token_sequences import scatter_rows

logger = logging.get_logger(__name__)


@dataclass
class FusionModelOutput(ModelOutput):
    """Output of [`FusionModel`].

    Args:
        loss: main loss plus ``aux_loss_weight`` x mean auxiliary loss, when ``labels`` are given (normalised by
            ``num_items_in_batch`` when given, see [`FusionModel.forward`]).
        logits: ``[B, num_labels]``.
        fused_embedding: ``[B, fusion_hidden_size]``, the fusion module's output (input of the head).
        modality_embeddings: name -> ``[B, projection_dim]`` projected vectors as fed to the fusion; a sample
            whose modality is missing holds that modality's learned placeholder. Token-level fusions: the mean
            of the modality's projected tokens (zeros where it is missing: no placeholder, no token).
        aux_logits: name -> ``[B, num_labels]`` from the per-modality heads (``None`` without aux heads).
        modality_weights: ``[B, M]`` in config order for fusions that weigh modalities, else ``None``.
        aux_losses: name -> this batch's mean auxiliary loss of that modality over the samples where it is present.
        modality_mask: ``[B, M]`` bool, which modalities each sample had (after modality dropout).
        attentions: token-level fusions with ``output_attentions=True``: their attention maps (see the fusion).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    fused_embedding: torch.Tensor | None = None
    modality_embeddings: dict[str, torch.Tensor] | None = None
    aux_logits: dict[str, torch.Tensor] | None = None
    modality_weights: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] | None = None
    modality_mask: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def problem_type_for(config: FusionConfig, labels: torch.Tensor) -> str:
    """transformers' rule: ``num_labels == 1`` -> regression, integer labels -> single-label, else multi-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def summed_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum of the per-item losses, number of items)`` in float32; an item is one label entry that is not -100.

    Single-label: one item per sample (cross-entropy). Multi-label: one item per (sample, class) entry of the
    multi-hot ``[B, C]`` labels (binary cross-entropy). Regression: one item per target value (squared error).
    This is the count transformers' ``Trainer`` takes for ``num_items_in_batch`` (``labels.ne(-100).sum()``).
    """
    logits = logits.float()
    if problem_type == "single_label_classification":
        labels = labels.reshape(-1).long()
        total = nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels, reduction="sum")
        return total, labels.ne(IGNORE_INDEX).sum()
    labels = labels.float()
    if problem_type == "regression" and logits.shape[-1] == 1:
        logits, labels = logits.squeeze(-1), labels.reshape(-1)
    labelled = labels.ne(IGNORE_INDEX)
    if problem_type == "regression":
        per_item = nn.functional.mse_loss(logits, labels, reduction="none")
    else:
        per_item = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    return torch.where(labelled, per_item, torch.zeros_like(per_item)).sum(), labelled.sum()


def classification_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    problem_type: str,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Cross-entropy, BCE-with-logits or MSE in float32: the sum over items (see [`summed_loss`]) divided by
    ``num_items_in_batch`` (the items of the whole accumulation window, all ranks) or, without it, by this
    batch's items (the mean; 0 when every label is -100)."""
    total, count = summed_loss(logits, labels, problem_type)
    return total / (count.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)


def fusion_loss(
    config: FusionConfig,
    logits: torch.Tensor,
    aux_logits: dict[str, torch.Tensor] | None,
    labels: torch.Tensor,
    masks: torch.Tensor,
    aux_weight: float,
    num_items_in_batch: torch.Tensor | int | None = None,
    aux_num_items_in_batch: Mapping[str, torch.Tensor | int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Main loss plus ``aux_weight`` x the mean over modalities of the per-modality auxiliary losses, each over the
    samples where that modality is present (``masks`` ``[B, M]``). Each loss is a sum over items divided by its
    window count (``num_items_in_batch`` / ``aux_num_items_in_batch``, see ``FusionModel.forward``) or, without,
    by this batch's count. Returns ``(loss, this batch's mean aux loss by modality, or None)``."""
    problem_type = problem_type_for(config, labels)
    total, count = summed_loss(logits, labels, problem_type)
    loss = total / (count.clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    if aux_logits is None or aux_weight <= 0:
        return loss, None
    aux_losses, terms, modalities = {}, [], 0
    for i, name in enumerate(config.modalities):
        present = masks[:, i]
        aux_total, aux_count = summed_loss(aux_logits[name][present], labels[present], problem_type)
        if aux_num_items_in_batch is not None:
            denominator = aux_num_items_in_batch[name]
        elif num_items_in_batch is not None:
            denominator = num_items_in_batch * aux_count / count.clamp(min=1)
        else:
            denominator = aux_count
        if bool(aux_count > 0):
            aux_losses[name] = aux_total.detach() / aux_count  # this batch's mean, for logging
            terms.append(aux_total / denominator)
        modalities += int(bool(denominator > 0))
    if terms:
        loss = loss + aux_weight * torch.stack(terms).sum() / modalities
    return loss, aux_losses or None


def load_encoder(
    name: str, path: str, kind: str | None = None, pooling: str | None = None, **kwargs: Any
) -> tuple[PreTrainedModel, str]:
    """Load the encoder of modality ``name`` from a Hub id or folder, as its family's adapter says.

    timm checkpoints load through transformers' timm wrapper; a dual-encoder checkpoint (CLIP, SigLIP, CLAP,
    ALIGN, Chinese-CLIP) loads only the tower matching ``kind``; an encoder-decoder checkpoint (T5, BART,
    Whisper) only its encoder. Returns ``(model, kind)``.

    Raises:
        ValueError: naming the modality and the keys, when a weight on the forward path (of ``pooling``) is
            missing from the checkpoint (it would be random).
    """
    hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
    try:
        config = AutoConfig.from_pretrained(path, **hub_kwargs)
    except OSError as error:
        raise OSError(f"modality '{name}': cannot load the encoder config from '{path}': {error}") from error
    except ValueError as error:
        raise ValueError(f"modality '{name}': '{path}' is not a usable encoder: {error}") from error
    kind = encoder_kind(name, kind, config)
    tower = encoder_tower_config(kind, config)
    adapter = adapter_class_for(tower, kind)(tower)
    pooling = pooling or adapter.default_pooling
    # a pooler the modality never runs may be absent from the checkpoint: no LOAD REPORT for that alone
    with expected_missing_keys() if pooling != "pooler" else contextlib.nullcontext():
        model = adapter.load(name, path, config, pooling, **kwargs)
    return model, kind


def _spec_dict(name: str, entry: Any) -> dict[str, Any]:
    """A ``from_encoders`` entry as a plain spec dict: a path, a dict, or a ``ModalitySpec`` (its fields).

    Raises:
        ValueError: naming the modality, for anything else.
    """
    if isinstance(entry, ModalitySpec):
        return entry.to_dict(serializable=False)
    if isinstance(entry, (str, os.PathLike)):
        return {"path": os.fspath(entry)}
    if not isinstance(entry, Mapping):
        raise ValueError(
            f"modality '{name}': expected a Hub id / folder path or a spec dict, got {type(entry).__name__} {entry!r}"
        )
    return dict(entry)


def _build_encoder(
    name: str, spec: ModalitySpec, adapter: EncoderAdapter, given: nn.Module | None
) -> nn.Module:
    """Modality ``name``'s encoder: your own network (built, or passed back), the one ``from_encoders`` loaded
    (given its spec's config object), or built from the config; adjusted by its family adapter, which also fills
    what the spec leaves to the built encoder (e.g. the probed default pooling of a generic family)."""
    encoder = given
    if spec.network is not None:  # your own network: built, passed back (or built by from_encoders)
        encoder = build_module_encoder(name, spec, encoder)
    elif encoder is None:
        encoder = adapter.build()
    elif spec.config is not None:
        spec.config._attn_implementation_internal = encoder.config._attn_implementation
        encoder.config = spec.config
    adapter.attach(encoder)
    adapter.settle_spec(name, encoder, spec)
    return encoder


ALIGNMENT_BYTES = 64
"""Alignment of a fresh CPU allocation in torch: what CPU kernels are tuned for."""


def _own_aligned_memory(model: nn.Module) -> None:
    """Give every CPU parameter and buffer that sits at an unaligned address (a tensor memory-mapped from its
    offset in the safetensors file) its own aligned copy. CPU kernels pick their code path by alignment, so a
    reloaded model computed logits that differed from the saved model's in the last bits (4.8e-7 measured); with
    aligned weights it computes exactly what the saved model computed. Shared (tied) tensors stay shared."""
    copies: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for tensor in table.values():
                if tensor is None or tensor.device.type != "cpu" or tensor.data_ptr() % ALIGNMENT_BYTES == 0:
                    continue
                if id(tensor) not in copies:
                    copies[id(tensor)] = tensor.data.clone()
                    tensor.data = copies[id(tensor)]


class FusionPreTrainedModel(PreTrainedModel):
    config_class = FusionConfig
    base_model_prefix = "fusion"
    main_input_name = "image_pixel_values"
    """The first modality's main batch field (``{name}_{field}``, set per instance from the config; this class
    value fits the default config). transformers' Trainer reads it to count input tokens and FLOPs."""
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    accepts_loss_kwargs = True  # forward normalises by `num_items_in_batch` (exact gradient accumulation)
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

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        """Load a saved fusion model; the saved ``trainable_layers`` are re-applied (transformers' loader makes
        every parameter trainable). Networks given as instances to ``from_encoders`` are passed back with
        ``encoders={name: network}`` (import-path ones are rebuilt from the config)."""
        model, info = super().from_pretrained(*args, **{**kwargs, "output_loading_info": True})
        finish_module_encoders(model.encoders, info)
        dtype = kwargs.get("dtype")
        dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
        if isinstance(dtype, torch.dtype) and any(p.dtype != dtype for p in model.parameters()):
            # Weights that went through transformers' key renaming (ViT's legacy names) keep the file's dtype.
            model.to(dtype)
        _own_aligned_memory(model)
        model.apply_trainable_layers()
        return (model, info) if kwargs.get("output_loading_info") else model

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """transformers' ``save_pretrained``, plus the ``fused-classification`` pipeline code that ``config.json``'s
        ``custom_pipelines`` names (so ``pipeline(model=folder, trust_remote_code=True)`` works)."""
        super().save_pretrained(save_directory, *args, **kwargs)
        pipeline_code = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_fusion.py")
        if os.path.isfile(pipeline_code):
            shutil.copyfile(pipeline_code, os.path.join(save_directory, "pipeline_fusion.py"))

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload to the Hub repo ``repo_id``. With the package installed: weights, config, code, the processor
        (``processor=``) and a model card in one commit (``multimodal_fusion.hub.upload.push_model_to_hub``, which the
        package root sets as ``hub_uploader``). Loaded as remote code without the package: transformers' own
        ``push_to_hub`` (weights, config, code)."""
        uploader = type(self).hub_uploader
        if uploader is None:
            return super().push_to_hub(repo_id, **kwargs)
        return uploader(self, repo_id, **kwargs)


class FusionModel(
    EncoderFreezingMixin,
    BlockCheckpointingMixin,
    FusionPreTrainedModel,
):
    """Pretrained encoders merged into one classifier/regressor. Build it with [`FusionModel.from_encoders`].

    Inputs are ``{name}_{field}`` tensors per modality (``image_pixel_values``, ``audio_input_values``,
    ``audio_attention_mask``, ``text_input_ids``, ``text_attention_mask``, ``sensors_values``...), optionally
    ``{name}_embeds`` (a precomputed pooled vector that skips the encoder), ``{name}_token_embeds`` /
    ``{name}_token_mask`` (a precomputed token sequence) and ``{name}_mask`` (bool per sample, False = modality
    missing). A modality absent from the batch is missing for every sample.
    """

    def __init__(self, config: FusionConfig, encoders: Mapping[str, nn.Module] | None = None):
        super().__init__(config)
        encoders = dict(encoders or {})
        unknown = set(encoders) - set(config.modalities)
        if unknown:
            raise ValueError(f"encoders given for unknown modalities {sorted(unknown)}")
        for spec in config.modalities.values():  # kinds from outside the package, in this code's own registry
            kind_class_path(spec.kind, spec.kind_class)  # (remote code may load the config from another copy)
        self.encoders = nn.ModuleDict()
        self.poolers = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.missing_embeddings = nn.ParameterDict()
        self.pooled_dims: dict[str, int] = {}
        self.adapters: dict[str, EncoderAdapter] = {}
        dim = config.projection_dim
        token_level = is_token_level(config.fusion)
        self.encodings = {name: ModalityEncoding(self, name) for name in config.modalities}
        """Modality name -> its [`ModalityEncoding`] (the pooled, token, cached and hidden-state paths)."""
        for name, spec in config.modalities.items():
            adapter = self.adapters[name] = adapter_for(spec)
            encoder = self.encoders[name] = _build_encoder(name, spec, adapter, encoders.get(name))
            try:
                pooled_dim = adapter.output_dim(encoder)
            except ValueError as error:
                raise ValueError(f"modality '{name}': {error}") from None
            self.pooled_dims[name] = pooled_dim
            if spec.pooling is not None and not token_level:
                self.poolers[name] = POOLING_REGISTRY[spec.pooling](pooled_dim)
            self.projections[name] = nn.Sequential(nn.Linear(pooled_dim, dim), nn.LayerNorm(dim))
            if not token_level:  # a token-level fusion gets no token for a missing modality
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
        self.main_input_name = f"{first}_{self.adapters[first].input_fields[0]}"
        self.post_init()
        self.apply_trainable_layers()

    def post_init(self) -> None:
        super().post_init()
        # Ties inside nested encoders (T5EncoderModel's shared / embed_tokens) are otherwise lost on reload.
        self.all_tied_weights_keys = self.get_expanded_tied_weights_keys(all_submodels=True)

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
        for name, entry in encoders.items():
            given = _spec_dict(
                name, entry
            )  # the user's dict, read here and validated by ModalitySpec.from_dict
            if isinstance(trainable_layers, Mapping):
                if name in trainable_layers:
                    given["trainable_layers"] = trainable_layers[name]
            elif trainable_layers is not None:
                given["trainable_layers"] = trainable_layers
            module = given.get("module")
            if module is None and isinstance(given.get("network"), Mapping):
                module = given["network"].get("module")
            if module is not None:  # your own network: weights loaded here, into the full network
                instance = module if isinstance(module, nn.Module) else None
                specs[name] = ModalitySpec.from_dict(name, given)
                models[name] = build_module_encoder(name, specs[name], instance, load_weights=True)
                continue
            if reads_encoder(given.get("kind")) and given.get("config") is None:
                if not given.get("path"):
                    raise ValueError(f"modality '{name}': spec needs a `path` (Hub id or folder)")
                models[name], given["kind"] = load_encoder(
                    name,
                    str(given["path"]),
                    given.get("kind"),
                    given.get("pooling"),
                    **(encoder_kwargs or {}),
                )
                given["config"] = models[name].config
            specs[name] = given
        unknown_modalities = (
            set(trainable_layers) - set(encoders) if isinstance(trainable_layers, Mapping) else ()
        )
        if unknown_modalities:
            raise ValueError(f"`trainable_layers` names unknown modalities {sorted(unknown_modalities)}")
        return cls(FusionConfig(modalities=specs, **config_kwargs), encoders=models)

    def _limits(self, name: str) -> InputLimits:
        """Modality ``name``'s value limits (vocabulary, positions, receptive field), read once from its encoder."""
        if name not in self._input_limits:
            spec = self.config.modalities[name]
            self._input_limits[name] = get_kind(spec.kind).input_limits(
                self.encoders[name], spec.config, self.adapters[name]
            )
        return self._input_limits[name]

    def _prepare(self, inputs: dict[str, Any], labels: torch.Tensor | None):
        """Split and validate the batch (see ``batch_inputs``): ``(fields per modality, B, masks [B, M])``."""
        batch = split_inputs(self.config, inputs, self.adapters)
        device = self.classifier.weight.device
        if torch.compiler.is_exporting():  # symbolic sizes, data-dependent value checks: none in a graph
            batch_size = next(v.shape[0] for fields in batch.values() for v in fields.values())
        else:
            batch_size = batch_size_of(self.config, batch, labels)
            for name, fields in batch.items():
                check_fields(
                    self.config, name, fields, self.pooled_dims[name], self.adapters[name], self._limits(name)
                )
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
            pooled = self.encodings[name].pooled(batch[name], masks[:, i])
            full = torch.zeros(batch_size, self.pooled_dims[name], device=masks.device)
            if pooled is not None:
                full = full.to(pooled.dtype).index_copy(0, masks[:, i].nonzero().squeeze(1), pooled)
            result[name] = full
        return result

    def get_modality_tokens(self, **inputs: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Token sequences per modality in the batch before projection, after ``max_tokens``:
        ``name -> (token_embeds [B, T, hidden], token_mask [B, T])`` (what ``{name}_token_embeds`` /
        ``{name}_token_mask`` take). Rows whose ``{name}_mask`` is False have no real token."""
        batch, batch_size, masks = self._prepare(inputs, None)
        result = {}
        for i, name in enumerate(self.config.modalities):
            if set(batch[name]) - {"mask"}:
                states = self.encodings[name].tokens(batch[name], masks[:, i])
                result[name] = scatter_rows(states, masks[:, i], batch_size, self.pooled_dims[name])
        return result

    def _fuse(
        self, batch: dict, batch_size: int, masks: torch.Tensor, output_attentions: bool
    ) -> tuple[Any, dict]:
        """Every modality into the fusion: ``(fusion output, name -> [B, projection_dim] projected vector)`` (a
        token-level fusion: projected token sequences in; the mean projected token out, zeros where missing)."""
        names = list(self.config.modalities)
        if is_token_level(self.config.fusion):
            parts = [
                self.encodings[n].projected_tokens(batch[n], masks[:, i], batch_size)
                for i, n in enumerate(names)
            ]
            dtype = functools.reduce(torch.promote_types, [tokens.dtype for tokens, _, _ in parts])
            tokens, token_masks = [t.to(dtype) for t, _, _ in parts], [m for _, m, _ in parts]
            fused = self.fusion(tokens, token_masks, masks, output_attentions=output_attentions)
            return fused, {name: mean for name, (_, _, mean) in zip(names, parts, strict=True)}
        projected = {
            n: self.encodings[n].projected(batch[n], masks[:, i], batch_size) for i, n in enumerate(names)
        }
        dtype = functools.reduce(torch.promote_types, [v.dtype for v in projected.values()])
        return self.fusion(torch.stack([projected[n].to(dtype) for n in names], dim=1), masks), projected

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        aux_loss_weight: float | None = None,
        output_attentions: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
        aux_num_items_in_batch: Mapping[str, torch.Tensor | int] | None = None,
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
            output_attentions (`bool`): token-level fusions also return ``attentions`` maps (no fused kernel).
            num_items_in_batch, aux_num_items_in_batch: window counts for exact accumulation ([`fusion_loss`]).
            **inputs: ``{name}_{field}`` tensors per modality ``name`` (each family's fields: ``encoder_adapters``):

                - image: ``{name}_pixel_values`` ``[B, C, H, W]`` float.
                - audio: ``{name}_input_values`` ``[B, samples]`` float (mono, at the feature extractor's rate),
                  ``{name}_attention_mask`` ``[B, samples]``.
                - text: ``{name}_input_ids`` ``[B, T]`` int, ``{name}_attention_mask`` / ``{name}_token_type_ids``
                  / ``{name}_position_ids`` ``[B, T]``.
                - features: ``{name}_values`` ``[B, input_dim]`` float.
                - any kind: ``{name}_embeds`` ``[B, pooled_dim]`` (a precomputed pooled vector, e.g. from the
                  embedding cache; skips the encoder), ``{name}_token_embeds`` ``[B, T, pooled_dim]`` with
                  ``{name}_token_mask`` ``[B, T]`` (precomputed tokens after ``max_tokens``) and ``{name}_mask`` ``[B]`` bool (False = the sample lacks
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
        fused, projected = self._fuse(batch, batch_size, masks, output_attentions)
        logits = self.classifier(self.head_dropout(fused.fused))
        aux_logits = {n: head(projected[n]) for n, head in self.aux_heads.items()} if self.aux_heads else None
        loss, aux_losses = None, None
        if labels is not None:
            weight, counts = aux_loss_weight, (num_items_in_batch, aux_num_items_in_batch)
            weight = self.config.aux_loss_weight if weight is None else weight
            loss, aux_losses = fusion_loss(self.config, logits, aux_logits, labels, masks, weight, *counts)
        output = FusionModelOutput(
            loss=loss,
            logits=logits,
            fused_embedding=fused.fused,
            modality_embeddings=projected,
            aux_logits=aux_logits,
            modality_weights=fused.weights,
            aux_losses=aux_losses,
            modality_mask=masks,
            attentions=getattr(fused, "attentions", None),
        )
        return output if return_dict is not False else output.to_tuple()
