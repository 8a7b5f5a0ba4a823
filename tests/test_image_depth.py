"""Issue 25: the bit depth of high-depth images. Every mode (``I``, ``I;16``, ``I;16B``, ``I;16L``, ``F``) and
array dtype (uint16, int32, uint32, float32...), from files Pillow wrote and from memory, decodes to the value an
independent numpy computation gives (``round(v * 255 / (2**bits - 1))``), or to the named error that says how
to declare the depth; never to a silently black or saturated image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from multimodal_fusion import BadSampleError, FusionProcessor
from multimodal_fusion.model.image_decoding import decode_image
from tiny_encoders import make_vit

V16 = np.array([[0, 1, 128, 255], [257, 4095, 50000, 65535]], np.uint16)  # 50000: the issue's value
V12 = np.array([[0, 1, 128, 255], [257, 1000, 2048, 4095]], np.uint16)
V8 = np.array([[0, 1, 128, 200], [17, 64, 254, 255]], np.uint8)
FULL32 = np.linspace(0, 2**31 - 1, 8).astype(np.int32).reshape(2, 4)
UNIT = np.linspace(0, 1, 8, dtype=np.float32).reshape(2, 4)
DECLARE = r"declare the bit depth: image_bit_depth=.*per modality in the processor spec.*bit_depth="


def scaled(values: np.ndarray, bits: int) -> np.ndarray:
    """Independent reference: integers on [0, 2**bits - 1] -> round(v * 255 / (2**bits - 1)), as grey RGB."""
    out = np.round(values.astype(np.float64) * 255.0 / (2.0**bits - 1.0))
    return np.repeat(out[..., None], 3, axis=-1) if out.ndim == 2 else out


def pil16(mode: str, values: np.ndarray) -> PIL.Image.Image:
    order = ">u2" if mode == "I;16B" else "<u2"
    return PIL.Image.frombytes(mode, (values.shape[1], values.shape[0]), values.astype(order).tobytes())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("depth")
    pil16("I;16", V16).save(root / "i16.png")
    pil16("I;16B", V16).save(root / "i16b.png")
    for mode in ("I;16", "I;16B", "I;16L"):
        pil16(mode, V16).save(root / f"{mode.replace(';', '')}.tiff")
    pil16("I;16", V12).save(root / "twelve_in_i16.tiff")
    pil16("I;16", V16).save(root / "i16.pgm")  # Pillow reopens a 16-bit PGM as mode 'I'
    (root / "maxval4095.pgm").write_bytes(b"P5 4 2 4095\n" + V12.astype(">u2").tobytes())
    PIL.Image.fromarray(FULL32).save(root / "i32_full.tiff")  # BitsPerSample 32, full-range data
    PIL.Image.fromarray(V16.astype(np.int32)).save(root / "i32_holding_16bit.tiff")  # image.convert("I").save
    PIL.Image.fromarray(UNIT).save(root / "f_unit.tiff")
    PIL.Image.fromarray(UNIT * 255).save(root / "f_255.tiff")
    return root


def opened(name: str):
    return lambda d: PIL.Image.open(d / name)


def on_disk(name: str):
    return lambda d: str(d / name)


# (id, value builder, decode kwargs, expected uint8 RGB, tolerance in levels)
VALUES = [
    ("png_I;16", on_disk("i16.png"), {}, scaled(V16, 16), 0),
    ("png_from_I;16B", on_disk("i16b.png"), {}, scaled(V16, 16), 0),
    ("tiff_I;16", on_disk("I16.tiff"), {}, scaled(V16, 16), 0),
    ("tiff_I;16B", on_disk("I16B.tiff"), {}, scaled(V16, 16), 0),
    ("tiff_I;16L", on_disk("I16L.tiff"), {}, scaled(V16, 16), 0),
    ("tiff_I;16_declared_12", on_disk("twelve_in_i16.tiff"), {"bit_depth": 12}, scaled(V12, 12), 0),
    ("pgm_16bit_opens_as_I", on_disk("i16.pgm"), {}, scaled(V16, 16), 0),
    ("pgm_maxval_4095_rescaled_by_pillow", on_disk("maxval4095.pgm"), {}, scaled(V12, 12), 1),
    ("tiff_I_32bit_full_range", on_disk("i32_full.tiff"), {}, scaled(FULL32, 32), 0),
    ("pil_I_opened_tiff_keeps_its_tag", opened("i32_full.tiff"), {}, scaled(FULL32, 32), 0),
    ("tiff_I_holding_16bit_declared_16", on_disk("i32_holding_16bit.tiff"), {"bit_depth": 16}, scaled(V16, 16), 0),
    ("tiff_I_declared_32_reads_as_asked", on_disk("i32_holding_16bit.tiff"), {"bit_depth": 32}, scaled(V16, 32), 0),
    ("tiff_F_unit", on_disk("f_unit.tiff"), {}, np.repeat(np.round(UNIT * 255.0)[..., None], 3, -1), 0),
    ("pil_I_declared_16", lambda d: PIL.Image.fromarray(V16.astype(np.int32)), {"bit_depth": 16}, scaled(V16, 16), 0),
    ("pil_I_declared_12", lambda d: PIL.Image.fromarray(V12.astype(np.int32)), {"bit_depth": 12}, scaled(V12, 12), 0),
    ("pil_I_from_L_declared_8", lambda d: PIL.Image.fromarray(V8).convert("I"), {"bit_depth": 8}, scaled(V8, 8), 0),
    ("pil_I;16", lambda d: pil16("I;16", V16), {}, scaled(V16, 16), 0),
    ("pil_I;16B", lambda d: pil16("I;16B", V16), {}, scaled(V16, 16), 0),
    ("pil_I;16L", lambda d: pil16("I;16L", V16), {}, scaled(V16, 16), 0),
    ("pil_I;16_declared_12", lambda d: pil16("I;16", V12), {"bit_depth": 12}, scaled(V12, 12), 0),
    ("pil_I;16_dark_declared_16", lambda d: pil16("I;16", V16 // 1024), {"bit_depth": 16}, scaled(V16 // 1024, 16), 0),
    ("pil_F_unit", lambda d: PIL.Image.fromarray(UNIT), {}, np.repeat(np.round(UNIT * 255.0)[..., None], 3, -1), 0),
    ("pil_F_ignores_depth", lambda d: PIL.Image.fromarray(UNIT), {"bit_depth": 16}, np.repeat(np.round(UNIT * 255.0)[..., None], 3, -1), 0),
    ("pil_L_ignores_depth", lambda d: PIL.Image.fromarray(V8), {"bit_depth": 16}, scaled(V8, 8), 0),
    ("array_uint16", lambda d: V16, {}, scaled(V16, 16), 0),
    ("array_uint16_declared_12", lambda d: V12, {"bit_depth": 12}, scaled(V12, 12), 0),
    ("array_uint16_rgb_hwc", lambda d: np.stack([V16, V16[::-1], V16[:, ::-1]], -1), {}, scaled(np.stack([V16, V16[::-1], V16[:, ::-1]], -1), 16), 0),
    ("array_int32_declared_16", lambda d: V16.astype(np.int32), {"bit_depth": 16}, scaled(V16, 16), 0),
    ("array_uint32_declared_32", lambda d: FULL32.astype(np.uint32) * 2, {"bit_depth": 32}, scaled(FULL32.astype(np.uint64) * 2, 32), 0),
    ("array_int16_declared_12", lambda d: V12.astype(np.int16), {"bit_depth": 12}, scaled(V12, 12), 0),
    ("tensor_int32_declared_16", lambda d: torch.from_numpy(V16.astype(np.int32)), {"bit_depth": 16}, scaled(V16, 16), 0),
    ("array_float32_unit", lambda d: UNIT, {}, np.repeat(np.round(UNIT * 255.0)[..., None], 3, -1), 0),
    ("array_uint8_ignores_depth", lambda d: V8, {"bit_depth": 16}, scaled(V8, 8), 0),
]  # fmt: skip


@pytest.mark.parametrize(("value", "kwargs", "expected", "tolerance"), [c[1:] for c in VALUES],
                         ids=[c[0] for c in VALUES])  # fmt: skip
def test_every_depth_decodes_to_the_independent_value(files, value, kwargs, expected, tolerance):
    decoded = np.asarray(decode_image(value(files), **kwargs))
    assert decoded.dtype == np.uint8 and decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).max() <= tolerance


# (id, value builder, decode kwargs, message pattern)
ERRORS = [
    ("pil_I_undeclared_the_issue", lambda d: PIL.Image.fromarray(V16.astype(np.int32)), {}, r"'I' image has no declared bit depth \(values in \[0, 65535\], which need at least 16 bits.*" + DECLARE),
    ("pil_I_from_L_undeclared", lambda d: PIL.Image.fromarray(V8).convert("I"), {}, r"'I' image has no declared bit depth.*at least 8 bits"),
    ("pil_I_declared_8_too_small", lambda d: PIL.Image.fromarray(V16.astype(np.int32)), {"bit_depth": 8}, r"'I' image holds values in \[0, 65535\], outside its range \[0, 255\]"),
    ("tiff_I_holding_16bit_would_be_black", on_disk("i32_holding_16bit.tiff"), {}, r"'I' image read as 32-bit .* would decode entirely black.*image_bit_depth=16.*declare 32"),
    ("tiff_I;16_declared_12_too_small", on_disk("I16.tiff"), {"bit_depth": 12}, r"'I;16' image holds values in \[0, 65535\], outside its range \[0, 4095\]"),
    ("pil_I;16_declared_17", lambda d: pil16("I;16", V16), {"bit_depth": 17}, r"'I;16' image holds 16-bit samples, but the declared bit depth is 17"),
    ("pil_I;16_dark_undeclared_would_be_black", lambda d: pil16("I;16B", V16 // 1024), {}, r"'I;16B' image read as 16-bit \(values in \[0, 63\].*entirely black"),
    ("tiff_F_0_255", on_disk("f_255.tiff"), {}, r"'F' image holds values in \[0, 255\], outside its range \[0, 1\]"),
    ("array_float_0_255_depth_does_not_apply", lambda d: UNIT * 255, {"bit_depth": 8}, r"float image array holds values in \[0, 255\]"),
    ("array_int32_undeclared", lambda d: V16.astype(np.int32), {}, r"dtype int32; expected uint8, uint16.*" + DECLARE),
    ("array_int32_negative", lambda d: V16.astype(np.int32) - 1, {"bit_depth": 16}, r"int32 image array holds values in \[-1, 65534\], outside its range \[0, 65535\]"),
    ("array_uint16_declared_10_too_small", lambda d: V12, {"bit_depth": 10}, r"uint16 image array holds values in \[0, 4095\], outside its range \[0, 1023\]"),
    ("array_uint16_declared_32", lambda d: V16, {"bit_depth": 32}, r"uint16 image array holds 16-bit samples, but the declared bit depth is 32"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "kwargs", "pattern"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_undeclared_or_wrong_depths_are_named_errors(files, value, kwargs, pattern):
    source = value(files)
    with pytest.raises(BadSampleError, match=pattern) as info:
        decode_image(source, **kwargs)
    if isinstance(source, str):
        assert info.value.path == source


@pytest.mark.parametrize("bad", [0, 33, "16", 16.0, True])
def test_bit_depth_must_be_an_integer_in_1_32(bad):
    with pytest.raises(ValueError, match=r"`image_bit_depth` must be an integer in \[1, 32\]"):
        decode_image(V16, bit_depth=bad)


@pytest.fixture(scope="module")
def vit(tmp_path_factory) -> str:
    return str(make_vit(tmp_path_factory.mktemp("vit") / "vit"))


def test_processor_per_modality_depth_is_saved_and_per_call_depth_wins(vit, tmp_path):
    image_i = PIL.Image.fromarray(V16.astype(np.int32))
    plain = FusionProcessor.from_encoders({"image": vit})
    with pytest.raises(
        BadSampleError, match=r"modality 'image'.*'I' image has no declared bit depth.*" + DECLARE
    ):
        plain(image=[image_i])
    assert np.array_equal(np.asarray(plain.decode("image", image_i, image_bit_depth=16)), scaled(V16, 16))
    assert np.array_equal(
        np.asarray(plain.decode("image", image_i, image_bit_depth={"image": 16})), scaled(V16, 16)
    )
    declared = FusionProcessor.from_encoders({"image": {"path": vit, "image_bit_depth": 16}})
    declared.save_pretrained(tmp_path / "p")
    reloaded = FusionProcessor.from_pretrained(tmp_path / "p")
    assert reloaded.modalities["image"]["image_bit_depth"] == 16
    assert np.array_equal(np.asarray(reloaded.decode("image", image_i)), scaled(V16, 16))
    with pytest.raises(BadSampleError, match=r"outside its range \[0, 255\]"):
        reloaded.decode("image", image_i, image_bit_depth=8)  # the call's declaration wins over the spec's
    batch = reloaded(image=[image_i, V8])  # a 16-bit and an 8-bit sample under one declaration
    expected = plain(image=[PIL.Image.fromarray(scaled(V16, 16).astype(np.uint8)), V8])
    assert torch.equal(batch["image_pixel_values"], expected["image_pixel_values"])


def test_processor_spec_depth_is_validated(vit):
    with pytest.raises(
        ValueError, match=r"modality 'image': `image_bit_depth` must be an integer in \[1, 32\]"
    ):
        FusionProcessor.from_encoders({"image": {"path": vit, "image_bit_depth": 64}})
