"""The parts of an arrangement: a :class:`Song` (grid, swing, harmony per bar) and one note generator per playing pattern
(drums, bass lines, comping, arpeggios, melodies, rap rhythms), each drawing from its own random stream."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pretty_midi

from .theory import (
    ARP_ORDERS,
    BASS_MOTIFS,
    COMP_RHYTHMS,
    CRASH,
    DRUM_PATTERNS,
    DRUM_VELOCITY,
    JAZZ_COMP,
    KICK,
    MELODY_STEP_P,
    MELODY_STEPS,
    MONTUNO,
    TOMS,
    Hits,
    _guitar_voicing,
    _near,
    _tone,
    _voice,
)


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
