"""Contract tests run over every sampler and pruner name lrtune accepts.

Each sampler must propose only points of lrtune's search space (``lr`` inside the bounds,
a schedule the spec lists), reproducibly for a seed; each pruner must take one report per
epoch, and the pruning ones must stop a trial far worse than the others.
"""

from __future__ import annotations

import math

import optuna
import pytest

from lrtune.search.samplers import PRUNERS, SAMPLERS, make_pruner, make_sampler
from lrtune.search.space import grid_space, suggest
from lrtune.search.spec import PRUNERS as SPEC_PRUNERS
from lrtune.search.spec import SAMPLERS as SPEC_SAMPLERS
from lrtune.search.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = StudySpec(schedules=("constant", "cosine", "onecycle"), grid_points=3)
BOUNDS = (1e-3, 1e-1)
TRIALS = 9


def _proposals(name: str, seed: int) -> list[tuple[float, str]]:
    sampler = make_sampler(name, seed=seed, budget=TRIALS, grid=grid_space(SPEC, BOUNDS))
    study = optuna.create_study(sampler=sampler)
    seen: list[tuple[float, str]] = []

    def objective(trial: optuna.Trial) -> float:
        lr, schedule, _ = suggest(trial, SPEC, BOUNDS)
        seen.append((lr, schedule))
        # A bowl in log LR with its floor at 1e-2: any sane sampler converges towards it.
        return (math.log10(lr) + 2.0) ** 2 + (0.0 if schedule == "cosine" else 0.1)

    study.optimize(objective, n_trials=TRIALS)
    return seen


def test_the_spec_accepts_exactly_the_names_the_tables_hold() -> None:
    assert SPEC_SAMPLERS == SAMPLERS
    assert SPEC_PRUNERS == PRUNERS


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_proposes_only_the_search_space(name: str) -> None:
    seen = _proposals(name, seed=3)
    assert len(seen) == TRIALS
    for lr, schedule in seen:
        assert BOUNDS[0] * (1 - 1e-9) <= lr <= BOUNDS[1] * (1 + 1e-9)
        assert schedule in SPEC.schedules
    # The first proposals must not all be one point: a sampler that ignores its space
    # (or its seed) shows up here.
    assert len({round(lr, 12) for lr, _ in seen}) > 1


@pytest.mark.parametrize("name", SAMPLERS)
def test_sampler_is_reproducible_for_a_seed(name: str) -> None:
    assert _proposals(name, seed=5) == _proposals(name, seed=5)


@pytest.mark.parametrize("name", ["random", "tpe", "qmc", "gp"])
def test_another_seed_gives_other_points(name: str) -> None:
    assert _proposals(name, seed=5)[:3] != _proposals(name, seed=6)[:3]


def test_grid_sampler_needs_its_grid_and_unknown_names_fail() -> None:
    with pytest.raises(ValueError, match="grid"):
        make_sampler("grid", seed=0, budget=3)
    with pytest.raises(ValueError, match="unknown sampler"):
        make_sampler("cmaes", seed=0, budget=3)
    with pytest.raises(ValueError, match="unknown pruner"):
        make_pruner("patient", epochs=3)


def _prune_run(name: str, epochs: int = 9) -> list[optuna.trial.TrialState]:
    # A fixed study name: Hyperband puts a trial in a bracket by a CRC of the study name and
    # the trial number, and only compares trials within one bracket.
    study = optuna.create_study(
        study_name="contract",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=make_pruner(name, epochs=epochs),
    )
    states = []
    for i in range(15):
        trial = study.ask()
        # Twelve good trials whose loss falls, then three ten times worse at every epoch.
        scale = 10.0 if i >= 12 else 1.0 + 0.01 * i
        pruned = False
        for epoch in range(epochs):
            trial.report(scale / (epoch + 1), epoch)
            if trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, scale / epochs)
        states.append(study.trials[-1].state)
    return states


@pytest.mark.parametrize("name", PRUNERS)
def test_pruner_takes_one_report_per_epoch(name: str) -> None:
    states = _prune_run(name)
    assert len(states) == 15
    if name == "none":
        assert all(s == optuna.trial.TrialState.COMPLETE for s in states)
    else:
        # The far worse trials are stopped (Hyperband: at least one shares a bracket with
        # good ones; the median pruner stops all three).
        bad = states[-3:]
        assert optuna.trial.TrialState.PRUNED in bad
        if name == "median":
            assert bad == [optuna.trial.TrialState.PRUNED] * 3
