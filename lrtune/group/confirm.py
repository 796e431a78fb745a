"""Confirmed winners: re-train a group's best configurations on fresh training seeds.

Every search trial trains with the same seed, so the best single-seed trial of a group is
partly luck (two seeds of one configuration differ by 8-13% on small tasks). Once every
study of a group has its budget, the ``confirm`` (K) best distinct configurations of the
whole group are enqueued in one extra study, ``{group}.confirm`` (same direction). Each of
its trials trains its configuration on ``confirm_seeds`` (S) fresh seeds in turn; its value
is the mean over the seeds, and its user attr ``confirm`` is
``{"seeds": [...], "values": [...], "mean": m, "sd": sd}``.

The confirm study carries ``confirm_of`` (not ``group``), so it is never a row of the
comparison. Whoever first sees the budgets met (``lrtune study`` in-process or a worker)
creates it; :func:`ensure` is idempotent, and a duplicate enqueued by two workers at once
steps back as ``surplus`` like an over-budget search trial. A seed that diverges makes the
trial PRUNED (``diverged``, ``prune_reason`` naming the seed), like a diverged search
trial: it counts as done, shows in the dashboard, and ranks last.

This module is the confirm study itself (which configurations, created and enqueued once,
the worker hook :func:`join`); :mod:`lrtune.group.confirm_trial` is one of its trials (a
configuration trained over the fresh seeds) and :mod:`lrtune.group.confirmations` reads
what it holds for the comparison, its dashboard note and ``export``. Torch-free.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from lrtune.direction import sign as direction_sign
from lrtune.search.ladder import Ladder, study_usage, top_rung
from lrtune.search.states import FINISHED, group_study_names, unfinished_studies

log = logging.getLogger(__name__)

#: Confirmation seeds are ``spec.seed + SEED_OFFSET + i``: never the search's own seed.
SEED_OFFSET = 1000
#: Trials of the confirm study that hold (or will hold) a confirmation.
_PRESENT = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)


def confirm_name(group: str) -> str:
    """The name of ``group``'s confirm study."""
    return f"{group}.confirm"


def confirm_seeds(seed: int, count: int) -> list[int]:
    """The ``count`` fresh training seeds derived from the spec's ``seed``."""
    return [seed + SEED_OFFSET + i for i in range(count)]


def is_confirm_study(attrs: dict[str, Any]) -> bool:
    """Do these study user attrs belong to a confirm study?"""
    return "confirm_of" in attrs


