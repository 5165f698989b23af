"""The REST API: ``/api/v1`` (classify, explain.png, health, model), upload and queue limits, offline docs. No Gradio here."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from importlib.metadata import version
from typing import Annotated, Any, Callable, Optional

from fastapi import APIRouter, Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from .errors import AcousticSenseError, ParameterError
from .explain import Explanation, explain, known_genre, relevance_png
from .inference import Classifier
from .options import DEFAULT_TOP_K, HOP_RANGE, SERVER_MAX_EXPLAINED, SERVER_MAX_QUEUE, SERVER_MAX_SECONDS, SERVER_MAX_UPLOAD_MB, WINDOW_RANGE, echoed
from .results import Result, one_line

MODEL_WORKERS = 1  # classifications run at once (one already uses every core)
EXPLAIN_BANDS, EXPLAIN_COLUMNS = 32, 256  # ?explain=true: the map summed into at most this many mel bands × time columns
RETRY_AFTER_SECONDS = 2  # what a 503 (busy) asks a client to wait before it tries again
LOG = logging.getLogger("uvicorn.error")  # the server's log: one line per event, next to uvicorn's own
# a malformed multipart body is the client's 400 (its reason in the answer), not an unprefixed warning line in our log
logging.getLogger("python_multipart.multipart").setLevel(logging.ERROR)


class ClientGone(Exception):
    """The client of a queued request hung up before a model slot came free: its work is not done."""


class Engine:
    """The classifier, loaded once; at most :data:`MODEL_WORKERS` classifications run at a time (API and UI alike)."""

    def __init__(self, classifier: Classifier, max_seconds: float):
        self.classifier = classifier
        self.max_seconds = max_seconds
        self._slots = threading.Semaphore(MODEL_WORKERS)

    def run(self, fn: Callable[..., Any], *args: Any, gone: threading.Event | None = None, **kwargs: Any) -> Any:
        """Call ``fn`` once a model slot is free (blocking; call from a worker thread); :class:`ClientGone`
        instead if ``gone`` was set while it waited."""
        with self._slots:
            if gone is not None and gone.is_set():
                raise ClientGone
            return fn(*args, **kwargs)

    def classify(self, data: bytes, name: str, gone: threading.Event | None = None, **kwargs: Any) -> Result:
        return self.run(self.classifier.classify, named_bytes(data, name), gone=gone, max_seconds=self.max_seconds, **kwargs)

    def explained(
        self, data: bytes, name: str, genre: str | None = None, top_k: int = DEFAULT_TOP_K, silent_ok: bool = False,
        gone: threading.Event | None = None, **kwargs: Any
    ) -> tuple[Result, Explanation | None]:
        """The result and the relevance map (for ``genre``, default the top one) from one decode of the upload.
        A silent upload has nothing to explain: an error, or with ``silent_ok`` the result and no map."""

        def run() -> tuple[Result, Explanation | None]:
            clf = self.classifier
            features = clf.preprocess(named_bytes(data, name), clf.options(top_k, max_seconds=self.max_seconds, **kwargs))
            if len(features.starts) > SERVER_MAX_EXPLAINED:
                raise ParameterError(
                    f"{name}: {len(features.starts)} windows to explain, more than the {SERVER_MAX_EXPLAINED} one request may "
                    "have (each costs a backward pass); explain a shorter clip (with classify?explain=true: or a longer hop), or use the CLI's `explain` command"
                )
            result = clf.postprocess(features, clf.forward([features])[0])
            return result, None if result.silent and silent_ok else explain(clf, features, genre)

        return self.run(run, gone=gone)


def named_bytes(data: bytes, name: str) -> io.BytesIO:
    """An in-memory file whose name is what errors and results report as the source."""
    buf = io.BytesIO(data)
    buf.name = name
    return buf


UPLOAD_IDLE_SECONDS = 30.0  # a request body that stops arriving for this long is answered 408 and its connection let go


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_mb`` MiB, by Content-Length up front and by counting what
    arrives; 408 for a body that stalls (a client sending a byte now and then held a connection and its partial
    upload for ever: uploads count towards ``--max-queue`` only once they have arrived)."""

    def __init__(self, app: Any, max_mb: float):
        self.app, self.limit, self.idle = app, int(max_mb * 2**20), UPLOAD_IDLE_SECONDS
        self.detail = f"upload too large: the limit is {max_mb:g} MiB"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse({"detail": self.detail}, 413)(scope, receive, send)
        seen, arrived = 0, False

        async def counted() -> dict:
            nonlocal seen, arrived
            if arrived:  # after the body: waiting for the client to hang up (while its request is analysed) is no stall
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle)
            except TimeoutError:
                raise HTTPException(408, f"upload stalled: nothing arrived for {self.idle:g} s") from None
            arrived = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self.detail)  # the routers turn it into the response
            return message

        await self.app(scope, counted, send)


