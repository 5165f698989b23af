"""Speech from espeak-ng (Debian's espeak-ng): words and sentences in many languages and voices, crowd babble.

Used by the synthetic corpus (rap verses, "not music" speech) and by `degrade` (babble noise). Deterministic:
the same text, voice, speed and pitch give the same samples.
"""

from __future__ import annotations

import functools
import io
import shutil
import subprocess
import wave

import numpy as np
from scipy.signal import resample_poly

from .errors import ParameterError

ESPEAK_RATE = 22050  # espeak-ng's native output rate
# espeak-ng voices and variants (all ship with Debian's espeak-ng-data)
SPEAKERS = ("en-us", "en-gb", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "croak", "whisper")
LANGUAGES = ("en-us", "en-gb", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "hi", "id", "sw", "tr", "vi", "cmn")
# "money" appears twice (drawn twice as often); left so, because any change here changes every rendered corpus
WORDS = ("yeah", "go", "now", "back", "night", "street", "fly", "real", "time", "move", "flow", "beat", "rhyme", "mind",
         "money", "city", "ride", "light", "fire", "game", "drop", "rock", "high", "low", "stay", "true", "block", "crew",
         "word", "life", "dream", "gold", "cold", "run", "free", "king", "ice", "sky", "rise", "shine", "check", "mic",
         "bass", "loud", "proud", "style", "smile", "come", "on", "up", "down", "all", "day", "way", "play", "say", "get",
         "it", "make", "break", "take", "we", "they", "you", "I", "the", "and", "so", "but", "never", "ever", "money")
def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@functools.lru_cache(maxsize=512)  # words recur within a verse; ~40 kB each
def speak(text: str, voice: str = "en-us", speed: int = 175, pitch: int = 50, sample_rate: int = ESPEAK_RATE) -> np.ndarray:
    """espeak-ng's rendering of `text` as float32 mono at `sample_rate` (deterministic for the same arguments)."""
    if not have_espeak():
        raise ParameterError("espeak-ng is not installed (apt-get install espeak-ng): it renders the corpus's voices")
    run = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-s", str(int(speed)), "-p", str(int(pitch)), "--", text],
                         capture_output=True, timeout=30, check=False)
    if run.returncode != 0:
        raise ParameterError(f"espeak-ng failed for voice {voice!r}: {run.stderr.decode(errors='replace').strip()[:200]}")
    with wave.open(io.BytesIO(run.stdout)) as f:
        rate, pcm = f.getframerate(), np.frombuffer(f.readframes(f.getnframes()), "<i2")
    x = pcm.astype(np.float32) / 32768.0
    if rate != sample_rate:
        g = np.gcd(rate, sample_rate)
        x = resample_poly(x, sample_rate // g, rate // g).astype(np.float32)
    return x


def babble(n: int, sr: int, rng: np.random.Generator, talkers: int = 6) -> np.ndarray:
    """Crowd babble: `talkers` random speakers of random words, overlapped (a real-world background noise)."""
    out = np.zeros(n, np.float32)
    for _ in range(talkers):
        pos = int(rng.integers(0, max(1, sr // 2)))
        while pos < n:
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9))))
            x = speak(words, f"{rng.choice(SPEAKERS)}+{rng.choice(VARIANTS[:12])}", int(rng.integers(140, 220)),
                      int(rng.integers(20, 80)), sr)
            x = x[: n - pos]
            out[pos : pos + len(x)] += x
            pos += len(x) + int(rng.integers(0, sr // 3))
    return out
