"""Synthetic labelled music: genre style table -> General MIDI arrangement -> FluidSynth -> effects.

No music datasets can be downloaded, so the default model learns from clips composed here. Each genre is one
row of `STYLES` (tempo range, drum grooves, chord progressions, scales and instrument parts drawn from General
MIDI program pools). A clip's random choices come from three RNG streams spawned from
``SeedSequence(clip_seed(seed, genre, index))`` -- the plan (all recorded parameters), the notes, and the
effect noise -- so the same seed and `SYNTH_VERSION` give bit-identical audio, and a clip's parameters can be
regenerated without rendering it.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
import wave
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pretty_midi
from scipy.signal import butter, fftconvolve, sosfilt
from tqdm import tqdm

from .errors import ParameterError

SYNTH_VERSION = "1"
SAMPLE_RATE = 22050
GENRES = ("Blues", "Classical", "Jazz", "Folk", "Pop", "Electronic", "Disco", "Rock",
          "Hip-Hop", "Rap", "Metal", "R&B", "Reggae", "World", "Latin", "Country")
DEFAULT_SOUNDFONT = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"  # bundled with pretty_midi
SYNTH_GAIN = 0.25  # FluidSynth master gain; stems come back as int16: headroom for loud kits, bits for quiet parts
TAIL_S = 0.5  # composed music beyond the end of the clip
PEAK = 0.99
NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "Gb", "G", "Ab", "A", "Bb", "B")

# ---------------------------------------------------------------------------------------------- harmony
SCALES: dict[str, tuple[str, tuple[int, ...]]] = {  # name -> (mode, intervals from the tonic)
    "major": ("major", (0, 2, 4, 5, 7, 9, 11)),
    "mixolydian": ("major", (0, 2, 4, 5, 7, 9, 10)),
    "bebop_dominant": ("major", (0, 2, 4, 5, 7, 9, 10, 11)),
    "major_pentatonic": ("major", (0, 2, 4, 7, 9)),
    "minor": ("minor", (0, 2, 3, 5, 7, 8, 10)),
    "dorian": ("minor", (0, 2, 3, 5, 7, 9, 10)),
    "phrygian": ("minor", (0, 1, 3, 5, 7, 8, 10)),
    "harmonic_minor": ("minor", (0, 2, 3, 5, 7, 8, 11)),
    "minor_pentatonic": ("any", (0, 3, 5, 7, 10)),
    "blues": ("any", (0, 3, 5, 6, 7, 10)),
    "phrygian_dominant": ("any", (0, 1, 4, 5, 7, 8, 10)),
    "double_harmonic": ("any", (0, 1, 4, 5, 7, 8, 11)),
    "hirajoshi": ("any", (0, 2, 3, 7, 8)),
    "in_sen": ("any", (0, 1, 5, 7, 10)),
}
CHORDS: dict[str, tuple[int, ...]] = {  # quality -> intervals from the chord root
    "maj": (0, 4, 7), "min": (0, 3, 7), "5": (0, 7), "dim": (0, 3, 6), "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10), "6": (0, 4, 7, 9),
    "9": (0, 4, 7, 10, 14), "13": (0, 4, 10, 14, 21), "maj9": (0, 4, 7, 11, 14), "m9": (0, 3, 7, 10, 14),
    "m11": (0, 3, 7, 10, 14, 17),
}
EXTENSIONS = {"maj": ("maj7", "maj9", "6"), "min": ("m7", "m9", "m11"), "7": ("9", "13"),
              "maj7": ("maj9",), "m7": ("m9", "m11")}  # jazz/R&B/hip-hop colour tones
PROGRESSIONS: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {  # name -> (mode, (root offset, quality) per bar)
    "12bar": ("any", ((0, "7"),) * 4 + ((5, "7"),) * 2 + ((0, "7"),) * 2 + ((7, "7"), (5, "7"), (0, "7"), (7, "7"))),
    "12bar_quick": ("any", ((0, "7"), (5, "7"), (0, "7"), (0, "7"), (5, "7"), (5, "7"), (0, "7"), (0, "7"),
                            (7, "7"), (5, "7"), (0, "7"), (7, "7"))),
    "ii-V-I": ("major", ((2, "m7"), (7, "7"), (0, "maj7"), (0, "maj7"))),
    "ii-V-I-VI": ("major", ((2, "m7"), (7, "7"), (0, "maj7"), (9, "7"))),
    "I-vi-ii-V": ("major", ((0, "maj7"), (9, "m7"), (2, "m7"), (7, "7"))),
    "minor_ii-V-i": ("minor", ((2, "m7b5"), (7, "7"), (0, "m7"), (0, "m7"))),
    "I-V-vi-IV": ("major", ((0, "maj"), (7, "maj"), (9, "min"), (5, "maj"))),
    "vi-IV-I-V": ("major", ((9, "min"), (5, "maj"), (0, "maj"), (7, "maj"))),
    "I-vi-IV-V": ("major", ((0, "maj"), (9, "min"), (5, "maj"), (7, "maj"))),
    "IV-I-V-vi": ("major", ((5, "maj"), (0, "maj"), (7, "maj"), (9, "min"))),
    "I-IV-V-I": ("major", ((0, "maj"), (5, "maj"), (7, "maj"), (0, "maj"))),
    "I-IV-V-IV": ("major", ((0, "maj"), (5, "maj"), (7, "maj"), (5, "maj"))),
    "I-IV-I-V7": ("major", ((0, "maj"), (5, "maj"), (0, "maj"), (7, "7"))),
    "I-I-IV-V": ("major", ((0, "maj"), (0, "maj"), (5, "maj"), (7, "maj"))),
    "I-bVII-IV-I": ("major", ((0, "maj"), (10, "maj"), (5, "maj"), (0, "maj"))),
    "I-IV_vamp": ("major", ((0, "maj"), (5, "maj")) * 2),
    "ii-V_vamp": ("major", ((2, "m7"), (7, "7")) * 2),
    "IV-iii-vi": ("major", ((5, "maj7"), (4, "m7"), (9, "m7"), (9, "m7"))),
    "IV-V-iii-vi": ("major", ((5, "maj7"), (7, "7"), (4, "m7"), (9, "m7"))),
    "circle": ("major", ((0, "maj"), (5, "maj"), (11, "dim"), (4, "min"), (9, "min"), (2, "min"), (7, "7"), (0, "maj"))),
    "pachelbel": ("major", ((0, "maj"), (7, "maj"), (9, "min"), (4, "min"), (5, "maj"), (0, "maj"), (5, "maj"), (7, "maj"))),
    "i-iv-V-i": ("minor", ((0, "min"), (5, "min"), (7, "7"), (0, "min"))),
    "i-VI-iv-V": ("minor", ((0, "min"), (8, "maj"), (5, "min"), (7, "7"))),
    "i-VI-VII-i": ("minor", ((0, "min"), (8, "maj"), (10, "maj"), (0, "min"))),
    "i-VI-III-VII": ("minor", ((0, "min"), (8, "maj"), (3, "maj"), (10, "maj"))),
    "andalusian": ("minor", ((0, "min"), (10, "maj"), (8, "maj"), (7, "maj"))),
    "i-bII": ("minor", ((0, "min"), (1, "maj")) * 2),
    "i_vamp": ("minor", ((0, "min"),) * 4),
    "i-iv_vamp": ("minor", ((0, "m7"), (5, "m7")) * 2),
    "i7-IV7_vamp": ("minor", ((0, "m7"), (0, "m7"), (5, "7"), (5, "7"))),
    "i-VI_vamp": ("minor", ((0, "m7"), (8, "maj7")) * 2),
    "i-VII_vamp": ("minor", ((0, "min"), (10, "maj")) * 2),
    "I-IV-V7-IV": ("major", ((0, "maj"), (5, "maj"), (7, "7"), (5, "maj"))),
    "drone": ("any", ((0, "5"),) * 4),
    "drone_bII": ("any", ((0, "5"), (0, "5"), (1, "maj"), (0, "5"))),
}

# ------------------------------------------------------------------------------------------------ drums
KICK, RIM, SNARE, CLAP, CHH, PHH, OHH, CRASH, RIDE, CHINA, RIDE_BELL, TAMB, COWBELL = 36, 37, 38, 39, 42, 44, 46, 49, 51, 52, 53, 54, 56
BONGO_HI, BONGO_LO, CONGA_MUTE, CONGA_OPEN, CONGA_LO, AGOGO, CABASA, MARACAS, CLAVES = 60, 61, 62, 63, 64, 67, 69, 70, 75
TOMS = (50, 48, 47, 45, 43, 41)  # high to low, for fills
DRUM_VELOCITY = {"X": 118, "x": 100, "o": 80, "g": 50, "?": 60, "r": 78}  # "?": hit 30% of the time, "r": may roll
# name -> (beats per bar, steps per beat, {GM drum note: one row per bar, repeated cyclically})
DRUM_PATTERNS: dict[str, tuple[int, int, dict[int, str]]] = {
    "rock": (4, 4, {KICK: "x.......x.x.....", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."}),
    "rock_ride": (4, 4, {KICK: "x.....x.x.......", SNARE: "....X.......X...", RIDE: "x.o.x.o.x.o.x.o."}),
    "rock_drive": (4, 4, {KICK: "x.x.....x.x.....", SNARE: "....X..g....X...", CHH: "xgogxgogxgogxgog"}),
    "pop": (4, 4, {KICK: "x.....x.x.......", SNARE: "....x.......x...", CLAP: "....x.......x...", CHH: "x.o.x.o.x.o.x.o."}),
    "pop_16": (4, 4, {KICK: "x......xx.......", CLAP: "....X.......X...", CHH: "xgogxgogxgogxgog", TAMB: "....o.......o..."}),
    "house": (4, 4, {KICK: "X...X...X...X...", CLAP: "....x.......x...", OHH: "..x...x...x...x.", CHH: "gg.ggg.ggg.ggg.g"}),
    "techno": (4, 4, {KICK: "X...X...X...X...", RIM: "...o......o.....", OHH: "..x...x...x...x.", CHH: "oooooooooooooooo"}),
    "disco": (4, 4, {KICK: "x...x...x...x...", SNARE: "....X.......X...", OHH: "..x...x...x...x.", CHH: "og.gog.gog.gog.g"}),
    "disco_tamb": (4, 4, {KICK: "x...x...x...x...", CLAP: "....X.......X...", OHH: "..x...x...x...x.", TAMB: "gogogogogogogogo"}),
    "boom_bap": (4, 4, {KICK: "x......x.x......", SNARE: "....X.......X...", CHH: "x.o.x.o.x.o.x.o."}),
    "boom_bap2": (4, 4, {KICK: "x.....x...x..x..", SNARE: "....X.......X...", CHH: "x.x.x.x.x.x.x.x.", OHH: "..............o."}),
    "boom_bap3": (4, 4, {KICK: "x..x......x.....", SNARE: "....X..g....X...", CHH: "xgogxgogxgogxgog"}),
    "trap": (4, 4, {KICK: "x......x..x.....", CLAP: "........X.......", SNARE: "........x.......", CHH: "xrxrxrxrxrxrxrxr"}),
    "trap2": (4, 4, {KICK: "x.....x...x..x..", CLAP: "........X.......", CHH: "x.r.x.rrx.r.xrrr", OHH: "..............o."}),
    "one_drop": (4, 4, {KICK: "........X.......", RIM: "........x.......", CHH: "x.o.x.o.x.o.x.o.", OHH: "..............o."}),
    "one_drop_offbeat": (4, 4, {KICK: "........X.......", SNARE: "........x.......", CHH: "..x...x...x...x.", RIM: "....g.......g..."}),
    "metal": (4, 4, {KICK: "xxxxxxxxxxxxxxxx", SNARE: "....X.......X...", CHINA: "x.......x.......", RIDE_BELL: "x...x...x...x..."}),
    "metal_gallop": (4, 4, {KICK: "x.xxx.xxx.xxx.xx", SNARE: "....X.......X...", CRASH: "x.......x.......", CHH: "x.x.x.x.x.x.x.x."}),
    "blast": (4, 4, {KICK: "xxxxxxxxxxxxxxxx", SNARE: ".x.x.x.x.x.x.x.x", CRASH: "x.o.x.o.x.o.x.o."}),
    "train": (4, 4, {KICK: "x.......x.......", SNARE: "ggggXgggggggXggg"}),
    "train_accent": (4, 4, {KICK: "x.......x.......", SNARE: "gxgxXxgxgxgxXxgx", CHH: "....o.......o..."}),
    "two_step": (4, 4, {KICK: "x.......x.......", RIM: "....x.......x...", CHH: "x.x.x.x.x.x.x.x."}),
    "folk": (4, 4, {KICK: "o.......o.......", TAMB: "....x.......x..."}),
    "folk_shaker": (4, 4, {KICK: "o.......o.......", MARACAS: "ogogogogogogogog"}),
    "waltz": (3, 4, {KICK: "o...........", TAMB: "....o...o..."}),
    "shuffle": (4, 3, {KICK: "x.....x.....", SNARE: "...X.....X..", CHH: "x.ox.ox.ox.o"}),
    "shuffle_ride": (4, 3, {KICK: "x..g..x..g..", SNARE: "...X.....X..", RIDE: "x.ox.ox.ox.o"}),
    "slow_blues": (4, 3, {KICK: "x.....x.....", SNARE: "...X.....X..", CHH: "xooxooxooxoo"}),
    "swing": (4, 3, {RIDE: "x..x.ox..x.o", PHH: "...x.....x..", KICK: "g..g..g..g..", SNARE: "?.??.??.??.?"}),
    "brush": (4, 3, {SNARE: "gggggggggggg", PHH: "...x.....x..", KICK: "g.....g.....", RIDE: "o..o.go..o.g"}),
    "rnb": (4, 4, {KICK: "x......x..x.....", RIM: "....X.......X...", CHH: "x.xox.xox.xox.xo"}),
    "rnb2": (4, 4, {KICK: "x..x....x.x.....", SNARE: "....X.......X..g", CLAP: "....x.......x...", CHH: "xgxgxgxgxgxgxgxg"}),
    "son_clave_32": (4, 4, {CLAVES: "x.....x.....x.......x...x.......", CONGA_MUTE: "g.g.X.g.g.g.....",
                            CONGA_OPEN: "............x.x.", COWBELL: "x...x...x...x...", MARACAS: "gggggggggggggggg"}),
    "son_clave_23": (4, 4, {CLAVES: "....x...x.......x.....x.....x...", CONGA_MUTE: "g.g.X.g.g.g.....",
                            CONGA_OPEN: "............x.x.", COWBELL: "x.x.xx.xx.x.xx.x", KICK: "......o.....o..."}),
    "bossa_clave": (4, 4, {RIM: "x..x..x...x..x..", KICK: "x..xx..xx..xx..x", CHH: "xgogxgogxgogxgog"}),
    "world_bongo": (4, 4, {BONGO_HI: "x.x..x.x..x.x...", BONGO_LO: "...x.....x....x.", MARACAS: "gggggggggggggggg"}),
    "world_maqsum": (4, 4, {CONGA_LO: "X.......x.......", CONGA_OPEN: "..x...x.....x...", TAMB: "g.g.g.g.g.g.g.g."}),
    "world_bell": (4, 3, {AGOGO: "x.x.xx.x.x.x", CONGA_LO: "x.....x.....", CONGA_OPEN: "..x..x..x..x", CABASA: "gggggggggggg"}),
}

# ----------------------------------------------------------------------------------- accompaniment data
Hits = tuple[tuple[float, float, int], ...]  # (position in beats, duration in beats, velocity) within a bar


def _grid(step: float, dur: float, strong: int, weak: int) -> Hits:
    """Evenly spaced hits over a 4-beat bar, accenting the beats."""
    return tuple((p, dur, strong if p % 1 == 0 else weak) for p in np.arange(0, 4, step).tolist())


COMP_RHYTHMS: dict[str, tuple[str, Hits]] = {  # name -> (voicing kind, hits)
    "pad": ("block", ((0, 4, 68),)),
    "half": ("block", ((0, 1.9, 80), (2, 1.9, 72))),
    "quarters": ("block", _grid(1, 0.8, 84, 84)),
    "rnb_keys": ("block", ((0, 2.4, 78), (2.5, 1.4, 70))),
    "waltz": ("block", ((1, 0.8, 70), (2, 0.8, 66), (3, 0.8, 66))),
    "skank": ("block", ((1, 0.22, 92), (3, 0.22, 92))),
    "bubble": ("block", ((0.5, 0.2, 70), (1.5, 0.2, 66), (2.5, 0.2, 70), (3.5, 0.2, 66))),
    "stabs": ("block", ((0.5, 0.3, 90), (1.5, 0.3, 84), (2.75, 0.3, 84), (3.5, 0.3, 80))),
    "offbeat_stab": ("block", ((0.5, 0.25, 92), (1.5, 0.25, 88), (2.5, 0.25, 92), (3.5, 0.25, 88))),
    "scratch": ("scratch", _grid(0.25, 0.08, 60, 84)),
    "shuffle": ("boogie", _grid(0.5, 0.45, 92, 78)),
    "strum_folk": ("strum", ((0, 0.9, 95), (1, 0.45, 85), (1.5, 0.45, 70), (2.5, 0.45, 70), (3, 0.45, 85), (3.5, 0.45, 70))),
    "strum8": ("strum", _grid(0.5, 0.45, 95, 72)),
    "boom_chick": ("strum", ((1, 0.4, 88), (3, 0.4, 88))),
    "train_strum": ("strum", ((0.5, 0.3, 70), (1, 0.3, 90), (1.5, 0.3, 70), (2.5, 0.3, 70), (3, 0.3, 90), (3.5, 0.3, 70))),
    "power8": ("power", _grid(0.5, 0.4, 102, 88)),
    "power16": ("power", _grid(0.25, 0.2, 108, 86)),
    "power_gallop": ("power", tuple(h for h in _grid(0.25, 0.2, 108, 90) if h[0] % 1 != 0.25)),
    "power_whole": ("power", ((0, 3.9, 100),)),
}
BASS_MOTIFS: dict[str, tuple[tuple[float, float, str], ...]] = {  # name -> (position, duration, chord tone)
    "root4": tuple((b, 0.9, "R") for b in range(4)),
    "root8": tuple((b / 2, 0.45, "R") for b in range(8)),
    "root16": tuple((b / 4, 0.22, "R") for b in range(16)),
    "offbeat": tuple((b + 0.5, 0.4, "R") for b in range(4)),
    "octave": tuple((b / 2, 0.35, "R8"[b % 2]) for b in range(8)),
    "boogie": tuple((b / 2, 0.45, t) for b, t in enumerate("R35676" + "53")),
    "half": ((0, 1.9, "R"), (2, 1.9, "5")),
    "whole": ((0, 4, "R"),),
    "drone": ((0, 4, "R"), (0, 4, "5")),
    "root_fifth": ((0, 0.9, "R"), (2, 0.9, "-")),
    "reggae_a": ((0, 1, "R"), (1.5, 0.4, "R"), (2, 0.4, "3"), (2.5, 0.9, "5"), (3.5, 0.4, "3")),
    "reggae_b": ((0.5, 0.4, "R"), (1, 0.9, "5"), (2.5, 0.4, "8"), (3, 0.4, "5"), (3.5, 0.4, "3")),
    "tumbao": ((1.5, 1.4, "5"), (3, 1.0, "N")),
    "synco_a": ((0, 0.7, "R"), (0.75, 0.2, "R"), (1.5, 0.5, "5"), (2.5, 0.4, "R"), (3, 0.5, "8")),
    "synco_b": ((0, 1.4, "R"), (1.75, 0.25, "R"), (2.5, 0.5, "3"), (3.5, 0.4, "5")),
}
MONTUNO = (((0, 0), (1, 2), (1.5, 1), (2.5, 2), (3, 0), (3.5, 1)),  # (position, chord-tone index), two bars
           ((0.5, 2), (1, 1), (2, 0), (2.5, 1), (3.5, 2)))
JAZZ_COMP = (((0, 1.4),), ((0, 0.5), (1.5, 0.8)), ((1.5, 0.5), (3, 0.8)), ((0.5, 1.2),), ((1, 0.6), (2.5, 1.2)), ((2, 1.5),))
ARP_ORDERS = {"up": (0, 1, 2, 3, 4), "updown": (0, 1, 2, 3, 4, 3, 2, 1), "alberti": (0, 2, 1, 2), "pick": (0, 2, 1, 3, 2, 4, 3, 2)}
MELODY_STEPS, MELODY_STEP_P = (-3, -2, -1, 0, 1, 2, 3), (0.05, 0.15, 0.28, 0.04, 0.28, 0.15, 0.05)
RAP_PROGRAMS = (53, 54, 85, 117, 115)  # voice oohs/synth voice/lead voice, melodic tom, woodblock: speech-like


# ---------------------------------------------------------------------------------------- style table
class Part(NamedTuple):
    """One instrument layer of a style: pattern and GM program pools, register, odds of appearing."""
    role: str
    patterns: tuple[str, ...]
    programs: tuple[int, ...]
    register: int
    prob: float = 1.0
    level_db: float = 0.0
    density: float = 1.0  # melody notes per beat; for rap, the share of 16ths with a syllable
    bend: float = 0.0  # probability that a long lead note is bent into


class Style(NamedTuple):
    """Musical features that identify a genre."""
    tempo: tuple[float, float]
    drums: tuple[str, ...]  # DRUM_PATTERNS names; "" = no drums
    kits: tuple[int, ...]  # GM2 drum kit programs
    progressions: tuple[str, ...]
    scales: tuple[str, ...]
    parts: tuple[Part, ...]
    swing: tuple[float, float] = (0.5, 0.5)  # position of the off-beat within its beat (0.5 = straight)
    swing_16th: bool = False  # swing 16ths instead of 8ths
    meters: tuple[int, ...] = (4,)  # beats per bar when there are no drums
    extended: bool = False  # colour chords with 7ths/9ths/11ths/13ths
    fills: bool = False  # tom fill every 4th bar, crash on phrase starts
    jitter_ms: float = 8.0
    reverb_s: tuple[float, float] = (0.3, 1.2)


STYLES: dict[str, Style] = {
    "Blues": Style((60, 120), ("shuffle", "shuffle_ride", "slow_blues"), (0, 8), ("12bar", "12bar_quick"),
                   ("blues", "minor_pentatonic", "major_pentatonic"), (
                       Part("bass", ("walking", "boogie"), (32, 33, 34), 40),
                       Part("chords", ("shuffle", "quarters", "half"), (0, 3, 16, 18, 27, 29), 58, level_db=-3),
                       Part("lead", ("melody",), (22, 29, 26, 27, 65, 66), 70, prob=0.9, density=1.4, bend=0.4)),
                   swing=(0.62, 0.68), jitter_ms=10, reverb_s=(0.4, 1.4)),
    "Classical": Style((60, 140), ("",), (0,), ("I-IV-V-I", "I-vi-ii-V", "circle", "pachelbel", "i-iv-V-i", "i-VI-iv-V"),
                       ("major", "minor", "harmonic_minor"), (
                           Part("bass", ("half", "whole", "root4"), (42, 43, 70, 48), 43, level_db=-2),
                           Part("chords", ("alberti", "arp8", "pad", "waltz"), (0, 6, 46, 48, 49, 45, 44), 60, level_db=-3),
                           Part("lead", ("melody",), (40, 73, 68, 71, 60, 41, 0, 48), 74, density=1.2)),
                       meters=(4, 3), jitter_ms=14, reverb_s=(1.2, 2.6)),
    "Jazz": Style((100, 220), ("swing", "swing", "brush"), (32, 40, 0), ("ii-V-I", "ii-V-I-VI", "I-vi-ii-V", "minor_ii-V-i"),
                  ("major", "bebop_dominant", "minor", "dorian", "harmonic_minor"), (
                      Part("bass", ("walking",), (32, 32, 35), 40),
                      Part("chords", ("jazz",), (0, 26, 4, 11), 60, level_db=-4),
                      Part("lead", ("melody",), (65, 66, 64, 56, 59, 57, 11, 73, 26), 72, prob=0.9, density=2.0)),
                  swing=(0.6, 0.67), extended=True, jitter_ms=10, reverb_s=(0.5, 1.5)),
    "Folk": Style((80, 125), ("folk", "folk_shaker", "waltz", "", ""), (0, 8), ("I-IV-V-I", "I-vi-IV-V", "I-IV-I-V7", "I-bVII-IV-I"),
                  ("major", "major_pentatonic", "mixolydian", "dorian", "minor"), (
                      Part("bass", ("root_fifth", "half"), (32, 33), 40, prob=0.6, level_db=-3),
                      Part("chords", ("strum_folk", "arp8", "pick", "strum8"), (24, 25, 25, 46, 15, 21), 55),
                      Part("lead", ("melody",), (40, 110, 73, 74, 22, 21, 71, 75), 72, prob=0.85, density=1.2, bend=0.1)),
                  swing=(0.5, 0.58), meters=(4, 3), jitter_ms=14, reverb_s=(0.4, 1.5)),
    "Pop": Style((92, 128), ("pop", "pop_16", "rock"), (0, 8, 24), ("I-V-vi-IV", "vi-IV-I-V", "I-vi-IV-V", "IV-I-V-vi"),
                 ("major", "major_pentatonic"), (
                     Part("bass", ("root8", "synco_a", "synco_b"), (33, 34, 38, 39), 40),
                     Part("chords", ("half", "strum8", "stabs", "quarters"), (0, 4, 5, 27, 24, 90), 62, level_db=-3),
                     Part("pad", ("pad",), (88, 89, 48, 50), 64, prob=0.5, level_db=-8),
                     Part("lead", ("melody",), (80, 81, 53, 54, 85, 73, 11, 65), 72, density=1.5)),
                 swing=(0.5, 0.54), fills=True, jitter_ms=5, reverb_s=(0.3, 1.2)),
    "Electronic": Style((120, 140), ("house", "techno"), (24, 25), ("i_vamp", "i-VI-III-VII", "i-VI-VII-i", "i7-IV7_vamp"),
                        ("minor", "dorian", "phrygian", "minor_pentatonic"), (
                            Part("bass", ("offbeat", "root16", "root8"), (38, 39, 87, 81), 38),
                            Part("pad", ("pad", "offbeat_stab", "stabs"), (88, 89, 90, 91, 94, 95, 50, 51, 62), 62, level_db=-5),
                            Part("lead", ("arp16", "arp8", "motif"), (80, 81, 82, 83, 84, 86, 98), 72, prob=0.9, level_db=-3)),
                        swing=(0.5, 0.53), swing_16th=True, jitter_ms=0, reverb_s=(0.3, 1.4)),
    "Disco": Style((110, 128), ("disco", "disco_tamb"), (0, 8), ("i7-IV7_vamp", "ii-V_vamp", "I-vi-ii-V", "i-iv_vamp"),
                   ("dorian", "minor_pentatonic", "major", "minor"), (
                       Part("bass", ("octave",), (33, 36, 37, 38), 40),
                       Part("guitar", ("scratch",), (28, 27), 64, prob=0.8, level_db=-5),
                       Part("strings", ("stabs", "pad", "offbeat_stab"), (48, 49, 50, 61), 67, prob=0.85, level_db=-4),
                       Part("lead", ("melody",), (61, 62, 56, 65, 80, 48, 53), 72, prob=0.7, density=1.3)),
                   swing=(0.5, 0.54), swing_16th=True, fills=True, jitter_ms=4, reverb_s=(0.4, 1.3)),
    "Rock": Style((100, 160), ("rock", "rock_ride", "rock_drive"), (0, 8, 16), ("I-IV-V-IV", "I-bVII-IV-I", "vi-IV-I-V", "i-VI-VII-i", "I-V-vi-IV"),
                  ("minor_pentatonic", "major_pentatonic", "mixolydian", "blues", "minor"), (
                      Part("bass", ("root8",), (33, 34), 40),
                      Part("guitar", ("power8", "power_whole", "strum8"), (29, 30, 29), 50, level_db=-1),
                      Part("guitar2", ("strum8", "arp8", "power8"), (27, 29, 25), 60, prob=0.45, level_db=-6),
                      Part("organ", ("pad",), (18, 16), 62, prob=0.2, level_db=-8),
                      Part("lead", ("melody",), (29, 30, 18), 74, prob=0.7, density=1.6, bend=0.35)),
                  swing=(0.5, 0.52), fills=True, jitter_ms=6, reverb_s=(0.4, 1.3)),
    "Hip-Hop": Style((82, 100), ("boom_bap", "boom_bap2", "boom_bap3"), (0, 8, 25), ("i-iv_vamp", "i-VI_vamp", "ii-V_vamp", "i7-IV7_vamp"),
                     ("minor", "dorian", "minor_pentatonic", "major_pentatonic"), (
                         Part("bass", ("synco_a", "synco_b", "sub808"), (33, 38, 39, 32, 35), 38),
                         Part("keys", ("rnb_keys", "half", "pad"), (4, 5, 0, 48, 11, 16, 26), 62, level_db=-5),
                         Part("lead", ("motif",), (11, 73, 4, 10, 8, 56, 61, 14), 74, prob=0.7, level_db=-4),
                         Part("rap", ("rap",), RAP_PROGRAMS, 58, prob=0.55, level_db=-2, density=0.75)),
                     swing=(0.54, 0.64), swing_16th=True, extended=True, jitter_ms=6, reverb_s=(0.2, 0.8)),
    "Rap": Style((130, 165), ("trap", "trap2"), (25, 24), ("i_vamp", "i-VI_vamp", "i-bII", "i-VI-III-VII"),
                 ("minor", "phrygian", "harmonic_minor", "minor_pentatonic"), (
                     Part("bass", ("sub808",), (38, 39), 33, level_db=2),
                     Part("pad", ("pad",), (88, 89, 91, 52, 48, 50), 62, prob=0.5, level_db=-8),
                     Part("lead", ("motif",), (10, 8, 14, 12, 46, 98, 4), 76, prob=0.75, level_db=-5),
                     Part("rap", ("rap",), RAP_PROGRAMS, 58, level_db=-1, density=0.8)),
                 swing=(0.5, 0.52), swing_16th=True, jitter_ms=2, reverb_s=(0.2, 0.7)),
    "Metal": Style((140, 210), ("metal", "metal_gallop", "blast"), (16, 0, 8), ("i-VI-VII-i", "i-bII", "andalusian", "i_vamp"),
                   ("minor", "phrygian", "harmonic_minor"), (
                       Part("bass", ("root16", "root8"), (33, 34), 36),
                       Part("guitar", ("power16", "power_gallop", "power8"), (30,), 45, level_db=1),
                       Part("guitar2", ("power16", "power_whole"), (30, 29), 52, prob=0.6, level_db=-4),
                       Part("lead", ("melody",), (30, 81), 76, prob=0.55, density=3.0, bend=0.2)),
                   fills=True, jitter_ms=3, reverb_s=(0.3, 1.0)),
    "R&B": Style((64, 100), ("rnb", "rnb2"), (0, 8, 24, 25), ("I-vi-ii-V", "IV-iii-vi", "IV-V-iii-vi", "i-iv_vamp", "ii-V_vamp"),
                 ("major", "major_pentatonic", "dorian", "minor_pentatonic", "minor"), (
                     Part("bass", ("synco_a", "synco_b", "half"), (33, 35, 38, 39), 38),
                     Part("keys", ("rnb_keys", "pad", "half"), (4, 5, 0, 16, 89), 62, level_db=-3),
                     Part("strings", ("pad",), (48, 49, 89, 52), 67, prob=0.4, level_db=-9),
                     Part("lead", ("melody",), (53, 54, 85, 52, 65, 64, 73), 72, prob=0.9, density=1.6, bend=0.25)),
                 swing=(0.52, 0.62), swing_16th=True, extended=True, jitter_ms=7, reverb_s=(0.4, 1.4)),
    "Reggae": Style((64, 92), ("one_drop", "one_drop_offbeat"), (0, 8), ("I-IV_vamp", "ii-V_vamp", "i-iv_vamp", "i-VII_vamp", "I-IV-V-IV"),
                    ("major", "minor", "dorian", "major_pentatonic", "minor_pentatonic"), (
                        Part("bass", ("reggae_a", "reggae_b"), (33, 34, 38), 38, level_db=2),
                        Part("skank", ("skank",), (27, 28, 25, 4), 62, level_db=-3),
                        Part("organ", ("bubble",), (16, 17, 18), 58, prob=0.6, level_db=-6),
                        Part("lead", ("melody",), (21, 22, 65, 56, 57, 16, 20), 72, prob=0.6, density=1.0)),
                    swing=(0.52, 0.6), swing_16th=True, jitter_ms=8, reverb_s=(0.4, 1.5)),
    "World": Style((80, 130), ("world_bongo", "world_maqsum", "world_bell", ""), (0, 48), ("drone", "drone_bII"),
                   ("hirajoshi", "in_sen", "major_pentatonic", "minor_pentatonic", "phrygian_dominant", "double_harmonic", "dorian"), (
                       Part("drone", ("drone",), (42, 43, 109, 52, 89), 43, level_db=-6),
                       Part("ostinato", ("ostinato",), (108, 107, 15, 12, 46, 114), 64, prob=0.7, level_db=-4),
                       Part("lead", ("melody",), (104, 106, 107, 75, 77, 111, 109, 79), 72, density=1.4, bend=0.25)),
                   meters=(4, 3), jitter_ms=12, reverb_s=(0.5, 2.0)),
    "Latin": Style((90, 130), ("son_clave_32", "son_clave_23", "bossa_clave"), (0,), ("I-IV-V7-IV", "i-iv-V-i", "ii-V-I", "andalusian"),
                   ("major", "minor", "harmonic_minor", "dorian"), (
                       Part("bass", ("tumbao",), (32, 33, 35), 40),
                       Part("piano", ("montuno",), (0, 1, 2), 64, level_db=-3),
                       Part("guitar", ("arp8",), (24,), 58, prob=0.3, level_db=-6),
                       Part("lead", ("melody",), (56, 57, 61, 73, 65, 66, 71), 72, prob=0.8, density=1.3)),
                   swing=(0.5, 0.53), jitter_ms=6, reverb_s=(0.4, 1.4)),
    "Country": Style((100, 170), ("train", "train_accent", "two_step"), (0, 40, 8), ("I-IV-V-I", "I-I-IV-V", "I-IV-I-V7"),
                     ("major", "major_pentatonic", "mixolydian"), (
                         Part("bass", ("root_fifth",), (32, 33, 34), 40),
                         Part("guitar", ("boom_chick", "train_strum", "strum8"), (25, 24, 27), 55, level_db=-2),
                         Part("banjo", ("pick",), (105,), 62, prob=0.35, level_db=-6),
                         Part("lead", ("melody",), (110, 105, 27, 25, 22, 26), 72, prob=0.9, density=1.6, bend=0.3)),
                     swing=(0.5, 0.56), fills=True, jitter_ms=8, reverb_s=(0.3, 1.2)),
}


# ------------------------------------------------------------------------------------------- utilities
def slug(genre: str) -> str:
    """Lower-case alphanumeric file stem for a genre: "Hip-Hop" -> "hiphop", "R&B" -> "rb"."""
    return re.sub(r"[^a-z0-9]", "", genre.lower())


def parse_genres(names: Sequence[str]) -> tuple[str, ...]:
    """Canonical genre names for `names` (case-insensitive; slugs accepted); ParameterError for unknown ones."""
    lookup = {key: g for g in GENRES for key in (g.lower(), slug(g))}
    unknown = [n for n in names if n.lower() not in lookup]
    if unknown or not names:
        raise ParameterError(f"unknown genre(s) {', '.join(map(repr, unknown)) or '(none given)'}; valid genres: {', '.join(GENRES)}")
    return tuple(dict.fromkeys(lookup[n.lower()] for n in names))


def clip_seed(seed: int, genre: str, index: int) -> int:
    """The RNG seed of clip `index` of `genre` in a corpus made with `seed`."""
    return int(np.random.SeedSequence([seed, GENRES.index(genre), index]).generate_state(1, np.uint64)[0])


def scale_fits(scale: str, progression: str) -> bool:
    """Whether a melody scale suits a progression: compatible mode, and a heptatonic scale holds every chord
    root and the tonic chord's third (pentatonic/blues scales are the usual exceptions, so they only need the mode)."""
    scale_mode, intervals = SCALES[scale]
    prog_mode, chords = PROGRESSIONS[progression]
    needed = {root for root, _ in chords} | {iv for root, q in chords if root == 0 for iv in CHORDS[q] if iv in (3, 4)}
    return (scale_mode == prog_mode or "any" in (scale_mode, prog_mode)) and (len(intervals) < 7 or needed <= set(intervals))


