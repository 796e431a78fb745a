"""Presenting a group's comparison: the table as text or Markdown (:func:`format_table`,
with the one number formatter :func:`fmt`) and the comparison written where people read it
(:func:`save_comparison`: every study's user attr and dashboard note, the group's
best-so-far graph, each study's per-trial graphs and notes), and the confirm study's lines
(:func:`confirm_notes`) and dashboard note (:func:`write_note`).

Optuna and the dashboard are imported inside :func:`save_comparison` only, so the report
and the CLI format a :class:`~lrtune.group.comparison.Comparison` without them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from lrtune.direction import sign as direction_sign

if TYPE_CHECKING:
    import optuna

    from lrtune.group.comparison import Comparison
    from lrtune.group.confirmations import ConfirmState


def fmt(value: float | None, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec``; ``-`` for a missing or NaN value."""
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else format(value, spec)
    )


def format_table(cmp: Comparison, *, markdown: bool = False) -> str:
    """The comparison as a text (or Markdown) table with the winner marked, then notes."""
    winner = cmp.winner
    repeats = cmp.repeats
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
        rows = [
            [
                _mark(winner is not None and a.studies[0] == winner.study) + a.sampler,
                a.prior,
                f"{len(a.studies)} ({a.reached} reached)",
                a.best.text() if a.best else "-",
                a.to_target.text() if a.to_target else "-",
                a.cost.text(".3g") if a.cost else "-",
                a.seconds.text() if a.seconds else "-",
            ]
            for a in cmp.arms
        ]
    else:
        header = ["study", "trials", f"best {cmp.metric}", "lr", "schedule", "to target", "cost"]
        header.append("seconds")
        rows = [
            [
                _mark(winner is not None and r.study == winner.study) + r.study,
                f"{r.spent:.3g}/{r.budget} eq" if r.rungs else f"{r.done}/{r.budget}",
                fmt(r.best),
                fmt(r.lr, ".3g"),
                r.schedule or "-",
                fmt(r.to_target, "d"),
                fmt(r.cost, ".3g"),
                fmt(r.seconds, ".1f"),
            ]
            for r in cmp.rows
        ]
    return "\n".join([*_layout(header, rows, markdown), "", *_notes(cmp)])


def _mark(on: bool) -> str:
    return "* " if on else "  "


