"""The page's Library tab: search the scanned library by genre, “more like this”, play a track, the genre chart.

The player is an HTML ``<audio>`` element on ``/api/v1/library/tracks/{id}/audio`` (:mod:`.library_api`): the
browser streams the original file (seekable), Gradio serves no library file and its allowed paths stay as they are.
"""

from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .catalog import flagged
from .errors import AcousticSenseError
from .library_api import Library
from .plots import PLOT_STYLE, styled
from .ui import PLOT_WIDTH, plural

UI_LIMIT = 200  # tracks a search shows
UI_K = 10  # similar tracks shown
RESULT_COLUMNS = ["id", "path", "genre", "probability", "flagged"]
SIMILAR_COLUMNS = ["rank", "id", "path", "genre", "similarity", "flagged"]


def genre_chart(counts: dict[str, int]) -> Figure:
    """Horizontal bars: tracks per top genre, most common on top."""
    with styled(PLOT_STYLE):
        fig = Figure(figsize=(PLOT_WIDTH, 0.3 * max(len(counts), 1) + 1.3), layout="constrained")
        ax = fig.subplots()
        bars = ax.barh(list(counts), list(counts.values()), color="tab:blue")
        ax.bar_label(bars, padding=3)
        ax.invert_yaxis()
        ax.set(title=f"The library: {plural(sum(counts.values()), 'track')} by top genre", xlabel="tracks")
        ax.margins(x=0.12)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def player_html(track: dict[str, Any]) -> str:
    """An audio player for a library track, streamed from the REST API (relative URL: works behind a path prefix)."""
    name = html.escape(track["path"])
    return (
        f'<figure style="margin:0"><figcaption>▶ <b>{name}</b> ({html.escape(str(track["genre"]))})</figcaption>'
        f'<audio controls preload="metadata" style="width:100%" src="api/v1/library/tracks/{int(track["id"])}/audio"></audio></figure>'
    )


def row_id(evt: gr.SelectData, column: int) -> int | None:
    """The track id in a clicked table row (what the browser sent: only ever looked up in the library)."""
    try:
        return int(evt.row_value[column])
    except (TypeError, ValueError, IndexError):
        return None


def library_tab(library: Library) -> None:
    """Add the Library tab to the page being built (call inside its ``gr.Blocks``, after the Classify tab)."""

    def refresh(chosen: str | None) -> tuple[Any, Any]:
        """The genres and the chart as the library is now (a scan may be adding tracks)."""
        try:
            counts = library.genres()
        except AcousticSenseError:  # a damaged database: the search below says so
            counts = {}
        choices = [(f"{g} ({n})", g) for g, n in counts.items() if g]
        value = chosen or (choices[0][1] if choices else None)
        return gr.Dropdown(choices=choices, value=value), gr.Plot(value=genre_chart(counts), visible=bool(counts))

    def search(genre: str | None, min_prob: float) -> tuple[str, pd.DataFrame]:
        if not genre:
            return "Pick a genre first.", pd.DataFrame(columns=RESULT_COLUMNS)
        try:
            found = library.search(genre, min_prob or None, UI_LIMIT)
        except AcousticSenseError as e:
            return html.escape(f"⚠️ {e}"), pd.DataFrame(columns=RESULT_COLUMNS)
        genre, tracks = found["genre"], found["tracks"]
        rows = [[t["id"], t["path"], t["genre"], round(t.get("match", t["probability"]), 4), flagged(t)] for t in tracks]
        what = f"whose top genre is {genre}" if not min_prob else f"at least {min_prob:g} likely to be {genre}"
        more = f" (the first {UI_LIMIT})" if len(tracks) == UI_LIMIT else ""
        note = ": click one for more like it" if tracks else ""
        return f"{plural(len(tracks), 'track')}{more} {what}{note}.", pd.DataFrame(rows, columns=RESULT_COLUMNS)

    def more_like(track: int | None, same_genre: bool) -> tuple[Any, ...]:
        if track is None:
            return gr.skip(), gr.skip(), gr.skip()
        try:
            tracks = library.similar(track, UI_K, same_genre)
        except AcousticSenseError as e:
            return html.escape(f"⚠️ {e}"), "", pd.DataFrame(columns=SIMILAR_COLUMNS)
        rows = [["this" if t["query"] else i, t["id"], t["path"], t["genre"], round(t["similarity"], 4), flagged(t)] for i, t in enumerate(tracks)]
        return "", player_html(tracks[0]), pd.DataFrame(rows, columns=SIMILAR_COLUMNS).astype({"rank": str})

    def picked(evt: gr.SelectData) -> int | None:
        return row_id(evt, RESULT_COLUMNS.index("id"))

    def play(evt: gr.SelectData) -> str:
        track = row_id(evt, SIMILAR_COLUMNS.index("id"))
        try:
            return player_html(library.track(track)) if track is not None else ""
        except AcousticSenseError as e:
            return html.escape(f"⚠️ {e}")

    with gr.Tab("Library", id="library", elem_id="library-tab") as tab:
        current = gr.State(None)  # the track whose neighbours are shown
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                genre = gr.Dropdown(label="Genre", allow_custom_value=True, elem_id="library-genre")
                min_prob = gr.Slider(0, 1, value=0, step=0.01, label="Minimum probability of the genre", elem_id="library-min-prob",
                                     info="0: tracks whose top genre it is; above: any track at least this likely to be it")  # fmt: skip
                button = gr.Button("Search", variant="primary", elem_id="library-search")
                chart = gr.Plot(label="Genres in the library", show_label=False, container=False, format="png", elem_id="library-chart")
            with gr.Column(scale=3, min_width=320):
                status = gr.Markdown(elem_id="library-status")
                found = gr.Dataframe(headers=RESULT_COLUMNS, interactive=False, max_height=360, label="Tracks", elem_id="library-results",
                                     wrap=True, column_widths=["10%", "56%", "17%", "17%"])  # fmt: skip
                gr.Markdown("### More like this")
                same = gr.Checkbox(label="Only tracks of the same top genre", elem_id="library-same-genre")
                similar_status = gr.Markdown(elem_id="library-similar-status")
                player = gr.HTML(elem_id="library-player")
                nearest = gr.Dataframe(headers=SIMILAR_COLUMNS, interactive=False, max_height=360, label="Nearest by sound (click one to play it)",
                                       elem_id="library-similar", wrap=True, column_widths=["10%", "10%", "46%", "17%", "17%"])  # fmt: skip
    free = dict(concurrency_limit=None)  # no model involved: never waits behind a classification (the library's lock serialises queries)
    internal = dict(queue=False, show_progress="hidden", api_visibility="private")  # page upkeep, not in the API docs
    tab.select(refresh, genre, [genre, chart], **internal)
    button.click(search, [genre, min_prob], [status, found], **free)
    clicks = dict(free, api_visibility="private")  # driven by the page's own state and clicks: the REST API has /similar
    found.select(picked, outputs=current, **internal).then(more_like, [current, same], [similar_status, player, nearest], **clicks)
    same.change(more_like, [current, same], [similar_status, player, nearest], **clicks)
    nearest.select(play, outputs=player, **clicks)
