"""Decode any common audio file (or bytes / file object) to a mono float32 waveform with PyAV.

Sources are opened by :mod:`~acousticsense.sources` (only audio demuxers, never another file or URL);
decoding streams through FFmpeg's resampler into one array, checks what it gets (rates, NaN, extreme
levels, corrupt packets, cut files) and says what it noticed as warnings.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator, MutableSequence
from dataclasses import dataclass, field
from typing import BinaryIO

import av
import av.logging
import numpy as np

from .config import RESAMPLERS
from .containers import Length
from .errors import AudioError, ParameterError
from .options import DEFAULT_MAX_SECONDS, MAX_SECONDS_RANGE, in_range, is_whole, whole_in_range
from .sources import CONTAINER_OPTIONS, AudioSource, Counted, ffmpeg_reason, open_container, open_failure, open_path, source_name

__all__ = ["AUDIO_EXTENSIONS", "Audio", "AudioError", "AudioSource", "check_rate", "check_sample_rate", "load_audio", "source_name"]

MIN_SOURCE_RATE = 1000  # Hz; a header claiming less is lying (and would cost a huge resampled output)
MAX_SOURCE_RATE = 768_000  # Hz
MAX_PEAK = 1e3  # float samples beyond +60 dBFS are scaled down to full scale (they overflow float32 powers)
CORRUPT_RUN = 100  # corrupt packets in a row after which decoding gives up (one is skipped and decoding goes on)
CORRUPT_PEAK = 16.0  # after corrupt data, a decoded float frame beyond this (+24 dBFS) is garbage: skipped too
AUDIO_EXTENSIONS = frozenset(".mp3 .m4a .aac .mp4 .ogg .oga .opus .flac .wav .aif .aiff .wma .webm .mka".split())  # what a folder is read for (scan, predict, train)
RESERVE_SAMPLES = 1 << 28  # decoded samples reserved up front at most (1 GiB; 30 min at 22,050 Hz is 40 M)
RESAMPLED_FRAME = 65536  # values per block into the resampler and samples per frame out of it (3 s at 22,050 Hz): fewer calls than one per codec frame


@dataclass
class Audio:
    """A decoded waveform and what the decoder noticed on the way."""

    samples: np.ndarray  # float32, mono, at `sample_rate`
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    truncated: bool = False  # stopped at max_seconds
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (code, message)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def load_audio(
    source: AudioSource,
    sample_rate: int,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    resampler: str = "ffmpeg",
) -> Audio:
    """Decode ``source`` to mono float32 at ``sample_rate``.

    ``source`` is a path, bytes, a binary file object (seekable or not: a pipe, ``sys.stdin.buffer``),
    or an already-decoded mono waveform (a 1-D array taken to be at ``sample_rate``).

    Decoding streams through FFmpeg's resampler, 65,536 values at a time (rebuilt whenever the stream's
    rate or layout changes), so only the output (mono, target rate, at most ``max_seconds``) is held
    in memory. ``resampler="soxr_hq"`` decodes at the source rate instead, averages the channels and
    resamples with soxr's high quality, as ``librosa.load`` does. A file that decodes to less than its
    header announces, or an Ogg file without its end-of-stream page, carries a ``truncated_input`` warning; corrupt packets are skipped (``decode_error``), and decoding
    stops on :data:`CORRUPT_RUN` of them in a row or on bad ones up to the end (``decode_error``, both durations given).
    Raises :class:`AudioError` with a one-line reason for anything that is not usable audio.
    """
    name = source_name(source)
    sample_rate = check_sample_rate(sample_rate)
    max_seconds = None if max_seconds is None else in_range("max_seconds", max_seconds, MAX_SECONDS_RANGE)
    if resampler not in RESAMPLERS:
        raise ParameterError(f"resampler must be one of {', '.join(RESAMPLERS)}, not {resampler!r}")
    if isinstance(source, np.ndarray):
        check_waveform(source, name)
        kept = source if max_seconds is None else source[: int(max_seconds * sample_rate) + 1]  # one past the cap: _finish tells it was cut
        return _finish(kept.astype(np.float32), name, sample_rate, sample_rate, 1, max_seconds, [])
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioError(f"{name}: empty input (0 bytes)")
        raw: BinaryIO = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        raw = open_path(source, name)
    elif isinstance(source, io.TextIOBase):
        raise AudioError(f"{name}: a text stream; audio is read from a binary one (open the file with 'rb')")
    elif callable(getattr(source, "read", None)):
        if getattr(source, "closed", False) is True:
            raise AudioError(f"{name}: the file object is closed")
        raw = source
    else:
        raise AudioError(f"{name}: not an audio source (a path, bytes, a binary file object or a 1-D array)")
    stream = Counted(raw, name)
    try:
        native = resampler == "soxr_hq"
        samples, src_rate, channels, warnings = _decode(stream, name, None if native else sample_rate, max_seconds)
    finally:
        if raw is not source:
            raw.close()
    if native and src_rate != sample_rate:
        import soxr

        samples = soxr.resample(samples, src_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return _finish(samples, name, sample_rate, src_rate, channels, max_seconds, warnings)


def check_waveform(samples: np.ndarray, name: str) -> None:
    """An :class:`AudioError` unless ``samples`` are a mono waveform of floats: a 2-D array (channels) would be read
    as one channel, integers as samples far beyond full scale; complex numbers or text would be cast away silently."""
    if samples.ndim != 1:
        raise AudioError(f"{name}: expected a mono waveform (1-D), got shape {samples.shape}")
    if samples.dtype.kind != "f":
        scale = f" (divide by {-np.iinfo(samples.dtype).min} for full scale)" if samples.dtype.kind == "i" else ""
        raise AudioError(f"{name}: expected float samples in [-1, 1], got {samples.dtype} values{scale}")


def _decode(file: Counted, name: str, sample_rate: int | None, max_seconds: float | None) -> tuple[np.ndarray, int, int, list[tuple[str, str]]]:
    """Mono samples at ``sample_rate`` (FFmpeg's down-mix and resampler) or, with ``None``, channel means at the source rate."""
    # FFmpeg's messages stay out of stderr; this thread's own (not PyAV's global "last error") tell a refusal
    with av.logging.Capture(local=True) as logs:
        try:
            container = open_container(file, container_options=CONTAINER_OPTIONS)
        except (av.FFmpegError, OSError, ValueError) as e:
            error = e
        else:
            error = None
    if error is not None:
        raise open_failure(name, error, logs, file.count, head=file.head) from None
    warnings: list[tuple[str, str]] = []
    with container, av.logging.Capture(local=True):
        if not container.streams.audio:
            raise AudioError(f"{name}: contains no audio stream")
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise AudioError(f"{name}: its audio codec is unknown or not supported")
        src_rate = stream.codec_context.sample_rate or stream.rate or 0
        channels = stream.codec_context.channels or 0
        if src_rate:  # 0: the header does not say; each frame's rate is checked
            check_rate(src_rate, name)
        native, sample_rate = sample_rate is None, sample_rate or src_rate
        length = Length(container, stream, file)
        announced = length.announced
        limit = math.inf if max_seconds is None else int(max_seconds * sample_rate)
        out = _Samples(None if max_seconds is None else limit + 1)  # one past the cap: _finish then knows it was cut
        setup, convert, blocks, skipped = None, False, None, []
        try:
            for frame in frames_past_corruption(container, stream, skipped):
                frame.pts = None  # let the resampler count samples; broken timestamps must not skew it
                shape = (frame.format.name, frame.layout.name, frame.sample_rate)
                if shape != setup:  # the first frame, or the stream changed rate or channels mid-way (concatenated AAC, radio)
                    if blocks is not None:
                        blocks.flush()
                    setup, convert, resampler = shape, False, None
                    if not native or frame.sample_rate != sample_rate:  # else no resampling: the channels' mean is the output
                        check_rate(frame.sample_rate, name)
                        convert = native or (len(frame.layout.channels) > 2 and frame.layout.name.endswith(" channels"))  # unnamed (9, 64): no remix matrix
                        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate, frame_size=RESAMPLED_FRAME)
                    blocks = _Blocks(out, 1 if convert else len(frame.layout.channels), resampler)
                blocks.add(average_channels(frame) if convert else frame)
                if out.size > limit:
                    break
            else:
                if blocks is not None:
                    blocks.flush()
        except (av.FFmpegError, ValueError) as e:
            with contextlib.suppress(av.FFmpegError, ValueError):  # what they hold back (up to one RESAMPLED_FRAME) decoded fine
                if blocks is not None:
                    blocks.flush()
            if not out.size:
                hint = "" if file.seekable() else "; this format may need a seekable file: save the stream to a file first"
                hint += "" if channels else "; no channel count FFmpeg accepts (1 to 512) was found"
                raise AudioError(f"{name}: cannot decode audio ({ffmpeg_reason(e)}{hint})") from None
            if out.size <= limit:  # past the cap the rest was not wanted anyway: only the cut is reported
                of = f" of the {announced:.1f} s announced" if announced > out.size / sample_rate else ""
                before = f", after skipping {_count(skipped)}" if skipped else ""
                warnings.append(("decode_error", f"decoding stopped on corrupt data after {out.size / sample_rate:.1f} s{of}{before} ({ffmpeg_reason(e)}); the rest is ignored"))
        else:
            decoded = out.size / sample_rate
            of = f" of the {announced:.1f} s announced" if announced > decoded else ""
            if out.size <= limit and skipped:  # what is missing is what they held, whatever a header says
                warnings.append(("decode_error", f"skipped {_count(skipped)} ({skipped[0]}) and decoded the rest: {decoded:.1f} s{of}"))
            elif out.size <= limit and (cut := length.cut_short(decoded)):
                warnings.append(cut)
    samples = out.samples()
    return samples, src_rate, channels, warnings


