"""Labelled data for training and evaluation: list a corpus (folders or a manifest), split it into train/validation.

A folder or manifest label named ``_not_music`` (`NOT_MUSIC`) holds audio that is no genre at all (speech, noise,
tones): training teaches the model to spread its probability over all genres for it, evaluation measures how
often it is flagged. It is never a label of the model.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import AUDIO_EXTENSIONS
from .config import case_clashes
from .errors import AcousticSenseError
from .files import has_control_characters, read_json, read_small_text
from .folders import walk

MANIFEST_CSV = "manifest.csv"
MANIFEST_JSON = "manifest.json"
NOT_MUSIC = "_not_music"
MAX_MANIFEST_BYTES = 256 << 20  # a manifest lists paths: far less than this


class DataError(AcousticSenseError):
    """DATA cannot be used: missing, malformed manifest, or a label without usable tracks."""


@dataclass(frozen=True)
class Track:
    path: Path
    label: str


@dataclass
class Corpus:
    """Labelled tracks, the label order, and what to record about where they came from."""

    tracks: list[Track]
    labels: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    not_music: list[Track] = field(default_factory=list)  # tracks labelled NOT_MUSIC


def read_corpus(data: str | os.PathLike) -> Corpus:
    """List DATA: a folder per label (or a folder with ``manifest.csv``), or a CSV/JSON manifest.

    A manifest has ``path`` and ``label`` per track; relative paths resolve against its folder.
    Tracks labelled `NOT_MUSIC` go to ``Corpus.not_music``, not to the labels.
    Labels are sorted, unless a ``manifest.json`` (or the JSON manifest) lists them as
    ``genres`` or ``labels``: then that order is kept.
    """
    root = Path(data)
    if not root.exists():
        raise DataError(f"{root}: no such file or directory")
    meta: dict[str, Any] = {}
    if root.is_dir():
        if (root / MANIFEST_JSON).is_file():
            meta = read_json(root / MANIFEST_JSON, DataError, MAX_MANIFEST_BYTES)
            meta = meta if isinstance(meta, dict) else {}
        if (root / MANIFEST_CSV).is_file():
            tracks, kind = _read_csv(root / MANIFEST_CSV), "manifest.csv"
        else:
            tracks, kind = _read_folders(root), "folders"
    elif root.suffix.lower() == ".csv":
        tracks, kind = _read_csv(root), "csv"
    elif root.suffix.lower() == ".json":
        doc = read_json(root, DataError, MAX_MANIFEST_BYTES)
        meta = doc if isinstance(doc, dict) else {}
        tracks, kind = _json_tracks(doc, root), "json"
    else:
        raise DataError(f"{root}: expected a folder, a .csv or a .json manifest")
    _check_listed_once(tracks, root)
    not_music = [t for t in tracks if t.label == NOT_MUSIC]
    tracks = [t for t in tracks if t.label != NOT_MUSIC]
    if not tracks:
        found = f" (only {len(not_music)} {NOT_MUSIC} tracks, which have no genre)" if not_music else (
            " (expected a folder per genre, e.g. DATA/Jazz/take1.wav, or a manifest.csv)" if kind == "folders" else "")
        raise DataError(f"{root}: no labelled music tracks found{found}")
    found = {t.label for t in tracks}
    listed = meta.get("genres") or meta.get("labels")
    if clash := case_clashes(found):
        raise DataError(f"{root}: the genres {', '.join(clash)} differ only in case; a model's genres must differ by more (merge or rename them)")
    labels = [x for x in listed if x in found] if isinstance(listed, list) and found <= set(listed) else sorted(found)
    # the corpus by its name only: a bundle must not carry the build machine's folders
    info: dict[str, Any] = {"source": root.resolve().name, "format": kind, "tracks": len(tracks), "labels": len(labels),
                            "not_music": len(not_music)}
    scalars = {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool)) and k != "tracks"}
    if isinstance(meta.get("soundfonts"), list):  # the synthetic corpus' instruments, by file name only
        scalars["soundfonts"] = [Path(str(s)).name for s in meta["soundfonts"]]
    if scalars:
        info["manifest"] = scalars  # e.g. the synthetic corpus' generator version and seed
    return Corpus(tracks, labels, info, not_music)


def _check_listed_once(tracks: list[Track], root: Path) -> None:
    """A file listed twice would be split to both training and validation (or trained as two genres)."""
    seen: dict[Path, Track] = {}
    for t in tracks:
        first = seen.setdefault(t.path.resolve(), t)
        if first is not t:
            twice = f"under two labels ({first.label!r} and {t.label!r})" if first.label != t.label else f"twice (label {t.label!r})"
            raise DataError(f"{root}: {t.path} is listed {twice}; list each track once")


def _read_folders(root: Path) -> list[Track]:
    tracks = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith(".")):
        # audio files by extension, found as scan and predict find them (no symbolic links): an album's cover.jpg is no track
        files = sorted(p for p in (Path(s.path) for s in walk(folder)) if not p.name.startswith("."))
        if not files:
            raise DataError(f"{folder}: label folder has no audio files (by extension: {', '.join(sorted(AUDIO_EXTENSIONS))})")
        _check_label(folder.name, str(folder))
        tracks += [Track(p, folder.name) for p in files]
    return tracks


def _read_csv(path: Path) -> list[Track]:
    text = read_small_text(path, DataError, MAX_MANIFEST_BYTES)  # a regular file: a FIFO would hang the read, /dev/zero fill memory
    try:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as e:
        raise DataError(f"{path}: cannot read CSV ({e})") from None
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DataError(f"{path}: needs 'path' and 'label' columns")
    return [_track(row, path, f"line {i}") for i, row in enumerate(rows, 2)]


def _json_tracks(doc: Any, path: Path) -> list[Track]:
    items = doc.get("tracks") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise DataError(f"{path}: expected a list of {{'path', 'label'}} objects (or {{'tracks': [...]}})")
    return [_track(item, path, f"item {i}") for i, item in enumerate(items)]


def _track(row: dict[str, Any], manifest: Path, where: str) -> Track:
    path, label = str(row.get("path") or "").strip(), str(row.get("label") or "").strip()
    if not path or not label:
        raise DataError(f"{manifest}: {where} needs a path and a label")
    _check_label(label, f"{manifest}: {where}")
    track = Track(manifest.parent / path, label)
    with contextlib.suppress(OSError):  # a file that is missing is skipped, with a warning, when the tracks are decoded
        if not stat.S_ISREG(track.path.stat().st_mode):
            raise DataError(f"{manifest}: {where}: {track.path} is not a regular file (a FIFO or a device would hang or never end)")
    return track


def _check_label(label: str, where: str) -> None:
    if has_control_characters(label):
        raise DataError(f"{where}: the label {label!r} holds control characters (a newline, a terminal escape) or lone surrogates")


def split_tracks(tracks: list[Track], val_fraction: float, seed: int) -> tuple[list[Track], list[Track]]:
    """Hold out ``val_fraction`` of each label's tracks (at least one when it has two or more).

    Deterministic for a seed and independent of the listing order; a label's split does not
    depend on the other labels. Whole tracks go to one side, never their windows, and byte-identical
    copies of a file (the same label's) go to the same side: a copy in validation would be a track the
    model was trained on.
    """
    train, val = [], []
    for label in sorted({t.label for t in tracks}):
        mine = sorted((t for t in tracks if t.label == label), key=lambda t: str(t.path))
        groups: dict[str, list[Track]] = {}
        for t in mine:
            groups.setdefault(_fingerprint(t.path), []).append(t)
        copies = list(groups.values())  # in the order of their first path
        order = np.random.default_rng([seed, zlib.crc32(label.encode())]).permutation(len(copies))
        n_val = min(len(mine) - 1, max(1 if val_fraction > 0 else 0, round(len(mine) * val_fraction)))
        held: set[int] = set()
        taken = 0
        for i in order:
            if taken + len(copies[i]) <= n_val:
                held.add(int(i))
                taken += len(copies[i])
        val += [t for i, group in enumerate(copies) if i in held for t in group]
        train += [t for i, group in enumerate(copies) if i not in held for t in group]
    return sorted(train, key=_listed), sorted(val, key=_listed)


def _listed(track: Track) -> tuple[str, str]:
    return track.label, str(track.path)


def _fingerprint(path: Path, part: int = 1 << 16) -> str:
    """The same for byte-identical files and, in practice, only for them: the size and the first and last 64 KiB
    (two small reads per file, whatever the corpus). A file that cannot be read is its own (it is skipped later)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return f"unread:{path}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return f"unread:{path}"
        head = os.pread(fd, part, 0)
        tail = os.pread(fd, part, max(0, st.st_size - part))
    except OSError:
        return f"unread:{path}"
    finally:
        os.close(fd)
    return f"{st.st_size}:{hashlib.blake2b(head + tail, digest_size=16).hexdigest()}"