def params_key(params: dict[str, Any]) -> str:
    """Configurations are the same when their params are (``lr``, ``schedule``, ...)."""
    return json.dumps(params, sort_keys=True, default=str)


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A finished search trial proposed for confirmation."""

    study: str
    trial: int
    value: float
    params: dict[str, Any]


def candidates(studies: list[optuna.Study]) -> list[Candidate]:
    """The group's complete finite trials (with rungs, the top rung's), best single-seed
    value first, one per distinct configuration (the earlier study and trial wins a tie)."""
    if not studies:
        return []
    sign = direction_sign(studies[0].direction)
    found = []
    for index, s in enumerate(studies):
        complete = s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        for t in top_rung(complete, Ladder.from_attrs(s.user_attrs)):
            if t.value is not None and math.isfinite(t.value):
                found.append((sign * t.value, index, t.number, s.study_name, t))
    found.sort(key=lambda x: x[:3])
    seen: set[str] = set()
    out = []
    for _, _, number, name, t in found:
        key = params_key(t.params)
        if key not in seen:
            seen.add(key)
            out.append(
                Candidate(
                    study=name, trial=number, value=float(t.value or 0.0), params=dict(t.params)
                )
            )
    return out


def _budgets_met(studies: list[optuna.Study]) -> bool:
    for s in studies:
        done, _ = study_usage(s)  # with rungs, compute
        if done < float(s.user_attrs.get("budget", 0)):
            return False
    return bool(studies)


def ensure(storage: optuna.storages.BaseStorage, group: str) -> optuna.Study | None:
    """Create ``{group}.confirm`` and enqueue the configurations it still lacks, once every
    study of ``group`` has its budget; ``None`` when confirmation is off or not due.

    Safe to call again (and from two workers at once): a configuration already waiting,
    running or done is not enqueued again. The study's ``budget`` is the number of
    distinct configurations it must confirm; ``asked``/``found`` record ``--confirm`` and
    the distinct finished configurations there were.
    """
    if unfinished_studies(storage, group):
        return None  # a study of the group is not fully created: its budget is to come
    studies = [
        optuna.load_study(study_name=n, storage=storage) for n in group_study_names(storage, group)
    ]
    if not _budgets_met(studies):
        return None
    spec = dict(studies[0].user_attrs.get("spec", {}))
    asked = int(spec.get("confirm", 3))
    count = int(spec.get("confirm_seeds", 2))
    if asked <= 0:
        return None
    # A baseline arm (lrtune.group.baseline) trains another optimizer than the spec's: the
    # confirmation re-trains the schedule search's configurations only.
    found = candidates([s for s in studies if "baseline" not in s.user_attrs])
    if not found:
        return None
    first = studies[0]
    study = optuna.create_study(
        storage=storage,
        study_name=confirm_name(group),
        direction=first.direction,
        load_if_exists=True,
    )
    if not is_confirm_study(study.user_attrs):
        attrs: dict[str, Any] = {
            key: first.user_attrs[key]
            for key in ("lrtune_version", "task", "task_dir", "spec", "epochs", "metric", "storage")
            if key in first.user_attrs
        }
        attrs.update(
            sampler="confirm",
            prior="-",
            seeds=confirm_seeds(int(spec.get("seed", 0)), count),
        )
        for name, value in attrs.items():
            study.set_user_attr(name, value)
        # Last: a confirm study is one (is_confirm_study) only once every attr is written,
        # so the next call writes again what a crash cut short.
        study.set_user_attr("confirm_of", group)
    elif len(study.user_attrs.get("seeds", [])) != count:
        log.warning(
            "%s keeps its seeds %s (confirm_seeds changed to %d after it was created)",
            study.study_name,
            study.user_attrs.get("seeds"),
            count,
        )
    wanted = found[:asked]
    present = {
        params_key(t.user_attrs.get("params", {}))
        for t in study.get_trials(deepcopy=False)
        if t.state in _PRESENT and _counts_for_key(t)
    }
    for c in wanted:
        key = params_key(c.params)
        if key not in present:
            study.enqueue_trial(
                c.params,
                user_attrs={
                    "source": {"study": c.study, "trial": c.trial, "value": c.value},
                    "params": c.params,
                },
                skip_if_exists=False,
            )
            present.add(key)
    study.set_user_attr("asked", asked)
    study.set_user_attr("found", len(found))
    study.set_user_attr("budget", len(present))
    return study


def _counts_for_key(trial: optuna.trial.FrozenTrial) -> bool:
    # A fresh trial a worker opened with nothing to confirm has no params: it holds nothing.
    return "params" in trial.user_attrs


def join(
    storage: optuna.storages.BaseStorage,
    names: list[str],
    loaded: dict[str, Any],
    *,
    load_study: Callable[[str], tuple[optuna.Study, Callable[[optuna.Trial], float], int]],
) -> bool:
    """The worker's hook once its studies have their budgets: add (or refresh) the confirm
    study of each of their groups to ``names``/``loaded``, loaded by ``load_study`` (the
    worker's, which checks the task it may import, as for any study). True when
    confirmations are left to run."""
    groups: list[str] = []
    for n in names:
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(n))
        g = attrs.get("confirm_of") or attrs.get("group")
        if isinstance(g, str) and g not in groups:
            groups.append(g)
    work = False
    for g in groups:
        study = ensure(storage, g)
        if study is None:
            continue
        name = study.study_name
        budget = int(study.user_attrs["budget"])
        if name not in loaded:
            names.append(name)
            loaded[name] = load_study(name)
        loaded[name] = (loaded[name][0], loaded[name][1], budget)
        done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
        work = work or done < budget
    return work


def earlier_duplicate(trial: optuna.Trial, params: dict[str, Any]) -> int | None:
    """The number of an earlier trial of the confirm study holding the same configuration
    (two workers enqueued it at once): the later one steps back as ``surplus``."""
    key = params_key(params)
    for t in trial.study.get_trials(deepcopy=False, states=_PRESENT):
        if t.number < trial.number and params_key(t.user_attrs.get("params", {})) == key:
            return t.number
    return None


def set_options(storage: optuna.storages.BaseStorage, group: str, asked: int, seeds: int) -> None:
    """Store ``confirm``/``confirm_seeds`` in the spec of every study of ``group``, so a
    re-run with another ``--confirm`` reaches the workers (studies keep the rest)."""
    for name in group_study_names(storage, group):
        study_id = storage.get_study_id_from_name(name)
        spec = dict(storage.get_study_user_attrs(study_id).get("spec", {}))
        if spec.get("confirm") != asked or spec.get("confirm_seeds") != seeds:
            spec.update(confirm=asked, confirm_seeds=seeds)
            storage.set_study_user_attr(study_id, "spec", spec)


def group_of(attrs: dict[str, Any]) -> str | None:
    """The group a study (search or confirm) belongs to."""
    group = attrs.get("confirm_of") or attrs.get("group")
    return group if isinstance(group, str) else None
