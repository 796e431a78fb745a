"""The compute axis's figures as markdown (benchmarks/compute_axis.py): one table per task
and the issue's goals read off it (issue 16, item 5)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench_stats import med_iqr, pct, quantile

#: compute_axis.ARMS as its --arms default: a run with other arms names them in its header.
DEFAULT_ARMS = (
    "tpe+prior rungs,tpe+prior full,tpe+prior hyperband,tpe+prior median,tpe rungs (no prior)"
)


def goals(res: dict[str, Any]) -> list[str]:
    """The issue's goals, read off one task's figures."""
    arms, budgets, out = res["arms"], res["budgets"], []
    top = budgets[-1]
    rungs, full = arms.get("tpe+prior rungs"), arms.get("tpe+prior full")
    rt = statistics.median(res["rt_fte"]) if res["rt_fte"] else math.nan
    if rungs and full:
        target = quantile(full[f"r{top}"], 0.5)
        for b in budgets[:-1]:
            share = (b + rt) / (top + rt) if math.isfinite(rt) else b / top
            if share > 1 / 3 + 1e-9:
                continue
            mine = quantile(rungs[f"r{b}"], 0.5)
            wins = sum(x <= y for x, y in zip(rungs[f"r{b}"], full[f"r{top}"], strict=True))
            out.append(
                f"rungs at {b} ({share:.0%} of the compute, range test included) against full "
                f"fidelity at {top}: {fmt(mine)} vs {fmt(target)} "
                f"({'met' if mine <= target else 'not met'}; rungs not worse in "
                f"{wins}/{len(full[f'r{top}'])} repeats)"
            )
        for b in sorted(int(k[3:]) for k in rungs if k.startswith("own") and k[3:].isdigit()):
            share = (b + rt) / (top + rt) if math.isfinite(rt) else b / top
            mine = quantile(rungs[f"own{b}"], 0.5)
            wins = sum(x <= y for x, y in zip(rungs[f"own{b}"], full[f"r{top}"], strict=True))
            out.append(
                f"a rung study of `--trials {b}` ({share:.0%} of the compute, range test "
                f"included) against full fidelity at {top}: {fmt(mine)} vs {fmt(target)} "
                f"({'met' if mine <= target else 'not met'}; not worse in "
                f"{wins}/{len(full[f'r{top}'])} repeats)"
            )
    for other in ("tpe+prior hyperband", "tpe+prior median"):
        if rungs and other in arms:
            cells = []
            for b in budgets:
                a, o = rungs[f"r{b}"], arms[other][f"r{b}"]
                wins = sum(x <= y for x, y in zip(a, o, strict=True))
                cells.append(
                    f"{b}: {fmt(quantile(a, 0.5))} vs {fmt(quantile(o, 0.5))} ({wins}/{len(a)})"
                )
            out.append(
                f"rungs against {other.split()[-1]} at equal compute (median regret, "
                f"repeats where rungs are not worse): " + "; ".join(cells)
            )
    return out


def fmt(x: float) -> str:
    """A regret; ∞ when nothing was exported or the export diverged."""
    return pct(x) if math.isfinite(x) else "∞"  # pct would say "diverged"


def markdown(results: list[dict[str, Any]], headers: list[str]) -> str:
    lines = ["### Search at equal compute", "", *[f"- {h}" for h in headers], ""]
    lines += [
        "True regret (mean over the oracle's 3 seeds, against its best seed mean) of what a "
        "user would export after c full-trial equivalents of training, median [IQR] over "
        "repeats; ∞ (or a quantile shown ≥, which leans on one): nothing to export yet or "
        "the export diverged on a true-value seed. "
        "Compute spent: mean over repeats (a rung study may end past its budget by part of "
        "a trial). The range test (prior arms) is not in c; its cost is shown.",
        "",
    ]
    for res in results:
        o, budgets = res["oracle"], res["budgets"]
        rt = statistics.median(res["rt_fte"]) if res["rt_fte"] else math.nan
        lines += [
            f"#### {res['task']} ({res['optimizer']}, {res['epochs']} epochs, rungs "
            f"{','.join(map(str, res['rungs']))}, η = {res['eta']})",
            "",
            f"Oracle: {o['lrs']} LRs × {len(o['schedules'])} schedules "
            f"({', '.join(o['schedules'])}) × {o['seeds']} seeds; best seed mean "
            f"{o['best']:.4g} ({o['best_schedule']}, lr {o['best_lr']:.3g}). Range test: "
            f"{rt:.2f} trial-equivalents (median). Repeats: {len(res['rt_fte'])}.",
            "",
            "| arm | "
            + " | ".join(f"regret at {b}" for b in budgets)
            + f" | trials (compute) at {budgets[-1]} |",
            "|---|" + "---|" * (len(budgets) + 1),
        ]
        for label, arm in res["arms"].items():
            cells = [med_iqr(arm[f"r{b}"], fmt) for b in budgets]
            n = statistics.fmean(arm[f"trials{budgets[-1]}"])
            c = statistics.fmean(arm[f"spent{budgets[-1]}"])
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {n:.1f} ({c:.2f}) |")
            for b in sorted(int(k[3:]) for k in arm if k.startswith("own") and k[3:].isdigit()):
                own = [med_iqr(arm[f"own{b}"], fmt) if c == b else "-" for c in budgets]
                spent = statistics.fmean(arm[f"ownspent{b}"])
                lines.append(
                    f"| {label}, a study of `--trials {b}` | "
                    + " | ".join(own)
                    + f" | ({spent:.2f}) |"
                )
        lines.append("")
        for label, arm in res["arms"].items():
            if "pruned" in arm:
                lines.append(
                    f"- {label}: pruned (or diverged) "
                    f"{pct(statistics.fmean(arm['pruned']))} of the trials (mean)"
                )
        lines += [f"- {g}" for g in goals(res)]
        lines.append("")
    # med_iqr writes a quantile that is inf as "diverged": here it may be no export at all.
    return "\n".join(ln.replace("diverged", "∞") if ln.startswith("| ") else ln for ln in lines)


def header_of(meta: dict[str, Any]) -> str:
    a = meta["args"]
    opts = (
        f"--tasks {a['tasks']} --repeats {a['repeats']} --budgets {a['budgets']} "
        f"--oracle-lrs '{a['oracle_lrs']}'"
        + (f" --schedules '{a['schedules']}'" if a["schedules"] else "")
        + (f" --rungs '{a['rungs']}'" if a["rungs"] else "")
        + (f" --first-repeat {a['first_repeat']}" if a["first_repeat"] else "")
        + (f" --own-budgets '{a['own_budgets']}'" if a.get("own_budgets", "5") != "5" else "")
        + (f" --arms '{a['arms']}'" if a.get("arms", DEFAULT_ARMS) != DEFAULT_ARMS else "")
    )
    return (
        f"`python benchmarks/search_efficiency.py --axis compute {opts}`: {meta['machine']}, "
        f"{meta['cores']} cores, CPU, OMP_NUM_THREADS={meta['omp_threads'] or '-'}, torch "
        f"{meta['torch']}, {meta['date']}, load average {meta['load_start']} at the start, "
        f"{meta['load_end']} at the end; "
        + ", ".join(f"{r['task']} {r['seconds'] / 60:.0f} min" for r in meta["tasks"])
        + "."
    )
