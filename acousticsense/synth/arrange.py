"""Composition: a clip's plan (all recorded parameters) and its General MIDI arrangement (the parts from :mod:`.parts`)."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import pretty_midi

from ..errors import ParameterError
from ..speech import SPEAKERS, VARIANTS
from .parts import GENERATORS, Notes, Song, _drums, _pick
from .soundfonts import TRAIN_SOUNDFONTS, soundfont_names
from .styles import GENRES, PRODUCTION, STYLES, Part, Style
from .theory import (
    ARP_ORDERS,
    CHORDS,
    DRUM_PATTERNS,
    EXTENSIONS,
    KICK,
    NOTE_NAMES,
    PROGRESSIONS,
    SCALES,
    scale_fits,
)

SYNTH_VERSION = "3"  # 3: FluidSynth renders in float (no per-process int16 dither); 2: SoundFont pool, voices, production chains
SAMPLE_RATE = 22050
VOICED_ROLES = ("vocal", "rap")  # parts that a voice may render instead of a GM patch
TAIL_S = 0.5  # composed music beyond the end of the clip


def clip_seed(seed: int, genre: str, index: int) -> int:
    """The RNG seed of clip `index` of `genre` in a corpus made with `seed`."""
    return int(np.random.SeedSequence([seed, GENRES.index(genre), index]).generate_state(1, np.uint64)[0])


def _streams(rng_seed: int) -> list[np.random.Generator]:
    """Independent generators for the plan, the notes, the effect noise and the voices of one clip."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(rng_seed).spawn(4)]


# ------------------------------------------------------------------------------------------------ plan
def _part_plan(part: Part, rng: np.random.Generator, soundfont: str, soundfonts: Sequence[str], voiced: float) -> dict:
    """Program, pattern, register, level, SoundFont, voice and playing details of one included part."""
    program = int(_pick(rng, part.programs))
    plan = {"role": part.role, "pattern": _pick(rng, part.patterns), "program": program,
            "instrument": pretty_midi.program_to_instrument_name(program),
            "register": part.register + int(rng.integers(-2, 3)),
            "level_db": round(part.level_db + float(rng.uniform(-3, 3)), 2),
            "voicing": _pick(rng, ("close", "open")), "order": _pick(rng, tuple(ARP_ORDERS)),
            "density": round(part.density * float(rng.uniform(0.8, 1.2)), 3), "bend": part.bend,
            "soundfont": _pick(rng, soundfonts) if rng.random() < 0.25 else soundfont, "voice": None}
    if part.role in VOICED_ROLES and rng.random() < voiced:
        plan["voice"] = _voice_plan(part.role, rng)
    return plan


def _voice_plan(role: str, rng: np.random.Generator) -> dict:
    """Who sings or raps: an espeak-ng speaker for rap, a source-filter singer for sung lines."""
    if role == "rap":
        return {"kind": "spoken", "speaker": f"{_pick(rng, SPEAKERS)}+{_pick(rng, VARIANTS[:12])}",
                "speed": int(rng.integers(170, 300)), "pitch": int(rng.integers(15, 70))}
    return {"kind": "sung", "vibrato_hz": round(float(rng.uniform(4.5, 6.5)), 2),
            "vibrato_cents": round(float(rng.uniform(10, 60)), 1), "tilt": round(float(rng.uniform(0.8, 1.6)), 2),
            "breath": round(float(rng.uniform(0.0, 0.3)), 3), "formant_scale": round(float(rng.uniform(0.85, 1.2)), 3)}


