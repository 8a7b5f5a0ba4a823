"""Image encoder families: ViT-style class-token encoders, encoders whose own pooled output is the image
embedding (Swin, ConvNeXt, CLIP / SigLIP vision...), timm models through transformers' timm wrapper, and the
generic fallback for any other vision architecture, which probes what the built encoder returns.

Adding a family is one class here plus ``@register_adapter`` and its place in ``encoder_adapters.ADAPTER_ORDER``.
This file is copied next to the weights for ``trust_remote_code`` loading: it imports only torch, transformers,
timm (inside functions) and sibling files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import AutoModel, PretrainedConfig

from .adapter_base import EncoderAdapter, _accepts, last_width, main_input_kind, register_adapter
from .encoder_layout import EncoderLayout


@register_adapter("vision_cls")
class VisionAdapter(EncoderAdapter):
    """ViT-family encoders with a class token (ViT, DeiT, BEiT, DINOv2...): ``cls`` pooling. Passes
    ``interpolate_pos_encoding`` when the spec asks or when the image size differs from the checkpoint's."""

    kind = "image"
    model_types = ("vit", "deit", "beit", "dinov2", "dinov2_with_registers", "vit_mae", "data2vec-vision")
    input_fields = ("pixel_values",)
    optional_fields = ()
    inactive_weights = ("embeddings.mask_token",)

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        value = fields.get("pixel_values")
        channels = getattr(self.config, "num_channels", None) or 3
        if value is not None and (value.dim() != 4 or value.shape[1] != channels):
            raise ValueError(
                f"modality '{name}' ({self.kind}): field '{name}_pixel_values' must be "
                f"[batch, {channels}, height, width], got shape {tuple(value.shape)}"
            )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        kwargs = super().forward_kwargs(encoder, fields)
        if _accepts(encoder, "interpolate_pos_encoding"):
            interpolate = self.spec.interpolate_pos_encoding if self.spec is not None else None
            if interpolate is None:
                size = getattr(self.config, "image_size", None)
                size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
                interpolate = size[0] is not None and tuple(fields["pixel_values"].shape[-2:]) != size
            kwargs["interpolate_pos_encoding"] = bool(interpolate)
        return kwargs

    # ------------------------------------------------------------------ frozen-prefix cache (ViTModel)
    prefix_model_classes: tuple[str, ...] = ("ViTModel",)
    """Encoder classes whose block stack the ``prefix_*`` hooks enter: patch + position embeddings (CLS token
    included), then ``layers``, ``layernorm``, ``pooler``."""

    def prefix_blocks(self, encoder: nn.Module) -> nn.ModuleList | None:
        return encoder.layers if type(encoder).__name__ in self.prefix_model_classes else None

    def prefix_modules(self, encoder: nn.Module) -> list[nn.Module]:
        return [encoder.embeddings]

    def prefix_embed(self, encoder: nn.Module, fields: dict[str, torch.Tensor]):
        pixel_values = fields["pixel_values"].to(encoder.embeddings.patch_embeddings.projection.weight.dtype)
        hidden = encoder.embeddings(pixel_values)
        token_mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return hidden, self.prefix_block_mask(encoder, hidden, None), token_mask

    def prefix_finish(self, encoder: nn.Module, hidden: torch.Tensor):
        return super().prefix_finish(encoder, encoder.layernorm(hidden))


@register_adapter("vision_pooled")
class PooledVisionAdapter(VisionAdapter):
    """Vision encoders whose own pooled output is the image embedding: Swin / ConvNeXt / ResNet /
    EfficientNet / MobileViT (average pool), CLIP and Chinese-CLIP vision (post-norm CLS), SigLIP vision
    (MAP head), ALIGN vision."""

    model_types = (
        "swin",
        "swinv2",
        "convnext",
        "convnextv2",
        "resnet",
        "efficientnet",
        "mobilevit",
        "mobilevitv2",
        "mobilenet_v2",
        "clip_vision_model",
        "chinese_clip_vision_model",
        "siglip_vision_model",
        "siglip2_vision_model",
        "align_vision_model",
        "dinat",
        "poolformer",
    )
    default_pooling = "pooler"
    pooler_prefixes = ("pooler.", "head.")

    def output_dim(self, encoder: nn.Module) -> int:
        """The width of the module that makes the pooled output (its last norm / conv / linear layer); config
        fields differ per family (``hidden_sizes[-1]``, ``hidden_dim``, ``neck_hidden_sizes[-1]``...)."""
        return last_width(encoder)


@register_adapter("clip_vision")
class ClipVisionAdapter(PooledVisionAdapter):
    """CLIP / Chinese-CLIP vision: ``pooler_output = post_layernorm(CLS)``, so ``post_layernorm`` belongs to
    the pooling head (``last_hidden_state`` is taken before it)."""

    model_types = ("clip_vision_model", "chinese_clip_vision_model")
    pooler_prefixes = ("post_layernorm.",)