def _soundfont(soundfont: str | None) -> str:
    path = Path(soundfont) if soundfont else DEFAULT_SOUNDFONT
    if not path.is_file():
        raise ParameterError(f"SoundFont not found: {path}")
    return str(path)


def _streams(rng_seed: int) -> list[np.random.Generator]:
    """Independent generators for the plan, the notes and the effect noise of one clip."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(rng_seed).spawn(3)]


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _near(pitch_class: int, center: int) -> int:
    """The pitch with `pitch_class` in [center - 6, center + 6)."""
    return center - 6 + (pitch_class - center + 6) % 12


def _voice(root: int, intervals: tuple[int, ...], center: int, voicing: str) -> list[int]:
    """Close, open (drop-2) or rootless chord voicing around `center`."""
    ivs = intervals[1:] if voicing == "rootless" and len(intervals) > 3 else intervals
    pitches = sorted({_near(root + iv, center) for iv in ivs})
    if voicing == "open" and len(pitches) >= 3:
        pitches[-2] -= 12
    return sorted(pitches)


def _guitar_voicing(root: int, intervals: tuple[int, ...], center: int, strings: int = 5) -> list[int]:
    """A spread voicing from a low root upwards, like a strummed guitar chord."""
    pcs = {(root + iv) % 12 for iv in intervals[:4]}
    out = [_near(root, center - 5)]
    p = out[0]
    while len(out) < strings:
        p += 1
        if p % 12 in pcs and p - out[-1] >= 3:
            out.append(p)
    return out


def _tone(root: int, intervals: tuple[int, ...], tone: str, next_root: int) -> int:
    """Semitones above `root` of a chord tone: R root, 3/5/6/7, 8 octave, - fifth below, N next root."""
    if tone == "N":
        return (next_root - root + 6) % 12 - 6
    third = next((i for i in intervals if i in (3, 4)), 4)
    fifth = next((i for i in intervals if i in (6, 7, 8)), 7)
    return {"R": 0, "3": third, "5": fifth, "6": 9, "7": next((i for i in intervals if i in (10, 11)), 10),
            "8": 12, "-": fifth - 12}[tone]


# ---------------------------------------------------------------------------------------- composition
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
def _part_plan(part: Part, rng: np.random.Generator) -> dict:
    """Program, pattern, register, level and playing details of one included part."""
    program = int(_pick(rng, part.programs))
    return {"role": part.role, "pattern": _pick(rng, part.patterns), "program": program,
            "instrument": pretty_midi.program_to_instrument_name(program),
            "register": part.register + int(rng.integers(-2, 3)),
            "level_db": round(part.level_db + float(rng.uniform(-3, 3)), 2),
            "voicing": _pick(rng, ("close", "open")), "order": _pick(rng, tuple(ARP_ORDERS)),
            "density": round(part.density * float(rng.uniform(0.8, 1.2)), 3), "bend": part.bend}


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
                soundfont: str | None = None) -> dict:
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
    parts = [_part_plan(p, rng) for p in style.parts if rng.random() < p.prob]
    return {
        "genre": genre, "synth_version": SYNTH_VERSION, "rng_seed": int(rng_seed), "seconds": float(seconds),
        "sample_rate": int(sample_rate), "soundfont": Path(_soundfont(soundfont)).name,
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
    }


def _arrange(params: dict, rng: np.random.Generator) -> list[tuple[pretty_midi.Instrument, float]]:
    """The General MIDI arrangement of a plan: (instrument, linear gain) per stem, humanised."""
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
        stems.append((kit, drums["level_db"]))
    for part in params["parts"]:
        inst = pretty_midi.Instrument(part["program"], name=part["role"])
        inst.notes = GENERATORS[part["pattern"]](song, rng, part)
        stems.append((inst, part["level_db"]))
    hum = params["humanize"]
    for (inst, _), bend in zip(stems, [0.0] * bool(drums) + [p["bend"] for p in params["parts"]]):
        _humanize(inst.notes, rng, hum["timing_ms"] / 1000, hum["velocity"], hum["velocity_offset"])
        inst.pitch_bends = _bends(inst.notes, rng, bend)
    return [(inst, 10 ** (db / 20)) for inst, db in stems if inst.notes]


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


# ----------------------------------------------------------------------------------- render + effects
def _render(stems: list[tuple[pretty_midi.Instrument, float]], sample_rate: int, soundfont: str) -> np.ndarray:
    """Render each stem with FluidSynth (fresh synth per clip so output never depends on earlier clips) and mix."""
    import fluidsynth  # the C library is only needed when rendering

    synth = fluidsynth.Synth(gain=SYNTH_GAIN, samplerate=float(sample_rate),
                             **{"synth.reverb.active": 0, "synth.chorus.active": 0})
    try:
        sfid = synth.sfload(soundfont)
        if sfid < 0:
            raise ParameterError(f"FluidSynth could not load SoundFont {soundfont}")
        waves = []
        for inst, gain in stems:
            synth.system_reset()
            waves.append(gain * inst.fluidsynth(synthesizer=synth, sfid=sfid) / 32768.0)
    finally:
        synth.delete()
    mix = np.zeros(max((len(w) for w in waves), default=0))
    for w in waves:
        mix[:len(w)] += w
    return mix


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


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2))) if len(x) else 0.0


def _finish(mix: np.ndarray, params: dict, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Reverb, crop, EQ, background noise at the planned SNR and loudness normalisation (peak <= PEAK)."""
    fx, n, start = params["effects"], round(params["seconds"] * sr), round(params["start"] * sr)
    x = mix + fx["reverb_wet"] * _reverb(mix, sr, fx["reverb_rt60"], fx["predelay_ms"], rng)
    x = np.pad(x[start:start + n], (0, max(0, n - len(x[start:start + n]))))
    x = _eq(x, sr, fx["highpass_hz"], fx["lowpass_hz"], fx["tilt"])
    noise = sosfilt(butter(1, min(fx["noise_lowpass_hz"], 0.45 * sr), fs=sr, output="sos"), rng.standard_normal(n))
    x = x + noise * _rms(x) / max(_rms(noise), 1e-12) * 10 ** (-fx["noise_snr_db"] / 20)
    level = _rms(x)
    if level > 0:
        x *= 10 ** (fx["loudness_dbfs"] / 20) / level
        x *= min(1.0, PEAK / np.max(np.abs(x)))
    return x.astype(np.float32)


