"""Per-trial checkpoints: a trial's training state in Optuna's artifact store, so a trial
retried after its worker died, or handed back on SIGTERM, goes on where it stopped.

Where: any Optuna artifact store (``FileSystemArtifactStore``, ``Boto3ArtifactStore``...);
workers use :func:`lrtune.dashboard.artifact_store`, the one beside the storage
(``$LRTUNE_ARTIFACTS``, else ``x.db.artifacts`` beside a SQLite file, else
``./lrtune-artifacts``).

How a trial finds its checkpoint: the trial user attr ``checkpoint`` (``{"artifact": id,
"epoch": e, "batch": b, "stale": [ids]}``) names the last complete file. Each save first
lists the new artifact's id under ``stale``, writes it, then moves the attr to it (listing
the previous one under ``stale``) and removes the previous one, so a write cut short
(SIGKILL, a full disk) leaves the previous checkpoint named and valid, and a kill between
two of those steps leaves no file that the attr does not name: the next save, or the
finished or pruned trial's :meth:`Checkpoints.discard`, removes what ``stale`` lists. A
retry made by the heartbeat watch gets the attr with the failed trial's other user attrs
(Optuna's ``RetryFailedTrialCallback`` copies them); a trial handed back is the same trial.
That guarantee covers checkpoints only: the final weights (:meth:`Checkpoints.keep_weights`)
and shared trunks (:mod:`lrtune.training.trunk`) are written before they are named, so a
kill mid-write can leave one of those behind.

When: every ``every`` epochs; ``None`` (the default) is :data:`AUTO_SECONDS`: between two
updates (lrtune's loop, mid-epoch) or at the end of an epoch once that long has passed
since the last save (or the start), so a trial of a few seconds never writes one and a
long one loses at most that much training to a SIGKILL, at a cost bounded by the save's
time over :data:`AUTO_SECONDS`; ``0`` never.
"""

from __future__ import annotations

import io
import logging
import random
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

#: The trial user attr naming the last checkpoint.
CHECKPOINT_ATTR = "checkpoint"
#: The trial user attr a resumed trial records: the epochs its checkpoint had done.
RESUMED_ATTR = "resumed_from_epoch"
#: The default interval (``checkpoint_every`` unset): at least this many seconds of
#: training between two checkpoints.
AUTO_SECONDS = 30.0
#: Bumped when the state's layout changes: an older file is not resumed.
FORMAT = 1
#: The most artifact ids the checkpoint attr lists as left to remove.
MAX_STALE = 16

_WARNED: set[str] = set()


class ArtifactStore(Protocol):
    """What lrtune uses of an Optuna artifact store."""

    def open_reader(self, artifact_id: str) -> Any: ...

    def write(self, artifact_id: str, content_body: Any) -> None: ...

    def remove(self, artifact_id: str) -> None: ...


class TrialLike(Protocol):
    """What lrtune uses of an ``optuna.Trial``."""

    @property
    def user_attrs(self) -> dict[str, Any]: ...

    def set_user_attr(self, key: str, value: Any) -> None: ...

    def report(self, value: float, step: int) -> None: ...


def warn_once(key: str, message: str, *args: Any) -> None:
    """One warning per ``key`` and process (a full store would warn every epoch)."""
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning(message, *args)


