"""The look every figure shares: the web page's type size and resolution, and fonts that fall back glyph by glyph.

Labels are the bundle's, in any script: matplotlib's own DejaVu Sans has no CJK, so a genre named 流行 would be
drawn as boxes. Each figure is made inside :func:`styled`, which lists DejaVu Sans first and then the CJK fonts
that are installed (Debian's ``fonts-droid-fallback``, which ``make setup`` installs).
"""

from __future__ import annotations

import functools
import io
from contextlib import AbstractContextManager
from typing import Any

PLOT_STYLE = {"font.size": 12, "figure.dpi": 100}  # the web page's figures: 12 pt stays readable (about 11 px) at phone width
FONTS = ("DejaVu Sans", "Droid Sans Fallback", "Noto Sans CJK JP", "WenQuanYi Zen Hei")  # first has the glyph, draws it


@functools.cache
def font_family() -> tuple[str, ...]:
    """The :data:`FONTS` installed here, in order (naming a missing one makes matplotlib warn on every text)."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return tuple(f for f in FONTS if f in installed) or ("sans-serif",)


def styled(rc: dict[str, Any] | None = None) -> AbstractContextManager:
    """``matplotlib.rc_context`` with ``rc`` and the font fallback: make a figure's texts inside it."""
    import matplotlib

    return matplotlib.rc_context({**(rc or {}), "font.family": list(font_family())})


def png_bytes(fig: Any, dpi: float | None = None) -> bytes:
    """A matplotlib ``Figure`` rendered as PNG bytes (written whole by :func:`~.files.write_whole`, or sent)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def mark_filled(ax: Any, heard: float, drawn: float, fill: str | None) -> None:
    """Shade a spectrogram's time axis from ``heard`` seconds (where a clip shorter than the model's window ended)
    to ``drawn`` (that window's end) and say in the axis label how it was filled (``fill``: "repeated" or
    "zero-padded"; ``None``: nothing was filled): no one should take it for audio the recording holds. Call it
    after the axis label is set."""
    if fill is None or heard >= drawn:
        return
    ax.axvspan(heard, drawn, color="white", alpha=0.55, linewidth=0)
    ax.axvline(heard, color="white", linewidth=1.5)
    ax.set_xlabel(f"{ax.get_xlabel()}; shaded: the clip {fill} to fill one window")
