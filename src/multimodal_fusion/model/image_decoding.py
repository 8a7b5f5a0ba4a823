"""Image decoding: any image a user or a dataset row holds -> an 8-bit RGB ``PIL.Image``, keeping its values.

Accepted: PIL images, numpy arrays / torch tensors (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in 1, 3,
4; uint8, uint16, or floats in [0, 1]), file paths, file bytes and ``{"path", "bytes"}`` dicts
(``datasets.Image(decode=False)``). A file's EXIF orientation is applied, as ``datasets.Image`` does. The file
is fully decoded here, so a truncated file fails here, as a [`BadSampleError`], not later inside the image
processor.

Values are kept, not clipped (Pillow's ``convert("RGB")`` clips every sample above 255):

- 16-bit modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; 16-bit PNG/TIFF/PGM) and uint16 arrays map by
  ``round(value / 257)`` (65535 -> 255);
- 32-bit integer mode ``I`` maps ``[0, 2**bits - 1]`` linearly to ``[0, 255]``, where ``bits`` is the bit depth
  the file declares (TIFF ``BitsPerSample``), else 32 (the mode's width);
- float mode ``F`` (and float arrays) must hold values in ``[0, 1]``, mapped by ``round(value * 255)``.

Values outside that range, NaN or inf are a [`BadSampleError`] naming the file (never a silent clip).
Transparency (RGBA, LA, PA, a palette or grey/RGB image with a transparent colour) is composited on a white
background with transformers' own ``image_transforms.convert_to_rgb``, so every encoder sees what transformers'
pipelines show it. Other modes (``L``, ``P``, ``CMYK``, ``YCbCr``, ``1``...) convert with Pillow.

Array layout: a 3-D array whose first *and* last axis could both be the channel axis (``[3, 3, 3]``,
``[4, 8, 3]``) is ambiguous and refused unless ``input_data_format`` (``"channels_first"`` or
``"channels_last"``, as in transformers' image processors) names it; otherwise the one axis of size 1, 3 or 4
is the channel axis.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
from transformers.image_transforms import convert_to_rgb

from .bad_samples import BadSampleError

_CHANNELS = (1, 3, 4)
INPUT_DATA_FORMATS = ("channels_first", "channels_last")
"""Values of ``input_data_format`` (transformers' ``ChannelDimension`` values)."""
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS")
_TIFF_BITS_PER_SAMPLE = 258


def normalize_input_data_format(value: Any) -> str | None:
    """``None``, ``"channels_first"``/``"channels_last"`` or transformers' ``ChannelDimension`` -> the string."""
    if value is None:
        return None
    value = getattr(value, "value", value)
    if value not in INPUT_DATA_FORMATS:
        raise ValueError(f"`input_data_format` must be one of {INPUT_DATA_FORMATS}, got {value!r}")
    return value


def _open(source: str | bytes, path: str | None) -> PIL.Image.Image:
    if path is not None and os.path.isdir(path):
        raise BadSampleError("image path is a directory; expected an image file", path=path)
    if path is not None and not os.path.isfile(path):
        raise BadSampleError("image file not found; expected a readable image file", path=path)
    try:
        image = PIL.Image.open(path if path is not None else io.BytesIO(source))
        image.load()
        if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
            image = PIL.ImageOps.exif_transpose(
                image
            )  # camera rotation, as datasets' Image feature applies it
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as error:
        raise BadSampleError(
            f"cannot decode image ({error}); expected a readable image file (png, jpeg, webp, ...)", path=path
        ) from error
    return image


def _scale_to_uint8(values: np.ndarray, maximum: float, what: str) -> np.ndarray:
    """``values`` in ``[0, maximum]`` -> uint8 ``round(values * 255 / maximum)``; anything else is an error."""
    values = values.astype(np.float64)
    if not np.isfinite(values).all():
        raise BadSampleError(f"{what} holds NaN or inf values; expected finite values in [0, {maximum:g}]")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > maximum:
        raise BadSampleError(
            f"{what} holds values in [{low:g}, {high:g}], outside its range [0, {maximum:g}]; "
            "expected values the mode can hold (they are never clipped)"
        )
    return np.round(values * (255.0 / maximum)).astype(np.uint8)


def _declared_bits(image: PIL.Image.Image) -> int:
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else 32


def _high_depth_to_grey(image: PIL.Image.Image) -> PIL.Image.Image | None:
    """16-bit, 32-bit integer and float grey images -> 8-bit ``L`` by value (see the module docstring), else
    ``None`` (an 8-bit mode Pillow converts without loss)."""
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES:
        values, maximum = np.asarray(image), 65535.0
    elif mode == "I":
        bits = _declared_bits(image)
        values, maximum = np.asarray(image), float(2**bits - 1)
    elif mode == "F":
        values, maximum = np.asarray(image), 1.0
    else:
        return None
    return PIL.Image.fromarray(_scale_to_uint8(values, maximum, f"'{mode}' image"), mode="L")


def _channel_axis(shape: tuple[int, ...], input_data_format: str | None) -> int | None:
    """The channel axis of a 3-D image array: 0, -1, or ``None`` for a 2-D array."""
    if len(shape) == 2:
        return None
    if input_data_format is not None:
        axis = 0 if input_data_format == "channels_first" else -1
        if shape[axis] not in _CHANNELS:
            raise BadSampleError(
                f"image array of shape {shape} with input_data_format='{input_data_format}' has "
                f"{shape[axis]} channels; expected {_CHANNELS}"
            )
        return axis
    first, last = shape[0] in _CHANNELS, shape[-1] in _CHANNELS
    if first and last:
        raise BadSampleError(
            f"image array of shape {shape} is ambiguous: it reads as [C, H, W] and as [H, W, C]; pass "
            "input_data_format='channels_first' or 'channels_last'"
        )
    if not (first or last):
        raise BadSampleError(
            f"image array of shape {shape}; expected [H, W], [H, W, C] or [C, H, W] with C in {_CHANNELS}"
        )
    return 0 if first else -1


def _from_array(array: Any, input_data_format: str | None = None) -> PIL.Image.Image:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    array = np.asarray(array)
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise BadSampleError(
            f"image array of shape {array.shape}; expected [H, W], [H, W, C] or [C, H, W] with C in "
            f"{_CHANNELS} and H, W >= 1"
        )
    axis = _channel_axis(array.shape, input_data_format)
    if axis == 0:
        array = np.moveaxis(array, 0, -1)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if np.issubdtype(array.dtype, np.floating):
        array = _scale_to_uint8(array, 1.0, "float image array")
    elif array.dtype == np.uint16:
        array = _scale_to_uint8(array, 65535.0, "uint16 image array")
    elif array.dtype != np.uint8:
        raise BadSampleError(
            f"image array has dtype {array.dtype}; expected uint8, uint16 or floats in [0, 1]"
        )
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """An 8-bit RGB copy of ``image``: high bit depths by value, transparency composited on white (see the
    module docstring). Raises [`BadSampleError`] for an empty (0-pixel) image or out-of-range values."""
    if image.width == 0 or image.height == 0:
        raise BadSampleError(f"image of {image.width}x{image.height} pixels; expected at least 1x1")
    grey = _high_depth_to_grey(image)
    if grey is not None:
        return grey.convert("RGB")
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            return PIL.Image.fromarray(convert_to_rgb(image, return_numpy=True))  # white background
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError) as error:
        raise BadSampleError(f"cannot convert a '{image.mode}' image to RGB ({error})") from error


