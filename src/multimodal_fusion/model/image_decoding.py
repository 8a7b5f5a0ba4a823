"""Image decoding: any image a user or a dataset row holds -> an 8-bit RGB ``PIL.Image``, keeping its values.

Accepted: PIL images, numpy arrays / torch tensors (``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with C in 1, 3,
4; uint8, uint16, floats in [0, 1], or other integers with a declared bit depth), file paths, file bytes and ``{"path", "bytes"}`` dicts
(``datasets.Image(decode=False)``). A file's EXIF orientation is applied, as ``datasets.Image`` does. The file
is fully decoded here, so a truncated file fails here, as a [`BadSampleError`], not later inside the image
processor.

Values are kept, not clipped (Pillow's ``convert("RGB")`` clips every sample above 255). Integer samples
wider than 8 bits map ``[0, 2**bits - 1]`` linearly to ``[0, 255]`` (``round(value * 255 / (2**bits - 1))``;
16 bits: ``round(value / 257)``, 65535 -> 255), where ``bits`` is, first match wins:

1. the declared bit depth ``bit_depth`` (``image_bit_depth`` of [`FusionProcessor`], per call or per modality
   in its spec), an integer in ``[1, 32]``, at most the sample type's width (16 for ``I;16*`` and uint16);
2. the depth the file declares: TIFF ``BitsPerSample`` for mode ``I``; PGM/PPM files (Pillow opens 16-bit
   ones as ``I``, rescaled to ``[0, 65535]``) 16;
3. the sample type's width for the 16-bit modes (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``; 16-bit PNG/TIFF)
   and uint16 arrays: 16;
4. none: a 32-bit ``I`` image (an in-memory one: ``PIL.Image.fromarray(int32)``, ``image.convert("I")``) or an
   integer array other than uint8/uint16 is a [`BadSampleError`] saying how to declare the depth. ``I`` holds
   8-bit (``L.convert("I")``), 12-bit and 16-bit data alike, and no value-based guess is safe: reading 8- or
   12-bit data as 16-bit turns it black, reading 16-bit data as 8-bit saturates it.

With no declared depth (2.-4.), an image with non-zero values that would decode entirely black (a 32-bit TIFF
written by ``image.convert("I").save(...)`` from 16-bit data) is a [`BadSampleError`] too: declare its depth,
the file's own to read it that way anyway.

8-bit images (uint8 arrays, modes ``L``, ``RGB``, ``P``...) always read on ``[0, 255]``: a declared depth does
not apply to them, so one declaration per modality covers a mix of 8-bit and 16-bit files. Float mode ``F``
and float arrays must hold values in ``[0, 1]``, mapped by ``round(value * 255)``; a declared depth does not
apply to floats either (a modality-wide ``16`` would turn ``[0, 1]`` floats black), so divide 0-255 floats by
255 first.

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
_FILE_BITS = (
    "multimodal_fusion_file_bits"  # image.info key: the depth its file declared (kept across transposes)
)
_HOW_TO_DECLARE = (
    "declare the bit depth: image_bit_depth=BITS per call (processor(..., image_bit_depth=16) or "
    "{modality: 16}) or per modality in the processor spec ({'image_bit_depth': 16}); decode_image(..., "
    "bit_depth=16)"
)


def normalize_bit_depth(value: Any) -> int | None:
    """``None`` or a declared bit depth (an integer in ``[1, 32]``) -> ``int | None``; raises ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= int(value) <= 32:
        raise ValueError(f"`image_bit_depth` must be an integer in [1, 32] (or None), got {value!r}")
    return int(value)


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
        file_bits = _declared_bits(image)
        if image.getexif().get(PIL.Image.ExifTags.Base.Orientation) is not None:
            image = PIL.ImageOps.exif_transpose(
                image
            )  # camera rotation, as datasets' Image feature applies it
        if file_bits is not None:
            image.info[_FILE_BITS] = file_bits
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


def _declared_bits(image: PIL.Image.Image) -> int | None:
    """The bit depth an ``I`` image's file declares (TIFF ``BitsPerSample``; PGM/PPM: 16), else ``None``."""
    if image.info.get(_FILE_BITS) is not None:
        return image.info[_FILE_BITS]
    if image.mode != "I":
        return None
    if image.format == "PPM":  # Pillow rescales a PGM/PPM with maxval > 255 to [0, 65535]
        return 16
    tags = getattr(image, "tag_v2", None)
    bits = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 1 <= bits <= 32 else None