def render_clip(genre: str, rng_seed: int, seconds: float, sample_rate: int = SAMPLE_RATE,
                soundfont: str | None = None) -> tuple[np.ndarray, dict]:
    """Compose and render one clip: mono float32 audio of round(seconds * sample_rate) samples and its parameters."""
    if seconds <= 0:
        raise ParameterError(f"seconds must be positive, got {seconds}")
    params = clip_params(genre, rng_seed, seconds, sample_rate, soundfont)
    _, note_rng, fx_rng = _streams(rng_seed)
    mix = _render(_arrange(params, note_rng), sample_rate, _soundfont(soundfont))
    return _finish(mix, params, fx_rng, sample_rate), params


# --------------------------------------------------------------------------------------------- corpus
MANIFEST_COLUMNS = ("path", "label", "index", "seed", "rng_seed", "tempo", "meter", "key", "mode", "scale", "progression",
                    "swing", "drums", "programs", "reverb_rt60", "noise_snr_db", "loudness_dbfs")


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM WAV written under a temporary name and moved into place, so a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes(np.round(np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _is_complete(path: Path, frames: int, sample_rate: int) -> bool:
    try:
        with wave.open(str(path), "rb") as f:
            return (f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()) == (1, 2, sample_rate, frames)
    except (OSError, EOFError, wave.Error):
        return False


def _write_clip(genre: str, rng_seed: int, seconds: float, soundfont: str, path: Path) -> dict:
    audio, params = render_clip(genre, rng_seed, seconds, SAMPLE_RATE, soundfont)
    _write_wav(path, audio, SAMPLE_RATE)
    return params


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _manifest_row(rel: str, params: dict, seed: int, index: int) -> dict:
    return {"path": rel, "label": params["genre"], "index": index, "seed": seed, "rng_seed": params["rng_seed"],
            "tempo": params["tempo"], "meter": params["meter"], "key": params["key"], "mode": params["mode"],
            "scale": params["scale"], "progression": params["progression"], "swing": params["swing"],
            "drums": params["drums"]["pattern"] if params["drums"] else "",
            "programs": " ".join(f"{p['role']}:{p['program']}" for p in params["parts"]),
            **{k: params["effects"][k] for k in ("reverb_rt60", "noise_snr_db", "loudness_dbfs")}}


def make_corpus(out_dir: str | os.PathLike, per_genre: int, seconds: float = 12.0, seed: int = 0,
                genres: Sequence[str] = GENRES, workers: int | None = None, progress: bool = True,
                soundfont: str | None = None) -> Path:
    """Render `per_genre` clips per genre into out_dir/<Genre>/<slug>.<index:05d>.wav plus manifest.csv/json.

    Clip i of a genre depends only on (seed, genre, i), so a larger `per_genre` extends a corpus. `soundfont`
    overrides the bundled TimGM6mb.sf2.

    Resumable: clips already on disk (complete WAVs) are kept and their parameters regenerated from the seed.
    Refuses to mix settings with an earlier run in the same folder. Workers are spawned processes, so scripts
    calling this need the usual ``if __name__ == "__main__":`` guard. Returns the manifest.csv path.
    """
    names = parse_genres(genres)
    if per_genre < 1 or seconds <= 0 or seed < 0:
        raise ParameterError(f"need per_genre >= 1, seconds > 0 and seed >= 0 (got {per_genre}, {seconds}, {seed})")
    sf, out = _soundfont(soundfont), Path(out_dir)
    config = {"synth_version": SYNTH_VERSION, "seed": seed, "seconds": float(seconds), "sample_rate": SAMPLE_RATE,
              "soundfont": Path(sf).name}
    manifest_json = out / "manifest.json"
    if manifest_json.exists():
        old = json.loads(manifest_json.read_text(encoding="utf-8"))
        if {k: old.get(k) for k in config} != config:
            raise ParameterError(f"{out} holds a corpus made with other settings "
                             f"({json.dumps({k: old.get(k) for k in config})}); use a new folder")
    out.mkdir(parents=True, exist_ok=True)
    header = {**config, "per_genre": per_genre, "genres": list(names)}
    _write_text(manifest_json, json.dumps({**header, "complete": False, "clips": []}, indent=1))

    frames, params, todo = round(seconds * SAMPLE_RATE), {}, {}
    for genre in names:
        (out / genre).mkdir(exist_ok=True)
        for i in range(per_genre):
            rel, rng_seed = f"{genre}/{slug(genre)}.{i:05d}.wav", clip_seed(seed, genre, i)
            if _is_complete(out / rel, frames, SAMPLE_RATE):
                params[rel] = clip_params(genre, rng_seed, seconds, SAMPLE_RATE, sf)
            else:
                todo[rel] = (genre, rng_seed, seconds, sf, out / rel)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with tqdm(total=len(params) + len(todo), initial=len(params), desc="synth", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for rel, job in todo.items():
                params[rel] = _write_clip(*job)
                bar.update()
        else:
            # spawn, not fork: a child forked after FluidSynth ran in the parent deadlocks
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {pool.submit(_write_clip, *job): rel for rel, job in todo.items()}
                try:
                    for fut in as_completed(futures):
                        params[futures[fut]] = fut.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise

    rels = [(f"{g}/{slug(g)}.{i:05d}.wav", i) for g in names for i in range(per_genre)]
    manifest_csv = out / "manifest.csv"
    rows = [_manifest_row(rel, params[rel], seed, i) for rel, i in rels]
    with open(manifest_csv.with_name(".manifest.csv.tmp"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(manifest_csv.with_name(".manifest.csv.tmp"), manifest_csv)
    clips = [{"path": rel, "index": i, **params[rel]} for rel, i in rels]
    _write_text(manifest_json, json.dumps({**header, "complete": True, "clips": clips}, indent=1))
    return manifest_csv
