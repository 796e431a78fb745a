"""Build the exported config from a study's best trial (``lrtune export``).

A finished lrtune trial stores its full resolved training config in the trial user attr
``config`` (see ``docs/design.md``). :func:`export_config` takes the best complete trial of
a study and returns that config in the order of the SPEC (``optimizer`` with every
parameter the trial used, searched ones included, ``schedule``, ``batch_size``,
``training``, optionally ``recommendation``, ``source``), rescaled to another batch size on
request.
"""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from lrtune.dberrors import first_line
from lrtune.errors import UserError
from lrtune.storage import mask_url, open_storage

EXPORTED_FIELDS: tuple[str, ...] = (
    "optimizer",
    "schedule",
    "batch_size",
    "micro_batch_size",
    "task",
    "training",
    "recommendation",
    "source",
)
"""Top-level fields of an exported config, in order (``recommendation`` only sometimes,
``training`` when the trial recorded its precision, accumulate and clip_grad_norm,
``micro_batch_size`` and ``task`` when it recorded them: ``batch_size`` is the effective
batch, micro-batch × accumulate; ``task`` the task's own searched parameters)."""

TRAINING_FIELDS: tuple[str, ...] = ("precision", "accumulate", "clip_grad_norm")
"""The ``training`` block: how the trial trained, besides optimizer and schedule."""

# Goyal et al. 2017 ("Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour") scale the
# LR linearly with the batch size, but found that the linear scaling rule breaks down early in
# training for large scale-ups (they went 32x, 256 -> 8192) unless the LR is ramped up
# gradually over the first ~5 epochs. From a factor of 8 on we therefore add a
# ``recommendation`` to use a warmup; below that the rule alone is usually fine.
WARMUP_SCALE_FACTOR = 8.0
"""Batch-size scale-up from which :func:`export_config` recommends a warmup."""

_GOYAL_WARMUP_EPOCHS = 5


def export_config(
    storage: str, study_name: str, *, batch_size: int | None = None, trial: int | None = None
) -> dict:
    """What ``lrtune export --study`` writes: the group's confirmed winner (the configuration
    with the best seed mean, when the group has a confirm study), else the best complete
    trial of study ``study_name`` in ``storage``; with ``trial``, that trial of the study.

    Returns ``{"optimizer", "schedule", "batch_size", ["training"], ["recommendation"],
    "source"}``; ``training`` holds the trial's ``precision``, ``accumulate`` and
    ``clip_grad_norm`` (``null``: no clipping) when it recorded them. With
    ``batch_size`` the LR is rescaled by the linear scaling rule (Goyal et al. 2017),
    ``lr * batch_size / trained_batch_size``; ``source`` then also keeps ``trained_batch_size``
    and ``trained_lr``, and a scale-up of :data:`WARMUP_SCALE_FACTOR` or more adds a
    ``recommendation`` to warm the LR up. Raises :class:`UserError` for an unreachable
    storage, an unknown study, a study without a finished lrtune trial, or a ``trial``
    that is not a complete trial of the study.

    Example:
        ```python
        import json

        import lrtune

        cmp = lrtune.run_study(
            "digits", storage="sqlite:///example.db", group="ex", prior="none",
            samplers="random", trials=3, epochs=1, lr_low=0.01, lr_high=0.3, confirm=0,
        )
        config = lrtune.export_config("sqlite:///example.db", cmp.best_row.study)
        assert config["source"]["study"] == "ex.random.none"
        assert config["source"]["value"] == cmp.best_row.best
        with open("best.json", "w") as fh:  # or: lrtune export --study ex.random.none
            json.dump(config, fh)
        hp = lrtune.load_config("best.json")  # what the training script reads
        assert hp.lr == config["optimizer"]["lr"]
        ```
    """
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise UserError(f"--batch-size must be a positive integer, got {batch_size!r}")
    study = _load_study(storage, study_name)
    confirmed = None
    if trial is not None:
        chosen = _numbered_trial(study, trial)
    else:
        chosen = _best_trial(study)
        from lrtune.group.confirmations import best_for_export

        # With confirmations, the configuration with the best seed mean (lrtune.group.confirm).
        confirmed = best_for_export(storage, study.user_attrs)
        if confirmed is not None:
            chosen = confirmed.trial
    return _export_trial(storage, study, study_name, chosen, confirmed, batch_size)