class Checkpoints:
    """The checkpoints of one trial: when to save, saving, and finding the last one.

    ``identity`` is what a checkpoint must match to be resumed (the task, the
    configuration, the seed): a file from another task or configuration is ignored with a
    warning and the trial starts over.
    """

    def __init__(
        self,
        store: ArtifactStore,
        trial: TrialLike,
        *,
        every: int | None = None,
        identity: Mapping[str, Any] | None = None,
    ) -> None:
        from lrtune import __version__

        self.store, self.trial, self.every = store, trial, every
        self.identity = {"lrtune": __version__, "format": FORMAT, **dict(identity or {})}
        self._last = time.monotonic()
        self.saved = 0  # checkpoints this process wrote

    def due(self, epochs_done: int, epochs: int) -> bool:
        """Whether to save after ``epochs_done`` epochs of ``epochs`` (never after the last:
        the trial is over)."""
        if self.every == 0 or epochs_done >= epochs:
            return False
        if self.every is None:
            return time.monotonic() - self._last >= AUTO_SECONDS
        return epochs_done % self.every == 0

    def due_in_epoch(self) -> bool:
        """Whether to save now, between two updates of an epoch: the worker is being
        preempted (SIGTERM), or, with the default interval, :data:`AUTO_SECONDS` of
        training passed since the last save, so a long epoch is not all lost to a SIGKILL
        (a fixed ``every`` saves at epoch ends only)."""
        from lrtune import preempt

        if preempt.requested():
            return True
        return self.every is None and time.monotonic() - self._last >= AUTO_SECONDS

    def save(self, state: dict[str, Any], *, epoch: int, batch: int = 0) -> bool:
        """Write ``state`` (``epoch`` epochs and ``batch`` micro-batches of the next done)
        as a new artifact, then point the trial at it and remove the previous one. Returns
        False (one warning per process) when the store cannot take it: the trial goes on."""
        named = self.trial.user_attrs.get(CHECKPOINT_ATTR)
        previous = dict(named) if isinstance(named, dict) else {}
        # Left by the last save (removed then, unless a kill or a store error came first):
        # only what still cannot be removed stays listed, so the list does not grow.
        garbage = [a for a in _stale(previous) if not _quiet_remove(self.store, a)]
        artifact = f"lrtune-ckpt-{uuid.uuid4().hex}"
        buffer = io.BytesIO()
        torch.save({**self.identity, "epoch": epoch, "batch": batch, **state}, buffer)
        buffer.seek(0)
        # Named before it is written: a SIGKILL from here on leaves no file the attr does
        # not name (the storage write costs little next to the checkpoint's).
        self.trial.set_user_attr(CHECKPOINT_ATTR, {**previous, "stale": [*garbage, artifact]})
        try:
            self.store.write(artifact, buffer)
        except Exception as exc:  # a full disk, a read-only directory, a lost bucket
            warn_once("store", "checkpoints not written (the trials go on without them): %s", exc)
            if not _quiet_remove(self.store, artifact):  # part of it may be there
                # A store that stays broken fails every save: keep the list bounded.
                garbage = [*garbage, artifact][-MAX_STALE:]
            kept = {**previous, "stale": garbage} if previous or garbage else None
            self.trial.set_user_attr(CHECKPOINT_ATTR, kept)
            return False
        old = previous.get("artifact")
        if isinstance(old, str):
            garbage.append(old)
        self.trial.set_user_attr(
            CHECKPOINT_ATTR,
            {"artifact": artifact, "epoch": epoch, "batch": batch, "stale": garbage},
        )
        for stale in garbage:  # listed until the next save, which drops what is gone
            _quiet_remove(self.store, stale)
        self._last = time.monotonic()
        self.saved += 1
        return True

    def load(self, *, weights_only: bool = True) -> dict[str, Any] | None:
        """The last checkpoint's state, or ``None``: none, or one that cannot be resumed (a
        truncated file, another lrtune version or layout, another task or configuration;
        a warning says which)."""
        named = self.trial.user_attrs.get(CHECKPOINT_ATTR)
        if not isinstance(named, dict) or not isinstance(named.get("artifact"), str):
            return None
        artifact = named["artifact"]
        try:
            with self.store.open_reader(artifact) as reader:
                data = reader.read()
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=weights_only)
        except Exception as exc:
            log.warning("checkpoint %s not resumed, starting over: unreadable (%s)", artifact, exc)
            return None
        if not isinstance(state, dict):
            log.warning("checkpoint %s not resumed, starting over: not a checkpoint", artifact)
            return None
        for key, want in self.identity.items():
            if state.get(key) != want:
                log.warning(
                    "checkpoint %s not resumed, starting over: its %s is %r, this trial's %r",
                    artifact,
                    key,
                    state.get(key),
                    want,
                )
                return None
        return state

    def resumed(self, epoch: int, history: list[float]) -> None:
        """Record that the trial resumed after ``epoch`` epochs (user attr
        :data:`RESUMED_ATTR`) and report the values of those epochs again: a heartbeat
        retry starts without its original's intermediate values."""
        self.trial.set_user_attr(RESUMED_ATTR, epoch)
        with warnings.catch_warnings():  # a handed-back trial has them: Optuna ignores them
            warnings.simplefilter("ignore")
            for step, value in enumerate(history):
                self.trial.report(value, step)
        log.info("trial resumed after epoch %d from its checkpoint", epoch)
        self._last = time.monotonic()

    def keep_weights(self, model: torch.nn.Module) -> None:
        """Keep the finished trial's final ``state_dict`` (trial user attr ``weights``), for
        ``export --weights``; a store that cannot take it costs the weights only."""
        artifact = f"lrtune-weights-{uuid.uuid4().hex}"
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
        buffer.seek(0)
        try:
            self.store.write(artifact, buffer)
        except Exception as exc:
            warn_once("store", "weights not kept (the trials go on without them): %s", exc)
            _quiet_remove(self.store, artifact)
            return
        self.trial.set_user_attr("weights", artifact)

    def discard(self) -> None:
        """Remove the trial's checkpoint (it finished: nothing to resume)."""
        named = self.trial.user_attrs.get(CHECKPOINT_ATTR)
        if isinstance(named, dict):
            artifact = named.get("artifact")
            for stale in [*_stale(named), *([artifact] if isinstance(artifact, str) else [])]:
                _quiet_remove(self.store, stale)
            self.trial.set_user_attr(CHECKPOINT_ATTR, None)


