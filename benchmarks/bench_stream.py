"""Real-time latency: from a window's last sample arriving to its ranking, with the built-in model.

    python benchmarks/bench_stream.py [--model BUNDLE] [--device cpu] [--seconds 40] [--block 0.05] [--threads 1]

Audio (the example clips, one after another) is pushed into a :class:`LiveClassifier` in blocks of ``--block``
seconds at real-time pace, as a microphone or a live pipe delivers it, once with the model's hop and once with a
1 s hop. For each window: ``end-to-end`` = from the push of the block holding its last sample to its update (it
includes waiting for the STFT context, up to ``n_fft / 2`` samples, and the rest of that block); ``compute`` = from
the push that completed it (context included) to its update. Prints the median and p95 of each, with the hop.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from acousticsense.audio import load_audio
from acousticsense.inference import Classifier
from acousticsense.options import EXAMPLES_DIR
from acousticsense.stream import LiveClassifier


def measure(clf: Classifier, x: np.ndarray, hop: float | None, block: int) -> tuple[list[float], list[float], float]:
    """(end-to-end ms, compute ms) per window of ``x`` pushed in real time, and the context look-ahead in ms."""
    live = LiveClassifier(clf, hop=hop)
    rate, win = live.pre.sample_rate, live.pre.window_samples
    pushed: list[tuple[int, float]] = []  # (end sample of the block, when it was pushed)
    e2e, compute, ahead = [], [], []
    began = time.perf_counter()
    for i in range(0, len(x), block):
        time.sleep(max(0.0, began + (i + block) / rate - time.perf_counter()))  # the block is there once recorded
        pushed.append((i + block, time.perf_counter()))
        for u in live.push(x[i : i + block]):
            last = round(u.start * rate) + win - 1
            arrived = next(t for end, t in pushed if end > last)
            e2e.append((time.perf_counter() - arrived) * 1000)
            compute.append(u.latency_ms)
            ahead.append((live._needs(round(u.start * rate)) - last - 1) / rate * 1000)
    return e2e, compute, max(ahead)


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):6.1f} ms  p95 {np.percentile(ms, 95):6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=40.0, help="audio per run (each run takes this long: it is paced)")
    parser.add_argument("--block", type=float, default=0.05, help="seconds per pushed block")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, as `acousticsense stream` (default 1; 0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clf = Classifier.from_bundle(args.model, device=args.device)
    pre = clf.config.preprocessing
    clips = [load_audio(p, pre.sample_rate).samples for p in sorted(EXAMPLES_DIR.glob("*.ogg"))]
    x = np.concatenate(clips)[: int(args.seconds * pre.sample_rate)]
    clf.classify(x[: pre.window_samples])  # warm-up
    block = max(1, round(args.block * pre.sample_rate))
    print(f"{clf.config.model_id} on {clf.device}, {torch.get_num_threads()} threads; {len(x) / pre.sample_rate:.0f} s at real-time pace in blocks of {block / pre.sample_rate * 1000:.0f} ms")
    for hop in (None, 1.0):
        e2e, compute, ahead = measure(clf, x, hop, block)
        print(
            f"hop {hop or pre.hop_seconds:g} s ({len(e2e)} windows): end-to-end {summary(e2e)} | compute {summary(compute)} | STFT look-ahead ≤ {ahead:.0f} ms"
        )


if __name__ == "__main__":
    main()
