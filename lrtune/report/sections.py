"""The sections of ``report.md``: each draws its figure into the report's temporary
directory and writes its Markdown (:func:`render` puts them in order under the head).

Imports matplotlib, optuna and torch only when a report is rendered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lrtune.group.present import fmt
from lrtune.rangetest.plot import plot_range_test
from lrtune.report import figures
from lrtune.report.gather import (
    finished_trials,
    last_reported,
    param_importances,
    start_bounds,
    value_of,
)
from lrtune.search.best import best_so_far
from lrtune.shell import command_line, storage_args

REPORT_FILE = "report.md"
BEST_SO_FAR_PNG = "best-so-far.png"
RANGETEST_PNG = "rangetest.png"
SCHEDULE_PNG = "schedule.png"
IMPORTANCES_PNG = "importances.png"
SCATTER_PNG = "lr-vs-value.png"


@dataclass(kw_only=True)
class Section:
    """One part of report.md: its heading, lines and (optionally) its figure."""

    title: str
    lines: list[str] = field(default_factory=list)
    image: str | None = None
    alt: str = ""


def render(tmp: Path, cmp: Any, studies: dict[str, Any], group: str) -> str:
    """``report.md``'s text for the comparison ``cmp`` of ``group`` (``studies`` by name);
    the figures are drawn into ``tmp``."""
    from lrtune.group.present import format_table

    best_row = cmp.best_row
    best_study = studies[best_row.study]
    trial = next(t for t in best_study.trials if t.number == best_row.best_trial)
    table, notes = _table_and_notes(format_table(cmp, markdown=True))
    sections = [
        Section(title="Comparison", lines=[table, "", *(f"- {n}" for n in notes)]),
        _best_so_far(tmp, cmp, studies, group),
        _range_test(tmp, studies),
        _winner(tmp, cmp, studies, best_study, trial),
        _importances(tmp, cmp, studies),
    ]
    scatter = _lrs_tried(tmp, cmp, studies, group, trial)
    if scatter is not None:
        sections.append(scatter)
    body = _head(cmp, studies, group)
    for sec in sections:
        body += ["", f"## {sec.title}", "", *sec.lines]
        if sec.image:
            body += ["", f"![{sec.alt}]({sec.image})"]
    return "\n".join(body) + "\n"


def _table_and_notes(table: str) -> tuple[str, list[str]]:
    head, _, tail = table.partition("\n\n")
    return head, [line for line in tail.splitlines() if line.strip()]


def _head(cmp: Any, studies: dict[str, Any], group: str) -> list[str]:
    import optuna

    from lrtune import __version__

    first = next(iter(studies.values())).user_attrs
    spec = first.get("spec", {})
    samplers = dict.fromkeys(r.sampler for r in cmp.rows)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"# lrtune report: group `{group}`",
        "",
        f"- task `{first.get('task')}`, metric `{cmp.metric}` ({cmp.direction}), optimizer "
        f"`{spec.get('optimizer', '-')}`, {first.get('epochs', '-')} epochs per trial",
        f"- {len(studies)} studies: samplers {', '.join(samplers)}; priors "
        f"{', '.join(dict.fromkeys(r.prior for r in cmp.rows))}; "
        f"{sum(r.done for r in cmp.rows)} finished trials",
        f"- storage `{first.get('storage', '-')}`; written {created} by lrtune {__version__} "
        f"(Optuna {optuna.__version__})",
    ]


def _best_so_far(tmp: Path, cmp: Any, studies: dict[str, Any], group: str) -> Section:
    from lrtune.search.ladder import Ladder

    runs: dict[tuple[str, str], list[list[float | None]]] = {}
    for row in cmp.rows:
        study = studies[row.study]
        ladder = Ladder.from_attrs(study.user_attrs)
        curve = best_so_far(finished_trials(study), cmp.direction, ladder)
        runs.setdefault((row.sampler, row.prior), []).append(curve)
    figures.plot_best_so_far(
        runs,
        tmp / BEST_SO_FAR_PNG,
        metric=cmp.metric,
        direction=cmp.direction,
        target=cmp.target,
        title=f"{group}: best {cmp.metric} so far",
    )
    repeats = max(len(v) for v in runs.values())
    text = (
        "Best value after each finished trial, per sampler (colour) and prior (line style)"
        + (
            f"; the line is the median over {repeats} repeats, the band their interquartile range."
            if repeats > 1
            else "."
        )
        + " The dotted line is the target of the table's *to target* column."
    )
    return Section(
        title="Best so far",
        lines=[text],
        image=BEST_SO_FAR_PNG,
        alt="best value so far against finished trials",
    )


def _range_test(tmp: Path, studies: dict[str, Any]) -> Section:
    from lrtune.rangetest import RangeTestResult

    rt_data = next(
        (s.user_attrs["rangetest"] for s in studies.values() if "rangetest" in s.user_attrs), None
    )
    if rt_data is None:
        return Section(
            title="Range test",
            lines=["No range test in this group (it ran with `--prior none`)."],
        )
    rt = RangeTestResult.from_dict(rt_data)
    plot_range_test(rt, tmp / RANGETEST_PNG)
    div = fmt(rt.diverged_at, ".3g") if rt.diverged_at is not None else "never"
    return Section(
        title="Range test",
        lines=[
            f"- search bounds of the `rangetest` prior: **[{rt.lr_low:.3g}, "
            f"{rt.lr_high:.3g}]** ({math.log10(rt.lr_high / rt.lr_low):.1f} decades)",
            f"- suggestions: steep {rt.steep:.3g}, valley {rt.valley:.3g}, "
            f"min/10 {rt.min10:.3g}; diverged at {div}",
            f"- {rt.optimizer}, {rt.mode} sweep {rt.start_lr:.3g} → {rt.end_lr:.3g} over "
            f"{rt.steps} steps, {len(rt.seeds)} seed(s) (spread "
            f"{rt.spread_decades:.2f} decades), {rt.seconds:.1f} s; diagnosis: "
            f"{rt.diagnosis}",
        ],
        image=RANGETEST_PNG,
        alt="LR range test with the search bounds",
    )


def _winner(tmp: Path, cmp: Any, studies: dict[str, Any], best_study: Any, trial: Any) -> Section:
    """The winner, the best trial's configuration, how to export it, its LR schedule."""
    metric, winner = cmp.metric, cmp.winner
    config = trial.user_attrs.get("config")
    lines = []
    if winner is not None:
        lines.append(
            f"- winner: **{winner.study}**, reached the target ({metric} "
            f"{'≤' if cmp.direction == 'minimize' else '≥'} {fmt(cmp.target)}) after "
            f"{winner.to_target} finished trials, cost {fmt(winner.cost, '.3g')} "
            "trial-equivalents (range test included)"
        )
    lines += [f"- {n}" for n in cmp.confirm if n.startswith("confirmed winner")]
    lines.append(
        f"- best trial: **{best_study.study_name} #{trial.number}**, {metric} "
        f"{fmt(trial.value)}, lr {trial.params.get('lr', math.nan):.4g}, schedule "
        f"`{trial.params.get('schedule')}`"
    )
    if isinstance(config, dict):
        lines += _config_lines(config, trial)
    first = next(iter(studies.values())).user_attrs
    shown = first.get("storage")  # masked again: a study written by an older lrtune
    storage = storage_args(str(shown) if shown else None)
    export = command_line("export", "--study", best_study.study_name, *storage, "--out", "lr.yaml")
    lines += [
        "",
        f"Export it: `{export}`"
        + (
            " (export writes the confirmed winner above, the configuration with the best "
            "mean over fresh seeds, which need not be this best single-seed trial)"
            if any(n.startswith("confirmed winner") for n in cmp.confirm)
            else ""
        ),
    ]
    section = Section(title="Winner and best trial", lines=lines)
    if not (isinstance(config, dict) and config.get("total_steps")):
        section.lines.append("(the trial has no stored `config`: no schedule plot)")
        return section
    _plot_schedule(tmp, config, best_study, trial)
    section.image = SCHEDULE_PNG
    section.alt = "the best trial's LR over training"
    section.lines += [
        "",
        "The best trial's LR at every optimizer step (what `lrtune.load_config(...)"
        ".build_scheduler(opt, total_steps)` reproduces):",
    ]
    return section


