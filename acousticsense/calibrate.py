"""Knowing when the model does not know: temperature scaling, expected calibration error, the "not music" threshold.

- Temperature: one scalar T fitted on the validation windows (each labelled with its track's genre); stored in the
  bundle and applied by `Classifier.forward` to every window's ``softmax(logits / T)`` before aggregation.
- Score: a window's *music score* is its largest calibrated genre probability. A model trained with "not music"
  clips (speech, noise, tones) taught to spread its probability over all genres gives them a score near
  1/labels. The threshold is fitted on validation music and not-music tracks (`ood_threshold`).
- Warnings (`warnings_for`): ``not_music`` when at least half of a track's windows score below the threshold;
  else ``low_confidence`` when the track's top probability is below it.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

ECE_BINS = 15
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 401))  # the grid the temperature is fitted on (1.0 included)
MUSIC_FLAG_RATE = 0.01  # the threshold flags at most this share of validation music tracks
MIN_CALIBRATION_TRACKS = 20  # fewer validation music tracks: the temperature stays 1 (fitted on 3 tracks it was 0.41, doubling the ECE)


def scale(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probabilities as if the logits had been divided by `temperature` (softmax is shift-invariant)."""
    return torch.softmax(probs.clamp_min(1e-30).log() / temperature, -1)


def fit_temperature(window_probs: list[torch.Tensor], targets: list[int]) -> float:
    """The temperature that minimises the negative log-likelihood of the windows, each labelled with its track's
    genre, every track weighing the same. Per window, as temperature scaling is defined: the NLL of the tracks'
    mean probabilities can fall as T -> 0 when windows disagree (it then rewards vote shares), and vote shares
    do not change with T at all."""
    tracks = [(p, y) for p, y in zip(window_probs, targets) if len(p)]  # a track with no sounding window: nothing
    if not tracks:
        return 1.0
    logits = torch.cat([p for p, _ in tracks]).clamp_min(1e-30).log()  # logits up to a shift per window
    target = torch.cat([torch.full((len(p),), y) for p, y in tracks])
    weight = torch.cat([torch.full((len(p),), 1 / len(p)) for p, _ in tracks]) / len(tracks)

    def nll(t: float) -> float:
        return float(-(torch.log_softmax(logits / t, -1)[torch.arange(len(target)), target] * weight).sum())

    losses = [nll(float(t)) for t in TEMPERATURES]
    return round(float(TEMPERATURES[int(np.argmin(losses))]), 4)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the confidence-weighted gap between confidence and accuracy over equal-width bins."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    if not len(confidence):
        return 0.0
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return float(sum(abs(confidence[which == b].mean() - correct[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, float]]:
    """Per bin: its range, how many predictions, their mean confidence and accuracy (the reliability diagram's data)."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    return [{"low": round(float(edges[b]), 4), "high": round(float(edges[b + 1]), 4), "count": int((which == b).sum()),
             "confidence": round(float(confidence[which == b].mean()), 4) if (which == b).any() else None,
             "accuracy": round(float(correct[which == b].mean()), 4) if (which == b).any() else None} for b in range(bins)]


def plot_reliability(bins: list[dict[str, float]], ece_value: float, path: str | os.PathLike, title: str = "") -> None:
    """A reliability diagram PNG (written whole or not at all): accuracy per confidence bin against the diagonal, with the ECE."""
    from matplotlib.figure import Figure  # no pyplot: no global state, renders with Agg

    from .files import write_whole
    from .plots import png_bytes, styled

    with styled():
        fig = Figure(figsize=(4.5, 4.5), dpi=110, layout="tight")
        _draw_reliability(fig.subplots(), bins, ece_value, title)
    write_whole(path, png_bytes(fig))


def _draw_reliability(ax: Any, bins: list[dict[str, float]], ece_value: float, title: str) -> None:
    used = [b for b in bins if b["count"]]
    ax.bar([(b["low"] + b["high"]) / 2 for b in used], [b["accuracy"] for b in used], width=1 / len(bins), edgecolor="black",
           color="#4c72b0", label="accuracy")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"confidence (top-1 probability), {len(bins)} bins", ylabel="accuracy",
           title=f"{title}ECE {ece_value:.3f}")
    ax.legend(loc="upper left")


def music_scores(window_probs: torch.Tensor) -> torch.Tensor:
    """Each window's music score: its largest (calibrated) genre probability."""
    return window_probs.max(-1).values if len(window_probs) else torch.zeros(0)


def track_score(window_probs: torch.Tensor) -> float:
    """A track's music score: the median of its windows' (what the ``not_music`` rule compares)."""
    return float(music_scores(window_probs).median()) if len(window_probs) else 1.0


def ood_threshold(music: list[float], not_music: list[float]) -> float:
    """The threshold on track scores: flags at most `MUSIC_FLAG_RATE` of validation music and, if the two sets
    separate, sits half-way (geometrically) between the highest not-music score and that music quantile."""
    # "lower"/"higher": observed scores, so a small validation set never flags more music than the rate allows
    floor = math.floor(float(np.quantile(music, MUSIC_FLAG_RATE, method="lower")) * 1e4) / 1e4 if music else 0.0
    if not_music:
        top = float(np.quantile(not_music, 0.99, method="higher"))
        if top < floor:
            return round(float(np.sqrt(top * floor)), 4)
    return round(floor, 4)


def warnings_for(window_probs: torch.Tensor, track_probs: torch.Tensor, threshold: float | None) -> list[dict[str, str]]:
    """The ``not_music`` / ``low_confidence`` warning of one track (empty when the bundle has no threshold)."""
    if threshold is None or not len(window_probs):
        return []
    score = track_score(window_probs)
    if score < threshold:
        a, b = _apart(score, threshold)
        return [{"code": "not_music", "message": f"this does not sound like music the model knows (music score {a} "
                 f"< {b}): its genres are not a reliable answer"}]
    top = float(track_probs.max())
    if top < threshold:
        a, b = _apart(top, threshold)
        return [{"code": "low_confidence", "message": f"the model is unsure (top genre probability {a} < {b})"}]
    return []


def _apart(low: float, high: float) -> tuple[str, str]:
    """``low`` and ``high`` with two decimals, or as many more (up to six) as it takes for them to read differently:
    "0.27 < 0.27" said nothing."""
    for digits in range(2, 7):
        a, b = f"{low:.{digits}f}", f"{high:.{digits}f}"
        if a != b:
            return a, b
    return a, b