def frames_past_corruption(container: av.container.InputContainer, stream: av.AudioStream, skipped: MutableSequence[str]) -> Iterator[av.AudioFrame]:
    """``stream``'s decoded frames. A packet that does not decode is skipped (its reason added to ``skipped``: a list,
    or a bounded deque for a stream of no end) when a good one follows; :data:`CORRUPT_RUN` bad ones in a row, or bad
    ones up to the end, raise the last error.
    Once data was corrupt, a float frame beyond :data:`CORRUPT_PEAK` is garbage the decoder did not notice:
    skipped too (kept, it would scale the whole track down to silence)."""
    run: list[str] = []
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.FFmpegError as e:
            run.append(ffmpeg_reason(e))
            if len(run) >= CORRUPT_RUN:
                raise
            error = e
            continue
        if packet.size:  # not the empty packet that flushes the decoder at the end
            skipped += run
            run = []
        for frame in frames:
            if (skipped or run) and frame.format.name in ("flt", "fltp", "dbl", "dblp") and np.abs(frame.to_ndarray()).max(initial=0) > CORRUPT_PEAK:
                skipped.append(f"a frame decoded to samples beyond {CORRUPT_PEAK:g} times full scale")
                continue
            yield frame
    if run:
        raise error


def _count(skipped: list[str]) -> str:
    return f"{len(skipped)} corrupt packets" if len(skipped) > 1 else "a corrupt packet"


