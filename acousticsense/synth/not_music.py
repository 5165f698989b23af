"""Audio that is not music -- speech, noise, test tones -- for teaching and measuring "this is not music"."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sawtooth, sosfilt, square

from ..data import NOT_MUSIC  # the corpus folder (and manifest label) of these clips: trained towards no genre
from ..degrade import NOISE_KINDS, add_noise, noise
from ..errors import ParameterError
from ..speech import LANGUAGES, VARIANTS, WORDS, speak

KINDS = ("speech", "noise", "tones")
TONES = ("sine", "sweep", "beeps", "dtmf", "square", "sawtooth", "multisine")
DTMF = ((697, 1209), (697, 1336), (770, 1477), (852, 1209), (941, 1336), (941, 1633))


def not_music_seed(seed: int, kind: str, index: int) -> int:
    """The RNG seed of not-music clip `index` of `kind` in a corpus made with `seed`."""
    return int(np.random.SeedSequence([seed, 1000 + KINDS.index(kind), index]).generate_state(1, np.uint64)[0])


def _speech(n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    voice = f"{rng.choice(LANGUAGES)}+{rng.choice(VARIANTS)}"
    speed, pitch = int(rng.integers(120, 260)), int(rng.integers(10, 90))
    out, pos = np.zeros(n, np.float32), int(rng.integers(0, sr // 2))
    while pos < n:
        x = speak(" ".join(rng.choice(WORDS, size=int(rng.integers(4, 14)))), voice, speed, pitch, sr)[: n - pos]
        out[pos : pos + len(x)] += x
        pos += len(x) + int(rng.uniform(0.1, 0.9) * sr)
    return out, {"voice": voice, "speed": speed, "pitch": pitch}


def _tones(n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind, t = str(rng.choice(TONES)), np.arange(n) / sr
    f = float(np.exp(rng.uniform(np.log(60), np.log(4000))))
    if kind == "sine":
        x = np.sin(2 * np.pi * f * t)
    elif kind == "sweep":
        f1 = float(np.exp(rng.uniform(np.log(20), np.log(10000))))
        x = np.sin(2 * np.pi * np.cumsum(np.geomspace(f, f1, n)) / sr)
    elif kind == "beeps":
        period, duty = rng.uniform(0.2, 2.0), rng.uniform(0.1, 0.6)
        x = np.sin(2 * np.pi * f * t) * ((t % period) < duty * period)
    elif kind == "dtmf":
        x, step = np.zeros(n), int(rng.uniform(0.15, 0.4) * sr)
        for i in range(0, n, 2 * step):
            lo, hi = DTMF[int(rng.integers(len(DTMF)))]
            seg = t[i : i + step]
            x[i : i + step] = np.sin(2 * np.pi * lo * seg) + np.sin(2 * np.pi * hi * seg)
    elif kind == "square":
        x = square(2 * np.pi * f * t)
    elif kind == "sawtooth":
        x = sawtooth(2 * np.pi * f * t)
    else:
        x = sum(np.sin(2 * np.pi * float(np.exp(rng.uniform(np.log(60), np.log(6000)))) * t) for _ in range(int(rng.integers(2, 6))))
    return x.astype(np.float32), {"tone": kind, "frequency": round(f, 1)}


def _noise(n: int, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    kind = str(rng.choice(NOISE_KINDS))
    x = noise(kind, n, sr, rng)
    band = None
    if rng.random() < 0.4:  # filtered: wind, rumble, hiss
        top = min(9000.0, 0.44 * sr)  # band edges below the 0.45 sr the filter is capped at, at any sample rate
        lo, hi = sorted(np.exp(rng.uniform(np.log(40), np.log(top), 2)))
        band = (round(float(lo)), round(float(max(hi, lo * 1.5))))
        x = sosfilt(butter(2, [band[0], min(band[1], 0.45 * sr)], "bandpass", fs=sr, output="sos"), x)
    return x.astype(np.float32), {"noise": kind, "band_hz": band}


def render_not_music(kind: str, rng_seed: int, seconds: float, sample_rate: int) -> tuple[np.ndarray, dict]:
    """One clip of speech (espeak-ng, many languages and voices), noise (NOISE_KINDS, some band-passed) or tones
    (sine, sweep, beeps, DTMF, square, sawtooth, several sines): mono float32 and its parameters."""
    if kind not in KINDS:
        raise ParameterError(f"unknown not-music kind {kind!r}; known: {', '.join(KINDS)}")
    rng, n = np.random.default_rng(rng_seed), round(seconds * sample_rate)
    x, params = {"speech": _speech, "noise": _noise, "tones": _tones}[kind](n, sample_rate, rng)
    if kind != "noise" and rng.random() < 0.5:
        snr = float(rng.uniform(5, 40))
        x = add_noise(x, noise(str(rng.choice(NOISE_KINDS[:4])), n, sample_rate, rng), snr)
        params["snr_db"] = round(snr, 1)
    peak = np.abs(x).max()
    x = x / peak * 10 ** (rng.uniform(-20, -1) / 20) if peak > 0 else x
    return x.astype(np.float32), {"label": NOT_MUSIC, "kind": kind, "rng_seed": int(rng_seed), "seconds": float(seconds),
                                  "sample_rate": int(sample_rate), **params}
