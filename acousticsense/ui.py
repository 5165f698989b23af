"""The Gradio page at ``/``: audio in; genres, spectrogram, timeline, JSON download and the model card out."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline-friendly; must precede the gradio import

import gradio as gr
import matplotlib
import numpy as np
from fastapi import FastAPI
from gradio.processing_utils import save_bytes_to_cache
from gradio_client import utils as client_utils
from matplotlib.figure import Figure
from pydantic import ValidationError

from .api import LOG, MODEL_WORKERS, Engine, named_bytes
from .bundle import DEFAULT_BUNDLE, EXAMPLES_DIR, read_config
from .errors import AcousticSenseError
from .explain import explain, relevance_figure
from .features import mel_band_hz, power_to_db
from .inference import Features
from .model_card import model_card
from .options import DEFAULT_TOP_K, SERVER_MAX_QUEUE, SERVER_MAX_UPLOAD_MB, spelled_as
from .plots import PLOT_STYLE, mark_filled, styled
from .results import Result, one_line

if TYPE_CHECKING:
    from .library_api import Library

matplotlib.use("Agg")

PLOT_WIDTH = 5.0  # inches at 100 dpi: natural size on a desktop, scaled to ~70 % on a phone

INTRO = """# AcousticSense
What kind of music is this? Upload or record a clip, or click an example: a Vision Transformer looks at its
mel spectrogram and names the genre."""

HOW_IT_WORKS = """### How it works
The audio is cut into overlapping windows; each window becomes a *mel spectrogram* (a picture of which
frequencies sound when, on the pitch scale our ears use); a **Vision Transformer** reads the picture like an
image; the windows' predictions are combined into the track's genres. The last picture shows where it looked:
the spectrogram with the parts that most raised the top genre highlighted (gradient-weighted attention rollout)."""

API_HELP = """### Use via API
The same analysis as JSON, from any program:

    curl -F file=@song.mp3 {base}/api/v1/classify

Options: `top_k`, `hop` (seconds), `explain=true` (where the model looked, as numbers; the picture:
`{base}/api/v1/explain.png`). A result's `warnings` include `not_music` (speech, noise, a tone: do not trust
the genres) and `low_confidence`. Interactive docs: [{base}/docs]({base}/docs)."""

DEMO_NOTE = "*The built-in model learned from synthetic music only: on real recordings it is a demo.*"

SCROLL_TO_RESULTS = """(summary) => {
  const results = document.getElementById("results");
  const top = results ? results.getBoundingClientRect().top : 0;
  if (summary && (top < 0 || top > 0.6 * window.innerHeight)) results.scrollIntoView({behavior: "smooth", block: "start"});
}"""

CSS = """
.matplotlib img { max-width: 100%; height: auto; }
#summary { min-height: 2.5em; }  /* room for the progress indicator */
#summary p { margin: 0.25em 0; }
"""

NOT_MUSIC_LABEL = "Not music"  # what the genre box shows for a recording flagged not_music


@dataclass(frozen=True)
class Example:
    label: str  # what the page shows: "Example 3"
    path: Path
    genre: str  # what the clip was made as, revealed with its result


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def examples_in(folder: Path, labels: list[str]) -> dict[str, Example]:
    """The clips in ``folder`` (``<genre>.ogg``) by content hash, numbered in an order that gives nothing away."""
    clips = sorted((hashlib.sha256(p.read_bytes()).hexdigest(), p) for p in folder.glob("*.ogg"))
    return {digest: Example(f"Example {i}", p, spelled_as(p.stem, labels) or p.stem) for i, (digest, p) in enumerate(clips, 1)}


def summary_text(result: Result, example: Example | None, builtin: bool) -> str:
    """Markdown above the genres: the file, what was analysed, the example's genre, the demo note, the warnings."""
    what = f"**{result.source}**: {result.duration:.1f} s analysed in {plural(len(result.timeline), 'window')}"
    if result.silent:
        lines = [f"{what}; it is silent, so no genre is named."]
    elif is_not_music(result):
        lines = [f"{what}; it does not sound like music, so no genre is named (the timeline shows what each window scored)."]
    else:
        lines = [f"{what}."]
    if example:
        lines.append(f"{example.label} was made as a **{example.genre}** piece.")
    if builtin:
        lines.append(DEMO_NOTE)
    lines += [f"- ⚠️ {w['message']} (`{w['code']}`)" for w in result.warnings]
    return "\n\n".join(lines)


