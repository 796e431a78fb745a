"""The comparison of a group's studies: which sampler × prior reached a good result first.

:func:`compare_group` reads a group from a storage and returns a typed table
(:class:`~lrtune.group.comparison.Comparison`); :func:`lrtune.group.present.format_table`
lays it out as text or Markdown.
With ``--repeats`` a sampler × prior (an :class:`Arm`) is summarised by the median and IQR over
its repeats, where a repeat that never reached the target is *censored*: it counts as its
budget + 1 finished trials, a lower bound, and a statistic that rests on such a repeat is
shown with ``≥``. The winner is judged on those medians, never on the luckiest repeat.

It imports neither torch nor :mod:`lrtune.group.prepare`, so read-only commands stay light.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import optuna

from lrtune.direction import sign as direction_sign
from lrtune.group.censored import summarize
from lrtune.group.comparison import Arm, Comparison, Confirmed, Row, Winner
from lrtune.group.confirmations import ConfirmState, read_confirmations
from lrtune.group.present import confirm_notes
from lrtune.search.ladder import Ladder, is_result, trained
from lrtune.search.states import finished, group_study_names


def within(value: float, best: float, tolerance: float, direction: str) -> bool:
    """Is ``value`` within ``tolerance`` (a fraction of ``|best|``) of ``best``?"""
    slack = tolerance * abs(best)
    return value <= best + slack if direction == "minimize" else value >= best - slack


def compare_group(
    storage: str | optuna.storages.BaseStorage, group: str, *, tolerance: float | None = None
) -> Comparison:
    """Build the comparison of ``group`` from what is in ``storage`` (a URL or an Optuna
    storage): what ``lrtune study`` prints at its end and ``lrtune report`` lays out, read
    at any time (while workers run, too). Raises ``ValueError`` for a group without studies.

    The target is within ``tolerance`` (default: the spec's) of the group's best finite
    value. The range test's cost in trials is its optimizer updates ÷ the median trial's
    (:func:`rangetest_trials`).

    Example:
        ```python
        import lrtune

        lrtune.run_study(
            "wine", storage="sqlite:///example.db", group="wine", prior="none",
            samplers="random", trials=2, repeats=2, epochs=1, lr_low=0.01, lr_high=0.3,
            confirm=0,
        )
        cmp = lrtune.compare_group("sqlite:///example.db", "wine", tolerance=0.5)
        print(cmp.table(markdown=True))
        assert [arm.studies for arm in cmp.arms] == [["wine.random.none", "wine.random.none.r2"]]
        assert cmp.best == min(row.best for row in cmp.rows)
        ```
    """
    if isinstance(storage, str):
        from lrtune.storage import open_storage

        storage = open_storage(storage)
    studies = [
        optuna.load_study(study_name=n, storage=storage) for n in group_study_names(storage, group)
    ]
    if not studies:
        raise ValueError(f"no studies of group {group!r}")
    first = studies[0].user_attrs
    tol = (
        tolerance if tolerance is not None else float(first.get("spec", {}).get("tolerance", 0.02))
    )
    direction = (
        "minimize" if studies[0].direction == optuna.study.StudyDirection.MINIMIZE else "maximize"
    )
    sign = direction_sign(direction)
    trials = {s.study_name: finished(s.get_trials(deepcopy=False)) for s in studies}
    ladders = {s.study_name: Ladder.from_attrs(s.user_attrs) for s in studies}
    full = {s.study_name: int(s.user_attrs.get("epochs") or 1) for s in studies}
    # Only what can be exported is a result: with rungs, the top rung's trials.
    results = {n: [t for t in ts if is_result(t, ladders[n])] for n, ts in trials.items()}
    values = [float(t.value or 0.0) for ts in results.values() for t in ts]
    best = min(values, key=lambda v: sign * v) if values else None
    rt_seconds, rt_trials = _rangetest_cost(studies, trials, full)
    cmp = Comparison(
        group=group,
        direction=direction,
        metric=str(first.get("metric", "value")),
        tolerance=tol,
        best=best,
        target=None if best is None else best + sign * tol * abs(best),
        rangetest_seconds=rt_seconds,
        rangetest_trials=rt_trials,
    )
    confirmations = read_confirmations(storage, group)
    for s in studies:
        n = s.study_name
        cmp.rows.append(_row(cmp, s, trials[n], results[n], ladders[n], full[n], confirmations))
    cmp.confirm = confirm_notes(confirmations, cmp.metric)
    cmp.arms = arms_of(cmp)
    cmp.winner = judge(cmp)
    return cmp


def _rangetest_cost(
    studies: list[optuna.Study],
    trials: dict[str, list[optuna.trial.FrozenTrial]],
    full: dict[str, int],
) -> tuple[float, float]:
    """The search's range test: its seconds and its cost in trial-equivalents."""
    durations = [  # seconds of a full-length trial: a rung trial's scaled by its epochs
        float(t.user_attrs["seconds"]) * full[n] / int(t.user_attrs.get("epochs") or full[n])
        for n, ts in trials.items()
        for t in ts
        if "seconds" in t.user_attrs
    ]
    per_trial = statistics.median(durations) if durations else math.nan
    # The search's range test; a baseline's own (same sweep, another optimizer) costs as much.
    rt = next(
        (
            s.user_attrs["rangetest"]
            for s in studies
            if "rangetest" in s.user_attrs and "baseline" not in s.user_attrs
        ),
        None,
    )
    configs = [
        _full_length(t.user_attrs["config"], full[n])
        for n, ts in trials.items()
        for t in ts
        if isinstance(t.user_attrs.get("config"), dict)
    ]
    return (float(rt["seconds"]) if rt else 0.0), rangetest_trials(rt, configs, per_trial)


def _row(
    cmp: Comparison,
    study: optuna.Study,
    ts: list[optuna.trial.FrozenTrial],
    complete: list[optuna.trial.FrozenTrial],
    ladder: Ladder | None,
    full_epochs: int,
    confirmations: ConfirmState | None,
) -> Row:
    """``study``'s row: ``ts`` its finished trials, ``complete`` those that are results."""
    attrs = study.user_attrs
    sign = direction_sign(cmp.direction)
    top = min(complete, key=lambda t: sign * float(t.value or 0.0)) if complete else None
    costs = [trained(t, full_epochs) for t in ts]
    to_target = None
    if cmp.best is not None:
        best = cmp.best
        to_target = next(
            (
                i + 1
                for i, t in enumerate(ts)
                if is_result(t, ladder)
                and within(float(t.value or 0.0), best, cmp.tolerance, cmp.direction)
            ),
            None,
        )
    cost = None if to_target is None else sum(costs[:to_target]) + _extra(cmp, attrs.get("prior"))
    return Row(
        study=study.study_name,
        # A baseline arm (lrtune.group.baseline) is its own row: "schedulefree / none".
        sampler=str(attrs.get("baseline") or attrs.get("sampler")),
        prior=str(attrs.get("prior")),
        repeat=int(attrs.get("repeat", 1)),
        done=len(ts),
        budget=int(attrs.get("budget", 0)),
        best=top.value if top else None,
        lr=top.params.get("lr") if top else None,
        schedule=top.params.get("schedule") if top else None,
        best_trial=top.number if top else None,
        to_target=to_target,
        cost=cost,
        seconds=sum(float(t.user_attrs.get("seconds", 0.0)) for t in ts),
        confirmed=_confirmed(confirmations, study.study_name),
        spent=sum(costs),
        rungs=ladder.rungs if ladder is not None else (),
        baseline="baseline" in attrs,
        params=dict(top.params) if top else {},
    )


def _full_length(config: dict[str, Any], full_epochs: int) -> dict[str, Any]:
    """``config`` of a rung trial as if it had trained the full epochs (its updates
    scaled), so that a range test is counted against full-length trials."""
    steps, epochs = config.get("total_steps"), config.get("epochs")
    if not isinstance(steps, int) or not isinstance(epochs, int) or epochs in (0, full_epochs):
        return config
    return {**config, "total_steps": round(steps * full_epochs / epochs)}


def rangetest_trials(
    rt: dict[str, Any] | None, configs: list[dict[str, Any]], per_trial_seconds: float
) -> float:
    """The range test's cost in trial-equivalents: the rows it trained on (its optimizer
    updates × its batch size) ÷ the median trial's (``total_steps`` × ``batch_size`` of the
    trials' ``config``). At one batch size that is updates ÷ updates, so accumulation, which
    makes every update of both cost more, does not change it; a machine busier during one
    than the other does not either. Trials that recorded no ``total_steps`` (a ``fit`` task
    over data without a length) fall back to seconds ÷ the median trial's seconds."""
    if not rt:
        return 0.0
    updates = rt.get("updates")
    if updates is None:  # stored before results counted them
        updates = sum(len(lrs or []) for lrs in rt.get("lrs", []))
    rows = [
        float(c["total_steps"]) * float(c.get("batch_size") or 1)
        for c in configs
        if isinstance(c.get("total_steps"), int) and c["total_steps"] > 0
    ]
    if rows and updates:
        batch = rt.get("batch_size") or statistics.median(
            float(c.get("batch_size") or 1) for c in configs
        )
        return float(updates) * float(batch) / statistics.median(rows)
    seconds = float(rt.get("seconds", 0.0))
    return seconds / per_trial_seconds if per_trial_seconds > 0 else 0.0


def _confirmed(state: ConfirmState | None, study: str) -> Confirmed | None:
    """The best seed mean among the configurations ``study`` found that were confirmed."""
    for c in state.confirmations if state is not None else []:  # best seed mean first
        if c.source_study == study and c.mean is not None:
            sd = math.nan if c.sd is None else c.sd
            return Confirmed(mean=c.mean, sd=sd, seeds=len(c.seeds))
    return None


def _extra(cmp: Comparison, prior: object) -> float:
    """The range test's cost in trial-equivalents, paid by the ``rangetest`` prior only."""
    return cmp.rangetest_trials if prior == "rangetest" else 0.0


def arms_of(cmp: Comparison) -> list[Arm]:
    """Group ``cmp.rows`` by sampler × prior (in row order) and summarise the repeats; a
    repeat that never reached the target counts as censored at :attr:`Row.censored_at`."""
    arms = []
    for key in dict.fromkeys((r.sampler, r.prior) for r in cmp.rows):
        rows = sorted((r for r in cmp.rows if (r.sampler, r.prior) == key), key=lambda r: r.repeat)
        extra = _extra(cmp, key[1])
        to_target = cost = None
        if cmp.target is not None:
            reach = [(float(r.to_target or r.censored_at), r.to_target is None) for r in rows]
            to_target = summarize(reach)
            cost = summarize(
                [
                    (r.cost, False) if r.cost is not None else (r.censored_cost + extra, True)
                    for r in rows
                ]
            )
        confirmed = [r.confirmed for r in rows if r.confirmed is not None]
        arms.append(
            Arm(
                sampler=key[0],
                prior=key[1],
                studies=[r.study for r in rows],
                reached=sum(r.to_target is not None for r in rows),
                best=summarize([(r.best, False) for r in rows if r.best is not None]),
                to_target=to_target,
                cost=cost,
                seconds=summarize([(r.seconds, False) for r in rows]),
                # Hook for confirmed winners: the arm's best confirmed configuration.
                confirmed=min(
                    confirmed, key=lambda c: direction_sign(cmp.direction) * c.mean, default=None
                ),
            )
        )
    return arms


def judge(cmp: Comparison) -> Winner | None:
    """The arm with the lowest median cost whose median is exact (reached in enough
    repeats, not a ``≥`` bound); ties go to the better confirmed mean where there is one,
    else to the better median best value. ``None`` when no arm qualifies."""

    def quality(arm: Arm) -> float:
        # Confirmed values, once they exist, judge ties ahead of single-seed values.
        if arm.confirmed is not None:
            return direction_sign(cmp.direction) * arm.confirmed.mean
        return direction_sign(cmp.direction) * arm.best.median.value if arm.best else math.inf

    eligible = [
        (a.cost.median.value, quality(a), i, a.to_target.median.value)
        for i, a in enumerate(cmp.arms)
        if a.cost is not None and a.to_target is not None and not a.cost.median.at_least
    ]
    if not eligible:
        return None
    cost, _, index, to_target = min(eligible)
    arm = cmp.arms[index]
    return Winner(
        study=arm.studies[0],
        sampler=arm.sampler,
        prior=arm.prior,
        repeats=len(arm.studies),
        reached=arm.reached,
        to_target=_whole(to_target),
        cost=cost,
        confirmed=arm.confirmed,
    )


def _whole(value: float) -> float:
    """An integral median as an int (``6``, not ``6.0``, in text)."""
    return int(value) if value == int(value) else value
