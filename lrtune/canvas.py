"""The figures' canvas: matplotlib's object API only, imported lazily.

Figures are made as a ``Figure`` on an Agg canvas, never with pyplot or ``matplotlib.use``:
a library must not switch its caller's backend or leave figures in pyplot's registry. And
matplotlib is imported inside the functions, so importing :mod:`lrtune.report` (and
``python -m lrtune --help``) stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 110
"""Resolution of every PNG lrtune writes."""


def new_figure(**kwargs: Any) -> Any:
    """A new ``Figure`` drawn by the Agg canvas (files only: never needs a display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def default_colors() -> list[str]:
    """matplotlib's colour cycle (from the caller's ``rcParams``)."""
    import matplotlib

    return list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay ``fig`` out tightly, write it as a PNG at ``path``, return the path."""
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=DPI)
    return out


def png_bytes(fig: Any) -> bytes:
    """``fig`` as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def displayable(fig: Any) -> Any:
    """``fig`` with a ``_repr_png_``: a notebook shows it as the cell's value even when
    pyplot (and with it the inline backend's display hook) was never imported."""
    fig._repr_png_ = lambda: png_bytes(fig)
    return fig
