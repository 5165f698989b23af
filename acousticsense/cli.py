"""Command-line interface: a thin layer over the Python API."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import logging
import os
import re
import signal
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from .errors import AcousticSenseError, AudioError, sigterm_as_interrupt
from .options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_SECONDS,
    DEFAULT_TOP_K,
    HOP_RANGE,
    MAX_BATCH_SIZE,
    MAX_SECONDS_RANGE,
    SERVER_MAX_QUEUE,
    SERVER_MAX_SECONDS,
    SERVER_MAX_UPLOAD_MB,
)

UsageError = typer.BadParameter.__mro__[1]  # click's (typer vendors click and exports only BadParameter)


class _Commands(TyperGroup):
    """Every command's user errors become one line on stderr: exit code 1 for an input that cannot be analysed
    (:class:`AudioError`, as ``predict`` exits for a file that fails), 2 for the others (an option, a model, a
    database: any other :class:`AcousticSenseError`, a bad option value, an unknown option or command)."""

    def make_context(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - click's signature
        try:  # the options before the command (`acousticsense --bogus`)
            return super().make_context(*args, **kwargs)
        except UsageError as e:
            _usage(e)

    def invoke(self, ctx):  # noqa: ANN001, ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except AcousticSenseError as e:
            fail(" ".join(str(e).split()), code=1 if isinstance(e, AudioError) else 2)
        except UsageError as e:  # an option's value of the wrong type or out of range, an unknown option or command
            _usage(e)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM; the commands with more to say (predict, scan, train) say it first
            fail("interrupted", code=130)


def _usage(e: Exception) -> None:
    if type(e).__name__ == "NoArgsIsHelpError":  # a command given nothing: its message is the help page, shown as is
        raise e
    fail(" ".join(e.format_message().split()))


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
    typer.echo(f"error: {printable(message)}", err=True)
    raise typer.Exit(code)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: object) -> str:
    """``text`` on one line, its control characters (a newline or a terminal escape in a file name) shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


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
        fail(f"cannot load the model on {device or 'the default device'}: {e}")


def _sources(files: list[str]) -> tuple[list, bool, dict[str, str]]:
    """Paths as given, a folder being its audio files (as ``scan`` finds them); ``-`` is standard input (once).
    Also whether that makes several inputs (a folder does, whatever it holds), and why each folder with none fails."""
    if files.count("-") > 1:
        fail("'-' (standard input) can be given only once")
    if "-" in files and sys.stdin is None:
        fail("'-': standard input is closed")
    sources: list = []
    several, empty = len(files) > 1, {}
    for f in files:
        if f != "-" and os.path.isdir(f):
            from .audio import AUDIO_EXTENSIONS
            from .folders import WalkNotes, walk

            notes = WalkNotes()
            found = [state.path for state in walk(Path(f), notes)]
            for note in notes.unreadable + notes.skipped:
                typer.echo(f"warning: {printable(note)}", err=True)
            if not found:  # the folder stays an input of its own, which fails with this reason: every input is answered
                empty[f] = f"{f}: a folder with no audio files in it (by extension: {', '.join(sorted(AUDIO_EXTENSIONS))}; symbolic links are not followed)"
            sources += found or [f]
            several = True
        else:
            sources.append(sys.stdin.buffer if f == "-" else f)
    return sources, several, empty


