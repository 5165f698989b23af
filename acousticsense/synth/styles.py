"""The genre style table: what identifies each genre (tempo, grooves, harmony, instrument parts)."""

from __future__ import annotations

import re
from typing import NamedTuple, Sequence

from ..errors import ParameterError

GENRES = ("Blues", "Classical", "Jazz", "Folk", "Pop", "Electronic", "Disco", "Rock",
          "Hip-Hop", "Rap", "Metal", "R&B", "Reggae", "World", "Latin", "Country")
RAP_PROGRAMS = (53, 54, 85, 117, 115)  # GM stand-ins for a rap voice (when not spoken by espeak-ng)
SUNG_PROGRAMS = (52, 53, 54)  # choir aahs, voice oohs, synth voice: GM stand-ins for a sung line


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
                       Part("lead", ("melody",), (22, 29, 26, 27, 65, 66), 70, prob=0.8, density=1.4, bend=0.4),
                       Part("vocal", ("melody",), SUNG_PROGRAMS, 62, prob=0.4, density=0.9, bend=0.4)),
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
                      Part("lead", ("melody",), (40, 110, 73, 74, 22, 21, 71, 75), 72, prob=0.75, density=1.2, bend=0.1),
                      Part("vocal", ("melody",), SUNG_PROGRAMS, 64, prob=0.45, density=0.8)),
                  swing=(0.5, 0.58), meters=(4, 3), jitter_ms=14, reverb_s=(0.4, 1.5)),
    "Pop": Style((92, 128), ("pop", "pop_16", "rock"), (0, 8, 24), ("I-V-vi-IV", "vi-IV-I-V", "I-vi-IV-V", "IV-I-V-vi"),
                 ("major", "major_pentatonic"), (
                     Part("bass", ("root8", "synco_a", "synco_b"), (33, 34, 38, 39), 40),
                     Part("chords", ("half", "strum8", "stabs", "quarters"), (0, 4, 5, 27, 24, 90), 62, level_db=-3),
                     Part("pad", ("pad",), (88, 89, 48, 50), 64, prob=0.5, level_db=-8),
                     Part("lead", ("melody",), (80, 81, 53, 54, 85, 73, 11, 65), 72, prob=0.7, density=1.5),
                     Part("vocal", ("melody",), SUNG_PROGRAMS, 67, prob=0.6, density=1.2, bend=0.1)),
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
                       Part("lead", ("melody",), (61, 62, 56, 65, 80, 48, 53), 72, prob=0.6, density=1.3),
                       Part("vocal", ("melody",), SUNG_PROGRAMS, 69, prob=0.4, density=1.0)),
                   swing=(0.5, 0.54), swing_16th=True, fills=True, jitter_ms=4, reverb_s=(0.4, 1.3)),
    "Rock": Style((100, 160), ("rock", "rock_ride", "rock_drive"), (0, 8, 16), ("I-IV-V-IV", "I-bVII-IV-I", "vi-IV-I-V", "i-VI-VII-i", "I-V-vi-IV"),
                  ("minor_pentatonic", "major_pentatonic", "mixolydian", "blues", "minor"), (
                      Part("bass", ("root8",), (33, 34), 40),
                      Part("guitar", ("power8", "power_whole", "strum8"), (29, 30, 29), 50, level_db=-1),
                      Part("guitar2", ("strum8", "arp8", "power8"), (27, 29, 25), 60, prob=0.45, level_db=-6),
                      Part("organ", ("pad",), (18, 16), 62, prob=0.2, level_db=-8),
                      Part("lead", ("melody",), (29, 30, 18), 74, prob=0.6, density=1.6, bend=0.35),
                      Part("vocal", ("melody",), SUNG_PROGRAMS, 64, prob=0.45, density=1.0, bend=0.2)),
                  swing=(0.5, 0.52), fills=True, jitter_ms=6, reverb_s=(0.4, 1.3)),
    "Hip-Hop": Style((82, 100), ("boom_bap", "boom_bap2", "boom_bap3"), (0, 8, 25), ("i-iv_vamp", "i-VI_vamp", "ii-V_vamp", "i7-IV7_vamp"),
                     ("minor", "dorian", "minor_pentatonic", "major_pentatonic"), (
                         Part("bass", ("synco_a", "synco_b", "sub808"), (33, 38, 39, 32, 35), 38),
                         Part("keys", ("rnb_keys", "half", "pad"), (4, 5, 0, 48, 11, 16, 26), 62, level_db=-5),
                         Part("lead", ("motif",), (11, 73, 4, 10, 8, 56, 61, 14), 74, prob=0.7, level_db=-4),
                         Part("rap", ("rap",), RAP_PROGRAMS, 58, prob=0.7, level_db=-2, density=0.75)),
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
                     Part("lead", ("melody",), (53, 54, 85, 52, 65, 64, 73), 72, prob=0.6, density=1.6, bend=0.25),
                     Part("vocal", ("melody",), SUNG_PROGRAMS, 66, prob=0.7, density=1.3, bend=0.35)),
                 swing=(0.52, 0.62), swing_16th=True, extended=True, jitter_ms=7, reverb_s=(0.4, 1.4)),
    "Reggae": Style((64, 92), ("one_drop", "one_drop_offbeat"), (0, 8), ("I-IV_vamp", "ii-V_vamp", "i-iv_vamp", "i-VII_vamp", "I-IV-V-IV"),
                    ("major", "minor", "dorian", "major_pentatonic", "minor_pentatonic"), (
                        Part("bass", ("reggae_a", "reggae_b"), (33, 34, 38), 38, level_db=2),
                        Part("skank", ("skank",), (27, 28, 25, 4), 62, level_db=-3),
                        Part("organ", ("bubble",), (16, 17, 18), 58, prob=0.6, level_db=-6),
                        Part("lead", ("melody",), (21, 22, 65, 56, 57, 16, 20), 72, prob=0.5, density=1.0),
                        Part("vocal", ("melody",), SUNG_PROGRAMS, 62, prob=0.45, density=0.9)),
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
                       Part("lead", ("melody",), (56, 57, 61, 73, 65, 66, 71), 72, prob=0.7, density=1.3),
                       Part("vocal", ("melody",), SUNG_PROGRAMS, 65, prob=0.35, density=1.0)),
                   swing=(0.5, 0.53), jitter_ms=6, reverb_s=(0.4, 1.4)),
    "Country": Style((100, 170), ("train", "train_accent", "two_step"), (0, 40, 8), ("I-IV-V-I", "I-I-IV-V", "I-IV-I-V7"),
                     ("major", "major_pentatonic", "mixolydian"), (
                         Part("bass", ("root_fifth",), (32, 33, 34), 40),
                         Part("guitar", ("boom_chick", "train_strum", "strum8"), (25, 24, 27), 55, level_db=-2),
                         Part("banjo", ("pick",), (105,), 62, prob=0.35, level_db=-6),
                         Part("lead", ("melody",), (110, 105, 27, 25, 22, 26), 72, prob=0.75, density=1.6, bend=0.3),
                         Part("vocal", ("melody",), SUNG_PROGRAMS, 64, prob=0.5, density=1.0, bend=0.2)),
                     swing=(0.5, 0.56), fills=True, jitter_ms=8, reverb_s=(0.3, 1.2)),
}




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



