"""The web app: a REST API under ``/api/v1`` and a Gradio UI at ``/``, sharing one loaded model."""

from __future__ import annotations

import io
import os
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline-friendly; must precede the gradio import

import gradio as gr
import matplotlib
import numpy as np
import torch
from fastapi import APIRouter, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from matplotlib.figure import Figure
from starlette.concurrency import run_in_threadpool

from .audio import AudioError, load_audio
from .bundle import BundleConfig
from .features import mel_filters, mel_power, power_to_db
from .inference import Classifier, Result

matplotlib.use("Agg")

DEFAULT_MAX_UPLOAD_MB = 50.0  # largest request body accepted, in MiB
DEFAULT_MAX_SECONDS = 600.0  # longer tracks are analysed up to this point (with a "truncated" warning)
DEFAULT_MAX_QUEUE = 32  # requests allowed to wait for the model; beyond that, 503
MODEL_WORKERS = 1  # classifications run at once (one already uses every core)
EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"
UI_TOP_K = 5

INTRO = """# AcousticSense
Upload or record a piece of music and a Vision Transformer tells you its genre.
**How it works:** audio → cut into overlapping windows → each window becomes a *mel spectrogram*
(a picture of which frequencies sound when, on the pitch scale our ears use) → a **ViT** reads the picture
like an image → the window predictions are averaged into the track's genres."""


