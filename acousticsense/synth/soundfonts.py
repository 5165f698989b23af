"""General MIDI SoundFonts: which ones the corpus renders with, where Debian installs them, one held out."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import ParameterError

_SF2, _SF3 = Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3")
SOUNDFONTS: dict[str, tuple[Path, ...]] = {  # name -> where it may be installed (first found wins)
    "TimGM6mb": (_SF2 / "TimGM6mb.sf2",),  # Debian timgm6mb-soundfont (6 MB); pretty_midi bundles the same file
    "MuseScore_General": (_SF3 / "MuseScore_General.sf3", _SF3 / "MuseScore_General_Full.sf3"),  # musescore-general-soundfont
    "FluidR3_GM": (_SF2 / "FluidR3_GM.sf2",),  # Debian fluid-soundfont-gm (141 MB)
}
DEBIAN_PACKAGES = {"TimGM6mb": "timgm6mb-soundfont", "MuseScore_General": "musescore-general-soundfont",
                   "FluidR3_GM": "fluid-soundfont-gm"}
# The built-in model trains on these two; MuseScore_General (the most realistic, but 6 s to load per clip: too slow
# for a corpus of thousands on 2 cores) is never used in training and measures transfer to unheard instruments.
TRAIN_SOUNDFONTS = ("TimGM6mb", "FluidR3_GM")
HELD_OUT_SOUNDFONT = "MuseScore_General"


def soundfont_path(spec: str) -> Path:
    """The file of a SoundFont given by registry name or by path; ParameterError naming the fix if it is missing."""
    if spec in SOUNDFONTS:
        found = next((p for p in SOUNDFONTS[spec] if p.is_file()), None)
        if spec == "TimGM6mb" and found is None:
            import pretty_midi

            found = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
        if found is None or not found.is_file():
            raise ParameterError(f"SoundFont {spec} is not installed: apt-get install {DEBIAN_PACKAGES[spec]}")
        return found
    path = Path(spec)
    if path.suffix.lower() not in (".sf2", ".sf3") or not path.is_file():
        raise ParameterError(f"not a SoundFont file (.sf2/.sf3): {spec}; known names: {', '.join(SOUNDFONTS)}")
    return path


def soundfont_names(specs: Sequence[str]) -> tuple[str, ...]:
    """Checked, de-duplicated SoundFont specs as recorded in plans: registry names stay names, files become absolute paths."""
    if not specs:
        raise ParameterError("need at least one SoundFont")
    checked = [(s, soundfont_path(s)) for s in specs]  # raises for a missing or foreign file
    return tuple(dict.fromkeys(s if s in SOUNDFONTS else str(path.resolve()) for s, path in checked))
