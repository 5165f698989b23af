"""The music library's database: one SQLite file (WAL) holding what a scan found for every track.

Schema (version :data:`SCHEMA_VERSION`; :data:`MIGRATIONS` brings an older file up to date, a newer one is refused):

``tracks``
    one row per file: ``path`` (absolute, unique), ``size``, ``mtime_ns``, ``hash`` (BLAKE2b-128 of the bytes),
    ``status`` (``ok`` | ``silent`` | ``failed``), ``error``, ``model`` (``model_id@hash``: see ``scan.model_key``), ``duration``
    (seconds), ``genre`` / ``probability`` (the top genre), ``top_k`` (JSON ``[[label, p], ...]``), ``timeline``
    (JSON ``[[start, end, label|null, p], ...]``), ``warnings`` (JSON), ``embedding`` (float32 bytes, L2-normalised:
    the ViT's pooled representation averaged over the track's windows), ``tag`` (the genre written into the file's
    metadata, if any), ``scanned_at`` (unix time), ``seen`` (the last scan that found the file).
``track_genres``
    the track's whole genre distribution, one row per (track, genre): what ``search --min-prob`` reads.
``scans``
    one row per scan: root, model, engine, start and end time, counts (JSON).
``schema_version``
    one row: the schema's version.

Only this module writes SQL; the scan and the queries call its methods.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .errors import AcousticSenseError, ParameterError
from .folders import FileState
from .options import DEFAULT_SEARCH_LIMIT, is_number, is_whole, label_in
from .results import flags_of

SCHEMA_VERSION = 1
MAX_ID = 2**63 - 1  # SQLite's largest integer
MIGRATIONS: dict[int, str] = {  # version -> the SQL that brings version - 1 to it
    1: """
    CREATE TABLE tracks (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        hash TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok', 'silent', 'failed')),
        error TEXT,
        model TEXT,
        duration REAL,
        genre TEXT,
        probability REAL,
        top_k TEXT,
        timeline TEXT,
        warnings TEXT,
        embedding BLOB,
        tag TEXT,
        scanned_at REAL NOT NULL,
        seen INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX tracks_hash ON tracks (hash);
    CREATE INDEX tracks_genre ON tracks (genre, probability);
    CREATE TABLE track_genres (
        track_id INTEGER NOT NULL REFERENCES tracks (id) ON DELETE CASCADE,
        genre TEXT NOT NULL,
        probability REAL NOT NULL,
        PRIMARY KEY (track_id, genre)
    ) WITHOUT ROWID;
    CREATE INDEX track_genres_genre ON track_genres (genre, probability);
    CREATE TABLE scans (
        id INTEGER PRIMARY KEY,
        root TEXT NOT NULL,
        model TEXT NOT NULL,
        engine TEXT NOT NULL,
        started REAL NOT NULL,
        finished REAL,
        counts TEXT
    );
    """,
}
assert sorted(MIGRATIONS) == list(range(1, SCHEMA_VERSION + 1))


class LibraryError(AcousticSenseError):
    """The library database cannot be used (not a database, made by a newer version, no such track)."""


@dataclass
class Outcome:
    """What classifying one file gave, ready to store (the same from every engine)."""

    status: str  # ok | silent | failed
    error: str | None = None
    duration: float | None = None
    genres: list[tuple[str, float]] | None = None  # the whole distribution, best first
    timeline: list[tuple[float, float, str | None, float]] | None = None
    warnings: list[dict[str, str]] | None = None
    embedding: np.ndarray | None = None  # (dim,) float32

    def to_json(self) -> str:
        d = self.__dict__ | {"embedding": None if self.embedding is None else self.embedding.tolist()}
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "Outcome":
        d = json.loads(text)
        if d["embedding"] is not None:
            d["embedding"] = np.asarray(d["embedding"], dtype=np.float32)
        return cls(**d)


class Catalog:
    """An open library database. Writes happen inside :meth:`transaction` blocks; readers never block a scan (WAL)."""

    def __init__(self, path: str | Path, create: bool = True):
        self.path = Path(path).expanduser()  # as scan takes the library folder: "~/library.db" from Python too
        if self.path.is_dir():
            raise LibraryError(f"{self.path}: is a folder, not a library database file (--db names a file, e.g. library.db)")
        if not create and not self.path.is_file():
            raise LibraryError(f"{self.path}: no such library database (make one with: acousticsense scan DIR --db {self.path})")
        if create and not self.path.parent.is_dir():
            raise LibraryError(f"{self.path}: no such folder {self.path.parent}")
        try:
            if create:
                self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            else:  # readers open it read-only: a library on read-only storage can be searched and served
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=30, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            if create:
                self._wal()
                self.db.execute("PRAGMA synchronous = NORMAL")  # with WAL: a killed process loses nothing committed
            self.db.execute("PRAGMA foreign_keys = ON")
            self._migrate(create)
        except sqlite3.DatabaseError as e:
            raise LibraryError(f"{self.path}: not a usable library database ({e})") from None

    def _wal(self, timeout: float = 30.0) -> None:
        """Switch to WAL. SQLite answers "locked" at once, without waiting, while another process (a second scan
        started beside this one) creates or switches the same new file: retry for up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _version(self) -> int:
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" in tables:
            row = self.db.execute("SELECT version FROM schema_version").fetchone()
            if row is None or not isinstance(row[0], int):
                raise LibraryError(f"{self.path}: its schema_version table is damaged")
            version = row[0]
        elif tables:
            raise LibraryError(f"{self.path}: an SQLite database, but not an AcousticSense library")
        else:
            version = 0
        return version

    def _migrate(self, write: bool) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise LibraryError(f"{self.path}: schema version {version} was written by a newer AcousticSense (this one reads up to {SCHEMA_VERSION})")
        if version == SCHEMA_VERSION:
            return
        if not write and not version:
            raise LibraryError(f"{self.path}: an empty database, not a library yet (`acousticsense scan DIR --db {self.path}` makes one)")
        if not write:
            raise LibraryError(f"{self.path}: written by an older AcousticSense (schema {version}); `acousticsense scan` upgrades it")
        with self.transaction():
            version = self._version()  # again, under the write lock: a scan started beside this one may have done it
            if version >= SCHEMA_VERSION:
                return self._migrate(write)  # done meanwhile (or by a newer AcousticSense: refused there)
            if version == 0:
                self.db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                self.db.execute("INSERT INTO schema_version VALUES (0)")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, MIGRATIONS[v].split(";")):
                    self.db.execute(statement)
            self.db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, *exc: Any) -> None:
        self.close()
        if isinstance(error, sqlite3.DatabaseError):  # damaged after it opened (a page that does not read)
            raise LibraryError(f"{self.path}: cannot read the library database ({error})") from None

    def transaction(self) -> "_Transaction":
        """``with catalog.transaction():`` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on an exception."""
        return _Transaction(self.db)

    def begin(self) -> None:
        """Open a write transaction (BEGIN IMMEDIATE: the write lock now) that :meth:`commit` ends; for writes batched
        across calls, where :meth:`transaction` does not fit."""
        self.db.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.db.execute("COMMIT")

    # -- the scan's writes --------------------------------------------------------------------------------------

    def begin_scan(self, root: str, model: str, engine: str) -> int:
        """Record a scan of ``root`` with ``model`` starting now; its id (what :meth:`mark_seen` and :meth:`store` take)."""
        with self.transaction():
            return self.db.execute("INSERT INTO scans (root, model, engine, started) VALUES (?, ?, ?, ?)", (root, model, engine, time.time())).lastrowid

    def finish_scan(self, scan: int, counts: dict[str, int]) -> None:
        """Record that scan ``scan`` finished, with its counts."""
        with self.transaction():
            self.db.execute("UPDATE scans SET finished = ?, counts = ? WHERE id = ?", (time.time(), json.dumps(counts), scan))

    def lookup(self, path: str) -> sqlite3.Row | None:
        """The track stored under ``path`` (absolute, as a scan stores it), or None."""
        return self.db.execute("SELECT * FROM tracks WHERE path = ?", (path,)).fetchone()

    def same_content(self, digest: str) -> list[sqlite3.Row]:
        """Tracks whose file had these bytes (a moved or copied file), classified ones first."""
        return self.db.execute("SELECT * FROM tracks WHERE hash = ? ORDER BY status = 'failed', id", (digest,)).fetchall()

    def mark_seen(self, track: int, scan: int, state: FileState | None = None) -> None:
        """The scan found the track (``state``: at a new size/mtime, or path when moved)."""
        if state is None:
            self.db.execute("UPDATE tracks SET seen = ? WHERE id = ?", (scan, track))
        else:
            self.db.execute(
                "UPDATE tracks SET seen = ?, path = ?, size = ?, mtime_ns = ?, hash = ? WHERE id = ?",
                (scan, state.path, state.size, state.mtime_ns, state.hash, track),
            )

    def copy_track(self, track: int, state: FileState, scan: int) -> int:
        """A second file with the same bytes as ``track``: the same results under the new path."""
        cols = "status, error, model, duration, genre, probability, top_k, timeline, warnings, embedding, tag, scanned_at"
        new = self.db.execute(
            f"INSERT INTO tracks (path, size, mtime_ns, hash, seen, {cols}) SELECT ?, ?, ?, ?, ?, {cols} FROM tracks WHERE id = ?",
            (state.path, state.size, state.mtime_ns, state.hash, scan, track),
        ).lastrowid
        self.db.execute("INSERT INTO track_genres SELECT ?, genre, probability FROM track_genres WHERE track_id = ?", (new, track))
        return new

    def store(self, state: FileState, model: str, outcome: Outcome, scan: int, top_k: int) -> int:
        """Insert or replace the file's row with a fresh classification; returns the track id."""
        genres = outcome.genres or []
        top = genres[0] if genres else (None, None)
        values = dict(
            path=state.path, size=state.size, mtime_ns=state.mtime_ns, hash=state.hash, status=outcome.status, error=outcome.error,
            model=model, duration=outcome.duration, genre=top[0], probability=top[1],
            top_k=None if outcome.genres is None else json.dumps(genres[:top_k]),
            timeline=None if outcome.timeline is None else json.dumps(outcome.timeline),
            warnings=json.dumps(outcome.warnings or []),
            embedding=None if outcome.embedding is None else np.asarray(outcome.embedding, "<f4").tobytes(),
            tag=None, scanned_at=time.time(), seen=scan,
        )
        names = ", ".join(values)
        updates = ", ".join(f"{k} = excluded.{k}" for k in values if k != "path")
        track = self.db.execute(
            f"INSERT INTO tracks ({names}) VALUES ({', '.join('?' * len(values))}) ON CONFLICT (path) DO UPDATE SET {updates} RETURNING id",
            tuple(values.values()),
        ).fetchone()[0]
        self.db.execute("DELETE FROM track_genres WHERE track_id = ?", (track,))
        self.db.executemany("INSERT INTO track_genres VALUES (?, ?, ?)", [(track, g, p) for g, p in genres])
        return track

    def tagged(self, track: int, genre: str, state: FileState) -> None:
        """``genre`` was written into the file, which now has this size, mtime and hash."""
        self.db.execute("UPDATE tracks SET tag = ?, size = ?, mtime_ns = ?, hash = ? WHERE id = ?", (genre, state.size, state.mtime_ns, state.hash, track))

    def count_under(self, root: str) -> int:
        """How many tracks lie under the folder ``root``."""
        return self.db.execute("SELECT count(*) FROM tracks WHERE substr(path, 1, ?) = ?", _under(root)).fetchone()[0]

    def forget_unseen(self, root: str, scan: int) -> int:
        """Delete the tracks under ``root`` that this scan did not find and whose file is gone (or is now a link, or
        lies under one: the scan follows none); returns how many.

        The file is checked too: a scan running beside this one (of the same folder or one inside it) marks
        the files it finds with its own id, and those must stay.
        """
        unseen = self.db.execute("SELECT id, path FROM tracks WHERE substr(path, 1, ?) = ? AND seen != ?", (*_under(root), scan))
        gone = [(track,) for track, path in unseen if listed_file(path) is None]
        self.db.executemany("DELETE FROM tracks WHERE id = ?", gone)
        return len(gone)

    # -- queries -------------------------------------------------------------------------------------------------

    def track(self, key: int | str) -> sqlite3.Row:
        """A track by id or path; :class:`LibraryError` if the library has none."""
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise ParameterError(f"a track is named by its id or its path, not {key!r}")
        in_range = not isinstance(key, int) or 0 <= key <= MAX_ID
        if isinstance(key, str):
            stored_text(key, "the track's path")
        row = self.db.execute(f"SELECT * FROM tracks WHERE {'id' if isinstance(key, int) else 'path'} = ?", (key,)).fetchone() if in_range else None
        if row is None:
            raise LibraryError(f"{self.path}: no track {key!r} in this library")
        return row

    def search(self, genre: str, min_prob: float | None = None, limit: int = DEFAULT_SEARCH_LIMIT, offset: int = 0) -> tuple[str, list[sqlite3.Row]]:
        """The genre as the library spells it (any case matches, see :meth:`label`) and the tracks whose top genre it is
        (best first) or, with ``min_prob``, whose probability of it is at least that."""
        if not (is_whole(limit, 1, MAX_ID) and is_whole(offset, 0, MAX_ID)):
            raise ParameterError(f"limit must be at least 1 and offset at least 0 (whole numbers up to {MAX_ID}), not {limit!r}, {offset!r}")
        genre = self.label(genre)
        if min_prob is not None and (not is_number(min_prob) or not 0 <= min_prob <= 1):
            raise ParameterError(f"min_prob must be a number from 0 to 1, not {min_prob!r}")
        if min_prob is None:
            sql = "SELECT * FROM tracks WHERE status = 'ok' AND genre = ? COLLATE NOCASE ORDER BY probability DESC, path LIMIT ? OFFSET ?"
            rows = self.db.execute(sql, (genre, limit, offset)).fetchall()
        else:
            sql = (
                "SELECT t.*, g.probability AS match FROM track_genres g JOIN tracks t ON t.id = g.track_id "
                "WHERE t.status = 'ok' AND g.genre = ? COLLATE NOCASE AND g.probability >= ? ORDER BY g.probability DESC, t.path LIMIT ? OFFSET ?"
            )
            rows = self.db.execute(sql, (genre, min_prob, limit, offset)).fetchall()
        return genre, rows

    def label(self, genre: str) -> str:
        """``genre`` as the library's models spell it (any case matches). One no model knows is a :class:`ParameterError`
        naming those they know (a typo is not "no track"); in a library of no classified track, ``genre`` as given."""
        if not isinstance(genre, str):
            raise ParameterError(f"genre must be a name, not {genre!r}")
        stored_text(genre, "the genre")
        known = self.labels()
        return label_in(genre, known, "no model in this library knows the genre {genre}; they know: {labels}") if known else genre

    def genres(self) -> dict[str, int]:
        """Tracks per top genre, most common first."""
        rows = self.db.execute("SELECT genre, count(*) FROM tracks WHERE status = 'ok' GROUP BY genre ORDER BY count(*) DESC, genre")
        return {g: n for g, n in rows}

    def labels(self) -> list[str]:
        """Every genre the library's models know (whether or not a track's top genre), sorted: one index lookup per
        genre (a loose index scan), not a pass over every track's distribution, since each search asks."""
        sql = ("WITH RECURSIVE g(genre) AS (SELECT min(genre) FROM track_genres UNION ALL "
               "SELECT (SELECT min(genre) FROM track_genres WHERE genre > g.genre) FROM g WHERE g.genre IS NOT NULL) "
               "SELECT genre FROM g WHERE genre IS NOT NULL")
        return [g for (g,) in self.db.execute(sql)]

    def models(self) -> dict[str, int]:
        """Classified tracks per model key."""
        return {m: n for m, n in self.db.execute("SELECT model, count(*) FROM tracks WHERE status = 'ok' GROUP BY model ORDER BY count(*) DESC")}

    def model_state(self, model: str) -> tuple[Any, ...]:
        """What changes whenever ``model``'s tracks change (their count, last scan time, largest id): a cache key."""
        return tuple(self.db.execute("SELECT count(*), max(scanned_at), max(id) FROM tracks WHERE model = ?", (model,)).fetchone())

    def embeddings(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, (n, dim) float32 embeddings, top genres) of every classified track of ``model``."""
        sql = "SELECT id, embedding, genre FROM tracks WHERE status = 'ok' AND model = ? AND embedding IS NOT NULL ORDER BY id"
        rows = self.db.execute(sql, (model,)).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros((0, 1), np.float32), np.zeros(0, object)
        vectors = [embedding_of(r) for r in rows]
        if (odd := next((i for i, v in enumerate(vectors) if len(v) != len(vectors[0])), None)) is not None:
            _damaged(rows[odd], f"its embedding has {len(vectors[odd])} values, track {rows[0]['id']}'s {len(vectors[0])}")
        return np.array([r[0] for r in rows], np.int64), np.stack(vectors), np.array([r[2] for r in rows], object)

    def tracks(self, ids: list[int]) -> list[sqlite3.Row]:
        """The rows of these track ids (any order)."""
        return [r for i in range(0, len(ids), 500) for r in self.db.execute(f"SELECT * FROM tracks WHERE id IN ({','.join('?' * len(ids[i:i + 500]))})", ids[i : i + 500])]

    def rows(self) -> Iterator[sqlite3.Row]:
        """Every track, by path (streamed)."""
        return self.db.execute("SELECT * FROM tracks ORDER BY path")

    def counts(self) -> dict[str, int]:
        """How many tracks have each status (ok, silent, failed)."""
        return {s: n for s, n in self.db.execute("SELECT status, count(*) FROM tracks GROUP BY status")}


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type | None, *exc: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def track_summary(row: sqlite3.Row) -> dict[str, Any]:
    """A track row as plain data for JSON, CSV and the web page (no embedding, no timeline); ``flags``: the warnings
    that say not to trust its genre (``not_music``, ``low_confidence``).
    A value no scan writes (a damaged or hand-edited row) is a ``sqlite3.DataError``, as a page that does not read."""
    top_k = _stored_list(row, "top_k")
    if not all(isinstance(g, list) and len(g) == 2 and isinstance(g[0], str) and is_number(g[1]) for g in top_k):
        _damaged(row, "its top_k is not a list of [genre, probability]")
    for key in ("probability", "duration"):
        if row[key] is not None and not is_number(row[key]):
            _damaged(row, f"its {key} is not a number")
    for key in ("path", "status", "genre", "model", "error"):
        if row[key] is not None and not isinstance(row[key], str):
            _damaged(row, f"its {key} is not text")
    return {
        "id": row["id"],
        "path": row["path"],
        "status": row["status"],
        "genre": row["genre"],
        "probability": row["probability"],
        "top_k": top_k,
        "duration": row["duration"],
        "model": row["model"],
        "error": row["error"],
        "flags": flags_of(_stored_list(row, "warnings")),
    }


def flagged(track: dict[str, Any]) -> str:
    """A :func:`track_summary`'s ``flags`` in words ("not music", "low confidence"), or nothing."""
    return ", ".join(c.replace("_", " ") for c in track["flags"])


