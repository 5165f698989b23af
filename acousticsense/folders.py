"""The audio files under a folder, as every command lists them (``predict`` of a folder, training and evaluation
data, the library scan): by extension, sorted, depth first, never through a symbolic link."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .audio import AUDIO_EXTENSIONS

TEMP_PREFIX = ".acousticsense-tmp-"  # every temporary copy that ``--write-tags`` makes starts with this (see tags.py)


@dataclass
class FileState:
    """A file as the scan found it on disk."""

    path: str
    size: int
    mtime_ns: int
    hash: str | None = None


@dataclass
class WalkNotes:
    """What a walk passed over: folders it could not list; links, FIFOs and names it could not store (``skipped``, one
    line each, naming the file and why); ``--write-tags`` leftovers."""

    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    temps: list[str] = field(default_factory=list)


def walk(root: Path, notes: WalkNotes | None = None) -> Iterator[FileState]:
    """Audio files under ``root`` (by extension), depth first and sorted per folder, with their size and mtime.

    Symbolic links are not followed, not even to see what they point to (a file in the library must not decide what
    else is read). Folders that cannot be listed, links under a folder's name (no extension) or an audio file's,
    FIFOs or devices under an audio file's name, names that are not valid UTF-8 (the database stores text) and
    temporary copies left by a killed ``--write-tags`` are passed over and noted in ``notes``.
    """
    notes = notes or WalkNotes()
    stack: list[Iterator[os.DirEntry]] = []

    def enter(folder: str) -> None:
        try:
            stack.append(iter(sorted(os.scandir(folder), key=lambda e: e.name)))
        except OSError as e:
            notes.unreadable.append(f"{folder}: cannot be listed ({e.strerror or e})")

    enter(str(root))
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
            if stat.S_ISLNK(st.st_mode) and (_audio_name(entry.name) or not Path(entry.name).suffix):
                notes.skipped.append(f"{_shown(entry.path)}: skipped, a symbolic link (links are not followed)")
            elif not stat.S_ISLNK(st.st_mode) and _audio_name(entry.name):
                notes.skipped.append(f"{_shown(entry.path)}: skipped, not a regular file (a FIFO, socket or device)")
            continue
        if entry.name.startswith(TEMP_PREFIX) and stat.S_ISREG(st.st_mode):
            notes.temps.append(entry.path)
            continue
        if not stat.S_ISDIR(st.st_mode) and not _audio_name(entry.name):
            continue
        try:
            entry.path.encode("utf-8")
        except UnicodeEncodeError:
            notes.skipped.append(f"{_shown(entry.path)}: skipped, its name is not valid UTF-8 (rename it to analyse it)")
            continue
        if stat.S_ISDIR(st.st_mode):
            enter(entry.path)
        else:
            yield FileState(entry.path, st.st_size, st.st_mtime_ns)


def _audio_name(name: str) -> bool:
    return Path(name).suffix.lower() in AUDIO_EXTENSIONS


def _shown(path: str) -> str:
    """``path`` printable as UTF-8 (bytes that are not: as backslash escapes)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