def decode_image(value: Any, input_data_format: str | None = None) -> PIL.Image.Image:
    """Any accepted image value -> an 8-bit RGB ``PIL.Image`` (see the module docstring).

    Args:
        value: a PIL image, an array/tensor, a file path, file bytes or a ``{"path", "bytes"}`` dict.
        input_data_format: ``"channels_first"`` or ``"channels_last"`` for 3-D arrays (required when the
            layout is ambiguous); ignored for other values.

    Raises:
        BadSampleError: unreadable/missing file (a directory is named as one), empty image, ambiguous layout,
            values outside the mode's range; ``path`` names the file when there is one.
    """
    input_data_format = normalize_input_data_format(input_data_format)
    path = None
    if isinstance(value, PIL.Image.Image):
        image = value
    elif isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        image = _open(b"", path)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        image = _open(bytes(value), None)
    elif isinstance(value, Mapping):
        path = value.get("path")
        path = os.fspath(path) if path is not None else None
        if value.get("bytes") is not None:
            try:
                image = _open(bytes(value["bytes"]), None)
            except BadSampleError as error:
                error.path = path
                raise
        elif path is not None:
            image = _open(b"", path)
        else:
            raise BadSampleError(f"image dict with keys {sorted(value)}; expected 'bytes' or 'path'")
    elif hasattr(value, "shape"):
        image = _from_array(value, input_data_format)
    else:
        raise BadSampleError(
            f"image of type {type(value).__name__}; expected a PIL image, an array, a file path or file bytes"
        )
    try:
        return to_rgb(image)
    except BadSampleError as error:
        error.path = error.path if error.path is not None else path
        raise
