"""lrtune's own graphs on optuna-dashboard's study page (interactive Plotly figures).

optuna-dashboard 0.21 draws every figure saved with
:func:`optuna_dashboard.save_plotly_graph_object` on the study page, beside its own plots.
The figure's JSON is kept in the study's system attrs under the graph's id; saving again
with the same ``graph_object_id`` replaces it (a fresh id would add another graph), so each
graph here has a fixed id and re-runs or updates never pile up copies:

- :data:`RANGETEST_GRAPH` on each range-test-prior study: every seed's smoothed loss
  against the LR (log axis), the search bounds shaded, the suggestions (steep, valley,
  min/10) and the divergence point marked, and the edges :mod:`lrtune.search.widen` moved;
- :data:`BEST_SO_FAR_GRAPH` on every study of a group once the comparison is computed: the
  best value so far against finished trials, one line per study (sampler × prior).

:func:`set_metric_name` names the objective (``val_loss``, ``accuracy``) so the
dashboard's plots and tables say so instead of "Objective 0".

Plotly is imported inside the functions and torch not at all (the range test is read from its
stored JSON): importing this module stays cheap.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import optuna

from lrtune.search.best import best_so_far
from lrtune.search.ladder import Ladder

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from lrtune.rangetest import RangeTestResult

RANGETEST_GRAPH = "lrtune-rangetest"
"""Graph id of the range-test figure (one per study, replaced on update)."""

BEST_SO_FAR_GRAPH = "lrtune-best-so-far"
"""Graph id of the group's best-so-far figure (one per study, replaced on update)."""

_SUGGESTIONS = (("steep", "triangle-down"), ("valley", "circle"), ("min10", "square"))
_LABELS = {"steep": "steep", "valley": "valley", "min10": "min/10"}
#: A shaded strip across the plot, under the curves.
_STRIP: dict[str, Any] = {"opacity": 0.15, "line_width": 0, "layer": "below"}
_COMPLETE = optuna.trial.TrialState.COMPLETE
_FINISHED = (_COMPLETE, optuna.trial.TrialState.PRUNED)