class Production(NamedTuple):
    """A genre's mix and mastering chain, as ranges a clip draws from (neighbouring genres overlap)."""
    compress: tuple[float, float]  # bus compressor ratio
    drive: float = 0.0  # probability that the guitars go through a waveshaper (distortion)
    pump: float = 0.0  # probability of sidechain pumping keyed by the kick
    lofi: float = 0.0  # probability of a lo-fi/vinyl treatment (bit and rate reduction, crackle, wow)
    voiced: float = 0.85  # probability that a vocal/rap part is a rendered voice rather than a GM stand-in


PRODUCTION: dict[str, Production] = {
    "Blues": Production((1.5, 3), drive=0.4, lofi=0.1), "Classical": Production((1, 1.5)),
    "Jazz": Production((1, 2), lofi=0.1), "Folk": Production((1, 2.5)),
    "Pop": Production((2.5, 6), pump=0.2), "Electronic": Production((3, 8), pump=0.8),
    "Disco": Production((2, 5), pump=0.5), "Rock": Production((2, 5), drive=0.9),
    "Hip-Hop": Production((2.5, 6), pump=0.15, lofi=0.45), "Rap": Production((3, 8), pump=0.2, lofi=0.1),
    "Metal": Production((3, 8), drive=1.0), "R&B": Production((2, 5), pump=0.1, lofi=0.1),
    "Reggae": Production((1.5, 4), lofi=0.2), "World": Production((1, 2.5)),
    "Latin": Production((1.5, 4)), "Country": Production((1.5, 4), drive=0.15),
}
