"""Optimizers by name: the five that lrtune searches and exports."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop", "adagrad")

# Defaults a user of torch expects; SGD gets momentum because plain SGD is rarely what
# anyone trains with, and the range test's bounds depend on it.
_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"momentum": 0.9, "weight_decay": 0.0},
    "adam": {"weight_decay": 0.0},
    "adamw": {"weight_decay": 0.01},
    "rmsprop": {"momentum": 0.0, "weight_decay": 0.0},
    "adagrad": {"weight_decay": 0.0},
}


def optimizer_defaults(name: str) -> dict[str, float]:
    """The keyword arguments lrtune passes to optimizer ``name`` besides ``lr``."""
    check_optimizer(name)
    return dict(_DEFAULTS[name])


def check_optimizer(name: str) -> None:
    """Raise ``ValueError`` when ``name`` is not one of :data:`OPTIMIZERS`."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def make_optimizer(
    name: str, params: Iterable[Any], lr: float, **overrides: float
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` (tensors or param-group dicts) at ``lr``.

    ``overrides`` replace the defaults of :func:`optimizer_defaults` (``momentum``,
    ``weight_decay``). Param groups may carry their own ``lr``; it is kept.
    """
    kwargs = optimizer_defaults(name)
    unknown = set(overrides) - set(kwargs)
    if unknown:
        allowed, bad = ", ".join(sorted(kwargs)), ", ".join(sorted(unknown))
        raise ValueError(f"optimizer {name!r} takes {allowed}, not {bad}")
    kwargs.update(overrides)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    cls = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }[name]
    return cls(params, lr=lr, **kwargs)
