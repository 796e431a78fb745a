"""``lrtune export --format hf``: an exported config as ``transformers.TrainingArguments``.

Trainer builds its optimizer from ``optim`` (+ ``adam_*``, ``weight_decay``, ``optim_args``)
and its schedule from ``lr_scheduler_type`` (+ ``warmup_steps``, ``lr_scheduler_kwargs``).
A config is written in that form only where Trainer then trains with the same optimizer
and the same LR at every step: each candidate mapping is checked against lrtune's closed
form at every step of the trial's run (``source.total_steps``) with Trainer's own
``get_scheduler``. Otherwise :class:`UserError` says to use the ``optimizers=`` form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from lrtune.errors import UserError

__all__ = ["hf_text", "training_arguments"]

#: Trainer's scheduler names, the lrtune schedules they may match, and their kwargs.
_FORMS = ("constant", "linear", "cosine", "cosine_with_min_lr", "polynomial")


def _optimizer_fields(optimizer: Mapping[str, Any]) -> dict[str, Any] | None:
    """Trainer's fields for the optimizer, or ``None`` when Trainer has none equal to it."""
    name = optimizer["name"]
    wd = float(optimizer.get("weight_decay", 0.0))
    if name in ("adamw", "schedulefree_adamw") or (name == "adam" and wd == 0.0):
        betas = optimizer.get("betas", [0.9, 0.999])
        fields = {
            "optim": "schedule_free_adamw" if name == "schedulefree_adamw" else "adamw_torch",
            "weight_decay": wd,
            "adam_beta1": float(betas[0]),
            "adam_beta2": float(betas[1]),
            "adam_epsilon": float(optimizer.get("eps", 1e-8)),
        }
        return fields
    if name == "sgd":
        return {
            "optim": "sgd",
            "weight_decay": wd,
            "optim_args": f"momentum={float(optimizer.get('momentum', 0.9))}",
        }
    if name == "schedulefree_sgd" and float(optimizer.get("momentum", 0.9)) == 0.9:
        return {"optim": "schedule_free_sgd", "weight_decay": wd}  # Trainer passes no momentum
    if name == "adagrad":
        eps = float(optimizer.get("eps", 1e-10))
        return {"optim": "adagrad", "weight_decay": wd, "optim_args": f"eps={eps}"}
    if name == "rmsprop":
        momentum, eps = float(optimizer.get("momentum", 0.0)), float(optimizer.get("eps", 1e-8))
        args = f"momentum={momentum},eps={eps}"
        return {"optim": "rmsprop", "weight_decay": wd, "optim_args": args}
    return None


