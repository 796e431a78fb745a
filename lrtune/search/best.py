"""The best result of a study so far, trial after trial: the one best-so-far curve that the
dashboard's graph and ``lrtune report``'s figure draw. Optuna is imported on first use, so
``lrtune.report`` stays light to import."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lrtune.direction import sign as direction_sign

if TYPE_CHECKING:
    import optuna

    from lrtune.search.ladder import Ladder


def best_so_far(
    trials: Iterable[optuna.trial.FrozenTrial], direction: str, ladder: Ladder | None = None
) -> list[float | None]:
    """The best result after each finished trial (complete or pruned, by number); ``None``
    until the first result. A result is a complete trial with a finite value, with rungs
    (``ladder``) on the top rung (:func:`lrtune.search.ladder.is_result`)."""
    from lrtune.search.ladder import is_result
    from lrtune.search.states import FINISHED

    sign = direction_sign(direction)
    best: float | None = None
    curve: list[float | None] = []
    for trial in sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number):
        if is_result(trial, ladder) and trial.value is not None:
            value = float(trial.value)
            best = value if best is None else min(best, value, key=lambda v: sign * v)
        curve.append(best)
    return curve
