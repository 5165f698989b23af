"""The library's REST API (``serve --db``): search, similar, genres and a track's audio, over a real scanned library."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from acousticsense.bundle import EXAMPLES_DIR
from acousticsense.catalog import Catalog, LibraryError
from acousticsense.scan import scan
from acousticsense.serve import create_app

CLIPS = ["blues", "classical", "folk", "jazz", "metal", "reggae"]
LIB = "/api/v1/library"
_opened: list[str] | None = None  # while a list: the paths the process opens (see watch_opens)


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: this one records only inside watch_opens


@pytest.fixture
def watch_opens() -> Iterator[list[str]]:
    global _opened
    _opened = []
    try:
        yield _opened
    finally:
        _opened = None


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """A library db made by ``scan`` (built-in model) over six example clips; the clips are in ``<db>.parent / music``."""
    root = tmp_path_factory.mktemp("library")
    music = root / "music"
    music.mkdir()
    for name in CLIPS:
        shutil.copy(EXAMPLES_DIR / f"{name}.ogg", music)
    report = scan(music, root / "library.db")
    assert report.counts["classified"] == len(CLIPS), report
    return root / "library.db"


@pytest.fixture(scope="module")
def rows(library) -> dict[str, dict]:
    """The library's tracks by clip name, as the database holds them."""
    with Catalog(library, create=False) as catalog:
        return {Path(r["path"]).stem: dict(r) | {"top_k": json.loads(r["top_k"])} for r in catalog.rows()}


@pytest.fixture(scope="module")
def client(tiny_bundle, library) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_bundle, max_seconds=5, db=library)) as c:
        yield c


def test_search_finds_the_tracks_of_a_top_genre_best_first(client, rows):
    genre = rows["jazz"]["genre"]
    r = client.get(f"{LIB}/search", params={"genre": genre})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["genre"] == genre and doc["min_prob"] is None
    expected = sorted((row for row in rows.values() if row["genre"] == genre), key=lambda row: -row["probability"])
    assert [t["path"] for t in doc["tracks"]] == [row["path"] for row in expected]
    assert doc["tracks"][0]["path"].endswith("/jazz.ogg") and all(t["genre"] == genre for t in doc["tracks"])
    assert set(doc["tracks"][0]) == {"id", "path", "status", "genre", "probability", "top_k", "duration", "model", "error", "flags"}
    assert client.get(f"{LIB}/search", params={"genre": "Polka"}).status_code == 400  # no model here knows it
    assert client.get(f"{LIB}/search", params={"genre": genre.upper()}).json() == doc  # any case, echoed as the model spells it
    long = client.get(f"{LIB}/search", params={"genre": "x" * 5000}).json()["detail"]  # echoed cut short, as explain's genre
    assert long.startswith("no model in this library knows the genre 'xxx") and "'…; they know: " in long and len(long) < 400
    assert client.get(f"{LIB}/search").json() == {"detail": "genre: Field required"}


def test_min_prob_finds_tracks_by_any_genre_of_their_distribution(client, rows):
    track = rows["classical"]
    genre, p = track["top_k"][1]  # its second genre: not its top one
    assert track["path"] not in {t["path"] for t in client.get(f"{LIB}/search", params={"genre": genre}).json()["tracks"]}
    doc = client.get(f"{LIB}/search", params={"genre": genre, "min_prob": p / 2}).json()
    assert doc["min_prob"] == pytest.approx(p / 2)
    matches = {t["path"]: t["match"] for t in doc["tracks"]}
    assert matches[track["path"]] == pytest.approx(p, abs=1e-6)
    assert all(m >= p / 2 for m in matches.values()) and list(matches.values()) == sorted(matches.values(), reverse=True)
    above = client.get(f"{LIB}/search", params={"genre": genre, "min_prob": p + 1e-4}).json()["tracks"]
    assert track["path"] not in {t["path"] for t in above} and all(t["match"] >= p + 1e-4 for t in above)
    one = client.get(f"{LIB}/search", params={"genre": genre, "min_prob": 0, "limit": 1, "offset": 1}).json()["tracks"]
    assert len(one) == 1  # every track has some probability of every genre: paging over all six


