"""A live progress display of a group's studies: trials done, best so far, ETA.

On a terminal it redraws one line per study in place; when output is not a terminal (CI,
a log file) it prints nothing until the final table.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import optuna

from lrtune.search.ladder import Ladder, is_result, usage


class Progress:
    """Redraws ``names``' progress on ``stream`` when it is a terminal."""

    def __init__(self, names: list[str], budgets: dict[str, int], stream: TextIO | None = None):
        self.names = names
        self.budgets = budgets
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty()
        self.start = time.monotonic()
        self._drawn = 0
        self._done0: float | None = None
        self._studies: dict[str, optuna.Study] = {}
        self._ladders: dict[str, Ladder | None] = {}

    def update(self, storage: optuna.storages.BaseStorage) -> None:
        """Read the studies' state from ``storage`` and redraw."""
        if not self.live:
            return
        lines = []
        total_done = total_budget = 0.0
        for name in self.names:
            if name not in self._studies:
                # Loaded once: a loaded study caches its finished trials, so each redraw
                # reads only the new and running ones, not the whole study again.
                self._studies[name] = optuna.load_study(study_name=name, storage=storage)
                self._ladders[name] = Ladder.from_attrs(self._studies[name].user_attrs)
            study = self._studies[name]
            trials = study.get_trials(deepcopy=False)
            done, _ = usage(trials, self._ladders[name])  # with rungs: compute
            running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
            budget = self.budgets[name]
            total_done += min(done, budget)
            total_budget += budget
            values = [float(t.value or 0.0) for t in trials if is_result(t, self._ladders[name])]
            pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
            best = f"{pick(values):.4g}" if values else "-"
            bar = "#" * int(20 * min(done, budget) / max(budget, 1))
            lines.append(
                f"  {name:<32} [{bar:<20}] {done:>3.3g}/{budget:<3} running {running}  best {best}"
            )
        if self._done0 is None:
            self._done0 = total_done
        elapsed = time.monotonic() - self.start
        finished_here = total_done - self._done0
        eta = "-"
        if finished_here > 0:
            eta = f"{elapsed / finished_here * (total_budget - total_done):.0f} s"
        lines.append(f"  {total_done:.3g}/{total_budget:g} trials, {elapsed:.0f} s, ETA {eta}")
        out = "".join("\x1b[1A\x1b[2K" for _ in range(self._drawn)) + "\n".join(lines) + "\n"
        self.stream.write(out)
        self.stream.flush()
        self._drawn = len(lines)