def _integers_to_uint8(
    values: np.ndarray, width: int, default: int | None, bit_depth: int | None, what: str
) -> np.ndarray:
    """Integer samples of a ``width``-bit type -> uint8 over ``[0, 2**bits - 1]``, ``bits`` the declared depth,
    else ``default`` (the file's or the type's). Raises [`BadSampleError`] (saying how to declare the depth)
    when there is neither, when a declared depth exceeds ``width``, for values outside the range, and when an
    undeclared depth would turn an image with non-zero values entirely black."""
    if bit_depth is not None and bit_depth > width:
        raise BadSampleError(
            f"{what} holds {width}-bit samples, but the declared bit depth is {bit_depth}; expected a bit depth "
            f"of at most {width} (a wider one would darken the image)"
        )
    bits = bit_depth if bit_depth is not None else default
    low, high = int(values.min()), int(values.max())
    needs = f"values in [{low}, {high}], which need at least {max(1, high.bit_length())} bits"
    if bits is None:
        raise BadSampleError(
            f"{what} has no declared bit depth ({needs}; it may hold 8-, 12-, 16- or 32-bit data and is not "
            "guessed); " + _HOW_TO_DECLARE
        )
    out = _scale_to_uint8(values, float(2**bits - 1), what)
    if bit_depth is None and high > 0 and not out.any():
        raise BadSampleError(
            f"{what} read as {bits}-bit ({needs}) would decode entirely black; if its data has fewer bits, "
            + _HOW_TO_DECLARE.replace("16", str(max(8, high.bit_length())))
            + f" (declare {bits} to read it as {bits}-bit anyway)"
        )
    return out


def _high_depth_to_grey(image: PIL.Image.Image, bit_depth: int | None = None) -> PIL.Image.Image | None:
    """16-bit, 32-bit integer and float grey images -> 8-bit ``L`` by value (see the module docstring), else
    ``None`` (an 8-bit mode Pillow converts without loss)."""
    mode = image.mode
    what = f"'{mode}' image"
    if mode in _SIXTEEN_BIT_MODES:
        grey = _integers_to_uint8(np.asarray(image), 16, 16, bit_depth, what)
    elif mode == "I":
        grey = _integers_to_uint8(np.asarray(image), 32, _declared_bits(image), bit_depth, what)
    elif mode == "F":
        grey = _scale_to_uint8(np.asarray(image), 1.0, what)
    else:
        return None
    return PIL.Image.fromarray(grey, mode="L")


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


def _from_array(
    array: Any, input_data_format: str | None = None, bit_depth: int | None = None
) -> PIL.Image.Image:
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
    elif np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8 and array.dtype.itemsize > 1:
        what = f"{array.dtype} image array"
        default = 16 if array.dtype == np.uint16 else None
        if default is None and bit_depth is None:
            raise BadSampleError(
                f"image array has dtype {array.dtype}; expected uint8, uint16, floats in [0, 1], or a declared "
                f"bit depth for other integers: " + _HOW_TO_DECLARE
            )
        array = _integers_to_uint8(array, 8 * array.dtype.itemsize, default, bit_depth, what)
    elif array.dtype != np.uint8:
        raise BadSampleError(
            f"image array has dtype {array.dtype}; expected uint8, uint16, floats in [0, 1], or other "
            "integers with a declared bit depth"
        )
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: PIL.Image.Image, bit_depth: int | None = None) -> PIL.Image.Image:
    """An 8-bit RGB copy of ``image``: high bit depths by value (``bit_depth``: the declared depth of integer
    samples wider than 8 bits, see the module docstring), transparency composited on white. Raises
    [`BadSampleError`] for an empty (0-pixel) image, out-of-range values or an ``I`` image with no depth."""
    if image.width == 0 or image.height == 0:
        raise BadSampleError(f"image of {image.width}x{image.height} pixels; expected at least 1x1")
    grey = _high_depth_to_grey(image, normalize_bit_depth(bit_depth))
    if grey is not None:
        return grey.convert("RGB")
    try:
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            return PIL.Image.fromarray(convert_to_rgb(image, return_numpy=True))  # white background
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError) as error:
        raise BadSampleError(f"cannot convert a '{image.mode}' image to RGB ({error})") from error


def decode_image(
    value: Any, input_data_format: str | None = None, bit_depth: int | None = None
) -> PIL.Image.Image:
    """Any accepted image value -> an 8-bit RGB ``PIL.Image`` (see the module docstring).

    Args:
        value: a PIL image, an array/tensor, a file path, file bytes or a ``{"path", "bytes"}`` dict.
        input_data_format: ``"channels_first"`` or ``"channels_last"`` for 3-D arrays (required when the
            layout is ambiguous); ignored for other values.
        bit_depth: the declared bit depth (``[1, 32]``) of integer samples wider than 8 bits (modes ``I``,
            ``I;16*``, integer arrays other than uint8); overrides the file's. Needed for an ``I`` image whose
            file declares none and for integer arrays other than uint8/uint16. 8-bit and float images ignore it.

    Raises:
        BadSampleError: unreadable/missing file (a directory is named as one), empty image, ambiguous layout,
            values outside the range of the mode or the declared depth, no bit depth where one is needed;
            ``path`` names the file when there is one.
        ValueError: ``input_data_format`` or ``bit_depth`` is not a valid value.
    """
    input_data_format = normalize_input_data_format(input_data_format)
    bit_depth = normalize_bit_depth(bit_depth)
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
        image = _from_array(value, input_data_format, bit_depth)
    else:
        raise BadSampleError(
            f"image of type {type(value).__name__}; expected a PIL image, an array, a file path or file bytes"
        )
    try:
        return to_rgb(image, bit_depth)
    except BadSampleError as error:
        error.path = error.path if error.path is not None else path
        raise


def blank_image(side: int) -> PIL.Image.Image:
    """A black RGB ``side`` x ``side`` image (the probe that gives an image processor's output shape)."""
    return PIL.Image.new("RGB", (side, side))