def _export_trial(
    storage: str,
    study: Any,
    study_name: str,
    trial: Any,
    confirmed: Any,
    batch_size: int | None,
) -> dict[str, Any]:
    """The export of ``trial`` (of ``study``; ``confirmed``: the confirm study's record)."""
    trained = trial.user_attrs.get("config")
    if not isinstance(trained, Mapping) or not isinstance(trained.get("optimizer"), Mapping):
        raise UserError(
            f"trial {trial.number} of study {study_name!r} has no lrtune config (user attr "
            "'config'); was the study created by lrtune?"
        )
    config = _config_from_trial(trained)
    source = build_source(
        storage,
        confirmed.source_study if confirmed else study_name,
        trial_number=confirmed.source_trial if confirmed else trial.number,
        value=confirmed.source_value if confirmed else trial.value,
        metric=study.user_attrs.get("metric"),
        version=study.user_attrs.get("lrtune_version"),
    )
    if confirmed is not None:
        source["confirmed"] = confirmed.record()
    for key in ("epochs", "total_steps"):
        if trained.get(key) is not None:
            source[key] = trained[key]
    recommendation = None
    if batch_size is not None:
        recommendation = _rescale(config, source, batch_size)
    out: dict[str, Any] = {
        "optimizer": config["optimizer"],
        "schedule": config["schedule"],
        "batch_size": config["batch_size"],
    }
    if trained.get("micro_batch_size") is not None and batch_size is None:
        out["micro_batch_size"] = trained["micro_batch_size"]  # rescaled: yours to choose
    if isinstance(trained.get("task"), Mapping) and trained["task"]:
        out["task"] = dict(trained["task"])
    if any(key in trained for key in TRAINING_FIELDS):
        out["training"] = {key: trained.get(key) for key in TRAINING_FIELDS}
    if recommendation:
        out["recommendation"] = recommendation
    out["source"] = source
    return out


def build_source(
    storage: str,
    study_name: str,
    *,
    trial_number: int,
    value: float | None,
    metric: str | None = None,
    version: str | None = None,
    created: datetime | None = None,
) -> dict[str, Any]:
    """The ``source`` block of an export: where the config came from (password masked)."""
    if version is None:
        from lrtune import __version__ as version
    when = created or datetime.now(timezone.utc)
    source: dict[str, Any] = {
        "study": study_name,
        "trial": trial_number,
        "value": value,
        "metric": metric if metric is not None else "value",
        "lrtune": str(version),
        "created": when.astimezone(timezone.utc).isoformat(timespec="seconds"),
        "storage": mask_url(storage),
    }
    return source


