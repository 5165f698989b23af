"""Rendering: stems (FluidSynth or a voice) -> production chain -> room, playback EQ, noise and loudness."""

from __future__ import annotations

import ctypes
import functools
from typing import Sequence

import numpy as np
from scipy.signal import butter, fftconvolve, lfilter, sosfilt

from ..degrade import rms
from ..errors import ParameterError
from .arrange import SAMPLE_RATE, Stem, _arrange, _streams, clip_params
from .soundfonts import TRAIN_SOUNDFONTS, soundfont_path
from .theory import KICK
from .voice import spoken_verse, sung_line

SYNTH_GAIN = 0.25  # FluidSynth master gain: headroom for loud kits
PEAK = 0.99
GUITARS = range(24, 32)  # GM guitar programs: the ones a drive setting distorts


@functools.cache
def _float_synth(fluidsynth) -> type:
    """pyfluidsynth's Synth with float output. Its own `get_samples` asks for int16, which FluidSynth dithers from a
    table seeded by the C library's rand() once per process: the same clip then differs between processes."""
    write = fluidsynth._fl.fluid_synth_write_float
    write.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                      ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    write.restype = ctypes.c_int

    class FloatSynth(fluidsynth.Synth):
        def get_samples(self, len: int = 1024) -> np.ndarray:  # noqa: A002 - pyfluidsynth's signature
            """`len` stereo frames, interleaved, as float (full scale 1.0)."""
            buf = np.zeros(2 * len, np.float32)
            if write(self.synth, len, buf.ctypes.data, 0, 2, buf.ctypes.data, 1, 2) != 0:
                raise ParameterError("FluidSynth could not render")
            return buf

    return FloatSynth


