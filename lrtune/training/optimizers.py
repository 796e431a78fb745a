"""Optimizers by name: the five of torch that lrtune searches and exports, and the two
schedule-free ones of the ``schedulefree`` package (Defazio et al., 2024).

A schedule-free optimizer keeps two points of the weights: the one gradients are taken at
(train mode) and the average the model is evaluated and saved at (eval mode). It must be
switched with ``optimizer.train()`` before training steps and ``optimizer.eval()`` before
evaluating or saving (:func:`has_modes`, :func:`evaluating`); lrtune's loop, the range test
and ``load_config`` do so.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from lrtune.errors import UserError

OPTIMIZERS: tuple[str, ...] = (
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "adagrad",
    "schedulefree_adamw",
    "schedulefree_sgd",
)

#: The optimizers of the ``schedulefree`` package (extra ``lrtune[schedulefree]``).
SCHEDULE_FREE: tuple[str, ...] = ("schedulefree_adamw", "schedulefree_sgd")

# Defaults a user of torch expects; SGD gets momentum because plain SGD is rarely what
# anyone trains with, and the range test's bounds depend on it.
_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"momentum": 0.9, "weight_decay": 0.0},
    "adam": {"weight_decay": 0.0},
    "adamw": {"weight_decay": 0.01},
    "rmsprop": {"momentum": 0.0, "weight_decay": 0.0},
    "adagrad": {"weight_decay": 0.0},
    # As adamw and sgd: the schedule-free arm differs from them by its averaging alone.
    "schedulefree_adamw": {"weight_decay": 0.01},
    "schedulefree_sgd": {"momentum": 0.9, "weight_decay": 0.0},
}


# The parameters a spec (``[optimizer]``) or an exported config may set for each optimizer.
PARAMS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "weight_decay"),
    "adam": ("weight_decay", "betas", "eps"),
    "adamw": ("weight_decay", "betas", "eps"),
    "rmsprop": ("momentum", "weight_decay", "eps"),
    "adagrad": ("weight_decay", "eps"),
    # warmup is the schedule's (constant's warmup_frac), not the package's warmup_steps:
    # a fraction of the run carries over to a run of another length.
    "schedulefree_adamw": ("weight_decay", "betas", "eps"),
    "schedulefree_sgd": ("momentum", "weight_decay"),
}

#: The range each searchable parameter gets with ``[params.optimizer] name = true``:
#: ``("float", low, high, log)``, as schedules' ``space``. ``betas`` is not searchable.
SEARCH_SPACE: dict[str, tuple[str, float, float, bool]] = {
    "weight_decay": ("float", 1e-5, 0.1, True),
    "momentum": ("float", 0.8, 0.99, False),
    "eps": ("float", 1e-10, 1e-6, True),
}


def check_param(name: str, key: str, value: Any) -> Any:
    """``value`` of parameter ``key`` of optimizer ``name``, checked (``betas`` as a list).

    Raises ``ValueError`` naming what is wrong: a parameter ``name`` does not take, a
    negative ``weight_decay``, a ``momentum`` or beta outside ``[0, 1)``, a ``betas`` that
    is not two numbers, an ``eps`` that is not positive.
    """
    check_optimizer(name)
    if key not in PARAMS[name]:
        raise ValueError(f"{name} takes {', '.join(PARAMS[name])}, not {key}")
    if key == "betas":
        ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_number, value))
        if not ok or not all(0 <= float(b) < 1 for b in value):
            raise ValueError(f"betas must be two numbers in [0, 1), got {value!r}")
        return [float(b) for b in value]
    if not _number(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    value = float(value)
    bad = {
        "weight_decay": not value >= 0,
        "momentum": not 0 <= value < 1,
        "eps": not value > 0,
    }[key]
    if bad or not math.isfinite(value):
        rule = {"weight_decay": ">= 0", "momentum": "in [0, 1)", "eps": "> 0"}[key]
        raise ValueError(f"{key} must be {rule}, got {value!r}")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def optimizer_defaults(name: str) -> dict[str, float]:
    """The keyword arguments lrtune passes to optimizer ``name`` besides ``lr``."""
    check_optimizer(name)
    return dict(_DEFAULTS[name])


def check_optimizer(name: str) -> None:
    """Raise ``ValueError`` when ``name`` is not one of :data:`OPTIMIZERS`."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def make_optimizer(
    name: str, params: Iterable[Any], lr: float, **overrides: Any
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` (tensors or param-group dicts) at ``lr``.

    ``overrides`` replace the defaults of :func:`optimizer_defaults`; any of
    :data:`PARAMS` may be given (``momentum``, ``weight_decay``, ``betas``, ``eps``). Param
    groups may carry their own ``lr``; it is kept.
    """
    kwargs: dict[str, Any] = dict(optimizer_defaults(name))
    unknown = set(overrides) - set(PARAMS[name])
    if unknown:
        allowed, bad = ", ".join(PARAMS[name]), ", ".join(sorted(unknown))
        raise ValueError(f"optimizer {name!r} takes {allowed}, not {bad}")
    kwargs.update(overrides)
    if "betas" in kwargs:  # a list from TOML, JSON or YAML
        kwargs["betas"] = tuple(kwargs["betas"])
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if name in SCHEDULE_FREE:
        sf = require_schedulefree(name)
        cls = sf.AdamWScheduleFree if name == "schedulefree_adamw" else sf.SGDScheduleFree
        optimizer: torch.optim.Optimizer = cls(params, lr=lr, **kwargs)
        optimizer.train()  # type: ignore[attr-defined]  # it refuses to step in eval mode
        return optimizer
    cls = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[name]
    return cls(params, lr=lr, **kwargs)


def require_schedulefree(name: str) -> Any:
    """The ``schedulefree`` module, or :class:`UserError` saying how to install it."""
    try:
        import schedulefree
    except ImportError:
        raise UserError(
            f"optimizer {name} needs the schedulefree package: "
            "pip install 'lrtune[schedulefree]' (or pip install schedulefree)"
        ) from None
    return schedulefree


def has_modes(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has train/eval modes (the schedule-free ones)."""
    return callable(getattr(optimizer, "train", None)) and callable(
        getattr(optimizer, "eval", None)
    )


@contextlib.contextmanager
def evaluating(optimizer: torch.optim.Optimizer | None) -> Iterator[None]:
    """The model's weights at the point it is evaluated at, then back to training.

    For a schedule-free optimizer: ``optimizer.eval()`` (the averaged weights), then
    ``optimizer.train()``; for any other optimizer (or ``None``) nothing changes.
    """
    if optimizer is None or not has_modes(optimizer):
        yield
        return
    optimizer.eval()  # type: ignore[attr-defined]
    try:
        yield
    finally:
        optimizer.train()  # type: ignore[attr-defined]
