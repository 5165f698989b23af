"""Composition: a clip's plan (all recorded parameters) and its General MIDI arrangement."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pretty_midi

from ..errors import ParameterError
from ..speech import SPEAKERS, VARIANTS
from .soundfonts import TRAIN_SOUNDFONTS, soundfont_names
from .styles import GENRES, PRODUCTION, STYLES, Part, Style
from .theory import (
    ARP_ORDERS,
    BASS_MOTIFS,
    CHORDS,
    COMP_RHYTHMS,
    CRASH,
    DRUM_PATTERNS,
    DRUM_VELOCITY,
    EXTENSIONS,
    JAZZ_COMP,
    KICK,
    MELODY_STEP_P,
    MELODY_STEPS,
    MONTUNO,
    NOTE_NAMES,
    PROGRESSIONS,
    SCALES,
    TOMS,
    Hits,
    _guitar_voicing,
    _near,
    _tone,
    _voice,
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


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]



class Song(NamedTuple):
    """Everything the part generators need: grid, swing, harmony per bar, kick positions."""
    beats: int
    beat_s: float
    swing: float
    swing_16th: bool
    bars: int
    tonic: int
    scale: tuple[int, ...]
    chords: tuple[tuple[int, tuple[int, ...]], ...]  # (root pitch class, intervals) per bar
    kick: tuple[float, ...]  # kick positions in the first bar of the groove, in beats

    def time(self, beat: float, straight: bool = False) -> float:
        """Seconds at an absolute beat position; off-beats are pushed late by the swing."""
        whole = math.floor(beat)
        frac = beat - whole
        if not straight and self.swing != 0.5:
            half = math.floor(frac * 2) if self.swing_16th else 0
            g = frac * 2 - half if self.swing_16th else frac
            g = g * 2 * self.swing if g < 0.5 else self.swing + (g - 0.5) * 2 * (1 - self.swing)
            frac = (half + g) / 2 if self.swing_16th else g
        return (whole + frac) * self.beat_s

    def note(self, bar: int, pos: float, dur: float, pitch: int, vel: float, straight: bool = False) -> pretty_midi.Note:
        start = self.time(bar * self.beats + pos, straight)
        end = self.time(bar * self.beats + pos + dur, straight)
        return pretty_midi.Note(int(np.clip(round(vel), 1, 127)), int(np.clip(pitch, 0, 127)), start, max(end, start + 0.03))

    def next_root(self, bar: int) -> int:
        return self.chords[min(bar + 1, self.bars - 1)][0]

    def scale_pitches(self, lo: int, hi: int) -> list[int]:
        return [p for p in range(lo, hi) if (p - self.tonic) % 12 in self.scale]


Notes = list[pretty_midi.Note]


def _drums(song: Song, rng: np.random.Generator, pattern: str, fills: bool) -> Notes:
    """GM drum part from a groove table row; fills and crashes mark 4-bar phrases, "r" steps may roll."""
    beats, spb, rows = DRUM_PATTERNS[pattern]
    straight, per_bar, notes = spb == 3, beats * spb, []
    for bar in range(song.bars):
        fill = fills and bar % 4 == 3
        for pitch, row in rows.items():
            cycle = bar % (len(row) // per_bar)
            for i, c in enumerate(row[cycle * per_bar:(cycle + 1) * per_bar]):
                pos = i / spb
                if c == "." or (fill and pos >= beats - 1 and pitch != KICK) or (c == "?" and rng.random() > 0.3):
                    continue
                rolls = int(rng.choice((2, 3))) if c == "r" and rng.random() < 0.35 else 1
                notes += [song.note(bar, pos + k / (spb * rolls), 0.1, pitch, DRUM_VELOCITY[c] - 8 * k, straight or rolls == 3)
                          for k in range(rolls)]
        if fill:
            notes += [song.note(bar, beats - 1 + k / spb, 0.1, TOMS[k * len(TOMS) // spb], 100, straight) for k in range(spb)]
        if fills and bar % 4 == 0:
            notes.append(song.note(bar, 0, 0.5, CRASH, 105, straight))
    return notes


def _motif_bass(song: Song, rng: np.random.Generator, part: dict, motif: tuple) -> Notes:
    """A one-bar bass figure of chord tones, re-rooted on every bar's chord."""
    notes = []
    for bar, (root, ivs) in enumerate(song.chords):
        r = _near(root, part["register"])
        for pos, dur, tone in motif:
            if pos < song.beats:
                notes.append(song.note(bar, pos, min(dur, song.beats - pos), r + _tone(root, ivs, tone, song.next_root(bar)),
                                       96 if pos % 1 == 0 else 84))
    return notes