def _notes(cmp: Comparison) -> list[str]:
    winner = cmp.winner
    repeats = cmp.repeats
    never = "" if repeats > 1 else " ('-': never)"  # with repeats, never shows as censored
    # The range test's cost only means something when a study used its prior.
    priors = {row.prior for row in cmp.rows}
    cost = (
        f"cost: compute to target + the range test ({cmp.rangetest_trials:.2f} trial-equivalents "
        f"of optimizer updates, {cmp.rangetest_seconds:.1f} s) for the rangetest prior"
        if "rangetest" in priors
        else "cost: compute to target (no range test was run)"
    )
    notes = [
        f"target: {cmp.metric} within {cmp.tolerance:.0%} of the group's best "
        f"({fmt(cmp.best)}), i.e. {'<=' if cmp.direction == 'minimize' else '>='} "
        f"{fmt(cmp.target)}",
        f"to target: finished trials until the first within target{never}; {cost}",
    ]
    ladders = sorted({row.rungs for row in cmp.rows if row.rungs})
    if ladders:
        rungs = " and ".join(",".join(map(str, r)) for r in ladders)
        notes.append(
            f"rungs {rungs} epochs: only top-rung trials are results; trials and cost count "
            "compute in full-trial equivalents (eq: epochs trained / full epochs)"
        )
    if repeats > 1:
        censored = sum(a.to_target.censored for a in cmp.arms if a.to_target)
        total = sum(len(a.studies) for a in cmp.arms)
        notes.insert(0, f"median [IQR] over {repeats} repeats")
        notes.append(
            f"censored: {censored} of {total} studies never reached the target; each counts "
            "as its budget + 1 trials in to target and cost, and a median or quartile that "
            "rests on one is a lower bound, shown with ≥"
        )
    if winner is not None:
        confirmed = ""
        if winner.confirmed is not None:
            c = winner.confirmed
            confirmed = f"; confirmed {cmp.metric} {c.mean:.4g} ± {c.sd:.2g} over {c.seeds} seeds"
        if repeats > 1:
            notes.append(
                f"winner (*): {winner.sampler} × {winner.prior}, median cost "
                f"{winner.cost:.3g} trial-equivalents over {winner.repeats} repeats "
                f"({winner.reached} reached the target){confirmed}"
            )
        else:
            notes.append(
                f"winner (*): {winner.study}, reached the target at cost "
                f"{winner.cost:.3g} trial-equivalents{confirmed}"
            )
    elif cmp.target is not None:
        notes.append(
            "no winner: no sampler × prior reached the target in enough repeats for an "
            "exact median cost"
        )
    notes += cmp.confirm
    notes += _baseline_notes(cmp)
    best = cmp.best_row
    if best is not None:
        setup = "".join(
            f", {k} {fmt(v, '.3g') if isinstance(v, float) else v}"
            for k, v in best.params.items()
            if k == "batch_size" or k.startswith(("lr_mult.", "task."))
        )
        notes.append(
            f"best trial: {best.study} #{best.best_trial}, {cmp.metric} "
            f"{fmt(best.best)} (lr {fmt(best.lr, '.3g')}, {best.schedule or '-'}{setup})"
        )
    return notes


def _baseline_notes(cmp: Comparison) -> list[str]:
    """Was tuning the schedule worth it: the search's best against each baseline's."""
    sign = direction_sign(cmp.direction)

    def best(rows: list) -> float | None:
        values = [r.best for r in rows if r.best is not None]
        return min(values, key=lambda v: sign * v) if values else None

    tuned = best([r for r in cmp.rows if not r.baseline])
    out = []
    for name in dict.fromkeys(r.sampler for r in cmp.rows if r.baseline):
        free = best([r for r in cmp.rows if r.baseline and r.sampler == name])
        if tuned is None or free is None:
            continue
        gain = sign * (free - tuned) / max(abs(free), 1e-12)
        verdict = "gained" if gain > 0 else "lost"
        out.append(
            f"schedule worth it? tuned schedules' best {cmp.metric} {fmt(tuned)} vs {name}'s "
            f"{fmt(free)}: tuning the schedule {verdict} {abs(gain):.1%} (single-seed bests; "
            f"the seed noise of the task applies)"
        )
    return out