@register_adapter("naflex_vision")
class NaFlexVisionAdapter(PooledVisionAdapter):
    """SigLIP2 (NaFlex) vision: the image processor patchifies each image at its own aspect ratio into at most
    ``max_num_patches`` patches, so the batch fields are ``pixel_values`` ``[B, P, C * patch^2]``,
    ``pixel_attention_mask`` ``[B, P]`` (1 = a real patch) and ``spatial_shapes`` ``[B, 2]`` (the patch grid).
    The token mask is ``pixel_attention_mask``; the MAP head (``pooler_output``, masked the same way) is the
    image embedding."""

    model_types = ("siglip2_vision_model",)
    input_fields = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
    pooler_prefixes = ("head.",)

    def check_fields(self, name: str, fields: dict[str, torch.Tensor]) -> None:
        """``pixel_values`` ``[B, P, C * patch^2]``, ``pixel_attention_mask`` ``[B, P]``, ``spatial_shapes``
        ``[B, 2]`` (each grid at most ``P`` patches). Raises ``ValueError`` naming the field."""
        value, mask, shapes = (fields.get(f) for f in self.input_fields)
        patch = self.config.num_channels * self.config.patch_size**2

        def fail(field: str, expected: str, tensor: torch.Tensor) -> None:
            raise ValueError(
                f"modality '{name}' ({self.kind}): field '{name}_{field}' must be {expected}, got shape "
                f"{tuple(tensor.shape)}"
            )

        if value is not None and (value.dim() != 3 or value.shape[2] != patch):
            fail(
                "pixel_values",
                f"[batch, patches, {patch}] (patchified by the SigLIP2 image processor)",
                value,
            )
        if mask is not None and (mask.dim() != 2 or value is not None and mask.shape != value.shape[:2]):
            fail("pixel_attention_mask", "[batch, patches] (1 = a real patch), as 'pixel_values'", mask)
        if shapes is not None and (shapes.dim() != 2 or shapes.shape[1] != 2):
            fail("spatial_shapes", "[batch, 2] (each image's patch grid, height x width)", shapes)
        if value is not None and shapes is not None and bool((shapes.prod(-1) > value.shape[1]).any()):
            rows = (shapes.prod(-1) > value.shape[1]).nonzero().squeeze(1).tolist()
            raise ValueError(
                f"modality '{name}' ({self.kind}): rows {rows} of '{name}_spatial_shapes' hold more patches than "
                f"'{name}_pixel_values' has ({value.shape[1]})"
            )

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {field: fields[field] for field in self.input_fields}

    def token_mask(
        self, encoder: nn.Module, fields: dict[str, torch.Tensor], hidden: torch.Tensor
    ) -> torch.Tensor | None:
        return fields["pixel_attention_mask"].bool()


@register_adapter("convnext")
class ConvNextAdapter(PooledVisionAdapter):
    """ConvNeXt(V2): ``pooler_output = layernorm(mean over H x W)``; the final ``layernorm`` is the head."""

    model_types = ("convnext", "convnextv2")
    pooler_prefixes = ("layernorm.",)


@register_adapter("mobilevit")
class MobileViTAdapter(PooledVisionAdapter):
    """MobileViT: stages of different types in ``encoder.layer``; the 1x1 expansion conv sets the width."""

    model_types = ("mobilevit", "mobilevitv2")
    block_path = "encoder.layer"


def _timm_groups(timm_model: nn.Module, prefix: str) -> tuple[list[str], list[list[str]], list[str]]:
    from timm.models._manipulate import group_with_matcher

    matcher = timm_model.group_matcher(coarse=True)
    groups = group_with_matcher(timm_model.named_parameters(), matcher)
    patterns = matcher["blocks"]
    patterns = [patterns] if isinstance(patterns, str) else [p for p, ordinal in patterns if ordinal is None]
    embeddings, blocks, final = [], [], []
    for ordinal in sorted(groups):
        names = [prefix + n for n in groups[ordinal]]
        is_block = any(re.match(p, n) for p in patterns for n in groups[ordinal])
        if is_block:
            blocks.append(names)
        elif blocks:
            final.extend(names)
        else:
            embeddings.extend(names)
    return embeddings, blocks, final


def timm_processor(config: Any) -> Any:
    """transformers' timm image processor from the checkpoint's ``pretrained_cfg``, or timm's default one for the
    architecture when the checkpoint has none (a wrapper saved from scratch). ``config``: a timm wrapper config or
    a timm-format ``config.json`` read as attributes (``architecture``, ``pretrained_cfg``)."""
    import timm
    from transformers import TimmWrapperImageProcessor

    pretrained_cfg = getattr(config, "pretrained_cfg", None)
    if not pretrained_cfg:
        pretrained_cfg = timm.models.get_pretrained_cfg(config.architecture).to_dict()
    return TimmWrapperImageProcessor(pretrained_cfg=dict(pretrained_cfg), architecture=config.architecture)