def _walking(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Quarter-note walking bass: root, nearby chord tones, chromatic approach to the next root."""
    notes = []
    for bar, (root, ivs) in enumerate(song.chords):
        r = _near(root, part["register"])
        line = [r]
        for _ in range(song.beats - 2):
            options = [r + iv + o for iv in ivs[:4] for o in (0, 12) if abs(r + iv + o - line[-1]) <= 7 and r + iv + o != line[-1]]
            line.append(_pick(rng, options or [r + 7]))
        line.append(_near(song.next_root(bar), r) + _pick(rng, (-1, 1)))  # chromatic approach
        notes += [song.note(bar, b, 0.9, p, 92 if b % 2 else 86) for b, p in enumerate(line)]
    return notes


def _sub808(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Long sub-bass notes that follow the kick drum, trap style."""
    kicks = [k for k in song.kick if k < song.beats] or [0.0, 2.5]
    notes = []
    for bar, (root, ivs) in enumerate(song.chords):
        r = _near(root, part["register"])
        for i, k in enumerate(kicks):
            end = kicks[i + 1] if i + 1 < len(kicks) else song.beats
            notes.append(song.note(bar, k, end - k, r + (12 if rng.random() < 0.15 else 0), 105))
    return notes


def _comp(song: Song, rng: np.random.Generator, part: dict, kind: str, hits: Hits) -> Notes:
    """Chords on a rhythm: block/scratch voicings, power chords, boogie dyads or staggered guitar strums."""
    notes, strum_s = [], float(rng.uniform(0.008, 0.02))
    for bar, (root, ivs) in enumerate(song.chords):
        r = _near(root, part["register"])
        for pos, dur, vel in hits:
            if pos >= song.beats:
                continue
            dur = min(dur, song.beats - pos)
            if kind == "power":
                pitches = [r, r + 7, r + 12]
            elif kind == "boogie":
                pitches = [r, r + (7, 7, 9, 9, 10, 10, 9, 9)[int(pos * 2) % 8]]
            elif kind == "strum":
                pitches = _guitar_voicing(root, ivs, part["register"])
                pitches = pitches if pos % 1 == 0 else pitches[:1:-1]  # down-strokes on the beat, light up-strokes between
            elif kind == "scratch":  # muted high triad, disco/funk "chicken scratch"
                pitches = _voice(root, ivs, part["register"] + 7, part["voicing"])[-3:]
            else:
                pitches = _voice(root, ivs, part["register"], part["voicing"])
            for k, p in enumerate(pitches):
                n = song.note(bar, pos, dur, p, vel - (6 if kind == "strum" and k else 0))
                if kind == "strum":
                    n.start, n.end = n.start + k * strum_s, n.end + k * strum_s
                notes.append(n)
    return notes


def _jazz(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Rootless voicings comped on a randomly chosen syncopated rhythm per bar."""
    notes = []
    for bar, (root, ivs) in enumerate(song.chords):
        for pos, dur in _pick(rng, JAZZ_COMP):
            if pos < song.beats:
                vel = rng.uniform(62, 88)
                notes += [song.note(bar, pos, dur, p, vel) for p in _voice(root, ivs, part["register"], "rootless")]
    return notes


def _montuno(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Two-bar syncopated piano montuno in octaves."""
    notes = []
    for bar, (root, ivs) in enumerate(song.chords):
        tones = _voice(root, ivs[:3], part["register"], "close")
        for pos, idx in MONTUNO[bar % 2]:
            p = tones[idx % len(tones)]
            notes += [song.note(bar, pos, 0.45, q, 90 if pos % 1 else 80) for q in (p, p + 12)]
    return notes


def _arp(song: Song, rng: np.random.Generator, part: dict, step: float, order: str | None = None,
         source: str = "chord") -> Notes:
    """Broken chords (or scale ostinato) cycling through a fixed note order."""
    order, notes = ARP_ORDERS[order or part["order"]], []
    for bar, (root, ivs) in enumerate(song.chords):
        if source == "scale":
            tones = song.scale_pitches(part["register"], part["register"] + 13)
        else:
            tones = _guitar_voicing(root, ivs, part["register"])
        for k in range(int(song.beats / step)):
            notes.append(song.note(bar, k * step, step * 0.9, tones[order[k % len(order)] % len(tones)], 88 if k % 2 == 0 else 72))
    return notes


def _melody(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Two-bar phrases: stepwise scale motion, chord tones on strong beats, a breath at the end, rhythm reuse."""
    reg, density = part["register"], part["density"]
    pool = song.scale_pitches(reg - 7, reg + 13)
    step, span = (0.25 if density > 2 else 0.5), 2 * song.beats
    i, rhythm, notes = len(pool) // 2, None, []
    for first in range(0, song.bars, 2):
        if rhythm is None or rng.random() < 0.5:
            grid = np.arange(0, span - 1, step)
            rhythm = grid[rng.random(len(grid)) < min(0.95, density * step)].tolist() or [0.0]
        for k, pos in enumerate(rhythm):
            bar = first + int(pos // song.beats)
            if bar >= song.bars:
                break
            i = int(np.clip(i + rng.choice(MELODY_STEPS, p=MELODY_STEP_P), 0, len(pool) - 1))
            root, ivs = song.chords[bar]
            if pos % 1 == 0 and rng.random() < 0.6:
                chord_pcs = {(root + iv) % 12 for iv in ivs}
                i = min((j for j in range(len(pool)) if pool[j] % 12 in chord_pcs), key=lambda j: abs(j - i), default=i)
            end = rhythm[k + 1] if k + 1 < len(rhythm) else span - 0.5
            notes.append(song.note(bar, pos % song.beats, 0.9 * min(end - pos, 2.0), pool[i], 92 if pos % 1 == 0 else 82))
    return notes


def _rap(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """Speech-like flow: dense staccato syllables around a reciting pitch that falls through each phrase."""
    base, density, notes = part["register"] + int(rng.integers(-3, 4)), part["density"], []
    for bar in range(song.bars):
        triplet = rng.random() < 0.25
        grid = 1 / 3 if triplet else 0.25
        n = round(song.beats / grid) - (round(2 / grid) if bar % 4 == 3 and rng.random() < 0.6 else 0)  # breath
        for k in range(n):
            if rng.random() < density:
                pitch = base - round(3 * k / n) + (int(rng.integers(-2, 3)) if rng.random() < 0.4 else 0)
                accent = 100 if (k * grid) % 1 == 0 else 82
                notes.append(song.note(bar, k * grid, grid * rng.uniform(0.45, 0.8), pitch, accent, straight=triplet))
    return notes


def _motif(song: Song, rng: np.random.Generator, part: dict) -> Notes:
    """A short looped figure (sampled-loop feel): 2-5 notes over two bars, repeated exactly."""
    span = 2 * song.beats
    onsets = np.sort(rng.choice(np.arange(0, span, 0.5), size=int(rng.integers(2, 6)), replace=False)).tolist()
    pitches = [int(_pick(rng, song.scale_pitches(part["register"] - 5, part["register"] + 8))) for _ in onsets]
    ends = onsets[1:] + [span]
    notes = []
    for first in range(0, song.bars, 2):
        for pos, end, p in zip(onsets, ends, pitches):
            if first + int(pos // song.beats) < song.bars:
                notes.append(song.note(first + int(pos // song.beats), pos % song.beats, min(end - pos, 1.5), p, 84))
    return notes


GENERATORS: dict[str, Callable[[Song, np.random.Generator, dict], Notes]] = {
    **{name: partial(_motif_bass, motif=m) for name, m in BASS_MOTIFS.items()},
    **{name: partial(_comp, kind=kind, hits=hits) for name, (kind, hits) in COMP_RHYTHMS.items()},
    "walking": _walking, "sub808": _sub808, "jazz": _jazz, "montuno": _montuno, "melody": _melody, "rap": _rap,
    "motif": _motif, "arp8": partial(_arp, step=0.5), "arp16": partial(_arp, step=0.25), "pick": partial(_arp, step=0.5, order="pick"),
    "alberti": partial(_arp, step=0.25, order="alberti"), "ostinato": partial(_arp, step=0.5, source="scale"),
}


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