def _layout(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return out + ["| " + " | ".join(c.strip() for c in row) + " |" for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    fmt_row = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt_row.format(*header).rstrip()] + [fmt_row.format(*row).rstrip() for row in rows]


def _budget(attrs: dict[str, Any]) -> str:
    """A study's stored budget in words (with rungs: full-trial equivalents)."""
    from lrtune.search.ladder import Ladder, budget_text

    ladder = Ladder.from_attrs(attrs)
    rungs, eta = (ladder.rungs, ladder.eta) if ladder is not None else ((), 3)
    return budget_text(attrs.get("budget"), rungs, eta)


def save_comparison(storage: optuna.storages.BaseStorage, cmp: Comparison) -> None:
    """Store the comparison on every study of its group (user attr, dashboard note and the
    group's best-so-far graph)."""
    import optuna

    from lrtune.dashboard import write_study_note
    from lrtune.dashboard.graphs import save_best_so_far_graph
    from lrtune.dashboard.trial_graphs import save_trial_graphs, save_trial_notes

    data = cmp.to_dict()
    table, _, notes = format_table(cmp, markdown=True).partition("\n\n")
    table += "\n\n" + "\n".join(f"- {line}" for line in notes.splitlines())
    studies = []
    for row in cmp.rows:
        study = optuna.load_study(study_name=row.study, storage=storage)
        studies.append(study)
        save_trial_graphs(study, cmp.metric)
        save_trial_notes(study)  # trials of workers that predate the notes, too
        study.set_user_attr("comparison", data)
        attrs = study.user_attrs
        low, high = attrs.get("bounds", [math.nan, math.nan])
        write_study_note(
            study,
            "\n".join(
                [
                    f"## {row.study}",
                    f"- task: `{attrs.get('task')}`, sampler **{attrs.get('sampler')}**, "
                    f"prior **{attrs.get('prior')}**, LR bounds {low:.3g} … {high:.3g}",
                    f"- budget: {_budget(attrs)}",
                    "",
                    "### Comparison of the group",
                    "",
                    table,
                ]
            ),
        )
    save_best_so_far_graph(
        studies, group=cmp.group, metric=cmp.metric, direction=cmp.direction, target=cmp.target
    )
    write_note(storage, cmp.group, cmp.confirm)  # the confirm study's own note


def confirm_notes(state: ConfirmState | None, metric: str) -> list[str]:
    """Lines for the comparison's notes, the dashboard note and the report."""
    if state is None:
        return []
    lines = []
    if state.found < state.asked:
        lines.append(
            f"confirm: only {state.found} distinct configurations finished, fewer than "
            f"--confirm {state.asked}: confirmed those {state.found}"
        )
    done = len(state.confirmations)
    if done < state.budget:
        lines.append(
            f"confirm: {done} of {state.budget} confirmations done; run the same command "
            "again (or a worker) to finish them"
        )
    best = state.best
    if best is not None:
        lines.append(
            f"confirmed winner: {metric} {best.mean:.4g} ± {best.sd or 0.0:.2g} over "
            f"{len(best.seeds)} fresh seeds (lr {best.trial.params.get('lr', math.nan):.3g}, "
            f"{best.trial.params.get('schedule', '-')}; found by {best.source_study} "
            f"#{best.source_trial} at {fmt(best.source_value)}; {state.study} "
            f"#{best.trial.number}); `export` takes it"
        )
    diverged = [c for c in state.confirmations if c.diverged]
    if diverged:
        lines.append(
            f"confirm: {len(diverged)} configuration(s) diverged on a fresh seed and rank "
            "last: " + ", ".join(f"{c.source_study} #{c.source_trial}" for c in diverged)
        )
    return lines


def write_note(storage: optuna.storages.BaseStorage, group: str, lines: list[str]) -> None:
    """The dashboard note of ``group``'s confirm study: ``lines`` (the comparison's confirm
    notes) and one row per confirmed configuration; nothing without a confirm study."""
    import optuna

    from lrtune.dashboard import write_study_note
    from lrtune.group.confirmations import read_confirmations

    state = read_confirmations(storage, group)
    if state is None:
        return
    study = optuna.load_study(study_name=state.study, storage=storage)
    seeds = study.user_attrs.get("seeds", [])
    text = [
        f"## {state.study}",
        f"- the {state.asked} best distinct configurations of group **{group}** re-trained "
        f"on fresh seeds {seeds}; value = the mean over the seeds",
        *(f"- {line}" for line in lines),
        "",
        "| trial | found by | single seed | lr | schedule | values | mean ± sd |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in state.confirmations:
        values = ", ".join("diverged" if v is None else f"{v:.4g}" for v in c.values)
        mean = "diverged" if c.mean is None else f"{c.mean:.4g} ± {c.sd or 0.0:.2g}"
        text.append(
            f"| {c.trial.number} | {c.source_study} #{c.source_trial} | "
            f"{fmt(c.source_value)} | {fmt(c.trial.params.get('lr'))} | "
            f"{c.trial.params.get('schedule', '-')} | {values} | {mean} |"
        )
    write_study_note(study, "\n".join(text))