def track_record(row: sqlite3.Row) -> dict[str, Any]:
    """:func:`track_summary` with the file's hash, the decoding warnings and the timeline (what ``export --json`` writes)."""
    warnings = _stored_list(row, "warnings")
    if not all(isinstance(w, dict) and isinstance(w.get("code"), str) for w in warnings):
        _damaged(row, "its warnings are not a list of {code, message}")
    return track_summary(row) | {"hash": row["hash"], "warnings": warnings, "timeline": _stored_list(row, "timeline")}


def _stored_list(row: sqlite3.Row, key: str) -> list[Any]:
    """A column that holds a JSON list (empty when null); anything else is a damaged row."""
    try:
        value = json.loads(row[key]) if row[key] else []
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, list):
        _damaged(row, f"its {key} is not a JSON list")
    return value


def stored_text(value: str, what: str) -> str:
    """``value`` as the database stores it (UTF-8 text). A name a file system allows but UTF-8 does not (bytes
    that decode to lone surrogates) is a :class:`ParameterError` showing its bytes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ParameterError(f"{shown}: {what} is not valid UTF-8 (the library stores UTF-8 text)") from None
    return value


def _under(root: str) -> tuple[int, str]:
    """The parameters of ``substr(path, 1, ?) = ?`` for the paths under the folder ``root`` (not a sibling sharing its prefix)."""
    prefix = root.rstrip("/") + "/"
    return len(prefix), prefix


def changed_since_scan(row: sqlite3.Row) -> bool:
    """Whether a track's file is gone, or is no longer the file its scan read (another size or mtime, or now a link)."""
    st = listed_file(row["path"])
    return st is None or (st.st_size, st.st_mtime_ns) != (row["size"], row["mtime_ns"])


def listed_file(path: str | Path) -> os.stat_result | None:
    """``path``'s ``lstat`` if a scan would list it: a regular file reached through no link (paths are stored
    resolved); else None."""
    try:
        st = os.lstat(path)
    except (OSError, ValueError):
        return None
    return st if stat.S_ISREG(st.st_mode) and os.path.realpath(path) == str(path) else None


def embedding_of(row: sqlite3.Row) -> np.ndarray:
    """A track's stored embedding; anything but finite float32 values is a ``sqlite3.DataError`` (a damaged row)."""
    blob = row["embedding"]
    vector = np.frombuffer(blob, "<f4") if isinstance(blob, bytes) and blob and len(blob) % 4 == 0 else None
    if vector is None or not np.isfinite(vector).all():
        _damaged(row, "its embedding is not a vector of finite float32 values")
    return vector


def _damaged(row: sqlite3.Row, what: str) -> NoReturn:
    """A stored value no scan writes: reported like SQLite's own errors ("cannot read the library database")."""
    raise sqlite3.DataError(f"track {row['id']}: {what}")
