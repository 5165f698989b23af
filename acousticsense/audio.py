"""Decode any common audio file (or bytes / file object) to a mono float32 waveform with PyAV."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import av
import numpy as np

AudioSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray]

DEFAULT_MAX_SECONDS = 1800.0  # longer inputs are analysed up to this point and flagged


class AudioError(ValueError):
    """An input that cannot be analysed; the message names the source and the reason."""


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


def source_name(source: AudioSource) -> str:
    """A short human name for an input: its path, or '<bytes>' / '<stream>'."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return str(getattr(source, "name", "<stream>"))


def _open_input(source: AudioSource, name: str) -> Union[str, BinaryIO]:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioError(f"{name}: empty input (0 bytes)")
        return io.BytesIO(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: file not found")
        if path.is_dir():
            raise AudioError(f"{name}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: file is empty (0 bytes)")
        return str(path)
    return source


def load_audio(
    source: AudioSource,
    sample_rate: int,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> Audio:
    """Decode ``source`` to mono float32 at ``sample_rate``.

    ``source`` is a path, bytes, a binary file object, or an already-decoded mono
    waveform (a 1-D array taken to be at ``sample_rate``).

    Decoding streams frame by frame through FFmpeg's resampler, so only the output
    (mono, target rate, at most ``max_seconds``) is ever held in memory.
    Raises :class:`AudioError` with a one-line reason for anything that is not usable audio.
    """
    name = source_name(source)
    if isinstance(source, np.ndarray):
        if source.ndim != 1:
            raise AudioError(f"{name}: expected a mono waveform (1-D), got shape {source.shape}")
        return _finish(source.astype(np.float32), name, sample_rate, sample_rate, 1, max_seconds, [])
    try:
        container = av.open(_open_input(source, name), mode="r", metadata_errors="ignore")
    except AudioError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AudioError(f"{name}: not a readable audio file ({_reason(e)})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{name}: contains no audio stream")
        stream = container.streams.audio[0]
        src_rate = stream.codec_context.sample_rate or stream.rate or 0
        channels = stream.codec_context.channels or 0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        chunks: list[np.ndarray] = []
        total, warnings = 0, []
        try:
            for frame in container.decode(stream):
                frame.pts = None  # let the resampler count samples; broken timestamps must not skew it
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += len(chunk)
                if limit is not None and total > limit:
                    break
            else:
                chunks.extend(out.to_ndarray().reshape(-1) for out in resampler.resample(None))
        except av.FFmpegError as e:
            if not chunks:
                raise AudioError(f"{name}: cannot decode audio ({_reason(e)})") from None
            warnings.append(("decode_error", f"decoding stopped early at {total / sample_rate:.1f} s ({_reason(e)}); the rest is ignored"))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return _finish(samples, name, sample_rate, src_rate, channels, max_seconds, warnings)


def _finish(samples: np.ndarray, name: str, sample_rate: int, src_rate: int, channels: int, max_seconds: float | None, warnings: list[tuple[str, str]]) -> Audio:
    """Cap the length, refuse unusable samples, and note what a user should know."""
    truncated = max_seconds is not None and samples.size > int(max_seconds * sample_rate)
    if truncated:
        samples = samples[: int(max_seconds * sample_rate)]
    if samples.size == 0:
        raise AudioError(f"{name}: contains no audio samples")
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError(f"{name}: contains {bad} NaN or infinite samples")
    if truncated:
        warnings.append(("truncated", f"only the first {max_seconds:g} s were analysed"))
    if 0 < src_rate < sample_rate:
        warnings.append(("low_sample_rate", f"source is {src_rate} Hz; nothing above {src_rate // 2} Hz is present"))
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), sample_rate, src_rate, channels, truncated, warnings)


def _reason(e: Exception) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__
