"""A prior that can be wrong: grow the LR bounds when the best trials sit at an edge.

The range test is a cheap guess. If it is off (a loss curve that misleads, a task whose
best LR for a whole run differs from the sweep's), the best trials of a study crowd against
one edge of the prior's bounds. Then that edge moves out by half a decade, up to the wide
bounds of the no-prior arm, so a misleading range test costs some trials, not the result.
Every move is recorded on the study (``bounds_history``).
"""

from __future__ import annotations

import logging
import math

import optuna

log = logging.getLogger(__name__)

#: The best trial counts as "at an edge" in the outer fraction of the log-range.
EDGE = 0.2
#: Decades an edge moves out each time.
STEP_DECADES = 0.5
#: Complete trials needed before the edges are judged.
MIN_TRIALS = 3


def edge_position(lr: float, bounds: tuple[float, float]) -> float:
    """Where ``lr`` sits inside ``bounds`` on a log scale: 0 at the low end, 1 at the high."""
    low, high = bounds
    return math.log(lr / low) / math.log(high / low)


def widened(
    bounds: tuple[float, float], best_lr: float, limits: tuple[float, float]
) -> tuple[float, float]:
    """``bounds`` with the edge near ``best_lr`` moved out by ``STEP_DECADES``, clipped to
    ``limits``; unchanged when ``best_lr`` is not near an edge."""
    low, high = bounds
    pos = edge_position(best_lr, bounds)
    if pos >= 1 - EDGE:
        high = min(high * 10**STEP_DECADES, max(limits[1], high))
    elif pos <= EDGE:
        low = max(low / 10**STEP_DECADES, min(limits[0], low))
    return low, high


def maybe_widen(study: optuna.Study) -> tuple[float, float] | None:
    """Widen ``study``'s stored bounds if its best trial sits at an edge; the new bounds,
    or ``None`` when nothing changed. Only for range-test-prior studies that allow it."""
    attrs = study.user_attrs
    if attrs.get("prior") != "rangetest" or not attrs.get("spec", {}).get("widen", False):
        return None
    if attrs.get("sampler") == "grid":
        return None  # a grid is fixed at creation; it cannot follow moved bounds
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS:
        return None
    best = study.best_trial
    bounds = (float(attrs["bounds"][0]), float(attrs["bounds"][1]))
    spec = attrs["spec"]
    new = widened(bounds, float(best.params["lr"]), (spec["lr_low"], spec["lr_high"]))
    if new == bounds:
        return None
    history = list(attrs.get("bounds_history", [list(bounds)]))
    history.append(list(new))
    study.set_user_attr("bounds", list(new))
    study.set_user_attr("bounds_history", history)
    log.info(
        "%s: best lr %.3g at an edge of [%.3g, %.3g]; bounds now [%.3g, %.3g]",
        study.study_name,
        best.params["lr"],
        *bounds,
        *new,
    )
    return new
