"""Which trials count, and which studies form a group: read from a storage, without torch.

The comparison, the progress display, the widening of bounds and the read-only commands
(``lrtune ls``, :mod:`lrtune.search.listing`) need these; keeping them here (Optuna only)
lets them run without importing torch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import optuna

#: Trials that count toward a study's budget: complete or pruned (a pruned trial was a
#: real, if short, training run). FAIL trials (errors, surplus) do not count.
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def finished(trials: Iterable[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The finished trials of ``trials``, in the order they were started (trial number)."""
    return sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number)


#: The user attrs a search study holds once created (and ``rangetest`` when its prior is
#: the range test). ``group`` is written last (:mod:`lrtune.group.creation`): a study whose
#: creation was cut short (a kill, a full disk) is no member of its group yet, and the
#: same ``lrtune study`` command finishes it.
CREATED_ATTRS = ("spec", "sampler", "prior", "repeat", "seed", "bounds", "budget", "epochs")


def is_created(attrs: dict[str, Any]) -> bool:
    """Was the search study with these user attrs created to the end (``group`` written
    last, after every other attr)? Also False for a study an older lrtune left half-made
    (``group`` then came second)."""
    needed = (
        *CREATED_ATTRS,
        "group",
        *(("rangetest",) if attrs.get("prior") == "rangetest" else ()),
    )
    return all(key in attrs for key in needed)


def study_name(group: str, sampler: str, prior: str, repeat: int = 1) -> str:
    """``{group}.{sampler}.{prior}``, and ``.r{K}`` for repeat K >= 2."""
    return f"{group}.{sampler}.{prior}" + ("" if repeat == 1 else f".r{repeat}")


def group_study_names(storage: optuna.storages.BaseStorage, group: str) -> list[str]:
    """Names of the studies of ``group`` in ``storage``, in creation order: those created
    to the end (:func:`is_created`; see :func:`unfinished_studies` for the others)."""
    return [
        s.study_name
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.user_attrs.get("group") == group and is_created(s.user_attrs)
    ]


def unfinished_studies(storage: optuna.storages.BaseStorage, group: str) -> list[str]:
    """The studies of ``group`` that ``lrtune study`` has not finished creating: present
    but half-written (a study of the group by its name, ``{group}.{sampler}.{prior}[.rK]``,
    or by its ``group`` attr), or missing although the spec of a created one names them."""
    pattern = re.compile(re.escape(group) + r"\.[\w-]+\.(rangetest|none)(\.r[0-9]+)?")
    present, created, expected = [], set(), []
    for s in optuna.get_all_study_summaries(storage, include_best_trial=False):
        attrs = s.user_attrs
        if attrs.get("group", group) != group or "confirm_of" in attrs:
            continue
        if "group" not in attrs and not pattern.fullmatch(s.study_name):
            continue
        present.append(s.study_name)
        if is_created(attrs):
            created.add(s.study_name)
            expected += [n for n in _spec_names(attrs, group) if n not in expected]
    unfinished = [n for n in present if n not in created]
    return unfinished + [n for n in expected if n not in present]


def counts(study: optuna.Study) -> tuple[int, int]:
    """``(finished, running)`` trials; finished = complete or pruned."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state in FINISHED for t in trials)
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    return done, running


def _spec_names(attrs: dict[str, Any], group: str) -> list[str]:
    """The study names the spec stored on a search study of ``group`` makes (as
    ``lrtune.group.prepare.study_refs``: samplers, then baselines, per prior and repeat). A
    baseline arm's own spec names no others."""
    spec = attrs.get("spec")
    if not isinstance(spec, dict) or "baseline" in attrs:
        return []
    arms = [*spec.get("samplers", []), *spec.get("baseline", [])]
    return [
        study_name(group, str(arm), str(prior), repeat)
        for repeat in range(1, int(spec.get("repeats", 1)) + 1)
        for prior in spec.get("prior", [])
        for arm in arms
    ]
