"""What a file's container says about its length, to tell a file cut short: the duration its header or index
announces, the size a WAV header declares, and whether an Ogg stream reaches its end-of-stream page. Read from
the file's own bytes (a few header chunks, or its last page), never past them."""

from __future__ import annotations

import io
from typing import BinaryIO

import av

OGG_TAIL = 65_307 + 27  # bytes read from an Ogg file's end: its largest possible page, and the next header
WAV_HEADER_CHUNKS = 64  # chunks (LIST, fact, ...) read before a WAV's data chunk, looking for its declared size
TRUNCATION_TOLERANCE = 0.02  # announced vs decoded: a shortfall above 2 % (and 1 s) is reported


class Length:
    """What an opened file says of its length, read before it is decoded: seconds announced (a WAV's declared data
    size or the header's or index's duration; 0 when unknown) and whether an Ogg file lacks its end."""

    def __init__(self, container: av.container.InputContainer, stream: av.audio.stream.AudioStream, file: BinaryIO):
        declared = wav_declared_seconds(file) if container.format.name == "wav" else 0.0
        self.announced = max(declared, announced_seconds(container, stream))
        self.unended = container.format.name == "ogg" and ogg_unended(file)

    def cut_short(self, decoded: float) -> tuple[str, str] | None:
        """The ``truncated_input`` warning when ``decoded`` seconds (the whole file decoded cleanly) fall short of it."""
        if self.announced and self.announced - decoded > max(1.0, TRUNCATION_TOLERANCE * self.announced):
            return "truncated_input", f"the file announces {self.announced:.1f} s but only {decoded:.1f} s decode: it is cut short (an incomplete download?)"
        if self.unended:
            return "truncated_input", f"the Ogg stream stops after {decoded:.1f} s without its end-of-stream page: it is cut short (an incomplete download?)"
        return None


def announced_seconds(container: av.container.InputContainer, stream: av.audio.stream.AudioStream) -> float:
    """The duration the header or index claims (0 when unknown)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def wav_declared_seconds(file: BinaryIO) -> float:
    """What a WAV header claims its data lasts, PCM or float (FFmpeg clamps it to the file size); 0 when unknown.

    Streaming writers put 0 or 0xFFFFFFFF in the size field (as does RF64, whose size is elsewhere): those claim nothing.
    Only the chunk headers before the data are read (at most :data:`WAV_HEADER_CHUNKS` of them).
    """
    if not file.seekable():
        return 0.0
    position = file.tell()
    try:
        file.seek(0)
        riff = file.read(12)
        if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:] != b"WAVE":
            return 0.0
        rate = block = 0
        for _ in range(WAV_HEADER_CHUNKS):
            header = file.read(8)
            if len(header) < 8:
                return 0.0
            size = int.from_bytes(header[4:], "little")
            if header[:4] == b"data":
                if not rate or not block or not size or size >= 0xFFFFFFFF - block:
                    return 0.0
                return size // block / rate
            body = file.read(16) if header[:4] == b"fmt " and not rate else b""  # the first fmt chunk counts, as for FFmpeg
            if len(body) == 16:
                tag, channels, rate = int.from_bytes(body[:2], "little"), int.from_bytes(body[2:4], "little"), int.from_bytes(body[4:8], "little")
                bits = int.from_bytes(body[14:16], "little")
                # PCM and float: FFmpeg sizes frames from channels x bits, whatever the block-size field says
                block = channels * -(-bits // 8) if tag in (1, 3, 0xFFFE) else int.from_bytes(body[12:14], "little")
            file.seek(size + (size & 1) - len(body), io.SEEK_CUR)  # chunks are padded to even sizes
        return 0.0
    except (OSError, ValueError):
        return 0.0
    finally:
        file.seek(position)


def ogg_unended(file: BinaryIO) -> bool:
    """Whether an Ogg file lacks its ending: its last page is cut off or is not marked end-of-stream, as every
    encoder marks the last one. Ogg headers hold no duration to compare with, so this is how a truncated download
    shows. Only the last :data:`OGG_TAIL` bytes are read; False when the file cannot seek or no page is found there."""
    if not file.seekable():
        return False
    position = file.tell()
    try:
        size = file.seek(0, io.SEEK_END)
        start = file.seek(max(0, size - OGG_TAIL))
        if size < 0 or start < 0:
            return False
        tail = file.read(OGG_TAIL)
        page = tail.rfind(b"OggS\x00")  # capture pattern and stream structure version 0
        if page < 0 or len(tail) - page < 27:
            return page >= 0
        segments = tail[page + 27 : page + 27 + tail[page + 26]]
        length = 27 + tail[page + 26] + sum(segments)
        return page + length > len(tail) or not tail[page + 5] & 0x04  # cut mid-page, or no end-of-stream flag
    except (OSError, ValueError):
        return False
    finally:
        file.seek(position)
