"""How faithful and how fast each relevance method of ``acousticsense.explain`` is, on the example clips.

    python benchmarks/bench_explain.py [--model BUNDLE] [--device cpu|cuda] [--draws 20]

Faithfulness: the drop of each clip's top-genre probability when 20 % of every window's patches are set to the
image's floor: the most relevant (top), random ones (``draws`` per clip; mean ± std over draws of the clips' mean)
and the least relevant (bottom); ``top>rnd``: clips where deleting the top patches costs more than random ones.
Runner-up: the same for each clip's second genre (the map made for it), as the median relative drop of its probability.
Half-silent: the share of the map in the music half of 8 s of a clip + 8 s of zeros (both orders, all clips).
Time: one batch of all the clips' windows through :func:`~acousticsense.explain.patch_relevance`, per window.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from acousticsense.audio import load_audio
from acousticsense.bundle import EXAMPLES_DIR
from acousticsense.explain import METHODS, explain, faithfulness, patch_relevance, window_images
from acousticsense.inference import Classifier


def half_silent_mass(clf: Classifier, samples: np.ndarray, method: str) -> float:
    """Mean share of the map in the music half, over (music, zeros) and (zeros, music)."""
    half = round(8.0 * clf.config.preprocessing.sample_rate)
    music, quiet = samples[:half], np.zeros(half, np.float32)
    shares = []
    for first in (True, False):
        rel = explain(clf, np.concatenate([music, quiet] if first else [quiet, music]), method=method).relevance
        middle = rel.shape[1] // 2
        shares.append(float(rel[:, :middle].sum() if first else rel[:, middle:].sum()))
    return float(np.mean(shares))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--draws", type=int, default=20, help="random deletions per clip")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    clf = Classifier.from_bundle(args.model, device=args.device)
    pre = clf.config.preprocessing
    clips = sorted(Path(EXAMPLES_DIR).glob("*.ogg"))
    features = [clf.preprocess(p) for p in clips]
    waves = [load_audio(p, pre.sample_rate).samples for p in clips]
    runner_up = [clf.labels[int(clf.forward([f])[0].mean(0).argsort(descending=True)[1])] for f in features]
    images = torch.cat([window_images(f) for f in features])
    print(f"{clf.config.model_id} on {clf.device}: {len(clips)} clips, {len(images)} windows, 20 % of the patches deleted")
    print("drop of the top genre's probability (random: mean ± std over draws); runner-up: median relative drop of the 2nd genre's")
    print(f"{'method':<14}{'top':>8}{'random':>17}{'bottom':>9}{'top>rnd':>9}{'runner-up top/rnd':>19}{'half-silent':>13}{'ms/window':>11}")
    for method in METHODS:
        runs = [faithfulness(clf, f, method, 0.2, args.draws) for f in features]
        top, bottom = statistics.mean(r["top"] for r in runs), statistics.mean(r["bottom"] for r in runs)
        randoms = np.mean([r["random_draws"] for r in runs], axis=0)  # (draws,): the clips' mean drop per draw
        wins = sum(r["top"] > r["random"] for r in runs)
        second = [faithfulness(clf, f, method, 0.2, args.draws, genre=g) for f, g in zip(features, runner_up)]
        rel_top = statistics.median(r["top"] / r["probability"] for r in second)
        rel_rnd = statistics.median(r["random"] / r["probability"] for r in second)
        mass = statistics.mean(half_silent_mass(clf, w, method) for w in waves)
        patch_relevance(clf.model, images[:4], 0, method)  # warm-up
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            patch_relevance(clf.model, images, 0, method)
            times.append((time.perf_counter() - t) / len(images) * 1000)
        rnd = f"{randoms.mean():.4f}±{randoms.std():.4f}"
        print(f"{method:<14}{top:>8.4f}{rnd:>17}{bottom:>9.4f}{wins:>6}/{len(clips):<2}{rel_top:>+10.3f}/{rel_rnd:<+8.3f}{mass:>13.3f}{min(times):>11.2f}")
    with torch.inference_mode():
        clf.model(images)
        t = time.perf_counter()
        clf.model(images)
        print(f"(the model's own forward: {(time.perf_counter() - t) / len(images) * 1000:.2f} ms/window)")


if __name__ == "__main__":
    main()
