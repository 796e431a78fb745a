"""Tests of lrtune.schedules.Schedule, the trainer's and LambdaLR's validated-once path."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch

from lrtune.schedules import SCHEDULE_NAMES, SCHEDULES, Schedule, build_scheduler, lr_factor
from lrtune.schedules import scheduler as scheduler_module

# A corner of each schedule's parameters that moves the curve away from the defaults.
PARAMS: dict[str, dict[str, Any]] = {
    "step": {"step_frac": 0.2, "gamma": 0.5},
    "onecycle": {"three_phase": True, "anneal": "linear", "pct_start": 0.25},
    "cyclic": {"mode": "exp_range", "gamma": 0.99},
    "sgdr": {"t_mult": 2, "cycle_frac": 0.1},
    "wsd": {"decay": "sqrt", "final_factor": 0.1},
}


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
@pytest.mark.parametrize("total", [1, 7, 60])
def test_factor_equals_lr_factor_at_every_step(name: str, total: int) -> None:
    params = PARAMS.get(name, {})
    schedule = Schedule(name, total, **params)
    for step in range(3 * total + 2):  # past the end too: the table stops at `total`
        assert schedule.factor(step) == lr_factor(name, step, total, **params), step
        assert schedule(step) == schedule.factor(step)
    assert schedule.lr(0, 2.0) == 2.0 * schedule.factor(0)


def test_steps_past_the_table_use_the_closed_form(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "TABLE_STEPS", 10)
    schedule = Schedule("wsd", 100)
    assert [schedule.factor(s) for s in range(101)] == [
        lr_factor("wsd", s, 100) for s in range(101)
    ]
    assert len(schedule._table) == 11


def test_validates_once_up_front() -> None:
    with pytest.raises(ValueError, match=r"^schedule 'step': unknown parameter 'gama'"):
        Schedule("step", 10, gama=0.5)
    with pytest.raises(ValueError, match=r"^total_steps must be an int >= 1, got 0$"):
        Schedule("cosine", 0)
    with pytest.raises(ValueError, match=r"^unknown schedule 'zigzag'"):
        Schedule("zigzag", 10)
    schedule = Schedule("sgdr", 10, t_mult=2)
    assert schedule.params == {**SCHEDULES["sgdr"].defaults, "t_mult": 2}


def test_state_dict_holds_the_schedule_not_the_table() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = build_scheduler(optimizer, "cosine", 1000)
    (state,) = scheduler.state_dict()["lr_lambdas"]
    assert state == {"name": "cosine", "total_steps": 1000, "params": {"final_factor": 0.0}}


def test_load_state_dict_of_another_schedule_follows_it() -> None:
    # The table was built for the fresh scheduler's own schedule; the loaded one replaces it.
    source_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    source = build_scheduler(source_opt, "onecycle", 50, anneal="linear")
    for _ in range(20):
        source_opt.step()
        source.step()
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    fresh = build_scheduler(opt, "cosine", 30)
    fresh.load_state_dict(source.state_dict())
    for _ in range(5):
        source_opt.step()
        source.step()
        opt.step()
        fresh.step()
        assert fresh.get_last_lr() == source.get_last_lr()
    assert fresh.get_last_lr()[0] == pytest.approx(
        0.1 * lr_factor("onecycle", 25, 50, anneal="linear")
    )


def test_importing_schedules_does_not_import_torch() -> None:
    code = "import sys, lrtune.schedules; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
