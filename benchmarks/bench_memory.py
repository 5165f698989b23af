"""Peak memory of `acousticsense predict` on a 30-minute track, above the same command on a 1-second clip.

    python benchmarks/bench_memory.py [--minutes 30] [--model BUNDLE]

Each run is a fresh process (peak RSS from the kernel via wait4), so the figures include everything the
command loads; the difference is what the track's length costs, at the bundle's hop and at a 1 s hop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 22050


def write_wav(path: Path, seconds: int) -> Path:
    """Mono 16-bit noise and tones, written a minute at a time."""
    rng = np.random.default_rng(0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        for start in range(0, seconds, 60):
            n = SAMPLE_RATE * min(60, seconds - start)
            t = np.arange(n) / SAMPLE_RATE
            x = 0.3 * np.sin(2 * np.pi * (220 + start) * t) + 0.05 * rng.standard_normal(n)
            w.writeframes((x * 32767).astype("<i2").tobytes())
    return path


def peak_mb(args: list[str]) -> float:
    """Peak resident memory (MB) of one `predict` process."""
    proc = subprocess.Popen([sys.executable, "-m", "acousticsense.cli", "predict", *args, "--csv"], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"predict {' '.join(args)} failed")
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_wav(Path(tmp) / "clip.wav", 1)
        track = write_wav(Path(tmp) / "track.wav", 60 * args.minutes)
        base = peak_mb([str(clip), *model])
        print(f"{'input':<36}{'peak MB':>10}{'above clip':>12}")
        print(f"{'1 s clip (baseline)':<36}{base:>10.0f}{0:>12.0f}")
        for name, extra in ((f"{args.minutes} min track, bundle's hop", []), (f"{args.minutes} min track, --hop 1", ["--hop", "1"])):
            peak = peak_mb([str(track), *model, *extra])
            print(f"{name:<36}{peak:>10.0f}{peak - base:>12.0f}")


if __name__ == "__main__":
    main()
