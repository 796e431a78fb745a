"""A trial's :class:`~lrtune.training.resolved.TrainConfig`: the spec's fixed training
options with the configuration the trial sampled (or, for a confirm trial, was given).

The one place a spec becomes a training config, so a search trial and the confirmation of
its configuration train with the same optimizer, precision, accumulation, clipping and
setup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lrtune.search.dims import Setup
from lrtune.search.spec import StudySpec
from lrtune.training.resolved import TrainConfig


def trial_config(
    spec: StudySpec,
    *,
    lr: float,
    schedule: str,
    schedule_params: Mapping[str, Any],
    optimizer_params: Mapping[str, Any],
    setup: Setup,
    seed: int,
    device: str,
    epochs: int | None = None,
    log_dir: str | None = None,
) -> TrainConfig:
    """The training config of one trial of ``spec``: ``lr``, ``schedule`` and the
    parameters it sampled, the searched ``setup`` (batch size, group multipliers, task
    parameters), trained for ``epochs`` (default ``spec.epochs``; a rung's with rungs) on
    ``seed``; optimizer, precision, accumulation and clipping are the spec's."""
    return TrainConfig(
        lr=lr,
        optimizer=spec.optimizer,
        schedule=schedule,
        schedule_params=dict(schedule_params),
        optimizer_params=dict(optimizer_params),
        epochs=spec.epochs if epochs is None else epochs,
        seed=seed,
        device=device,
        precision=spec.precision,
        accumulate=spec.accumulate,
        clip_grad_norm=spec.clip_grad_norm,
        batch_size=setup.batch_size,
        lr_mults=setup.lr_mults,
        task_params=setup.task_params,
        log_dir=log_dir,
    )
