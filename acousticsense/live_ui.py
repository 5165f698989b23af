"""The page's Live tab: the browser's microphone, streamed to a :class:`~.stream.LiveClassifier` per visitor.

Gradio sends the recording in chunks every :data:`STREAM_EVERY` seconds; each chunk is down-mixed, resampled
to the model's rate (soxr, stateful across chunks) and pushed; every hop the smoothed ranking and a rolling
timeline of the last :data:`TIMELINE_WINDOWS` windows update. A session holds a fixed ring buffer, and a
recording stops after :data:`LIVE_SECONDS` (10 minutes; the CLI's ``listen`` has no limit).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import matplotlib
import numpy as np
import soxr
from matplotlib.figure import Figure

from .api import Engine
from .audio import check_rate, pcm_to_float
from .errors import AcousticSenseError, AudioError
from .options import DEFAULT_TOP_K
from .plots import PLOT_STYLE, styled
from .stream import LiveClassifier, Update
from .ui import PLOT_WIDTH

STREAM_EVERY = 0.5  # seconds of recording per chunk the browser sends
LIVE_HOP = 1.0  # seconds between rankings (the model's hop if that is shorter)
LIVE_SECONDS = 600  # a recording ends after this long (press record again to go on). Gradio also waits up to this long for a
# stream's next chunk, holding its slot of LIVE_STREAMS: a client that goes quiet without closing holds one this long at most
LIVE_STREAMS = 8  # recordings classified at once (each holds its slot until it stops); the model work itself queues in the Engine
TIMELINE_WINDOWS = 30  # windows the rolling timeline shows
MAX_CHUNK_SECONDS = 10.0  # a longer chunk is not the page's: refused


@dataclass
class Session:
    """One visitor's recording: its resampler, its live classifier, the recent updates."""

    rate: int
    live: LiveClassifier
    resampler: soxr.ResampleStream
    recent: deque[Update] = field(default_factory=lambda: deque(maxlen=TIMELINE_WINDOWS))


def pcm_to_mono(data: np.ndarray) -> np.ndarray:
    """A browser chunk (PCM integers of any width, or floats; mono or (n, channels)) as mono float32 in [-1, 1];
    NaN and infinite samples become silence."""
    x = np.nan_to_num(pcm_to_float(np.asarray(data)).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)


def live_step(engine: Engine, session: Session | None, chunk: tuple[int, np.ndarray] | None) -> tuple[Session | None, list[Update]]:
    """Push one chunk of a recording (a new session when the rate changes or none exists); the updates it completes."""
    if chunk is None:
        return session, []
    rate, data = chunk
    check_rate(rate, "microphone")
    if len(data) > MAX_CHUNK_SECONDS * rate:  # what one chunk may cost is bounded, whatever a client sends
        raise AudioError(f"microphone: a chunk of {len(data) / rate:.1f} s; the page sends {STREAM_EVERY:g} s at a time (at most {MAX_CHUNK_SECONDS:g} s)")
    clf = engine.classifier
    target = clf.config.preprocessing.sample_rate
    if session is None or session.rate != rate:
        hop = min(LIVE_HOP, clf.config.preprocessing.hop_seconds)
        session = Session(rate, LiveClassifier(clf, DEFAULT_TOP_K, hop=hop, source="microphone"), soxr.ResampleStream(rate, target, 1, dtype="float32"))
    samples = session.resampler.resample_chunk(pcm_to_mono(data))
    updates = engine.run(session.live.push, samples) if len(samples) else []
    session.recent.extend(updates)
    return session, updates


def rolling_timeline(updates: list[Update], labels: list[str], hop: float) -> Figure:
    """The recent windows' top genre and probability at each window's end, oldest left (silent ones blank)."""
    with styled(PLOT_STYLE):
        fig = Figure(figsize=(PLOT_WIDTH, 2.6), layout="constrained")
        ax = fig.subplots()
        heard = [u for u in updates if u.top_k]
        colours = matplotlib.colormaps["tab20"]
        ax.bar([u.time for u in heard], [u.top_k[0].probability for u in heard], width=0.8 * hop, color=[colours(labels.index(u.top_k[0].label) % 20) for u in heard])
        for u in heard:
            ax.text(u.time, 0.02, u.top_k[0].label, rotation=90, ha="center", va="bottom", fontsize=9)
        last = updates[-1].time if updates else 0.0
        ax.set(xlim=(max(0.0, last - TIMELINE_WINDOWS * hop), last + hop), ylim=(0, 1), xlabel="seconds since the recording started",
               ylabel="top genre p", title="Each window's top genre")  # fmt: skip
    return fig


def live_tab(engine: Engine) -> None:
    """Add the Live tab to the page being built (call inside its ``gr.Blocks``)."""
    labels = engine.classifier.labels

    def on_chunk(chunk: tuple[int, np.ndarray] | None, session: Session | None) -> tuple[Any, ...]:
        try:
            session, updates = live_step(engine, session, chunk)
        except AcousticSenseError as e:
            return gr.skip(), gr.skip(), f"⚠️ {e}", None
        if not updates:
            return gr.skip(), gr.skip(), gr.skip(), session
        now = updates[-1]
        ranking = {g.label: g.probability for g in now.smoothed} or None
        heard = "was silent" if now.silent else "does not sound like music the model knows" if now.flag == "not_music" else "sounds like " + now.top_k[0].label
        status = f"{now.time:.0f} s heard; the last window ({now.start:.0f}–{now.end:.0f} s) {heard}."
        return ranking, rolling_timeline(list(session.recent), labels, session.live.pre.hop_seconds), status, session

    with gr.Tab("Live", id="live"):
        gr.Markdown(
            "Listen with your microphone: the genres update every second, smoothed over the last windows "
            f"(the model hears {engine.classifier.config.preprocessing.window_seconds:g} s at a time, so the first ranking "
            "comes once that much has been heard)."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="live-mic")
                status = gr.Markdown("Press record to start.", elem_id="live-status")
            with gr.Column(scale=3, min_width=320):
                ranking = gr.Label(num_top_classes=DEFAULT_TOP_K, label="Genres now (smoothed)", elem_id="live-genres")
                timeline = gr.Plot(show_label=False, container=False, format="png", elem_id="live-timeline")
        session = gr.State(None)
        mic.start_recording(lambda: (None, None, "Listening…", None), outputs=[ranking, timeline, status, session], queue=False,
                            api_visibility="private")
        mic.stream(on_chunk, [mic, session], [ranking, timeline, status, session], stream_every=STREAM_EVERY, time_limit=LIVE_SECONDS,
                   concurrency_limit=LIVE_STREAMS, show_progress="hidden")