def _stale(named: Mapping[str, Any]) -> list[str]:
    """The artifacts a checkpoint attr lists as left to remove (a save cut short)."""
    stale = named.get("stale")
    return [a for a in stale if isinstance(a, str)] if isinstance(stale, list) else []


def _quiet_remove(store: ArtifactStore, artifact: str) -> bool:
    """Remove ``artifact``; whether it is gone now (removed, or not there)."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    try:
        store.remove(artifact)
    except ArtifactNotFound:
        return True
    except Exception as exc:  # the store is down: the caller keeps it listed
        log.debug("checkpoint %s not removed: %s", artifact, exc)
        return False
    return True


def rng_state() -> dict[str, Any]:
    """torch's (CPU and CUDA), numpy's and Python's global RNG states, in a form
    ``torch.load(weights_only=True)`` reads (no numpy arrays)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    assert not isinstance(keys, str)  # the legacy form: (name, keys, pos, has_gauss, gauss)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def same_shapes(model: torch.nn.Module, saved: Mapping[str, torch.Tensor]) -> str | None:
    """Why ``saved`` does not fit ``model`` (another task's weights), or ``None``: checked
    before loading, as ``load_state_dict`` copies the tensors that fit before it raises."""
    mine = model.state_dict()
    if set(mine) != set(saved):
        missing = sorted(set(mine) ^ set(saved))
        return f"its tensors differ from the model's ({missing[0]})"
    for key, tensor in mine.items():
        if tuple(tensor.shape) != tuple(saved[key].shape):
            return f"{key} has shape {tuple(saved[key].shape)}, the model's {tuple(tensor.shape)}"
    return None


