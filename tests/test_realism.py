"""The corpus's real-world parts: SoundFont pool, voices, production chain, not-music clips, degradations.

Each is deterministic per seed and audible where it should be (energy in the expected bands and places)."""

from __future__ import annotations

import numpy as np
import pytest

from acousticsense.degrade import add_noise, band_limit, coloured_noise, noise, reencode
from acousticsense.errors import ParameterError
from acousticsense.speech import speak
from acousticsense.synth import HELD_OUT_SOUNDFONT, PRODUCTION, TRAIN_SOUNDFONTS, clip_params, clip_seed, render_clip, render_not_music
from acousticsense.synth.render import compress, drive, lofi, pump
from acousticsense.synth.soundfonts import soundfont_path
from acousticsense.synth.voice import spoken_verse, sung_line

SR = 22050


def band_share(x: np.ndarray, lo: float, hi: float, sr: int = SR) -> float:
    """Share of x's energy between lo and hi Hz."""
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / sr)
    return float(power[(f >= lo) & (f < hi)].sum() / power.sum())


def plans(genre: str, n: int = 40, **kw) -> list[dict]:
    return [clip_params(genre, clip_seed(7, genre, i), 6.0, **kw) for i in range(n)]


# --- SoundFonts --------------------------------------------------------------------------------


def test_each_clip_and_part_draws_its_soundfont_from_the_pool():
    ps = plans("Pop", 60)
    assert {p["soundfont"] for p in ps} == set(TRAIN_SOUNDFONTS)
    parts = [q for p in ps for q in p["parts"]]
    assert {q["soundfont"] for q in parts} == set(TRAIN_SOUNDFONTS)
    assert 0.05 < np.mean([q["soundfont"] != p["soundfont"] for p in ps for q in p["parts"]]) < 0.3  # some parts differ
    only = plans("Pop", 10, soundfonts=["TimGM6mb"])
    assert {p["soundfont"] for p in only} == {q["soundfont"] for p in only for q in p["parts"]} == {"TimGM6mb"}
    assert HELD_OUT_SOUNDFONT not in TRAIN_SOUNDFONTS


def test_a_soundfont_changes_the_sound_not_the_music():
    seed = clip_seed(0, "Classical", 1)
    a, pa = render_clip("Classical", seed, 3.0, soundfonts=["TimGM6mb"])
    b, pb = render_clip("Classical", seed, 3.0, soundfonts=["FluidR3_GM"])
    c, _ = render_clip("Classical", seed, 3.0, soundfonts=[str(soundfont_path("FluidR3_GM"))])  # a path works too
    assert {k: v for k, v in pa.items() if k not in ("soundfont", "parts")} == {k: v for k, v in pb.items() if k not in ("soundfont", "parts")}
    assert [q["program"] for q in pa["parts"]] == [q["program"] for q in pb["parts"]]
    assert not np.allclose(a, b) and np.array_equal(b, c)


def test_unknown_or_missing_soundfonts_are_clear_errors(tmp_path):
    with pytest.raises(ParameterError, match="not a SoundFont file"):
        clip_params("Pop", 1, 2.0, soundfonts=[str(tmp_path / "nothing.sf2")])
    with pytest.raises(ParameterError, match="not a SoundFont file"):
        clip_params("Pop", 1, 2.0, soundfonts=["/etc/passwd"])
    with pytest.raises(ParameterError, match="at least one"):
        clip_params("Pop", 1, 2.0, soundfonts=[])


# --- voices ------------------------------------------------------------------------------------


def test_rap_is_spoken_words_on_the_beat_grid():
    ps = plans("Rap", 40)
    voices = [q["voice"] for p in ps for q in p["parts"] if q["role"] == "rap"]
    assert sum(v is not None and v["kind"] == "spoken" for v in voices) >= 0.7 * len(voices)
    plan = next(v for v in voices if v)
    slots = [(0.5, 0.3, 100), (1.0, 0.3, 100), (1.5, 0.3, 90)]
    a = spoken_verse(slots, plan, np.random.default_rng(3), 2 * SR, SR)
    b = spoken_verse(slots, plan, np.random.default_rng(3), 2 * SR, SR)
    assert np.array_equal(a, b)
    assert np.abs(a[: int(0.5 * SR)]).max() == 0 and np.abs(a[int(1.81 * SR):]).max() == 0  # only inside the slots
    for start, length, _ in slots:
        seg = a[int(start * SR): int((start + length) * SR)]
        assert np.sqrt(np.mean(seg ** 2)) > 0.01
    assert band_share(a, 200, 4000) > 0.8  # speech band