def set_metric_name(study: optuna.Study, metric: str) -> None:
    """Name ``study``'s objective ``metric`` (``study.set_metric_names``, which Optuna still
    marks experimental), unless it already has that name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names != [metric]:
            study.set_metric_names([metric])


def _finite(value: float | None) -> float | None:
    """``value`` rounded to 5 significant digits (a smaller figure), or ``None`` if not finite."""
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.5g}")


def _loss_at(lr: float, lrs: Sequence[float], losses: Sequence[float | None]) -> float | None:
    """The smoothed loss at the sweep point nearest ``lr`` (log scale) that has one."""
    points = [(x, y) for x, y in zip(lrs, losses, strict=False) if y is not None and x > 0]
    if not points or lr <= 0:
        return None
    return _finite(min(points, key=lambda p: abs(math.log(p[0] / lr)))[1])


def _moves(history: Sequence[Sequence[float]]) -> list[tuple[str, float, float]]:
    """``(edge, old, new)`` for each move in ``bounds_history`` (edge is "low" or "high")."""
    moves = []
    for before, after in itertools.pairwise(history):
        if after[0] != before[0]:
            moves.append(("low", float(before[0]), float(after[0])))
        if after[1] != before[1]:
            moves.append(("high", float(before[1]), float(after[1])))
    return moves


def _as_dict(rangetest: RangeTestResult | Mapping[str, Any]) -> Mapping[str, Any]:
    """The stored JSON form of a range test (``RangeTestResult.to_dict``)."""
    to_dict = getattr(rangetest, "to_dict", None)
    return to_dict() if callable(to_dict) else rangetest  # type: ignore[return-value]


def rangetest_figure(
    rangetest: RangeTestResult | Mapping[str, Any],
    bounds_history: Sequence[Sequence[float]] | None = None,
) -> go.Figure:
    """The range test (a result or its stored ``rangetest`` JSON) as a Plotly figure: loss
    against LR (log x axis).

    Traces: one smoothed curve per seed (``seed N``) and one marker per suggestion
    (``steep``, ``valley``, ``min/10``). Shapes (named): ``bounds`` (the range test's search
    bounds, shaded), ``diverged`` (a line at the divergence point) and ``diverges`` (the LRs
    past it, shaded) when the sweep diverged, and, for each move recorded in
    ``bounds_history`` (the study's ``[[low, high], ...]``), a ``widened k`` strip from the
    old edge to the new one with a line at the new edge.
    """
    import plotly.graph_objects as go

    rt = _as_dict(rangetest)
    fig = go.Figure()
    all_lrs, values = _add_curves(fig, rt)
    low, high = float(rt["lr_low"]), float(rt["lr_high"])
    fig.add_vrect(
        x0=low,
        x1=high,
        name="bounds",
        fillcolor="green",
        **_STRIP,
        label={"text": f"bounds {low:.3g} … {high:.3g}", "textposition": "top center"},
    )
    x_max = max([float(rt.get("end_lr") or high), *all_lrs])
    if rt.get("diverged_at") is not None:
        # A line, not a marker on the curve: the loss there is far above the clipped y axis.
        div = float(rt["diverged_at"])
        fig.add_vrect(x0=div, x1=x_max, name="diverges", fillcolor="red", **_STRIP)
        fig.add_vline(
            x=div,
            line={"color": "red", "width": 1.5},
            name="diverged",
            label={"text": f"diverged {div:.3g}", "textposition": "middle", "font_size": 10},
        )
    moves = _add_moves(fig, bounds_history or [])
    title = f"LR range test ({rt.get('optimizer', 'sgd')}): {rt.get('diagnosis', '')}"
    if moves:
        now = bounds_history[-1] if bounds_history else (low, high)
        title += f"; bounds widened to {now[0]:.3g} … {now[1]:.3g}"
    lo_x = min([*all_lrs, low, *(m[2] for m in moves)], default=low)
    hi_x = max([x_max, high, *(m[2] for m in moves)])
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        xaxis={
            "type": "log",
            "title": {"text": "learning rate (log scale)"},
            "range": [math.log10(lo_x), math.log10(hi_x)],
        },
        yaxis={"title": {"text": "training loss (smoothed)"}},
        showlegend=True,  # also for a single line: its label says which study it is
        legend={"font": {"size": 10}},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    if values:
        # The loss blows up at the end of the sweep: clip the y axis to the starting level so
        # the part that matters is not flattened (as the PNG plot does).
        starts = [v for v in (_finite(s[0]) for s in rt["smoothed"] if s) if v is not None]
        top, bottom = (max(starts) if starts else max(values)), min(values)
        span = max(top - bottom, 1e-12)
        fig.update_yaxes(range=[bottom - 0.1 * span, top + 0.35 * span])
    return fig


def _add_curves(fig: go.Figure, rt: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """The smoothed curve of each seed and the suggestions' markers; the positive LRs and
    finite losses drawn."""
    import plotly.graph_objects as go

    curves_x: list[list[float]] = rt["lrs"]
    curves_y: list[list[float | None]] = rt["smoothed"]
    seeds = list(rt.get("seeds") or [])
    all_lrs = [x for lrs in curves_x for x in lrs if x > 0]
    values: list[float] = []
    for k, (lrs, smoothed) in enumerate(zip(curves_x, curves_y, strict=True)):
        seed = seeds[k] if k < len(seeds) else k
        ys = [_finite(v) for v in smoothed]
        values += [v for v in ys if v is not None]
        fig.add_trace(
            go.Scatter(
                x=[_finite(x) for x in lrs],
                y=ys,
                mode="lines",
                name=f"seed {seed}",
                hovertemplate="lr %{x:.3g}<br>loss %{y:.4g}<extra>seed " + f"{seed}</extra>",
            )
        )
    first_lrs = curves_x[0] if curves_x else []
    first = curves_y[0] if curves_y else []
    for attr, symbol in _SUGGESTIONS:
        lr = float(rt[attr])
        fig.add_trace(
            go.Scatter(
                x=[_finite(lr)],
                y=[_loss_at(lr, first_lrs, first)],
                mode="markers+text",
                marker={"symbol": symbol, "size": 11, "color": "black"},
                text=[_LABELS[attr]],
                textposition="bottom center",
                name=f"{_LABELS[attr]} {lr:.3g}",
                hovertemplate=f"{_LABELS[attr]}: lr {lr:.3g}<extra></extra>",
            )
        )
    return all_lrs, values


def _add_moves(
    fig: go.Figure, bounds_history: Sequence[Sequence[float]]
) -> list[tuple[str, float, float]]:
    """A ``widened k`` strip and edge line per move of the bounds; the moves."""
    moves = _moves(bounds_history)
    for k, (edge, old, new) in enumerate(moves, start=1):
        strip = {"x0": min(old, new), "x1": max(old, new), "fillcolor": "orange"}
        fig.add_vrect(name=f"widened {k}", **strip, **_STRIP)
        fig.add_vline(
            x=new,
            line={"color": "darkorange", "dash": "dash", "width": 2},
            name=f"widened {k} edge",
            label={"text": f"{edge} → {new:.3g}", "textposition": "middle", "font_size": 10},
        )
    return moves


def best_so_far_figure(
    curves: dict[str, list[float | None]],
    *,
    group: str,
    metric: str,
    direction: str,
    target: float | None = None,
) -> go.Figure:
    """One line per study (``curves``: legend label → :func:`best_so_far`) against the
    number of finished trials, and the group's target as a dashed line when given."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, curve in curves.items():
        fig.add_trace(
            go.Scatter(
                x=list(range(1, len(curve) + 1)),
                y=[_finite(v) for v in curve],
                mode="lines+markers",
                line={"shape": "hv"},
                name=label,
                hovertemplate="%{x} trials: best %{y:.4g}<extra>" + f"{label}</extra>",
            )
        )
    if target is not None and math.isfinite(target):
        fig.add_hline(
            y=target,
            line={"color": "gray", "dash": "dash"},
            name="target",
            label={"text": f"target {target:.4g}", "textposition": "end", "font_size": 10},
        )
    better = "lower" if direction == "minimize" else "higher"
    fig.update_layout(
        title={"text": f"Best {metric} so far: group {group}", "font": {"size": 14}},
        xaxis={"title": {"text": "finished trials"}, "rangemode": "tozero"},
        yaxis={"title": {"text": f"best {metric} ({better} is better)"}},
        showlegend=True,  # also for a single line: its label says which study it is
        legend={"font": {"size": 10}},
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
    )
    return fig


def _save(study: optuna.Study, fig: go.Figure, graph_id: str) -> None:
    from optuna_dashboard import save_plotly_graph_object

    save_plotly_graph_object(study, fig, graph_object_id=graph_id)


def save_rangetest_graph(
    study: optuna.Study,
    rangetest: RangeTestResult | Mapping[str, Any],
    bounds_history: Sequence[Sequence[float]] | None = None,
) -> None:
    """Save (or replace) :data:`RANGETEST_GRAPH` on ``study``."""
    _save(study, rangetest_figure(rangetest, bounds_history), RANGETEST_GRAPH)


def show_widened(study: optuna.Study) -> None:
    """Redraw ``study``'s range-test graph with the edges ``search.widen`` moved
    (``bounds_history``); nothing without a range test."""
    attrs = study.user_attrs
    if "rangetest" in attrs:
        save_rangetest_graph(study, attrs["rangetest"], attrs.get("bounds_history"))


def save_best_so_far_graph(
    studies: Sequence[optuna.Study],
    *,
    group: str,
    metric: str,
    direction: str,
    target: float | None = None,
) -> None:
    """Save (or replace) :data:`BEST_SO_FAR_GRAPH`, drawn from all ``studies``, on each."""
    curves = {}
    for study in studies:
        attrs = study.user_attrs
        arm = attrs.get("baseline") or attrs.get("sampler", "?")  # a baseline is its own line
        label = f"{arm} × {attrs.get('prior', '?')}"
        if int(attrs.get("repeat", 1)) > 1:
            label += f" r{attrs['repeat']}"
        trials = study.get_trials(deepcopy=False)
        curves[label] = best_so_far(trials, direction, Ladder.from_attrs(attrs))
    fig = best_so_far_figure(curves, group=group, metric=metric, direction=direction, target=target)
    for study in studies:
        _save(study, fig, BEST_SO_FAR_GRAPH)