def _production_plan(genre: str, rng: np.random.Generator) -> dict:
    """Mix and mastering chain of one clip, drawn from the genre's ranges (`PRODUCTION`)."""
    p = PRODUCTION[genre]
    draw = rng.random(3)
    return {"compress_ratio": round(float(rng.uniform(*p.compress)), 2),
            "compress_threshold_db": round(float(rng.uniform(-24, -8)), 1),
            "compress_ms": round(float(rng.uniform(5, 80)), 1),
            "drive": round(float(rng.uniform(3, 30)), 1) if draw[0] < p.drive else 0.0,
            "pump_depth": round(float(rng.uniform(0.3, 0.8)), 2) if draw[1] < p.pump else 0.0,
            "pump_ms": round(float(rng.uniform(80, 220)), 1),
            "lofi": {"bits": int(rng.integers(7, 13)), "rate_hz": round(float(rng.uniform(6000, 12000))),
                     "crackle": round(float(rng.uniform(2, 30)), 1), "wow": round(float(rng.uniform(0, 0.004)), 4)}
                    if draw[2] < p.lofi else None}


def _effects_plan(style: Style, rng: np.random.Generator) -> dict:
    """Room, playback-chain EQ, background noise and loudness of one clip."""
    return {"reverb_rt60": round(float(rng.uniform(*style.reverb_s)), 3),
            "reverb_wet": round(float(rng.uniform(0.05, 0.35)), 3),
            "predelay_ms": round(float(rng.uniform(0, 30)), 2),
            "highpass_hz": round(float(np.exp(rng.uniform(np.log(20), np.log(150)))), 1),
            "lowpass_hz": round(float(rng.uniform(5000, 10500)), 1),
            "tilt": round(float(rng.uniform(-0.4, 0.4)), 3),
            "noise_snr_db": round(float(rng.uniform(25, 55)), 2),
            "noise_lowpass_hz": round(float(rng.uniform(500, 10000)), 1),
            "loudness_dbfs": round(float(rng.uniform(-26, -14)), 2)}


def clip_params(genre: str, rng_seed: int, seconds: float, sample_rate: int = SAMPLE_RATE,
                soundfonts: Sequence[str] = TRAIN_SOUNDFONTS) -> dict:
    """The JSON-serialisable generation parameters of a clip (what `render_clip` returns), without rendering."""
    if genre not in STYLES:
        raise ParameterError(f"unknown genre {genre!r}; valid genres: {', '.join(GENRES)}")
    style, rng = STYLES[genre], _streams(rng_seed)[0]
    tempo = round(float(rng.uniform(*style.tempo)), 1)
    groove = _pick(rng, style.drums)
    beats = DRUM_PATTERNS[groove][0] if groove else int(_pick(rng, style.meters))
    progression = _pick(rng, style.progressions)
    mode, chords = PROGRESSIONS[progression]
    scale = _pick(rng, [s for s in style.scales if scale_fits(s, progression)])
    tonic = int(rng.integers(12))
    qualities = [_pick(rng, EXTENSIONS.get(q, (q,))) if style.extended else q for _, q in chords]
    bar_s = beats * 60 / tempo
    start = round(float(rng.uniform(0, bar_s)), 3)
    pool = soundfont_names(soundfonts)
    soundfont = _pick(rng, pool)
    parts = [_part_plan(p, rng, soundfont, pool, PRODUCTION[genre].voiced) for p in style.parts if rng.random() < p.prob]
    return {
        "genre": genre, "synth_version": SYNTH_VERSION, "rng_seed": int(rng_seed), "seconds": float(seconds),
        "sample_rate": int(sample_rate), "soundfont": soundfont,
        "tempo": tempo, "meter": f"{beats}/4", "key": NOTE_NAMES[tonic], "tonic": tonic, "mode": mode, "scale": scale,
        "progression": progression, "progression_start": int(rng.integers(len(chords))),
        "chords": [NOTE_NAMES[(tonic + off) % 12] + {"maj": "", "min": "m"}.get(q, q) for (off, _), q in zip(chords, qualities)],
        "qualities": qualities, "swing": round(float(rng.uniform(*style.swing)), 3),
        "swing_unit": "16th" if style.swing_16th else "8th",
        "drums": {"pattern": groove, "kit": int(_pick(rng, style.kits)), "fills": style.fills,
                  "level_db": round(float(rng.uniform(-2, 2)), 2)} if groove else None,
        "parts": parts, "start": start, "bars": math.ceil((start + seconds + TAIL_S) / bar_s),
        "humanize": {"timing_ms": round(style.jitter_ms * float(rng.uniform(0.5, 1.5)), 2),
                     "velocity": round(float(rng.uniform(4, 12)), 2), "velocity_offset": round(float(rng.uniform(-14, 6)), 2)},
        "effects": _effects_plan(style, rng),
        "production": _production_plan(genre, rng),
    }


