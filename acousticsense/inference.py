"""Classify tracks: waveform -> windows -> images -> ViT -> window probabilities -> track result."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .audio import DEFAULT_MAX_SECONDS, Audio, AudioError, AudioSource, load_audio, source_name
from .bundle import Bundle, BundleConfig, load_bundle
from .features import Preprocessing, frame_windows, window_rms_db, windows_to_images

DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 64


@dataclass
class Genre:
    label: str
    probability: float


@dataclass
class Window:
    """One analysed window of the track."""

    start: float  # seconds
    end: float
    label: str | None  # None for a silent window
    probability: float
    silent: bool
    probabilities: dict[str, float]


@dataclass
class Result:
    """What a track was classified as."""

    source: str
    model_id: str
    duration: float  # seconds analysed
    top_k: list[Genre]  # empty when the track is silent
    timeline: list[Window]
    silent: bool = False
    aggregation: str = "mean"
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"code", "message"}

    @property
    def label(self) -> str | None:
        """The top genre, or None for a silent track."""
        return self.top_k[0].label if self.top_k else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Failure:
    """A file that could not be classified, and why."""

    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class _Prepared:
    source: str
    audio: Audio
    windows: torch.Tensor  # (B, L) waveform windows
    starts: torch.Tensor  # (B,) samples
    silent: torch.Tensor  # (B,) bool


class Classifier:
    """A loaded model bundle ready to classify audio.

    >>> clf = Classifier.from_bundle()          # the built-in default model
    >>> clf.classify("song.mp3").top_k[0]
    """

    def __init__(self, bundle: Bundle, device: str | torch.device | None = None, batch_size: int = DEFAULT_BATCH_SIZE):
        self.config: BundleConfig = bundle.config
        self.device = torch.device(device) if device is not None else default_device()
        self.model = bundle.model.to(self.device).eval()
        self.batch_size = batch_size

    @classmethod
    def from_bundle(cls, path: str | os.PathLike | None = None, device: str | torch.device | None = None, **kwargs: Any) -> "Classifier":
        """Load a bundle directory (``None``: the built-in default model)."""
        device = torch.device(device) if device is not None else default_device()
        return cls(load_bundle(path, device), device, **kwargs)

    @property
    def labels(self) -> list[str]:
        return self.config.labels

    def preprocessing(self, window: float | None = None, hop: float | None = None) -> Preprocessing:
        """The bundle's preprocessing, with window/hop optionally overridden."""
        pre = self.config.preprocessing
        changes = {k: v for k, v in (("window_seconds", window), ("hop_seconds", hop)) if v is not None}
        return pre.replace(**changes) if changes else pre

    def classify(
        self,
        source: AudioSource,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ) -> Result:
        """Classify one file, bytes, file object, or mono float waveform at the model's sample rate.

        Raises :class:`AudioError` for input that is not usable audio.
        """
        pre = self.preprocessing(window, hop)
        prepared = self._prepare(source, pre, max_seconds)
        probs = self._predict(prepared.windows[~prepared.silent], pre)
        return self._report(prepared, probs, pre, top_k)

    def classify_many(
        self,
        sources: Iterable[AudioSource],
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float | None = DEFAULT_MAX_SECONDS,
    ) -> Iterator[Result | Failure]:
        """Classify many inputs, batching windows across files; yields in input order.

        A file that fails yields a :class:`Failure` and the others go on.
        """
        pre = self.preprocessing(window, hop)
        pending: list[_Prepared] = []

        def flush() -> Iterator[Result]:
            if not pending:
                return
            probs = self._predict(torch.cat([p.windows[~p.silent] for p in pending]), pre)
            offset = 0
            for p in pending:
                n = int((~p.silent).sum())
                yield self._report(p, probs[offset : offset + n], pre, top_k)
                offset += n
            pending.clear()

        for source in sources:
            try:
                prepared = self._prepare(source, pre, max_seconds)
            except AudioError as e:
                yield from flush()  # keeps the input order
                yield Failure(source_name(source), str(e))
                continue
            pending.append(prepared)
            if sum(int((~p.silent).sum()) for p in pending) >= self.batch_size:
                yield from flush()
        yield from flush()

    def _prepare(self, source: AudioSource, pre: Preprocessing, max_seconds: float | None) -> _Prepared:
        audio = load_audio(source, pre.sample_rate, max_seconds)
        samples = torch.from_numpy(audio.samples).to(self.device)
        windows, starts = frame_windows(samples, pre)
        silent = window_rms_db(windows) < pre.silence_db
        return _Prepared(source_name(source), audio, windows, starts, silent)

    @torch.inference_mode()
    def _predict(self, windows: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
        """Softmax probabilities (N, classes) for waveform windows (N, L), in batches."""
        if len(windows) == 0:
            return torch.zeros(0, len(self.labels))
        out = []
        for i in range(0, len(windows), self.batch_size):
            images = windows_to_images(windows[i : i + self.batch_size], pre)
            out.append(self.model(images).float().softmax(-1).cpu())
        return torch.cat(out)

    def _report(self, p: _Prepared, probs: torch.Tensor, pre: Preprocessing, top_k: int) -> Result:
        labels = self.labels
        warnings = [{"code": c, "message": m} for c, m in p.audio.warnings]
        duration = p.audio.duration
        if duration < pre.window_seconds:
            fill = "repeated" if pre.short_pad == "repeat" else "zero-padded"
            warnings.append({"code": "short_audio", "message": f"clip is {duration:.2f} s, shorter than the {pre.window_seconds:g} s window; it was {fill} to fill one window"})
        silent = p.silent.cpu()
        all_probs = torch.zeros(len(silent), len(labels))
        all_probs[~silent] = probs
        timeline = []
        for start, is_silent, row in zip(p.starts.cpu().tolist(), silent.tolist(), all_probs):
            t0 = start / pre.sample_rate
            t1 = min(t0 + pre.window_seconds, duration)
            if is_silent:
                timeline.append(Window(round(t0, 3), round(t1, 3), None, 0.0, True, {}))
            else:
                best = int(row.argmax())
                timeline.append(Window(round(t0, 3), round(t1, 3), labels[best], round(float(row[best]), 6), False, _as_dict(labels, row)))
        if bool(silent.all()):
            warnings.append({"code": "silent", "message": f"no window is louder than {pre.silence_db:g} dBFS: the recording is silent"})
            return Result(p.source, self.config.model_id, round(duration, 3), [], timeline, True, self.config.aggregation, warnings)
        if bool(silent.any()):
            warnings.append({"code": "silent_windows", "message": f"{int(silent.sum())} of {len(silent)} windows are silent and were left out"})
        track = aggregate(probs, self.config.aggregation)
        order = track.argsort(descending=True)[: max(1, top_k)].tolist()
        top = [Genre(labels[i], round(float(track[i]), 6)) for i in order]
        return Result(p.source, self.config.model_id, round(duration, 3), top, timeline, False, self.config.aggregation, warnings)


def aggregate(probs: torch.Tensor, rule: str) -> torch.Tensor:
    """Track-level distribution from window probabilities (N, C) of non-silent windows.

    ``mean``: the average of the window probabilities. ``vote``: the share of windows
    whose top-1 is each class, ties broken by the mean probability.
    """
    mean = probs.mean(0)
    if rule == "mean":
        return mean
    if rule == "vote":
        votes = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float() / len(probs)
        return votes + 1e-6 * mean  # tie-break without changing the shares visibly
    raise ValueError(f"unknown aggregation {rule!r}")


def _as_dict(labels: list[str], row: torch.Tensor) -> dict[str, float]:
    return {label: round(float(v), 6) for label, v in zip(labels, row)}
