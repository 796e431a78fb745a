"""Tests of lrtune.schedules: closed forms equal torch's schedulers, API, validation."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LRScheduler,
    OneCycleLR,
    PolynomialLR,
    StepLR,
)

from lrtune.schedules import (
    SCHEDULE_NAMES,
    SCHEDULES,
    ScheduleInfo,
    build_scheduler,
    lr_factor,
    resolve_params,
    schedule_curve,
    schedule_lr,
)

LR = 0.3


def torch_lrs(make: Callable[[torch.optim.Optimizer], LRScheduler], steps: int) -> list[float]:
    """The LR torch's scheduler gives at steps 0..steps-1, driven with a real optimizer."""
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=LR)
    scheduler = make(optimizer)
    lrs = []
    for step in range(steps):
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad()
        param.sum().backward()
        optimizer.step()
        if step < steps - 1:
            scheduler.step()
    return lrs


def ours(name: str, total_steps: int, **params: Any) -> list[float]:
    return [schedule_lr(name, step, total_steps, LR, **params) for step in range(total_steps)]


def assert_same(mine: list[float], theirs: list[float], abs_tol: float = 0.0) -> None:
    assert len(mine) == len(theirs)
    for step, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=abs_tol), (step, a, b)


def frac_for(steps: int, total_steps: int) -> float:
    """A duration fraction that maps back to exactly ``steps`` steps of ``total_steps``."""
    frac = steps / total_steps
    assert max(1, round(frac * total_steps)) == steps
    return frac


# ----------------------------------------------------------------- equality with torch

TOTALS = (100, 37)


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("gamma", [0.1, 0.5])
def test_step_matches_steplr(total: int, gamma: float) -> None:
    size = {100: 30, 37: 11}[total]
    step_frac = 0.3  # round(0.3 * 100) = 30, round(0.3 * 37) = round(11.1) = 11
    assert max(1, round(step_frac * total)) == size
    theirs = torch_lrs(lambda o: StepLR(o, step_size=size, gamma=gamma), total)
    assert_same(ours("step", total, step_frac=step_frac, gamma=gamma), theirs)


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("final_factor", [0.01, 0.5])
def test_exponential_matches_exponentiallr(total: int, final_factor: float) -> None:
    gamma = final_factor ** (1 / total)
    theirs = torch_lrs(lambda o: ExponentialLR(o, gamma=gamma), total)
    assert_same(ours("exponential", total, final_factor=final_factor), theirs)


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
def test_poly_matches_polynomiallr(total: int, power: float) -> None:
    theirs = torch_lrs(lambda o: PolynomialLR(o, total_iters=total, power=power), total)
    assert_same(ours("poly", total, power=power), theirs)


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("final_factor", [0.0, 0.1])
def test_cosine_matches_cosineannealinglr(total: int, final_factor: float) -> None:
    eta_min = LR * final_factor
    theirs = torch_lrs(lambda o: CosineAnnealingLR(o, T_max=total, eta_min=eta_min), total)
    assert_same(ours("cosine", total, final_factor=final_factor), theirs)


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("pct_start", [0.3, 0.25])
def test_onecycle_matches_onecyclelr(
    total: int, anneal: str, three_phase: bool, pct_start: float
) -> None:
    def make(o: torch.optim.Optimizer) -> LRScheduler:
        return OneCycleLR(
            o,
            max_lr=LR,
            total_steps=total,
            pct_start=pct_start,
            anneal_strategy=anneal,  # type: ignore[arg-type]
            div_factor=25.0,
            final_div_factor=1e4,
            three_phase=three_phase,
            cycle_momentum=False,
        )

    mine = ours(
        "onecycle",
        total,
        pct_start=pct_start,
        div_factor=25.0,
        final_div_factor=1e4,
        anneal=anneal,
        three_phase=three_phase,
    )
    assert_same(mine, torch_lrs(make, total))


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
def test_cyclic_matches_cycliclr(total: int, mode: str) -> None:
    # Half a cycle: round(0.2 * 100 / 2) = 10; round(0.27 * 37 / 2) = round(4.995) = 5.
    cycle_frac, up = {100: (0.2, 10), 37: (0.27, 5)}[total]
    assert max(1, round(cycle_frac * total / 2)) == up
    base_factor, gamma = 0.1, 0.99

    def make(o: torch.optim.Optimizer) -> LRScheduler:
        return CyclicLR(
            o,
            base_lr=LR * base_factor,
            max_lr=LR,
            step_size_up=up,
            mode=mode,  # type: ignore[arg-type]
            gamma=gamma,
            cycle_momentum=False,
        )

    mine = ours(
        "cyclic", total, mode=mode, base_factor=base_factor, cycle_frac=cycle_frac, gamma=gamma
    )
    assert_same(mine, torch_lrs(make, total))


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("t_mult", [1, 2])
@pytest.mark.parametrize("final_factor", [0.0, 0.05])
def test_sgdr_matches_cosineannealingwarmrestarts(
    total: int, t_mult: int, final_factor: float
) -> None:
    t_0 = {100: 20, 37: 7}[total]
    cycle_frac = 0.2  # round(0.2 * 100) = 20, round(0.2 * 37) = round(7.4) = 7
    assert max(1, round(cycle_frac * total)) == t_0
    eta_min = LR * final_factor
    theirs = torch_lrs(
        lambda o: CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=eta_min), total
    )
    mine = ours("sgdr", total, cycle_frac=cycle_frac, t_mult=t_mult, final_factor=final_factor)
    assert_same(mine, theirs)