class Stem(NamedTuple):
    """One rendered layer: its notes (a GM instrument), linear gain, SoundFont and voice (None: FluidSynth plays it)."""
    inst: pretty_midi.Instrument
    gain: float
    soundfont: str
    voice: dict | None


def _arrange(params: dict, rng: np.random.Generator) -> list[Stem]:
    """The arrangement of a plan, one `Stem` per drum kit and part, humanised."""
    chords = PROGRESSIONS[params["progression"]][1]
    drums, n = params["drums"], len(chords)
    beats = int(params["meter"].split("/")[0])
    bar_chords = tuple(((params["tonic"] + chords[(params["progression_start"] + b) % n][0]) % 12,
                        CHORDS[params["qualities"][(params["progression_start"] + b) % n]]) for b in range(params["bars"]))
    kick = ()
    if drums:
        _, spb, rows = DRUM_PATTERNS[drums["pattern"]]
        kick = tuple(i / spb for i, c in enumerate(rows.get(KICK, "")[:beats * spb]) if c != ".")
    song = Song(beats, 60 / params["tempo"], params["swing"], params["swing_unit"] == "16th", params["bars"],
                params["tonic"], SCALES[params["scale"]][1], bar_chords, kick)
    stems = []
    if drums:
        kit = pretty_midi.Instrument(drums["kit"], is_drum=True, name="drums")
        kit.notes = _drums(song, rng, drums["pattern"], drums["fills"])
        stems.append(Stem(kit, drums["level_db"], params["soundfont"], None))
    for part in params["parts"]:
        inst = pretty_midi.Instrument(part["program"], name=part["role"])
        inst.notes = GENERATORS[part["pattern"]](song, rng, part)
        stems.append(Stem(inst, part["level_db"], part["soundfont"], part["voice"]))
    hum = params["humanize"]
    for stem, bend in zip(stems, [0.0] * bool(drums) + [p["bend"] for p in params["parts"]]):
        _humanize(stem.inst.notes, rng, hum["timing_ms"] / 1000, hum["velocity"], hum["velocity_offset"])
        stem.inst.pitch_bends = _bends(stem.inst.notes, rng, bend)
    return [s._replace(gain=10 ** (s.gain / 20)) for s in stems if s.inst.notes]


def _bends(notes: Notes, rng: np.random.Generator, prob: float) -> list[pretty_midi.PitchBend]:
    """Bend some long notes up into pitch from a semitone or a tone below (guitar/voice/sitar inflection)."""
    bends = []
    for n in notes:
        if prob and n.end - n.start > 0.25 and rng.random() < prob:
            depth = int(_pick(rng, (-4096, -8191)))
            bends += [pretty_midi.PitchBend(round(depth * (1 - k / 4)), n.start + 0.03 * k) for k in range(5)]
    return bends


def _humanize(notes: Notes, rng: np.random.Generator, timing_s: float, velocity: float, offset: float) -> None:
    shifts = rng.normal(0, timing_s, len(notes)) if timing_s else np.zeros(len(notes))
    vels = rng.normal(offset, velocity, len(notes))
    for n, dt, dv in zip(notes, shifts, vels):
        n.start, n.end = max(0.0, n.start + dt), max(0.0, n.start + dt) + (n.end - n.start)
        n.velocity = int(np.clip(round(n.velocity + dv), 1, 127))


