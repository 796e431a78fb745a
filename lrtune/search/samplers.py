"""Optuna samplers and pruners by name: one name → factory table each. lrtune writes none
of its own; it only picks Optuna's and sets their seeds and warm-up lengths."""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Any

import optuna

from lrtune.search.ladder import rung_of

Grid = dict[str, list[Any]]


def tpe_startup_trials(budget: int) -> int:
    """Random trials before TPE starts modelling: a fifth of the budget, 3 to 10.

    Optuna's default of 10 would make a 10-trial study pure random search; TPE needs only a
    few points to split into "good" and "bad", while too few makes its first model noise.
    """
    return max(3, min(10, round(budget / 5)))


def _grid(seed: int, budget: int, grid: Grid | None) -> optuna.samplers.BaseSampler:
    if grid is None:
        raise ValueError("the grid sampler needs its grid")
    return optuna.samplers.GridSampler(grid, seed=seed)


#: sampler name → ``factory(seed, budget, grid)``.
SAMPLER_FACTORIES: dict[str, Callable[[int, int, Grid | None], optuna.samplers.BaseSampler]] = {
    "grid": _grid,
    "random": lambda seed, _budget, _grid: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed, budget, _grid: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=tpe_startup_trials(budget)
    ),
    "qmc": lambda seed, _budget, _grid: optuna.samplers.QMCSampler(
        seed=seed, warn_independent_sampling=False
    ),
    "gp": lambda seed, budget, _grid: optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=tpe_startup_trials(budget)
    ),
}

#: pruner name → ``factory(epochs)``. The median pruner waits for 5 trials and the first
#: third of the epochs: early epochs of a schedule with warmup say little about its end.
#: Even so, a schedule that decays late (wsd, step, constant) looks worse mid-run than one
#: that decays early (cosine) at the same LR and ends better, so lrtune's default is none
#: (README, "Pruning").
PRUNER_FACTORIES: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "median": lambda epochs: optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=max(1, epochs // 3)
    ),
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
    "none": lambda _epochs: optuna.pruners.NopPruner(),
}

SAMPLERS: tuple[str, ...] = tuple(SAMPLER_FACTORIES)
PRUNERS: tuple[str, ...] = tuple(PRUNER_FACTORIES)


def make_sampler(
    name: str, *, seed: int, budget: int, grid: Grid | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (one of :data:`SAMPLERS`), seeded."""
    if name not in SAMPLER_FACTORIES:
        raise ValueError(f"unknown sampler {name!r}")
    return SAMPLER_FACTORIES[name](seed, budget, grid)


def make_pruner(name: str, *, epochs: int) -> optuna.pruners.BasePruner:
    """The pruner ``name`` (one of :data:`PRUNERS`) for trials of ``epochs`` epochs."""
    if name not in PRUNER_FACTORIES:
        raise ValueError(f"unknown pruner {name!r}")
    return PRUNER_FACTORIES[name](epochs)


class BottomRungView(optuna.pruners.HyperbandPruner):
    """The pruner of a study with rungs: it never prunes (a rung trial trains its whole
    compressed schedule), and it shows samplers only the bottom rung's trials.

    The sampler proposes bottom-rung configurations, so it must learn from bottom-rung
    values only: fed every rung, TPE would rank a 9-epoch loss against 1-epoch losses.
    Optuna lets a pruner give samplers a filtered study (``optuna.pruners._filter_study``,
    how ``HyperbandPruner`` keeps its brackets apart); this fills in that hook with the
    trial's rung as its bracket. Optuna 5.1's own bracket study filters ``get_trials`` but
    not ``_get_trials``, which TPE, GP and QMC read, so the view here filters both.
    """

    def __init__(self) -> None:
        super().__init__(min_resource=1, max_resource=1)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return False

    def _get_bracket_id(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int:
        return rung_of(trial)

    def _create_bracket_study(self, study: optuna.Study, bracket_id: int) -> optuna.Study:
        return _RungStudy(study, bracket_id)


class _RungStudy(optuna.Study):
    """``study`` seen through one rung: same storage, ids and trial cache, fewer trials."""

    def __init__(self, study: optuna.Study, rung: int) -> None:  # no storage round trip
        self.__dict__.update(study.__dict__)
        self._whole = study
        self._rung = rung

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[optuna.trial.TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[optuna.trial.FrozenTrial]:
        trials = super()._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if rung_of(t) == self._rung]

    def stop(self) -> None:
        self._whole.stop()