def _config_lines(config: dict[str, Any], trial: Any) -> list[str]:
    sched = dict(config.get("schedule", {}))
    name = str(sched.pop("name", trial.params.get("schedule", "constant")))
    opt = dict(config.get("optimizer", {}))
    params_text = ", ".join(f"{k}={v}" for k, v in sched.items()) or "no parameters"
    opt_text = ", ".join(f"{k}={v}" for k, v in opt.items() if k not in ("name", "lr"))
    lines = [
        f"- optimizer `{opt.get('name')}` ({opt_text}), schedule `{name}` ({params_text})",
        f"- batch size {config.get('batch_size')}, {config.get('epochs')} epochs, "
        f"{config.get('total_steps')} optimizer steps",
    ]
    if config.get("task"):  # the task's own searched dimensions ([params.task])
        lines.append(f"- task: {', '.join(f'{k}={v}' for k, v in config['task'].items())}")
    return lines


def _plot_schedule(tmp: Path, config: dict[str, Any], best_study: Any, trial: Any) -> None:
    from lrtune.schedules import schedule_curve

    total = int(config["total_steps"])
    sched = dict(config.get("schedule", {}))
    name = str(sched.pop("name"))
    lr = float(config.get("optimizer", {}).get("lr", trial.params.get("lr")))
    epochs = int(config.get("epochs") or 0)
    bounds = best_study.user_attrs.get("bounds")
    shaded = bounds and best_study.user_attrs.get("prior") == "rangetest"
    figures.plot_schedule(
        schedule_curve(name, total, lr, **sched),
        tmp / SCHEDULE_PNG,
        title=f"best trial {best_study.study_name} #{trial.number}: {name}, peak lr {lr:.3g}",
        steps_per_epoch=total // epochs if epochs and total % epochs == 0 else None,
        bounds=tuple(bounds) if shaded else None,
    )