@app.command()
def predict(
    files: Annotated[list[str], typer.Argument(help="Audio files (wav, flac, mp3, ogg, opus, m4a, ...) or folders of them; - reads standard input.", show_default=False)],
    model: ModelOpt = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Genres to report per file (at least 1).")] = DEFAULT_TOP_K,
    as_json: Annotated[bool, typer.Option("--json", help="JSON: an object for one file, an array for several.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV: one row per file and rank.")] = False,
    hop: Annotated[Optional[float], typer.Option("--hop", help=f"Hop between windows in seconds, {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} (default: the model's).")] = None,
    window: Annotated[Optional[float], typer.Option("--window", help="Window length in seconds; the model's own unless --override-window.")] = None,
    override_window: Annotated[bool, typer.Option("--override-window", help="Allow a --window other than the model's (results carry a window_override warning).")] = False,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help=f"Analyse at most this much of each file, {MAX_SECONDS_RANGE[0]:g} to {MAX_SECONDS_RANGE[1]:g} s.")] = DEFAULT_MAX_SECONDS,
    device: DeviceOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=MAX_BATCH_SIZE, help="Windows per model batch (across files).")] = DEFAULT_BATCH_SIZE,
) -> None:
    """Classify audio files. Exit code 0 only if every file succeeded.

    A file that cannot be analysed is one line on stderr (and a failure entry in --json/--csv); the others go on.
    """
    from tqdm import tqdm

    from .config import read_config
    from .decoding import DecodeAhead
    from .options import DEFAULT_BUNDLE
    from .results import Failure

    if as_json and as_csv:
        fail("choose one of --json and --csv")
    sources, several, empty = _sources(files)
    if several:
        share_cores_with_decoders()
    # torch-free: the options are checked against the bundle's config, then the files decode while torch loads
    opts = read_config(model or DEFAULT_BUNDLE).options(top_k, window, hop, max_seconds, override_window)
    try:
        with DecodeAhead(sources, opts.pre.sample_rate, opts.max_seconds, opts.pre.resampler, first_here=False) as decoded:
            out = _Output("json" if as_json else "csv" if as_csv else "table", several=several)
            failed = 0
            try:  # from here a JSON array is closed however the run ends: Ctrl-C while torch loads gives "[]", not nothing
                try:
                    clf = load_classifier(model, device, batch_size=batch_size)
                except (AcousticSenseError, typer.Exit):  # a bad model or device: its one error line, and no output at all
                    out.discard()
                    raise
                results = clf.classify_many(decoded, top_k, window, hop, max_seconds, override_window)  # checked again, by the model
                with tqdm(total=len(sources), unit="file", disable=None if several else True, file=sys.stderr) as bar:
                    for r in results:  # each result is written as it comes: an interrupted run keeps what it has done
                        if isinstance(r, Failure):
                            r = Failure(r.source, empty.get(r.source, r.error))  # a folder's reason, not "is a directory"
                            tqdm.write(f"error: {printable(r.error)}", file=sys.stderr)
                            failed += 1
                        out.write(r)
                        bar.update()
            finally:
                out.close()  # a JSON array is closed even after Ctrl-C, so what was written stays valid
    finally:  # however it ends (Ctrl-C too), the output is closed and the workers are gone
        done_cleanly()
    if failed:
        raise typer.Exit(1)


class _Output:
    """predict's stdout: a rich table per file, CSV rows, or JSON (an object for one file, an array for several)."""

    def __init__(self, kind: str, several: bool):
        self.kind, self.several, self.count = kind, several, 0
        self.csv = csv.writer(sys.stdout)

    def write(self, r) -> None:
        from .results import Failure

        with _ctrl_c_deferred():  # a result is written whole or not at all
            self._begin()
            if self.kind == "json":
                doc = json.dumps(r.to_dict(), indent=2, allow_nan=False)
                sys.stdout.write(("[\n" if not self.count else ",\n") + textwrap.indent(doc, "  ") if self.several else doc + "\n")
            elif self.kind == "csv":
                self.csv.writerows(_csv_rows(r))
            elif not isinstance(r, Failure):
                _print_table(r)
            sys.stdout.flush()
            self.count += 1

    def _begin(self) -> None:
        if self.kind == "csv" and not self.count:
            self.csv.writerow(["source", "rank", "label", "probability", "duration", "warnings", "error"])

    def discard(self) -> None:
        """Nothing is written, not even an empty array or a header: the run failed before its first file."""
        self.kind = "none"

    def close(self) -> None:
        """Ends what was written: an interrupted CSV still has its header, a JSON array its bracket."""
        self._begin()
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
    from .results import Failure

    if isinstance(r, Failure):
        return [[r.source, "", "", "", "", "", r.error]]
    codes = ";".join(w["code"] for w in r.warnings)
    if not r.top_k:
        return [[r.source, "", "", "", r.duration, codes, ""]]
    return [[r.source, rank, g.label, f"{g.probability:.6f}", r.duration, codes, ""] for rank, g in enumerate(r.top_k, 1)]