class Engine:
    """The classifier, loaded once; at most :data:`MODEL_WORKERS` classifications run at a time (API and UI alike)."""

    def __init__(self, classifier: Classifier, max_seconds: float):
        self.classifier = classifier
        self.max_seconds = max_seconds
        self._slots = threading.Semaphore(MODEL_WORKERS)

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` once a model slot is free (blocking; call from a worker thread)."""
        with self._slots:
            return fn(*args, **kwargs)

    def classify(self, data: bytes, name: str, **kwargs: Any) -> Result:
        return self.run(self.classifier.classify, named_bytes(data, name), max_seconds=self.max_seconds, **kwargs)


def named_bytes(data: bytes, name: str) -> io.BytesIO:
    """An in-memory file whose name is what errors and results report as the source."""
    buf = io.BytesIO(data)
    buf.name = name
    return buf


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_mb`` MiB, by Content-Length up front and by counting what arrives."""

    def __init__(self, app: Any, max_mb: float):
        self.app, self.limit = app, int(max_mb * 2**20)
        self.detail = f"upload too large: the limit is {max_mb:g} MB"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse({"detail": self.detail}, 413)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self.detail)  # the routers turn it into the response
            return message

        await self.app(scope, counted, send)


def api_router(engine: Engine, max_queue: int) -> APIRouter:
    """``/api/v1``: classify, health, model."""
    api = APIRouter(prefix="/api/v1", tags=["api"])
    capacity = MODEL_WORKERS + max_queue
    busy = 0  # requests running or waiting; one event loop, so no lock is needed

    @api.post("/classify", summary="Classify an audio file (same JSON as `acousticsense predict --json`)")
    async def classify(
        file: Annotated[UploadFile, File(description="An audio file: wav, flac, mp3, ogg, opus, m4a, ...")],
        top_k: Annotated[int, Query(ge=1, description="Genres to report")] = 5,
        window: Annotated[Optional[float], Query(gt=0, description="Window length in seconds (default: the model's)")] = None,
        hop: Annotated[Optional[float], Query(gt=0, description="Hop between windows in seconds (default: the model's)")] = None,
    ) -> dict[str, Any]:
        nonlocal busy
        if busy >= capacity:
            raise HTTPException(503, f"server busy: {busy} requests are queued, try again shortly")
        busy += 1
        try:
            data = await file.read()
            result = await run_in_threadpool(engine.classify, data, file.filename or "upload", top_k=top_k, window=window, hop=hop)
        except AudioError as e:
            raise HTTPException(422, str(e)) from None
        except ValueError as e:  # window/hop the preprocessing refuses
            raise HTTPException(400, str(e)) from None
        finally:
            busy -= 1
            await file.close()
        return result.to_dict()

    @api.get("/health", summary="Liveness and queue state")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_id": engine.classifier.config.model_id, "busy": busy, "capacity": capacity}

    @api.get("/model", summary="The model bundle's config: labels, preprocessing, provenance, metrics")
    async def model() -> dict[str, Any]:
        return engine.classifier.config.to_dict()

    return api


def spectrogram_figure(samples: np.ndarray, classifier: Classifier) -> Figure:
    """The whole track's mel spectrogram in dB, with time and frequency axes."""
    pre = classifier.config.preprocessing
    db = power_to_db(mel_power(torch.from_numpy(samples)[None], pre), pre)[0].numpy()
    duration = len(samples) / pre.sample_rate
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(db, origin="lower", aspect="auto", cmap=pre.colormap or "magma", extent=(0, duration, 0, pre.n_mels))
    band_hz = mel_filters(pre).argmax(-1).numpy() * pre.sample_rate / pre.n_fft  # each mel band's peak frequency
    ticks = np.linspace(0, pre.n_mels - 1, 6).round().astype(int)
    ax.set_yticks(ticks + 0.5, [f"{band_hz[i]:,.0f}" for i in ticks])
    ax.set(title="Mel spectrogram: what the model sees", xlabel="time (s)", ylabel="frequency (Hz, mel scale)")
    fig.colorbar(image, ax=ax, label="dB")
    return fig


def timeline_figure(result: Result, labels: list[str]) -> Figure:
    """Each window's genre probabilities across the track (blank: silent windows), top genre marked."""
    windows = result.timeline
    centers = np.array([(w.start + w.end) / 2 for w in windows])
    edges = np.r_[windows[0].start, (centers[1:] + centers[:-1]) / 2, windows[-1].end]
    probs = np.array([[w.probabilities.get(label, np.nan) for w in windows] for label in labels])
    fig = Figure(figsize=(9, 0.35 * len(labels) + 1.5), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(edges, np.arange(len(labels) + 1) - 0.5, np.ma.masked_invalid(probs), cmap="Blues", vmin=0, vmax=1)
    top = [(c, labels.index(w.label)) for c, w in zip(centers, windows) if not w.silent]
    if top:
        ax.plot(*zip(*top), "o", color="darkorange", markersize=4)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(title="Genre per window across the track (dots: the top genre)", xlabel="time (s)", xlim=(0, edges[-1]))
    fig.colorbar(mesh, ax=ax, label="probability")
    return fig


def model_card(config: BundleConfig) -> str:
    """Markdown: what the model is, what it was trained on, how it scored on held-out data.

    Bundles made by ``acousticsense train`` / ``evaluate --record`` get a summary of their data,
    recipe and scores; any other provenance (e.g. an imported checkpoint's source) is listed as it is.
    """
    arch, pre, p, m = config.architecture, config.preprocessing, config.provenance, config.metrics
    lines = [
        "### Model card",
        f"**{config.model_id}**: `{arch['name']}` at {arch['image_size']} px, {len(config.labels)} genres: {', '.join(config.labels)}.",
        f"Windows of {pre.window_seconds:g} s every {pre.hop_seconds:g} s, {config.aggregation}-aggregated.",
    ]
    data, recipe = p.get("data"), p.get("recipe")
    if data and recipe:
        split = p.get("split", {})
        lines += [
            f"\n**Trained on** {_corpus(data)}: {split.get('train_tracks', '?')} tracks for training, {split.get('val_tracks', '?')} for validation.",
            f"Recipe: {recipe['epochs']} epochs (best: {p.get('epoch', '?')}), batch {recipe['batch_size']}, lr {recipe['lr']:g}, "
            f"init {recipe['init']}, seed {recipe['seed']}; {p.get('torch', '')}, {p.get('date', '')}.",
        ]
    else:
        lines.append("\n**Provenance**" + ("" if p else ": not recorded"))
        lines += [f"- {key}: {_short(value)}" for key, value in p.items()]
    held = m.get("held_out")
    if held:
        lines.append(
            f"\n**Held-out test** on {_corpus(held['data'])}: track accuracy {held['track_accuracy']:.1%}, "
            f"top-5 {held['track_top5_accuracy']:.1%}, macro-F1 {held['track_macro_f1']:.3f}; "
            f"window accuracy {held['window_accuracy']:.1%}."
        )
    else:
        lines.append("\n**Held-out test**: not recorded (`acousticsense evaluate BUNDLE DATA --record`).")
    if "val_track_acc" in m:
        lines.append(f"Validation (epoch {m.get('epoch', '?')}): track accuracy {m['val_track_acc']:.1%}, window accuracy {m['val_window_acc']:.1%}.")
    return "\n".join(lines)


def _corpus(data: dict[str, Any]) -> str:
    """'320 tracks in 16 genres (synthetic corpus: synth_version 1, seed 1, seconds 12.0)' from a recorded corpus description."""
    generator = ", ".join(f"{k} {v}" for k, v in data.get("manifest", {}).items() if k in ("synth_version", "seed", "seconds"))
    return f"{data['tracks']} tracks in {data['labels']} genres" + (f" (synthetic corpus: {generator})" if generator else "")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_short(v) for v in value)
    return str(value)


def build_ui(engine: Engine, examples_dir: Path = EXAMPLES_DIR) -> gr.Blocks:
    """The Gradio page: audio in; top genres, spectrogram, timeline, model card out."""
    clf = engine.classifier
    pre = clf.config.preprocessing

    def classify_and_draw(data: bytes, name: str) -> tuple[Result, Figure]:
        result = clf.classify(named_bytes(data, name), top_k=UI_TOP_K, max_seconds=engine.max_seconds)
        audio = load_audio(named_bytes(data, name), pre.sample_rate, engine.max_seconds)
        return result, spectrogram_figure(audio.samples, clf)

    def analyse(path: str | None) -> tuple[dict[str, float], Figure, Figure, str]:
        if not path:
            raise gr.Error("Upload or record a clip first.")
        try:
            result, spectrogram = engine.run(classify_and_draw, Path(path).read_bytes(), Path(path).name)
        except AudioError as e:
            raise gr.Error(str(e), duration=None, print_exception=False) from None
        notes = "\n".join(f"- **warning {w['code']}**: {w['message']}" for w in result.warnings)
        for w in result.warnings:
            gr.Warning(w["message"])
        genres = {g.label: g.probability for g in result.top_k} or {"(silent)": 1.0}
        summary = f"Analysed {result.duration:.1f} s in {len(result.timeline)} windows."
        return genres, spectrogram, timeline_figure(result, clf.labels), f"{summary}\n\n{notes}".strip()

    examples = sorted(str(p) for p in examples_dir.glob("*.ogg"))
    with gr.Blocks(title="AcousticSense", delete_cache=(600, 3600)) as ui:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Music clip", elem_id="audio-in")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                if examples:
                    gr.Examples([[p] for p in examples], inputs=audio_in, label="Example clips (one per genre)")
                gr.Markdown(model_card(clf.config))
            with gr.Column(scale=2):
                genres = gr.Label(num_top_classes=UI_TOP_K, label="Top genres", elem_id="genres")
                notes = gr.Markdown(elem_id="notes")
                spectrogram = gr.Plot(label="Mel spectrogram", show_label=False, format="png")
                timeline = gr.Plot(label="Genre timeline", show_label=False, format="png")
                gr.Image(label="Attention map", interactive=False)
                gr.Markdown("*Attention map: which parts of the spectrogram the ViT looked at (coming in a later version).*")
        button.click(analyse, inputs=audio_in, outputs=[genres, spectrogram, timeline, notes])
    return ui


def create_app(
    model: str | os.PathLike | Classifier | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_queue: int = DEFAULT_MAX_QUEUE,
    device: str | None = None,
    examples_dir: Path = EXAMPLES_DIR,
) -> FastAPI:
    """The FastAPI app: REST API at ``/api/v1``, OpenAPI docs at ``/docs``, Gradio UI at ``/``.

    ``model`` is a bundle directory (``None``: the built-in model) or a loaded classifier. Request bodies over
    ``max_upload_mb`` get 413, tracks are analysed up to ``max_seconds``, and beyond
    ``max_queue`` waiting requests the API answers 503 (the UI queue has the same bound).
    """
    classifier = model if isinstance(model, Classifier) else Classifier.from_bundle(model, device=device)
    engine = Engine(classifier, max_seconds)
    app = FastAPI(title="AcousticSense", version=version("acousticsense"), description="Music genre recognition: audio → mel spectrogram → ViT → genres.")
    app.add_middleware(BodyLimit, max_mb=max_upload_mb)

    @app.exception_handler(RequestValidationError)
    async def one_line_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query"))
        return JSONResponse({"detail": f"{where}: {first['msg']}"}, 422)

    app.include_router(api_router(engine, max_queue))
    ui = build_ui(engine, examples_dir).queue(max_size=max_queue, default_concurrency_limit=MODEL_WORKERS)
    theme = gr.themes.Soft(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])  # no web fonts: works offline
    return gr.mount_gradio_app(app, ui, path="/", max_file_size=int(max_upload_mb * 2**20), allowed_paths=[str(examples_dir)], theme=theme)
