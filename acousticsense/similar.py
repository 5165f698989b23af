"""“More like this”: cosine nearest neighbours of a track's embedding among the library's tracks (usearch).

Embeddings are :func:`~acousticsense.results.track_embedding`: the ViT's class token (what its head reads), averaged
over a track's windows, beside the square root of its genre distribution, unit length; only tracks classified by
the same model are compared. Up to :data:`EXACT_LIMIT`
tracks the search is exact (brute force, SIMD); beyond, an HNSW index is built once per library state.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from usearch.index import Index, MetricKind, search

from .catalog import Catalog, LibraryError, embedding_of, stored_text, track_summary
from .errors import AudioError
from .options import DEFAULT_NEIGHBOURS, DEFAULT_TOP_K, MAX_NEIGHBOURS, whole_in_range
from .results import flags_of

EXACT_LIMIT = 200_000  # tracks searched exactly; a larger library gets an approximate (HNSW) index


class Neighbours:
    """Cosine search over one model's track embeddings."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray):
        self.ids, self.vectors = ids, np.ascontiguousarray(vectors, np.float32)
        self.index: Index | None = None
        if len(ids) > EXACT_LIMIT:
            self.index = Index(ndim=self.vectors.shape[1], metric=MetricKind.Cos)
            self.index.add(ids, self.vectors)

    def query(self, vector: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The ``k`` nearest (track id, cosine similarity), most similar first; ``allowed``: a mask over the tracks."""
        ids, vectors = (self.ids, self.vectors) if allowed is None else (self.ids[allowed], self.vectors[allowed])
        k = min(k, len(ids))
        if k == 0:
            return []
        vector = np.asarray(vector, np.float32)
        if self.index is not None and allowed is None:
            found = self.index.search(vector, k)
            return [(int(i), 1.0 - float(d)) for i, d in zip(found.keys, found.distances)]
        if self.index is not None:  # over-fetch from the index, keep the allowed ones
            found = self.index.search(vector, min(len(self.ids), 20 * k))
            keep = set(ids.tolist())
            return [(int(i), 1.0 - float(d)) for i, d in zip(found.keys, found.distances) if int(i) in keep][:k]
        found = search(vectors, vector, k, MetricKind.Cos, exact=True)
        return [(int(ids[i]), 1.0 - float(d)) for i, d in zip(found.keys, found.distances)]


_cache: dict[tuple[str, str], tuple[tuple[Any, ...], Neighbours, np.ndarray]] = {}
_cache_lock = threading.Lock()


def neighbours(catalog: Catalog, model: str) -> tuple[Neighbours, np.ndarray]:
    """The search over ``model``'s tracks and their top genres, rebuilt only when the library has changed."""
    state = catalog.model_state(model)
    key = (str(catalog.path.resolve()), model)
    with _cache_lock:
        hit = _cache.get(key)
        if hit is None or hit[0] != state:
            ids, vectors, genres = catalog.embeddings(model)
            hit = _cache[key] = (state, Neighbours(ids, vectors), genres)
    return hit[1], hit[2]


@dataclass
class Query:
    """What to find neighbours of: a track of the library, or a file embedded on the fly."""

    embedding: np.ndarray
    model: str
    genre: str | None
    track: dict[str, Any]  # its summary (``id`` None for a file outside the library)

    @property
    def id(self) -> int | None:
        return self.track["id"]


def resolve(
    catalog: Catalog, query: int | str | os.PathLike | BinaryIO, bundle: str | os.PathLike | None = None, device: str | None = None, files: bool = True
) -> Query:
    """A track id, a path the library holds, or (``files``) any audio file or binary stream, classified now with ``bundle``.

    The server passes ``files=False``: a request never makes it read a file the library does not list.
    """
    row = None
    if isinstance(query, int):
        row = catalog.track(query)
    elif not files:
        row = catalog.track(str(query))
    elif callable(getattr(query, "read", None)):  # a stream (standard input): classified now
        pass
    else:
        path = Path(query).expanduser()
        row = catalog.lookup(stored_text(str(path.resolve()), "the file's name"))
        if row is None and path.is_dir():
            raise AudioError(f"{query}: a folder; give one audio file or a track of {catalog.path}")
        if row is None and not path.is_file():
            if path.exists():
                raise AudioError(f"{query}: not a track of {catalog.path}, and not a regular file (a FIFO, socket or device)")
            raise AudioError(f"{query}: neither a track of {catalog.path} nor an existing file")
    if row is not None:
        if row["embedding"] is None:
            raise AudioError(f"{row['path']}: no embedding to compare ({row['status']}{': ' + row['error'] if row['error'] else ''})")
        return Query(embedding_of(row), row["model"], row["genre"], track_summary(row))
    from .audio import source_name
    from .inference import Classifier
    from .scan import model_key

    model = model_key(bundle)
    if model not in catalog.models():
        held = ", ".join(f"{m} ({n} tracks)" for m, n in catalog.models().items()) or "none"
        raise LibraryError(f"{catalog.path} holds no track classified by {model} (it holds {held}); pass --model with the bundle it was scanned with")
    clf = Classifier.from_bundle(bundle, device)
    result = clf.classify(query, top_k=len(clf.labels), embed=True)
    if result.embedding is None:
        raise AudioError(f"{source_name(query)}: silent, nothing to compare")
    summary = {"id": None, "path": source_name(query), "status": "ok", "genre": result.label, "probability": result.top_k[0].probability,
               "top_k": [[g.label, g.probability] for g in result.top_k[:DEFAULT_TOP_K]], "duration": result.duration, "model": model,
               "error": None, "flags": flags_of(result.warnings)}  # as track_summary's
    return Query(result.embedding, model, result.label, summary)


def similar(catalog: Catalog, query: Query, k: int = DEFAULT_NEIGHBOURS, same_genre: bool = False) -> list[dict[str, Any]]:
    """The query first (similarity 1; ``id`` None for a file outside the library), then its ``k`` nearest other tracks."""
    whole_in_range("k", k, 1, MAX_NEIGHBOURS)
    search_over, genres = neighbours(catalog, query.model)
    allowed = None
    if query.id is not None or same_genre:
        allowed = np.ones(len(search_over.ids), bool)
        if query.id is not None:
            allowed &= search_over.ids != query.id
        if same_genre:
            allowed &= genres == query.genre
    found = search_over.query(query.embedding, k, allowed)
    rows = {r["id"]: r for r in catalog.tracks([i for i, _ in found])}
    return [query.track | {"similarity": 1.0, "query": True}] + [track_summary(rows[i]) | {"similarity": round(s, 6), "query": False} for i, s in found if i in rows]
