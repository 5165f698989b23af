"""Command-line interface: a thin layer over the Python API."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="acousticsense",
    help="Tell what kind of music a recording is: audio -> mel spectrogram -> ViT -> genres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[Optional[Path], typer.Option("--model", "-m", help="Model bundle directory (default: the built-in model).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")]


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def load_classifier(model: Path | None, device: str | None, **kwargs):
    """The Classifier for a bundle, or a one-line error."""
    from .bundle import BundleError
    from .inference import Classifier

    try:
        return Classifier.from_bundle(model, device=device, **kwargs)
    except BundleError as e:
        fail(str(e))
    except RuntimeError as e:  # e.g. an unavailable CUDA device
        fail(f"cannot use device {device!r}: {e}")


@app.command()
def predict(
    files: Annotated[list[Path], typer.Argument(help="Audio files (wav, flac, mp3, ogg, opus, m4a, ...).")],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Genres to report per file.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: an object for one file, an array for several.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one row per file and rank.")] = False,
    window: Annotated[Optional[float], typer.Option("--window", min=0.1, help="Window length in seconds (default: the model's).")] = None,
    hop: Annotated[Optional[float], typer.Option("--hop", min=0.1, help="Hop between windows in seconds (default: the model's).")] = None,
    max_seconds: Annotated[float, typer.Option("--max-seconds", min=1, help="Analyse at most this much of each file.")] = 1800.0,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Windows per model batch (across files).")] = 64,
) -> None:
    """Classify audio files. Exit code 0 only if every file succeeded."""
    from tqdm import tqdm

    from .inference import Failure

    if as_json and as_csv:
        fail("choose one of --json and --csv")
    clf = load_classifier(model, device, batch_size=batch_size)
    try:
        clf.preprocessing(window, hop)
    except ValueError as e:
        fail(str(e))
    results = []
    with tqdm(total=len(files), unit="file", disable=None if len(files) > 1 else True, file=sys.stderr) as bar:
        for r in clf.classify_many(files, top_k=top_k, window=window, hop=hop, max_seconds=max_seconds):
            if isinstance(r, Failure):
                tqdm.write(f"error: {r.error}", file=sys.stderr)
            results.append(r)
            bar.update()
    ok = [r for r in results if not isinstance(r, Failure)]
    if as_json:
        docs = [r.to_dict() for r in results]
        typer.echo(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2))
    elif as_csv:
        _write_csv(results)
    else:
        _print_tables(ok)
    if len(ok) < len(results):
        raise typer.Exit(1)


def _write_csv(results: list) -> None:
    from .inference import Failure

    writer = csv.writer(sys.stdout)
    writer.writerow(["source", "rank", "label", "probability", "duration", "warnings", "error"])
    for r in results:
        if isinstance(r, Failure):
            writer.writerow([r.source, "", "", "", "", "", r.error])
            continue
        codes = ";".join(w["code"] for w in r.warnings)
        if not r.top_k:
            writer.writerow([r.source, "", "", "", r.duration, codes, ""])
        for rank, g in enumerate(r.top_k, 1):
            writer.writerow([r.source, rank, g.label, f"{g.probability:.6f}", r.duration, codes, ""])


def _print_tables(results: list) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for r in results:
        table = Table(title=f"{r.source}  ({r.duration:.1f} s, {len(r.timeline)} windows)", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("genre")
        table.add_column("probability", justify="right")
        for rank, g in enumerate(r.top_k, 1):
            table.add_row(str(rank), g.label, f"{g.probability:6.1%}")
        if r.silent:
            table.add_row("-", "(silent)", "")
        console.print(table)
        for w in r.warnings:
            console.print(f"  [yellow]warning[/] {w['code']}: {w['message']}")


@app.command()
def info(bundle: Annotated[Optional[Path], typer.Argument(help="Model bundle directory (default: the built-in model).")] = None) -> None:
    """Show a model bundle's labels, preprocessing, provenance and metrics (JSON)."""
    from .bundle import DEFAULT_BUNDLE, BundleError, read_config

    try:
        config = read_config(bundle or DEFAULT_BUNDLE)
    except BundleError as e:
        fail(str(e))
    typer.echo(json.dumps(config.to_dict(), indent=2))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
