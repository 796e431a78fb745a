"""Parameter groups: ``Task.param_groups(model)`` in torch's form, each group with an
``lr_mult`` (its LR is the base LR times it; default 1) and a ``name``.

Discriminative LRs (a pretrained backbone at 1×, a new head at 10×, as fastai fine-tunes)
are one base LR searched and swept, the ratios kept: every schedule scales every group by
the same factor. A searched multiplier (``[params.lr_mult] head = [1, 100]``) replaces the
task's own for that group. Trials, the range test, ``fit``'s ``hp.build_optimizer(groups)``
and ``load_config`` build the groups the same way (:func:`named_groups`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from lrtune.errors import UserError


def group_name(group: Mapping[str, Any], index: int) -> str:
    """A group's ``name``, else ``group{index}``."""
    name = group.get("name")
    return str(name) if name is not None else f"group{index}"


def check_lr_mult(value: Any, where: str) -> float:
    """``value`` as a positive finite float, else one line naming ``where``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise UserError(f"{where}: lr_mult must be a positive number, got {value!r}")
    return float(value)


def check_groups(groups: Any, where: str) -> list[dict[str, Any]]:
    """``groups`` as a list of torch param-group dicts, each with its ``name`` and
    ``lr_mult`` filled in. One line for: not a list of dicts, a group without ``params``,
    an ``lr_mult`` that is not a positive number, a name given twice, a parameter in two
    groups."""
    if not isinstance(groups, (list, tuple)) or not groups:
        raise UserError(f"{where}: param_groups must return a non-empty list of dicts")
    out: list[dict[str, Any]] = []
    owner: dict[int, str] = {}
    for i, group in enumerate(groups):
        if not isinstance(group, Mapping) or "params" not in group:
            raise UserError(
                f"{where}: group {i} is {type(group).__name__}, expected a dict with "
                "'params' (torch's param-group form)"
            )
        name = group_name(group, i)
        if any(g["name"] == name for g in out):
            raise UserError(f"{where}: two groups are named {name!r}; give each its own name")
        params = group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if id(p) in owner:
                raise UserError(
                    f"{where}: a parameter is in group {owner[id(p)]!r} and in group {name!r}; "
                    "put each parameter in one group"
                )
            owner[id(p)] = name
        mult = check_lr_mult(group.get("lr_mult", 1.0), f"{where}: group {name!r}")
        out.append({**group, "params": params, "name": name, "lr_mult": mult})
    return out


def task_groups(
    param_groups: Callable[[torch.nn.Module], Any] | None,
    model: torch.nn.Module,
    label: str,
    mults: Mapping[str, float] | None = None,
) -> list[dict[str, Any]] | None:
    """The task's groups over ``model`` (``None`` without ``param_groups``), with ``mults``
    (searched multipliers by group name) over the task's own ``lr_mult``."""
    if param_groups is None:
        if mults:
            raise UserError(
                f"task {label}: [params.lr_mult] {next(iter(mults))}: the task has no "
                "param_groups; give Task.param_groups(model) -> list of named groups"
            )
        return None
    where = f"task {label}"
    try:
        raw = param_groups(model)
    except UserError:
        raise
    except Exception as exc:
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise UserError(f"{where}: param_groups raised {first}") from exc
    groups = check_groups(raw, where)
    names = [g["name"] for g in groups]
    for name, mult in (mults or {}).items():
        if name not in names:
            raise UserError(
                f"{where}: [params.lr_mult] {name}: no such group; the task's param_groups "
                f"are named {', '.join(names)}"
            )
        next(g for g in groups if g["name"] == name)["lr_mult"] = check_lr_mult(
            mult, f"{where}: lr_mult.{name}"
        )
    return groups


def at_base_lr(groups: Iterable[dict[str, Any]], lr: float) -> list[dict[str, Any]]:
    """The groups with each ``lr`` set to ``lr × lr_mult`` (for building an optimizer)."""
    return [{**g, "lr": lr * float(g.get("lr_mult", 1.0))} for g in groups]


def set_base_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group of ``optimizer`` at ``lr × its lr_mult`` (1 for a group without one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * float(group.get("lr_mult", 1.0))


def mults_of(groups: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{name: {"lr_mult": m}}``: what the export's ``optimizer.groups`` records."""
    return {str(g["name"]): {"lr_mult": float(g["lr_mult"])} for g in groups}


def named_groups(
    items: list[Any], recorded: Mapping[str, Mapping[str, Any]], lr: float
) -> list[dict[str, Any]]:
    """``build_optimizer(groups)`` of a config tuned with groups ``recorded``: each given
    group (matched by ``name``, else ``group{i}``) at ``lr × the recorded lr_mult``."""
    expected = ", ".join(recorded)
    if not all(isinstance(item, Mapping) for item in items):
        raise UserError(
            f"this config was tuned with parameter groups ({expected}): pass "
            "build_optimizer a list of param-group dicts named so, e.g. Task.param_groups(model)"
        )
    groups = check_groups(items, "build_optimizer")
    names = [g["name"] for g in groups]
    if sorted(names) != sorted(recorded):
        raise UserError(
            f"build_optimizer got groups {', '.join(names)}, but the config was tuned with "
            f"{expected}: name the groups as the task's param_groups did"
        )
    for group in groups:
        group["lr_mult"] = check_lr_mult(
            recorded[group["name"]].get("lr_mult", 1.0), f"group {group['name']!r}"
        )
    return at_base_lr(groups, lr)
