"""Multi-fidelity search (SPEC "Multi-fidelity search (rungs)"): a study's ladder of rungs,
the compute each trial costs, and what a worker runs next (asynchronous successive halving).

A study with rungs ``E1 < … < EN`` (epochs; ``EN`` is the full training length) trains each
trial for its rung's epochs with the *whole* schedule compressed to them, so every rung
compares annealed models. Its budget, ``--trials N``, is compute: N full-trial equivalents
(epochs trained ÷ ``EN``), counting finished, running and waiting trials.

Everything here is derived from the storage's trials, never from a worker's memory, so a
worker that crashes or a second worker loses nothing:

- a trial's rung is its user attr ``rung`` (0 when absent: a configuration the sampler
  proposed); a promotion is enqueued with ``rung``, ``epochs`` and ``promotion``
  (``{"from": trial, "rule": "top"|"budget", "rank": r, "of": n}``);
- :func:`next_work` is ASHA (Li et al., 2020): the best configuration in the top
  ``1/η`` of a rung's finished trials that has no trial on the next rung is promoted,
  highest rung first; else the sampler proposes a new bottom-rung configuration. Once
  less budget is left than one climb from the bottom to the top costs, no new
  configuration starts: the best configuration not yet promoted from the highest rung
  below the top climbs instead (rule ``budget``), so the budget ends with top-rung trials;
- two workers promoting the same configuration at once leave two trials; the later
  numbered steps back as ``surplus`` (:func:`surplus_reason`), as does a trial that starts
  when the trials before it already hold the budget;
- horizon correction (``--horizon-beta β``, off at 0): the best LR falls as the horizon
  grows (LR* ∝ E^-β, Bjorck et al., ICLR 2025), so a promotion from E to E' epochs trains
  ``lr × (E'/E)^-β`` (:meth:`Ladder.carry`), the rest of its configuration unchanged;
- shared trunks (``--share-trunks``): a wsd or constant promotion starts from its source's
  trunk (:mod:`lrtune.training.trunk`) and costs only its epochs past it (:func:`shared`).

Optuna only (no torch): the comparison, ``export`` and ``lrtune ls`` read ladders too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import optuna

from lrtune.search.states import FINISHED
from lrtune.training.trunk import START_ATTR, TRUNK_ATTR

#: Trial user attrs of a study with rungs.
RUNG, EPOCHS, PROMOTION = "rung", "epochs", "promotion"
#: Trials that hold compute: finished, training, or queued to train.
HOLDING = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
#: A failed trial with one of these reasons never trained its configuration: a promotion it
#: carried is due again.
_NOT_TRAINED = ("surplus", "interrupted")

_COMPLETE = optuna.trial.TrialState.COMPLETE


@dataclass(frozen=True, kw_only=True)
class Ladder:
    """The rungs of a study (epochs, ascending), the reduction factor η, the budget in
    full-trial equivalents, β of the horizon correction (0: none) and whether promotions
    start from their source's trunk (``share``)."""

    rungs: tuple[int, ...]
    eta: int
    budget: float
    beta: float = 0.0
    share: bool = False

    @property
    def top(self) -> int:
        """Index of the top rung (the full training length)."""
        return len(self.rungs) - 1

    def cost(self, rung: int) -> float:
        """Compute of one trial on ``rung``, in full-trial equivalents."""
        return self.rungs[rung] / self.rungs[-1]

    def climb(self, rung: int) -> float:
        """Compute to carry a configuration that finished ``rung`` up to the top
        (``rung = -1``: a new configuration, bottom rung included)."""
        return sum(self.cost(k) for k in range(rung + 1, len(self.rungs)))

    def bottom_trials(self) -> int:
        """About how many configurations the budget starts on the bottom rung: each costs
        its bottom trial plus, in expectation, a 1/η share of the next rung's, and so on."""
        per_config = sum(self.cost(k) / self.eta**k for k in range(len(self.rungs)))
        return max(1, round(self.budget / per_config))

    def carry(self, params: Mapping[str, Any], rung: int) -> dict[str, Any]:
        """The parameters a configuration of ``rung`` trains with on the next rung: the
        same, its ``lr`` times ``(E_next / E)^-β`` with a horizon correction."""
        out = dict(params)
        if self.beta and "lr" in out:
            out["lr"] = float(out["lr"]) * (self.rungs[rung + 1] / self.rungs[rung]) ** -self.beta
        return out

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Ladder | None:
        """The ladder of a study with these user attrs; ``None`` for a study without rungs
        (or a confirm study)."""
        spec = attrs.get("spec")
        if not isinstance(spec, Mapping) or not spec.get("rungs") or "confirm_of" in attrs:
            return None
        return cls(
            rungs=tuple(int(e) for e in spec["rungs"]),
            eta=int(spec.get("reduction_factor", 3)),
            budget=float(attrs.get("budget", spec.get("trials", 0))),
            beta=float(spec.get("horizon_beta") or 0.0),
            share=bool(spec.get("share_trunks")),
        )