def pcm_to_float(x: np.ndarray) -> np.ndarray:
    """PCM integers as float32 at full scale, [-1, 1] (unsigned ones centred: 8-bit silence is 128); floats as they are."""
    if x.dtype.kind == "u":
        return x.astype(np.float32) / (np.iinfo(x.dtype).max / 2 + 0.5) - 1
    if x.dtype.kind == "i":
        return x.astype(np.float32) / -float(np.iinfo(x.dtype).min)
    return x


def _channel_mean(frame: av.AudioFrame) -> np.ndarray:
    """The mean of ``frame``'s channels as float32 samples in [-1, 1] (``librosa.load``'s down-mix)."""
    x = frame.to_ndarray()
    x = pcm_to_float(x if frame.format.is_planar else x.reshape(-1, len(frame.layout.channels)).T)
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused with the file's name later
        return (x[0] if len(x) == 1 else x.mean(axis=0)).astype(np.float32)


def average_channels(frame: av.AudioFrame) -> av.AudioFrame:
    """``frame`` down-mixed to a mono float frame by :func:`_channel_mean` (FFmpeg has no remix for unnamed layouts)."""
    mono = av.AudioFrame.from_ndarray(_channel_mean(frame)[None, :], format="flt", layout="mono")
    mono.sample_rate = frame.sample_rate
    return mono


class _Samples:
    """Decoded samples. With a cap they go straight into one array reserved up front (pages never written
    cost no memory), so a long track is never held twice, as chunks and as their concatenation. A cap beyond
    :data:`RESERVE_SAMPLES` (hours at a high rate) is not reserved: the system could refuse so much address space."""

    def __init__(self, cap: int | None):
        self.data = np.empty(cap, np.float32) if cap is not None and cap <= RESERVE_SAMPLES else None
        self.chunks: list[np.ndarray] = []
        self.size = 0

    def add(self, chunk: np.ndarray) -> None:
        if self.data is None:
            self.chunks.append(chunk)
            self.size += len(chunk)
            return
        take = min(len(chunk), len(self.data) - self.size)  # beyond the cap: dropped (decoding stops there)
        self.data[self.size : self.size + take] = chunk[:take]
        self.size += take

    def samples(self) -> np.ndarray:
        if self.data is not None:
            return self.data[: self.size]
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