def options_once(request: Request) -> None:
    """Refuse a query option given more than once (``?top_k=2&top_k=3``: which one counts is not the caller's guess
    to make) or one the endpoint does not have (``?topk=1`` would have been ignored: the defaults, silently)."""
    repeated = sorted({key for key in request.query_params if len(request.query_params.getlist(key)) > 1})
    if repeated:
        raise HTTPException(400, f"{', '.join(map(clipped, repeated[:5]))}: given more than once; give each option once")
    route = request.scope.get("route")
    if isinstance(route, APIRoute):
        known = _query_options(route.dependant)
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise HTTPException(400, f"{', '.join(map(clipped, unknown[:5]))}: not an option of {route.path} (it takes {', '.join(sorted(known)) or 'none'})")


def clipped(name: str) -> str:
    """A field or option name the client sent, as an error message shows it (cut: it is the client's text)."""
    return name if len(name) <= 40 and name.isprintable() else echoed(name, 40)


def _query_options(dependant: Dependant) -> set[str]:
    """The query options an endpoint declares, its dependencies' included."""
    return {param.alias for param in dependant.query_params}.union(*(_query_options(d) for d in dependant.dependencies))


UPLOAD_RESPONSES = {408: {"description": "The upload stopped arriving"}, 413: {"description": "The upload is over --max-upload-mb"},
                    503: {"description": "Too many requests running or waiting"}}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
HOW_TO_POST = "POST the audio as the form field 'file'"


def other_methods_405(router: APIRouter) -> APIRouter:
    """Each route of ``router`` answers HEAD as GET where it takes GET, and the methods it does not take with 405
    and ``Allow``, not the 404 of the page mounted at ``/`` (which a client reads as "no such endpoint")."""
    for route in [r for r in router.routes if isinstance(r, APIRoute)]:
        path = route.path.removeprefix(router.prefix)
        allowed = [m for m in METHODS if m in route.methods or (m == "HEAD" and "GET" in route.methods)]
        if "HEAD" in allowed and "HEAD" not in route.methods:  # a route of its own: the docs list GET once
            router.add_api_route(path, route.endpoint, methods=["HEAD"], response_class=route.response_class, include_in_schema=False)
        router.add_api_route(path, _refusal(allowed), methods=[m for m in METHODS if m not in allowed], include_in_schema=False)
    return router


def _refusal(allowed: list[str]) -> Callable[[Request], Any]:
    """An endpoint answering 405 with ``Allow: allowed``."""
    hint = HOW_TO_POST if allowed == ["POST"] else f"use {' or '.join(allowed)}"

    async def refuse(request: Request) -> None:
        raise HTTPException(405, f"{request.method} is not allowed here: {hint}", headers={"Allow": ", ".join(allowed)})

    return refuse