def _print_table(r) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    n = len(r.timeline)
    console.print(Text(f"{printable(r.source)}  ({r.duration:{'.1f' if r.duration >= 1 else '.2g'}} s, {n} window{'' if n == 1 else 's'})", style="italic"))  # not a table title: that wraps to the table's width
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("genre")
    table.add_column("probability", justify="right")
    for rank, g in enumerate(r.top_k, 1):
        table.add_row(str(rank), Text(g.label), f"{g.probability:6.1%}")  # Text: a label is never read as markup
    if r.silent:
        table.add_row("-", "(silent)", "")
    console.print(table)
    for w in r.warnings:
        console.print(Text.assemble("  ", ("warning", "yellow"), f" {w['code']}: {printable(w['message'])}"))


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")] = 8000,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.01, max=4096, help="Largest upload accepted (MiB); bigger gets 413.")] = SERVER_MAX_UPLOAD_MB,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help=f"Analyse at most this much of each track, {MAX_SECONDS_RANGE[0]:g} to {MAX_SECONDS_RANGE[1]:g} s.")] = SERVER_MAX_SECONDS,
    max_queue: Annotated[int, typer.Option("--max-queue", min=0, help="Requests allowed to wait for the model; more get 503.")] = SERVER_MAX_QUEUE,
    db: Annotated[Optional[Path], typer.Option("--db", help="A library database (from `scan`): adds the Library tab and /api/v1/library.")] = None,
) -> None:
    """Start the web app: the UI at /, the REST API at /api/v1, its docs at /docs."""
    import uvicorn

    from .serve import create_app

    _check_listen(host, port)  # before the model loads: a port in use is one error line, not uvicorn's after "running on"
    app = create_app(load_classifier(model, device), max_upload_mb=max_upload_mb, max_seconds=max_seconds, max_queue=max_queue, db=db)
    typer.echo(f"AcousticSense on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)", err=True)
    uvicorn.run(app, host=host, port=port)


def _check_listen(host: str, port: int) -> None:
    """Fail unless a server could listen on ``host``:``port`` now (bound as uvicorn binds, then let go)."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        fail(f"cannot listen on {host}:{port} ({e.strerror or e})")


def _ended(code: int) -> None:
    """The command has ended with ``code``: a Ctrl-C or SIGTERM during the interpreter's teardown (unloading torch
    takes a second or two) ends the process at once with that code; it made a finished command exit 130."""

    def end(*_: object) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)

    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGTERM, end)


def main() -> None:
    """Console-script entry point. After a command that marked itself done (:func:`done_cleanly`), the process
    ends without the interpreter's teardown: unloading torch alone costs about 1.5 s on 2 cores."""
    if sys.stdout is None:  # started with it closed (`>&-`): what writes there gets the one-line output error below
        sys.stdout = _ClosedOutput()
        logging.raiseExceptions = False  # a log written there (the server's access log) is dropped without a traceback
    sigterm_as_interrupt()  # a stop from systemd, docker or Slurm ends a command as Ctrl-C does (serve: uvicorn's own)
    try:
        app()
    except SystemExit as e:
        _ended(e.code if isinstance(e.code, int) else 0 if e.code is None else 1)
        if _clean_exit:
            with contextlib.suppress(OSError):  # e.g. a closed pipe (`| head`)
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else 1)
        raise
    except OSError as e:  # the output cannot be written: a full disk, a reader gone (`| head`)
        if e.errno not in OUTPUT_ERRORS:
            raise
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        if e.errno != errno.EPIPE:  # a closed pipe is the reader's choice: no message
            with contextlib.suppress(OSError, AttributeError):
                print(f"error: cannot write the output ({e.strerror})", file=sys.stderr, flush=True)
        sys.exit(1)


OUTPUT_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EFBIG, errno.EBADF)  # errors of writing, never of reading input


class _ClosedOutput(io.TextIOBase):
    """Standard output when the process started without one: a command that writes there fails with one line
    (it was an AttributeError on None); one that writes only to files (--out FILE) runs as usual."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed")


_clean_exit = False


def done_cleanly() -> None:
    """The command has written its output and closed what it opened (files, worker processes, databases):
    :func:`main` may end the process at once. Never for a command whose libraries clean up at exit (Ray)."""
    global _clean_exit
    _clean_exit = True


from . import cli_library, cli_live, cli_models, cli_train  # noqa: E402, F401 - register scan, search, similar; stream, listen, explain; info, import, pull, export; train, evaluate, synth

if __name__ == "__main__":  # python -m acousticsense.cli: run the package's module, where those commands live
    from acousticsense.cli import main as package_main

    package_main()