class _Blocks:
    """Frames of one format, layout and rate, passed on in blocks of RESAMPLED_FRAME values: to ``resampler``, or
    without one, as their channel means to ``out``. One conversion or resampler call per 65,536 values instead of
    one per codec frame (often 1,152 samples): FFmpeg's resampler took 0.19 s for 150 s of 44.1 kHz stereo fed
    frame by frame, 0.04 s so, with the same output."""

    def __init__(self, out: _Samples, channels: int, resampler: av.AudioResampler | None):
        self.out, self.resampler = out, resampler
        self.fifo = av.AudioFifo()
        self.step = max(1024, RESAMPLED_FRAME // channels)  # memory per conversion does not grow with the channel count

    def add(self, frame: av.AudioFrame) -> None:
        self.fifo.write(frame)
        while self.fifo.samples >= self.step:
            self._pass_on(self.fifo.read(self.step))

    def flush(self) -> None:
        """Pass on what is queued, then what the resampler holds back."""
        if self.fifo.samples:
            self._pass_on(self.fifo.read())
        if self.resampler is not None:
            _drain(self.resampler, None, self.out)

    def _pass_on(self, block: av.AudioFrame) -> None:
        if self.resampler is None:
            self.out.add(_channel_mean(block))
        else:
            _drain(self.resampler, block, self.out)


def _drain(resampler: av.AudioResampler, frame: av.AudioFrame | None, out: _Samples) -> None:
    """Resample ``frame`` (None: flush) into ``out``."""
    for resampled in resampler.resample(frame):
        out.add(resampled.to_ndarray().reshape(-1))


def check_rate(rate: object, name: str) -> None:
    """An :class:`AudioError` naming ``name`` unless ``rate``, a source's sample rate, is a whole number of Hz from
    :data:`MIN_SOURCE_RATE` to :data:`MAX_SOURCE_RATE` (a file header, a stream or a browser may claim anything)."""
    if not is_whole(rate, MIN_SOURCE_RATE, MAX_SOURCE_RATE):
        raise AudioError(f"{name}: sample rate {rate!r} Hz is not plausible audio (expected {MIN_SOURCE_RATE:,}–{MAX_SOURCE_RATE:,} Hz)")


def check_sample_rate(sample_rate: object) -> int:
    """``sample_rate``, the rate asked for, if it is a whole number of Hz from 1 to :data:`MAX_SOURCE_RATE`;
    else a :class:`ParameterError`."""
    return whole_in_range("sample_rate", sample_rate, 1, MAX_SOURCE_RATE, unit=" of Hz")


def _finish(samples: np.ndarray, name: str, sample_rate: int, src_rate: int, channels: int, max_seconds: float | None, warnings: list[tuple[str, str]]) -> Audio:
    """Cap the length, refuse unusable samples, and note what a user should know."""
    truncated = max_seconds is not None and samples.size > int(max_seconds * sample_rate)
    if truncated:
        samples = samples[: int(max_seconds * sample_rate)]
    if samples.size == 0:  # none decoded, or a few that resample to none (2 samples at 48 kHz)
        fewer = f", or too few to give one at {sample_rate:,} Hz (it is {src_rate:,} Hz)" if 0 < src_rate != sample_rate else ""
        raise AudioError(f"{name}: contains no audio samples{fewer}")
    peak = sample_peak(samples, name)
    if peak > MAX_PEAK:
        samples = samples / np.float32(peak)
        warnings.append(extreme_level(peak))
    if truncated:
        warnings.append(("truncated", f"only the first {max_seconds:g} s were analysed"))
    if 0 < src_rate < sample_rate:
        warnings.append(("low_sample_rate", f"source is {src_rate} Hz; nothing above {src_rate // 2} Hz is present"))
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, src_rate, channels, truncated, warnings)


def sample_peak(samples: np.ndarray, name: str, start: int = 0, sample_rate: int | None = None) -> float:
    """The largest magnitude in ``samples``; :class:`AudioError` if any is NaN or infinite (with ``sample_rate``, the
    message says where the first one is, ``samples`` beginning ``start`` samples into a stream)."""
    lo, hi = float(samples.min()), float(samples.max())  # NaN propagates; no temporary copy of the track
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = ~np.isfinite(samples)  # a mask, not indices: a track of NaNs costs one byte per sample here
        where = f" from {(start + int(bad.argmax())) / sample_rate:.2f} s" if sample_rate else ""
        raise AudioError(f"{name}: contains {int(bad.sum())} NaN or infinite samples{where} (or values beyond the float32 range, ±3.4e38)")
    return max(hi, -lo)


def extreme_level(peak: float) -> tuple[str, str]:
    """The ``extreme_level`` warning of audio whose samples reached ``peak`` (above :data:`MAX_PEAK`) and were scaled down."""
    return "extreme_level", f"samples reach {peak:.3g} times full scale; the audio was scaled down to full scale"
