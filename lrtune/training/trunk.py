"""Shared trunks (``study --rungs … --share-trunks``): a ``wsd`` or ``constant`` trial below
the top rung keeps its training state at the end of its stable phase, and a configuration
promoted from it starts there and trains only its longer stable phase and its own cooldown
(Hägele et al., NeurIPS 2024: one stable phase, cooldowns branched off it).

Where the trunk ends: ``wsd``'s decay start ``S = T - D`` (``D = round(decay_frac × T)``),
``constant``'s last step ``T`` (it has no cooldown: the whole run is the trunk). A promoted
trial of ``T' > T`` steps has ``S' ≥ S``, so the source's first ``S`` steps are a prefix of
its own schedule, if both warm up alike.

The warmup: ``warmup_frac`` is a fraction of each run's steps, so rungs of different
lengths warm up for different numbers of steps and their trunks would differ. With shared
trunks the warmup is fixed in steps where a configuration starts (its bottom rung): a
promoted trial trains ``warmup_frac = W / T'`` (``W`` its source's warmup steps), which its
``config`` attr records and ``export`` writes, so what is exported is what the top-rung
trial trained. Then training the promoted trial from its source's trunk equals training
that schedule from scratch, bit for bit on CPU (the trunk is a mid-epoch checkpoint of
:mod:`lrtune.training.checkpoint`: the epoch's data order drawn again, its trained batches
skipped), and the start is checked: the two schedules' LR factors must agree on every step
of the trunk, else the trial trains from scratch (a warning).

Trial user attrs: :data:`TRUNK_ATTR` on the source (``{"artifact", "step", "epoch",
"batch", "epochs", "warmup"}``: the trunk ends after ``step`` updates, ``epochs`` of
training), copied into the promotion record; :data:`START_ATTR` on a trial that started
from one (``{"from", "step", "epochs"}``): it trained only its epochs past ``epochs``, the
compute it costs. torch is imported on first use: the ladder reads these names.
"""

from __future__ import annotations

import io
import logging
import uuid
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lrtune.training.checkpoint import ArtifactStore, Loop, TrialLike

log = logging.getLogger(__name__)

#: The trial user attr naming a trial's own trunk (where its stable phase ended).
TRUNK_ATTR = "trunk"
#: The trial user attr of a trial that started from its source's trunk.
START_ATTR = "trunk_start"
#: The schedules with a stable phase that a longer run of them shares.
SHARED = ("wsd", "constant")
#: Bumped when the trunk file's layout changes.
FORMAT = 1


def stable_end(schedule: Mapping[str, Any], total: int) -> int | None:
    """The update after which ``schedule`` (resolved: ``name`` and every parameter) of
    ``total`` steps leaves its stable phase: ``wsd``'s decay start, ``constant``'s ``total``;
    ``None`` for other schedules and a ``wsd`` that decays from its first step."""
    if schedule["name"] == "constant":
        return total
    if schedule["name"] != "wsd":
        return None
    decay = min(total, max(1, round(float(schedule["decay_frac"]) * total)))
    return total - decay or None


def warmup_steps(schedule: Mapping[str, Any], total: int) -> int:
    """The warmup steps of a ``wsd`` or ``constant`` ``schedule`` of ``total`` steps (as
    :mod:`lrtune.schedules.forms` counts them)."""
    frac = float(schedule.get("warmup_frac", 0.0))
    if frac == 0:
        return 0
    cap = (stable_end(schedule, total) or 0) if schedule["name"] == "wsd" else total - 1
    return max(0, min(max(1, round(frac * total)), cap))


