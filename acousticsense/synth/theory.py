"""Music theory and groove tables: scales, chords, progressions, drum patterns, accompaniment rhythms."""

from __future__ import annotations

import numpy as np

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


def scale_fits(scale: str, progression: str) -> bool:
    """Whether a melody scale suits a progression: compatible mode, and a heptatonic scale holds every chord
    root and the tonic chord's third (pentatonic/blues scales are the usual exceptions, so they only need the mode)."""
    scale_mode, intervals = SCALES[scale]
    prog_mode, chords = PROGRESSIONS[progression]
    needed = {root for root, _ in chords} | {iv for root, q in chords if root == 0 for iv in CHORDS[q] if iv in (3, 4)}
    return (scale_mode == prog_mode or "any" in (scale_mode, prog_mode)) and (len(intervals) < 7 or needed <= set(intervals))



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


