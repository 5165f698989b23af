"""What classification reports: a track's :class:`Result` (top-k, timeline, warnings) or a :class:`Failure`,
and the rules that turn window probabilities into a track's (:func:`aggregate`, :func:`track_embedding`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import AcousticSenseError, ParameterError

if TYPE_CHECKING:  # torch loads with the model: decoding workers forked before that never carry it
    import torch


FLAGS = ("not_music", "low_confidence")  # the warnings that say "do not trust this genre"


def flags_of(warnings: list[Any]) -> list[str]:
    """The :data:`FLAGS` among ``warnings`` (``{"code", "message"}`` dicts, as results and the library store them)."""
    codes = {w.get("code") for w in warnings if isinstance(w, dict)}
    return [c for c in FLAGS if c in codes]


@dataclass
class Genre:
    """One genre of a ranking and its probability."""

    label: str
    probability: float


@dataclass
class Window:
    """One analysed window of the track."""

    start: float  # seconds
    end: float
    label: str | None  # None for a silent window
    probability: float
    silent: bool
    probabilities: dict[str, float]


@dataclass
class Result:
    """What a track was classified as."""

    source: str
    model_id: str
    duration: float  # seconds analysed
    top_k: list[Genre]  # empty when the track is silent
    timeline: list[Window]
    silent: bool = False
    aggregation: str = "mean"
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"code", "message"}
    embedding: np.ndarray | None = None  # asked for with ``embed=True``: see :func:`track_embedding`

    @property
    def label(self) -> str | None:
        """The top genre, or None for a silent track."""
        return self.top_k[0].label if self.top_k else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.embedding is None:
            del d["embedding"]
        else:
            d["embedding"] = self.embedding.tolist()
        return d


@dataclass
class Failure:
    """A file that could not be classified, and why."""

    source: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guarded(name: str, step: Callable[..., Any], *args: Any) -> Any:
    """``step(*args)``, or the :class:`Failure` of ``name`` if it raises anything."""
    try:
        return step(*args)
    except Exception as e:  # noqa: BLE001 - one file's failure must not cost the others
        return Failure(name, one_line(name, e))


def one_line(name: str, e: Exception) -> str:
    """A one-line reason naming the input: the project's own message, or the unexpected error's type and text (at
    most :data:`UNFORESEEN_CHARS` of it: a library's error can run to pages)."""
    if isinstance(e, AcousticSenseError):
        return " ".join(str(e).split())
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return f"{name}: could not be analysed ({text if len(text) <= UNFORESEEN_CHARS else text[: UNFORESEEN_CHARS - 3] + '...'})"


UNFORESEEN_CHARS = 300


def aggregate(probs: torch.Tensor, rule: str) -> torch.Tensor:
    """Track-level distribution from window probabilities (N, C) of non-silent windows.

    ``mean``: the average of the window probabilities. ``vote``: the share of windows
    whose top-1 is each class, ties broken by the mean probability.
    """
    import torch

    mean = probs.mean(0)
    if rule == "mean":
        return mean
    if rule == "vote":
        votes = torch.bincount(probs.argmax(-1), minlength=probs.shape[1]).float() / len(probs)
        return votes + 1e-6 * mean  # tie-break without changing the shares visibly
    raise ParameterError(f"unknown aggregation {rule!r}")


def track_embedding(pooled: torch.Tensor, probs: torch.Tensor) -> np.ndarray:
    """A track's embedding (float32, unit length) from its windows' pooled class tokens and probabilities:
    the mean class token (unit length) beside the square root of the mean genre distribution (unit length too),
    scaled by 1/√2 — so the cosine of two tracks is the mean of their class tokens' cosine and of their genre
    distributions' Bhattacharyya coefficient. Measured in BENCHMARKS.md: same-genre precision@10 0.91 on
    unseen synthetic music, against 0.87 for the class token alone.
    """
    import torch

    token = torch.nn.functional.normalize(pooled.mean(0), dim=0)
    return (torch.cat([token, probs.mean(0).clamp(min=0).sqrt()]) / 2**0.5).numpy().astype(np.float32)
