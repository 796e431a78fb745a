"""What a group's confirm study holds (:mod:`lrtune.group.confirm`), read without torch: for the
comparison's notes, the confirm study's dashboard note and ``export``."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna

from lrtune.direction import sign as direction_sign
from lrtune.group.confirm import confirm_name, group_of
from lrtune.search.states import FINISHED


@dataclass(frozen=True, kw_only=True)
class Confirmation:
    """One configuration's confirmation: its confirm trial and where it was found."""

    trial: optuna.trial.FrozenTrial
    study: str
    source_study: str
    source_trial: int
    source_value: float | None
    mean: float | None
    sd: float | None
    seeds: list[int]
    values: list[float | None]

    @property
    def diverged(self) -> bool:
        """A seed diverged: the mean is undefined and the configuration ranks last."""
        return self.trial.state == optuna.trial.TrialState.PRUNED

    def record(self) -> dict[str, Any]:
        """``source.confirmed`` of an export."""
        return {
            "seeds": self.seeds,
            "mean": self.mean,
            "sd": self.sd,
            "study": self.study,
            "trial": self.trial.number,
        }


@dataclass(frozen=True, kw_only=True)
class ConfirmState:
    """What the confirm study of a group holds, best seed mean first."""

    study: str
    asked: int
    found: int
    budget: int
    confirmations: list[Confirmation]

    @property
    def best(self) -> Confirmation | None:
        """The configuration with the best seed mean (``None`` if none has one)."""
        done = [c for c in self.confirmations if c.mean is not None]
        return done[0] if done else None


def read_confirmations(storage: optuna.storages.BaseStorage, group: str) -> ConfirmState | None:
    """The confirmations of ``group``; ``None`` when it has no confirm study."""
    name = confirm_name(group)
    if name not in optuna.get_all_study_names(storage):
        return None
    study = optuna.load_study(study_name=name, storage=storage)
    sign = direction_sign(study.direction)
    out = []
    for t in study.get_trials(deepcopy=False, states=FINISHED):
        data = t.user_attrs.get("confirm")
        source = t.user_attrs.get("source", {})
        if not isinstance(data, dict) or not isinstance(source, dict):
            continue
        mean = data.get("mean")
        mean = float(mean) if isinstance(mean, (int, float)) and math.isfinite(mean) else None
        sd = data.get("sd")
        out.append(
            Confirmation(
                trial=t,
                study=name,
                source_study=str(source.get("study")),
                source_trial=int(source.get("trial", -1)),
                source_value=source.get("value"),
                mean=mean,
                sd=float(sd) if isinstance(sd, (int, float)) else None,
                seeds=[int(s) for s in data.get("seeds", [])],
                values=list(data.get("values", [])),
            )
        )
    # Diverged (no mean) last; ties: the earlier trial.
    out.sort(key=lambda c: (c.mean is None, sign * (c.mean or 0.0), c.trial.number))
    attrs = study.user_attrs
    return ConfirmState(
        study=name,
        asked=int(attrs.get("asked", 0)),
        found=int(attrs.get("found", 0)),
        budget=int(attrs.get("budget", 0)),
        confirmations=out,
    )


def best_for_export(storage_url: str, attrs: dict[str, Any]) -> Confirmation | None:
    """The confirmation ``export`` takes for a study with these user attrs: the best seed
    mean of its group's confirm study; ``None`` without one (export as before)."""
    from lrtune.storage import open_storage

    group = group_of(attrs)
    if group is None or "baseline" in attrs:  # a baseline arm exports its own best trial
        return None
    state = read_confirmations(open_storage(storage_url), group)
    return state.best if state is not None else None