def is_not_music(result: Result) -> bool:
    """Whether the model flagged the recording as not music (calibrate.warnings_for): the page names no genre then."""
    return any(w["code"] == "not_music" for w in result.warnings)


def spectrogram_figure(features: Features) -> Figure:
    """The whole track's mel spectrogram in dB (the one the model's windows are cut from), with time and frequency
    axes; what filled a clip shorter than one window is shaded."""
    pre = features.options.pre
    db = power_to_db(features.mel[None], pre)[0].cpu().numpy()
    duration = db.shape[1] * pre.hop_length / pre.sample_rate
    with styled(PLOT_STYLE):
        fig = Figure(figsize=(PLOT_WIDTH, 3.4), layout="constrained")
        ax = fig.subplots()
        image = ax.imshow(db, origin="lower", aspect="auto", cmap=pre.colormap or "magma", extent=(0, duration, 0, pre.n_mels))
        band_hz = mel_band_hz(pre)
        ticks = np.linspace(0, pre.n_mels - 1, 5).round().astype(int)
        ax.set_yticks(ticks + 0.5, [f"{band_hz[i]:,.0f}" for i in ticks])
        ax.set(title="Mel spectrogram: what the model sees", xlabel="time (s)", ylabel="frequency (Hz)")
        mark_filled(ax, features.duration, duration, features.filled)
        fig.colorbar(image, ax=ax, label="dB")
    return fig


def timeline_figure(result: Result, labels: list[str]) -> Figure:
    """Each window's genre probabilities across the track (blank: silent windows), top genre marked."""
    windows = result.timeline
    centers = np.array([(w.start + w.end) / 2 for w in windows])
    edges = np.r_[windows[0].start, (centers[1:] + centers[:-1]) / 2, windows[-1].end]
    probs = np.array([[w.probabilities.get(label, np.nan) for w in windows] for label in labels])
    with styled(PLOT_STYLE):
        fig = Figure(figsize=(PLOT_WIDTH, 0.3 * len(labels) + 1.3), layout="constrained")
        ax = fig.subplots()
        mesh = ax.pcolormesh(edges, np.arange(len(labels) + 1) - 0.5, np.ma.masked_invalid(probs), cmap="Blues", vmin=0, vmax=1)
        top = [(c, labels.index(w.label)) for c, w in zip(centers, windows) if not w.silent]
        if top:
            ax.plot(*zip(*top), "o", color="darkorange", markersize=5)
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()  # the first label on top, as in the legend of genres
        ax.set(title="Genre of each window (dots: the top one)", xlabel="time (s)", xlim=(0, edges[-1]))
        fig.colorbar(mesh, ax=ax, label="probability")
    return fig


def cleared(message: str = "") -> tuple[Any, ...]:
    """The results' outputs emptied (the download and the figures hidden): nothing stale stays on the page."""
    hidden = gr.Plot(value=None, visible=False)
    return message, None, gr.DownloadButton(value=None, visible=False), hidden, hidden, hidden


def failed(message: str, level: int = logging.INFO) -> tuple[Any, ...]:
    """A clip that cannot be classified: the reason where its result would be, one line in the server log."""
    LOG.log(level, "ui: %s", message)
    return cleared(f"⚠️ {message}")


# pydub's, each time the microphone's stream is sent a file that is not WAV: the log's line for it says so
warnings.filterwarnings("ignore", "Couldn't find ffprobe or avprobe", RuntimeWarning)
FILE_INPUTS = (gr.Audio, gr.File, gr.Image, gr.Video, gr.UploadButton, gr.Gallery, gr.Model3D)  # inputs a request can name a path for