def budget_text(budget: Any, rungs: Sequence[int], eta: int, beta: float = 0.0) -> str:
    """A study's budget in words (its dashboard note)."""
    if not rungs:
        return f"{budget} finished trials"
    horizon = f"; a promotion's LR times (E'/E)^-{beta:g}" if beta else ""
    return (
        f"{budget} full-trial equivalents of training, on rungs of "
        f"{', '.join(map(str, rungs))} epochs (the top 1/{eta} of a rung is promoted{horizon})"
    )


def rung_of(trial: optuna.trial.BaseTrial) -> int:
    """The rung ``trial`` trains on (0 for a configuration the sampler proposed)."""
    return int(trial.user_attrs.get(RUNG, 0))


def source_of(trial: optuna.trial.BaseTrial) -> int | None:
    """The trial a promoted trial's configuration comes from (one rung below); ``None``
    for a configuration the sampler proposed."""
    record = trial.user_attrs.get(PROMOTION)
    return int(record["from"]) if isinstance(record, Mapping) and "from" in record else None


def epochs_trained(trial: optuna.trial.FrozenTrial, planned: int) -> int:
    """The epochs a finished ``trial`` trained of its ``planned`` ones: all, unless it was
    pruned (then the epochs it reported, and for a diverged one the epoch it stopped in)."""
    if trial.state != optuna.trial.TrialState.PRUNED:
        return planned
    reported = len(trial.intermediate_values) + bool(trial.user_attrs.get("diverged"))
    return max(1, min(planned, reported))


def shared(trial: optuna.trial.FrozenTrial) -> float:
    """The epochs ``trial`` took from its source's trunk, not trained again (0: none); a
    promotion not started yet: its record's."""
    start = trial.user_attrs.get(START_ATTR)  # None: it trained from scratch after all
    if START_ATTR not in trial.user_attrs and trial.state not in FINISHED:
        record = trial.user_attrs.get(PROMOTION)
        start = record.get(TRUNK_ATTR) if isinstance(record, Mapping) else None
    return float(start["epochs"]) if isinstance(start, Mapping) else 0.0


def compute(trial: optuna.trial.FrozenTrial, ladder: Ladder) -> float:
    """What ``trial`` costs of the budget: the epochs it trained (running or waiting: its
    rung's), less those of a trunk it started from, ÷ the full length."""
    planned = ladder.rungs[min(rung_of(trial), ladder.top)]
    if trial.state in FINISHED:
        planned = epochs_trained(trial, planned)
    return max(0.0, planned - shared(trial)) / ladder.rungs[-1]


def usage(trials: Iterable[optuna.trial.FrozenTrial], ladder: Ladder | None) -> tuple[float, float]:
    """``(done, in_flight)`` in budget units: finished and running (+ waiting, with rungs)
    trials without rungs, their compute with rungs."""
    done = in_flight = 0.0
    for t in trials:
        if ladder is None:
            done += t.state in FINISHED
            in_flight += t.state == optuna.trial.TrialState.RUNNING
        elif t.state in FINISHED:
            done += compute(t, ladder)
        elif t.state in HOLDING:
            in_flight += compute(t, ladder)
    return done, in_flight


def study_usage(study: optuna.Study) -> tuple[float, float]:
    """:func:`usage` of a loaded study, its ladder read from its user attrs."""
    return usage(study.get_trials(deepcopy=False), Ladder.from_attrs(study.user_attrs))


def trained(trial: optuna.trial.FrozenTrial, full_epochs: int) -> float:
    """The compute a finished trial (with or without rungs) trained, in full-trial
    equivalents: what the comparison's cost column adds up."""
    planned = int(trial.user_attrs.get(EPOCHS) or full_epochs)
    return max(0.0, epochs_trained(trial, planned) - shared(trial)) / full_epochs


def is_result(trial: optuna.trial.FrozenTrial, ladder: Ladder | None) -> bool:
    """Can ``trial`` be a study's result: complete, finite and (with rungs) on the top
    rung?"""
    finite = trial.value is not None and math.isfinite(trial.value)
    on_top = ladder is None or rung_of(trial) == ladder.top
    return trial.state == _COMPLETE and finite and on_top


def top_rung(
    trials: Iterable[optuna.trial.FrozenTrial], ladder: Ladder | None
) -> list[optuna.trial.FrozenTrial]:
    """The trials that can be a study's result: all of them without rungs, the top rung's
    with rungs."""
    if ladder is None:
        return list(trials)
    return [t for t in trials if rung_of(t) == ladder.top]