def _candidates(schedule: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Trainer schedules that may equal ``schedule`` (warmup 0: lrtune's warmup,
    ``(s + 1) / (W + 1)``, is not Trainer's ``s / W``)."""
    name = schedule["name"]
    final = float(schedule.get("final_factor", 0.0))
    if name == "constant" and float(schedule.get("warmup_frac", 0.0)) == 0.0:
        return [("constant", {})]
    if name == "cosine":
        return [("cosine", {})] if final == 0 else [("cosine_with_min_lr", {"min_lr_rate": final})]
    if name == "poly":
        power = float(schedule.get("power", 1.0))
        out: list[tuple[str, dict[str, Any]]] = (
            [("linear", {})] if power == 1 and final == 0 else []
        )
        return [*out, ("polynomial", {"power": power, "lr_end_factor": final})]
    return []


def _same_lrs(kind: str, kwargs: dict[str, Any], config: Mapping[str, Any], total: int) -> bool:
    """Whether Trainer's ``kind`` schedule gives the config's LR at every step 0..total-1."""
    import torch
    from transformers import get_scheduler

    from lrtune.schedules import schedule_lr

    lr = float(config["optimizer"]["lr"])
    sched = {k: v for k, v in config["schedule"].items() if k != "name"}
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    extra = dict(kwargs)
    if "lr_end_factor" in extra:
        extra["lr_end"] = lr * extra.pop("lr_end_factor")
    try:
        scheduler = get_scheduler(
            kind,
            optimizer=opt,
            num_warmup_steps=0,
            num_training_steps=total,
            scheduler_specific_kwargs=extra,
        )
    except ValueError:  # e.g. polynomial's lr_end must be below lr
        return False
    for step in range(total):
        want = schedule_lr(config["schedule"]["name"], step, total, lr, **sched)
        if not math.isclose(opt.param_groups[0]["lr"], want, rel_tol=1e-9, abs_tol=1e-15):
            return False
        opt.step()
        scheduler.step()
    return True


def training_arguments(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``TrainingArguments`` fields that reproduce ``config`` (an export), or
    :class:`UserError` naming what Trainer cannot express and the ``optimizers=`` form."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise UserError("--format hf needs transformers: pip install 'lrtune[hf]'") from None
    source = config.get("source", {})
    total = source.get("total_steps")
    schedule, optimizer = config["schedule"], config["optimizer"]
    fallback = (
        "export --format yaml and pass Trainer(optimizers=(opt, sched)) with opt = "
        "lrtune.load_config(PATH).build_optimizer(model.parameters()), sched = "
        "cfg.build_scheduler(opt, total_steps)"
    )
    fields = _optimizer_fields(optimizer)
    if fields is None:
        raise UserError(f"optimizer {optimizer['name']} has no Trainer equivalent: {fallback}")
    if not isinstance(total, int) or total < 1:
        raise UserError(f"the trial recorded no total_steps to check the schedule: {fallback}")
    for kind, kwargs in _candidates(schedule):
        if _same_lrs(kind, kwargs, config, total):
            out: dict[str, Any] = {"learning_rate": float(optimizer["lr"])}
            out["lr_scheduler_type"] = kind
            out["warmup_steps"] = 0
            if "lr_end_factor" in kwargs:  # Trainer's polynomial takes lr_end itself
                kwargs = {
                    "power": kwargs["power"],
                    "lr_end": out["learning_rate"] * kwargs["lr_end_factor"],
                }
            if kwargs:
                out["lr_scheduler_kwargs"] = kwargs
            out.update(fields)
            training = config.get("training", {})
            if training.get("clip_grad_norm") is not None:
                out["max_grad_norm"] = float(training["clip_grad_norm"])
            else:
                out["max_grad_norm"] = 0.0  # the trial did not clip; Trainer clips at 1 by default
            if config.get("batch_size"):
                accumulate = int(training.get("accumulate", 1))
                out["per_device_train_batch_size"] = int(config["batch_size"]) // accumulate
                out["gradient_accumulation_steps"] = accumulate
            return out
    raise UserError(
        f"schedule {schedule['name']} ({_params(schedule)}) has no Trainer lr_scheduler_type "
        f"with the same LR at every step: {fallback}"
    )


def _params(schedule: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in schedule.items() if k != "name") or "no parameters"


def hf_text(config: Mapping[str, Any]) -> str:
    """Python source: ``training_args = {...}``, to pass as ``TrainingArguments(output_dir=
    ..., **training_args)``; the trial's epochs are ``num_train_epochs``."""
    fields = training_arguments(config)
    source = config.get("source", {})
    if source.get("epochs"):
        fields["num_train_epochs"] = source["epochs"]
    lines = [
        f"# lrtune export --format hf: study {source.get('study')}, trial {source.get('trial')}"
        f" ({source.get('metric')} {source.get('value')})",
        "# Trainer's own optimizer and schedule from these give the trial's LR at every step:",
        "#   args = TrainingArguments(output_dir='out', **training_args)",
        "training_args = {",
        *(f"    {key!r}: {value!r}," for key, value in fields.items()),
        "}",
    ]
    return "\n".join(lines) + "\n"
