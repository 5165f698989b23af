"""Synthetic labelled music: genre style table -> arrangement -> FluidSynth and voices -> production -> effects.

No music datasets can be downloaded, so the default model learns from clips composed here. Each genre is one
row of `STYLES` (tempo range, drum grooves, chord progressions, scales and instrument parts drawn from General
MIDI program pools) and of `PRODUCTION` (its mix and mastering chain). A clip's random choices come from four RNG
streams spawned from ``SeedSequence(clip_seed(seed, genre, index))`` -- the plan (all recorded parameters), the
notes, the effect noise and the voices -- so the same seed and `SYNTH_VERSION` give bit-identical audio, and a
clip's parameters can be regenerated without rendering it. Modules, one per concern:

- `theory`: scales, chords, progressions, drum patterns, accompaniment rhythms;
- `styles`: the genre style and production tables;
- `arrange`: a clip's plan and its arrangement into stems;
- `soundfonts`: the General MIDI SoundFonts (Debian packages), which train and which is held out;
- `voice`: espeak-ng speech (rap verses, babble) and a source-filter singer;
- `render`: FluidSynth stems, the production chain, room, EQ, noise, loudness;
- `not_music`: speech, noise and tone clips, for teaching and measuring "not music";
- `corpus`: many clips into folders with a manifest, resumably.
"""

from .arrange import SAMPLE_RATE, SYNTH_VERSION, clip_params, clip_seed
from .corpus import make_corpus
from .not_music import NOT_MUSIC, render_not_music
from .render import render_clip
from .soundfonts import HELD_OUT_SOUNDFONT, SOUNDFONTS, TRAIN_SOUNDFONTS
from .styles import GENRES, PRODUCTION, STYLES, parse_genres, slug

__all__ = ["GENRES", "HELD_OUT_SOUNDFONT", "NOT_MUSIC", "PRODUCTION", "SAMPLE_RATE", "SOUNDFONTS", "STYLES",
           "SYNTH_VERSION", "TRAIN_SOUNDFONTS", "clip_params", "clip_seed", "make_corpus", "parse_genres",
           "render_clip", "render_not_music", "slug"]