def test_frac_for_helper() -> None:
    assert frac_for(30, 100) == 0.3


# ----------------------------------------------------------------- build_scheduler


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("total", [50, 7])
def test_build_scheduler_two_groups(name: str, total: int) -> None:
    a = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}])
    scheduler = build_scheduler(optimizer, name, total)
    for step in range(total):
        lr0 = optimizer.param_groups[0]["lr"]
        lr1 = optimizer.param_groups[1]["lr"]
        assert math.isclose(lr0, schedule_lr(name, step, total, 0.1), rel_tol=1e-12), step
        assert math.isclose(lr0, 10 * lr1, rel_tol=1e-12), step
        optimizer.step()
        scheduler.step()


def test_build_scheduler_validates_up_front() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="unknown parameter 'gama'"):
        build_scheduler(optimizer, "step", 10, gama=0.5)
    with pytest.raises(ValueError, match="total_steps must be an int >= 1, got 0"):
        build_scheduler(optimizer, "cosine", 0)


def test_build_scheduler_state_dict_round_trip() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, "wsd", 40, decay="sqrt")
    for _ in range(25):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    fresh = build_scheduler(fresh_opt, "wsd", 40, decay="sqrt")
    fresh.load_state_dict(state)
    optimizer.step()
    scheduler.step()
    fresh_opt.step()
    fresh.step()
    assert fresh.get_last_lr() == scheduler.get_last_lr()
    assert math.isclose(scheduler.get_last_lr()[0], schedule_lr("wsd", 26, 40, 0.1, decay="sqrt"))


# ----------------------------------------------------------------- peak, purity, shapes


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_peak_is_lr(name: str) -> None:
    # T = 100: onecycle's pct_start * T is (all but) an integer, so its peak lands on a step.
    curve = schedule_curve(name, 100, LR)
    assert math.isclose(max(curve), LR, rel_tol=1e-12)
    assert min(curve) >= 0


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("total", [1, 2, 3, 5])
def test_tiny_runs_are_finite_and_below_peak(name: str, total: int) -> None:
    for params in _space_corners(SCHEDULES[name]):
        for step in range(total + 3):
            value = schedule_lr(name, step, total, LR, **params)
            assert math.isfinite(value)
            assert 0 <= value <= LR * (1 + 1e-12), (params, step, value)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_pure_out_of_order(name: str) -> None:
    total = 60
    curve = schedule_curve(name, total, LR)
    steps = list(range(total)) * 2
    random.Random(0).shuffle(steps)
    for step in steps:
        assert schedule_lr(name, step, total, LR) == curve[step]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_factor_is_lr_over_peak(name: str) -> None:
    for step in (0, 3, 17, 39):
        factor = lr_factor(name, step, 40)
        assert schedule_lr(name, step, 40, 2.5) == 2.5 * factor


def test_after_total_steps() -> None:
    total = 40
    for name in ("step", "exponential", "poly", "cosine", "warmup_cosine", "wsd"):
        final = lr_factor(name, total, total)
        assert lr_factor(name, total + 1, total) == final
        assert lr_factor(name, 10 * total, total) == final
    assert lr_factor("cosine", total, total) == 0.0
    assert lr_factor("wsd", total, total, final_factor=0.1) == pytest.approx(0.1)
    assert math.isclose(lr_factor("exponential", total, total), 0.01, rel_tol=1e-12)
    # onecycle clamps to its last step, T - 1.
    assert lr_factor("onecycle", total + 5, total) == lr_factor("onecycle", total - 1, total)
    assert math.isclose(lr_factor("onecycle", total - 1, total), 1 / 25 / 1e4)
    # cyclic and sgdr continue their cycles.
    assert lr_factor("sgdr", total, total) == 1.0  # T_0 = 10 divides 40: a restart
    up = round(0.25 * total / 2)
    assert lr_factor("cyclic", total + up, total) == pytest.approx(lr_factor("cyclic", up, total))
    assert lr_factor("constant", 10**6, total) == 1.0


