"""FusionProcessor: raw images, waveforms, texts and vectors -> one batch of ``{name}_{field}`` tensors.

One sub-processor per named modality (the encoder's own image processor, feature extractor or tokenizer), so
the tensors are exactly what each encoder was trained on. transformers' ``ProcessorMixin`` has fixed attribute
names; modality names here are free, so this class does its own (de)serialisation: one sub-folder per modality
plus a ``processor_config.json``, registered with ``AutoProcessor`` when the package is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
from transformers import (
    BatchFeature,
)
from transformers.utils import PushToHubMixin

from .audio_decoding import decode_audio
from .bad_samples import BadSampleError
from .image_decoding import decode_image
from .module_processing import batch_frames, decode_frames, processor_fields
from .processor_loading import (  # noqa: F401 (re-exported)
    PROCESSOR_SPEC_KEYS,
    ProcessorLoadingMixin,
    kind_of_processor,
    normalize_processor_spec,
    text_max_length,
)


def _is_batch(kind: str, value: Any) -> bool:
    """A list/tuple/datasets column of samples, as opposed to one sample (a list of numbers is one waveform or
    one vector; an array is one sample, except a 2-D array of feature vectors)."""
    if kind == "features" and hasattr(value, "shape"):
        return len(value.shape) == 2
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(value, Sequence):
        return False
    if kind in ("audio", "features") and len(value) > 0:
        return not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    return True


def _for_modality(value: Any, name: str) -> Any:
    """A per-call option given as one value or as modality -> value."""
    return value.get(name) if isinstance(value, Mapping) else value


def _decode_image_sample(
    spec: Mapping[str, Any], name: str, value: Any, input_data_format: Any, image_bit_depth: Any
) -> Any:
    """[`decode_image`] with the per-call layout / bit depth of modality ``name``, else its spec's."""
    layout = _for_modality(input_data_format, name) or spec.get("input_data_format")
    depth = _for_modality(image_bit_depth, name)
    return decode_image(value, layout, bit_depth=spec.get("image_bit_depth") if depth is None else depth)


def _keep_fields(out: Any, wanted: Sequence[str]) -> dict[str, torch.Tensor]:
    """The sub-processor outputs the encoder takes (its adapter's ``input_fields``), as tensors."""
    return {field: torch.as_tensor(np.asarray(out[field])) for field in wanted if field in out}


