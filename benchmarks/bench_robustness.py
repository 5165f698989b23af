"""Robustness of a model bundle: clean, noisy, re-encoded, unheard SoundFont, calibration, "not music".

    python benchmarks/bench_robustness.py [--per-genre 10] [--not-music 30] [--model BUNDLE ...] [--json OUT] [--clips DIR]

Renders (in parallel, into a temporary folder, or DIR kept for the next run: rendering is most of the time) clips with a seed no model of this project trained on: music with
the training SoundFonts, the same music with the held-out SoundFont, and speech/noise/tone clips. Each condition
is applied to the same clean clips (numpy in memory, so only the condition differs):

- clean; white, pink, brown, hum and babble noise at 20, 10 and 0 dB SNR; Opus 32 kbit/s; MP3 64 kbit/s;
- the held-out SoundFont (`synth.HELD_OUT_SOUNDFONT`);
- not music: how often speech, noise and tones are flagged (``not_music``/``low_confidence``), and how often
  clean music is.

Prints one table per model (several --model: the same clips, side by side) with top-1 accuracy, the track ECE
(15 bins) and the flagged share per condition.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SEED = 4  # the built-in model: training seeds 0, 5 and 6, held-out 1, examples 2, tests 3 and 7, library bench 8
NOISES = ("white", "pink", "brown", "hum", "babble")
SNRS = (20, 10, 0)
CODECS = {"Opus 32 kbit/s": ("libopus", 32000), "MP3 64 kbit/s": ("libmp3lame", 64000)}


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as f:
        return np.frombuffer(f.readframes(f.getnframes()), "<i2").astype(np.float32) / 32768


def corpus(folder: Path, per_genre: int, not_music: int, soundfonts: list[str], seed: int) -> list[tuple[str, np.ndarray]]:
    from acousticsense.synth import make_corpus

    manifest = make_corpus(folder, per_genre, seconds=12.0, seed=seed, soundfonts=soundfonts, not_music=not_music, progress=True)
    rows = [line.split(",")[:2] for line in manifest.read_text().splitlines()[1:]]
    return [(label, read_wav(folder / path)) for path, label in rows]


def score(clf, clips: list[tuple[str, np.ndarray]]) -> dict[str, float]:
    """Top-1 accuracy, track ECE and the share flagged, over (label, samples) clips."""
    from acousticsense.calibrate import ece
    from acousticsense.results import flags_of

    results = [clf.classify(x) for _, x in clips]
    hits = np.array([r.label == label for (label, _), r in zip(clips, results)])
    conf = np.array([r.top_k[0].probability for r in results])
    flagged = np.array([bool(flags_of(r.warnings)) for r in results])
    return {"top1": float(hits.mean()), "ece": ece(conf, hits), "flagged": float(flagged.mean()), "n": len(clips)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-genre", type=int, default=10)
    parser.add_argument("--not-music", type=int, default=30, help="clips of each of speech, noise and tones")
    parser.add_argument("--model", action="append", help="bundle directory (repeatable; default: the built-in model)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--clips", type=Path, help="render the clips into this folder and keep them (a rerun with the same options reuses them)")
    args = parser.parse_args()

    from acousticsense.degrade import add_noise, noise, reencode
    from acousticsense.inference import Classifier
    from acousticsense.synth import HELD_OUT_SOUNDFONT, NOT_MUSIC, SAMPLE_RATE, TRAIN_SOUNDFONTS
    from acousticsense.synth.not_music import KINDS

    started = time.perf_counter()
    with contextlib.nullcontext(args.clips) if args.clips else tempfile.TemporaryDirectory() as tmp:
        clean_all = corpus(Path(tmp) / "clean", args.per_genre, args.not_music, list(TRAIN_SOUNDFONTS), SEED)
        unheard = corpus(Path(tmp) / "unheard", args.per_genre, 0, [HELD_OUT_SOUNDFONT], SEED)
    music = [(label, x) for label, x in clean_all if label != NOT_MUSIC]
    not_music = [(label, x) for label, x in clean_all if label == NOT_MUSIC]
    print(f"rendered {len(music)} music clips (x2 SoundFont sets) and {len(not_music)} not-music clips in {time.perf_counter() - started:.0f} s")

    rng = np.random.default_rng(SEED)
    conditions: dict[str, list[tuple[str, np.ndarray]]] = {"clean": music}
    for kind in NOISES:
        background = [noise(kind, len(x), SAMPLE_RATE, rng) for _, x in music]
        for snr in SNRS:
            conditions[f"{kind} noise {snr} dB"] = [(label, add_noise(x, b, snr)) for (label, x), b in zip(music, background)]
    for name, (codec, rate) in CODECS.items():
        conditions[name] = [(label, reencode(x, SAMPLE_RATE, codec, rate)) for label, x in music]
    conditions[f"unheard SoundFont ({HELD_OUT_SOUNDFONT})"] = unheard

    figures = {}
    for model in args.model or [None]:
        clf = Classifier.from_bundle(model, device="cpu")
        name = clf.config.model_id if model is None else str(model)
        rows = {c: score(clf, clips) for c, clips in conditions.items()}
        n = args.not_music  # the corpus lists them kind by kind
        kinds = {kind: score(clf, not_music[j * n:(j + 1) * n])["flagged"] for j, kind in enumerate(KINDS)} if n else {}
        figures[name] = {"conditions": rows, "not_music_flagged": kinds, "temperature": clf.config.temperature,
                         "ood_threshold": clf.config.ood_threshold}
        print(f"\n{name} (temperature {clf.config.temperature:g}, not-music threshold {clf.config.ood_threshold})")
        print("| condition | top-1 | vs clean | ECE | flagged |\n|---|---:|---:|---:|---:|")
        for c, r in rows.items():
            print(f"| {c} | {r['top1']:.3f} | {r['top1'] - rows['clean']['top1']:+.3f} | {r['ece']:.3f} | {r['flagged']:.3f} |")
        print("| not music flagged: " + ", ".join(f"{k} {v:.3f}" for k, v in kinds.items()) + " | | | | |")
    print(f"\n{len(music)} music clips per condition, {args.not_music} per not-music kind; {time.perf_counter() - started:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