def test_warmup_cosine_shape() -> None:
    total = 100  # W = 5
    f = [lr_factor("warmup_cosine", s, total) for s in range(total)]
    assert f[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert all(a > b for a, b in itertools.pairwise(f[5:]))
    assert lr_factor("warmup_cosine", 0, total, warmup_frac=0.0) == 1.0


def test_wsd_shape() -> None:
    total = 100  # W = 5, decay over steps 80..100
    for decay in ("linear", "cosine", "sqrt"):
        f = [lr_factor("wsd", s, total, decay=decay, final_factor=0.1) for s in range(total + 1)]
        assert f[:5] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
        assert f[5:81] == [1.0] * 76
        assert all(a > b for a, b in itertools.pairwise(f[80:]))
        assert f[100] == pytest.approx(0.1)
    assert lr_factor("wsd", 90, total, decay="linear") == pytest.approx(0.5)
    assert lr_factor("wsd", 90, total, decay="cosine") == pytest.approx(0.5)
    assert lr_factor("wsd", 85, total, decay="sqrt") == pytest.approx(0.5)
    # warmup + decay may fill the whole run.
    g = [lr_factor("wsd", s, 10, warmup_frac=0.5, decay_frac=0.5) for s in range(10)]
    assert max(g) == 1.0 == g[5]


def test_fractions_carry_over_to_other_lengths() -> None:
    short = [lr_factor("wsd", s, 100) for s in range(0, 100, 10)]
    long = [lr_factor("wsd", s, 1000) for s in range(0, 1000, 100)]
    assert short[1:] == pytest.approx(long[1:])
    assert lr_factor("sgdr", 250, 1000) == lr_factor("sgdr", 25, 100) == 1.0


def test_curve_matches_schedule_lr() -> None:
    curve = schedule_curve("onecycle", 37, LR, anneal="linear")
    assert len(curve) == 37
    assert curve == [schedule_lr("onecycle", s, 37, LR, anneal="linear") for s in range(37)]


# ----------------------------------------------------------------- registry and spaces


def test_registry_order_and_defaults() -> None:
    assert SCHEDULE_NAMES == (
        "constant",
        "step",
        "exponential",
        "poly",
        "cosine",
        "warmup_cosine",
        "onecycle",
        "cyclic",
        "sgdr",
        "wsd",
    )
    assert tuple(SCHEDULES) == SCHEDULE_NAMES
    for name, info in SCHEDULES.items():
        assert info.name == name
        assert set(info.space) <= set(info.defaults)
        assert resolve_params(name, 10) == info.defaults
    # constant's one parameter is the schedule-free arm's warmup (0: none, the default).
    assert SCHEDULES["constant"].space == {"warmup_frac": ("float", 0.0, 0.2, False)}
    assert resolve_params("constant", 10) == {"warmup_frac": 0.0}
    assert resolve_params("step", 10, gamma=1) == {"step_frac": 0.33, "gamma": 1.0}
    assert resolve_params("onecycle", 10, three_phase=1)["three_phase"] is True


def _space_corners(info: ScheduleInfo) -> list[dict[str, Any]]:
    """Defaults, and each searched parameter at each end of its range (or each choice)."""
    corners: list[dict[str, Any]] = [{}]
    for pname, entry in info.space.items():
        values = list(entry[1]) if entry[0] == "categorical" else [entry[1], entry[2]]
        corners.extend({pname: v} for v in values)
    return corners


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_space_entries_are_well_formed_and_valid(name: str) -> None:
    info = SCHEDULES[name]
    for entry in info.space.values():
        kind = entry[0]
        if kind == "float":
            assert len(entry) == 4 and entry[1] < entry[2] and isinstance(entry[3], bool)
            assert not entry[3] or entry[1] > 0
        elif kind == "int":
            assert len(entry) == 3 and entry[1] < entry[2]
        else:
            assert kind == "categorical" and len(entry) == 2 and len(entry[1]) >= 2
    # Every corner of the space, all searched params at once too, passes validation.
    for params in _space_corners(info):
        resolve_params(name, 100, **params)
    low = {p: (e[1][0] if e[0] == "categorical" else e[1]) for p, e in info.space.items()}
    high = {p: (e[1][-1] if e[0] == "categorical" else e[2]) for p, e in info.space.items()}
    resolve_params(name, 100, **low)
    resolve_params(name, 100, **high)


# ----------------------------------------------------------------- error messages


def _any(value: object) -> Any:
    """A deliberately mistyped argument, past mypy."""
    return value


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: resolve_params("foo", 10),
            "unknown schedule 'foo': expected one of constant, step, exponential, poly, "
            "cosine, warmup_cosine, onecycle, cyclic, sgdr, wsd",
        ),
        (
            lambda: resolve_params("step", 10, gama=0.5),
            "schedule 'step': unknown parameter 'gama': expected gamma, step_frac",
        ),
        (
            lambda: resolve_params("constant", 10, gamma=0.5),
            "schedule 'constant': unknown parameter 'gamma': expected warmup_frac",
        ),
        (
            lambda: resolve_params("step", 10, gamma=1.5),
            "schedule 'step': gamma must be in (0, 1], got 1.5",
        ),
        (
            lambda: resolve_params("step", 10, step_frac=0),
            "schedule 'step': step_frac must be in (0, 1], got 0",
        ),
        (
            lambda: resolve_params("poly", 10, power=-1.0),
            "schedule 'poly': power must be > 0, got -1.0",
        ),
        (
            lambda: resolve_params("poly", 10, power=float("inf")),
            "schedule 'poly': power must be a finite number > 0, got inf",
        ),
        (
            lambda: resolve_params("cosine", 10, final_factor=float("nan")),
            "schedule 'cosine': final_factor must be in [0, 1], got nan",
        ),
        (
            lambda: resolve_params("warmup_cosine", 10, warmup_frac=1.0),
            "schedule 'warmup_cosine': warmup_frac must be in [0, 1), got 1.0",
        ),
        (
            lambda: resolve_params("onecycle", 10, div_factor=0.5),
            "schedule 'onecycle': div_factor must be >= 1, got 0.5",
        ),
        (
            lambda: resolve_params("onecycle", 10, pct_start=1.0),
            "schedule 'onecycle': pct_start must be in (0, 1), got 1.0",
        ),
        (
            lambda: resolve_params("onecycle", 10, three_phase=True, pct_start=0.6),
            "schedule 'onecycle': pct_start must be <= 0.5 when three_phase is true, got 0.6",
        ),
        (
            lambda: resolve_params("onecycle", 10, three_phase=2),
            "schedule 'onecycle': three_phase must be a bool (or 0/1), got 2",
        ),
        (
            lambda: resolve_params("onecycle", 10, anneal="cosine"),
            "schedule 'onecycle': anneal must be one of cos, linear, got 'cosine'",
        ),
        (
            lambda: resolve_params("cyclic", 10, mode=3),
            "schedule 'cyclic': mode must be one of triangular, triangular2, exp_range, got 3",
        ),
        (
            lambda: resolve_params("cyclic", 10, base_factor="0.1"),
            "schedule 'cyclic': base_factor must be a number, got '0.1'",
        ),
        (
            lambda: resolve_params("cyclic", 10, gamma=True),
            "schedule 'cyclic': gamma must be a number, got True",
        ),
        (
            lambda: resolve_params("sgdr", 10, t_mult=1.5),
            "schedule 'sgdr': t_mult must be an int >= 1, got 1.5",
        ),
        (
            lambda: resolve_params("sgdr", 10, t_mult=0),
            "schedule 'sgdr': t_mult must be an int >= 1, got 0",
        ),
        (
            lambda: resolve_params("wsd", 10, warmup_frac=0.5, decay_frac=0.6),
            "schedule 'wsd': warmup_frac + decay_frac must be <= 1, got 0.5 + 0.6",
        ),
        (
            lambda: resolve_params("wsd", 10, decay="exp"),
            "schedule 'wsd': decay must be one of linear, cosine, sqrt, got 'exp'",
        ),
        (lambda: resolve_params("cosine", 0), "total_steps must be an int >= 1, got 0"),
        (lambda: resolve_params("cosine", _any(10.0)), "total_steps must be an int >= 1, got 10.0"),
        (lambda: resolve_params("cosine", True), "total_steps must be an int >= 1, got True"),
        (lambda: schedule_lr("cosine", -1, 10, 0.1), "step must be an int >= 0, got -1"),
        (lambda: schedule_lr("cosine", 1, 10, 0.0), "lr must be a finite number > 0, got 0.0"),
        (lambda: lr_factor("cosine", _any(1.5), 10), "step must be an int >= 0, got 1.5"),
        (
            lambda: schedule_curve("cyclic", 10, 0.1, mode="linear"),
            "schedule 'cyclic': mode must be one of triangular, triangular2, exp_range, "
            "got 'linear'",
        ),
    ],
)
def test_error_messages(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
    assert "\n" not in str(info.value)


def test_constant_with_warmup_rises_linearly_then_holds() -> None:
    # T = 100, warmup_frac 0.1: W = 10 steps of (step + 1) / 11, then the peak.
    lrs = [schedule_lr("constant", s, 100, 0.5, warmup_frac=0.1) for s in range(100)]
    assert lrs[:10] == pytest.approx([0.5 * (s + 1) / 11 for s in range(10)])
    assert lrs[10:] == [0.5] * 90
    assert [schedule_lr("constant", s, 100, 0.5) for s in range(100)] == [0.5] * 100