@dataclass(frozen=True, kw_only=True)
class Promotion:
    """A configuration to train on the next rung: ``params`` of trial ``source``, ranked
    ``rank`` of the ``of`` finished trials of its rung, promoted by ``rule``."""

    params: dict[str, Any]
    rung: int
    source: int
    rule: Literal["top", "budget"]
    rank: int
    of: int
    trunk: dict[str, Any] | None = None  # the source's, with --share-trunks

    def attrs(self, ladder: Ladder) -> dict[str, Any]:
        """User attrs of the promoted trial (with a horizon correction, its ``beta``)."""
        record: dict[str, Any] = {
            "from": self.source,
            "rule": self.rule,
            "rank": self.rank,
            "of": self.of,
        }
        if ladder.beta:
            record["beta"] = ladder.beta
        if self.trunk is not None:
            record[TRUNK_ATTR] = self.trunk
        return {RUNG: self.rung, EPOCHS: ladder.rungs[self.rung], PROMOTION: record}


Work = Promotion | Literal["new", "wait", "full"]


def _ranked(
    trials: list[optuna.trial.FrozenTrial], minimize: bool
) -> list[optuna.trial.FrozenTrial]:
    """Finished trials best first; a diverged (pruned) or non-finite one last."""
    sign = 1.0 if minimize else -1.0

    def key(t: optuna.trial.FrozenTrial) -> tuple[bool, float, int]:
        ok = _promotable(t)
        return (not ok, sign * float(t.value) if ok else 0.0, t.number)  # type: ignore[arg-type]

    return sorted(trials, key=key)


def _promotable(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state == _COMPLETE and trial.value is not None and math.isfinite(trial.value)


def _trained(trial: optuna.trial.FrozenTrial) -> bool:
    """Does ``trial`` hold its configuration on its rung (done, training, queued, or failed
    while training it)?"""
    if trial.state != optuna.trial.TrialState.FAIL:
        return True
    return not str(trial.user_attrs.get("fail_reason", "")).startswith(_NOT_TRAINED)


def next_work(
    trials: Sequence[optuna.trial.FrozenTrial], ladder: Ladder, *, minimize: bool
) -> Work:
    """What a worker should run next in a study with ``ladder`` and these ``trials``:
    a :class:`Promotion`, ``"new"`` (the sampler proposes a bottom-rung configuration),
    ``"wait"`` (only trials in flight can tell what is worth the budget left) or ``"full"``
    (the budget is held)."""
    spent = sum(compute(t, ladder) for t in trials if t.state in HOLDING)
    if spent >= ladder.budget:
        return "full"
    finished: list[list[optuna.trial.FrozenTrial]] = [[] for _ in ladder.rungs]
    # Trials promoted from, per rung: a queued promotion has no params yet (Optuna keeps
    # them aside until it runs), but it names the trial it came from.
    held: list[set[int]] = [set() for _ in ladder.rungs]
    for t in trials:
        rung = min(rung_of(t), ladder.top)
        if _trained(t) and source_of(t) is not None:
            held[rung].add(int(source_of(t)))  # type: ignore[arg-type]
        if t.state in FINISHED:
            finished[rung].append(t)

    def candidates(rung: int, share: int | None) -> list[Promotion]:
        ranked = _ranked(finished[rung], minimize)
        top = ranked if share is None else ranked[:share]
        return [
            Promotion(
                params=ladder.carry(t.params, rung),
                rung=rung + 1,
                source=t.number,
                rule="top" if share is not None else "budget",
                rank=ranked.index(t) + 1,
                of=len(ranked),
                trunk=t.user_attrs.get(TRUNK_ATTR) if ladder.share else None,
            )
            for t in top
            if _promotable(t) and t.number not in held[rung + 1]
        ]

    for rung in reversed(range(ladder.top)):  # ASHA: highest rung first
        due = candidates(rung, len(finished[rung]) // ladder.eta)
        if due:
            return due[0]
    if ladder.budget - spent >= ladder.climb(-1):
        return "new"
    for rung in reversed(range(ladder.top)):  # the end of the budget: climb, don't start
        due = candidates(rung, None)
        if due:
            return due[0]
    running = (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return "wait" if any(t.state in running for t in trials) else "new"


def promote(study: optuna.Study, promotion: Promotion, ladder: Ladder) -> None:
    """Enqueue ``promotion`` on ``study`` (the next ``optimize`` of any worker runs it)."""
    study.enqueue_trial(promotion.params, user_attrs=promotion.attrs(ladder), skip_if_exists=False)


def surplus_reason(
    trials: Sequence[optuna.trial.FrozenTrial], trial: optuna.trial.BaseTrial, ladder: Ladder
) -> str | None:
    """Why ``trial`` must step back (``None``: it trains): another trial before it already
    trains its configuration on its rung, or the trials before it hold the budget."""
    rung = rung_of(trial)
    earlier = [t for t in trials if t.number < trial.number and t.state in HOLDING]
    source = source_of(trial)
    if source is not None:
        for t in earlier:
            if rung_of(t) == rung and source_of(t) == source:
                return (
                    f"surplus: trial {t.number} trains this configuration (trial {source}) "
                    f"on rung {rung + 1}"
                )
    held = sum(compute(t, ladder) for t in earlier)
    if held >= ladder.budget:
        return (
            f"surplus: the trials before it hold the budget ({held:.3g} of "
            f"{ladder.budget:g} full-trial equivalents)"
        )
    return None
