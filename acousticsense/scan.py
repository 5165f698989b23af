"""Scan a music library into its database: walk → decide what changed → classify only that → store, committing as it goes.

A file whose size and mtime match its row is not read at all. Otherwise its bytes are hashed: the same bytes
under a new path are a moved (or copied) file and keep their results (copies found in the same scan are classified
once); new bytes are classified through the engine (:meth:`Classifier.classify_many`, or Ray Data with ``engine="ray"``). Every classified file is committed
at once, so a scan killed at any moment (``kill -9`` included) loses nothing and the next run finishes the job.

This module imports no torch until a file actually needs the model: an unchanged library rescans in a moment.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, LibraryError, Outcome, stored_text
from .config import CONFIG_NAME, ONNX_NAME
from .errors import AcousticSenseError, ParameterError
from .files import read_json
from .folders import FileState, WalkNotes, walk
from .model_files import model_file
from .options import DEFAULT_BUNDLE, DEFAULT_MAX_SECONDS, DEFAULT_TOP_K, MAX_SECONDS_RANGE, in_range
from .results import flags_of
from .tags import write_genre

COMMIT_SECONDS = 1.0  # cheap bookkeeping (files found unchanged) is committed at least this often
ENGINES = ("local", "ray")
LISTED_ERRORS = 20  # a scan's report lists this many reasons (folders and files passed over first), then counts


@dataclass
class ScanReport:
    """What a scan did. ``counts`` keys: found, unchanged (of them failed_before: failed in an earlier scan, not
    tried again), classified, failed, silent, moved, copied, removed, other_model (kept, scanned with another model),
    retried, tagged, tag_failed, not_tagged (flagged ``not_music`` / ``low_confidence``: no genre is written for
    them), skipped (links, FIFOs, names not UTF-8). ``errors`` lists the first :data:`LISTED_ERRORS` reasons;
    ``errors_not_listed`` counts the others (a failed file's reason is stored with it)."""

    db: str
    root: str
    model: str
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # the first few reasons, one line each
    errors_not_listed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def model_key(bundle: str | os.PathLike | None) -> str:
    """``model_id@hash``: the bundle's id and 12 hex digits of a BLAKE2b of its weights and its config.json apart
    from ``metrics`` (torch not needed).

    Two bundles with the same id but other weights, labels, preprocessing or calibration (a retrained or
    recalibrated model) get different keys: their embeddings and results are never mixed. Recording new
    metrics (`evaluate --record`) keeps the key of a bundle this package wrote (a hand-written config.json is
    rewritten in full, so its key changes once).
    """
    path = Path(bundle) if bundle is not None else DEFAULT_BUNDLE
    try:
        config = read_json(path / CONFIG_NAME, LibraryError)  # a regular file of a bounded size
        model_id = config["model_id"]
        weights = model_file(path)  # the bundle's one model file, whole (a BundleError says what is missing)
        settings = json.dumps({k: v for k, v in config.items() if k != "metrics"}, sort_keys=True).encode()
        return f"{model_id}@{hashlib.blake2b(settings + bytes.fromhex(file_hash(weights)), digest_size=6).hexdigest()}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LibraryError(f"{path}: not a model bundle ({e})") from None


def file_hash(path: str | os.PathLike) -> str:
    """BLAKE2b-128 of a file's bytes (hex)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


def outcome_of(result: Any) -> Outcome:
    """A :class:`Result` or :class:`Failure` of ``classify_many(..., embed=True)`` as an :class:`Outcome` to store."""
    if not hasattr(result, "top_k"):  # a Failure
        return Outcome("failed", error=result.error)
    timeline = [(w.start, w.end, w.label, w.probability) for w in result.timeline]
    genres = [(g.label, g.probability) for g in result.top_k]
    return Outcome("silent" if result.silent else "ok", None, result.duration, genres, timeline, result.warnings, result.embedding)


ScanEngine = Callable[[Iterator[str]], Iterator[Outcome]]


def local_engine(bundle: str | os.PathLike | None, device: str | None = None, max_seconds: float = DEFAULT_MAX_SECONDS) -> ScanEngine:
    """Classify paths in this process (``classify_many``: decoding in worker processes, windows batched across files).

    The model is loaded when the first path arrives: a scan with nothing new never imports torch.
    """

    def run(paths: Iterator[str]) -> Iterator[Outcome]:
        first = next(paths, None)
        if first is None:
            return
        from .inference import Classifier

        clf = Classifier.from_bundle(bundle, device)
        results = clf.classify_many(itertools.chain([first], paths), top_k=len(clf.labels), max_seconds=max_seconds, embed=True)
        yield from map(outcome_of, results)

    return run


def _database_errors(run: Callable[..., ScanReport]) -> Callable[..., ScanReport]:
    """SQLite's own errors during a scan (a locked or full disk, a file that broke) as :class:`LibraryError`."""

    @functools.wraps(run)
    def guarded(root: str | os.PathLike, db: str | os.PathLike, *args: Any, **kwargs: Any) -> ScanReport:
        try:
            return run(root, db, *args, **kwargs)
        except sqlite3.Error as e:
            busy = " (another scan is writing to it: wait for it to finish)" if "locked" in str(e) else ""
            raise LibraryError(f"{db}: {e}{busy}") from None

    return guarded


@_database_errors
def scan(
    root: str | os.PathLike,
    db: str | os.PathLike,
    bundle: str | os.PathLike | None = None,
    *,
    rescan_model: bool = False,
    retry_failed: bool = False,
    write_tags: bool = False,
    allow_empty: bool = False,
    engine: str = "local",
    address: str | None = None,
    device: str | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    progress: Callable[[int], Any] | None = None,
    on_total: Callable[[int], Any] | None = None,
) -> ScanReport:
    """Bring the database ``db`` up to date with the audio files under ``root``; see the module docstring.

    ``rescan_model``: re-classify tracks that another model classified (kept otherwise). ``retry_failed``: try
    files that failed before again. ``write_tags``: write each track's top genre into its file (see
    :mod:`acousticsense.tags`). ``allow_empty``: a ``root`` with no audio file left removes its tracks (otherwise
    :class:`LibraryError`: an unmounted drive looks empty). A track cut short by an earlier, lower ``max_seconds``
    is analysed again. ``engine``: ``"local"`` (on ``device``) or ``"ray"`` (``address``: a Ray cluster; default a local one).
    ``on_total(n)`` is called once the files are counted, ``progress(n)`` as each is settled.
    """
    started = time.perf_counter()
    root_path = Path(stored_text(str(Path(root).expanduser().resolve()), "the folder's name"))
    if not root_path.is_dir():
        raise ParameterError(f"{root}: not a folder")
    if engine not in ENGINES:
        raise ParameterError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if address is not None and engine != "ray":
        raise ParameterError("--address is a Ray cluster's: it needs --engine ray")
    if device is not None:  # checked before the database is made (the model itself loads with the first new file)
        if engine == "ray":
            raise ParameterError("--device is for --engine local: Ray places the model itself (one actor per GPU where the cluster has them)")
        from .bundle import checked_device

        checked_device(device)
    in_range("max_seconds", max_seconds, MAX_SECONDS_RANGE)
    key = model_key(bundle)
    if (Path(bundle or DEFAULT_BUNDLE) / ONNX_NAME).is_file():
        raise ParameterError(f"{bundle}: an exported ONNX bundle gives no embeddings for the library; scan with the torch bundle it came from")
    if engine == "ray":
        from .ray_engine import ray_engine

        classify = ray_engine(bundle, address, max_seconds)
    else:
        classify = local_engine(bundle, device, max_seconds)
    if on_total is not None:
        on_total(sum(1 for _ in walk(root_path)))
    tagger = write_genre if write_tags else None

    with Catalog(db) as catalog:
        probe = WalkNotes()
        if not allow_empty and next(walk(root_path, probe), None) is None and (held := catalog.count_under(str(root_path))):
            passed = "".join(f" ({u})" for u in (probe.unreadable + probe.skipped)[:3])
            raise LibraryError(
                f"{root}: no audio file found{passed}, but {db} holds {held} track{'s' * (held != 1)} under it (an unmounted "
                "drive or an emptied folder?); they are kept. Scan with --allow-empty to remove them"
            )
        report = ScanReport(str(catalog.path.resolve()), str(root_path), key)
        counts = dict.fromkeys(("found", "unchanged", "classified", "failed", "silent", "moved", "copied", "removed", "other_model", "retried", "tagged", "tag_failed", "not_tagged", "skipped", "failed_before"), 0)
        scan_id = catalog.begin_scan(str(root_path), key, engine)
        writer = _Writer(catalog)
        queue: deque[FileState] = deque()
        first_of: dict[str, str] = {}  # hash -> the path queued with those bytes in this scan
        twins: list[FileState] = []  # new paths with the same bytes as one queued: they take its results after
        walked = WalkNotes()

        def note(error: str) -> None:
            if len(report.errors) < LISTED_ERRORS:
                report.errors.append(error)
            else:
                report.errors_not_listed += 1

        def tag(track: int, genre: str, state: FileState, warnings: list[dict[str, str]] | str | None) -> None:
            """Write ``genre`` into the file, unless the model doubted it (``warnings``: a list or the stored JSON)."""
            if flags_of(json.loads(warnings or "[]") if isinstance(warnings, str) else warnings or []):
                counts["not_tagged"] += 1
                return
            try:
                tagger(state.path, genre)
            except AcousticSenseError as e:
                counts["tag_failed"] += 1
                note(str(e))
                return
            st = os.stat(state.path)
            writer.begin()
            catalog.tagged(track, genre, FileState(state.path, st.st_size, st.st_mtime_ns, file_hash(state.path)))
            writer.commit()
            counts["tagged"] += 1

        def keep(row: Any, state: FileState | None) -> bool:
            """Keep ``row``'s results for this file (marking it found); False: classify the file again."""
            if (row["status"] == "failed" and retry_failed) or stale(row):
                return False
            writer.begin()
            catalog.mark_seen(row["id"], scan_id, state)
            counts["other_model"] += row["model"] != key and row["status"] != "failed"
            counts["failed_before"] += row["status"] == "failed"
            if tagger and row["status"] == "ok" and row["tag"] != row["genre"]:
                tag(row["id"], row["genre"], state or FileState(row["path"], row["size"], row["mtime_ns"], row["hash"]), row["warnings"])
            return True

        def cut_short(row: Any) -> bool:
            """Analysed only up to an earlier, lower ``max_seconds``: this scan reads more of it."""
            truncated = any(w.get("code") == "truncated" for w in json.loads(row["warnings"] or "[]"))
            return truncated and row["duration"] is not None and row["duration"] < max_seconds - 0.01

        def stale(row: Any) -> bool:
            """Results this scan classifies again (cut short, or another model's under ``rescan_model``): not to be copied."""
            return cut_short(row) or (rescan_model and row["status"] != "failed" and row["model"] != key)

        def plan() -> Iterator[str]:
            """Settle each file found; yield the paths the engine must classify (their states queue up in order)."""
            for state in walk(root_path, walked):
                counts["found"] += 1
                row = catalog.lookup(state.path)
                if row is not None and (row["size"], row["mtime_ns"]) == (state.size, state.mtime_ns):
                    if keep(row, None):
                        counts["unchanged"] += 1
                        writer.tick()
                        _advance(progress)
                        continue
                    state.hash = row["hash"]
                else:
                    try:
                        state.hash = file_hash(state.path)
                    except OSError as e:
                        counts["failed"] += 1
                        note(error := f"{state.path}: cannot be read ({e.strerror or e})")
                        writer.store(state, key, Outcome("failed", error), scan_id)
                        _advance(progress)
                        continue
                    if row is not None and row["hash"] == state.hash and keep(row, state):  # touched, same bytes
                        counts["unchanged"] += 1
                        writer.tick()
                        _advance(progress)
                        continue
                    if row is None and (donor := _donor(catalog, state.hash)) is not None and not stale(donor):
                        moved = not os.path.exists(donor["path"])
                        writer.begin()
                        if moved:
                            catalog.mark_seen(donor["id"], scan_id, state)
                        track = donor["id"] if moved else catalog.copy_track(donor["id"], state, scan_id)
                        counts["moved" if moved else "copied"] += 1
                        if tagger and donor["status"] == "ok" and donor["tag"] != donor["genre"]:  # same bytes: tagged if the donor is
                            tag(track, donor["genre"], state, donor["warnings"])
                        writer.tick()
                        _advance(progress)
                        continue
                if row is None and state.hash in first_of:
                    twins.append(state)
                    continue
                if row is not None and row["status"] == "failed":
                    counts["retried"] += 1
                first_of.setdefault(state.hash, state.path)
                queue.append(state)
                writer.commit()  # the engine may take a while: no lock held meanwhile
                yield state.path

        def settle(outcome: Outcome) -> None:
            """Store what the engine said of the next queued file."""
            state = queue.popleft()
            counts[{"ok": "classified", "silent": "silent", "failed": "failed"}[outcome.status]] += 1
            if outcome.error:
                note(outcome.error)
            track = writer.store(state, key, outcome, scan_id)
            if tagger and outcome.status == "ok":
                tag(track, outcome.genres[0][0], state, outcome.warnings)
            _advance(progress)

        for outcome in classify(plan()):
            settle(outcome)
        alone = []  # copies whose first failed: it may have been its file (gone, unreadable), not the bytes
        for state in twins:
            first = catalog.lookup(first_of[state.hash])
            if first is None or first["status"] == "failed":
                alone.append(state)
                continue
            writer.begin()
            track = catalog.copy_track(first["id"], state, scan_id)
            writer.commit()
            counts["copied"] += 1
            if tagger and first["status"] == "ok":  # the first copy's file is tagged (its hash changed): this one too
                tag(track, first["genre"], state, first["warnings"])
            _advance(progress)
        queue.extend(alone)
        for outcome in classify(state.path for state in alone):
            settle(outcome)
        writer.commit()
        if tagger:  # copies a killed --write-tags left behind (the originals are intact)
            for temp in walked.temps:
                Path(temp).unlink(missing_ok=True)
        passed = [f"{u}; the tracks under it are kept" for u in walked.unreadable] + walked.skipped
        listed = passed + report.errors
        report.errors_not_listed += max(0, len(listed) - LISTED_ERRORS)
        report.errors = listed[:LISTED_ERRORS]
        counts["skipped"] = len(walked.skipped)
        if not walked.unreadable:
            with catalog.transaction():
                counts["removed"] = catalog.forget_unseen(str(root_path), scan_id)
        report.counts = counts
        report.seconds = round(time.perf_counter() - started, 3)
        catalog.finish_scan(scan_id, counts)
    return report


class _Writer:
    """Short write transactions: each classified file is committed at once, the bookkeeping of files found
    unchanged, moved or copied at least every :data:`COMMIT_SECONDS` and before the model is asked for more.
    The write lock is never held while the model works, so another scan or a reader waits a moment at most."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.open, self.since = False, 0.0

    def begin(self) -> None:
        if not self.open:
            self.catalog.begin()
            self.open, self.since = True, time.monotonic()

    def tick(self) -> None:
        if self.open and time.monotonic() - self.since >= COMMIT_SECONDS:
            self.commit()

    def store(self, state: FileState, key: str, outcome: Outcome, scan_id: int) -> int:
        self.begin()
        track = self.catalog.store(state, key, outcome, scan_id, DEFAULT_TOP_K)  # its whole distribution goes to track_genres
        self.commit()
        return track

    def commit(self) -> None:
        if self.open:
            self.catalog.commit()
            self.open = False


def _donor(catalog: Catalog, digest: str) -> Any:
    """The stored track with these bytes whose results a new path can take over, if any."""
    rows = [r for r in catalog.same_content(digest) if r["status"] != "failed"]
    gone = [r for r in rows if not os.path.exists(r["path"])]
    return (gone or rows or [None])[0]


def _advance(progress: Callable[[int], Any] | None) -> None:
    if progress is not None:
        progress(1)
