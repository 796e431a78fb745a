"""Optuna samplers and pruners by name. lrtune writes none of its own."""

from __future__ import annotations

from typing import Any

import optuna


def tpe_startup_trials(budget: int) -> int:
    """Random trials before TPE starts modelling: a fifth of the budget, 3 to 10.

    Optuna's default of 10 would make a 10-trial study pure random search; TPE needs only a
    few points to split into "good" and "bad", while too few makes its first model noise.
    """
    return max(3, min(10, round(budget / 5)))


def make_sampler(
    name: str, *, seed: int, budget: int, grid: dict[str, list[Any]] | None = None
) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (grid, random, tpe, qmc, gp), seeded."""
    if name == "grid":
        if grid is None:
            raise ValueError("the grid sampler needs its grid")
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=tpe_startup_trials(budget))
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=tpe_startup_trials(budget))
    raise ValueError(f"unknown sampler {name!r}")


def make_pruner(name: str, *, epochs: int) -> optuna.pruners.BasePruner:
    """``median`` (after 5 trials and the first third of epochs), ``hyperband``, ``none``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(1, epochs // 3))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")
