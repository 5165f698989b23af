"""The music library: `similar` quality, `scan` throughput against `predict`, rescans, and memory.

    python benchmarks/bench_library.py [--per-genre 11] [--files 1000] [--model BUNDLE] [--ray]

1. precision@10 of `similar` on a synthetic corpus rendered with a seed the built-in model never saw:
   for every track, the share of its 10 nearest other tracks that have its genre (chance: 1/16), with the
   stored embedding (the ViT's pooled class token) and, for comparison, the track's genre distribution.
2. `scan` and `predict --csv` over the same corpus, each a fresh process: tracks per second and the ratio.
3. A library of FILES distinct short clips: the first scan, then a rescan with nothing changed (goal ≤ 5 s
   for 1,000 files), and the peak memory of both scans (the corpus scan's beside it: memory must not grow
   with the library).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

SEED = 8  # the built-in model: training seed 0, held-out 1, examples 2, tests 3 and 7


def run(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one CLI process."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "acousticsense.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"acousticsense {' '.join(args)} failed")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def precision_at(db: Path, k: int) -> dict[str, float]:
    """Mean share of same-genre (same folder) tracks among each track's k nearest others: with the stored
    embedding (through `similar`, as users get it) and with each of its two halves alone."""
    from acousticsense.catalog import Catalog
    from acousticsense.similar import Neighbours, resolve, similar

    with Catalog(db, create=False) as c:
        genre = {r["id"]: Path(r["path"]).parent.name for r in c.rows() if r["status"] == "ok"}
        shipped = np.mean([sum(genre[t["id"]] == genre[i] for t in similar(c, resolve(c, i), k)[1:]) / k for i in genre])
        ids, vectors, _ = c.embeddings(next(iter(c.models())))
        labels = c.db.execute("SELECT count(DISTINCT genre) FROM track_genres").fetchone()[0]  # the model's label count
    out = {"class token + genre distribution (shipped)": float(shipped)}
    for name, part in (("class token alone", vectors[:, :-labels]), ("genre distribution alone", vectors[:, -labels:])):
        part = part / np.linalg.norm(part, axis=1, keepdims=True)
        search = Neighbours(ids, part)
        out[name] = float(np.mean([sum(genre[j] == genre[int(i)] for j, _ in search.query(v, k, ids != i)) / k for i, v in zip(ids, part, strict=True)]))
    return out


def short_clips(folder: Path, n: int, seconds: float = 1.0, sr: int = 22050) -> None:
    """n distinct mono WAVs (a tone and noise of their own)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (110 + i) * t) + 0.05 * rng.standard_normal(len(t))
        sub = folder / f"{i // 100:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        with wave.open(str(sub / f"clip{i:05d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(sr)
            w.writeframes((x * 32767).astype("<i2").tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-genre", type=int, default=11)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--ray", action="store_true", help="also scan the corpus with --engine ray (a local Ray)")
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    from acousticsense.synth import make_corpus

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = make_corpus(tmp / "corpus", args.per_genre, seconds=args.seconds, seed=SEED, progress=False).parent
        files = sorted(str(p) for p in corpus.rglob("*.wav"))
        t_scan, rss_scan = run(["scan", str(corpus), "--db", str(tmp / "corpus.db"), *model])
        t_predict, _ = run(["predict", *files, "--csv", *model])
        print(f"## {len(files)} synthetic tracks of {args.seconds:g} s (seed {SEED})")
        for name, p in precision_at(tmp / "corpus.db", 10).items():
            print(f"precision@10, {name}: {p:.3f}")
        print(f"scan {len(files) / t_scan:.1f} tracks/s, predict {len(files) / t_predict:.1f} tracks/s: scan/predict {t_predict / t_scan:.2f}x (fresh processes)")
        if args.ray:
            t_ray, _ = run(["scan", str(corpus), "--db", str(tmp / "ray.db"), "--engine", "ray", *model])
            print(f"scan --engine ray (a local Ray started by the command) {len(files) / t_ray:.1f} tracks/s: {t_scan / t_ray:.2f}x the local engine")

        short_clips(tmp / "many", args.files)
        t_first, rss_first = run(["scan", str(tmp / "many"), "--db", str(tmp / "many.db"), *model])
        t_again, rss_again = run(["scan", str(tmp / "many"), "--db", str(tmp / "many.db"), *model])
        print(f"## {args.files} distinct 1-s clips")
        print(f"first scan {t_first:.1f} s, rescan with nothing changed {t_again:.2f} s (goal <= 5 s for 1,000)")
        print(f"peak RSS: scan of {len(files)} tracks {rss_scan:.0f} MB, of {args.files} clips {rss_first:.0f} MB, rescan {rss_again:.0f} MB")


if __name__ == "__main__":
    main()
