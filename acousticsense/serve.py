"""The web app: the REST API (:mod:`.api`, :mod:`.library_api`) and the Gradio page (:mod:`.ui`) on one server, sharing one loaded model."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from .api import create_api
from .bundle import EXAMPLES_DIR
from .inference import Classifier
from .library_api import Library, library_router
from .options import SERVER_MAX_QUEUE, SERVER_MAX_SECONDS, SERVER_MAX_UPLOAD_MB
from .ui import mount_ui


def create_app(
    model: str | os.PathLike | Classifier | None = None,
    max_upload_mb: float = SERVER_MAX_UPLOAD_MB,
    max_seconds: float = SERVER_MAX_SECONDS,
    max_queue: int = SERVER_MAX_QUEUE,
    device: str | None = None,
    examples_dir: Path = EXAMPLES_DIR,
    db: str | os.PathLike | None = None,
) -> FastAPI:
    """REST API at ``/api/v1``, its docs at ``/docs`` and ``/redoc``, the page at ``/``.

    ``model`` is a bundle directory (``None``: the built-in model) or a loaded classifier. Request bodies over
    ``max_upload_mb`` get 413, tracks are analysed up to ``max_seconds``, and beyond ``max_queue`` waiting
    requests the API answers 503 (the page's queue has the same bound).

    ``db``: a library database made by ``acousticsense scan``, opened at start-up (a missing or foreign file
    raises :class:`~.catalog.LibraryError` here): adds ``/api/v1/library`` and the page's Library tab.
    """
    library = Library(db) if db is not None else None
    app = create_api(model, max_upload_mb, max_seconds, max_queue, device)
    app.state.library = library
    if library is not None:
        app.include_router(library_router(library))
    return mount_ui(app, app.state.engine, examples_dir, max_upload_mb, max_queue, library)