@pytest.mark.parametrize("params", [{"min_prob": "1.5"}, {"min_prob": "-0.1"}, {"min_prob": "x"}, {"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}])
def test_search_options_out_of_range_get_a_one_line_400(client, params):
    r = client.get(f"{LIB}/search", params={"genre": "Jazz"} | params)
    assert r.status_code == 400, r.text  # as every option of /api/v1 (api.one_line_errors)
    assert set(r.json()) == {"detail"} and next(iter(params)) in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_a_min_prob_that_is_no_number_says_so(client):
    r = client.get(f"{LIB}/search", params={"genre": "Jazz", "min_prob": "nan"})
    assert r.status_code == 400 and r.json() == {"detail": "min_prob: Input should be a finite number"}


def test_similar_by_id_puts_the_query_first_then_k_nearest(client, rows):
    jazz = rows["jazz"]
    r = client.get(f"{LIB}/similar", params={"track": jazz["id"], "k": 3})
    assert r.status_code == 200, r.text
    doc = r.json()
    first, *others = doc["tracks"]
    assert doc["query"] == first and first["id"] == jazz["id"] and first["query"] is True and first["similarity"] == 1.0
    assert len(others) == 3 and not any(t["query"] for t in others) and jazz["id"] not in {t["id"] for t in others}
    sims = [t["similarity"] for t in others]
    assert sims == sorted(sims, reverse=True) and all(-1 <= s < 1 for s in sims)
    everyone = client.get(f"{LIB}/similar", params={"track": jazz["id"], "k": 100}).json()["tracks"]
    assert len(everyone) == len(CLIPS) and everyone[1:4] == others  # k beyond the library: all the others
    by_path = client.get(f"{LIB}/similar", params={"path": jazz["path"], "k": 3}).json()
    assert by_path == doc
    same = client.get(f"{LIB}/similar", params={"track": jazz["id"], "same_genre": "true"}).json()["tracks"]
    assert all(t["genre"] == jazz["genre"] for t in same)


def test_similar_never_reads_a_file_the_library_does_not_list(client, library, watch_opens, tmp_path):
    outside = shutil.copy(EXAMPLES_DIR / "jazz.ogg", tmp_path / "not-in-the-library.ogg")
    watch_opens.clear()
    for path in ["/etc/passwd", str(outside), str(library.parent / "music" / ".." / "music" / "jazz.ogg")]:
        r = client.get(f"{LIB}/similar", params={"path": path})
        assert r.status_code == 404 and r.json() == {"detail": f"no track {path!r} in the library"}
    assert not [p for p in watch_opens if p.endswith(("passwd", ".ogg"))], watch_opens
    assert client.get(f"{LIB}/similar", params={"track": 999}).status_code == 404
    for params in [{}, {"track": 1, "path": "/x"}]:
        r = client.get(f"{LIB}/similar", params=params)
        assert r.status_code == 400 and r.json() == {"detail": "give either track (an id) or path"}
    assert client.get(f"{LIB}/similar", params={"track": 1, "k": 0}).status_code == 400


def test_audio_serves_only_the_files_of_library_tracks(client, rows):
    jazz = rows["jazz"]
    r = client.get(f"{LIB}/tracks/{jazz['id']}/audio")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/ogg"
    assert r.content == Path(jazz["path"]).read_bytes()
    part = client.get(f"{LIB}/tracks/{jazz['id']}/audio", headers={"Range": "bytes=0-99"})  # the player seeks
    assert part.status_code == 206 and part.content == r.content[:100]
    for odd in ("bytes=5-1", "bytes=", "items=0-9", "nonsense"):  # a range it cannot parse is ignored: the whole file
        whole = client.get(f"{LIB}/tracks/{jazz['id']}/audio", headers={"Range": odd})
        assert whole.status_code == 200 and whole.content == r.content, odd
    beyond = client.get(f"{LIB}/tracks/{jazz['id']}/audio", headers={"Range": f"bytes={len(r.content)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(r.content)}"
    assert client.get(f"{LIB}/tracks/999/audio").json() == {"detail": "no track 999 in the library"}
    assert client.get(f"{LIB}/tracks/999/audio").status_code == 404
    assert client.get(f"{LIB}/tracks/..%2F..%2Fetc%2Fpasswd/audio").status_code in (404, 422)
    assert client.get(f"{LIB}/tracks/abc/audio").json() == {"detail": "track: Input should be a valid integer, unable to parse string as an integer"}
    head = client.head(f"{LIB}/tracks/{jazz['id']}/audio")  # players and link checkers ask first: it was the page's 404
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(r.content) and not head.content
    for method in ("POST", "DELETE"):
        refused = client.request(method, f"{LIB}/tracks/{jazz['id']}/audio")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert refused.json() == {"detail": f"{method} is not allowed here: use GET or HEAD"}


def test_audio_of_a_track_whose_file_is_gone_or_a_link_is_404(client, rows, tmp_path):
    path = Path(rows["metal"]["path"])
    moved = tmp_path / "metal.ogg"
    path.rename(moved)
    try:
        r = client.get(f"{LIB}/tracks/{rows['metal']['id']}/audio")
        assert r.status_code == 404 and r.json() == {"detail": f"track {rows['metal']['id']}: its file is gone or changed since the scan"}
        path.symlink_to(moved)  # a link put in its place is not followed
        assert client.get(f"{LIB}/tracks/{rows['metal']['id']}/audio").status_code == 404
    finally:
        path.unlink(missing_ok=True)
        moved.rename(path)
    music = path.parent
    music.rename(tmp_path / "elsewhere")
    try:
        music.symlink_to(tmp_path / "elsewhere")  # nor is a link in place of its folder
        assert client.get(f"{LIB}/tracks/{rows['metal']['id']}/audio").status_code == 404
    finally:
        music.unlink(missing_ok=True)
        (tmp_path / "elsewhere").rename(music)
    assert client.get(f"{LIB}/tracks/{rows['metal']['id']}/audio").status_code == 200


def test_genres_counts_the_top_genres(client, rows):
    doc = client.get(f"{LIB}/genres").json()
    expected: dict[str, int] = {}
    for row in rows.values():
        expected[row["genre"]] = expected.get(row["genre"], 0) + 1
    assert doc == {"genres": expected, "tracks": len(CLIPS)}
    assert list(doc["genres"].values()) == sorted(doc["genres"].values(), reverse=True)


def test_the_library_is_in_the_api_docs(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {f"{LIB}/search", f"{LIB}/similar", f"{LIB}/genres", f"{LIB}/tracks/{{track}}/audio", "/api/v1/classify"} <= set(paths)
    named = set(client.get("/gradio_api/info").json()["named_endpoints"])  # the page's clicks are not an API of their own
    assert "/search" in named and not named & {"/play", "/more_like", "/picked", "/refresh"}


def test_a_bad_db_fails_at_start(tiny_bundle, tmp_path):
    with pytest.raises(LibraryError, match="no such library database"):
        create_app(tiny_bundle, db=tmp_path / "missing.db")
    (tmp_path / "notes.db").write_text("not a database\n" * 100)
    with pytest.raises(LibraryError, match="not a usable library database"):
        create_app(tiny_bundle, db=tmp_path / "notes.db")


def test_without_a_db_there_is_no_library(tiny_bundle):
    with TestClient(create_app(tiny_bundle)) as c:
        assert c.get(f"{LIB}/genres").status_code == 404
        assert "/api/v1/library/genres" not in c.get("/openapi.json").json()["paths"]


def test_the_player_escapes_what_the_library_holds():
    from acousticsense.library_ui import player_html

    player = player_html({"id": 7, "path": '/music/<img src=x onerror="alert(1)">.ogg', "genre": "R&B"})
    assert "<img" not in player and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;.ogg" in player and "(R&amp;B)" in player
    assert 'src="api/v1/library/tracks/7/audio"' in player


def test_a_file_replaced_since_the_scan_is_not_served(client, rows, tmp_path):
    path = Path(rows["folk"]["path"])
    kept = tmp_path / "folk.ogg"
    path.rename(kept)
    try:
        os.link(Path("/etc/passwd"), path)  # a hard link to another file under the track's name
        assert client.get(f"{LIB}/tracks/{rows['folk']['id']}/audio").status_code == 404
    finally:
        path.unlink(missing_ok=True)
        kept.rename(path)
    assert client.get(f"{LIB}/tracks/{rows['folk']['id']}/audio").status_code == 200


@pytest.mark.parametrize("url", [
    "/search?genre=Jazz&offset=99999999999999999999", "/similar?track=9223372036854775808", "/similar?track=-1",
    "/tracks/99999999999999999999/audio", "/tracks/-5/audio",
])
def test_ids_and_offsets_beyond_the_database_range_get_a_one_line_400(client, url):
    r = client.get(LIB + url)
    assert r.status_code == 400 and list(r.json()) == ["detail"] and "\n" not in r.json()["detail"]


def _damaged(db: Path, to: Path) -> Path:
    """A copy of ``db`` whose tracks table does not read (its first page overwritten)."""
    shutil.copy(db, to)
    with open(to, "r+b") as f:
        f.seek(2 * 4096)  # page 3: the tracks table's root
        f.write(b"\xff" * 4096)
    return to


def test_a_damaged_database_is_a_one_line_503_not_a_500(tiny_bundle, library, tmp_path):
    with TestClient(create_app(tiny_bundle, db=_damaged(library, tmp_path / "damaged.db"))) as c:
        for url in (f"{LIB}/search?genre=Jazz", f"{LIB}/genres", f"{LIB}/similar?track=1", f"{LIB}/tracks/1/audio"):
            r = c.get(url)
            assert r.status_code == 503 and r.json()["detail"].startswith("the library database cannot be read (database disk image is malformed)"), url


def test_a_damaged_row_is_a_503_naming_the_track(tiny_bundle, library, tmp_path):
    import sqlite3

    damaged = tmp_path / "rows.db"
    shutil.copy(library, damaged)
    with sqlite3.connect(damaged) as db:
        db.execute("UPDATE tracks SET top_k = 'x', embedding = x'00' WHERE id = 1")
        genre = db.execute("SELECT genre FROM tracks WHERE id = 1").fetchone()[0]
    with TestClient(create_app(tiny_bundle, db=damaged)) as c:
        for url in (f"{LIB}/search?genre={genre}", f"{LIB}/similar?track=2"):
            r = c.get(url)
            assert r.status_code == 503 and r.json()["detail"].startswith("the library database cannot be read (track 1: its "), (url, r.text)


def test_a_silent_track_is_a_422_and_an_unknown_genre_a_400(tmp_path, tiny_bundle):
    """A silent track has nothing to compare: the request's fault (422), not a database that cannot be read (503,
    which clients retry); a genre no model of the library knows is a typo to report, not "no track"."""
    music = tmp_path / "music"
    music.mkdir()
    shutil.copy(EXAMPLES_DIR / "jazz.ogg", music)
    import numpy as np
    from conftest import write_audio

    write_audio(music / "silence.wav", np.zeros((1, 22050 * 3), np.float32), 22050)
    assert scan(music, tmp_path / "lib.db").counts["silent"] == 1
    with Catalog(tmp_path / "lib.db", create=False) as catalog:
        silent = next(r["id"] for r in catalog.rows() if r["path"].endswith("silence.wav"))
    with TestClient(create_app(tiny_bundle, max_seconds=5, db=tmp_path / "lib.db")) as c:
        r = c.get(f"{LIB}/similar", params={"track": silent})
        assert r.status_code == 422 and r.json()["detail"].endswith("silence.wav: no embedding to compare (silent)")
        r = c.get(f"{LIB}/search", params={"genre": "Polka"})
        assert r.status_code == 400 and r.json()["detail"].startswith("no model in this library knows the genre 'Polka'; they know: Blues, ")
        assert c.get(f"{LIB}/search", params={"genre": "jazz"}).status_code == 200