def _render_stems(stems: list[Stem], sample_rate: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each stem as float audio of n samples: voices from `voice`, the rest from FluidSynth. A fresh synth per clip
    (with the clip's SoundFonts) and a reset per stem, so the output never depends on clips rendered before."""
    try:
        import fluidsynth  # the C library is only needed when rendering
    except ImportError as e:  # pyfluidsynth missing, or Debian's libfluidsynth3
        raise ParameterError(f"rendering needs FluidSynth ({e}): pip install 'acousticsense[synth]' and apt-get install libfluidsynth3") from None

    synth = _float_synth(fluidsynth)(gain=SYNTH_GAIN, samplerate=float(sample_rate),
                                     **{"synth.reverb.active": 0, "synth.chorus.active": 0})
    try:
        ids = {}
        for name in dict.fromkeys(s.soundfont for s in stems if s.voice is None):
            ids[name] = synth.sfload(str(soundfont_path(name)))
            if ids[name] < 0:
                raise ParameterError(f"FluidSynth could not load SoundFont {name}")
        waves = []
        for stem in stems:
            notes = sorted(stem.inst.notes, key=lambda x: x.start)
            if stem.voice is not None and stem.voice["kind"] == "spoken":
                slots = [(a.start, (b.start if b is not None else a.end) - a.start, a.velocity)
                         for a, b in zip(notes, notes[1:] + [None])]
                x = spoken_verse(slots, stem.voice, rng, n, sample_rate)
            elif stem.voice is not None:
                x = 0.5 * sung_line([(a.start, a.end, a.pitch, a.velocity) for a in notes], stem.voice, rng, n, sample_rate)
            else:
                synth.system_reset()
                x = stem.inst.fluidsynth(synthesizer=synth, sfid=ids[stem.soundfont])
            waves.append(stem.gain * np.pad(x[:n], (0, max(0, n - len(x)))))
    finally:
        synth.delete()
    return waves


# ------------------------------------------------------------------------------------- production chain
def drive(x: np.ndarray, amount: float) -> np.ndarray:
    """Waveshaping distortion (tanh) with pre-gain `amount`, level-matched to the input's RMS."""
    if amount <= 0 or not np.any(x):
        return x
    y = np.tanh(amount * x / (np.abs(x).max() + 1e-12))
    return y * rms(x) / max(rms(y), 1e-12)


def compress(x: np.ndarray, sr: int, ratio: float, threshold_db: float, time_ms: float) -> np.ndarray:
    """Feed-forward RMS compressor: gain reduction above threshold (dB re the signal's peak RMS) at `ratio`."""
    if ratio <= 1 or not np.any(x):
        return x
    a = np.exp(-1000 / (time_ms * sr))
    env = np.sqrt(np.maximum(lfilter([1 - a], [1, -a], x ** 2), 1e-12))
    level = 20 * np.log10(env / env.max())
    gain_db = -(1 - 1 / ratio) * np.maximum(0.0, level - threshold_db)
    return x * 10 ** (gain_db / 20)


def pump(x: np.ndarray, sr: int, kicks: Sequence[float], depth: float, release_ms: float) -> np.ndarray:
    """Sidechain pumping: the mix ducks by `depth` at each kick and recovers over `release_ms`."""
    if depth <= 0 or not len(kicks):
        return x
    trigger = np.zeros(len(x))
    trigger[np.clip((np.asarray(kicks) * sr).astype(int), 0, len(x) - 1)] = 1.0
    a = np.exp(-1000 / (release_ms * sr))
    duck = np.minimum(1.0, lfilter([1.0], [1, -a], trigger))
    return x * (1 - depth * duck)


def lofi(x: np.ndarray, sr: int, plan: dict, rng: np.random.Generator) -> np.ndarray:
    """Sampler/vinyl treatment: tape wow, sample-rate and bit reduction, a low-pass and vinyl crackle."""
    t = np.arange(len(x)) / sr
    warp = t + plan["wow"] * np.sin(2 * np.pi * 0.55 * t) / (2 * np.pi * 0.55)
    y = np.interp(warp, t, x)
    hold = max(1, round(sr / plan["rate_hz"]))
    y = np.repeat(y[::hold], hold)[: len(x)]
    q = 2.0 ** (plan["bits"] - 1)
    y = np.round(y / (np.abs(y).max() + 1e-12) * q) / q * np.abs(x).max()
    y = sosfilt(butter(2, min(plan["rate_hz"] / 2, 0.45 * sr), fs=sr, output="sos"), y)
    clicks = (rng.random(len(y)) < plan["crackle"] / sr) * rng.standard_normal(len(y))
    crackle = sosfilt(butter(2, 2000, "highpass", fs=sr, output="sos"), clicks) * 0.5 * np.abs(y).max()
    return y + crackle


def _produce(stems: list[Stem], waves: list[np.ndarray], production: dict, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Mix the stems through the clip's production chain: guitar drive, sidechain pump, bus compression, lo-fi."""
    mix = np.zeros(len(waves[0]) if waves else 0)
    kicks: list[float] = []
    for stem, x in zip(stems, waves):
        if stem.inst.is_drum:
            kicks = [n.start for n in stem.inst.notes if n.pitch == KICK]
            mix += x
        elif stem.voice is None and stem.inst.program in GUITARS and production["drive"]:
            mix += drive(x, production["drive"])
        else:
            mix += pump(x, sr, kicks, production["pump_depth"], production["pump_ms"])
    mix = compress(mix, sr, production["compress_ratio"], production["compress_threshold_db"], production["compress_ms"])
    return lofi(mix, sr, production["lofi"], rng) if production["lofi"] else mix


# ----------------------------------------------------------------------------------- room and playback
def _reverb(x: np.ndarray, sr: int, rt60: float, predelay_ms: float, rng: np.random.Generator) -> np.ndarray:
    """Wet signal of a synthetic room: exponentially decaying noise impulse response."""
    t = np.arange(int(sr * min(rt60, 2.5))) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir = np.concatenate([np.zeros(int(sr * predelay_ms / 1000)), ir / np.sqrt(np.sum(ir ** 2))])
    return fftconvolve(x, ir)[:len(x)]


def _eq(x: np.ndarray, sr: int, highpass: float, lowpass: float, tilt: float) -> np.ndarray:
    """Band-limit like a random playback chain, then tilt the spectrum around 1 kHz."""
    x = sosfilt(butter(2, [highpass, min(lowpass, 0.45 * sr)], "bandpass", fs=sr, output="sos"), x)
    low = sosfilt(butter(1, 1000, "lowpass", fs=sr, output="sos"), x)
    return (1 - tilt) * low + (1 + tilt) * (x - low)


def _finish(mix: np.ndarray, params: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Reverb, crop, EQ, background noise at the planned SNR and loudness normalisation (peak <= PEAK)."""
    fx, n, start = params["effects"], round(params["seconds"] * sr), round(params["start"] * sr)
    x = mix + fx["reverb_wet"] * _reverb(mix, sr, fx["reverb_rt60"], fx["predelay_ms"], rng)
    x = np.pad(x[start:start + n], (0, max(0, n - len(x[start:start + n]))))
    x = _eq(x, sr, fx["highpass_hz"], fx["lowpass_hz"], fx["tilt"])
    noise = sosfilt(butter(1, min(fx["noise_lowpass_hz"], 0.45 * sr), fs=sr, output="sos"), rng.standard_normal(n))
    x = x + noise * rms(x) / max(rms(noise), 1e-12) * 10 ** (-fx["noise_snr_db"] / 20)
    level = rms(x)
    if level > 0:
        x *= 10 ** (fx["loudness_dbfs"] / 20) / level
        x *= min(1.0, PEAK / np.max(np.abs(x)))
    return x.astype(np.float32)


def render_clip(genre: str, rng_seed: int, seconds: float, sample_rate: int = SAMPLE_RATE,
                soundfonts: Sequence[str] = TRAIN_SOUNDFONTS) -> tuple[np.ndarray, dict]:
    """Compose and render one clip: mono float32 audio of round(seconds * sample_rate) samples and its parameters.

    `soundfonts` is the pool (registry names or .sf2/.sf3 paths) each clip and part draws its SoundFont from.
    """
    if not seconds > 0:
        raise ParameterError(f"seconds must be positive, got {seconds}")
    params = clip_params(genre, rng_seed, seconds, sample_rate, soundfonts)
    _, note_rng, fx_rng, voice_rng = _streams(rng_seed)
    stems = _arrange(params, note_rng)
    n = max((round(max(x.end for x in s.inst.notes) * sample_rate) + sample_rate for s in stems), default=0)
    waves = _render_stems(stems, sample_rate, n, voice_rng)
    return _finish(_produce(stems, waves, params["production"], sample_rate, fx_rng), params, fx_rng, sample_rate), params
