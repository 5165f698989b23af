"""Command-line interface: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .errors import AcousticSenseError
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_SECONDS,
    DEFAULT_TOP_K,
    HOP_RANGE,
    MAX_SECONDS_RANGE,
    SERVER_MAX_QUEUE,
    SERVER_MAX_SECONDS,
    SERVER_MAX_UPLOAD_MB,
)


class _Commands(TyperGroup):
    """Every command's user errors (:class:`AcousticSenseError`) become one line on stderr and exit code 2."""

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except AcousticSenseError as e:
            fail(" ".join(str(e).split()))


app = typer.Typer(
    cls=_Commands,
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


def share_cores_with_decoders() -> None:
    """For commands that decode many files in worker processes beside the model (`predict` of several files,
    `scan`): torch's OpenMP threads sleep between operations instead of spinning, so the workers get the cores
    (a folder through `predict` 1.2-1.3x faster on 2 cores). Not for `train`, whose single loop it slows by a
    quarter. Only before torch loads, and never over the user's own OMP_WAIT_POLICY."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def load_classifier(model: Path | None, device: str | None, **kwargs):
    """The Classifier for a bundle, or a one-line error."""
    from .inference import Classifier

    try:
        return Classifier.from_bundle(model, device=device, **kwargs)
    except RuntimeError as e:  # e.g. an unavailable CUDA device
        fail(f"cannot use device {device!r}: {e}")


def _sources(files: list[str]) -> list:
    """Paths as given; ``-`` is standard input (once)."""
    if files.count("-") > 1:
        fail("'-' (standard input) can be given only once")
    if "-" in files and sys.stdin is None:
        fail("'-': standard input is closed")
    return [sys.stdin.buffer if f == "-" else f for f in files]


@app.command()
def predict(
    files: Annotated[list[str], typer.Argument(help="Audio files (wav, flac, mp3, ogg, opus, m4a, ...); - reads standard input.", show_default=False)],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Genres to report per file (at least 1).")] = DEFAULT_TOP_K,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: an object for one file, an array for several.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one row per file and rank.")] = False,
    hop: Annotated[Optional[float], typer.Option("--hop", help=f"Hop between windows in seconds, {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} (default: the model's).")] = None,
    window: Annotated[Optional[float], typer.Option("--window", help="Window length in seconds; the model's own unless --override-window.")] = None,
    override_window: Annotated[bool, typer.Option("--override-window", help="Allow a --window other than the model's (results carry a window_override warning).")] = False,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help=f"Analyse at most this much of each file, {MAX_SECONDS_RANGE[0]:g} to {MAX_SECONDS_RANGE[1]:g} s.")] = DEFAULT_MAX_SECONDS,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Windows per model batch (across files).")] = DEFAULT_BATCH_SIZE,
) -> None:
    """Classify audio files. Exit code 0 only if every file succeeded.

    A file that cannot be analysed is one line on stderr (and a failure entry in --json/--csv); the others go on.
    """
    from tqdm import tqdm

    if len(files) > 1:
        share_cores_with_decoders()
    from .inference import Failure

    if as_json and as_csv:
        fail("choose one of --json and --csv")
    clf = load_classifier(model, device, batch_size=batch_size)
    results = clf.classify_many(_sources(files), top_k, window, hop, max_seconds, override_window)  # options checked here
    out = _Output("json" if as_json else "csv" if as_csv else "table", several=len(files) > 1)
    failed = 0
    try:
        with tqdm(total=len(files), unit="file", disable=None if len(files) > 1 else True, file=sys.stderr) as bar:
            for r in results:  # each result is written as it comes: an interrupted run keeps what it has done
                if isinstance(r, Failure):
                    tqdm.write(f"error: {r.error}", file=sys.stderr)
                    failed += 1
                out.write(r)
                bar.update()
    finally:
        out.close()  # a JSON array is closed even after Ctrl-C, so what was written stays valid
    if failed:
        raise typer.Exit(1)


class _Output:
    """predict's stdout: a rich table per file, CSV rows, or JSON (an object for one file, an array for several)."""

    def __init__(self, kind: str, several: bool):
        self.kind, self.several, self.count = kind, several, 0
        if kind == "csv":
            self.csv = csv.writer(sys.stdout)
            self.csv.writerow(["source", "rank", "label", "probability", "duration", "warnings", "error"])

    def write(self, r) -> None:
        from .inference import Failure

        with _ctrl_c_deferred():  # a result is written whole or not at all
            if self.kind == "json":
                doc = json.dumps(r.to_dict(), indent=2, allow_nan=False)
                sys.stdout.write(("[\n" if not self.count else ",\n") + textwrap.indent(doc, "  ") if self.several else doc + "\n")
            elif self.kind == "csv":
                self.csv.writerows(_csv_rows(r))
            elif not isinstance(r, Failure):
                _print_table(r)
            sys.stdout.flush()
            self.count += 1

    def close(self) -> None:
        if self.kind == "json" and self.several:
            sys.stdout.write("\n]\n" if self.count else "[]\n")
            sys.stdout.flush()


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[None]:
    """Hold a Ctrl-C (SIGINT) until the block is done, then raise it."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _csv_rows(r) -> list[list]:
    from .inference import Failure

    if isinstance(r, Failure):
        return [[r.source, "", "", "", "", "", r.error]]
    codes = ";".join(w["code"] for w in r.warnings)
    if not r.top_k:
        return [[r.source, "", "", "", r.duration, codes, ""]]
    return [[r.source, rank, g.label, f"{g.probability:.6f}", r.duration, codes, ""] for rank, g in enumerate(r.top_k, 1)]


def _print_table(r) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    n = len(r.timeline)
    table = Table(title=f"{r.source}  ({r.duration:.1f} s, {n} window{'' if n == 1 else 's'})", title_justify="left")
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
    from .bundle import DEFAULT_BUNDLE, read_config

    config = read_config(bundle or DEFAULT_BUNDLE)
    typer.echo(json.dumps(config.to_dict(), indent=2))


import_app = typer.Typer(help="Turn a published checkpoint into a model bundle (strict: weights must fit exactly).", no_args_is_help=True)
app.add_typer(import_app, name="import")
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")]
AggregationOpt = Annotated[str, typer.Option("--aggregation", help="Track result from windows: mean (of probabilities) or vote (share of window top-1s).")]


def _imported(run) -> None:
    """Run an import, report the bundle written or a one-line error."""
    try:
        path = run()
    except OSError as e:
        fail(str(e))
    typer.echo(f"wrote {path}; use it with: acousticsense predict --model {path} FILE")


@import_app.command("ccmusic")
def import_ccmusic(
    save_pt: Annotated[Path, typer.Argument(help="ccmusic-database/music_genre vit_b_16_mel/save.pt")],
    out: OutOpt,
    aggregation: AggregationOpt = "vote",
) -> None:
    """Import ccmusic's ViT-B/16 mel genre model (16 genres) with its preprocessing and its demo's majority vote."""
    from . import importers

    _imported(lambda: importers.import_ccmusic(save_pt, out, aggregation))


@import_app.command("torchvision")
def import_torchvision(
    state_dict: Annotated[Path, typer.Argument(help="A torchvision ViT state dict (.pt/.pth) with a Linear head.")],
    labels: Annotated[Path, typer.Option("--labels", help="Labels in output order: one a line, or a JSON list.")],
    out: OutOpt,
    arch: Annotated[Optional[str], typer.Option("--arch", help="vit_b_16, vit_s_16, vit_ti_16 or vit_mini_16 (default: from the weights).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Input size (default: from the weights, e.g. 224).")] = None,
    preprocessing: Annotated[Optional[Path], typer.Option("--preprocessing", help="JSON object of Preprocessing fields the model was trained with.")] = None,
    aggregation: AggregationOpt = "mean",
) -> None:
    """Import a torchvision ViT checkpoint. Pass the preprocessing it was trained with (--preprocessing)."""
    from . import importers
    from .errors import ParameterError
    from .features import Preprocessing

    def run():
        pre = None
        if preprocessing is not None:
            try:
                pre = Preprocessing.from_dict(json.loads(preprocessing.read_text()))
            except (json.JSONDecodeError, TypeError, AttributeError, AcousticSenseError) as e:
                raise ParameterError(f"{preprocessing.name}: invalid preprocessing ({e})") from None
        return importers.import_torchvision(state_dict, labels, out, arch, image_size, pre, aggregation)

    _imported(run)


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="A known model: ccmusic-vit_b_16_mel (`acousticsense pull --list` shows them all).")] = "",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bundle directory (default: ./NAME).")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the models pull knows and exit.")] = False,
) -> None:
    """Download a published model from the Hugging Face hub and import it."""
    from . import importers

    if list_:
        for key, entry in importers.PULLABLE.items():
            typer.echo(f"{key}\t{entry.description}")
        return
    if not name:
        fail("name a model to pull (acousticsense pull --list shows them)")
    _imported(lambda: importers.pull(name, out))


@app.command()
def export(
    bundle: Annotated[Optional[Path], typer.Argument(help="Model bundle directory (default: the built-in model).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="New bundle directory (default: model-onnx); with --db a file (default: stdout).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Only onnx for now.")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="ONNX Runtime dynamic int8 quantization (smaller; faster on some CPUs).")] = False,
    db: Annotated[Optional[Path], typer.Option("--db", help="Export a library database's tracks instead (with --csv or --json).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="With --db: CSV, one row per track.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --db: a JSON array of tracks (with timelines).")] = False,
) -> None:
    """Export a bundle to ONNX (it then runs through ONNX Runtime with `predict --model OUT`), or a library with --db."""
    if db is not None:
        from .cli_library import export_library

        if as_csv == as_json:
            fail("with --db choose one of --csv and --json")
        count = export_library(db, "csv" if as_csv else "json", out)
        typer.echo(f"{count} tracks of {db}" + (f" written to {out}" if out else ""), err=True)
        return
    if as_csv or as_json:
        fail("--csv and --json export a library: add --db LIBRARY.db")
    if fmt != "onnx":
        fail(f"--format {fmt}: only 'onnx' is supported")
    from .export import export_onnx

    out = out or Path("model-onnx")
    record = export_onnx(bundle, out, int8=int8)
    check = record["check"]
    typer.echo(
        f"wrote {out} ({record['quantization'] or 'float32'}); check on {check['files']} example clips: "
        f"max |Δp| {check['max_abs_diff']:.2g}, top-1 agreement {check['window_top1_agreement']}/{check['windows']} windows, "
        f"{check['track_top1_agreement']}/{check['files']} tracks"
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="TCP port.")] = 8000,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, max=4096, help="Largest upload accepted (MB); bigger gets 413.")] = SERVER_MAX_UPLOAD_MB,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help=f"Analyse at most this much of each track, {MAX_SECONDS_RANGE[0]:g} to {MAX_SECONDS_RANGE[1]:g} s.")] = SERVER_MAX_SECONDS,
    max_queue: Annotated[int, typer.Option("--max-queue", min=0, help="Requests allowed to wait for the model; more get 503.")] = SERVER_MAX_QUEUE,
    db: Annotated[Optional[Path], typer.Option("--db", help="A library database (from `scan`): adds the Library tab and /api/v1/library.")] = None,
) -> None:
    """Start the web app: the UI at /, the REST API at /api/v1, its docs at /docs."""
    import uvicorn

    from .serve import create_app

    app = create_app(load_classifier(model, device), max_upload_mb=max_upload_mb, max_seconds=max_seconds, max_queue=max_queue, db=db)
    typer.echo(f"AcousticSense on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", err=True)
    uvicorn.run(app, host=host, port=port)

@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="A folder per label (or with a manifest.csv), or a CSV/JSON manifest with path,label.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory: bundle, checkpoint.pt, train_log.jsonl (default: runs/DATA-ARCH).")] = None,
    arch: Annotated[Optional[str], typer.Option("--arch", help="vit_ti_16 (default), vit_mini_16, vit_s_16 or vit_b_16.")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Model input size in pixels (default 128).")] = None,
    window: Annotated[Optional[float], typer.Option("--window", min=0.1, help="Window length in seconds (default 8).")] = None,
    hop: Annotated[Optional[float], typer.Option("--hop", min=0.1, help="Hop between validation/inference windows in seconds (default 4).")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="none (default), imagenet (vit_b_16; downloads torchvision's weights) or a bundle to fine-tune.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs (default 30).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Windows per batch and process (default 32).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak AdamW learning rate (default 3e-4).")] = None,
    weight_decay: Annotated[Optional[float], typer.Option("--weight-decay", help="AdamW weight decay (default 0.05).")] = None,
    warmup_epochs: Annotated[Optional[float], typer.Option("--warmup-epochs", help="Linear warm-up before the cosine decay (default 1).")] = None,
    mixup: Annotated[Optional[float], typer.Option("--mixup", help="Mixup alpha; 0 = off (default).")] = None,
    preemphasis: Annotated[Optional[float], typer.Option("--preemphasis", help="Pre-emphasis coefficient the bundle applies before its mel (e.g. 0.97); 0 = off (default).")] = None,
    noise: Annotated[Optional[float], typer.Option("--noise", help="Share of training windows given background noise (white/pink/brown/hum/babble) at 0-30 dB SNR; 0 = off (default).")] = None,
    freq_mask: Annotated[Optional[float], typer.Option("--freq-mask", help="SpecAugment: widest frequency mask, a fraction of the mel bands; 0 = off (default 0.15).")] = None,
    time_mask: Annotated[Optional[float], typer.Option("--time-mask", help="SpecAugment: widest time mask, a fraction of the frames; 0 = off (default 0.15).")] = None,
    patience: Annotated[Optional[int], typer.Option("--patience", help="Stop after this many epochs without a better validation result; 0 = never (default 5).")] = None,
    val_fraction: Annotated[Optional[float], typer.Option("--val-fraction", help="Share of each label's tracks held out (default 0.15).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the split, the initialisation and the sampling (default 0).")] = None,
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out (--epochs/--patience may change).")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Decoding threads (default: up to 8).")] = None,
) -> None:
    """Train a model bundle (best epoch on validation) on labelled audio. Ctrl-C keeps the last epoch: --resume goes on."""
    from .train import default_out
    from .train import train as run_training

    recipe = dict(
        arch=arch, image_size=image_size, window=window, hop=hop, init=init, epochs=epochs, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, mixup=mixup, noise=noise, preemphasis=preemphasis, freq_mask=freq_mask, time_mask=time_mask, patience=patience, val_fraction=val_fraction,
        seed=seed, device=device, workers=workers,
    )  # fmt: skip
    try:
        path = run_training(data, out, resume=resume, **{k: v for k, v in recipe.items() if v is not None})
    except RuntimeError as e:  # e.g. an unavailable CUDA device
        fail(f"training failed: {e}")
    except KeyboardInterrupt:
        fail(f"interrupted; continue with: acousticsense train {data} --out {out or default_out(data, arch)} --resume", code=130)
    typer.echo(f"wrote {path}; use it with: acousticsense predict --model {path} FILE")


@app.command()
def evaluate(
    bundle: Annotated[Path, typer.Argument(help="Model bundle directory.")],
    data: Annotated[Path, typer.Argument(help="Labelled audio: a folder per label (or with a manifest.csv), or a CSV/JSON manifest.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write report.json and confusion.png here.")] = None,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=4096, help="Windows per model batch (across files).")] = DEFAULT_BATCH_SIZE,
    record: Annotated[bool, typer.Option("--record", help="Also store the headline figures in the bundle's config (metrics.held_out).")] = False,
) -> None:
    """Score a bundle on labelled audio: accuracy, macro-F1, top-5, per class, by track and by window; calibration
    (ECE, reliability diagram); how often _not_music/ tracks are flagged."""
    from .evaluate import evaluate as run_evaluation
    from .evaluate import record_metrics

    try:
        report = run_evaluation(bundle, data, out, device=device, batch_size=batch_size, progress=True)
        if record:
            record_metrics(bundle, report)
    except RuntimeError as e:
        fail(f"cannot use device {device!r}: {e}")
    t = report["tracks"]
    typer.echo(f"{report['model_id']} on {data}: {t['scored']} tracks scored ({t['failed']} failed, {t['silent']} silent)")
    for level in ("track", "window"):
        s = report[level]
        typer.echo(f"  {level:<6}  accuracy {s['accuracy']:.3f}  macro-F1 {s['macro_f1']:.3f}  top-5 {s['top5_accuracy']:.3f}  (n={s['n']})")
    c, n = report["calibration"], report["not_music"]
    typer.echo(f"  calibration (temperature {c['temperature']:.3g}): ECE {c['track_ece']:.3f} by track, {c['window_ece']:.3f} by window")
    if n["threshold"] is not None:
        shown = f"; not music flagged {n['not_music_flagged']:.3f} of {n['not_music_tracks']}" if n["not_music_tracks"] else ""
        typer.echo(f"  not-music threshold {n['threshold']:.3g}: music flagged {n['music_flagged']:.3f}{shown}"
                   + "".join(f", {k} {v:.3f}" for k, v in n["by_kind"].items()))
    worst = sorted(report["track"]["per_class"].items(), key=lambda kv: kv[1]["recall"])[:3]
    typer.echo("  lowest track recall: " + ", ".join(f"{k} {v['recall']:.2f}" for k, v in worst))
    for f in report["failures"]:
        typer.echo(f"  skipped {f['error']}", err=True)
    if out is not None:
        typer.echo(f"  report: {out / 'report.json'}, {out / 'confusion.png'}, {out / 'reliability.png'}")


@app.command()
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder for <Genre>/<slug>.NNNNN.wav, manifest.csv and manifest.json.")],
    per_genre: Annotated[int, typer.Option("--per-genre", min=1, help="Clips per genre.")] = 60,
    seconds: Annotated[float, typer.Option("--seconds", min=0.5, help="Clip length in seconds.")] = 12.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Corpus seed: same seed, same audio.")] = 0,
    genres: Annotated[Optional[list[str]], typer.Option("--genres", help="Comma-separated or repeated genre names (default: all 16).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel processes (default: one per CPU core).")] = None,
    soundfont: Annotated[Optional[list[str]], typer.Option("--soundfont", help="A General MIDI SoundFont to render with: TimGM6mb, FluidR3_GM, MuseScore_General or a .sf2/.sf3 path; repeat for a pool each clip and part draws from (default: TimGM6mb and FluidR3_GM).")] = None,
    not_music: Annotated[int, typer.Option("--not-music", min=0, help="Also this many clips of each of speech, noise and tones in _not_music/ (training teaches them as no genre).")] = 0,
) -> None:
    """Render the synthetic labelled training corpus (resumable: clips already written are kept)."""
    try:
        from .synth import GENRES, TRAIN_SOUNDFONTS, make_corpus, parse_genres
    except ImportError as e:
        fail(f"synth needs the 'synth' extra ({e}): pip install 'acousticsense[synth]' (make run/test install it)")

    names = parse_genres([g.strip() for item in genres or GENRES for g in item.split(",") if g.strip()])
    manifest = make_corpus(out_dir, per_genre, seconds=seconds, seed=seed, genres=names, workers=workers,
                           soundfonts=soundfont or TRAIN_SOUNDFONTS, not_music=not_music)
    typer.echo(f"manifest: {manifest}")


def main() -> None:
    """Console-script entry point."""
    app()


from . import cli_library, cli_live  # noqa: E402, F401 - register scan, search, similar; stream, listen, explain

if __name__ == "__main__":  # python -m acousticsense.cli: run the package's module, where those commands live
    from acousticsense.cli import main as package_main

    package_main()