def _config_from_trial(trained: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain copy of the trial's optimizer, schedule and batch size."""
    optimizer = dict(copy.deepcopy(trained["optimizer"]))
    schedule = trained.get("schedule")
    schedule = dict(copy.deepcopy(schedule)) if isinstance(schedule, Mapping) else {}
    schedule.setdefault("name", "constant")
    if "name" not in optimizer or "lr" not in optimizer:
        raise UserError("the trial's config lacks optimizer name or lr; was it made by lrtune?")
    return {"optimizer": optimizer, "schedule": schedule, "batch_size": trained.get("batch_size")}


def _rescale(config: dict[str, Any], source: dict[str, Any], batch_size: int) -> str | None:
    """Apply the linear scaling rule in place; returns a warmup recommendation or ``None``."""
    trained_bs = config["batch_size"]
    if not isinstance(trained_bs, int) or trained_bs < 1:
        raise UserError(
            "cannot rescale to --batch-size: the trial did not record the batch size it "
            "trained with"
        )
    trained_lr = float(config["optimizer"]["lr"])
    factor = batch_size / trained_bs
    config["optimizer"]["lr"] = trained_lr * batch_size / trained_bs
    config["batch_size"] = batch_size
    source["trained_batch_size"] = trained_bs
    source["trained_lr"] = trained_lr
    if factor < WARMUP_SCALE_FACTOR:
        return None
    return _warmup_recommendation(config["schedule"], factor, source.get("epochs"))


def _warmup_recommendation(schedule: Mapping[str, Any], factor: float, epochs: Any) -> str:
    """What to do about warmup after a batch-size scale-up by ``factor`` (>= 8).

    Goyal et al. warm up linearly over the first 5 epochs; as a fraction of the run that is
    ``5 / epochs`` (capped at 0.2, the top of lrtune's warmup search range), which is what
    the schedules' ``warmup_frac`` (``warmup_cosine``, ``wsd``) and ``pct_start``
    (``onecycle``) mean.
    """
    head = (
        f"batch size scaled up {factor:g}x: the linear scaling rule needs a gradual LR "
        "warmup at this scale (Goyal et al. 2017 warm up linearly over the first "
        f"{_GOYAL_WARMUP_EPOCHS} epochs)"
    )
    if isinstance(epochs, int) and epochs > 0:
        frac = f"{min(0.2, _GOYAL_WARMUP_EPOCHS / epochs):.2g}"
        span = f"{frac} of the run ({min(epochs, _GOYAL_WARMUP_EPOCHS)} of {epochs} epochs)"
    else:
        frac, span = "0.05-0.2", "0.05-0.2 of the run (~5 epochs)"
    name = schedule.get("name")
    if name in ("warmup_cosine", "wsd"):
        current = schedule.get("warmup_frac")
        return f"{head}; {name} warms up already: keep warmup_frac >= {frac} (now {current})"
    if name == "onecycle":
        current = schedule.get("pct_start")
        return f"{head}; onecycle warms up already: keep pct_start >= {frac} (now {current})"
    return (
        f"{head}; switch to schedule warmup_cosine or wsd with warmup_frac ~{frac}, or warm up "
        f"linearly over {span} before the {name} schedule"
    )


def _load_study(storage: str, study_name: str) -> Any:
    """``optuna.load_study`` with one-line :class:`UserError` messages (password masked)."""
    import optuna

    shown = mask_url(storage)
    rdb = open_storage(storage, readonly=True)
    try:
        return optuna.load_study(study_name=study_name, storage=rdb)
    except KeyError:
        pass
    except Exception as exc:
        raise UserError(f"cannot read storage {shown}: {first_line(exc)}") from None
    try:
        names = optuna.study.get_all_study_names(storage=rdb)
    except Exception:
        names = []
    close = difflib.get_close_matches(study_name, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UserError(
        f"no study {study_name!r} in {shown}: {hint}`lrtune ls --storage URL` shows the studies"
    )


def _numbered_trial(study: Any, number: int) -> Any:
    """Trial ``number`` of ``study``; one line when there is none or it did not complete."""
    import optuna

    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        last = f"0..{len(trials) - 1}" if trials else "none yet"
        raise UserError(f"study {study.study_name!r} has no trial {number} (its trials: {last})")
    if found.state != optuna.trial.TrialState.COMPLETE or found.value is None:
        raise UserError(
            f"trial {number} of study {study.study_name!r} is {found.state.name}, not "
            "COMPLETE: export a finished trial (`lrtune export --study NAME` takes the best)"
        )
    return found


def _best_trial(study: Any) -> Any:
    """The best COMPLETE trial (ties: the earliest); with rungs, of the top rung."""
    import optuna

    from lrtune.search.ladder import Ladder, top_rung

    if len(study.directions) != 1:
        raise UserError(f"study {study.study_name!r} has several objectives; lrtune needs one")
    ladder = Ladder.from_attrs(study.user_attrs)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    done = [t for t in top_rung(complete, ladder) if t.value is not None and math.isfinite(t.value)]
    if not done and ladder is not None and complete:
        raise UserError(
            f"study {study.study_name!r} has no finished trial on its top rung "
            f"({ladder.rungs[-1]} epochs) yet, only shorter ones: run the same `lrtune study` "
            "(or a worker) again to finish its budget, or raise --trials"
        )
    if not done:
        raise UserError(
            f"study {study.study_name!r} has no finished trial yet: run `lrtune study` or "
            "`lrtune worker` on it first"
        )
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(done, key=lambda t: (sign * float(t.value or 0.0), t.number))
