"""The range test's figure: loss against LR, bounds, suggestions (:func:`draw_range_test`,
a ``Figure``; :func:`plot_range_test`, a PNG; ``RangeTestResult.plot()`` in a notebook).

matplotlib is imported lazily (see :mod:`lrtune.canvas`), and the range test's result only
for type checking, so importing this module imports neither torch nor matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.canvas import default_colors, new_figure, save_figure

if TYPE_CHECKING:
    from lrtune.rangetest import RangeTestResult

__all__ = ["draw_range_test", "plot_range_test"]


def plot_range_test(result: RangeTestResult, path: str | Path) -> Path:
    """Draw the range test (:func:`draw_range_test`) to a PNG at ``path``; returns the path."""
    return save_figure(draw_range_test(result), path)


def draw_range_test(result: RangeTestResult) -> Any:
    """The range test as a matplotlib ``Figure`` (a notebook shows it).

    Log-LR x axis; each seed's raw loss (faint) and smoothed loss; the suggestions as
    vertical lines; three shaded regions: too low to learn (below ``lr_low``), the search
    bounds, and divergence (above ``diverged_at``). With a tracked metric, a second panel
    shows it against the same LR axis.
    """
    panels = 2 if any(result.metrics) else 1
    fig = new_figure(figsize=(7.5 * panels, 4.8))
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0][0]
    colors = default_colors()
    finite_losses: list[float] = []  # smoothed values, for the y range
    for k, (lrs, raw, sm) in enumerate(
        zip(result.lrs, result.losses, result.smoothed, strict=True)
    ):
        c = colors[k % len(colors)]
        seed = result.seeds[k] if k < len(result.seeds) else k
        ax.plot(lrs, raw, color=c, alpha=0.25, linewidth=0.8)
        ax.plot(lrs, sm, color=c, linewidth=1.8, label=f"seed {seed} (smoothed)")
        finite_losses += [
            v for v in [*sm, *raw] if v is not None and v == v and abs(v) != float("inf")
        ]
    lo_x = min(min(lrs) for lrs in result.lrs if lrs)
    hi_x = max(result.end_lr, *(max(lrs) for lrs in result.lrs if lrs))
    _regions(ax, result, lo_x, hi_x)
    for name, value, style in (
        ("steep", result.steep, ":"),
        ("valley", result.valley, "--"),
        ("min/10", result.min10, "-."),
    ):
        ax.axvline(
            value, color="black", linestyle=style, linewidth=1.1, label=f"{name} = {value:.3g}"
        )
    if finite_losses:
        # Clip the y axis to the starting loss level so the blow-up at the end does not
        # flatten the interesting part of the curve.
        starts = [sm[0] for sm in result.smoothed if sm and sm[0] is not None]
        top = max(starts) if starts else max(finite_losses)
        low = min(finite_losses)
        span = max(top - low, 1e-12)
        ax.set_ylim(low - 0.1 * span, top + 0.35 * span)
    ax.set_xscale("log")
    ax.set_xlim(lo_x, hi_x)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test ({result.optimizer}, {result.mode}): {result.diagnosis}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if panels == 2:
        mx = axes[0][1]
        for k, (steps, values) in enumerate(zip(result.metric_steps, result.metrics, strict=True)):
            lrs = result.lrs[k]
            xs = [lrs[s] for s in steps if s < len(lrs)]
            mx.plot(
                xs,
                values[: len(xs)],
                marker="o",
                markersize=3,
                color=colors[k % len(colors)],
                label=f"seed {result.seeds[k]}",
            )
        _regions(mx, result, lo_x, hi_x)
        mx.set_xscale("log")
        mx.set_xlim(lo_x, hi_x)
        mx.set_xlabel("learning rate (log scale)")
        mx.set_ylabel(result.metric_name or "metric")
        mx.set_title(f"held-out {result.metric_name} during the sweep")
        mx.grid(True, which="major", alpha=0.3)
        mx.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _regions(ax: Any, result: RangeTestResult, lo_x: float, hi_x: float) -> None:
    ax.axvspan(lo_x, result.lr_low, color="0.6", alpha=0.15, label="too low: little progress")
    ax.axvspan(
        result.lr_low,
        result.lr_high,
        color="tab:green",
        alpha=0.15,
        label=f"search bounds [{result.lr_low:.3g}, {result.lr_high:.3g}]",
    )
    if result.diverged_at is not None:
        ax.axvspan(result.diverged_at, hi_x, color="tab:red", alpha=0.15, label="diverges")
