"""The project's errors: one base class, so callers (the CLI, the REST API) catch what a user caused and nothing else;
and how a stop request arrives (SIGTERM as Ctrl-C)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable


class AcousticSenseError(Exception):
    """Base of every error a user can cause; the message names the input or option and the reason."""


class AudioError(AcousticSenseError):
    """An input that cannot be analysed (unreadable, unsafe, empty, not audio, ...)."""


class ParameterError(AcousticSenseError):
    """An option outside its documented range (window, hop, top_k, max_seconds, ...)."""


class BundleError(AcousticSenseError):
    """A model bundle that is missing, malformed, or whose weights do not match its config."""


class TrainError(AcousticSenseError):
    """A training recipe or output directory that cannot be used (message says which and why)."""


class OutputError(AcousticSenseError):
    """A file or folder that a command's output cannot be written to (read-only, no permission, a full disk)."""


def output_folder(path: Path) -> Path:
    """``path`` made (with its parents) for a command's output, before the work: a place that cannot hold it
    (read-only, a file in the way) is an :class:`OutputError` naming it, not a traceback after the work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{path}: exists and is a file, not a folder") from None
    except OSError as e:
        raise OutputError(f"{path}: cannot create this folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):  # an existing folder on a read-only disk or of another user
        raise OutputError(f"{path}: this folder cannot be written to")
    return path


def sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM (what systemd, docker, Slurm and ``kill`` send) a ``KeyboardInterrupt`` in the main thread, so a
    stopped command ends as on Ctrl-C (its work so far kept, one line said); returns what puts the previous
    handler back. Nothing changes outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)  # None: one installed outside Python (Ray's), not restorable
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
