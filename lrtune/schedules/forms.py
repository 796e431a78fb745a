"""The closed forms of the learning-rate schedules (``FORMS``).

Every schedule is a pure function of the optimizer step (nanoGPT ``get_lr(it)`` style): the
LR at step ``s`` depends only on ``s``, ``total_steps`` (``T``), the peak ``lr`` and the
schedule's own parameters, never on what was computed before. ``lr`` is always the PEAK LR
of the schedule, so a study can search ``lr`` on one log scale whatever the schedule.

Steps count optimizer steps from 0; a run of ``T`` steps uses steps ``0 .. T-1``.

Parameters that are durations are fractions of ``T`` (``*_frac``), turned into steps with
``max(1, round(frac * T))`` (Python's ``round``: halves go to the even integer), so an
exported config carries over to a run of another length.

Steps ``>= T``: the decaying schedules (``step``, ``exponential``, ``poly``, ``cosine``,
``warmup_cosine``, ``wsd``) clamp the step to ``T`` and keep their final value;
``onecycle`` clamps to ``T - 1`` (torch's ``OneCycleLR`` is defined on ``0 .. T-1`` only);
``cyclic`` and ``sgdr`` just continue their cycles; ``constant`` stays at ``lr``.

Each form here is the closed form of the LR FACTOR (the LR divided by the peak ``lr``),
called as ``fn(step, total_steps, **params)`` with resolved params (see
:func:`lrtune.schedules.resolve_params`); it does no validation. Pure Python: no torch.
:func:`lrtune.schedules.build_scheduler` hands the factor to
:class:`torch.optim.lr_scheduler.LambdaLR`, which multiplies each param group's own
initial LR by it, so several param groups keep their LR ratios.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["FORMS", "Form"]

Form = Callable[..., float]
"""A closed form: ``fn(step, total_steps, **params) -> float``, the LR factor (LR / peak)."""


# --------------------------------------------------------------------------- helpers


def _frac_steps(frac: float, total_steps: int) -> int:
    """A duration given as a fraction of ``total_steps``, in steps (at least 1)."""
    return max(1, round(frac * total_steps))


def _warmup_steps(warmup_frac: float, total_steps: int, cap: int) -> int:
    """Warmup length: 0 when ``warmup_frac == 0``, else ``max(1, round(frac * T))``, capped."""
    if warmup_frac == 0:
        return 0
    return max(0, min(_frac_steps(warmup_frac, total_steps), cap))


def _cos_anneal(frac_done: float) -> float:
    """``(1 + cos(pi * p)) / 2``: 1 at ``p = 0``, 0 at ``p = 1``."""
    return (1.0 + math.cos(math.pi * frac_done)) / 2.0


# --------------------------------------------------------------------------- closed forms


def _constant(step: int, total_steps: int, *, warmup_frac: float = 0.0) -> float:
    """``lr`` at every step, after an optional linear warmup.

    ``W = max(1, round(warmup_frac * T))`` capped at ``T - 1`` (0 when ``warmup_frac == 0``):
    ``lr * (step + 1) / (W + 1)`` for ``step < W``, then ``lr``. With warmup it is the
    schedule of a schedule-free optimizer (``schedulefree_adamw``), which needs no decay.
    """
    w = _warmup_steps(warmup_frac, total_steps, total_steps - 1)
    if step < w:
        return (step + 1) / (w + 1)
    return 1.0


def _step(step: int, total_steps: int, *, step_frac: float, gamma: float) -> float:
    """``lr * gamma ** floor(min(step, T) / step_size)``.

    ``step_size = max(1, round(step_frac * T))``.
    Equals ``torch.optim.lr_scheduler.StepLR(step_size, gamma)`` on steps ``0 .. T-1``.
    """
    size = _frac_steps(step_frac, total_steps)
    return float(gamma ** (min(step, total_steps) // size))


def _exponential(step: int, total_steps: int, *, final_factor: float) -> float:
    """``lr * gamma ** min(step, T)`` with ``gamma = final_factor ** (1 / T)``.

    Reaches ``lr * final_factor`` at step ``T``. Equals ``ExponentialLR(gamma)``.
    """
    gamma = final_factor ** (1.0 / total_steps)
    return float(gamma ** min(step, total_steps))


def _poly(step: int, total_steps: int, *, power: float, final_factor: float) -> float:
    """``(lr - lr_end) * (1 - min(step, T) / T) ** power + lr_end``, ``lr_end = lr*final_factor``.

    With ``final_factor = 0`` equals ``PolynomialLR(total_iters=T, power)``.
    """
    s = min(step, total_steps)
    return float((1.0 - final_factor) * (1.0 - s / total_steps) ** power + final_factor)


def _cosine(step: int, total_steps: int, *, final_factor: float) -> float:
    """``eta_min + (lr - eta_min) * (1 + cos(pi * min(step, T) / T)) / 2``.

    ``eta_min = lr * final_factor``.
    Equals ``CosineAnnealingLR(T_max=T, eta_min)``.
    """
    s = min(step, total_steps)
    return final_factor + (1.0 - final_factor) * _cos_anneal(s / total_steps)


def _warmup_cosine(
    step: int, total_steps: int, *, warmup_frac: float, final_factor: float
) -> float:
    """Linear warmup for ``W`` steps, then cosine from ``lr`` to ``eta_min`` at step ``T``.

    ``W = max(1, round(warmup_frac * T))`` capped at ``T - 1`` (``W = 0``: no warmup when
    ``warmup_frac == 0``); ``eta_min = lr * final_factor``.

    - ``step < W``:  ``lr * (step + 1) / (W + 1)`` (starts above 0, never 0);
    - ``step >= W``: ``eta_min + (lr - eta_min) * (1 + cos(pi * p)) / 2`` with
      ``p = (min(step, T) - W) / (T - W)``, which is ``lr`` at step ``W``.
    """
    w = _warmup_steps(warmup_frac, total_steps, total_steps - 1)
    if step < w:
        return (step + 1) / (w + 1)
    s = min(step, total_steps)
    return final_factor + (1.0 - final_factor) * _cos_anneal((s - w) / (total_steps - w))


def _onecycle(
    step: int,
    total_steps: int,
    *,
    pct_start: float,
    div_factor: float,
    final_div_factor: float,
    anneal: str,
    three_phase: bool,
) -> float:
    """torch's ``OneCycleLR(max_lr=lr, total_steps=T, ...)``, phase for phase.

    ``initial = lr / div_factor``, ``min = initial / final_div_factor``. Phases end at
    (float) steps ``e1 = pct_start*T - 1`` and ``T - 1`` (two phases: initial -> lr -> min),
    or ``e1``, ``e2 = 2*pct_start*T - 2`` and ``T - 1`` (three phases:
    initial -> lr -> initial -> min). In the phase ``(start, end]`` holding ``step``
    (the first phase starts at 0), ``p = (step - start) / (end - start)`` and the LR is
    ``b + (a - b) * (1 + cos(pi * p)) / 2`` (``anneal='cos'``) or ``a + (b - a) * p``
    (``'linear'``) from ``a`` to ``b``. The LR is ``lr`` exactly at step ``e1`` when
    ``pct_start * T`` is an integer; otherwise the peak lies between two steps and the
    largest LR used is slightly below ``lr`` (as in torch). Steps ``>= T`` are clamped to
    ``T - 1`` (``lr / div_factor / final_div_factor``).
    """
    initial = 1.0 / div_factor
    final = initial / final_div_factor
    t = total_steps
    phases: list[tuple[float, float, float]]
    if three_phase:
        phases = [
            (float(pct_start * t) - 1, initial, 1.0),
            (float(2 * pct_start * t) - 2, 1.0, initial),
            (t - 1, initial, final),
        ]
    else:
        phases = [(float(pct_start * t) - 1, initial, 1.0), (t - 1, 1.0, final)]
    s = min(step, t - 1)
    start = 0.0
    for i, (end, a, b) in enumerate(phases):
        if s <= end or i == len(phases) - 1:
            span = end - start
            # torch divides by zero here (pct_start * T == 1): the phase is a single point.
            p = (s - start) / span if span != 0 else 1.0
            if anneal == "cos":
                return b + (a - b) / 2.0 * (math.cos(math.pi * p) + 1)
            return (b - a) * p + a
        start = end
    raise AssertionError("unreachable")  # pragma: no cover


def _cyclic(
    step: int,
    total_steps: int,
    *,
    mode: str,
    base_factor: float,
    cycle_frac: float,
    gamma: float,
) -> float:
    """torch's ``CyclicLR(base_lr=lr*base_factor, max_lr=lr, step_size_up, mode, gamma)``.

    ``step_size_up = max(1, round(cycle_frac * T / 2))`` (half a cycle; the cycle is
    symmetric). ``cycle = floor(1 + step / (2 * up))``, ``x = 1 + step / (2 * up) - cycle``,
    ``h = 2x`` if ``x <= 1/2`` else ``2 - 2x`` (the triangle, 0 -> 1 -> 0), and
    ``LR = base_lr + (lr - base_lr) * h * scale`` with ``scale = 1`` (``triangular``),
    ``1 / 2 ** (cycle - 1)`` (``triangular2``) or ``gamma ** step`` (``exp_range``; ``gamma``
    is per step and ignored by the other modes). The peak ``lr`` is reached at step ``up``
    (``triangular``, ``triangular2``); ``exp_range`` peaks below ``lr`` once ``gamma < 1``.
    Continues cycling past ``T``.
    """
    up = float(max(1, round(cycle_frac * total_steps / 2)))
    size = up + up
    ratio = up / size
    cycle = math.floor(1 + step / size)
    x = 1.0 + step / size - cycle
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if mode == "triangular":
        scale = 1.0
    elif mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:
        scale = float(gamma**step)
    return base_factor + (1.0 - base_factor) * height * scale


def _sgdr(
    step: int, total_steps: int, *, cycle_frac: float, t_mult: int, final_factor: float
) -> float:
    """torch's ``CosineAnnealingWarmRestarts(T_0, T_mult=t_mult, eta_min=lr*final_factor)``.

    ``T_0 = max(1, round(cycle_frac * T))``; cycle ``i`` lasts ``T_i = T_0 * t_mult ** i``
    steps. With ``t_cur`` the step within its cycle:
    ``eta_min + (lr - eta_min) * (1 + cos(pi * t_cur / T_i)) / 2``. Restarts at ``lr``
    and continues cycling past ``T``.
    """
    t_i = _frac_steps(cycle_frac, total_steps)
    if t_mult == 1:
        t_cur = step % t_i
    else:
        t_cur = step
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= t_mult
    return final_factor + (1.0 - final_factor) * _cos_anneal(t_cur / t_i)


def _wsd(
    step: int,
    total_steps: int,
    *,
    warmup_frac: float,
    decay_frac: float,
    decay: str,
    final_factor: float,
) -> float:
    """Warmup-stable-decay: linear warmup, ``lr`` held, then decay to ``lr * final_factor``.

    ``D = min(T, max(1, round(decay_frac * T)))`` decay steps starting at ``S = T - D``;
    ``W = max(1, round(warmup_frac * T))`` capped at ``S`` (0 when ``warmup_frac == 0``).

    - ``step < W``:      ``lr * (step + 1) / (W + 1)``;
    - ``W <= step < S``: ``lr``;
    - ``step >= S``:     with ``p = (min(step, T) - S) / D`` (0 -> 1 at step ``T``),
      ``lr_end + (lr - lr_end) * g(p)``, ``g = 1 - p`` (``linear``),
      ``(1 + cos(pi * p)) / 2`` (``cosine``) or ``1 - sqrt(p)`` (``sqrt``).
    """
    d = min(total_steps, _frac_steps(decay_frac, total_steps))
    decay_start = total_steps - d
    w = _warmup_steps(warmup_frac, total_steps, decay_start)
    if step < w:
        return (step + 1) / (w + 1)
    if step < decay_start:
        return 1.0
    p = (min(step, total_steps) - decay_start) / d
    if decay == "linear":
        g = 1.0 - p
    elif decay == "cosine":
        g = _cos_anneal(p)
    else:
        g = 1.0 - math.sqrt(p)
    return final_factor + (1.0 - final_factor) * g


FORMS: dict[str, Form] = {
    "constant": _constant,
    "step": _step,
    "exponential": _exponential,
    "poly": _poly,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
    "onecycle": _onecycle,
    "cyclic": _cyclic,
    "sgdr": _sgdr,
    "wsd": _wsd,
}
"""Every schedule's closed form by name, in the order the registry lists them."""
