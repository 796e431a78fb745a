"""The comparison of a group's studies: which sampler × prior reached a good result first."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from lrtune.objective import FINISHED
from lrtune.study import group_study_names


@dataclass
class Row:
    """One study's line of the table.

    ``to_target`` counts finished trials (complete or pruned, in order) up to and including
    the first within the tolerance of the group's best value; ``cost`` adds the range
    test's cost in trial-equivalents for the prior arm.
    """

    study: str
    sampler: str
    prior: str
    repeat: int
    done: int
    budget: int
    best: float | None
    lr: float | None
    schedule: str | None
    best_trial: int | None
    to_target: int | None
    cost: float | None
    seconds: float


@dataclass
class Comparison:
    """The group's table with what it is measured against."""

    group: str
    direction: str
    metric: str
    tolerance: float
    best: float | None
    target: float | None
    rangetest_seconds: float
    rangetest_trials: float
    rows: list[Row] = field(default_factory=list)

    @property
    def winner(self) -> Row | None:
        """The study that reached the target at the lowest cost (ties: better value)."""
        reached = [r for r in self.rows if r.cost is not None]
        sign = 1 if self.direction == "minimize" else -1
        return min(reached, key=lambda r: (r.cost, sign * (r.best or 0.0)), default=None)

    @property
    def best_row(self) -> Row | None:
        """The study holding the group's best trial (the one to export)."""
        rows = [r for r in self.rows if r.best is not None]
        sign = 1 if self.direction == "minimize" else -1
        return min(rows, key=lambda r: sign * (r.best or 0.0), default=None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored on the studies as ``comparison``."""
        data = asdict(self)
        data["winner"] = self.winner.study if self.winner else None
        return data


def within(value: float, best: float, tolerance: float, direction: str) -> bool:
    """Is ``value`` within ``tolerance`` (a fraction of ``|best|``) of ``best``?"""
    slack = tolerance * abs(best)
    return value <= best + slack if direction == "minimize" else value >= best - slack


def compare_group(
    storage: optuna.storages.BaseStorage, group: str, *, tolerance: float | None = None
) -> Comparison:
    """Build the comparison of ``group`` from what is in ``storage``."""
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
    sign = 1 if direction == "minimize" else -1
    trials = {
        s.study_name: sorted(
            (t for t in s.get_trials(deepcopy=False) if t.state in FINISHED), key=lambda t: t.number
        )
        for s in studies
    }
    values = [
        t.value
        for ts in trials.values()
        for t in ts
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and math.isfinite(t.value)
    ]
    best = min(values, key=lambda v: sign * v) if values else None
    durations = [
        float(t.user_attrs["seconds"])
        for ts in trials.values()
        for t in ts
        if "seconds" in t.user_attrs
    ]
    per_trial = statistics.median(durations) if durations else math.nan
    rt = next((s.user_attrs["rangetest"] for s in studies if "rangetest" in s.user_attrs), None)
    rt_seconds = float(rt["seconds"]) if rt else 0.0
    rt_trials = rt_seconds / per_trial if rt and per_trial > 0 else 0.0
    cmp = Comparison(
        group,
        direction,
        str(first.get("metric", "value")),
        tol,
        best,
        None if best is None else best + sign * tol * abs(best),
        rt_seconds,
        rt_trials,
    )
    for s in studies:
        attrs = s.user_attrs
        ts = trials[s.study_name]
        complete = [t for t in ts if t.state == optuna.trial.TrialState.COMPLETE]
        top = min(complete, key=lambda t: sign * (t.value or 0.0)) if complete else None
        to_target = None
        if best is not None:
            to_target = next(
                (
                    i + 1
                    for i, t in enumerate(ts)
                    if t.state == optuna.trial.TrialState.COMPLETE
                    and t.value is not None
                    and within(t.value, best, tol, direction)
                ),
                None,
            )
        extra = rt_trials if attrs.get("prior") == "rangetest" else 0.0
        cmp.rows.append(
            Row(
                study=s.study_name,
                sampler=str(attrs.get("sampler")),
                prior=str(attrs.get("prior")),
                repeat=int(attrs.get("repeat", 1)),
                done=len(ts),
                budget=int(attrs.get("budget", 0)),
                best=top.value if top else None,
                lr=top.params.get("lr") if top else None,
                schedule=top.params.get("schedule") if top else None,
                best_trial=top.number if top else None,
                to_target=to_target,
                cost=None if to_target is None else to_target + extra,
                seconds=sum(float(t.user_attrs.get("seconds", 0.0)) for t in ts),
            )
        )
    return cmp


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def _median_iqr(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4g}"
    q = statistics.quantiles(values, n=4, method="inclusive")
    return f"{statistics.median(values):.4g} [{q[0]:.3g}-{q[2]:.3g}]"


def format_table(cmp: Comparison, *, markdown: bool = False) -> str:
    """The comparison as a text (or Markdown) table with the winner marked."""
    repeats = max((r.repeat for r in cmp.rows), default=1)
    winner = cmp.winner
    if repeats > 1:
        header = [
            "sampler",
            "prior",
            "studies",
            f"best {cmp.metric}",
            "to target",
            "cost",
            "seconds",
        ]
        rows = []
        for key in dict.fromkeys((r.sampler, r.prior) for r in cmp.rows):
            grp = [r for r in cmp.rows if (r.sampler, r.prior) == key]
            reached = [r.to_target for r in grp if r.to_target is not None]
            costs = [r.cost for r in grp if r.cost is not None]
            rows.append(
                [
                    key[0],
                    key[1],
                    f"{len(grp)} ({len(reached)} reached)",
                    _median_iqr([r.best for r in grp if r.best is not None]),
                    _median_iqr([float(v) for v in reached]),
                    _median_iqr(costs),
                    _median_iqr([r.seconds for r in grp]),
                ]
            )
        title = f"median [IQR] over {repeats} repeats"
    else:
        header = [
            "study",
            "trials",
            f"best {cmp.metric}",
            "lr",
            "schedule",
            "to target",
            "cost",
            "seconds",
        ]
        rows = [
            [
                ("* " if r is winner else "  ") + r.study,
                f"{r.done}/{r.budget}",
                _fmt(r.best),
                _fmt(r.lr, ".3g"),
                r.schedule or "-",
                _fmt(r.to_target, "d"),
                _fmt(r.cost, ".3g"),
                _fmt(r.seconds, ".1f"),
            ]
            for r in cmp.rows
        ]
        title = ""
    lines = _layout(header, rows, markdown)
    notes = [
        f"target: {cmp.metric} within {cmp.tolerance:.0%} of the group's best "
        f"({_fmt(cmp.best)}), i.e. {'<=' if cmp.direction == 'minimize' else '>='} "
        f"{_fmt(cmp.target)}",
        "to target: finished trials until the first within target ('-': never); "
        f"cost: to target + the range test ({cmp.rangetest_seconds:.1f} s = "
        f"{cmp.rangetest_trials:.2f} trial-equivalents) for the rangetest prior",
    ]
    if title:
        notes.insert(0, title)
    if winner is not None:
        notes.append(
            f"winner (*): {winner.study}, reached the target at cost "
            f"{winner.cost:.3g} trial-equivalents"
        )
    best = cmp.best_row
    if best is not None:
        notes.append(
            f"best trial: {best.study} #{best.best_trial}, {cmp.metric} "
            f"{_fmt(best.best)} (lr {_fmt(best.lr, '.3g')}, {best.schedule})"
        )
    return "\n".join([*lines, "", *notes])


def _layout(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + ["| " + " | ".join(c.strip() for c in row) + " |" for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*header).rstrip()] + [fmt.format(*row).rstrip() for row in rows]
