"""Image decoding: any image a user or a dataset row holds -> an RGB ``PIL.Image``.

Accepted: PIL images, numpy arrays / torch tensors (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in 1, 3,
4; uint8, or floats in [0, 1]), file paths, file bytes and ``{"path", "bytes"}`` dicts
(``datasets.Image(decode=False)``). Grayscale, palette, RGBA, CMYK... become RGB (alpha is dropped, as
transformers' ``convert_rgb`` does); a file's EXIF orientation is applied, as ``datasets.Image`` does. The file
is fully decoded here, so a truncated file fails here, as a [`BadSampleError`], not later inside the image
processor.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps

from .bad_samples import BadSampleError

_CHANNELS = (1, 3, 4)


def _open(source: str | bytes, path: str | None) -> PIL.Image.Image:
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


def _from_array(array: Any) -> PIL.Image.Image:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] in _CHANNELS and array.shape[-1] not in _CHANNELS:
        array = np.moveaxis(array, 0, -1)  # [C, H, W] -> [H, W, C]
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)) or 0 in array.shape:
        raise BadSampleError(
            f"image array of shape {array.shape}; expected [H, W], [H, W, C] or [C, H, W] with C in {_CHANNELS}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise BadSampleError(
                "float image array must hold finite values in [0, 1] (or give uint8 values in [0, 255])"
            )
        array = np.round(array * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise BadSampleError(f"image array has dtype {array.dtype}; expected uint8 or floats in [0, 1]")
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def decode_image(value: Any) -> PIL.Image.Image:
    """Any accepted image value -> an RGB ``PIL.Image`` (see the module docstring)."""
    if isinstance(value, PIL.Image.Image):
        image = value
    elif isinstance(value, (str, os.PathLike)):
        image = _open(b"", os.fspath(value))
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
        image = _from_array(value)
    else:
        raise BadSampleError(
            f"image of type {type(value).__name__}; expected a PIL image, an array, a file path or file bytes"
        )
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise BadSampleError(f"cannot convert a '{image.mode}' image to RGB ({error})") from error