class Trunks:
    """The trunks of one trial: the one it starts from (``start``, its promotion's record
    of the source's :data:`TRUNK_ATTR`; ``None``: from scratch) and whether it keeps its
    own (``keep``: below the top rung). ``source`` is the trial the start comes from."""

    def __init__(
        self,
        store: ArtifactStore,
        trial: TrialLike,
        *,
        start: Mapping[str, Any] | None,
        source: int | None,
        keep: bool,
    ) -> None:
        self.store, self.trial, self.keep = store, trial, keep
        self.start, self.source = start, source
        self.at: int | None = None  # the update to keep the trunk at, once planned

    def plan(self, schedule: dict[str, Any], total: int) -> dict[str, Any]:
        """``schedule`` (resolved) as this trial trains it: a start's warmup in steps
        (``warmup_frac = W / total``); notes where its own trunk ends when it keeps one."""
        if schedule["name"] not in SHARED:
            self.start = None
            return schedule
        if self.start is not None and "warmup_frac" in schedule:
            schedule = {**schedule, "warmup_frac": int(self.start["warmup"]) / total}
        if self.keep:
            self.at = stable_end(schedule, total)
        return schedule

    def due(self, step: int) -> bool:
        """Whether the trunk is to be kept now, after ``step`` updates."""
        return self.at is not None and step == self.at

    def save(self, state: dict[str, Any], *, identity: Mapping[str, Any], where: Any) -> None:
        """Write the trunk (``state`` from :func:`capture`, ``where``: ``(epoch, batch,
        per_epoch, schedule, total)``) and name it in :data:`TRUNK_ATTR`; a store that
        cannot take it costs the sharing only (one warning)."""
        import torch

        from lrtune.training.checkpoint import warn_once

        epoch, batch, per_epoch, schedule, total = where
        self.at = None  # once per run
        artifact = f"lrtune-trunk-{uuid.uuid4().hex}"
        buffer = io.BytesIO()
        meta = {"format": FORMAT, **identity, "schedule": dict(schedule), "total": total}
        torch.save({**meta, "epoch": epoch, "batch": batch, **state}, buffer)
        buffer.seek(0)
        try:
            self.store.write(artifact, buffer)
        except Exception as exc:
            warn_once("trunk", "trunks not kept (promotions train from scratch): %s", exc)
            return
        step = int(state["step"])
        record = {"artifact": artifact, "step": step, "epoch": epoch, "batch": batch}
        record |= {"epochs": step / per_epoch, "warmup": warmup_steps(schedule, total)}
        self.trial.set_user_attr(TRUNK_ATTR, record)

    def restore(
        self, loop: Loop, *, identity: Mapping[str, Any], factor: Any, per_epoch: int
    ) -> dict[str, Any] | None:
        """Put the start's trunk into ``loop`` and report its epochs' values again; the
        state (a mid-epoch checkpoint for :func:`replay`), or ``None`` (no start, or one
        that cannot be used: a warning says why, the trial trains from scratch).
        ``factor(step)`` is this trial's LR factor: it must be the trunk's on every step."""
        if self.start is None:
            return None
        state = self._load(identity, factor)
        from lrtune.training.checkpoint import restore, same_shapes

        problem = None if state is None else same_shapes(loop.model, state["model"])
        if problem is not None:
            log.warning("trunk not used, training from scratch: %s", problem)
        if state is None or problem is not None:
            if START_ATTR in self.trial.user_attrs:  # a retry of a trial that had one
                self.trial.set_user_attr(START_ATTR, None)  # it costs its whole rung now
            return None
        restore(loop, state)
        step = int(state["step"])
        self.trial.set_user_attr(
            START_ATTR, {"from": self.source, "step": step, "epochs": step / per_epoch}
        )
        with warnings.catch_warnings():  # a retried trial has them: Optuna ignores them
            warnings.simplefilter("ignore")
            for epoch, value in enumerate(loop.history):
                self.trial.report(value, epoch)
        return state

    def _load(self, identity: Mapping[str, Any], factor: Any) -> dict[str, Any] | None:
        import torch

        from lrtune.schedules import Schedule

        artifact = str(self.start["artifact"]) if self.start else ""
        try:
            with self.store.open_reader(artifact) as reader:
                state = torch.load(io.BytesIO(reader.read()), map_location="cpu")
        except Exception as exc:
            log.warning("trunk %s not used, training from scratch: %s", artifact, exc)
            return None
        for key, want in {"format": FORMAT, **identity}.items():
            if state.get(key) != want:
                log.warning("trunk %s not used (its %s differs): from scratch", artifact, key)
                return None
        params = {k: v for k, v in state["schedule"].items() if k != "name"}
        theirs = Schedule(state["schedule"]["name"], state["total"], **params)
        if any(theirs.factor(s) != factor(s) for s in range(int(state["step"]))):
            log.warning("trunk %s not used, training from scratch: its LRs differ", artifact)
            return None
        return dict(state)


def identity_of(task: str, seed: int, config: Mapping[str, Any]) -> dict[str, Any]:
    """What a trunk and the trial starting from it must share: lrtune, the task, the seed
    and the configuration but its length and schedule (checked step by step instead)."""
    from lrtune import __version__

    skip = ("epochs", "total_steps", "schedule")
    base = {k: v for k, v in config.items() if k not in skip}
    return {"lrtune": __version__, "task": task, "seed": seed, "config": base}
