"""The report's figures: best-so-far, the best trial's schedule, importances, LR vs value.

Each takes plain data (lists, dicts) gathered by :mod:`lrtune.report.build` and writes one
PNG through :mod:`lrtune.canvas` (matplotlib's object API, imported lazily).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lrtune.canvas import new_figure, save_figure

_SAMPLER_COLORS = {
    "grid": "tab:blue",
    "random": "tab:orange",
    "tpe": "tab:green",
    "qmc": "tab:purple",
    "gp": "tab:brown",
}
_PRIOR_STYLES = {"rangetest": "-", "none": "--"}
_PRIOR_COLORS = {"rangetest": "tab:green", "none": "tab:blue"}
_SAMPLER_MARKERS = {"grid": "s", "random": "o", "tpe": "^", "qmc": "D", "gp": "v"}


def _spans_decades(values: Sequence[float], decades: float = 1.0) -> bool:
    """All finite values positive and ``max / min`` above ``10 ** decades``."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite or min(finite) <= 0:
        return False
    return max(finite) / min(finite) > 10**decades


def plot_best_so_far(
    runs: Mapping[tuple[str, str], Sequence[Sequence[float | None]]],
    path: str | Path,
    *,
    metric: str,
    direction: str,
    target: float | None = None,
    title: str = "best so far",
) -> Path:
    """Best value so far against finished trials, one line per (sampler, prior).

    ``runs[(sampler, prior)]`` holds one best-so-far curve per repeat (``None`` or ``nan``
    before the first complete trial). With several repeats the line is their median and the
    band the interquartile range; with one it is that run. Colour: sampler; line style:
    prior. The y axis is logarithmic when the values span more than a decade.
    """
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(figsize=(10, 5))
    ax = fig.subplots()
    every: list[float] = []
    repeats = 1
    for k, ((sampler, prior), curves) in enumerate(runs.items()):
        curves = [list(c) for c in curves if len(c)]
        if not curves:
            continue
        repeats = max(repeats, len(curves))
        length = max(len(c) for c in curves)
        grid = np.full((len(curves), length), np.nan)
        for i, c in enumerate(curves):
            grid[i, : len(c)] = [math.nan if v is None else v for v in c]
            # A finished run keeps its best value for the rest of the axis.
            if len(c) < length:
                grid[i, len(c) :] = c[-1]
        xs = np.arange(1, length + 1)
        color = _SAMPLER_COLORS.get(sampler)
        style = _PRIOR_STYLES.get(prior, ":")
        label = f"{sampler}, prior {prior}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns
            mid = np.nanmedian(grid, axis=0)
            if len(curves) > 1:
                lo, hi = np.nanpercentile(grid, [25, 75], axis=0)
                ax.fill_between(xs, lo, hi, step="post", color=color, alpha=0.15, linewidth=0)
                label += f" (median, IQR of {len(curves)})"
        # Arms that found the same trials (same sampler seed, e.g. TPE's random startup)
        # overlap: later lines are thinner and carry markers so both stay visible.
        ax.plot(
            xs,
            mid,
            drawstyle="steps-post",
            color=color,
            linestyle=style,
            linewidth=max(1.2, 3.2 - 0.6 * k),
            marker=_SAMPLER_MARKERS.get(sampler, "o"),
            markersize=5,
            label=label,
        )
        every += [float(v) for v in grid.ravel() if np.isfinite(v)]
    if target is not None and math.isfinite(target):
        ax.axhline(target, color="0.3", linestyle=":", linewidth=1.2, label=f"target {target:.4g}")
        every.append(target)
    if _spans_decades(every):
        ax.set_yscale("log")
        ax.set_ylabel(f"best {metric} so far (log scale)")
    else:
        ax.set_ylabel(f"best {metric} so far")
    better = "lower" if direction == "minimize" else "higher"
    ax.set_xlabel("finished trials (complete or pruned), in order")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{title} ({better} is better)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_figure(fig, path)


def plot_schedule(
    lrs: Sequence[float],
    path: str | Path,
    *,
    title: str,
    steps_per_epoch: int | None = None,
    bounds: tuple[float, float] | None = None,
) -> Path:
    """The LR at every optimizer step of a run (log y), with the peak LR marked.

    ``steps_per_epoch`` adds an epoch axis on top; ``bounds`` shades the LR search bounds
    the trial was drawn from.
    """
    fig = new_figure(figsize=(8, 4.5))
    ax = fig.subplots()
    steps = list(range(len(lrs)))
    peak = max(lrs)
    positive = [v for v in lrs if v > 0]
    ax.plot(steps, lrs, color="tab:blue", linewidth=2, label="learning rate")
    ax.axhline(peak, color="tab:red", linestyle="--", linewidth=1, label=f"peak lr = {peak:.3g}")
    ax.set_yscale("log", nonpositive="mask")
    low = max(min(positive) / 1.5, peak * 1e-5) if positive else peak * 1e-5
    high = peak * 2.0
    if bounds is not None:
        ax.axhspan(
            bounds[0],
            bounds[1],
            color="tab:green",
            alpha=0.12,
            label=f"search bounds [{bounds[0]:.3g}, {bounds[1]:.3g}]",
        )
        low, high = min(low, bounds[0] / 1.5), max(high, bounds[1] * 1.5)
    ax.set_ylim(low, high)
    ax.set_xlim(0, max(len(lrs) - 1, 1))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate (log scale)")
    if steps_per_epoch:
        spe = float(steps_per_epoch)
        top = ax.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
        top.set_xlabel("epoch")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    return save_figure(fig, path)


