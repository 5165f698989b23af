"""The music-library commands of the CLI: ``scan``, ``search``, ``similar`` (and ``export --db``'s writer)."""

from __future__ import annotations

import contextlib
import csv
import json
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Optional, TextIO

import typer

from .cli import DeviceOpt, ModelOpt, app, fail, printable, share_cores_with_decoders
from .errors import OutputError
from .files import replacing
from .options import DEFAULT_MAX_SECONDS, DEFAULT_NEIGHBOURS, DEFAULT_SEARCH_LIMIT, MAX_NEIGHBOURS, MAX_SECONDS_RANGE

DbOpt = Annotated[Path, typer.Option("--db", help="The library database (SQLite).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


@app.command()
def scan(
    library: Annotated[Path, typer.Argument(help="Folder of audio files (searched recursively; symbolic links are not followed).")],
    db: Annotated[Path, typer.Option("--db", help="The library database (SQLite); made if missing.")] = Path("library.db"),
    model: ModelOpt = None,
    rescan_model: Annotated[bool, typer.Option("--rescan-model", help="Classify again the tracks another model classified.")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Try the files that failed before again.")] = False,
    write_tags: Annotated[bool, typer.Option("--write-tags", help="Write each track's top genre into its file's metadata (safely: a verified copy replaces it).")] = False,
    allow_empty: Annotated[bool, typer.Option("--allow-empty", help="Remove the tracks of a LIBRARY that holds no audio file now (refused otherwise: an unmounted drive looks empty).")] = False,
    engine: Annotated[str, typer.Option("--engine", help="local, or ray (Ray Data; pip install 'acousticsense\\[ray]').")] = "local",
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address for --engine ray (default: a local Ray).")] = None,
    device: DeviceOpt = None,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help=f"Analyse at most this much of each track, {MAX_SECONDS_RANGE[0]:g} to {MAX_SECONDS_RANGE[1]:g} s (raised, it analyses again the tracks a lower one cut short).")] = DEFAULT_MAX_SECONDS,
    as_json: JsonOpt = False,
) -> None:
    """Classify a music library into a database; rerun it to pick up changes (only new or changed files are read).

    Interrupted or killed, it loses nothing: the next run finishes the job.
    """
    from tqdm import tqdm

    share_cores_with_decoders()
    from .scan import scan as run_scan

    bar = tqdm(unit="file", file=sys.stderr, disable=None, dynamic_ncols=True)

    def total(n: int) -> None:
        bar.total = n
        bar.refresh()

    try:
        report = run_scan(
            library, db, model, rescan_model=rescan_model, retry_failed=retry_failed, write_tags=write_tags, allow_empty=allow_empty, engine=engine,
            address=address, device=device, max_seconds=max_seconds, progress=bar.update, on_total=total,
        )
    except KeyboardInterrupt:
        bar.close()
        fail(f"interrupted; what was classified is stored in {db}: run the same command again to finish", code=130)
    bar.close()
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        c = report.counts
        done = ", ".join(f"{c[k]} {k.replace('_', ' ')}" for k in ("classified", "unchanged", "moved", "copied", "failed", "silent", "removed", "retried", "skipped", "tagged", "tag_failed", "not_tagged") if c[k])
        typer.echo(f"{report.db}: {c['found']} audio file{'s' * (c['found'] != 1)} under {report.root} in {report.seconds:.1f} s ({done or 'nothing to do'})")
        if c["other_model"]:
            typer.echo(f"  {c['other_model']} tracks were classified by another model than {report.model}; --rescan-model redoes them")
        for error in report.errors:
            typer.echo(f"  {printable(error)}", err=True)
        if report.errors_not_listed:
            typer.echo(f"  ... and {report.errors_not_listed} more (each failed file's reason is in the database: "
                       f"acousticsense export --db {shlex.quote(str(db))} --csv)", err=True)
        if c["failed_before"]:
            typer.echo(f"  {c['failed_before']} of the unchanged files failed in an earlier scan", err=True)
        if (c["failed"] or c["failed_before"]) and not retry_failed:
            typer.echo("  failed files are recorded with the reason; --retry-failed tries them again", err=True)


@app.command()
def search(
    genre: Annotated[str, typer.Option("--genre", "-g", help="A genre of the model, e.g. Jazz.")],
    db: DbOpt = Path("library.db"),
    min_prob: Annotated[Optional[float], typer.Option("--min-prob", help="Tracks whose probability of GENRE is at least this, 0 to 1 (default: tracks whose top genre it is).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1_000_000, help="Tracks to list at most.")] = DEFAULT_SEARCH_LIMIT,
    as_json: JsonOpt = False,
) -> None:
    """List the library's tracks of a genre, most certain first."""
    from .catalog import Catalog, track_summary

    with Catalog(db, create=False) as catalog:
        genre, rows = catalog.search(genre, min_prob, limit)
        tracks = [track_summary(r) | ({"match": r["match"]} if min_prob is not None else {}) for r in rows]
        known = catalog.genres()
    if as_json:
        typer.echo(json.dumps({"genre": genre, "min_prob": min_prob, "tracks": tracks}, indent=2))
        return
    if not tracks:
        hint = f" (top genres in this library: {', '.join(known)})" if genre.casefold() not in {g.casefold() for g in known} else ""
        typer.echo(f"no track of {genre}{hint}", err=True)
    for t in tracks:
        typer.echo(f"{t.get('match', t['probability']):7.3f}  {printable(t['path'])}{_flagged(t)}")


@app.command()
def similar(
    track: Annotated[str, typer.Argument(metavar="TRACK", help="A track of the library (its path or id), or any audio file (classified now); - reads standard input.")],
    db: DbOpt = Path("library.db"),
    k: Annotated[int, typer.Option("-k", min=1, max=MAX_NEIGHBOURS, help="Neighbours to list.")] = DEFAULT_NEIGHBOURS,
    same_genre: Annotated[bool, typer.Option("--same-genre", help="Only tracks whose top genre is the query's.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tracks that sound most like TRACK (cosine similarity of the model's embeddings); the query comes first."""
    from .catalog import Catalog, changed_since_scan
    from .similar import resolve
    from .similar import similar as nearest

    with Catalog(db, create=False) as catalog:
        if track == "-" and sys.stdin is None:
            fail("'-': standard input is closed")
        key: Any = sys.stdin.buffer if track == "-" else int(track) if track.isascii() and track.isdigit() and not Path(track).exists() else track
        query = resolve(catalog, key, model, device)
        tracks = nearest(catalog, query, k, same_genre)
        if query.id is not None and changed_since_scan(catalog.track(query.id)):
            typer.echo(f"warning: {printable(query.track['path'])} is gone or changed since it was scanned: these are its "
                       "results from then (scan again to update them)", err=True)
    if as_json:
        typer.echo(json.dumps({"query": query.track, "tracks": tracks}, indent=2))
        return
    if len(tracks) == 1:
        typer.echo(f"no other track{' of ' + str(query.genre) if same_genre else ''} in {db} to compare with", err=True)
    for rank, t in enumerate(tracks):
        outside = " (not in the library)" if t["query"] and t["id"] is None else ""
        typer.echo(f"{'query' if t['query'] else rank:>5}  {t['similarity']:6.3f}  {t['genre'] or '-':<12} {printable(t['path'])}{outside}{_flagged(t)}")


def _flagged(track: dict[str, Any]) -> str:
    """What a listed track's line adds when the model doubted its genre (as ``--write-tags`` does: it tags none of them)."""
    from .catalog import flagged

    return f"  (flagged {flagged(track)})" if track["flags"] else ""


def export_library(db: Path, fmt: str, out: Path | None) -> int:
    """Write every track of the library as CSV or JSON (an array) to ``out`` or stdout; returns how many."""
    from .catalog import Catalog, track_record

    count = 0
    if out is not None and Path(out).resolve() == Path(db).resolve():
        fail(f"--out {out} is the database itself: choose another file")
    with Catalog(db, create=False) as catalog, (_written(Path(out), fmt) if out else contextlib.nullcontext(sys.stdout)) as f:
        if fmt == "csv":
            w = csv.writer(f)
            w.writerow(["id", "path", "status", "genre", "probability", "top_k", "duration", "model", "error", "warnings"])
        else:
            f.write("[")
        for row in catalog.rows():
            t = track_record(row)
            if fmt == "csv":  # warnings as predict --csv gives them: their codes (not_music, truncated, ...)
                top = ";".join(f"{g}:{p:.4f}" for g, p in t["top_k"])
                codes = ";".join(w["code"] for w in t["warnings"])
                w.writerow([t["id"], t["path"], t["status"], t["genre"] or "", "" if t["probability"] is None else f"{t['probability']:.6f}", top, t["duration"] or "", t["model"], t["error"] or "", codes])
            else:
                f.write(("\n  " if not count else ",\n  ") + json.dumps(t))
            count += 1
        if fmt == "json":
            f.write("\n]\n" if count else "]\n")
    return count


@contextlib.contextmanager
def _written(out: Path, fmt: str) -> Iterator[TextIO]:
    """A text file that becomes ``out`` once the block ends without an error (an interrupted export leaves no half
    file). An existing ``out`` is replaced only if it has the format's extension: ``--out song.ogg`` had overwritten a track."""
    try:
        taken = out.exists() and (out.suffix.lower() != f".{fmt}" or not out.is_file())
    except OSError as e:  # a name longer than the system allows
        fail(f"--out {out}: cannot be written ({e.strerror or e})")
    if taken:
        fail(f"--out {out}: exists and is not a .{fmt} file; not overwritten (choose a new name)")
    other = {"csv": "json", "json": "csv"}[fmt]
    if out.suffix.lower() == f".{other}":  # JSON in a .csv file would be read as CSV by the next program
        fail(f"--out {out}: a .{other} name for --{fmt} output; name it .{fmt} or use --{other}")
    try:
        with replacing(out) as tmp, open(tmp, "x", newline="") as f:  # "x": never through a file or link that appeared meanwhile
            yield f
    except OutputError as e:  # no folder there, no permission, a full disk: what the export writes is all that fails here
        fail(f"--out {e}")
