"""Study specs: ``studies/*.toml`` and command-line flags, resolved into one frozen config.

Every field of :class:`StudySpec` is a top-level key of the spec file and most are a flag
of ``lrtune study`` (``lr_low`` is ``--lr-low``); a flag given on the command line overrides
the file. Schedules' own parameter ranges go in ``[params.<schedule>]`` tables; the
optimizer's parameters in an ``[optimizer]`` table (``name``, ``weight_decay``, ...) and
their searched ranges in ``[params.optimizer]``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrtune.errors import UserError
from lrtune.precisions import PRECISIONS
from lrtune.schedules import SCHEDULE_NAMES
from lrtune.search.ranges import SETUP_TABLES, check_params
from lrtune.search.rung_flags import check_beta, check_ladder, check_options, parse_rungs
from lrtune.search.samplers import PRUNERS, SAMPLERS
from lrtune.training.optimizers import (
    OPTIMIZERS,
    PARAMS,
    SCHEDULE_FREE,
    SEARCH_SPACE,
    check_param,
    require_schedulefree,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_SEED = 2**31 - 1
"""The largest seed: numpy's and the samplers' seeds (seed + offsets) must stay below 2**32."""
#: The integer fields and their bounds. The upper ones stop a typo (``--grid-points 1e8``)
#: before it is built into memory or a storage, far above any real run.
INT_LIMITS: dict[str, tuple[int, int]] = {
    "seed": (0, MAX_SEED),
    "epochs": (1, 1_000_000),
    "trials": (1, 1_000_000),
    "repeats": (1, 1000),
    "grid_points": (2, 10_000),
    "rangetest_seeds": (1, 1000),
    "rangetest_steps": (20, 1_000_000),
    "accumulate": (1, 1_000_000),
    "confirm": (0, 10_000),
    "confirm_seeds": (1, 1000),
    "reduction_factor": (2, 1000),
    "checkpoint_every": (0, 1_000_000),
}
PRIORS: tuple[str, ...] = ("rangetest", "none")
#: The rules ``--batch-scaling`` takes (:mod:`lrtune.search.dims`).
BATCH_SCALINGS: tuple[str, ...] = ("linear", "sqrt", "none")


@dataclass(frozen=True, kw_only=True)
class StudySpec:
    """Everything a group of studies needs; stored on each study as ``spec``.

    Attributes:
        task: built-in name, ``module:function`` or ``path.py:function``.
        group: the studies' name prefix (default: the task's name).
        optimizer: one of ``sgd``, ``adam``, ``adamw``, ``rmsprop``, ``adagrad``; when a
            file or flag names none, :func:`resolve_spec` takes the task's own
            (``Task.optimizer``, e.g. ``adamw`` for ``charlm``), else ``sgd``. In a file
            either a name or an ``[optimizer]`` table (``name`` and parameters).
        optimizer_params: fixed optimizer parameters (``weight_decay``, ``momentum``,
            ``betas``, ``eps``) from the ``[optimizer]`` table; unset ones keep lrtune's
            defaults.
        schedules: the schedules searched (categorical ``schedule``).
        params: per schedule, the ranges of its own parameters to search
            (``{"onecycle": {"pct_start": [0.1, 0.5]}}``); unlisted ones keep defaults.
            ``params["optimizer"]`` holds searched optimizer parameters (trial params
            ``optimizer.<name>``).
        lr_low, lr_high: the wide LR bounds of the no-prior arm.
        epochs: training epochs per trial (``None``: the task's own).
        precision, accumulate, clip_grad_norm: training options of every trial and of the
            range test (``None``: the task's own).
        trials: finished trials each study must have.
        samplers: Optuna samplers compared.
        prior: ``rangetest`` and/or ``none``.
        pruner: ``median``, ``hyperband`` or ``none``.
        seed: base seed (sampler seeds, training seed).
        repeats: studies per sampler × prior, each with its own sampler seed.
        tolerance: trials-to-target counts trials until within this fraction of the best.
        grid_points: log-spaced LR points of the grid sampler.
        rangetest_seeds, rangetest_steps, rangetest_start_lr, rangetest_end_lr: the
            prior's range test.
        widen: let a prior's bounds grow when the best trials sit at an edge
            (:mod:`lrtune.search.widen`).
        confirm: once the budgets are met, re-train this many best distinct
            configurations of the group on fresh seeds (:mod:`lrtune.group.confirm`; 0: off).
        confirm_seeds: fresh training seeds per confirmed configuration.
        rungs: epochs per rung, ascending, the last = ``epochs`` (empty: no rungs);
            with rungs ``trials`` counts full-trial equivalents (:mod:`lrtune.search.ladder`).
        reduction_factor: η, the top ``1/η`` of a rung is promoted to the next.
        horizon_beta: with rungs, a promotion from E to E' epochs trains ``lr × (E'/E)^-β``
            (the best LR falls as the horizon grows); 0: off.
        share_trunks: with rungs, a wsd or constant promotion starts from its source's
            state at the end of the stable phase (:mod:`lrtune.training.trunk`).
        baseline: baseline arms studied beside the schedule search (``schedulefree``:
            :mod:`lrtune.group.baseline`); empty: none.
        checkpoint_every: checkpoint a trial every this many epochs (``None``: after 30 s
            of training, mid-epoch too; 0: never; :mod:`lrtune.training.checkpoint`).
    """

    task: str = "digits"
    group: str | None = None
    optimizer: str = "sgd"
    optimizer_params: Mapping[str, Any] = field(default_factory=dict)
    schedules: tuple[str, ...] = SCHEDULE_NAMES
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lr_low: float = 1e-6
    lr_high: float = 10.0
    epochs: int | None = None
    precision: str | None = None
    accumulate: int | None = None
    clip_grad_norm: float | None = None
    trials: int = 30
    samplers: tuple[str, ...] = ("grid", "random", "tpe")
    prior: tuple[str, ...] = ("rangetest",)
    pruner: str = "none"  # pruning is biased against late-decaying schedules: see README
    seed: int = 0
    repeats: int = 1
    tolerance: float = 0.02
    grid_points: int = 6
    rangetest_seeds: int = 3
    rangetest_steps: int = 100
    rangetest_start_lr: float = 1e-7
    rangetest_end_lr: float = 10.0
    widen: bool = True
    confirm: int = 3
    confirm_seeds: int = 2
    rungs: tuple[int, ...] = ()
    reduction_factor: int = 3
    horizon_beta: float = 0.0
    share_trunks: bool = False
    batch_scaling: str | None = None
    baseline: tuple[str, ...] = ()
    checkpoint_every: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (tuples become lists)."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySpec:
        """Rebuild a spec stored with :meth:`to_dict` (as workers do)."""
        return resolve_spec(
            {k: v for k, v in data.items() if v is not None}, source="the stored spec"
        )


_FIELDS = {f.name: f for f in dataclasses.fields(StudySpec)}
#: The baselines ``baseline`` may list (lrtune.group.baseline, which imports this module).
BASELINE_NAMES: tuple[str, ...] = ("schedulefree",)
_LISTS = {
    "schedules": SCHEDULE_NAMES,
    "samplers": SAMPLERS,
    "prior": PRIORS,
    "baseline": BASELINE_NAMES,
}


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a spec file into a dict of fields (not yet checked)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"spec file {p} does not exist")
    if not p.is_file():  # a directory, a FIFO or a device would block or fail to read
        raise UserError(f"spec file {p}: not a regular file")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"spec file {p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"spec file {p}: not a text file (TOML must be UTF-8)") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays or tables
        raise UserError(f"spec file {p}: nested too deeply to be a spec") from None
    except OSError as exc:
        raise UserError(f"spec file {p}: cannot read it: {exc.strerror or exc}") from None


def resolve_spec(
    values: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str = "the spec",
) -> StudySpec:
    """Check ``values`` (from a file) updated by ``overrides`` (flags that were given) and
    build the :class:`StudySpec`. Raises :class:`UserError` naming ``source`` and the key."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    values = _split_optimizer_table(values, source)
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise UserError(
            f"{source}: unknown key {unknown[0]!r}: allowed keys are {', '.join(_FIELDS)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        kwargs[key] = _check_field(key, value, f"{source}: {key}")
    for key, value in flags.items():  # a flag wins over the file; its errors name the flag
        kwargs[key] = _check_field(key, value, "--" + key.replace("_", "-"))
    if "optimizer" not in kwargs:  # neither file nor flag names one: the task's own
        kwargs["optimizer"] = task_optimizer(kwargs.get("task", StudySpec.task))
    if kwargs.get("rungs") and "samplers" not in kwargs:  # a grid has no rungs
        kwargs["samplers"] = tuple(s for s in StudySpec.samplers if s != "grid")
    spec = StudySpec(**kwargs)
    if spec.rungs:  # the last rung against the task's own epochs: lrtune.group.prepare
        where = "--rungs" if "rungs" in flags else f"{source}: rungs"
        epochs = spec.epochs or spec.rungs[-1]
        check_ladder(
            spec.rungs, epochs=epochs, pruner=spec.pruner, samplers=spec.samplers, where=where
        )
    check_options(spec, flags, source)
    if spec.lr_low >= spec.lr_high:
        raise UserError(
            f"{source}: lr_low ({spec.lr_low:g}) must be below lr_high ({spec.lr_high:g})"
        )
    if spec.rangetest_start_lr >= spec.rangetest_end_lr:
        raise UserError(
            f"{source}: rangetest_end_lr ({spec.rangetest_end_lr:g}) must be above "
            f"rangetest_start_lr ({spec.rangetest_start_lr:g})"
        )
    spec = dataclasses.replace(spec, optimizer_params=_check_optimizer_params(spec, source))
    for name in spec.params:
        if name not in SETUP_TABLES and name not in spec.schedules:
            raise UserError(
                f"{source}: params.{name}: schedule {name!r} is not in schedules "
                f"({', '.join(spec.schedules)})"
            )
    return spec


def _split_optimizer_table(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """An ``[optimizer]`` table becomes ``optimizer`` (its ``name``, if any) and
    ``optimizer_params`` (the rest); ``optimizer = "adamw"`` stays as it is."""
    out = dict(values)
    table = out.get("optimizer")
    if not isinstance(table, Mapping):
        return out
    table = dict(table)
    del out["optimizer"]
    if "name" in table:
        out["optimizer"] = table.pop("name")
    for key in table:
        if key not in SEARCH_SPACE and key != "betas":
            raise UserError(
                f"{source}: optimizer.{key}: unknown key: allowed are name, momentum, "
                "weight_decay, betas, eps"
            )
    out["optimizer_params"] = {**dict(out.get("optimizer_params") or {}), **table}
    return out


def _check_optimizer_params(spec: StudySpec, source: str) -> dict[str, Any]:
    """The fixed and searched optimizer parameters fit ``spec.optimizer`` (a ``momentum``
    on ``adam`` is a mistake), each value and each range end is valid, and none is both.
    Returns the fixed ones, normalised (numbers as floats, ``betas`` as a list)."""
    name = spec.optimizer
    fixed = dict(spec.optimizer_params)
    for key, value in fixed.items():
        try:
            fixed[key] = check_param(name, key, value)
        except ValueError as exc:
            raise UserError(f"{source}: optimizer.{key}: {exc}") from None
    for key, rng in spec.params.get("optimizer", {}).items():
        where = f"{source}: params.optimizer.{key}"
        if key not in PARAMS[name]:
            raise UserError(f"{where}: {name} takes {', '.join(PARAMS[name])}, not {key}")
        if key in fixed:
            raise UserError(f"{where}: also fixed under [optimizer]; keep one of the two")
        for end in rng[1:3]:
            try:
                check_param(name, key, end)
            except ValueError as exc:
                raise UserError(f"{where}: {exc}") from None
        if rng[3] and rng[1] <= 0:
            raise UserError(f"{where}: a log-scale range needs low > 0, got {rng[1]:g}")
    return fixed


def task_optimizer(task: str) -> str:
    """The optimizer used for ``task`` when none is named: ``Task.optimizer``, else ``sgd``.

    Builds the task once (seed 0) to read it, leaving torch's RNG as it was; raises
    :class:`UserError` for a task that cannot be resolved or built.
    """
    import torch

    from lrtune.faults import call_task
    from lrtune.training.loading import resolve_task

    with torch.random.fork_rng(devices=[]):
        # An error (or sys.exit) in the user's factory is one line, not a traceback.
        built = call_task(f"task {task}", lambda: resolve_task(task)(0))
        return built.optimizer or "sgd"


def _choice(value: Any, allowed: Sequence[str], what: str, where: str) -> Any:
    """``value`` if it is one of ``allowed``, else one line naming them."""
    if value not in allowed:
        raise UserError(f"{where}: unknown {what} {value!r}: allowed are {', '.join(allowed)}")
    return value


def check_group_name(name: str, where: str) -> None:
    """A one-line :class:`UserError` when ``name`` cannot name a group: a space, dot, slash
    or colon (they separate study names and paths), or an unprintable character (a newline
    would split the lines and headings that show the name)."""
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise UserError(
            f"{where}: {name!r} holds the unprintable character U+{ord(bad):04X}: use letters, "
            "digits, - and _"
        )
    if any(c in name for c in " ./\\:"):
        raise UserError(f"{where}: {name!r} may not contain spaces, dots, slashes or colons")


def _check_field(key: str, value: Any, where: str) -> Any:
    if key in _LISTS:
        allowed = _LISTS[key]
        items = value.split(",") if isinstance(value, str) else value
        if key == "baseline" and isinstance(items, (list, tuple)) and not items:
            return ()  # no baseline arm
        if not isinstance(items, (list, tuple)) or not items:
            raise UserError(f"{where}: expected a non-empty list of {', '.join(allowed)}")
        items = [str(i).strip() for i in items]
        for item in items:
            if item not in allowed:
                raise UserError(
                    f"{where}: unknown value {item!r}: allowed are {', '.join(allowed)}"
                )
        if len(set(items)) != len(items):
            raise UserError(f"{where}: {', '.join(items)} lists a value twice")
        if key == "baseline" and "schedulefree" in items:
            require_schedulefree("schedulefree_*")  # before anything is written
        return tuple(items)
    if key in ("task", "group"):
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{where}: expected a non-empty string, got {value!r}")
        if key == "group":
            check_group_name(value, where)
        return value
    if key == "optimizer":
        _choice(value, OPTIMIZERS, "optimizer", where)
        if value in SCHEDULE_FREE:
            require_schedulefree(value)  # before anything is written: how to install it
        return value
    if key == "optimizer_params":
        if not isinstance(value, Mapping):
            raise UserError(f"{where}: expected a table of optimizer parameters")
        return dict(value)  # checked against the optimizer once it is known
    if key == "precision":
        return _choice(value, PRECISIONS, "precision", where)
    if key == "pruner":
        return _choice(value, PRUNERS, "pruner", where)
    if key == "batch_scaling":
        return _choice(value, BATCH_SCALINGS, "batch scaling", where)
    if key in ("lr_low", "lr_high", "tolerance", "clip_grad_norm") or key.endswith("_lr"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or value <= 0 or (key == "tolerance" and value >= 1):
            rule = "between 0 and 1" if key == "tolerance" else "a positive finite number"
            raise UserError(f"{where}: must be {rule}, got {value!r}")
        return value
    if key in INT_LIMITS:
        if value is None and key in ("epochs", "checkpoint_every"):
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        low, high = INT_LIMITS[key]
        if value < low:
            raise UserError(f"{where}: must be at least {low}, got {value}")
        if value > high:
            raise UserError(f"{where}: must be at most {high}, got {value}")
        return value
    if key == "rungs":
        return parse_rungs(value, where) if value else ()
    if key == "horizon_beta":
        return check_beta(value, where)
    if key in ("widen", "share_trunks"):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {value!r}")
        return value
    if key == "params":
        return check_params(value, where)
    raise AssertionError(key)  # pragma: no cover - every field is handled above
