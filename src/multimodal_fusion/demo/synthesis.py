"""Content of one demo sample per modality: a handwritten digit image, a DTMF tone, a phrase naming the digit,
and for each an *uninformative* replacement (noise image, noise audio, filler phrase).

Every function takes a ``numpy.random.Generator`` so a dataset is reproducible from one seed. The replacements
are drawn from the same rendering pipeline as the real content (same size, level and length distributions), so
a model can tell that a modality carries no label information but cannot learn anything about the label from it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

DTMF_FREQUENCIES: dict[int, tuple[float, float]] = {
    1: (697.0, 1209.0),
    2: (697.0, 1336.0),
    3: (697.0, 1477.0),
    4: (770.0, 1209.0),
    5: (770.0, 1336.0),
    6: (770.0, 1477.0),
    7: (852.0, 1209.0),
    8: (852.0, 1336.0),
    9: (852.0, 1477.0),
    0: (941.0, 1336.0),
}
"""Digit -> (low, high) frequency in Hz of its telephone keypad tone pair (ITU-T Q.23)."""

# --------------------------------------------------------------------------------------------------- image


def render_glyph(
    glyph: np.ndarray,
    rng: np.random.Generator,
    image_size: int = 32,
    glyph_size: int = 24,
    max_shift: int = 2,
) -> Image.Image:
    """Upscale an 8x8 glyph (values 0..16, as in ``sklearn.datasets.load_digits``) to ``glyph_size`` pixels,
    paste it on a black ``image_size`` square, centred then shifted by up to ``max_shift`` pixels per axis,
    and add light pixel noise; returns an RGB image (what RGB image encoders and processors expect)."""
    small = Image.fromarray((np.clip(glyph / 16.0, 0.0, 1.0) * 255).astype(np.uint8))
    big = np.asarray(small.resize((glyph_size, glyph_size), Image.BILINEAR), dtype=np.float32) / 255.0
    canvas = np.zeros((image_size, image_size), dtype=np.float32)
    centre = (image_size - glyph_size) // 2
    top, left = np.clip(centre + rng.integers(-max_shift, max_shift + 1, size=2), 0, image_size - glyph_size)
    canvas[top : top + glyph_size, left : left + glyph_size] = big
    canvas += rng.normal(0.0, 0.05, size=canvas.shape)
    gray = (np.clip(canvas, 0.0, 1.0) * 255).round().astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")


def noise_glyph(rng: np.random.Generator) -> np.ndarray:
    """A random 8x8 blob pattern with the value range and ink density of real glyphs (about 30% ink)."""
    return np.where(rng.random((8, 8)) < 0.45, rng.uniform(4.0, 16.0, size=(8, 8)), 0.0)


# --------------------------------------------------------------------------------------------------- audio


def _background(rng: np.random.Generator, num_samples: int, rms: float) -> np.ndarray:
    return rng.normal(0.0, rms, size=num_samples)


def _fade(wave: np.ndarray, sampling_rate: int, seconds: float = 0.005) -> np.ndarray:
    """Short linear fade in/out so tone onsets do not click (a broadband transient)."""
    ramp = min(int(seconds * sampling_rate), len(wave) // 2)
    envelope = np.ones(len(wave))
    envelope[:ramp] = np.linspace(0.0, 1.0, ramp)
    envelope[len(envelope) - ramp :] = np.linspace(1.0, 0.0, ramp)
    return wave * envelope


def _duration(rng: np.random.Generator, sampling_rate: int, min_seconds: float, max_seconds: float) -> int:
    return int(rng.uniform(min_seconds, max_seconds) * sampling_rate)


def dtmf_waveform(
    digit: int,
    rng: np.random.Generator,
    sampling_rate: int = 16000,
    min_seconds: float = 0.25,
    max_seconds: float = 1.0,
    snr_db: tuple[float, float] = (5.0, 20.0),
) -> np.ndarray:
    """The digit's DTMF tone pair with random duration, level (peak 0.05-0.6), phase, +-1% frequency drift
    (the standard tolerates 1.5%) and white background noise at a random SNR; float32 in [-1, 1]."""
    num_samples = _duration(rng, sampling_rate, min_seconds, max_seconds)
    t = np.arange(num_samples) / sampling_rate
    tone = sum(
        np.sin(2 * np.pi * f * rng.uniform(0.99, 1.01) * t + rng.uniform(0, 2 * np.pi))
        for f in DTMF_FREQUENCIES[digit]
    )
    tone = _fade(tone, sampling_rate) * rng.uniform(0.05, 0.6) / 2.0
    noise_rms = np.sqrt(np.mean(tone**2)) / 10 ** (rng.uniform(*snr_db) / 20)
    return np.clip(tone + _background(rng, num_samples, noise_rms), -1.0, 1.0).astype(np.float32)


def noise_waveform(
    rng: np.random.Generator,
    sampling_rate: int = 16000,
    min_seconds: float = 0.25,
    max_seconds: float = 1.0,
) -> np.ndarray:
    """Background noise only, with the duration and overall level distribution of the tones."""
    num_samples = _duration(rng, sampling_rate, min_seconds, max_seconds)
    wave = _fade(_background(rng, num_samples, rng.uniform(0.05, 0.6) / 2.0), sampling_rate)
    return np.clip(wave, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------- text

_WORDS: dict[str, tuple[str, ...]] = {
    "en": DIGIT_NAMES,
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
}

_NAMING_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("{w}", "the digit {w}", "it is a {w}", "number {w}", "I see {w}", "{w} please", "answer: {w}"),
    "fr": ("le chiffre {w}", "c'est {w}", "{w} s'il vous plaît"),
    "de": ("die Zahl {w}", "das ist {w}", "{w} bitte"),
    "es": ("el número {w}", "es {w}", "{w} por favor"),
    "it": ("il numero {w}", "è {w}", "{w} per favore"),
}
_NUMERAL_TEMPLATES = ("digit {n}", "number {n}", "#{n}", "the answer is {n}", "{n} !", "key {n}")
_ARITHMETIC_TEMPLATES = ("{a} + {b}", "{a} plus {b}", "{a}+{b} =", "what is {a} plus {b}?")
_SUBTRACTION_TEMPLATES = ("{a} - {b}", "{a} minus {b}", "{a}-{b} =", "take {b} from {a}")

FILLER_PHRASES = (
    "hello there",
    "the weather is nice today",
    "please call me later",
    "thanks a lot",
    "see you soon",
    "what a lovely day",
    "the quick brown fox",
    "no comment",
    "I cannot read it",
    "the digit is unknown",
    "number unavailable",
    "answer: not sure",
    "bonjour tout le monde",
    "guten Tag",
    "buenos días",
    "buona sera",
    "lorem ipsum dolor",
    "nothing to report",
    "the key was pressed",
    "what is the answer?",
)
"""Phrases with no digit in any of the languages used: the uninformative text replacement."""


def _casing(text: str, rng: np.random.Generator) -> str:
    style = rng.random()
    if style < 0.15:
        return text.upper()
    if style < 0.3:
        return text.capitalize()
    return text


def digit_phrase(digit: int, rng: np.random.Generator) -> str:
    """A short phrase naming ``digit``: a word in one of five languages, a numeral, or a sum / difference.

    Phrases always have some context (never a bare numeral or a bare ``null``), so csv readers cannot
    mistake the text column for numbers or missing values.
    """
    form = rng.random()
    if form < 0.55:
        language = str(rng.choice(list(_WORDS)))
        template = str(rng.choice(_NAMING_TEMPLATES[language]))
        word = _WORDS[language][digit]
        if language == "en" and template == "{w}":
            template = "just {w}"
        return _casing(template.format(w=word), rng)
    if form < 0.75:
        return str(rng.choice(_NUMERAL_TEMPLATES)).format(n=digit)
    if form < 0.9:
        a = int(rng.integers(0, digit + 1))
        return str(rng.choice(_ARITHMETIC_TEMPLATES)).format(a=a, b=digit - a)
    b = int(rng.integers(1, 4))
    return str(rng.choice(_SUBTRACTION_TEMPLATES)).format(a=digit + b, b=b)


def filler_phrase(rng: np.random.Generator) -> str:
    """A phrase that names no digit (see ``FILLER_PHRASES``), with the casing variation of the real ones."""
    return _casing(str(rng.choice(FILLER_PHRASES)), rng)
