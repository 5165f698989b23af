"""Write a predicted genre into an audio file's own tags, without ever risking the file.

The tag is written into a copy in the same folder, the copy is decoded again and compared with
the untouched audio, and only then does it replace the original in one atomic ``os.replace``.
A crash or a kill at any moment leaves the original byte for byte as it was, plus at worst a
leftover ``.acousticsense-tmp-*`` file, which :func:`remove_stale_temps` deletes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

import mutagen
import numpy as np
from mutagen._vorbis import VCommentDict
from mutagen.easyid3 import EasyID3
from mutagen.easymp4 import EasyMP4Tags
from mutagen.id3 import ID3, TCON

from .audio import load_audio
from .errors import AcousticSenseError, AudioError
from .folders import TEMP_PREFIX

__all__ = ["TEMP_PREFIX", "TagError", "read_genre", "remove_stale_temps", "write_genre"]

CHECK_RATE, CHECK_SECONDS = 22050, 5.0  # how much of the audio is decoded before and after tagging


class TagError(AcousticSenseError):
    """A file whose genre tag cannot be read or written (not taggable, not audio, a symlink, ...)."""


def _open(path: str | os.PathLike, name: str) -> mutagen.FileType:
    """The file opened with mutagen's easy interface, or :class:`TagError`."""
    try:
        audio = mutagen.File(path, easy=True)
    except (mutagen.MutagenError, OSError) as e:
        raise TagError(f"{name}: not a taggable audio file ({e})") from None
    if audio is None:
        raise TagError(f"{name}: not a taggable audio file")
    return audio


def _genre(audio: mutagen.FileType) -> str | None:
    tags = audio.tags
    if isinstance(tags, (EasyID3, EasyMP4Tags, VCommentDict)):
        values = tags.get("genre") or []
    elif isinstance(tags, ID3):  # WAV and AIFF keep a plain ID3 chunk
        values = tags["TCON"].genres if "TCON" in tags else []
    else:
        values = []
    return str(values[0]) if values else None


def _set_genre(audio: mutagen.FileType, genre: str, name: str) -> None:
    kind = type(audio).__name__.removeprefix("Easy")
    if audio.tags is None:
        try:
            audio.add_tags()
        except (mutagen.MutagenError, NotImplementedError) as e:
            raise TagError(f"{name}: {kind} files cannot carry tags ({e})") from None
    tags = audio.tags
    if isinstance(tags, (EasyID3, EasyMP4Tags, VCommentDict)):
        tags["genre"] = [genre]
    elif isinstance(tags, ID3):
        tags.setall("TCON", [TCON(encoding=3, text=[genre])])
    else:
        raise TagError(f"{name}: {kind} files cannot carry a genre tag here ({type(tags).__name__} tags are not supported)")


def read_genre(path: str | os.PathLike) -> str | None:
    """The file's genre tag (the first one if there are several), or ``None`` if it has none."""
    return _genre(_open(path, str(path)))


def _decode(path: str, name: str) -> np.ndarray:
    try:
        return load_audio(path, CHECK_RATE, max_seconds=CHECK_SECONDS).samples
    except AudioError as e:  # its message names the temporary copy
        raise TagError(f"{name}: not decodable audio ({str(e).removeprefix(f'{path}: ')})") from None


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not possible everywhere (Windows); the replace itself is already done
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_genre(path: str | os.PathLike, genre: str) -> None:
    """Set the genre tag of the audio file at ``path`` to ``genre``, atomically.

    Supported: MP3 (ID3 TCON), FLAC, Ogg Vorbis / Opus / FLAC (vorbis comment ``GENRE``),
    M4A/MP4 (``©gen``), TrueAudio, and WAV / AIFF (an ID3 chunk). Anything else, symlinks, read-only files,
    files with several hard links and files that do not decode raise :class:`TagError`; the original is then
    never modified. The tagged copy keeps the file's permissions, owner and group.
    """
    name, path = str(path), Path(path)
    if not isinstance(genre, str) or not genre.strip() or any(c in genre for c in "\x00\r\n"):
        raise TagError(f"{name}: invalid genre {genre!r} (a non-empty single line is expected)")
    try:
        src = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))  # never through a symlink
    except OSError as e:
        why = "is a symlink (refusing to write through it)" if path.is_symlink() else f"cannot open ({e.strerror or e})"
        raise TagError(f"{name}: {why}") from None
    tmp = None
    try:
        before = os.fstat(src)
        if not stat.S_ISREG(before.st_mode):
            raise TagError(f"{name}: not a regular file")
        if not before.st_mode & 0o222 or not os.access(path, os.W_OK):
            raise TagError(f"{name}: is read-only; left unchanged")
        if before.st_nlink > 1:  # the tagged copy replaces one name: the others would keep the old file
            raise TagError(f"{name}: has {before.st_nlink} hard links; tagging would split them, left unchanged")
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.stem[:40]}.", suffix=path.suffix[:20], dir=path.parent)
        with os.fdopen(fd, "wb") as dst, os.fdopen(src, "rb", closefd=False) as f:
            while chunk := f.read(1 << 20):
                dst.write(chunk)
        audio = _open(tmp, name)
        reference = _decode(tmp, name)  # the untouched audio, read from the copy
        _set_genre(audio, genre, name)
        audio.save()
        after = _decode(tmp, name)
        if len(after) != len(reference) or not np.allclose(after, reference, atol=1e-6):
            raise TagError(f"{name}: the audio decodes differently after tagging; left unchanged")
        if (got := read_genre(tmp)) != genre:
            raise TagError(f"{name}: the genre tag reads back as {got!r}, not {genre!r}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(before.st_mode))
        copy = os.stat(tmp)
        if (before.st_uid, before.st_gid) != (copy.st_uid, copy.st_gid):
            try:
                os.chown(tmp, before.st_uid, before.st_gid)
            except PermissionError:
                raise TagError(f"{name}: its owner and group cannot be kept on the tagged copy; left unchanged") from None
        now = os.lstat(path)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            raise TagError(f"{name}: the file changed while its tag was being written")
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)
    except TagError:
        raise
    except Exception as e:  # OSError, MutagenError, or whatever a malformed file makes mutagen raise
        raise TagError(f"{name}: cannot write the genre tag ({type(e).__name__}: {e})") from None
    finally:
        os.close(src)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete the temporary copies a killed :func:`write_genre` left in ``directory`` (not recursive); the count removed.

    Only call it while no :func:`write_genre` is running on that folder.
    """
    removed = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed += 1
    return removed