@register_adapter("timm")
class TimmAdapter(VisionAdapter):
    """timm models through transformers' ``TimmWrapperModel``: timm's coarse parameter groups are the blocks,
    the global pool + head norm is ``pooler``; checkpointing through ``set_grad_checkpointing``. The image
    processor is built from the checkpoint's ``pretrained_cfg``; ``layer`` is not supported."""

    model_types = ("timm_wrapper",)
    default_pooling = "pooler"
    supports_layer = False

    def model_class(self) -> type[nn.Module]:
        return AutoModel

    def build(self) -> nn.Module:
        return AutoModel.from_config(self.config)

    def load(self, name: str, path: str, source: PretrainedConfig, pooling: str | None, **kwargs: Any):
        if isinstance(getattr(self.config, "model_args", None), dict):
            self.config.model_args.pop(
                "num_classes", None
            )  # timm's save_for_hf writes it; the wrapper passes its own
        return AutoModel.from_pretrained(path, config=self.config, **kwargs)

    def load_processor(self, path: str, **kwargs: Any) -> Any:
        return timm_processor(self.config)

    def layout(self, name: str, encoder: nn.Module, spec: Any) -> EncoderLayout:
        layout = EncoderLayout()
        layout.embeddings, layout.blocks, layout.final = _timm_groups(encoder.timm_model, "timm_model.")
        head = [n for n in layout.final if n.startswith(("timm_model.head", "timm_model.fc_norm"))]
        if spec.pooling == "pooler":
            layout.pooler = head
        else:
            layout.unused += head
        layout.final = [n for n in layout.final if n not in head]
        return layout

    def output_dim(self, encoder: nn.Module) -> int:
        return int(encoder.timm_model.num_features)

    def forward_kwargs(self, encoder: nn.Module, fields: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"pixel_values": fields["pixel_values"]}

    def supports_checkpointing(self, encoder: nn.Module) -> bool:
        return hasattr(encoder.timm_model, "set_grad_checkpointing")

    def set_checkpointing(
        self, encoder: nn.Module, enable: bool, function: Any, every_n_layers: int = 1
    ) -> bool:
        encoder.timm_model.set_grad_checkpointing(enable)
        return True


@dataclass
class ProbedOutput:
    """What one probe forward of an encoder returned: whether it has its own pooled output, and the widths of
    that pooled output and of its hidden states / feature map."""

    has_pooler: bool
    pooler_dim: int | None
    hidden_dim: int


@register_adapter("vision_probed")
class ProbedVisionAdapter(VisionAdapter):
    """Any other vision encoder (PVTv2, RegNet, Hiera, FocalNet...): no family guess. One forward of the built
    encoder on a zero image (``num_channels`` x ``image_size``, 224 when the config has none) decides the
    default pooling: the encoder's own pooled output when it returns one (``pooler_output`` not None), else
    ``mean`` over its tokens / flattened feature map. The pooled width is the probed one; both are recorded in
    the modality spec (``pooling``, ``output_dim``) when the model is built, so a saved model never probes."""

    default_pooling = None  # decided by the probe (``settle_spec``)

    @classmethod
    def matches(cls, config: PretrainedConfig | None, kind: str | None = None, spec: Any = None) -> bool:
        if config is None or kind not in (None, cls.kind):
            return False
        return kind == cls.kind or main_input_kind(config) == cls.kind

    def probe(self, encoder: nn.Module) -> ProbedOutput:
        """Run ``encoder`` once (eval mode, no gradients) on one zero image; cached per adapter.

        Raises:
            RuntimeError: from the encoder, when it cannot run on an image of the config's size.
        """
        if getattr(self, "_probed", None) is None:
            size = getattr(self.config, "image_size", None) or 224
            height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
            param = next(encoder.parameters(), None)
            pixels = torch.zeros(
                1, getattr(self.config, "num_channels", None) or 3, height, width,
                device=param.device if param is not None else None,
                dtype=param.dtype if param is not None else None,
            )  # fmt: skip
            was_training = encoder.training
            encoder.eval()
            try:
                with torch.no_grad():
                    output = self.encode(encoder, {"pixel_values": pixels}, None)
            finally:
                encoder.train(was_training)
            pooled = output.pooler_output
            has_pooler = pooled is not None and pooled.shape[0] == 1
            self._probed = ProbedOutput(
                has_pooler,
                int(pooled.flatten(1).shape[1]) if has_pooler else None,
                int(output.hidden.shape[-1]),
            )
        return self._probed

    def loaded_pooling(self, encoder: nn.Module, pooling: str | None) -> str | None:
        return pooling or ("pooler" if self.probe(encoder).has_pooler else "mean")

    def settle_spec(self, name: str, encoder: nn.Module, spec: Any) -> None:
        if spec.pooling is None:
            spec.pooling = self.loaded_pooling(encoder, None)
        if spec.output_dim is None:
            probed = self.probe(encoder)
            spec.output_dim = probed.pooler_dim if spec.pooling == "pooler" else probed.hidden_dim
        self.spec = spec

    def output_dim(self, encoder: nn.Module) -> int:
        """The probed width (recorded in the spec as ``output_dim``); the last norm / conv / linear layer's width
        when the encoder cannot run (meta device)."""
        if self.spec is not None and self.spec.output_dim:
            return int(self.spec.output_dim)
        try:
            probed = self.probe(encoder)
        except (RuntimeError, NotImplementedError, ValueError):
            return last_width(encoder)
        pooling = self.spec.pooling if self.spec is not None else None
        return probed.pooler_dim if pooling == "pooler" else probed.hidden_dim