@functools.cache
def answered_briefly(model: type) -> type:
    """``model`` (a Gradio file data model) whose validation error is a :class:`gr.Error` without a traceback."""

    def model_validate(cls: type, obj: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return super(briefly, cls).model_validate(obj, *args, **kwargs)
        except ValidationError as e:
            reason = e.errors()[0]["msg"]
            LOG.info("ui: not a file reference: %s", reason)
            raise gr.Error(f"not a file reference: {reason}", print_exception=False) from None

    briefly = type(model.__name__, (model,), {"__module__": model.__module__, "model_validate": classmethod(model_validate)})
    return briefly


def only_uploads(component: gr.components.Component, allowed_dir: Path) -> gr.components.Component:
    """Make ``component`` take only files already in Gradio's upload cache or in ``allowed_dir`` (the examples).

    Gradio copies whatever path or URL a request names into its cache before the handler runs, and a mounted
    app skips its own allowed-path check: without this, a crafted call could make the server read
    ``/etc/passwd``, block on a FIFO or fetch a URL. A value that is no file reference at all is answered with
    its reason and logged in one line (Gradio would print a traceback per call). (Wrapped on the instance: a
    subclass would make Gradio write a ``.pyi`` stub next to this module.)
    """
    allowed = (Path(component.GRADIO_CACHE).resolve(), allowed_dir.resolve())
    component.data_model = answered_briefly(component.data_model)

    def check(path: str | Path | None) -> None:
        if path is None:
            return
        name = Path(str(path)).name or str(path)
        if client_utils.is_http_url_like(str(path)):
            raise gr.Error(f"{name}: only clips uploaded to this page can be classified, not URLs", print_exception=False)
        real = Path(path).resolve()
        if not any(real.is_relative_to(d) for d in allowed) or not real.is_file():
            raise gr.Error(f"{name}: only clips uploaded to this page can be classified", print_exception=False)

    move, async_move = component.move_resource_to_block_cache, component.async_move_resource_to_block_cache

    def guarded_move(path: str | Path | None) -> str | None:
        check(path)
        return move(path)

    async def guarded_async_move(path: str | Path | None) -> str | None:
        check(path)
        return await async_move(path)

    component.move_resource_to_block_cache, component.async_move_resource_to_block_cache = guarded_move, guarded_async_move
    preprocess = component.preprocess

    def answered_preprocess(payload: Any) -> Any:  # e.g. the microphone's stream reading an upload that is not WAV
        try:
            return preprocess(payload)
        except gr.Error:
            raise
        except Exception as e:  # Gradio's own reason may be install advice for the server: logged, not sent
            name = Path(str(getattr(payload, "path", "") or "")).name or "input"
            LOG.info("ui: %s: not readable by %s: %s", name, type(component).__name__, " ".join(f"{type(e).__name__}: {e}".split()))
            raise gr.Error(f"{name}: not audio this input can read (the page sends its recordings as WAV)", print_exception=False) from None

    component.preprocess = answered_preprocess
    return component


def build_ui(engine: Engine, examples_dir: Path = EXAMPLES_DIR, library: Library | None = None) -> gr.Blocks:
    """The page: examples and audio in on the left (top on a phone), results beside it (below), model card last.

    Tabs: "Classify" (this), "Live" (the microphone, :mod:`.live_ui`) and, with a ``library``, "Library" (:mod:`.library_ui`).
    """
    clf = engine.classifier
    default_id = read_config(DEFAULT_BUNDLE).model_id
    builtin = default_id in (clf.config.model_id, clf.config.provenance.get("export", {}).get("from"))  # or its ONNX export
    examples = examples_in(examples_dir, clf.labels)

    def classify_and_draw(data: bytes, name: str) -> tuple[Result, Figure, Figure | str]:
        """One pass through the classifier's stages; the spectrogram and the relevance map (where the model
        looked for the top genre) come from the same features. Instead of a map, why there is none (a silent
        clip, an ONNX bundle)."""
        features = clf.preprocess(named_bytes(data, name), clf.options(DEFAULT_TOP_K, max_seconds=engine.max_seconds))
        result = clf.postprocess(features, clf.forward([features])[0])
        try:
            relevance: Figure | str = relevance_figure(explain(clf, features), PLOT_WIDTH)
        except AcousticSenseError as e:
            relevance = str(e)
        return result, spectrogram_figure(features), relevance

    def analyse(path: str | None) -> tuple[Any, ...]:
        if not path:
            return failed("Upload or record a clip first.")
        name, data = Path(path).name, Path(path).read_bytes()
        try:
            result, spectrogram, relevance = engine.run(classify_and_draw, data, name)
        except AcousticSenseError as e:
            return failed(str(e))
        except Exception as e:  # noqa: BLE001 - an unforeseen failure on one clip: one line, never a traceback
            return failed(one_line(name, e), logging.ERROR)
        report = save_bytes_to_cache(json.dumps(result.to_dict(), indent=1).encode(), f"{Path(name).stem}.genres.json", download.GRADIO_CACHE)
        drawn = not isinstance(relevance, str)
        unmapped = [] if drawn or result.silent else [f"No picture of where it looked: {relevance}"]  # silent: said above
        return (
            "\n\n".join([summary_text(result, examples.get(hashlib.sha256(data).hexdigest()), builtin), *unmapped]),
            NOT_MUSIC_LABEL if is_not_music(result) else {g.label: g.probability for g in result.top_k} or None,
            gr.DownloadButton(value=report, visible=True),
            gr.Plot(value=spectrogram, visible=True),
            gr.Plot(value=timeline_figure(result, clf.labels), visible=True),
            gr.Plot(value=relevance if drawn else None, visible=drawn),
        )

    def api_help(request: gr.Request) -> str:
        return API_HELP.format(base=f"{request.url.scheme}://{request.headers.get('host', 'localhost:8000')}")

    with gr.Blocks(title="AcousticSense", delete_cache=(600, 3600)) as ui:
        audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Music clip", elem_id="audio-in", render=False)
        results = [
            gr.Markdown(elem_id="summary", render=False),
            gr.Label(num_top_classes=DEFAULT_TOP_K, label="Top genres", elem_id="genres", render=False),
            gr.DownloadButton("Download the result (JSON)", visible=False, size="sm", elem_id="download", render=False),
            gr.Plot(label="Mel spectrogram", show_label=False, container=False, format="png", visible=False, elem_id="spectrogram", render=False),
            gr.Plot(label="Genre timeline", show_label=False, container=False, format="png", visible=False, elem_id="timeline", render=False),
            gr.Plot(label="What the model looked at", show_label=False, container=False, format="png", visible=False, elem_id="relevance", render=False),
        ]
        summary, download = results[0], results[2]
        gr.Markdown(INTRO)
        with gr.Tab("Classify", id="classify"):
            with gr.Row():
                with gr.Column(scale=2, min_width=320):  # on a phone: examples, clip, Classify, then the results right below
                    if examples:
                        gr.Examples(
                            [[str(e.path)] for e in examples.values()], inputs=audio_in, outputs=results, fn=analyse, run_on_click=True,
                            cache_examples=False, example_labels=[e.label for e in examples.values()], examples_per_page=len(examples),
                            label="Examples: click one to classify it",
                        )  # fmt: skip
                    audio_in.render()
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column(scale=3, min_width=320, elem_id="results"):
                    for component in results:
                        component.render()
            with gr.Row():
                with gr.Column(min_width=320):
                    gr.Markdown(HOW_IT_WORKS)
                    api_md = gr.Markdown(API_HELP.format(base="http://localhost:8000"), elem_id="api-help")
                with gr.Column(min_width=320):
                    gr.Markdown(model_card(clf.config), elem_id="model-card")
        from .live_ui import live_tab

        live_tab(engine)
        if library:
            from .library_ui import library_tab

            library_tab(library)
        internal = {"queue": False, "show_progress": "hidden", "api_visibility": "private"}  # page upkeep, not in the API docs
        audio_in.change(cleared, outputs=results, **internal)
        button.click(cleared, outputs=results, **internal).then(analyse, audio_in, results, show_progress_on=summary, api_name="classify")
        summary.change(None, summary, js=SCROLL_TO_RESULTS)
        ui.load(api_help, outputs=api_md, **internal)
    for block in {id(b): b for fn in ui.fns.values() for b in fn.inputs if isinstance(b, FILE_INPUTS)}.values():
        only_uploads(block, examples_dir)  # every tab's file inputs (the Live tab's microphone too), not only the first one
    return ui


def mount_ui(
    app: FastAPI,
    engine: Engine,
    examples_dir: Path = EXAMPLES_DIR,
    max_upload_mb: float = SERVER_MAX_UPLOAD_MB,
    max_queue: int = SERVER_MAX_QUEUE,
    library: Library | None = None,
) -> FastAPI:
    """Mount the page at ``/`` on ``app``; it shares ``engine``'s model slot, and its queue has the API's bound."""
    ui = build_ui(engine, examples_dir, library).queue(max_size=max_queue, default_concurrency_limit=MODEL_WORKERS)
    theme = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    return gr.mount_gradio_app(
        app, ui, path="/", max_file_size=int(max_upload_mb * 2**20), allowed_paths=[str(examples_dir)], theme=theme, css=CSS,
        footer_links=["gradio", "settings"],  # not "api": Gradio's own API page documents its internal endpoint, not /api/v1
    )  # fmt: skip