def test_sung_line_follows_the_melody():
    plan = {"vibrato_hz": 5.5, "vibrato_cents": 20, "tilt": 1.2, "breath": 0.0, "formant_scale": 1.0}
    x = sung_line([(0.0, 1.0, 69, 100)], plan, np.random.default_rng(0), SR + SR // 2, SR)  # A4 for a second
    assert np.array_equal(x, sung_line([(0.0, 1.0, 69, 100)], plan, np.random.default_rng(0), SR + SR // 2, SR))
    spectrum = np.abs(np.fft.rfft(x[: SR]))
    f = np.fft.rfftfreq(SR, 1 / SR)
    peaks = f[np.argsort(spectrum)[-40:]]
    assert np.median(np.abs(peaks / 440 - np.round(peaks / 440))) < 0.05  # energy on the harmonics of 440 Hz
    assert np.abs(x[int(1.2 * SR):]).max() == 0  # silent after the note (and its release)
    assert sum(q["voice"] is not None for p in plans("R&B") for q in p["parts"] if q["role"] == "vocal") > 10


def test_speech_is_deterministic_and_voices_differ():
    a = speak("hello there", "en-us", 170, 50)
    assert a.dtype == np.float32 and len(a) > 0.3 * SR and np.array_equal(a, speak.__wrapped__("hello there", "en-us", 170, 50))
    others = [speak("hello there", v, 170, 50) for v in ("en-us+f2", "de+m3", "en-us+klatt")] + [speak("hello there", "en-us", 170, 80)]
    assert all(len(b) != len(a) or not np.allclose(a, b) for b in others)


# --- production --------------------------------------------------------------------------------


def test_production_chain_does_what_it_says():
    t = np.arange(SR) / SR
    sine = 0.5 * np.sin(2 * np.pi * 220 * t)
    assert band_share(sine, 600, 700) < 1e-4 < band_share(drive(sine, 20.0), 600, 700)  # odd harmonics from the waveshaper
    quiet_loud = np.r_[0.05 * sine[: SR // 2], 0.8 * sine[: SR // 2]]
    squashed = compress(quiet_loud, SR, 8.0, -12.0, 10.0)
    ratio = lambda x: np.sqrt(np.mean(x[SR // 2 + 2000:] ** 2)) / np.sqrt(np.mean(x[2000: SR // 2] ** 2))  # noqa: E731
    assert ratio(squashed) < 0.5 * ratio(quiet_loud)
    pumped = pump(np.ones(SR), SR, [0.25, 0.75], 0.6, 100.0)
    assert pumped[int(0.25 * SR)] == pytest.approx(0.4) and pumped[int(0.7 * SR)] > 0.95  # ducks at the kick, recovers
    crushed = lofi(sine, SR, {"bits": 8, "rate_hz": 6000, "crackle": 0.0, "wow": 0.0}, np.random.default_rng(0))
    assert band_share(crushed, 4000, SR / 2) < 0.01 and np.isfinite(crushed).all()


def test_genres_draw_their_production():
    drive_share = {g: np.mean([p["production"]["drive"] > 0 for p in plans(g, 60)]) for g in ("Metal", "Rock", "Classical")}
    assert drive_share["Metal"] == 1.0 and drive_share["Rock"] > 0.7 and drive_share["Classical"] == 0.0
    assert np.mean([p["production"]["pump_depth"] > 0 for p in plans("Electronic", 60)]) > 0.6
    assert np.mean([p["production"]["lofi"] is not None for p in plans("Hip-Hop", 60)]) > 0.25
    assert set(PRODUCTION) == {p["genre"] for g in PRODUCTION for p in plans(g, 1)}


# --- not music and degradations ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["speech", "noise", "tones"])
def test_not_music_clips(kind):
    a, p = render_not_music(kind, 11, 2.0, SR)
    b, q = render_not_music(kind, 11, 2.0, SR)
    assert np.array_equal(a, b) and p == q and p["kind"] == kind and p["label"] == "_not_music"
    assert a.shape == (2 * SR,) and np.isfinite(a).all() and 0.05 < np.abs(a).max() <= 1.0


def test_noise_colours_and_snr():
    rng = np.random.default_rng(0)
    for exponent in (0.0, 1.0, 2.0):
        x = coloured_noise(2 ** 18, rng, exponent)
        slope = 10 * np.log10(band_share(x, 2000, 4000) / band_share(x, 1000, 2000) / 2)  # per Hz, an octave up
        assert slope == pytest.approx(-3.01 * exponent, abs=0.5)
    x = np.sin(2 * np.pi * 440 * np.arange(SR) / SR).astype(np.float32) * 0.5
    n = noise("pink", SR, SR, rng)
    y = add_noise(x, n, 10.0)
    assert 10 * np.log10(np.mean(x ** 2) / np.mean((y - x) ** 2)) == pytest.approx(10.0, abs=0.01)
    assert band_share(band_limit(noise("white", SR, SR, rng), SR, 300, 3400), 300, 3400) > 0.9  # 4th-order skirts
    with pytest.raises(ParameterError, match="unknown noise kind"):
        noise("pinkish", 10, SR, rng)


@pytest.mark.parametrize("codec,bitrate", [("libopus", 32000), ("libmp3lame", 64000)])
def test_reencode_keeps_length_and_content(codec, bitrate):
    x = render_clip("Jazz", clip_seed(0, "Jazz", 0), 2.0)[0]
    y = reencode(x, SR, codec, bitrate)
    assert y.shape == x.shape and y.dtype == np.float32
    lag = np.argmax(np.correlate(y[2000:6000], x[2000:4000], "valid"))
    z = y[2000 + lag: 22000 + lag]  # the codec's delay removed
    assert np.corrcoef(x[2000:22000], z)[0, 1] > 0.9
