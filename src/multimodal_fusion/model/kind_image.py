"""Kind ``image``: RGB images through the encoder's own image processor -> ``{name}_pixel_values`` ``[B, 3, H, W]``
(or the fields the encoder family's adapter declares, e.g. SigLIP2's patchified ``pixel_values`` +
``pixel_attention_mask`` + ``spatial_shapes``).

Raw samples: a ``PIL.Image``, an array (``input_data_format`` for an ambiguous layout, ``image_bit_depth`` for
integer images above 8 bits; see ``image_decoding.decode_image``), a file path, bytes or a datasets image dict.
timm checkpoints get transformers' ``TimmWrapperImageProcessor`` built from their ``pretrained_cfg`` and are saved
as a timm-format ``config.json``. Your own image network gets your image processor, else
``module_processing.default_image_processor`` (ImageNet recipe). Token-level fusion pools the patch grid
(``token_reduction.pooled_grid_tokens``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .modality_kind import ModalityKind, option_for, processing_module, register_modality_kind

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec

TIMM_CONFIG_NAME = "config.json"
"""A timm image processor is saved as a timm-format ``config.json`` (``architecture`` + ``pretrained_cfg``):
``TimmWrapperImageProcessor.save_pretrained`` is a no-op, and this form also loads with ``AutoImageProcessor``."""

PLACEHOLDER_SIDE = 224
"""Side of the blank image run through the processor to learn the placeholder shape of an all-missing batch."""


def _shape_key(name: str, field: str) -> str:
    """``placeholder_shapes`` key of a field: the modality name for ``pixel_values``, ``{name}_{field}`` else."""
    return name if field == "pixel_values" else f"{name}_{field}"


def _dtype(field: str) -> torch.dtype:
    return torch.float32 if field == "pixel_values" else torch.long


def _run_image_processor(
    image_processor: Any, name: str, images: list[Any], fields: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """``field -> tensor`` of the ``fields`` the image processor returns for ``images``.

    Raises:
        ValueError: naming the modality, when it does not return the main field ``fields[0]``.
    """
    out = image_processor(images=images, return_tensors="pt")
    if fields[0] not in out:
        raise ValueError(
            f"modality '{name}': the image processor returned {sorted(out)}; the encoder takes '{fields[0]}'"
        )
    return {field: torch.as_tensor(out[field]) for field in fields if field in out}


@register_modality_kind("image")
class ImageKind(ModalityKind):
    """Images: ``pixel_values`` ``[B, 3, H, W]`` from the encoder's image processor."""

    batch_fields = (("pixel_values",), ())
    module_fields = (("pixel_values",), ())
    sequence_pooling = "mean"
    processor_types = ("transformers.image_processing_utils:BaseImageProcessor",)
    processor_description = "an image processor"
    tower = ("vision_config", "vision_model")
    main_input_names = ("pixel_values",)
    media = True

    # ------------------------------------------------------------------ processor
    def load_processor(self, path: str, **kwargs: Any) -> Any:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(path, **kwargs)

    def load_saved_processor(self, path: str, spec: ProcessorSpec, subfolder: str, **kwargs: Any) -> Any:
        if spec.timm:
            from transformers.utils import cached_file

            file = cached_file(path, TIMM_CONFIG_NAME, subfolder=subfolder, **kwargs)
            from .adapters_image import timm_processor  # the timm family's processor (its adapter's)

            with open(file, encoding="utf-8") as handle:
                return timm_processor(SimpleNamespace(**json.load(handle)))
        return self.load_processor(path, subfolder=subfolder, **kwargs)

    def save_processor(self, processor: Any, spec: ProcessorSpec, folder: str) -> list[str]:
        """Write the sub-processor's files into ``folder``; returns them (a timm one as its ``config.json``)."""
        if not spec.timm:
            return [str(f) for f in processor.save_pretrained(folder) or []]
        file = os.path.join(folder, TIMM_CONFIG_NAME)
        timm_config = {
            "architecture": processor.architecture,
            "num_classes": 0,
            "pretrained_cfg": dict(processor.data_config),
        }
        with open(file, "w", encoding="utf-8") as handle:
            json.dump(timm_config, handle, indent=2)
        return [file]

    def processor_settings(self, name: str, spec: ProcessorSpec, processor: Any) -> dict[str, Any]:
        helpers = processing_module("image_decoding")
        normalize_bit_depth, normalize_input_data_format = (
            helpers.normalize_bit_depth,
            helpers.normalize_input_data_format,
        )

        out: dict[str, Any] = {"timm": type(processor).__name__ == "TimmWrapperImageProcessor"}
        try:
            input_data_format = normalize_input_data_format(spec.input_data_format)
            bit_depth = normalize_bit_depth(spec.image_bit_depth)
        except ValueError as error:
            raise ValueError(f"modality '{name}': {error}") from None
        if input_data_format is not None:
            out["input_data_format"] = input_data_format
        if bit_depth is not None:
            out["image_bit_depth"] = bit_depth
        return out

    def encoder_settings(self, spec: ProcessorSpec, processor: Any, adapter: Any) -> dict[str, Any]:
        given = {"input_data_format": spec.input_data_format, "image_bit_depth": spec.image_bit_depth}
        return {key: value for key, value in given.items() if value is not None}

    def module_processor_settings(
        self, name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
    ) -> dict[str, Any]:
        path = spec.path
        if processor is None and path:
            processor = self.load_processor(str(path), **hub_kwargs)
        if processor is None:
            default_image_processor = processing_module("module_processing").default_image_processor

            processor = default_image_processor(network.image_size)
        return {"processor": processor}

    # ------------------------------------------------------------------ samples
    def decode(self, processor: Any, name: str, value: Any, options: Mapping[str, Any]) -> Any:
        """An RGB ``PIL.Image`` (per-call ``input_data_format`` / ``image_bit_depth``, else the spec's)."""
        decode_image = processing_module("image_decoding").decode_image

        spec = processor.modalities[name]
        layout = option_for(options.get("input_data_format"), name) or spec.input_data_format
        depth = option_for(options.get("image_bit_depth"), name)
        return decode_image(value, layout, bit_depth=spec.image_bit_depth if depth is None else depth)

    def batch(self, processor: Any, name: str, samples: list[Any]) -> dict[str, tuple[torch.Tensor, Any]]:
        """The family's fields (its adapter's ``input_fields``, saved with the processor; else ``pixel_values``)
        from the image processor. A missing row's ``pixel_values`` are 0 and its other fields (a NaFlex patch
        mask and grid) 1: one valid 1 x 1 patch grid, which the encoder runs on (a 0 x 0 grid would not)."""
        image_processor = processor.processors[name]
        fields = self.processor_fields(processor.modalities[name], image_processor)
        shapes = processor.placeholder_shapes
        fills = {field: 0 if field == "pixel_values" else 1 for field in fields}
        if not samples:
            if name not in shapes:
                probe = processing_module("image_decoding").blank_image(PLACEHOLDER_SIDE)
                self._remember_shapes(
                    shapes, name, _run_image_processor(image_processor, name, [probe], fields)
                )
            return {
                field: (torch.zeros(0, *shapes[_shape_key(name, field)], dtype=_dtype(field)), fills[field])
                for field in fields
                if _shape_key(name, field) in shapes
            }
        out = _run_image_processor(image_processor, name, samples, fields)
        self._remember_shapes(shapes, name, out)
        return {field: (value, fills[field]) for field, value in out.items()}

    @staticmethod
    def _remember_shapes(shapes: dict[str, Any], name: str, out: dict[str, torch.Tensor]) -> None:
        """Per-sample shapes of each field (the placeholder of a later all-missing batch)."""
        for field, value in out.items():
            shapes[_shape_key(name, field)] = value.shape[1:]

    def example_sample(self, spec: ProcessorSpec, length: int, rng: Any) -> Any:
        """An RGB image of height ``40 + 8 * length``."""
        pixels = rng.integers(0, 255, (40 + 8 * length, 48, 3), dtype="uint8")
        return processing_module("image_decoding").decode_image(pixels)

    # ------------------------------------------------------------------ model side
    def reduce_tokens(
        self, hidden: torch.Tensor, mask: torch.Tensor, max_tokens: int, grid: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from .token_reduction import pooled_grid_tokens

        return pooled_grid_tokens(hidden, mask, max_tokens, grid)

    def module_example_inputs(self, name: str, spec: Any, network: nn.Module) -> dict[str, torch.Tensor]:
        size = spec.network.image_size or 64
        return {"pixel_values": torch.zeros(2, 3, size, size)}