def api_router(engine: Engine, max_queue: int) -> APIRouter:
    """``/api/v1``: classify (optionally explained), explain.png, health, model."""
    api = APIRouter(prefix="/api/v1", tags=["api"], dependencies=[Depends(options_once)])
    capacity = MODEL_WORKERS + max_queue
    busy = 0  # requests running or waiting; one event loop, so no lock is needed

    @api.post(
        "/classify",
        summary="Classify an audio file (same JSON as `acousticsense predict --json`)",
        responses={
            400: {"description": "An option out of range"},
            422: {"description": "A file that cannot be analysed"},
            **UPLOAD_RESPONSES,
        },
    )
    async def classify(
        request: Request,
        file: Annotated[UploadFile, File(description="An audio file: wav, flac, mp3, ogg, opus, m4a, ...")],
        top_k: Annotated[int, Query(description="Genres to report", json_schema_extra={"minimum": 1})] = DEFAULT_TOP_K,
        window: Annotated[Optional[float], Query(description=f"Window length in seconds, {WINDOW_RANGE[0]:g} to {WINDOW_RANGE[1]:g} (default: the model's; another needs override_window)")] = None,
        hop: Annotated[Optional[float], Query(description=f"Hop between windows in seconds, {HOP_RANGE[0]:g} to {HOP_RANGE[1]:g} (default: the model's)")] = None,
        override_window: Annotated[bool, Query(description="Allow a window other than the model's (flagged `window_override`)")] = False,
        explain: Annotated[bool, Query(description=f"Also return `explanation`: where the model looked, summed into ≤ {EXPLAIN_BANDS} mel bands × ≤ {EXPLAIN_COLUMNS} time columns")] = False,
        genre: Annotated[Optional[str], Query(description="With explain: the genre to explain (default: the top one)")] = None,
    ) -> dict[str, Any]:
        await one_file(request)
        if genre is not None and not explain:
            raise HTTPException(400, "genre: only used with explain=true (the genre to explain)")
        options = dict(top_k=top_k, window=window, hop=hop, override_window=override_window)
        try:  # before the upload queues, in the words the command line uses for the same value
            engine.classifier.config.options(max_seconds=engine.max_seconds, **options)
        except ParameterError as e:
            raise HTTPException(400, str(e)) from None
        if not explain:
            return (await guarded(request, file, engine.classify, **options)).to_dict()
        result, explanation = await guarded(request, file, engine.explained, genre=checked_genre(genre), silent_ok=True, **options)
        return result.to_dict() | {"explanation": explanation and explanation.to_dict(EXPLAIN_BANDS, EXPLAIN_COLUMNS)}

    @api.post(
        "/explain.png",
        summary="Where the model looked: the spectrogram with the relevance map over it, as a PNG",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 400: {"description": "An unknown genre"}, 422: {"description": "A file that cannot be analysed"},
                   **UPLOAD_RESPONSES},
    )
    async def explain_png(
        request: Request,
        file: Annotated[UploadFile, File(description="An audio file: wav, flac, mp3, ogg, opus, m4a, ...")],
        genre: Annotated[Optional[str], Query(description="The genre to explain (default: the top one)")] = None,
    ) -> Response:
        await one_file(request)
        _, explanation = await guarded(request, file, engine.explained, genre=checked_genre(genre))
        return Response(await run_in_threadpool(relevance_png, explanation), media_type="image/png")

    async def one_file(request: Request) -> None:
        """Refuse a form that is not one ``file`` field: several (only one would be analysed) or other fields beside it
        (an option sent in the form, ``-F top_k=3``, would be ignored: the defaults, silently). The form is parsed."""
        form = await request.form()
        if len(form.getlist("file")) > 1:
            raise HTTPException(400, "file: send one file per request (this one has several)")
        other = sorted(set(form) - {"file"})
        if other:
            raise HTTPException(400, f"{', '.join(map(clipped, other[:5]))}: not a form field of {request.scope['route'].path} (the form carries "
                                     "only 'file'; options go in the query string, e.g. ?top_k=3)")

    def checked_genre(genre: str | None) -> str | None:
        """The genre to explain, refused before the upload queues for the model if the model does not know it."""
        try:
            return known_genre(engine.classifier, genre)
        except ParameterError as e:
            raise HTTPException(400, f"genre: {e}") from None

    async def guarded(request: Request, file: UploadFile, work: Callable[..., Any], **options: Any) -> Any:
        """``work(data, name, **options)`` in a worker thread within the queue bound; errors as one-line 400/422/503.
        A request whose client hangs up while it waits for the model is dropped, not analysed for nobody."""
        nonlocal busy
        if busy >= capacity:
            raise HTTPException(503, f"server busy: {busy} requests running or waiting (at most {capacity}), try again shortly",
                                headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        busy += 1
        name = file.filename or "upload"
        gone = threading.Event()
        watch = asyncio.create_task(watch_disconnect(request, gone))
        try:
            return await run_in_threadpool(work, await file.read(), name, gone=gone, **options)
        except ClientGone:
            raise HTTPException(499, "the client closed the request before it was analysed") from None
        except ParameterError as e:
            raise HTTPException(400, str(e)) from None
        except AcousticSenseError as e:
            raise HTTPException(422, str(e)) from None
        except Exception as e:  # noqa: BLE001 - an unforeseen failure on one upload is that upload's 422, never a 500
            detail = one_line(name, e)
            LOG.error(detail)
            raise HTTPException(422, detail) from None
        finally:
            watch.cancel()
            busy -= 1
            await file.close()

    @api.get("/health", summary="Liveness and queue state")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model_id": engine.classifier.config.model_id, "busy": busy, "capacity": capacity}

    @api.get("/model", summary="The model bundle's config: labels, preprocessing, provenance, metrics")
    async def model() -> dict[str, Any]:
        return engine.classifier.config.to_dict()

    return other_methods_405(api)


async def watch_disconnect(request: Request, gone: threading.Event, every: float = 0.25) -> None:
    """Set ``gone`` once the client of ``request`` (its body already read) has disconnected."""
    while not await request.is_disconnected():
        await asyncio.sleep(every)
    gone.set()


async def one_line_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request FastAPI cannot parse: 400 for a bad option (query or path), 422 for a bad or missing file, one line of detail."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p not in ("body", "query", "path"))
    if where == "file" and first["type"] == "missing":  # -F audio=@x, or a raw body
        message = f"missing: {HOW_TO_POST} of a multipart/form-data upload (curl -F file=@song.mp3)"
    else:
        message = "send the audio as a file upload (multipart/form-data)" if "UploadFile" in first["msg"] else first["msg"]
    return JSONResponse({"detail": f"{where}: {message}"}, 400 if first["loc"][0] in ("query", "path") else 422)


def create_api(
    model: str | os.PathLike | Classifier | None = None,
    max_upload_mb: float = SERVER_MAX_UPLOAD_MB,
    max_seconds: float = SERVER_MAX_SECONDS,
    max_queue: int = SERVER_MAX_QUEUE,
    device: str | None = None,
) -> FastAPI:
    """The REST API at ``/api/v1`` with its docs at ``/docs`` and ``/redoc`` (assets served locally, no CDN).

    ``model`` is a bundle directory (``None``: the built-in model) or a loaded classifier; the app's
    ``state.engine`` holds it for other front ends. Request bodies over ``max_upload_mb`` get 413, tracks
    are analysed up to ``max_seconds``, and beyond ``max_queue`` waiting requests the API answers 503.
    """
    classifier = model if isinstance(model, Classifier) else Classifier.from_bundle(model, device=device)
    classifier.options(max_seconds=max_seconds)  # a bad server setting fails here, not on every request
    app = FastAPIOffline(
        title="AcousticSense", version=version("acousticsense"), description="Music genre recognition: audio → mel spectrogram → ViT → genres."
    )
    app.state.engine = Engine(classifier, max_seconds)
    app.add_middleware(BodyLimit, max_mb=max_upload_mb)
    app.add_exception_handler(RequestValidationError, one_line_errors)
    app.include_router(api_router(app.state.engine, max_queue))
    return app
