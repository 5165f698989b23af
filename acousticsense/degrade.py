"""Real-world degradations of audio: coloured and everyday noise, band-limiting, codecs.

Used by the synthetic corpus (its "not music" clips), by training (noise added to the power mel, see
`augment.NoiseBank`), and by the robustness benchmark. numpy/scipy/PyAV only; babble needs espeak-ng.
"""

from __future__ import annotations

import io

import numpy as np
from scipy.signal import butter, sosfilt

from .errors import ParameterError

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=float)
    f[0] = 1.0
    return unit_rms(np.fft.irfft(spectrum / f ** (exponent / 2), n))


def rms(x: np.ndarray) -> float:
    """Root mean square, in float64 (0 for no samples)."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def unit_rms(x: np.ndarray) -> np.ndarray:
    """x scaled to RMS 1 (silence stays silence)."""
    return x / (rms(x) + 1e-12)


def hum(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with odd-heavy harmonics and a little buzz, unit RMS."""
    f0 = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(n) / sr
    x = sum(rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 12))
    return unit_rms(x + 0.05 * coloured_noise(n, rng, 1.0))


def noise(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS background noise of one of NOISE_KINDS (babble: overlapping espeak-ng talkers)."""
    if kind in ("white", "pink", "brown"):
        return coloured_noise(n, rng, {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind])
    if kind == "hum":
        return hum(n, sr, rng)
    if kind == "babble":
        from .speech import babble

        return unit_rms(babble(n, sr, rng).astype(np.float64))
    raise ParameterError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")


def add_noise(x: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    """x plus `background` scaled to `snr_db` below x's RMS, rescaled so the peak stays within [-1, 1]."""
    y = x + unit_rms(background[: len(x)]) * rms(x) * 10 ** (-snr_db / 20)
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def band_limit(x: np.ndarray, sr: int, low_hz: float, high_hz: float) -> np.ndarray:
    """A telephone/cheap-speaker band: 4th-order band-pass from low_hz to high_hz."""
    sos = butter(4, [low_hz, min(high_hz, 0.45 * sr)], "bandpass", fs=sr, output="sos")
    return sosfilt(sos, x).astype(np.float32)


CONTAINERS = {"libopus": "ogg", "libmp3lame": "mp3", "aac": "adts", "flac": "flac"}  # the encoders in PyAV's FFmpeg


def encode(x: np.ndarray, sr: int, codec: str, bitrate: int) -> bytes:
    """Mono float audio encoded by FFmpeg's `codec` (a CONTAINERS key) at `bitrate` bit/s, as a file's bytes.
    Opus is encoded at 48 kHz (FFmpeg's resampler converts), the others at `sr`."""
    import av

    if codec not in CONTAINERS:
        raise ParameterError(f"unknown codec {codec!r}; known: {', '.join(CONTAINERS)}")
    rate = 48000 if codec == "libopus" else sr
    buf = io.BytesIO()
    with av.open(buf, "w", format=CONTAINERS[codec]) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bitrate
        resampler = av.AudioResampler(format="s16p" if codec == "libmp3lame" else "s16", layout="mono", rate=rate)
        frame = av.AudioFrame.from_ndarray(np.clip(x, -1, 1)[None].astype(np.float32), format="flt", layout="mono")
        frame.sample_rate = sr
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def reencode(x: np.ndarray, sr: int, codec: str, bitrate: int) -> np.ndarray:
    """x through a codec round trip (`encode`, then decoded back to `sr`), the same length as x."""
    from .audio import load_audio

    y = load_audio(encode(x, sr, codec, bitrate), sr).samples
    return np.pad(y[: len(x)], (0, max(0, len(x) - len(y)))).astype(np.float32)
