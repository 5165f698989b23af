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

Sources: :func:`decode_stream` (a file, a pipe such as stdin, or a URL the user named on the command line) and
:func:`microphone_chunks` (PortAudio through ``sounddevice``, the ``listen`` extra).
"""

from __future__ import annotations

import os
import queue
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import av
import numpy as np
import torch

from .audio import MAX_PEAK, average_channels, check_float, check_rate, extreme_level, sample_peak
from .errors import AcousticSenseError, AudioError, ParameterError
from .features import fit_to_window, frames_per_window, short_audio, track_mel, window_frames, window_levels_db
from .inference import Classifier, Features
from .options import DEFAULT_SMOOTHING, DEFAULT_TOP_K, is_number
from .results import FLAGS, Genre
from .sources import CONTAINER_OPTIONS, AudioSource, Counted, ffmpeg_reason, open_container, open_failure, open_path, source_name

URL_PROTOCOLS = ("http", "https", "tcp", "tls")  # what a URL named on the command line may use (no file:, concat:, ...)
URL_TIMEOUT = 10.0  # seconds without data before a URL stream counts as stalled
MIC_BACKLOG_SECONDS = 30.0  # microphone audio waiting for the model at most, before giving up
MIC_WAIT_SECONDS = 5.0  # a device that delivers nothing for this long is gone
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
_PROBE = {"probesize": "32768", "analyzeduration": "200000"}  # a pipe's first audio is not held back for 5 s of probing


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
        self.on_warning = on_warning  # called with (code, message): the first time a stream is scaled down (``extreme_level``), a stream shorter than one window (``short_audio``)
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
        if isinstance(samples, np.ndarray):
            check_float(samples, self.source)
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused below
            x = np.asarray(samples, dtype=np.float32).reshape(-1)
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


class _Arriving(Counted):
    """A file object read as data arrives: each read returns what one read of a pipe gives, never waiting to fill.

    Ctrl-C during a read (waiting on a silent pipe) would be swallowed by FFmpeg's read callback and look like
    the end of the input: the read ends the input instead and :attr:`interrupted` tells the decoder to re-raise it.
    """

    interrupted = False

    def read(self, n: int = -1) -> bytes:
        if self.interrupted:
            return b""
        read1 = getattr(self.raw, "read1", None)
        try:
            data = read1(n if n > 0 else 1 << 16) if read1 else self.raw.read(n)
        except KeyboardInterrupt:
            self.interrupted = True
            return b""
        self.count += len(data)
        return data


class _Mono:
    """Stateful resampling to mono float32 at ``rate`` (FFmpeg's, as :func:`~acousticsense.audio.load_audio`),
    re-created when the input's sample format, channel layout or rate changes mid-stream."""

    def __init__(self, rate: int, name: str):
        self.rate, self.name = rate, name
        self.setup: tuple[str, str, int] | None = None
        self.resampler: av.AudioResampler | None = None

    def __call__(self, frame: av.AudioFrame) -> list[np.ndarray]:
        frame.pts = None  # the resampler counts samples; broken timestamps must not skew it
        if len(frame.layout.channels) > 2 and frame.layout.name.endswith(" channels"):  # unnamed layouts: no remix matrix
            frame = average_channels(frame)
        setup = (frame.format.name, frame.layout.name, frame.sample_rate)
        out: list[np.ndarray] = []
        if setup != self.setup:
            check_rate(frame.sample_rate, self.name)
            out = self.flush()
            self.resampler, self.setup = av.AudioResampler(format="flt", layout="mono", rate=self.rate), setup
        assert self.resampler is not None
        return out + [r.to_ndarray().reshape(-1) for r in self.resampler.resample(frame)]

    def flush(self) -> list[np.ndarray]:
        out = [r.to_ndarray().reshape(-1) for r in self.resampler.resample(None)] if self.resampler is not None else []
        self.resampler = self.setup = None
        return out


def decode_stream(source: AudioSource, sample_rate: int, allow_url: bool = False, timeout: float = URL_TIMEOUT) -> Iterator[np.ndarray]:
    """Decode ``source`` incrementally to chunks of mono float32 at ``sample_rate``, each as soon as its packet arrives.

    ``source``: a path, or a binary file object (a pipe, ``sys.stdin.buffer``), read with :mod:`~acousticsense.audio`'s
    safety (FFmpeg sees only the bytes, through the allow-listed audio demuxers, no protocols); or, with ``allow_url``
    (the command line, for a URL its user typed; never a server on behalf of a client), an http, https, tcp or tls URL:
    only those protocols, the same demuxer allow-list (no HLS, DASH or other playlists), and ``timeout`` seconds
    without data end it with an :class:`AudioError`. Other schemes (``file:``, ``concat:``, ``subfile:``, ...) are refused.
    """
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        text = str(source)
        scheme = _SCHEME.match(text)
        if scheme and not os.path.exists(text):
            if not allow_url:
                raise AudioError(f"{name}: URLs are not read here (only a URL named on the command line is)")
            if scheme.group(1).lower() not in URL_PROTOCOLS:
                raise AudioError(f"{name}: refused: only {', '.join(URL_PROTOCOLS)} URLs are read, not {scheme.group(1)}:")
            options = {**CONTAINER_OPTIONS, **_PROBE, "protocol_whitelist": ",".join(URL_PROTOCOLS), "rw_timeout": str(int(timeout * 1e6))}
            url = scheme.group(1).lower() + text[scheme.end(1) :]  # FFmpeg's protocol names are lower case (HTTP:// failed)
            name = _USERINFO.sub(r"\1***@", name)  # a password in the URL stays out of messages
            return _decoded(lambda: open_container(url, container_options=options, timeout=(timeout, timeout)), name, sample_rate, timeout=timeout)
        raw, owned = open_path(source, name), True
    elif callable(getattr(source, "read", None)):
        raw, owned = source, False
    else:
        raise AudioError(f"{name}: not a stream source (a path, a binary file object or a URL)")
    file = _Arriving(raw, name)  # type: ignore[arg-type]
    options = CONTAINER_OPTIONS if file.seekable() else {**CONTAINER_OPTIONS, **_PROBE}
    return _decoded(lambda: open_container(file, container_options=options), name, sample_rate, file, raw if owned else None)


def _decoded(opener: Callable[[], Any], name: str, rate: int, file: Counted | None = None, owned: Any = None, timeout: float = 0) -> Iterator[np.ndarray]:
    """The chunks of the container ``opener`` opens; ``owned`` (a file opened here) is closed at the end."""
    stalled = (av.ExitError, av.TimeoutError)  # a URL's read timeout

    def check_interrupted() -> None:
        if getattr(file, "interrupted", False):
            raise KeyboardInterrupt

    try:
        with av.logging.Capture(local=True) as logs:  # FFmpeg's messages stay off stderr; a refusal is told from them
            try:
                container = opener()
            except (av.FFmpegError, OSError, ValueError) as e:
                check_interrupted()
                if file is None and isinstance(e, stalled):  # a URL that sent nothing
                    raise AudioError(f"{name}: no data for {timeout:g} s") from None
                raise open_failure(name, e, logs, file.count if file is not None else -1, "stream") from None
        with container:
            if not container.streams.audio:
                raise AudioError(f"{name}: contains no audio stream")
            frames, mono, decoded = container.decode(container.streams.audio[0]), _Mono(rate, name), 0
            while True:
                try:
                    with av.logging.Capture(local=True):  # per frame: hours of a stream keep no log
                        frame = next(frames)
                except StopIteration:
                    check_interrupted()
                    break
                except (av.FFmpegError, ValueError) as e:
                    check_interrupted()
                    if not decoded:
                        hint = "; this format may need a seekable file: save the stream to a file first" if file is not None and not file.seekable() else ""
                        raise AudioError(f"{name}: cannot decode audio ({ffmpeg_reason(e)}{hint})") from None
                    yield from mono.flush()
                    why = f"no data for {timeout:g} s" if isinstance(e, stalled) else ffmpeg_reason(e)
                    raise AudioError(f"{name}: the stream stopped after {decoded / rate:.1f} s of audio ({why})") from None
                for chunk in mono(frame):
                    decoded += len(chunk)
                    yield chunk
            tail = mono.flush()
            if not decoded and not sum(map(len, tail)):  # predict says the same of such a file
                raise AudioError(f"{name}: contains no audio samples")
            yield from tail
    finally:
        if owned is not None:
            owned.close()


def import_sounddevice() -> Any:
    """The ``sounddevice`` module, or a :class:`ParameterError` saying how to install it."""
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise ParameterError(f"listening needs sounddevice and PortAudio ({e}): pip install 'acousticsense[listen]'") from None
    return sounddevice


def microphone_chunks(device: int | str | None = None, sample_rate: int = 22050, block_seconds: float = 0.1) -> Iterator[np.ndarray]:
    """Chunks of mono float32 at ``sample_rate`` from an input device (PortAudio via ``sounddevice``), endlessly.

    The device records at its default rate and channel 1; FFmpeg's resampler converts. Audio waits in a queue of at
    most :data:`MIC_BACKLOG_SECONDS`: a consumer that falls further behind, or a device that delivers nothing for :data:`MIC_WAIT_SECONDS`,
    ends it with an :class:`AudioError`.
    """
    sd = import_sounddevice()
    try:
        rate = int(sd.query_devices(device, "input")["default_samplerate"])
    except (ValueError, sd.PortAudioError) as e:
        raise ParameterError(f"microphone {device!r}: {e}") from None
    blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=max(1, int(MIC_BACKLOG_SECONDS / block_seconds)))
    overflow: list[bool] = []

    def callback(indata: np.ndarray, frames: int, when: Any, status: Any) -> None:
        try:
            blocks.put_nowait(np.array(indata[:, 0], dtype=np.float32))
        except queue.Full:
            overflow.append(True)

    mono = _Mono(sample_rate, "microphone")
    try:
        stream = sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32", blocksize=max(1, int(block_seconds * rate)), callback=callback)
    except (ValueError, sd.PortAudioError) as e:
        raise ParameterError(f"microphone {device!r}: {e}") from None
    with stream:
        while not overflow:
            try:
                block = blocks.get(timeout=MIC_WAIT_SECONDS)
            except queue.Empty:
                raise AudioError(f"microphone: no audio for {MIC_WAIT_SECONDS:g} s (is the device still there?)") from None
            if rate == sample_rate:
                yield block
                continue
            frame = av.AudioFrame.from_ndarray(block[None, :], format="flt", layout="mono")
            frame.sample_rate = rate
            yield from mono(frame)
    raise AudioError(f"microphone: the classifier fell more than {MIC_BACKLOG_SECONDS:g} s behind the input (a faster device or a longer hop helps)")
