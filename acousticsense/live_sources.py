"""Audio as it arrives, for :mod:`.stream`: chunks of mono float32 at the model's rate, each as soon as it is decoded.

:func:`decode_stream` decodes a file, a pipe such as stdin, or a URL the user named on the command line incrementally
(with :mod:`.sources`' safety: allow-listed demuxers, no protocols but the URL's own); :func:`microphone_chunks`
records from an input device (PortAudio through ``sounddevice``, the ``listen`` extra).
"""

from __future__ import annotations

import os
import queue
import re
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import av
import numpy as np

from .audio import average_channels, check_rate, frames_past_corruption
from .containers import Length
from .errors import AudioError, ParameterError
from .sources import CONTAINER_OPTIONS, AudioSource, Counted, ffmpeg_reason, open_container, open_failure, open_path, source_name

URL_PROTOCOLS = ("http", "https", "tcp", "tls")  # what a URL named on the command line may use (no file:, concat:, ...)
URL_TIMEOUT = 10.0  # seconds without data before a URL stream counts as stalled
MIC_BACKLOG_SECONDS = 30.0  # microphone audio waiting for the model at most, before giving up
MIC_WAIT_SECONDS = 5.0  # a device that delivers nothing for this long is gone
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+://)[^/@]*@")
_PROBE = {"probesize": "32768", "analyzeduration": "200000"}  # a pipe's first audio is not held back for 5 s of probing


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
        return self.note(data)


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


def decode_stream(
    source: AudioSource, sample_rate: int, allow_url: bool = False, timeout: float = URL_TIMEOUT, on_warning: Callable[[str, str], None] | None = None
) -> Iterator[np.ndarray]:
    """Decode ``source`` incrementally to chunks of mono float32 at ``sample_rate``, each as soon as its packet arrives.

    ``source``: a path, or a binary file object (a pipe, ``sys.stdin.buffer``), read with :mod:`~acousticsense.audio`'s
    safety (FFmpeg sees only the bytes, through the allow-listed audio demuxers, no protocols); or, with ``allow_url``
    (the command line, for a URL its user typed; never a server on behalf of a client), an http, https, tcp or tls URL:
    only those protocols, the same demuxer allow-list (no HLS, DASH or other playlists), and ``timeout`` seconds
    without data end it with an :class:`AudioError`. Other schemes (``file:``, ``concat:``, ``subfile:``, ...) are refused.
    ``on_warning(code, message)`` hears, once the stream has ended, that a file was cut short (``truncated_input``,
    as :func:`~acousticsense.audio.load_audio` says it).
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
    return _decoded(lambda: open_container(file, container_options=options), name, sample_rate, file, raw if owned else None, on_warning=on_warning)


def _decoded(
    opener: Callable[[], Any], name: str, rate: int, file: Counted | None = None, owned: Any = None, timeout: float = 0,
    on_warning: Callable[[str, str], None] | None = None,
) -> Iterator[np.ndarray]:
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
                raise open_failure(name, e, logs, file.count if file is not None else -1, "stream", file.head if file is not None else b"") from None
        with container:
            if not container.streams.audio:
                raise AudioError(f"{name}: contains no audio stream")
            stream = container.streams.audio[0]
            whole = file is not None and file.seekable() and on_warning is not None  # a file; a pipe or a URL may be live: no end to compare
            length = Length(container, stream, file) if whole else None
            skipped: deque[str] = deque(maxlen=1)  # corrupt packets are skipped as predict skips them; hours of them keep one reason
            frames, mono, decoded = frames_past_corruption(container, stream, skipped), _Mono(rate, name), 0
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
            decoded += sum(map(len, tail))
            if not decoded:  # predict says the same of such a file
                raise AudioError(f"{name}: contains no audio samples")
            yield from tail
            if skipped and on_warning is not None:
                on_warning("decode_error", f"{name}: skipped corrupt data ({skipped[0]}) and decoded the rest")
            if length is not None and (cut := length.cut_short(decoded / rate)):
                on_warning(cut[0], f"{name}: {cut[1]}")
    finally:
        if owned is not None:
            owned.close()


def import_sounddevice() -> Any:
    """The ``sounddevice`` module, or a :class:`ParameterError` saying how to install it."""
    try:
        import sounddevice
    except ImportError:
        raise ParameterError("listening needs sounddevice: pip install 'acousticsense[listen]'") from None
    except OSError as e:  # sounddevice is there, the PortAudio library it loads is not
        raise ParameterError(f"listening needs the PortAudio library ({e}; Debian: apt install libportaudio2)") from None
    return sounddevice


def input_devices() -> list[str]:
    """The input devices PortAudio sees, one line each: the number ``--device`` takes, the name, channels and rate."""
    sd = import_sounddevice()
    return [f"{i}: {d['name']} ({d['max_input_channels']} channel{'s' * (d['max_input_channels'] != 1)}, {d['default_samplerate']:g} Hz)"
            for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]  # fmt: skip


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
        if device is None:  # PortAudio's "Error querying device -1"
            raise ParameterError("microphone: this machine has no default input device (listen --list-devices lists those it has)") from None
        raise ParameterError(f"microphone {device!r}: {e} (listen --list-devices lists the input devices)") from None
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
