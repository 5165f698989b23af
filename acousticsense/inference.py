"""Classify tracks: waveform -> windows -> images -> ViT -> window probabilities -> track result."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from numbers import Integral, Real
from typing import Any

import torch

from .audio import DEFAULT_MAX_SECONDS, Audio, AudioSource, load_audio, source_name
from .bundle import Bundle, BundleConfig, load_bundle
from .errors import AcousticSenseError, ParameterError
from .features import Preprocessing, fit_to_window, gather_windows, window_count, window_rms_db, window_starts, windows_to_images

DEFAULT_TOP_K = 5
DEFAULT_BATCH_SIZE = 64
# Documented ranges of the request options (CLI, Python API and REST alike).
MAX_WINDOWS = 4000  # per track: a longer track or a shorter hop is refused, so one request's work stays bounded
MAX_SECONDS_RANGE = (1.0, 4 * 3600.0)  # max_seconds: how much of a track is analysed
HOP_RANGE = (0.1, 3600.0)  # seconds between window starts
WINDOW_RANGE = (0.5, 60.0)  # a window length other than the bundle's (only with override_window)


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


@dataclass(frozen=True)
class Options:
    """Validated options of one request: the preprocessing to use and what to report."""

    pre: Preprocessing
    top_k: int
    max_seconds: float
    notes: tuple[dict[str, str], ...] = ()  # warnings every result carries (window_override)


@dataclass
class _Prepared:
    source: str
    audio: Audio
    samples: torch.Tensor  # (n,) on the model's device, at least one window long
    starts: torch.Tensor  # (B,) window starts in samples
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

    def options(
        self,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
    ) -> Options:
        """Check request options against their documented ranges; :class:`ParameterError` names the first bad one.

        The bundle owns ``window_seconds``: the model was trained on windows of that length, and another
        length squeezes a different span of audio into the same image. A different ``window`` is refused
        unless ``override_window`` is set, and then every result carries a ``window_override`` warning.
        ``hop`` may change freely within :data:`HOP_RANGE`.
        """
        pre = self.config.preprocessing
        if isinstance(top_k, bool) or not isinstance(top_k, Integral) or top_k < 1:
            raise ParameterError(f"top_k must be a whole number of at least 1, not {top_k!r}")
        max_seconds = _in_range("max_seconds", max_seconds, MAX_SECONDS_RANGE)
        changes: dict[str, float] = {}
        notes: list[dict[str, str]] = []
        if hop is not None:
            changes["hop_seconds"] = _in_range("hop", hop, HOP_RANGE)
        if window is not None and window != pre.window_seconds:
            window = _in_range("window", window, WINDOW_RANGE)
            if not override_window:
                raise ParameterError(
                    f"window {window:g} s differs from the {pre.window_seconds:g} s this model was trained on; "
                    "other lengths give spectrograms it has never seen (override_window / --override-window forces it)"
                )
            changes["window_seconds"] = float(window)
            notes.append({"code": "window_override", "message": f"windows of {window:g} s instead of the model's {pre.window_seconds:g} s: expect less accurate results"})
        return Options(pre.replace(**changes) if changes else pre, min(int(top_k), len(self.labels)), max_seconds, tuple(notes))

    def classify(
        self,
        source: AudioSource,
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
    ) -> Result:
        """Classify one file, bytes, file object, or mono float waveform at the model's sample rate.

        Raises :class:`ParameterError` for options out of range (see :meth:`options`) and
        :class:`AudioError` for input that is not usable audio.
        """
        opts = self.options(top_k, window, hop, max_seconds, override_window)
        prepared = self._prepare(source, opts)
        return self._report(prepared, self._forward([prepared], opts.pre)[0], opts)

    def classify_many(
        self,
        sources: Iterable[AudioSource],
        top_k: int = DEFAULT_TOP_K,
        window: float | None = None,
        hop: float | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        override_window: bool = False,
    ) -> Iterator[Result | Failure]:
        """Classify many inputs, batching windows across files; yields in input order.

        Options are checked first (:class:`ParameterError`). After that, whatever goes wrong with one
        file (unreadable, too long for the window limit, any unexpected error) yields a :class:`Failure`
        with a one-line reason, and the other files go on.
        """
        opts = self.options(top_k, window, hop, max_seconds, override_window)
        pending: list[_Prepared] = []

        def flush() -> Iterator[Result | Failure]:
            if not pending:
                return
            try:
                probs = self._forward(pending, opts.pre)
            except Exception as e:  # noqa: BLE001 - reported per file, never lost
                yield from (Failure(p.source, _one_line(p.source, e)) for p in pending)
            else:
                for p, q in zip(pending, probs):
                    yield _guard(p.source, self._report, p, q, opts)
            pending.clear()

        for source in sources:
            prepared = _guard(source_name(source), self._prepare, source, opts)
            if isinstance(prepared, Failure):
                yield from flush()  # keeps the input order
                yield prepared
                continue
            pending.append(prepared)
            if sum(int((~p.silent).sum()) for p in pending) >= self.batch_size:
                yield from flush()
        yield from flush()

    def _prepare(self, source: AudioSource, opts: Options) -> _Prepared:
        pre = opts.pre
        audio = load_audio(source, pre.sample_rate, opts.max_seconds)
        count = window_count(len(audio.samples), pre)
        if count > MAX_WINDOWS:
            raise ParameterError(
                f"{source_name(source)}: {audio.duration:.0f} s with a hop of {pre.hop_seconds:g} s makes {count} windows, "
                f"more than the {MAX_WINDOWS} analysed per track; use a longer hop or a lower max_seconds"
            )
        samples = fit_to_window(torch.from_numpy(audio.samples), pre).to(self.device)
        starts = window_starts(len(samples), pre)
        levels = [window_rms_db(gather_windows(samples, chunk, pre.window_samples)) for chunk in starts.split(self.batch_size)]
        silent = torch.cat(levels).cpu() < pre.silence_db
        return _Prepared(source_name(source), audio, samples, starts, silent)

    @torch.inference_mode()
    def _forward(self, items: list[_Prepared], pre: Preprocessing) -> list[torch.Tensor]:
        """Softmax probabilities of each item's non-silent windows, in batches that span items.

        Only one batch of windows is ever copied out of the waveforms.
        """
        jobs = [(p.samples, start) for p in items for start in p.starts[~p.silent].tolist()]
        win, out = pre.window_samples, []
        for i in range(0, len(jobs), self.batch_size):
            windows = torch.stack([samples[start : start + win] for samples, start in jobs[i : i + self.batch_size]])
            out.append(self.model(windows_to_images(windows, pre)).float().softmax(-1).cpu())
        probs = torch.cat(out) if out else torch.zeros(0, len(self.labels))
        return list(probs.split([int((~p.silent).sum()) for p in items]))

    def _report(self, p: _Prepared, probs: torch.Tensor, opts: Options) -> Result:
        labels, pre = self.labels, opts.pre
        if not torch.isfinite(probs).all():
            raise AcousticSenseError(f"{p.source}: the model gave non-finite probabilities for this input; no result is reported")
        warnings = [{"code": c, "message": m} for c, m in p.audio.warnings] + [dict(n) for n in opts.notes]
        duration = p.audio.duration
        if duration < pre.window_seconds:
            fill = "repeated" if pre.short_pad == "repeat" else "zero-padded"
            warnings.append({"code": "short_audio", "message": f"clip is {duration:.2f} s, shorter than the {pre.window_seconds:g} s window; it was {fill} to fill one window"})
        silent = p.silent
        all_probs = torch.zeros(len(silent), len(labels))
        all_probs[~silent] = probs
        timeline = []
        for start, is_silent, row in zip(p.starts.tolist(), silent.tolist(), all_probs):
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
        order = track.argsort(descending=True)[: opts.top_k].tolist()
        top = [Genre(labels[i], round(float(track[i]), 6)) for i in order]
        return Result(p.source, self.config.model_id, round(duration, 3), top, timeline, False, self.config.aggregation, warnings)


def _in_range(name: str, value: Any, bounds: tuple[float, float]) -> float:
    """``value`` as a float if it is a finite number within ``bounds``, else a :class:`ParameterError`."""
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be a number from {lo:g} to {hi:g} s, not {value!r}")
    return float(value)


def _guard(name: str, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``, or the :class:`Failure` of ``name`` if it raises anything."""
    try:
        return step(*args)
    except Exception as e:  # noqa: BLE001 - one file's failure must not cost the others
        return Failure(name, _one_line(name, e))


def _one_line(name: str, e: Exception) -> str:
    """A one-line reason naming the input: the project's own message, or the unexpected error's type and text."""
    text = str(e) if isinstance(e, AcousticSenseError) else f"{name}: could not be analysed ({type(e).__name__}: {e})"
    return " ".join(text.split())


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
