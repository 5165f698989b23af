"""Voices in a song: rap verses spoken by espeak-ng on the beat grid, and sung lines from a source-filter singer."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

from ..speech import WORDS, speak

VOWEL_FORMANTS = {  # (F1, F2, F3) Hz and bandwidths are set from these: a classic source-filter table
    "a": (800, 1150, 2900), "e": (400, 1600, 2700), "i": (300, 2300, 3000), "o": (450, 800, 2830), "u": (325, 700, 2530),
}


def _fade(x: np.ndarray, n: int) -> np.ndarray:
    n = min(n, len(x) // 2)
    if n > 0:
        ramp = np.linspace(0, 1, n, dtype=np.float32)
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


def spoken_verse(onsets: list[tuple[float, float, int]], plan: dict, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Words spoken on the beat grid: one word per (start s, slot length s, accent velocity), cut to its slot."""
    out = np.zeros(n, np.float32)
    for start, slot, velocity in onsets:
        i = round(start * sr)
        if i >= n:
            continue
        word = speak(str(rng.choice(WORDS)), plan["speaker"], plan["speed"], plan["pitch"] + int(rng.integers(-6, 7)), sr)
        word = _fade(np.trim_zeros(word).copy()[: max(1, round(slot * sr))], round(0.005 * sr))
        word = word[: n - i] * (velocity / 100)
        out[i : i + len(word)] += word
    return out


def sung_line(notes: list[tuple[float, float, int, int]], plan: dict, rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A sung melody: per note (start s, end s, MIDI pitch, velocity) a harmonic source with vibrato and breath noise,
    shaped by the formants of a vowel drawn per note. The singer's formant scale moves all formants (voice size)."""
    out = np.zeros(n, np.float32)
    for start, end, pitch, velocity in notes:
        i, j = round(start * sr), min(n, round((end + 0.06) * sr))
        if j - i < 16:
            continue
        t = np.arange(j - i) / sr
        vib = plan["vibrato_cents"] / 1200 * np.sin(2 * np.pi * plan["vibrato_hz"] * t) * np.clip(t / 0.25, 0, 1)
        f0 = 440.0 * 2 ** ((pitch - 69) / 12 + vib)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        harmonics = int(0.45 * sr / (f0.max() + 1))
        source = sum(np.sin(k * phase) / k ** plan["tilt"] for k in range(1, harmonics + 1))
        source = source + plan["breath"] * rng.standard_normal(len(t))
        voiced = np.zeros(len(t))
        for f, scale in zip(VOWEL_FORMANTS[str(rng.choice(list(VOWEL_FORMANTS)))], (1.0, 0.5, 0.25)):
            voiced += scale * _resonator(source, f * plan["formant_scale"], 60 + f / 20, sr)
        env = np.minimum(1, np.minimum(t / 0.03, (t[-1] - t) / 0.06 + 1e-9))
        out[i:j] += (voiced * env * velocity / 127).astype(np.float32)
    peak = np.abs(out).max()
    return out / peak if peak > 0 else out


def _resonator(x: np.ndarray, freq: float, bandwidth: float, sr: int) -> np.ndarray:
    """Two-pole resonator at `freq` Hz with unity peak gain (one formant)."""
    r = np.exp(-np.pi * bandwidth / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * min(freq, 0.45 * sr) / sr), r * r]
    return lfilter([1 - r], a, x)
