"""Real-time classification: audio arriving in chunks -> a ranking every hop, as the offline engine would give it.

:class:`LiveClassifier` is the incremental core: :meth:`~LiveClassifier.push` mono float32 samples at the model's
rate as they arrive, get an :class:`Update` for every window that became complete. Windows start at multiples of the
hop, as in :meth:`Classifier.classify`'s timeline, and each window's probabilities equal that timeline's: the mel of a
window is computed by :func:`~acousticsense.features.track_mel` over the buffered samples with the STFT context on
both sides (a window is ranked once ``n_fft / 2`` samples past its last frame's centre have arrived, about 35 ms for
the built-in model), its silence by :func:`~acousticsense.features.window_levels_db` over the same hop blocks, and the
model is run by :meth:`Classifier.forward`. At the end of the stream (:meth:`~LiveClassifier.finish`) the last hop
windows, the window aligned with the end and a clip shorter than one window are placed as offline, so a whole stream
matches ``classify`` of the same samples window for window.

Temporal smoothing: ``smoothed`` ranks an exponential moving average of the window probabilities,
``ema = alpha * p + (1 - alpha) * ema`` (``alpha``: :data:`DEFAULT_SMOOTHING`; 1 turns it off; silent windows leave it
unchanged), so a genre change shows in ``smoothed`` after about ``hop / alpha`` seconds.

Memory is bounded: samples live in one fixed array of about two windows plus the STFT context, however long the
stream. Differences from offline, by design: ``db_scope="track"`` bundles take the dB reference from the largest mel
power heard so far (the track's peak is not known yet); ``chunking="centred"`` bundles are streamed on the start grid;
decoding always resamples with FFmpeg's resampler (a ``soxr_hq`` bundle's offline decode uses soxr).

Sources of chunks: :mod:`.live_sources` (a file, a pipe such as stdin, a URL the user named on the command line,
a microphone).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .audio import MAX_PEAK, check_waveform, extreme_level, sample_peak
from .errors import AcousticSenseError, ParameterError
from .features import fit_to_window, frames_per_window, gaps, short_audio, track_mel, window_frames, window_levels_db
from .inference import Classifier, Features
from .options import DEFAULT_SMOOTHING, DEFAULT_TOP_K, is_number
from .results import FLAGS, Genre


@dataclass
class Update:
    """The ranking of one window of a stream."""

    time: float  # stream seconds at the window's end
    start: float
    end: float
    top_k: list[Genre]  # this window's ranking (empty when silent)
    smoothed: list[Genre]  # ranking of the moving average of the window probabilities so far
    silent: bool
    latency_ms: float  # from the arrival (push) of the chunk completing the window to this update
    flag: str | None = None  # "not_music" or "low_confidence" when this window's genre is not to be trusted (see calibrate.py)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _WindowFeatures(Features):
    """One window's :class:`Features`; for ``db_scope="track"`` the peak is the largest mel power heard so far."""

    running_peak: torch.Tensor | None = None

    @property
    def peak(self) -> torch.Tensor:  # type: ignore[override]
        return self.running_peak if self.running_peak is not None else self.mel.amax()