@dataclass
class Loop:
    """What lrtune's loop carries from one step to the next: what a checkpoint holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    updater: Any  # lrtune.training.updater.Updater
    generator: torch.Generator
    watch: Any  # lrtune.training.watch.DivergenceWatch
    lr: float
    step: int = 0
    history: list[float] = field(default_factory=list)


def capture(loop: Loop, *, epoch_start: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """The state of lrtune's loop (``loop``: model, optimizer, updater, generator, watch,
    step, history, lr) as a checkpoint; ``epoch_start``, mid-epoch: the data-order
    generator's and torch's RNG states when the epoch began, to replay its order."""
    watch = loop.watch
    return {
        "model": loop.model.state_dict(),
        "optimizer": loop.optimizer.state_dict(),
        "scaler": loop.updater.scaler.state_dict() if loop.updater.scaler is not None else None,
        "generator": loop.generator.get_state(),
        "rng": rng_state(),
        "step": loop.step,
        "history": list(loop.history),
        "lr": loop.lr,
        "watch": [watch.first, watch._ema._avg, watch._ema._n],
        "epoch_start": list(epoch_start) if epoch_start is not None else None,
    }


def restore(loop: Loop, state: Mapping[str, Any]) -> None:
    """Put ``state`` (from :func:`capture`) back into ``loop``; the RNG streams too, unless
    the checkpoint is mid-epoch (:func:`replay` puts them back once the epoch's order is
    drawn again)."""
    loop.model.load_state_dict(state["model"])
    loop.optimizer.load_state_dict(state["optimizer"])
    if loop.updater.scaler is not None and state["scaler"] is not None:
        loop.updater.scaler.load_state_dict(state["scaler"])
    loop.step, loop.history, loop.lr = state["step"], list(state["history"]), state["lr"]
    loop.watch.first, loop.watch._ema._avg, loop.watch._ema._n = state["watch"]
    if state["epoch_start"] is None:
        loop.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
    else:
        loop.generator.set_state(state["epoch_start"][0])
        torch.set_rng_state(state["epoch_start"][1])


def replay(batches: Any, loop: Loop, state: Mapping[str, Any]) -> Any:
    """The rest of a mid-epoch checkpoint's epoch: ``batches`` (drawn with the epoch's RNG
    states, as :func:`restore` set them) without the ``state["batch"]`` micro-batches
    already trained, then the RNG streams as they were at the checkpoint."""
    it = iter(batches)
    for _ in range(int(state["batch"])):
        next(it)
    loop.generator.set_state(state["generator"])
    set_rng_state(state["rng"])
    yield from it


class UserCheckpoints:
    """``hp.checkpoint(state)`` / ``hp.restore()`` of a task's own ``fit`` loop: the user's
    state (anything ``torch.save`` takes) with the values reported so far (``history``,
    the list the trial's ``report`` appends to)."""

    def __init__(self, checkpoints: Checkpoints, history: list[float]) -> None:
        self.checkpoints, self.history = checkpoints, history
        self.used = False  # the loop calls hp.checkpoint: preemption waits for its next call
        self.deferred = False  # a report let a preemption through to the next hp.checkpoint

    def wanted(self) -> bool:
        """Whether :meth:`save` would write now (the interval says so, or the worker is
        being preempted): a loop whose state is costly to build asks first."""
        from lrtune import preempt

        done = len(self.history)
        return preempt.requested() or self.checkpoints.due(done, done + 1)

    def save(self, state: Any) -> None:
        """Save unless the interval says not yet. Once the worker was preempted, save and
        raise :class:`lrtune.preempt.Preempted`: the trial is handed back."""
        from lrtune import preempt

        self.used = True
        done = len(self.history)
        if self.wanted():
            self.checkpoints.save({"user": state, "history": list(self.history)}, epoch=done)
        if preempt.requested():
            raise preempt.Preempted(done)

    def load(self) -> Any:
        """The user's state of the last checkpoint (its reported values reported again), or
        ``None``. The user's objects are unpickled (``weights_only=False``): the artifact
        store must be as trusted as the task code the workers run."""
        data = self.checkpoints.load(weights_only=False)
        if data is None or "user" not in data:
            return None
        self.history[:] = [float(v) for v in data["history"]]
        self.checkpoints.resumed(int(data["epoch"]), self.history)
        return data["user"]