class FusionProcessor(ProcessorLoadingMixin, PushToHubMixin):
    """Turns raw samples into the batch a [`FusionModel`] takes, with each encoder's own pre-processing.

    Build it with [`FusionProcessor.from_encoders`] (the same mapping as the model) or load it with
    ``from_pretrained`` / ``AutoProcessor.from_pretrained``. Call it with one keyword per modality:

    ```python
    batch = processor(image=[pil, None], audio=[wave, "clip.wav"], text=["a", "b"], sampling_rate=16000)
    ```

    Each keyword takes a list (or one sample). ``None`` entries are missing samples: they get a zero placeholder
    and the batch gets ``{name}_mask`` (False = missing), which the model honours. Output fields per kind: image
    ``{name}_pixel_values``; audio ``{name}_input_values`` + ``{name}_attention_mask`` (always); text
    ``{name}_input_ids`` + ``{name}_attention_mask`` (+ ``{name}_token_type_ids``); features ``{name}_values``.

    Args:
        modalities: name -> sub-processor (image processor, feature extractor or tokenizer; the kind is read from
            its type) or a spec dict: ``processor``, ``kind``, ``path`` (where it came from), ``max_length``
            (text; default the tokenizer's ``model_max_length``), ``min_audio_samples`` (audio; shorter clips
            are bad samples), ``input_dim`` (kind ``features``, which has no sub-processor).
        max_audio_seconds: keep at most this many seconds of each clip (one number, or name -> number).
    """

    def __init__(
        self,
        modalities: Mapping[str, Any],
        *,
        max_audio_seconds: float | Mapping[str, float] | None = None,
    ):
        if not isinstance(modalities, Mapping) or not modalities:
            raise ValueError(
                "`modalities` must be a non-empty mapping of modality name -> sub-processor or spec"
            )
        self.processors: dict[str, Any] = {}
        self.modalities: dict[str, dict[str, Any]] = {}
        for name, spec in modalities.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(
                    f"modality name {name!r} must be a valid identifier (it prefixes batch keys)"
                )
            self.modalities[name], self.processors[name] = normalize_processor_spec(name, spec)
        if isinstance(max_audio_seconds, Mapping):
            unknown = set(max_audio_seconds) - set(self.modalities)
            if unknown:
                raise ValueError(f"`max_audio_seconds` names unknown modalities {sorted(unknown)}")
            max_audio_seconds = dict(max_audio_seconds)
        self.max_audio_seconds = max_audio_seconds
        for name in self.audio_modalities:
            seconds = self._max_audio_seconds(name)
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
            ):
                raise ValueError(
                    f"modality '{name}': `max_audio_seconds` must be a positive number, got {seconds!r}"
                )
        self._image_placeholders: dict[str, torch.Size] = {}

    # ------------------------------------------------------------------ introspection
    @property
    def modality_names(self) -> list[str]:
        """Modality names in order."""
        return list(self.modalities)

    @property
    def audio_modalities(self) -> list[str]:
        return [
            n for n, spec in self.modalities.items() if spec["kind"] == "audio" and not spec.get("frames")
        ]

    @property
    def model_input_names(self) -> list[str]:
        """Batch keys this processor can produce (``{name}_mask`` appears only when a sample is missing)."""
        names = []
        for name, spec in self.modalities.items():
            fields = processor_fields(spec, self.processors.get(name))
            names.extend(f"{name}_{field}" for field in fields if field != "position_ids")
            names.append(f"{name}_mask")
        return names

    def _max_audio_seconds(self, name: str) -> float | None:
        value = self.max_audio_seconds
        return value.get(name) if isinstance(value, Mapping) else value

    def sampling_rate(self, name: str) -> int:
        """The sampling rate audio modality ``name`` is resampled to (its feature extractor's)."""
        return self.modalities[name]["sampling_rate"]

    def __repr__(self) -> str:
        parts = []
        for name, spec in self.modalities.items():
            processor = self.processors[name]
            parts.append(f"  {name} ({spec['kind']}): {type(processor).__name__ if processor else spec}")
        return (
            f"{type(self).__name__}(\n"
            + "\n".join(parts)
            + f"\n  max_audio_seconds={self.max_audio_seconds}\n)"
        )

    # ------------------------------------------------------------------ decoding one sample
    def decode(
        self,
        name: str,
        value: Any,
        sampling_rate: int | Mapping[str, int] | None = None,
        input_data_format: str | Mapping[str, str] | None = None,
        image_bit_depth: int | Mapping[str, int] | None = None,
    ) -> Any:
        """One raw sample of modality ``name`` -> its canonical form, checked: an RGB ``PIL.Image``, a float32
        mono waveform at the encoder's rate, a string, or a float32 vector.

        ``input_data_format`` / ``image_bit_depth``: image array layout / bit depth (one value or modality ->
        value; default the spec's; see [`decode_image`]). Raises [`BadSampleError`] naming modality, file."""
        if name not in self.modalities:
            raise ValueError(f"unknown modality '{name}'; modalities are {self.modality_names}")
        spec = self.modalities[name]
        kind = spec["kind"]
        try:
            if kind == "image":
                return _decode_image_sample(spec, name, value, input_data_format, image_bit_depth)
            if spec.get("frames"):  # precomputed frames for your own network
                return decode_frames(spec["input_dim"], value)
            if kind == "audio":
                rate = sampling_rate.get(name) if isinstance(sampling_rate, Mapping) else sampling_rate
                target = spec["sampling_rate"]
                seconds = self._max_audio_seconds(name)
                return decode_audio(
                    value,
                    target,
                    sampling_rate=rate,
                    max_samples=None if seconds is None else max(1, math.floor(seconds * target)),
                    min_samples=spec.get("min_audio_samples") or 1,
                )
            if kind == "text":
                if not isinstance(value, str):
                    raise BadSampleError(
                        f"text of type {type(value).__name__} ({value!r:.50}); expected a string"
                    )
                return value
            return self._decode_vector(spec["input_dim"], value)
        except BadSampleError as error:
            raise error.locate(modality=name) from error.__cause__

    @staticmethod
    def _decode_vector(input_dim: int, value: Any) -> np.ndarray:
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

    # ------------------------------------------------------------------ batching
    def _as_list(self, name: str, value: Any) -> list[Any]:
        kind = self.modalities[name]["kind"]
        if _is_batch(kind, value):
            return list(value)
        return [value]

    def __call__(
        self,
        *,
        sampling_rate: int | Mapping[str, int] | None = None,
        return_tensors: str | None = "pt",
        input_data_format: str | Mapping[str, str] | None = None,
        image_bit_depth: int | Mapping[str, int] | None = None,
        **inputs: Any,
    ) -> BatchFeature:
        """Decode, resample, pre-process and pad one batch.

        Args:
            sampling_rate: rate of raw audio arrays (one number, or modality name -> number); samples that carry
                their own rate (dicts, decoders, files) use theirs. Arrays with no rate are an error.
            return_tensors: ``"pt"`` (default) or ``"np"``.
            input_data_format, image_bit_depth: layout of image arrays (``"channels_first"`` or
                ``"channels_last"``, as in transformers' image processors; needed for an ambiguous shape such
                as ``[3, 3, 3]``) / bit depth of integer images (one value or modality -> value; decode_image).
            inputs: one keyword per modality: a list of samples (``None`` = missing) or one sample.

        Raises [`BadSampleError`] naming the modality, the sample's position and the file for unusable data.
        """
        unknown = set(inputs) - set(self.modalities)
        if unknown:
            raise ValueError(
                f"unknown modalities {sorted(unknown)}; this processor takes {self.modality_names} "
                f"(one keyword per modality)"
            )
        lists = {name: self._as_list(name, value) for name, value in inputs.items() if value is not None}
        if not lists:
            raise ValueError(f"no input given; pass at least one of {self.modality_names}")
        sizes = {name: len(samples) for name, samples in lists.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"every modality needs one entry per sample (None = missing); got sizes {sizes}")
        decoded: dict[str, list[Any]] = {}
        for name, samples in lists.items():
            decoded[name] = []
            for index, sample in enumerate(samples):
                try:
                    decoded[name].append(
                        None
                        if sample is None
                        else self.decode(name, sample, sampling_rate, input_data_format, image_bit_depth)
                    )
                except BadSampleError as error:
                    raise error.locate(row=f"sample {index}") from error.__cause__
        return self.process_decoded(decoded, return_tensors=return_tensors)

    def process_decoded(
        self, decoded: Mapping[str, Sequence[Any]], return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Batch samples already passed through [`decode`] (``None`` = missing): run each sub-processor on the
        present samples, put zero placeholders in the missing rows and add ``{name}_mask`` where one is missing."""
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"`return_tensors` must be 'pt' or 'np', got {return_tensors!r}")
        batch: dict[str, Any] = {}
        for name, samples in decoded.items():
            samples = list(samples)
            present = [i for i, sample in enumerate(samples) if sample is not None]
            kind = self.modalities[name]["kind"]
            fields = getattr(self, f"_batch_{kind}")(name, [samples[i] for i in present])
            rows = torch.tensor(present, dtype=torch.long)
            for field, (values, fill) in fields.items():
                if len(present) == len(samples):
                    batch[f"{name}_{field}"] = values
                    continue
                full = torch.full((len(samples), *values.shape[1:]), fill, dtype=values.dtype)
                batch[f"{name}_{field}"] = full.index_copy(0, rows, values) if present else full
            if len(present) < len(samples):
                mask = torch.zeros(len(samples), dtype=torch.bool)
                mask[rows] = True
                batch[f"{name}_mask"] = mask
        if return_tensors == "np":
            batch = {key: value.numpy() for key, value in batch.items()}
        return BatchFeature(batch)

    def _batch_image(self, name: str, images: list[PIL.Image.Image]) -> dict[str, tuple[torch.Tensor, int]]:
        processor = self.processors[name]
        if not images:
            if name not in self._image_placeholders:
                probe = PIL.Image.new("RGB", (224, 224))
                self._image_placeholders[name] = processor(images=[probe], return_tensors="pt")[
                    "pixel_values"
                ].shape[1:]
            return {"pixel_values": (torch.zeros(0, *self._image_placeholders[name]), 0)}
        pixel_values = torch.as_tensor(processor(images=images, return_tensors="pt")["pixel_values"])
        self._image_placeholders[name] = pixel_values.shape[1:]
        return {"pixel_values": (pixel_values, 0)}

    def _batch_audio(self, name: str, waves: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, int]]:
        spec, processor = self.modalities[name], self.processors[name]
        fields = processor_fields(spec, processor)
        if spec.get("frames") or not waves and not spec.get("input_fields") and fields[0] == "input_features":
            return batch_frames(waves, spec.get("input_dim") or processor.feature_size)  # your own network
        if not waves:  # an all-missing batch: placeholders for waveform encoders only
            empty = {
                "input_values": torch.zeros(0, 1),
                "attention_mask": torch.zeros(0, 1, dtype=torch.int32),
            }
            return {k: (v, 0) for k, v in empty.items()} if fields[0] == "input_values" else {}
        call_kwargs = spec.get("call_kwargs") or {"padding": True, "return_attention_mask": True}
        out = processor(waves, sampling_rate=spec["sampling_rate"], return_tensors="pt", **call_kwargs)
        if fields[0] not in out:
            raise ValueError(
                f"modality '{name}': the feature extractor returned {sorted(out)}; the encoder takes '{fields[0]}'"
            )
        return {field: (value, 0) for field, value in _keep_fields(out, fields).items()}

    def _batch_text(self, name: str, texts: list[str]) -> dict[str, tuple[torch.Tensor, int]]:
        tokenizer = self.processors[name]
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        max_length = self.modalities[name].get("max_length")
        if not texts:
            fields = ["input_ids", "attention_mask"]
            if "token_type_ids" in tokenizer.model_input_names:
                fields.append("token_type_ids")
            wanted = self.modalities[name].get("input_fields") or fields
            fields = [f for f in fields if f in wanted]
            return {
                f: (torch.zeros(0, 1, dtype=torch.long), pad_id if f == "input_ids" else 0) for f in fields
            }
        call_kwargs = dict(padding=True, truncation=max_length is not None, max_length=max_length)
        call_kwargs.update(return_attention_mask=True, **(self.modalities[name].get("call_kwargs") or {}))
        out = tokenizer(texts, return_tensors="pt", **call_kwargs)
        wanted = self.modalities[name].get("input_fields") or (
            "input_ids",
            "attention_mask",
            "token_type_ids",
        )
        fields = _keep_fields(out, wanted)
        return {field: (value, pad_id if field == "input_ids" else 0) for field, value in fields.items()}

    def _batch_features(self, name: str, vectors: list[np.ndarray]) -> dict[str, tuple[torch.Tensor, int]]:
        dim = self.modalities[name]["input_dim"]
        if not vectors:
            return {"values": (torch.zeros(0, dim), 0)}
        return {"values": (torch.from_numpy(np.stack(vectors)).float(), 0)}
