"""Baseline arms: studies beside the schedule search that answer "was tuning the schedule
worth it?".

``--baseline schedulefree`` adds, per prior (and repeat), a study ``{group}.schedulefree.
{prior}`` that trains the task with a schedule-free optimizer (Defazio et al., 2024:
``schedulefree_adamw`` for an Adam-family task, else ``schedulefree_sgd``) and searches only
its LR and a linear warmup (``constant``'s ``warmup_frac``) with TPE, on the same budget. Its
spec is derived from the group's by :func:`baseline_spec` and stored on its studies, so a
worker runs them like any other study. Torch-free.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from lrtune.search.spec import BASELINE_NAMES, StudySpec
from lrtune.training.optimizers import PARAMS

__all__ = ["BASELINES", "WARMUP_RANGE", "baseline_spec", "schedule_free_optimizer"]

#: The baselines ``--baseline`` takes.
BASELINES: tuple[str, ...] = BASELINE_NAMES

#: The warmup a schedule-free study searches (a fraction of the run, as ``warmup_cosine``'s).
WARMUP_RANGE: list[Any] = ["float", 0.0, 0.2, False]

#: The sampler of a baseline study: two dimensions (LR, warmup) suit TPE.
BASELINE_SAMPLER = "tpe"


def schedule_free_optimizer(optimizer: str) -> str:
    """The schedule-free optimizer standing in for ``optimizer``: AdamW's for the Adam
    family, SGD's (with momentum) for the others."""
    if optimizer in ("adam", "adamw", "schedulefree_adamw"):
        return "schedulefree_adamw"
    return "schedulefree_sgd"


def baseline_spec(spec: StudySpec, name: str = "schedulefree") -> StudySpec:
    """The spec of ``spec``'s baseline ``name``: the schedule-free optimizer with the
    group's optimizer parameters that it takes (fixed and searched), schedule ``constant``
    with its ``warmup_frac`` searched, TPE; everything else (task, epochs, bounds, budget,
    training options, range test) as the group's."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}: expected one of {', '.join(BASELINES)}")
    optimizer = schedule_free_optimizer(spec.optimizer)
    takes = PARAMS[optimizer]
    fixed = {k: v for k, v in spec.optimizer_params.items() if k in takes}
    searched = {k: v for k, v in spec.params.get("optimizer", {}).items() if k in takes}
    if spec.optimizer == "adam" and "weight_decay" not in {*fixed, *searched}:
        fixed["weight_decay"] = 0.0  # Adam's default, not AdamW's 0.01
    params: dict[str, Any] = {"constant": {"warmup_frac": list(WARMUP_RANGE)}}
    if searched:
        params["optimizer"] = searched
    return dataclasses.replace(
        spec,
        optimizer=optimizer,
        optimizer_params=fixed,
        schedules=("constant",),
        params=params,
        samplers=(BASELINE_SAMPLER,),
        baseline=(),
    )
