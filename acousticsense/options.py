"""Request options shared by every surface (CLI, Python API, REST): defaults, documented ranges, the range check.

Free of heavy imports, so the CLI shows its help at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

from .errors import ParameterError

DEFAULT_BUNDLE = Path(__file__).parent / "assets" / "default_model"  # the built-in model
EXAMPLES_DIR = Path(__file__).parent / "assets" / "examples"  # one clip per genre of the built-in model
DEFAULT_TOP_K = 5
DEFAULT_SMOOTHING = 0.5  # live rankings: weight of the newest window in the moving average (1: none)
DEFAULT_BATCH_SIZE = 64  # windows per model batch (across files)
MAX_BATCH_SIZE = 4096  # the most a caller may ask for (and what an exported ONNX model's batch axis allows)
DEFAULT_MAX_SECONDS = 1800.0  # longer inputs are analysed up to this point and flagged "truncated"
MAX_WINDOWS = 4000  # per track: a longer track or a shorter hop is refused, so one request's work stays bounded
MAX_SECONDS_RANGE = (1.0, 4 * 3600.0)  # max_seconds: how much of a track is analysed
HOP_RANGE = (0.1, 3600.0)  # seconds between window starts
WINDOW_RANGE = (0.5, 60.0)  # a window length other than the bundle's (only with override_window)
DEFAULT_NEIGHBOURS = 10  # similar: tracks listed after the query
MAX_NEIGHBOURS = 1000
DEFAULT_SEARCH_LIMIT = 50  # search: tracks listed (a page of them through REST)
SYNTH_SECONDS_RANGE = (0.5, 600.0)  # a synthetic clip's length: one is rendered whole in memory (about 0.25 MB a second)
MAX_SYNTH_CLIPS = 100_000  # per genre, and of each not-music kind

# The web server: uploads are untrusted, so its limits are tighter than the library's.
SERVER_MAX_UPLOAD_MB = 50.0  # largest request body accepted, in MiB; larger gets 413
SERVER_MAX_SECONDS = 600.0  # tracks are analysed up to this point (with a "truncated" warning)
SERVER_MAX_QUEUE = 32  # requests allowed to wait for the model; beyond that, 503
SERVER_MAX_EXPLAINED = 600  # windows one explained request may have (each costs a backward pass, ~30 ms on 2 cores)


def is_number(value: Any) -> bool:
    """True for a finite real number (numpy's too), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: Any, lo: float, hi: float) -> bool:
    """True for an integer (numpy's too), not a bool, from ``lo`` to ``hi``."""
    return isinstance(value, Integral) and not isinstance(value, bool) and lo <= value <= hi


def whole_in_range(name: str, value: Any, lo: int, hi: int, unit: str = "") -> int:
    """``value`` as an int if it is a whole number from ``lo`` to ``hi``, else a :class:`ParameterError` naming ``name``."""
    if not is_whole(value, lo, hi):
        raise ParameterError(f"{name} must be a whole number{unit} from {lo:,} to {hi:,}, not {value!r}")
    return int(value)


def in_range(name: str, value: Any, bounds: tuple[float, float]) -> float:
    """``value`` as a float if it is a finite number within ``bounds`` (seconds), else a :class:`ParameterError`."""
    lo, hi = bounds
    if not is_number(value) or not lo <= value <= hi:
        raise ParameterError(f"{name} must be a number from {lo:g} to {hi:g} s, not {value!r}")
    return float(value)


def echoed(value: Any, limit: int = 60) -> str:
    """``value`` as an error message shows what a caller sent: its repr, cut at ``limit`` characters."""
    text = str(value)
    return repr(value) if len(text) <= limit else repr(text[:limit]) + "…"


def spelled_as(name: str, labels: Sequence[str]) -> str | None:
    """The label of ``labels`` that ``name`` means, in any case and with or without punctuation ("jazz" is Jazz,
    GTZAN's "hiphop" is Hip-Hop), or None where none does (or, without punctuation, more than one)."""
    for key in (str.casefold, _letters):
        found = [label for label in labels if key(label) == key(name)]
        if len(found) == 1:
            return found[0]
    return None


def _letters(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.casefold())


def label_in(genre: Any, labels: Sequence[str], unknown: str) -> str:
    """``genre`` as ``labels`` spell it (see :func:`spelled_as`). Anything else is a :class:`ParameterError`, the
    message ``unknown`` with ``{genre}`` (the value, cut at 60 characters) and ``{labels}`` filled in."""
    label = spelled_as(genre, labels) if isinstance(genre, str) else None
    if label is None:
        raise ParameterError(unknown.format(genre=echoed(genre), labels=", ".join(labels)))
    return label
