"""The live and explaining commands of the CLI: ``stream`` (a file, stdin or a URL), ``listen`` (a microphone)
and ``explain`` (where the model looked)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli import DeviceOpt, ModelOpt, app, fail, load_classifier, printable
from .options import DEFAULT_SMOOTHING, DEFAULT_TOP_K, HOP_RANGE

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON Lines: one object per window (time, start, end, top_k, smoothed, silent, latency_ms, flag).")]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", min=1, help="Genres per ranking.")]
HopOpt = Annotated[Optional[float], typer.Option("--hop", help=f"Seconds between rankings, {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} (default: the model's hop).")]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, max=256, help="CPU threads for the model, 1 to 256 (default 1: one window at a time gains little from more, and they slow it down on a busy machine)."),
]
SmoothingOpt = Annotated[
    float, typer.Option("--smoothing", help="Weight of the newest window (above 0, at most 1) in the moving average the smoothed ranking shows; 1: no smoothing.")
]


@app.command("stream")
def stream_command(
    source: Annotated[str, typer.Argument(help="An audio file, - for standard input, or an http(s)/tcp/tls URL (e.g. internet radio; no playlists).")],
    as_json: JsonOpt = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
    top_k: TopKOpt = DEFAULT_TOP_K,
    hop: HopOpt = None,
    smoothing: SmoothingOpt = DEFAULT_SMOOTHING,
    realtime: Annotated[bool, typer.Option("--realtime", help="Read no faster than real time (a file played as if live).")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Rank the genres of audio as it arrives: one line per hop, the window's ranking and a smoothed one.

    Each window is ranked once its last sample (and ~35 ms of STFT context) has arrived; rankings equal predict's timeline.
    """

    def updates() -> Iterator:
        from .live_sources import decode_stream
        from .stream import classify_stream

        if source == "-" and sys.stdin is None:
            fail("'-': standard input is closed")
        clf = _live_classifier(model, device, threads)
        rate = clf.config.preprocessing.sample_rate
        if clf.config.preprocessing.resampler != "ffmpeg":
            _warn("not_as_offline", f"{source}: this model resamples with {clf.config.preprocessing.resampler} (a stream: FFmpeg's resampler): "
                  "these rankings may differ slightly from predict's")
        chunks = decode_stream(sys.stdin.buffer if source == "-" else source, rate, allow_url=True, on_warning=_warn)  # the user typed this URL
        name = "<stdin>" if source == "-" else source
        return classify_stream(clf, _paced(chunks, rate) if realtime else chunks, top_k, smoothing, hop, name, _warn)

    _print_updates(updates, as_json)


