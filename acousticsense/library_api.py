"""The music library over HTTP: ``/api/v1/library`` (search, similar, genres, a track's audio). No Gradio here.

The server reads the library database a scan made (``serve --db``). A request names tracks by id or by the
path the library lists; it never makes the server read any other file (:func:`.similar.resolve` with
``files=False``), and the only file it opens by path is the audio of a track the library holds.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as Path_
from fastapi.responses import FileResponse
from starlette.responses import MalformedRangeHeader

from .api import options_once, other_methods_405
from .catalog import MAX_ID, Catalog, LibraryError, changed_since_scan, track_summary
from .errors import AcousticSenseError, ParameterError
from .options import DEFAULT_NEIGHBOURS, DEFAULT_SEARCH_LIMIT, MAX_NEIGHBOURS
from .similar import resolve, similar

MAX_LIMIT = 1000  # tracks per search page
MEDIA_TYPES = {  # by suffix, for every extension a scan takes (audio.AUDIO_EXTENSIONS)
    ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".flac": "audio/flac", ".wav": "audio/wav", ".aif": "audio/aiff", ".aiff": "audio/aiff",
    ".wma": "audio/x-ms-wma", ".webm": "audio/webm", ".mka": "audio/x-matroska",
}  # fmt: skip


class NotInLibrary(LibraryError):
    """A track id or path the library does not hold, or whose file is gone (HTTP 404)."""


class Library:
    """The library database the server reads: one connection, one query at a time (FastAPI and Gradio worker threads)."""

    def __init__(self, db: str | os.PathLike):
        self.catalog = Catalog(db, create=False)  # a missing or foreign file fails here, at start-up
        self.lock = threading.Lock()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """One query at a time; SQLite's errors (a file damaged since the server started) as :class:`LibraryError`."""
        with self.lock:
            try:
                yield
            except sqlite3.DatabaseError as e:
                raise LibraryError(f"the library database cannot be read ({e}); rescan or restore it") from None

    def _row(self, key: int | str) -> Any:
        try:
            return self.catalog.track(key)
        except LibraryError:
            raise NotInLibrary(f"no track {key!r} in the library") from None

    def search(self, genre: str, min_prob: float | None = None, limit: int = DEFAULT_SEARCH_LIMIT, offset: int = 0) -> dict[str, Any]:
        """``{"genre", "min_prob", "tracks"}``: the genre as the library spells it, and the summaries of the tracks whose
        top genre it is or, with ``min_prob``, whose probability of it (``match``) is at least that."""
        with self._reading():
            genre, rows = self.catalog.search(genre, min_prob, limit, offset)
            tracks = [track_summary(r) | ({} if min_prob is None else {"match": r["match"]}) for r in rows]
        return {"genre": genre, "min_prob": min_prob, "tracks": tracks}

    def track(self, key: int | str) -> dict[str, Any]:
        """A track's summary, by id or library path."""
        with self._reading():
            return track_summary(self._row(key))

    def similar(self, key: int | str, k: int = DEFAULT_NEIGHBOURS, same_genre: bool = False) -> list[dict[str, Any]]:
        """The track (by id or library path) first, then its ``k`` most similar tracks (see :func:`.similar.similar`)."""
        with self._reading():
            query = resolve(self.catalog, self._row(key)["id"], files=False)
            return similar(self.catalog, query, k, same_genre)

    def genres(self) -> dict[str, int]:
        """Classified tracks per top genre, most common first."""
        with self._reading():
            return self.catalog.genres()

    def audio(self, track: int) -> Path:
        """The file of a track the library holds; :class:`NotInLibrary` if there is none or it is no longer a regular file."""
        with self._reading():
            row = self._row(track)
        path = Path(row["path"])
        if row["status"] not in ("ok", "silent"):
            raise NotInLibrary(f"track {track}: not playable audio ({row['status']})")
        if changed_since_scan(row):  # the scan follows no links; neither does the server. Rescan to serve it again
            raise NotInLibrary(f"track {track}: its file is gone or changed since the scan")
        return path


class AudioFile(FileResponse):
    """A track's file. A ``Range`` header it cannot parse (``bytes=5-1``, another unit) is ignored and the whole file
    sent, as RFC 9110 allows (Starlette's own answer is a plain-text 400); one past the end stays a 416."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


def media_type(path: Path) -> str:
    return MEDIA_TYPES.get(path.suffix.lower(), "application/octet-stream")


def http_error(e: AcousticSenseError) -> HTTPException:
    """404 for a track the library lacks, 400 for a bad option, 503 for a database that cannot be read,
    422 for anything else a request caused (as :mod:`.api`)."""
    code = 404 if isinstance(e, NotInLibrary) else 400 if isinstance(e, ParameterError) else 503 if isinstance(e, LibraryError) else 422
    return HTTPException(code, str(e))


def library_router(library: Library) -> APIRouter:
    """``/api/v1/library``: search, similar, genres, tracks/{id}/audio (sync handlers: FastAPI runs them in worker threads)."""
    api = APIRouter(prefix="/api/v1/library", tags=["library"], dependencies=[Depends(options_once)])
    not_found = {404: {"description": "No such track in the library"}}

    @api.get("/search", summary="Tracks of a genre, most probable first")
    def search_tracks(
        genre: Annotated[str, Query(description="A genre label, e.g. Jazz (one no model of the library knows is a 400 naming those they know)")],
        min_prob: Annotated[Optional[float], Query(ge=0, le=1, allow_inf_nan=False, description="Any track whose probability of the genre is at least this (default: tracks whose top genre it is); each gets `match`")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_SEARCH_LIMIT,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> dict[str, Any]:
        try:
            return library.search(genre, min_prob, limit, offset)
        except AcousticSenseError as e:
            raise http_error(e) from None

    @api.get("/similar", summary="More like this: a track, then its nearest tracks by sound", responses=not_found)
    def similar_tracks(
        track: Annotated[Optional[int], Query(ge=0, le=MAX_ID, description="A track id")] = None,
        path: Annotated[Optional[str], Query(description="Or: a path the library lists (no other file is read)")] = None,
        k: Annotated[int, Query(ge=1, le=MAX_NEIGHBOURS, description="Similar tracks to return")] = DEFAULT_NEIGHBOURS,
        same_genre: Annotated[bool, Query(description="Only tracks with the same top genre")] = False,
    ) -> dict[str, Any]:
        if (track is None) == (path is None):
            raise HTTPException(400, "give either track (an id) or path")
        try:
            tracks = library.similar(track if track is not None else path, k, same_genre)
        except AcousticSenseError as e:
            raise http_error(e) from None
        return {"query": tracks[0], "tracks": tracks}

    @api.get("/genres", summary="Classified tracks per top genre")
    def genres() -> dict[str, Any]:
        try:
            counts = library.genres()
        except AcousticSenseError as e:
            raise http_error(e) from None
        return {"genres": counts, "tracks": sum(counts.values())}

    @api.get("/tracks/{track}/audio", summary="A track's audio file, as the library lists it", response_class=AudioFile, responses=not_found)
    def audio(track: Annotated[int, Path_(ge=0, le=MAX_ID)]) -> AudioFile:
        try:
            path = library.audio(track)
        except AcousticSenseError as e:
            raise http_error(e) from None
        return AudioFile(path, media_type=media_type(path))

    return other_methods_405(api)
