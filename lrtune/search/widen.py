"""A prior that can be wrong: grow the LR bounds when the best trials sit at an edge.

The range test is a cheap guess. If it is off (a loss curve that misleads, a task whose
best LR for a whole run differs from the sweep's), the best trials of a study crowd against
one edge of the prior's bounds. Then that edge moves out, up to the wide bounds of the
no-prior arm, so a misleading range test costs some trials, not the result:

- by half a decade the first time, and by twice the previous step each time the same edge
  moves again in a row (bracketing, as a line search does): a prior two decades off is
  left behind in three moves, not five;
- with each move a probe trial is enqueued in the middle of the new strip, with the best
  trial's schedule, so the search looks past the old edge at once instead of waiting for
  the sampler to draw there.

Every move is recorded on the study (``bounds_history``); the worker that moved it redraws
the study's range-test graph in optuna-dashboard (``dashboard.graphs.show_widened``: the
search never draws).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Any

import optuna

from lrtune.direction import sign as direction_sign
from lrtune.search.ladder import Ladder, rung_of, usage

log = logging.getLogger(__name__)

#: The best trial counts as "at an edge" in the outer fraction of the log-range.
EDGE = 0.2
#: Decades an edge moves out the first time; doubled for each further move in a row.
STEP_DECADES = 0.5
#: Complete trials needed before the edges are judged.
MIN_TRIALS = 3


def edge_position(lr: float, bounds: tuple[float, float]) -> float:
    """Where ``lr`` sits inside ``bounds`` on a log scale: 0 at the low end, 1 at the high."""
    low, high = bounds
    return math.log(lr / low) / math.log(high / low)


def widened(
    bounds: tuple[float, float],
    best_lr: float,
    limits: tuple[float, float],
    step: float = STEP_DECADES,
) -> tuple[float, float]:
    """``bounds`` with the edge near ``best_lr`` moved out by ``step`` decades, clipped to
    ``limits``; unchanged when ``best_lr`` is not near an edge."""
    low, high = bounds
    pos = edge_position(best_lr, bounds)
    if pos >= 1 - EDGE:
        high = min(high * 10**step, max(limits[1], high))
    elif pos <= EDGE:
        low = max(low / 10**step, min(limits[0], low))
    return low, high


def next_step(history: list[list[float]], moving_high: bool) -> float:
    """The step of the next move: ``STEP_DECADES``, doubled for each move of the same edge
    that came just before it (a move of the other edge starts over)."""
    step = STEP_DECADES
    for before, after in reversed(list(itertools.pairwise(history))):
        moved_high = after[1] != before[1]
        if moved_high != moving_high:
            break
        step *= 2
    return step


def can_widen(attrs: dict[str, Any]) -> bool:
    """Whether a study with user attrs ``attrs`` may widen its bounds: a range-test prior
    with ``widen`` on, and not a grid (fixed at creation, it cannot follow moved bounds)."""
    return (
        attrs.get("prior") == "rangetest"
        and bool(attrs.get("spec", {}).get("widen", False))
        and attrs.get("sampler") != "grid"
    )


def maybe_widen(study: optuna.Study) -> tuple[float, float] | None:
    """Widen ``study``'s stored bounds if its best trial sits at an edge, and enqueue a probe
    trial past the old edge; the new bounds, or ``None`` when nothing changed. Only for
    range-test-prior studies that allow it."""
    attrs = study.user_attrs
    if not can_widen(attrs):
        return None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if Ladder.from_attrs(attrs) is not None:  # the sampler's rung: where its bounds apply
        complete = [t for t in complete if rung_of(t) == 0]
    if len(complete) < MIN_TRIALS:
        return None
    sign = direction_sign(study.direction)
    best = min(complete, key=lambda t: (sign * float(t.value or 0.0), t.number))
    best_lr = float(best.params["lr"])
    bounds = (float(attrs["bounds"][0]), float(attrs["bounds"][1]))
    spec = attrs["spec"]
    history = list(attrs.get("bounds_history", [list(bounds)]))
    step = next_step(history, moving_high=edge_position(best_lr, bounds) >= 1 - EDGE)
    new = widened(bounds, best_lr, (spec["lr_low"], spec["lr_high"]), step)
    if new == bounds:
        return None
    history.append(list(new))
    study.set_user_attr("bounds", list(new))
    study.set_user_attr("bounds_history", history)
    _enqueue_probe(study, bounds, new, best.params.get("schedule"))
    log.info(
        "%s: best lr %.3g at an edge of [%.3g, %.3g]; bounds now [%.3g, %.3g]",
        study.study_name,
        best_lr,
        *bounds,
        *new,
    )
    return new


def _enqueue_probe(
    study: optuna.Study, old: tuple[float, float], new: tuple[float, float], schedule: object
) -> None:
    """Enqueue one trial in the middle (log scale) of the strip the bounds just gained.

    Skipped when the study's budget is already taken by finished, running and waiting
    trials: a probe left WAITING after the last worker exits would only clutter the study.
    """
    low, high = (new[0], old[0]) if new[0] < old[0] else (old[1], new[1])
    attrs = study.user_attrs
    budget = attrs.get("budget")
    if budget is not None:
        ladder = Ladder.from_attrs(attrs)
        trials = study.get_trials(deepcopy=False)
        held = sum(usage(trials, ladder))
        if ladder is None:  # waiting trials hold a slot too
            held += sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
        if held >= float(budget):
            return
    params: dict[str, object] = {"lr": math.sqrt(low * high)}
    if schedule is not None:
        params["schedule"] = schedule
    study.enqueue_trial(params, user_attrs={"probe": "widen"}, skip_if_exists=True)