def _importances(tmp: Path, cmp: Any, studies: dict[str, Any]) -> Section:
    imp_study, importances, note = param_importances(cmp, studies)
    section = Section(title="Parameter importances", lines=[note])
    if importances is not None and imp_study is not None:
        figures.plot_importances(
            importances,
            tmp / IMPORTANCES_PNG,
            title=f"parameter importances (PED-ANOVA): {imp_study}",
        )
        section.image, section.alt = IMPORTANCES_PNG, "parameter importances"
    return section


def _lrs_tried(
    tmp: Path, cmp: Any, studies: dict[str, Any], group: str, trial: Any
) -> Section | None:
    """Every finished trial's LR against its value; ``None`` when no trial has both."""
    points, diverged = _lr_points(cmp, studies)
    if not points:
        return None
    figures.plot_lr_scatter(
        points,
        tmp / SCATTER_PNG,
        metric=cmp.metric,
        direction=cmp.direction,
        bounds=start_bounds(studies.values()),
        best=(float(trial.params["lr"]), float(trial.value)) if "lr" in trial.params else None,
        title=f"{group}: LR tried against {cmp.metric}",
    )
    text = (
        "Every finished trial's LR and value, coloured by prior: the range-test prior "
        "(shaded) keeps the search where the loss falls, the wide prior spends trials on "
        "LRs that learn nothing or diverge."
    )
    if diverged:
        text += f" {diverged} trial(s) pruned before reporting a value are not shown."
    return Section(title="LRs tried", lines=[text], image=SCATTER_PNG, alt="LR against value")


def _lr_points(cmp: Any, studies: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """The scatter's points, and how many trials were pruned before reporting a value."""
    from lrtune.search.ladder import Ladder, rung_of

    points: list[dict[str, Any]] = []
    diverged = 0
    for row in cmp.rows:
        ladder = Ladder.from_attrs(studies[row.study].user_attrs)
        for t in finished_trials(studies[row.study]):
            lr = t.params.get("lr")
            if lr is None or (ladder is not None and rung_of(t) != ladder.top):
                continue  # with rungs, only full-length trials: values of one fidelity
            value = value_of(t)
            pruned = value is None
            if pruned:
                value = last_reported(t)
            if value is None:
                diverged += 1
                continue
            points.append(
                {
                    "prior": row.prior,
                    "sampler": row.sampler,
                    "lr": lr,
                    "value": value,
                    "pruned": pruned,
                }
            )
    return points, diverged
