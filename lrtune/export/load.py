"""Load an exported config back for the user's own training loop (``lrtune.load_config``).

:func:`load_config` reads it as a :class:`~lrtune.training.hp.ProductionConfig` whose
``build_scheduler`` follows the very closed-form schedule that the trial trained with.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lrtune.errors import UserError, one_line
from lrtune.export.formats import format_for_path, holds_optimizer, key_parts, split_target
from lrtune.training.hp import ProductionConfig


def load_config(path: str | os.PathLike[str], key: str | None = None) -> ProductionConfig:
    """Read an exported config from a YAML, JSON or TOML file (``"path:dotted.key"`` too).

    ``key`` names the table that :func:`merge_into` merged the export under. Raises
    :class:`UserError` for a missing or unreadable file, a missing key, or missing or bad
    ``optimizer``/``schedule`` fields.
    """
    file, key = split_target(path, key)
    fmt = format_for_path(file)
    if fmt is None:
        raise UserError(f"cannot load {file}: expected a .yaml, .yml, .json or .toml file")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"cannot load {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot load {file}: {one_line(exc)}") from None
    data = _parse(text, fmt, file)
    where = str(file)
    parent: Any = None
    for part in key_parts(key):
        if not isinstance(data, Mapping) or part not in data:
            raise UserError(f"cannot load {file}: no key {key!r} in it")
        parent, data = data, data[part]
        where = f"{file}:{key}"
    block = parent is not None and holds_optimizer(data)
    if block:
        # `export --into file:train.optim` onto an optimizer block: the optimizer is there
        # (beside the user's own keys, which lrtune leaves alone), the rest beside it.
        data = {**parent, "optimizer": data}
    if not isinstance(data, Mapping):
        raise UserError(f"cannot load {where}: expected a table with optimizer and schedule")
    return _config_from_mapping(data, where, block=block)


def _parse(text: str, fmt: str, file: Path) -> Any:
    try:
        if fmt == "yaml":
            import yaml

            return yaml.safe_load(text)
        if fmt == "json":
            return json.loads(text)
        import tomlkit

        return tomlkit.parse(text).unwrap()
    except Exception as exc:  # yaml, json and tomlkit each raise their own error types
        raise UserError(f"cannot parse {file} as {fmt.upper()}: {one_line(exc)}") from None


def _config_from_mapping(
    data: Mapping[str, Any], where: str, *, block: bool = False
) -> ProductionConfig:
    from lrtune import schedules
    from lrtune.training.optimizers import PARAMS, check_optimizer, check_param

    optimizer = data.get("optimizer")
    schedule = data.get("schedule")
    if not isinstance(optimizer, Mapping) or "name" not in optimizer or "lr" not in optimizer:
        raise UserError(f"bad config {where}: needs optimizer with name and lr (see lrtune export)")
    lr = optimizer["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise UserError(f"bad config {where}: optimizer lr must be a positive number, got {lr!r}")
    name = str(optimizer["name"])
    groups = _groups(optimizer.get("groups"), where)
    kwargs = {k: v for k, v in optimizer.items() if k not in ("name", "lr", "groups")}
    if block:  # an optimizer block of the user's config: only the optimizer's own keys
        kwargs = {k: v for k, v in kwargs.items() if k in PARAMS.get(name, ())}
    try:
        check_optimizer(name)
        unknown = sorted(set(kwargs) - set(PARAMS[name]))
        if unknown:
            raise ValueError(
                f"optimizer {name!r} takes {', '.join(PARAMS[name])}, not {', '.join(unknown)}"
            )
        kwargs = {k: check_param(name, k, v) for k, v in kwargs.items()}
    except ValueError as exc:
        raise UserError(f"bad config {where}: {one_line(exc)}") from None
    if schedule is None:
        schedule = {"name": "constant"}
    if not isinstance(schedule, Mapping) or "name" not in schedule:
        raise UserError(f"bad config {where}: needs schedule with a name (see lrtune export)")
    params = {k: v for k, v in schedule.items() if k != "name"}
    try:
        # total_steps only matters for validation being possible; durations are fractions.
        resolved = schedules.resolve_params(str(schedule["name"]), 1000, **params)
    except ValueError as exc:
        raise UserError(f"bad config {where}: {one_line(exc)}") from None
    batch_size = _positive_int(data.get("batch_size"), "batch_size", where)
    micro = _positive_int(data.get("micro_batch_size"), "micro_batch_size", where)
    task = data.get("task") or {}
    if not isinstance(task, Mapping):
        raise UserError(f"bad config {where}: task must be a table of the task's parameters")
    source = data.get("source") or {}
    if not isinstance(source, Mapping):
        raise UserError(f"bad config {where}: source must be a table")
    return ProductionConfig(
        optimizer={
            "name": name,
            "lr": float(lr),
            **kwargs,
            **({"groups": groups} if groups else {}),
        },
        schedule={"name": str(schedule["name"]), **resolved},
        batch_size=batch_size,
        micro_batch_size=micro,
        task=dict(task),
        source=dict(source),
        **_training(data.get("training"), where),
    )


def _positive_int(value: Any, key: str, where: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"bad config {where}: {key} must be a positive integer")
    return value


def _groups(block: Any, where: str) -> dict[str, dict[str, float]]:
    """``optimizer.groups``: ``{name: {lr_mult: positive number}}``, checked."""
    if block is None:
        return {}
    if not isinstance(block, Mapping) or not block:
        raise UserError(
            f"bad config {where}: optimizer.groups must be a table {{name: {{lr_mult}}}}"
        )
    from lrtune.training.groups import check_lr_mult

    out = {}
    for name, group in block.items():
        if not isinstance(group, Mapping) or set(group) - {"lr_mult"}:
            raise UserError(f"bad config {where}: optimizer.groups.{name} takes lr_mult only")
        mult = check_lr_mult(group.get("lr_mult", 1.0), f"bad config {where}: group {name!r}")
        out[str(name)] = {"lr_mult": mult}
    return out


def _training(block: Any, where: str) -> dict[str, Any]:
    """``precision``, ``accumulate``, ``clip_grad_norm`` of a ``training`` block, checked
    (a config without one trained in fp32, without accumulation or clipping)."""
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise UserError(f"bad config {where}: training must be a table")
    unknown = sorted(set(block) - {"precision", "accumulate", "clip_grad_norm"})
    if unknown:
        raise UserError(
            f"bad config {where}: training takes precision, accumulate, clip_grad_norm, "
            f"not {', '.join(map(str, unknown))}"
        )
    precision = block.get("precision", "fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"bad config {where}: training.precision must be fp32, bf16 or fp16")
    accumulate = block.get("accumulate", 1)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise UserError(f"bad config {where}: training.accumulate must be an integer >= 1")
    clip = block.get("clip_grad_norm")
    if clip is not None and (
        isinstance(clip, bool)
        or not isinstance(clip, (int, float))
        or not math.isfinite(clip)
        or clip <= 0
    ):
        raise UserError(f"bad config {where}: training.clip_grad_norm must be a positive number")
    return {
        "precision": precision,
        "accumulate": accumulate,
        "clip_grad_norm": None if clip is None else float(clip),
    }
