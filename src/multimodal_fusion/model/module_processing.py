"""Pre-processing for module encoders (your own networks): which sub-processor a ``module`` modality gets.

- image: your own transformers image processor (``processor``, or a ``path`` holding one), else the default
  [`default_image_processor`]: resize to ``image_size`` x ``image_size`` (default 224), scale to [0, 1] and
  normalise with the ImageNet mean/std, the recipe torchvision's ImageNet weights expect.
- audio: a transformers feature extractor that returns ``input_features`` frames (``Speech2TextFeatureExtractor``
  log-mel filterbanks, ``WhisperFeatureExtractor``...), else precomputed frames from the dataset (``[T, F]``
  arrays, ``F = input_dim``), padded on the right with an ``attention_mask``.
- text: your tokenizer (``processor``, or the tokenizer folder in ``path``).
- features: float vectors of ``input_dim``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import ViTImageProcessor
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .bad_samples import BadSampleError
from .modality_kinds import get_kind

if TYPE_CHECKING:
    from .spec_parts import OwnNetworkSpec, ProcessorSpec

DEFAULT_IMAGE_SIZE = 224
"""Side of the square images the default module image processor produces when the spec has no ``image_size``."""


def default_image_processor(image_size: int | None = None) -> ViTImageProcessor:
    """Resize to ``image_size`` x ``image_size`` (bilinear), rescale by 1/255, normalise with the ImageNet mean and
    std; output ``pixel_values`` ``[B, 3, image_size, image_size]``. Saved and reloaded like any image processor."""
    size = image_size or DEFAULT_IMAGE_SIZE
    return ViTImageProcessor(
        do_resize=True,
        size={"height": size, "width": size},
        do_rescale=True,
        do_normalize=True,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


def module_processor_spec(
    name: str, spec: ProcessorSpec, processor: Any, network: OwnNetworkSpec, **hub_kwargs: Any
) -> dict[str, Any]:
    """The [`FusionProcessor`] entry (settings and ``processor``) of a ``module`` modality, from the settings
    asked for in ``spec``, the given sub-processor (or ``None``) and the network's own fields (see the module
    docstring for the choices; each kind's ``module_processor_settings``).

    Raises:
        ValueError: naming the modality, where the kind needs what the entry lacks (``input_dim``, a processor).
    """
    out: dict[str, Any] = {"kind": spec.kind, "path": str(spec.path) if spec.path else None}
    out.update(get_kind(spec.kind).module_processor_settings(name, spec, processor, network, **hub_kwargs))
    return out


def processor_fields(spec: ProcessorSpec, processor: Any) -> tuple[str, ...]:
    """Batch fields a sub-processor yields: the encoder family's saved ``input_fields``, else its kind's (for an
    audio module encoder, ``input_features`` frames + ``attention_mask``)."""
    return get_kind(spec.kind).processor_fields(spec, processor)


def decode_vector(input_dim: int, value: Any) -> np.ndarray:
    """One feature vector -> float32 ``[input_dim]`` (finite values); raises ``BadSampleError`` otherwise."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise BadSampleError(f"feature vector must hold numbers ({error})") from None
    if vector.shape != (input_dim,):
        raise BadSampleError(f"feature vector of shape {vector.shape}; expected ({input_dim},)")
    if not np.isfinite(vector).all():
        raise BadSampleError("feature vector holds NaN/inf values; expected finite numbers")
    return vector


def decode_frames(input_dim: int, value: Any) -> np.ndarray:
    """One precomputed frame sequence -> float32 ``[T, input_dim]`` (T >= 1, finite values)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        frames = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise BadSampleError(f"frames must hold numbers ({error})") from None
    if frames.ndim != 2 or frames.shape[1] != input_dim or frames.shape[0] == 0:
        raise BadSampleError(f"frames of shape {frames.shape}; expected (frames >= 1, {input_dim})")
    if not np.isfinite(frames).all():
        raise BadSampleError("frames hold NaN/inf values; expected finite numbers")
    return frames


def batch_frames(frames: list[np.ndarray], input_dim: int) -> dict[str, tuple[torch.Tensor, int]]:
    """Right-pad frame sequences to ``input_features`` ``[B, T, F]`` (zeros) + ``attention_mask`` ``[B, T]``."""
    longest = max((len(f) for f in frames), default=1)
    values = torch.zeros(len(frames), longest, input_dim)
    mask = torch.zeros(len(frames), longest, dtype=torch.long)
    for i, sequence in enumerate(frames):
        values[i, : len(sequence)] = torch.from_numpy(sequence)
        mask[i, : len(sequence)] = 1
    return {"input_features": (values, 0), "attention_mask": (mask, 0)}
