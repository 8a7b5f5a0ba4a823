"""FusionProcessor: raw images, waveforms, texts and vectors -> one batch of ``{name}_{field}`` tensors.

One sub-processor per named modality (the encoder's own image processor, feature extractor or tokenizer), so
the tensors are exactly what each encoder was trained on. transformers' ``ProcessorMixin`` has fixed attribute
names; modality names here are free, so this class does its own (de)serialisation: one sub-folder per modality
plus a ``processor_config.json``, registered with ``AutoProcessor`` when the package is imported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import BatchFeature
from transformers.utils import PushToHubMixin

from .audio_decoding import decode_audio  # noqa: F401 (the processor's decoders: its remote code copies them)
from .bad_samples import BadSampleError
from .image_decoding import decode_image  # noqa: F401
from .modality_kind import option_for
from .modality_kinds import get_kind
from .module_processing import processor_fields
from .processor_loading import (  # noqa: F401 (re-exported)
    PROCESSOR_SPEC_KEYS,
    ProcessorLoadingMixin,
    ProcessorSpec,
    kind_of_processor,
    normalize_processor_spec,
    text_max_length,
)


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
            its type) or a spec dict (or [`ProcessorSpec`]): ``processor``, ``kind``, ``path`` (where it came from), ``max_length``
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
        self.modalities: dict[str, ProcessorSpec] = {}
        """Per modality, its settings (read by attribute: ``processor.modalities["text"].max_length``)."""
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
            seconds = self.max_audio_seconds_of(name)
            if seconds is not None and (
                isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0
            ):
                raise ValueError(
                    f"modality '{name}': `max_audio_seconds` must be a positive number, got {seconds!r}"
                )
        self.placeholder_shapes: dict[str, torch.Size] = {}
        """Per modality, the shape of one sample's fields (image placeholders of an all-missing batch)."""

    # ------------------------------------------------------------------ introspection
    @property
    def modality_names(self) -> list[str]:
        """Modality names in order."""
        return list(self.modalities)

    @property
    def audio_modalities(self) -> list[str]:
        """Modalities whose samples are waveforms (``sampling_rate`` and ``max_audio_seconds`` apply)."""
        return [n for n, spec in self.modalities.items() if get_kind(spec.kind).is_waveform(spec)]

    @property
    def model_input_names(self) -> list[str]:
        """Batch keys this processor can produce (``{name}_mask`` appears only when a sample is missing)."""
        names = []
        for name, spec in self.modalities.items():
            fields = processor_fields(spec, self.processors.get(name))
            names.extend(f"{name}_{field}" for field in fields if field != "position_ids")
            names.append(f"{name}_mask")
        return names

    def max_audio_seconds_of(self, name: str) -> float | None:
        """The crop length in seconds of audio modality ``name`` (``None`` = whole clips)."""
        return option_for(self.max_audio_seconds, name)

    def sampling_rate(self, name: str) -> int:
        """The sampling rate audio modality ``name`` is resampled to (its feature extractor's)."""
        return self.modalities[name].sampling_rate

    def __repr__(self) -> str:
        parts = []
        for name, spec in self.modalities.items():
            processor = self.processors[name]
            parts.append(
                f"  {name} ({spec.kind}): {type(processor).__name__ if processor else spec.to_dict()}"
            )
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
        options = {
            "sampling_rate": sampling_rate,
            "input_data_format": input_data_format,
            "image_bit_depth": image_bit_depth,
        }
        try:
            return get_kind(self.modalities[name].kind).decode(self, name, value, options)
        except BadSampleError as error:
            raise error.locate(modality=name) from error.__cause__

    # ------------------------------------------------------------------ batching
    def _as_list(self, name: str, value: Any) -> list[Any]:
        if get_kind(self.modalities[name].kind).is_batch(value):
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
            kind = get_kind(self.modalities[name].kind)
            fields = kind.batch(self, name, [samples[i] for i in present])
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
