"""Audio decoding: any waveform a user or a dataset row holds -> float32 mono at the encoder's sampling rate.

Accepted: numpy/torch arrays (mono ``[samples]`` or multi-channel ``[channels, samples]`` / ``[samples,
channels]``), ``{"array", "sampling_rate"}`` dicts, ``{"path", "bytes"}`` dicts (``datasets.Audio(decode=False)``),
datasets' lazy ``AudioDecoder`` objects, file paths and raw file bytes. Files are read with soundfile (it bundles
libsndfile, so wav/flac/ogg/mp3 decode without a system FFmpeg); torchcodec, when installed (extra ``audio``),
reads the formats libsndfile cannot. Resampling uses soxr (high quality). Every failure is a
[`BadSampleError`] saying what was expected.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile
import soxr

from .bad_samples import BadSampleError

FILE_FORMATS_HINT = (
    "a readable audio file (wav, flac, ogg, mp3 via soundfile; install the `audio` extra, torchcodec, "
    "for other formats)"
)
MAX_CHANNELS = 16
"""A 2-D array whose smaller axis is at most this long is read as multi-channel audio."""


def _torchcodec_decoder():
    try:
        from torchcodec.decoders import AudioDecoder
    except (ImportError, RuntimeError, OSError):  # not installed, or its FFmpeg libraries are missing
        return None
    return AudioDecoder


def read_audio_file(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Decode an audio file (path or file bytes) to ``([channels, samples] float32, sampling_rate)``."""
    path = None if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    if path is not None and not os.path.isfile(path):
        raise BadSampleError("audio file not found; expected " + FILE_FORMATS_HINT, path=path)
    try:
        data, rate = soundfile.read(
            path if path is not None else io.BytesIO(bytes(source)), dtype="float32", always_2d=True
        )
        return np.ascontiguousarray(data.T), int(rate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        soundfile_error = error
    decoder = _torchcodec_decoder()
    if decoder is not None:
        try:
            samples = decoder(path if path is not None else bytes(source)).get_all_samples()
            return samples.data.float().numpy(), int(samples.sample_rate)
        except Exception as error:  # torchcodec raises RuntimeError/ValueError for undecodable data
            raise BadSampleError(
                f"cannot decode audio (soundfile: {soundfile_error}; torchcodec: {error}); expected "
                + FILE_FORMATS_HINT,
                path=path,
            ) from error
    raise BadSampleError(
        f"cannot decode audio ({soundfile_error}); expected " + FILE_FORMATS_HINT, path=path
    ) from soundfile_error


def audio_file_duration(source: str | os.PathLike | bytes) -> float:
    """Duration in seconds from the file header (no decoding), for length-grouped batching."""
    path = None if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    try:
        info = soundfile.info(path if path is not None else io.BytesIO(bytes(source)))
        return float(info.frames) / float(info.samplerate)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        decoder = _torchcodec_decoder()
        if decoder is None:
            raise BadSampleError(
                f"cannot read audio header ({error}); expected " + FILE_FORMATS_HINT, path=path
            ) from error
        try:
            metadata = decoder(path if path is not None else bytes(source)).metadata
            return float(metadata.duration_seconds_from_header or metadata.duration_seconds or 0.0)
        except Exception as torchcodec_error:
            raise BadSampleError(
                f"cannot read audio header ({torchcodec_error}); expected " + FILE_FORMATS_HINT, path=path
            ) from torchcodec_error


def _check_rate(rate: Any, path: str | None) -> int:
    if rate is None:
        raise BadSampleError(
            "audio array without a sampling rate; pass `sampling_rate=` or give "
            "{'array': ..., 'sampling_rate': ...} (the encoder's rate is not assumed)",
            path=path,
        )
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)):
        raise BadSampleError(f"sampling rate must be a positive number, got {rate!r}", path=path)
    if not math.isfinite(float(rate)) or float(rate) <= 0 or float(rate) != int(rate):
        raise BadSampleError(f"sampling rate must be a positive whole number of Hz, got {rate!r}", path=path)
    return int(rate)