def plot_importances(importances: Mapping[str, float], path: str | Path, *, title: str) -> Path:
    """Horizontal bars of parameter importances (largest on top), values printed."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = new_figure(figsize=(7, 1.6 + 0.5 * len(items)))
    ax = fig.subplots()
    names = [k for k, _ in items]
    values = [float(v) for _, v in items]
    bars = ax.barh(names, values, color="tab:blue")
    for bar, value in zip(bars, values, strict=True):
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            f" {value:.2f}",
            va="center",
            fontsize=9,
        )
    ax.set_xlim(0, max([*values, 1e-12]) * 1.2)
    ax.set_xlabel("importance (normalized: sums to 1)")
    ax.set_ylabel("parameter")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return save_figure(fig, path)


def _outlier_cap(values: Sequence[float], direction: str) -> float:
    """Top of the value axis: 5x the median when minimizing and some value lies far above it
    (a trial at a huge LR can end with a loss of 1e12 and flatten everything else)."""
    finite = sorted(v for v in values if math.isfinite(v))
    if direction != "minimize" or not finite:
        return math.inf
    median = finite[len(finite) // 2]
    if median <= 0:
        return math.inf
    cap = 5.0 * median
    return cap if finite[-1] > cap else math.inf


def plot_lr_scatter(
    points: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    metric: str,
    direction: str,
    bounds: Mapping[str, tuple[float, float]],
    best: tuple[float, float] | None = None,
    title: str = "LRs tried",
) -> Path:
    """Each trial's LR against its value (log x), coloured by prior, marked by sampler.

    ``points``: dicts with ``prior``, ``sampler``, ``lr``, ``value`` and ``pruned`` (a pruned
    trial is drawn hollow at its last reported value). ``bounds[prior]`` is shaded for the
    ``rangetest`` prior (the narrowed range); ``best`` = ``(lr, value)`` is starred.
    """
    fig = new_figure(figsize=(10, 5))
    ax = fig.subplots()
    values = [float(p["value"]) for p in points]
    cap = _outlier_cap(values, direction)
    clipped = [v for v in values if v > cap]
    for p in points:
        color = _PRIOR_COLORS.get(str(p["prior"]), "0.4")
        marker = _SAMPLER_MARKERS.get(str(p["sampler"]), "o")
        value = float(p["value"])
        if value > cap:  # drawn on the top edge, see the legend
            ax.scatter(p["lr"], cap, marker=r"$\uparrow$", s=90, color=color, clip_on=False)
        elif p.get("pruned"):
            ax.scatter(p["lr"], value, marker=marker, s=36, facecolors="none", edgecolors=color)
        else:
            ax.scatter(
                p["lr"], value, marker=marker, s=36, color=color, alpha=0.8, edgecolors="none"
            )
    if "rangetest" in bounds:
        lo, hi = bounds["rangetest"]
        ax.axvspan(lo, hi, color=_PRIOR_COLORS["rangetest"], alpha=0.1)
    if best is not None:
        ax.scatter(*best, marker="*", s=260, color="gold", edgecolors="black", zorder=5)
    shown = [v for v in values if v <= cap]
    ax.set_xscale("log")
    if "none" in bounds:
        ax.set_xlim(bounds["none"][0] / 2, bounds["none"][1] * 2)
    if _spans_decades([*shown, cap] if clipped else shown):
        ax.set_yscale("log")
        ax.set_ylabel(f"{metric} (log scale)")
    else:
        ax.set_ylabel(metric)
    if clipped:
        low = min(shown) if shown else cap / 2
        ax.set_ylim(top=cap, bottom=low / 1.2 if low > 0 else low - 0.05 * (cap - low))
    ax.set_xlabel("learning rate (peak, log scale)")
    better = "lower" if direction == "minimize" else "higher"
    ax.set_title(f"{title} ({better} is better)", pad=16 if clipped else 6)
    ax.grid(True, which="major", alpha=0.3)
    handles = _scatter_legend(points, bounds, clipped, best)
    ax.legend(
        handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
    )
    return save_figure(fig, path)


def _scatter_legend(
    points: Sequence[Mapping[str, Any]],
    bounds: Mapping[str, tuple[float, float]],
    clipped: list[float],
    best: tuple[float, float] | None,
) -> list[Any]:
    """The LR scatter's legend: priors, samplers, and the marks that are drawn."""
    from matplotlib.lines import Line2D

    def mark(label: str, **style: Any) -> Any:
        return Line2D([], [], linestyle="", label=label, **style)

    priors = list(dict.fromkeys(str(p["prior"]) for p in points))
    samplers = list(dict.fromkeys(str(p["sampler"]) for p in points))
    handles: list[Any] = [
        mark(f"prior {pr}", marker="o", color=_PRIOR_COLORS.get(pr, "0.4")) for pr in priors
    ]
    handles += [
        mark(f"sampler {s}", marker=_SAMPLER_MARKERS.get(s, "o"), color="0.3") for s in samplers
    ]
    if any(p.get("pruned") for p in points):
        handles.append(
            mark(
                "pruned (last reported value)",
                marker="o",
                markerfacecolor="none",
                markeredgecolor="0.3",
            )
        )
    if "rangetest" in bounds:
        from matplotlib.patches import Patch

        lo, hi = bounds["rangetest"]
        handles.append(
            Patch(
                color=_PRIOR_COLORS["rangetest"],
                alpha=0.2,
                label=f"range-test bounds [{lo:.3g}, {hi:.3g}]",
            )
        )
    if clipped:
        handles.append(
            mark(
                f"{len(clipped)} off the scale (up to {max(clipped):.3g})",
                marker=r"$\uparrow$",
                markersize=10,
                color="0.3",
            )
        )
    if best is not None:
        handles.append(
            mark(
                f"best trial (lr {best[0]:.3g})",
                marker="*",
                markersize=12,
                markerfacecolor="gold",
                markeredgecolor="black",
            )
        )
    return handles