class LiveClassifier:
    """Incremental classification of one stream of mono float32 samples at the model's rate (see the module doc)."""

    def __init__(
        self, clf: Classifier, top_k: int = DEFAULT_TOP_K, smoothing: float = DEFAULT_SMOOTHING, hop: float | None = None, source: str = "<stream>",
        on_warning: Callable[[str, str], None] | None = None,
    ):  # fmt: skip
        if not is_number(smoothing) or not 0 < smoothing <= 1:
            raise ParameterError(f"smoothing must be a number above 0 and at most 1, not {smoothing!r}")
        self.clf, self.options, self.smoothing, self.source = clf, clf.options(top_k, hop=hop), float(smoothing), source
        self.on_warning = on_warning  # called with (code, message): a hop longer than the window (``gaps``), a bundle whose windows a stream cannot place as offline (``not_as_offline``), the first time a stream is scaled down (``extreme_level``), a stream shorter than one window (``short_audio``)
        self.gain = 1.0  # applied to what arrives: below 1 once samples came far above full scale
        pre = self.pre = self.options.pre
        self._hl, self._width, self._context = pre.hop_length, frames_per_window(pre), -(-(pre.n_fft // 2) // pre.hop_length)
        self.capacity = 2 * (pre.window_samples + pre.n_fft + (self._context + 4) * self._hl)
        self._buf = np.zeros(self.capacity, np.float32)
        self._lo = self._hi = self._base = 0  # the held samples: _buf[_lo:_hi], stream samples _base ... total
        self.total = 0  # samples pushed so far
        self._next = 0  # start (samples) of the next hop window
        self._ema: np.ndarray | None = None
        self._peak: torch.Tensor | None = None
        self._done = False
        if pre.hop_samples > pre.window_samples and on_warning is not None:  # as offline: said once, at the start
            code, message = gaps(1 - pre.window_samples / pre.hop_samples, pre, "stream")
            on_warning(code, f"{source}: {message}")
        unlike = [what for differs, what in ((pre.chunking == "centred", "places its windows centred in the whole track (a stream: every hop from its start)"),
                                             (pre.db_scope == "track", "takes its dB reference over the whole track (a stream: the loudest part heard so far)")) if differs]
        if unlike and on_warning is not None:  # the bundle's own settings: said, never silently changed
            on_warning("not_as_offline", f"{source}: this model {' and '.join(unlike)}: these rankings may differ from predict's")

    @property
    def buffered(self) -> int:
        """Samples held (at most :attr:`capacity`, whatever the stream's length)."""
        return self._hi - self._lo

    def push(self, samples: np.ndarray) -> list[Update]:
        """Add samples; the updates of the windows they complete."""
        if self._done:
            raise ParameterError("push() after finish(): start a new LiveClassifier")
        arrived = time.perf_counter()
        x = self._level(samples)
        updates: list[Update] = []
        i = 0
        while i < len(x):
            if self._hi == self.capacity:  # compact: the held samples move to the front
                held = self.buffered
                self._buf[:held] = self._buf[self._lo : self._hi]
                self._lo, self._hi = 0, held
            take = min(len(x) - i, self.capacity - self._hi)
            self._buf[self._hi : self._hi + take] = x[i : i + take]
            self._hi, self.total, i = self._hi + take, self.total + take, i + take
            starts = []
            while self._needs(self._next) <= self.total:
                starts.append(self._next)
                self._next += self.pre.hop_samples
            if starts:
                updates += self._classify(starts, self.total, arrived)
            self._trim()
        return updates

    def _level(self, samples: np.ndarray) -> np.ndarray:
        """``samples`` as float32 at the stream's gain. NaN or infinite samples end the stream (:class:`AudioError`);
        samples above ``MAX_PEAK`` times full scale lower the gain so they reach full scale, and what is held with it, as
        offline analysis scales a whole track: a stream at such a level ranks as offline (spectrograms are relative to
        each window's peak). The gain never rises again, and windows ranked before it fell were ranked at the old level:
        after a lone spike, quieter windows may count as silent (offline, the whole track would be scaled alike)."""
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
            given = samples if isinstance(samples, np.ndarray) else np.asarray(samples, dtype=np.float32)
            check_waveform(given, self.source)  # a stereo block was flattened into one channel twice as long
            x = given.astype(np.float32, copy=False)
        if not len(x):
            return x
        peak = sample_peak(x, self.source, self.total, self.pre.sample_rate) * self.gain
        if peak > MAX_PEAK:
            if self.gain == 1.0 and self.on_warning is not None:
                code, message = extreme_level(peak)
                self.on_warning(code, f"{self.source}: {message}")
            self.gain /= peak
            self._buf[self._lo : self._hi] /= np.float32(peak)
            if self._peak is not None:
                self._peak = self._peak / peak**2
        return x * np.float32(self.gain) if self.gain != 1.0 else x

    def finish(self) -> list[Update]:
        """The end of the stream: the windows offline analysis places at the track's end (none if nothing came)."""
        if self._done or not self.total:
            self._done = True
            return []
        self._done = True
        arrived, n, win, hop = time.perf_counter(), self.total, self.pre.window_samples, self.pre.hop_samples
        if n < win:  # a short clip is filled to one window, as offline
            if self.on_warning is not None:
                code, message = short_audio(n / self.pre.sample_rate, self.pre)
                self.on_warning(code, f"{self.source}: {message}")
            track = fit_to_window(torch.from_numpy(self._samples(0, n).copy()), self.pre)
            return self._classify([0], win, arrived, track, n)
        starts = list(range(self._next, n - win + 1, hop))
        if (n - win) // hop * hop + win < n:
            starts.append(n - win)
        return self._classify(starts, n, arrived) if starts else []

    def _frames(self, starts: list[int], n: int) -> list[int]:
        return window_frames(torch.tensor(starts), n, self.pre).tolist()

    def _needs(self, start: int) -> int:
        """Samples the window starting at ``start`` needs: up to the STFT context of its last frame."""
        f = self._frames([start], 1 << 62)[0]
        return (f + self._width - 1) * self._hl + self.pre.n_fft - self.pre.n_fft // 2

    def _segment_start(self, frame: int) -> int:
        """The first sample of a segment whose :func:`track_mel` frames include ``frame`` exactly (a hop_length multiple)."""
        return max(0, (frame - self._context) * self._hl)

    def _samples(self, a: int, b: int) -> np.ndarray:
        return self._buf[self._lo + a - self._base : self._lo + b - self._base]

    def _trim(self) -> None:
        """Drop samples no future window needs: neither the next hop window nor one aligned with a later end."""
        frames = self._frames([self._next, max(0, self.total - self.pre.window_samples)], 1 << 62)
        keep = self._segment_start(min(frames) - 1)  # one frame more: the end window's frame may be clamped back
        if keep > self._base:
            self._lo += keep - self._base
            self._base = keep

    def _classify(self, starts: list[int], n: int, arrived: float, track: torch.Tensor | None = None, duration: int | None = None) -> list[Update]:
        """Rank the windows at ``starts`` of a stream of ``n`` samples so far (``track``: a fitted short clip instead of the buffer)."""
        pre, device = self.pre, self.clf.device
        frames = self._frames(starts, n)
        lo = self._segment_start(frames[0])
        hi = min(n, (frames[-1] + self._width - 1) * self._hl + pre.n_fft - pre.n_fft // 2)
        segment = (track[lo:hi] if track is not None else torch.from_numpy(self._samples(lo, hi))).to(device)
        mel = track_mel(segment, pre)
        offsets = torch.tensor(frames) - lo // self._hl
        silent = (window_levels_db(segment, offsets, pre).cpu() < pre.silence_db).tolist()
        items = []
        for s, f, quiet in zip(starts, offsets.tolist(), silent):
            window = mel[:, f : f + self._width]
            if pre.db_scope == "track":
                self._peak = window.amax() if self._peak is None else torch.maximum(self._peak, window.amax())
            items.append(
                _WindowFeatures(
                    self.source, (duration or n) / pre.sample_rate, [], self.options, window, torch.tensor([s]), torch.tensor([0]),
                    self._width, torch.tensor([quiet]), self._peak,
                )
            )  # fmt: skip
        probs = self.clf.forward(items)
        updates = []
        for item, p in zip(items, probs):
            result = self.clf.postprocess(item, p)
            w = result.timeline[0]
            if not w.silent:
                row = p[0].double().numpy()
                self._ema = row if self._ema is None else self.smoothing * row + (1 - self.smoothing) * self._ema
            k = self.options.top_k
            top = [] if w.silent else [Genre(label, prob) for label, prob in sorted(w.probabilities.items(), key=lambda lp: -lp[1])[:k]]
            smoothed = [] if self._ema is None else [Genre(self.clf.labels[i], round(float(self._ema[i]), 6)) for i in np.argsort(-self._ema, kind="stable")[:k]]
            flag = next((x["code"] for x in result.warnings if x["code"] in FLAGS), None)
            updates.append(Update(w.end, w.start, w.end, top, smoothed, w.silent, 0.0, flag))
        done = round((time.perf_counter() - arrived) * 1000, 2)
        for u in updates:
            u.latency_ms = done
        return updates


def classify_stream(
    clf: Classifier, chunks: Iterable[np.ndarray], top_k: int = DEFAULT_TOP_K, smoothing: float = DEFAULT_SMOOTHING, hop: float | None = None,
    source: str = "<stream>", on_warning: Callable[[str, str], None] | None = None,
) -> Iterator[Update]:
    """The updates of a stream of chunks (mono float32 at the model's rate), as they come; the end's at the end.

    Options are checked at the call (:class:`ParameterError`). A source that fails mid-way
    (:class:`AcousticSenseError`: a stall, corrupt data) first yields the end windows of what arrived, then raises.
    """
    return _updates(LiveClassifier(clf, top_k, smoothing, hop, source, on_warning), chunks)


def _updates(live: LiveClassifier, chunks: Iterable[np.ndarray]) -> Iterator[Update]:
    try:
        for chunk in chunks:
            yield from live.push(chunk)
    except AcousticSenseError:
        yield from live.finish()
        raise
    yield from live.finish()