def to_mono_float32(array: Any, path: str | None = None) -> np.ndarray:
    """One waveform as float32 mono: channels are averaged; int16/int32/uint8 PCM is scaled to [-1, 1]."""
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    elif isinstance(array, (list, tuple)):
        try:
            array = np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise BadSampleError(f"audio list must hold numbers ({error})", path=path) from None
    array = np.asarray(array)
    if array.dtype == np.int16:
        array = array.astype(np.float32) / 32768.0
    elif array.dtype == np.int32:
        array = (array.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif array.dtype == np.uint8:
        array = (array.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    else:
        raise BadSampleError(
            f"audio array has dtype {array.dtype}; expected float samples or int16/int32/uint8 PCM", path=path
        )
    if array.size == 0:  # before mixing channels: the mean of no samples would be NaN
        raise BadSampleError(
            f"empty waveform (array of shape {array.shape}, 0 samples); expected audio with at least one "
            "sample",
            path=path,
        )
    if array.ndim == 2:
        small = int(np.argmin(array.shape))
        if array.shape[small] > MAX_CHANNELS or array.shape[0] == array.shape[1] and array.shape[0] > 1:
            raise BadSampleError(
                f"audio array of shape {array.shape} is ambiguous; expected [samples], [channels, samples] or "
                f"[samples, channels] with at most {MAX_CHANNELS} channels",
                path=path,
            )
        array = array.mean(axis=small, dtype=np.float32)
    elif array.ndim != 1:
        raise BadSampleError(
            f"audio array of shape {array.shape}; expected [samples] or [channels, samples]", path=path
        )
    return np.ascontiguousarray(array)


def resample(wave: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of a float32 mono waveform with soxr (high quality)."""
    if orig_rate == target_rate:
        return wave
    return soxr.resample(wave, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _raw_audio(value: Any, sampling_rate: int | None) -> tuple[Any, Any, str | None]:
    """Split any accepted audio value into (samples, rate, path) without resampling."""
    if isinstance(value, (str, os.PathLike)):
        data, rate = read_audio_file(value)
        return data, rate, os.fspath(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        data, rate = read_audio_file(value)
        return data, rate, None
    if isinstance(value, Mapping):
        path = value.get("path")
        path = os.fspath(path) if path is not None else None
        if value.get("array") is not None:
            return value["array"], value.get("sampling_rate", sampling_rate), path
        if value.get("bytes") is not None:
            try:
                data, rate = read_audio_file(value["bytes"])
            except BadSampleError as error:
                error.path = path
                raise
            return data, rate, path
        if path is not None:
            data, rate = read_audio_file(path)
            return data, rate, path
        raise BadSampleError(
            f"audio dict with keys {sorted(value)}; expected 'array' + 'sampling_rate', 'bytes' or 'path'"
        )
    if hasattr(value, "get_all_samples"):  # datasets' / torchcodec's lazy AudioDecoder
        try:
            samples = value.get_all_samples()
        except Exception as error:
            raise BadSampleError(f"the audio decoder failed: {error}") from error
        return samples.data, samples.sample_rate, None
    if hasattr(value, "shape") or isinstance(value, (list, tuple)):
        return value, sampling_rate, None
    raise BadSampleError(
        f"audio of type {type(value).__name__}; expected an array, a dict with 'array'/'sampling_rate', "
        "an AudioDecoder, a file path or file bytes"
    )


def decode_audio(
    value: Any,
    target_rate: int,
    *,
    sampling_rate: int | None = None,
    max_samples: int | None = None,
    min_samples: int = 1,
) -> np.ndarray:
    """Any accepted audio value -> float32 mono waveform at ``target_rate``.

    Args:
        value: the sample (see the module docstring).
        target_rate: the encoder's sampling rate.
        sampling_rate: rate of a raw array that does not carry its own; ``None`` makes such arrays an error.
        max_samples: keep at most this many samples (at ``target_rate``).
        min_samples: shorter waveforms are an error (the encoder's convolutions need this many).
    """
    samples, rate, path = _raw_audio(value, sampling_rate)
    rate = _check_rate(rate, path)
    wave = to_mono_float32(samples, path)
    if wave.size == 0:
        raise BadSampleError("empty waveform (0 samples); expected audio with at least one sample", path=path)
    if not np.isfinite(wave).all():
        raise BadSampleError(
            f"waveform holds {int((~np.isfinite(wave)).sum())} NaN/inf samples; expected finite values",
            path=path,
        )
    if max_samples is not None:
        # cut before resampling (cheaper), keeping a margin so the kept part is resampled as in the full clip
        keep = math.ceil(max_samples * rate / target_rate) + rate // 10
        wave = wave[:keep]
    wave = resample(wave, rate, target_rate)
    if max_samples is not None:
        wave = wave[:max_samples]
    if wave.shape[0] < min_samples:
        raise BadSampleError(
            f"waveform of {wave.shape[0]} samples at {target_rate} Hz is too short; the encoder needs at least "
            f"{min_samples} samples ({min_samples / target_rate * 1000:.1f} ms)",
            path=path,
        )
    return wave
