"""Untrusted audio sources, opened for FFmpeg.

FFmpeg only ever reads the bytes handed to it (a file opened here, bytes, or a file object) and only through
the audio container demuxers in :data:`ALLOWED_FORMATS`; playlists, stream descriptions and concat lists,
which would make it open other files, URLs or ports, are refused before they are parsed (:func:`open_failure`
says so). :mod:`~acousticsense.audio` decodes whole files from here, :mod:`~acousticsense.live_sources` audio as it arrives.
"""

from __future__ import annotations

import io
import os
import stat
from typing import Any, BinaryIO, Union

import av
import av.logging
import numpy as np

from .errors import AudioError

AudioSource = Union[str, os.PathLike, bytes, bytearray, BinaryIO, np.ndarray]

# FFmpeg demuxers that read audio (or audio+video) from the bytes given and nothing else.
ALLOWED_FORMATS = (
    "aac", "ac3", "aiff", "amr", "ape", "asf", "au", "avi", "caf", "dts", "eac3", "flac", "flv",
    "matroska", "webm", "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "mp3", "mpeg", "mpegts", "ogg",
    "tta", "w64", "wav", "wv",
)  # fmt: skip
CONTAINER_OPTIONS = {"format_whitelist": ",".join(ALLOWED_FORMATS), "protocol_whitelist": "none"}
# PyAV before 19 decodes a file's tags strictly when it opens it (a tag that is not UTF-8 failed the file) unless
# told to ignore errors; 19 dropped that argument.
_OPEN_OPTIONS = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
PLAYLIST_EXTENSIONS = (".m3u", ".m3u8", ".pls")
_REFUSED = "Format not on whitelist"  # FFmpeg's log message, from the demuxer it refused
av.logging.set_skip_repeated(False)  # PyAV would drop a log equal to the previous one: two refused files in a row
_REFERENCES = {  # refused formats whose whole content is a pointer elsewhere
    "hls": "a playlist", "dash": "a streaming manifest", "concat": "a concat list", "sdp": "a stream description",
    "rtsp": "a stream description", "rtp": "a stream description", "ffmetadata": "a metadata file", "image2": "an image sequence",
}  # fmt: skip

if av.logging.get_level() is None:  # FFmpeg's own reason then reaches the exception text
    av.logging.set_level(av.logging.ERROR)


def source_name(source: AudioSource) -> str:
    """A short human name for an input: its path, or '<bytes>' / '<stream>'."""
    if isinstance(source, (str, os.PathLike)):
        return str(source) or "'' (an empty path)"
    if isinstance(source, (bytes, bytearray)):
        return "<bytes>"
    if isinstance(source, np.ndarray):
        return "<array>"
    if callable(getattr(source, "read", None)):
        return str(getattr(source, "name", "<stream>"))
    return f"<{type(source).__name__}>"


def open_path(path: str | os.PathLike, name: str | None = None) -> BinaryIO:
    """Open a local file for decoding, or raise :class:`AudioError` with the true reason.

    Regular files and pipes (``<(cmd)``, ``/dev/stdin``) are read; directories, devices and
    sockets are refused.
    """
    name = name or str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AudioError(f"{name}: file not found") from None
    except OSError as e:  # a symlink loop, a name too long, no permission on a folder ...
        raise AudioError(f"{name}: cannot open ({e.strerror or e})") from None
    except ValueError:  # a NUL byte in the name
        raise AudioError(f"{name}: not a usable file name (it holds a NUL character)") from None
    kind = st.st_mode
    if stat.S_ISDIR(kind):
        raise AudioError(f"{name}: is a directory, not an audio file")
    if stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        raise AudioError(f"{name}: is a device, not an audio file")
    if stat.S_ISSOCK(kind):
        raise AudioError(f"{name}: is a socket, not an audio file")
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by load_audio
    except OSError as e:
        raise AudioError(f"{name}: cannot open ({e.strerror or e})") from None


class Counted(io.RawIOBase):
    """A read-only view of a file object that counts the bytes read (to tell an empty stream apart) and keeps the
    first few (to name a text playlist)."""

    def __init__(self, raw: BinaryIO, name: str):
        self.raw, self.name, self.count, self.head = raw, name, 0, b""
        try:
            self._seekable = bool(raw.seekable())
        except (AttributeError, OSError, ValueError):
            self._seekable = False

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if not isinstance(data, (bytes, bytearray, memoryview)):  # a text or non-blocking stream
            raise AudioError(f"{self.name}: its read() gave {type(data).__name__}, not bytes (a blocking binary stream is needed)")
        return self.note(data)

    def note(self, data: bytes) -> bytes:
        """Count ``data``, just read, and keep the first bytes of the input; returns ``data``."""
        if not self.count:
            self.head = bytes(data[:16])
        self.count += len(data)
        return data

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self.raw.seek(offset, whence)
        except (OSError, ValueError):  # e.g. before the start of an empty file: an error code for FFmpeg, not a traceback
            return -1

    def tell(self) -> int:
        return self.raw.tell()


def open_failure(name: str, error: BaseException, logs: list[tuple[int, str, str]], count: int, what: str = "file", head: bytes = b"") -> AudioError:
    """Why FFmpeg could not open ``name`` (``count`` bytes read, the first of them ``head``; ``logs`` captured while
    it tried): empty input, a refused format (a playlist or other non-audio demuxer), or unreadable data."""
    if count == 0:
        return AudioError(f"{name}: empty input (0 bytes)")
    listed = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower().startswith((b"#extm3u", b"[playlist]"))  # m3u, m3u8, pls
    fmt = next((demuxer for _, demuxer, message in logs if message.startswith(_REFUSED)), None)
    if fmt and (fmt in _REFERENCES or not listed):  # a pls is no lyrics file, though FFmpeg's probe reads it as lrc
        why = f" ({_REFERENCES[fmt]}: it would make FFmpeg open other files, URLs or ports)" if fmt in _REFERENCES else ""
        return AudioError(f"{name}: refused: it reads as '{fmt}', not an audio file format this tool reads{why}")
    if listed or (name.lower().endswith(PLAYLIST_EXTENSIONS) and _text(head)):  # a bare m3u: a file name or URL a line
        return AudioError(f"{name}: refused: a playlist (m3u/pls), not audio; its entries are not opened (give the audio files themselves)")
    return AudioError(f"{name}: not a readable audio {what} ({ffmpeg_reason(error)})")


def _text(head: bytes) -> bool:
    """Whether a file's first bytes read as text: UTF-8 (a character cut at the end aside), no control characters but tabs and line ends."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\r\n" for c in text)


def open_container(file: Any, **options: Any) -> av.container.InputContainer:
    """``av.open(file, "r", **options)``, not failing on tags that are not UTF-8, with whichever PyAV is installed."""
    return av.open(file, "r", **options, **_OPEN_OPTIONS)


def ffmpeg_reason(e: Exception) -> str:
    """FFmpeg's reason in one line, without PyAV's call details."""
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())