@app.command()
def listen(
    device: Annotated[Optional[str], typer.Option("--device", help="Input device: its number or part of its name (default: the system's).")] = None,
    as_json: JsonOpt = False,
    model: ModelOpt = None,
    model_device: Annotated[Optional[str], typer.Option("--model-device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    top_k: TopKOpt = DEFAULT_TOP_K,
    hop: HopOpt = None,
    smoothing: SmoothingOpt = DEFAULT_SMOOTHING,
    list_devices: Annotated[bool, typer.Option("--list-devices", help="List the input devices and exit.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Rank the genres of what a microphone hears, one line per hop (needs pip install 'acousticsense\\[listen]')."""

    def updates() -> Iterator:
        from .live_sources import microphone_chunks
        from .stream import classify_stream

        clf = _live_classifier(model, model_device, threads)
        mic = microphone_chunks(int(device) if device and device.isdigit() else device, clf.config.preprocessing.sample_rate)
        return classify_stream(clf, mic, top_k, smoothing, hop, "microphone", _warn)

    if list_devices:
        from .live_sources import input_devices

        devices = input_devices()
        for line in devices:
            typer.echo(line)
        if not devices:
            typer.echo("no input device found (is a microphone connected?)", err=True)
        return
    _print_updates(updates, as_json)


def _warn(code: str, message: str) -> None:
    typer.echo(f"warning: {printable(message)}", err=True)


def _live_classifier(model, device: str | None, threads: int | None):  # noqa: ANN001, ANN202
    """The classifier, on the CPU with ``threads`` intra-op threads (default 1: see ``--threads``)."""
    import torch

    clf = load_classifier(model, device)
    if clf.device.type == "cpu":
        torch.set_num_threads(threads or 1)
    return clf


def _print_updates(make: Callable[[], Iterator], as_json: bool) -> None:
    """Write each update as it comes (a table line or a JSON line, flushed); Ctrl-C ends with exit code 130."""
    try:
        for n, u in enumerate(make()):
            if not as_json and not n:
                sys.stdout.write(f"{'time':>10}  {'window':<24}  smoothed\n")
            if as_json:
                line = json.dumps(u.to_dict(), allow_nan=False)
            else:
                now = f"{u.top_k[0].label} {u.top_k[0].probability:6.1%}" if u.top_k else "(silent)"
                smooth = f"{u.smoothed[0].label} {u.smoothed[0].probability:6.1%}" if u.smoothed else "-"
                line = f"{_clock(u.time):>10}  {now:<24}  {smooth}" + (f"  ({u.flag.replace('_', ' ')})" if u.flag else "")
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except BrokenPipeError:  # the reader (head, a closed terminal) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None


def _paced(chunks: Iterator, sample_rate: int) -> Iterator:
    """``chunks`` (arrays of samples) no faster than real time."""
    began, sent = time.monotonic(), 0
    for chunk in chunks:
        sent += len(chunk)
        time.sleep(max(0.0, began + sent / sample_rate - time.monotonic()))
        yield chunk


def _clock(seconds: float) -> str:
    """``h:mm:ss.s``."""
    minutes, s = divmod(seconds, 60)
    return f"{int(minutes // 60)}:{int(minutes % 60):02d}:{s:04.1f}"


@app.command()
def explain(
    file: Annotated[str, typer.Argument(help="Audio file (wav, flac, mp3, ogg, ...); - reads standard input.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write (an existing one is replaced): the spectrogram with the relevance map over it.")] = Path("map.png"),
    genre: Annotated[Optional[str], typer.Option("--genre", "-g", help="Genre to explain (default: the track's top genre).")] = None,
    method: Annotated[str, typer.Option("--method", help="grad_rollout (the most faithful, measured), rollout or input_x_grad.")] = "grad_rollout",
    as_json: Annotated[bool, typer.Option("--json", help="Also print the map as JSON (full resolution: about 0.6 MB per 10 s).")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = None,
) -> None:
    """Show which parts of the spectrogram made the model choose a genre (a relevance map, saved as a PNG)."""
    from .errors import OutputError
    from .explain import explain as explain_track
    from .explain import save_png

    if file == "-" and sys.stdin is None:
        fail("'-': standard input is closed")
    try:
        folder, parent = out.is_dir(), out.parent.is_dir()
    except OSError as e:  # a name longer than the system allows
        fail(f"--out {out}: cannot be written ({e.strerror or e})")
    if folder or not parent:
        fail(f"--out {out}: {'a folder' if folder else 'no such folder ' + str(out.parent)}; name the PNG file to write")
    if out.suffix.lower() != ".png":  # the map is written as PNG whatever the name says: m.jpg held PNG data
        fail(f"--out {out}: the map is a PNG; name the file .png")
    if not os.access(out.parent, os.W_OK):  # said before the analysis, not after it
        fail(f"--out {out}: cannot be written (the folder {out.parent} is not writable)")
    clf = load_classifier(model, device)
    e = explain_track(clf, sys.stdin.buffer if file == "-" else file, genre, method)
    try:
        save_png(e, out)
    except OutputError as err:
        fail(f"--out {err}")
    if as_json:
        typer.echo(json.dumps(e.to_dict() | {"png": str(out)}))
    else:
        typer.echo(f"{e.genre} (p = {e.probability:.3f}, {e.method}): map written to {out}")
    for code, message in e.warnings:  # on stderr, as predict --json says them: JSON on stdout stays whole
        _warn(code, message)
