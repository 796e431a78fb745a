"""Tests of lrtune.rangetest: divergence on a quadratic with a known limit, exact state
restore, param-group ratios, every optimizer, stop rule, smoothing, diagnoses, JSON, plot."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lrtune.errors import UserError
from lrtune.rangetest import (
    BETA,
    DIAG_DIVERGED_AT_ONCE,
    DIAG_NEVER_DIVERGED,
    DIAG_NO_DESCENT,
    DIAG_OK,
    Ema,
    RangeTestResult,
    diagnose,
    lr_at,
    preserved_state,
    range_test,
    should_stop,
)
from lrtune.report import plot_range_test
from lrtune.training.optimizers import OPTIMIZERS
from lrtune.training.tasks import Task, digits, digits_cnn, synthetic
from tests.conftest import SPEC_FIELDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- a quadratic with a known stable LR limit ---------------------------------------------


class _Quadratic(nn.Module):
    """loss = 0.5 * sum_i c_i w_i^2, curvatures c_i spread over 3 decades up to ``h``.

    The spread keeps the loss from collapsing to 0 before the sweep reaches the limit (the
    flat directions still have loss left), so the blow-up of the steepest direction shows.
    """

    def __init__(self, h: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(10))
        self.register_buffer("c", h * torch.logspace(-3, 0, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w  # the batch is ignored: the loss is a fixed function of w


def _quadratic_task(h: float) -> Task:
    model = _Quadratic(h)
    x, y = torch.zeros(64, 1), torch.zeros(64)

    def loss_fn(w: torch.Tensor, _y: torch.Tensor) -> torch.Tensor:
        return 0.5 * (model.c * w**2).sum()

    return Task(model=model, train=(x, y), val=(x, y), loss_fn=loss_fn, batch_size=8)


# Stability limits along an eigen-direction with curvature h (gradient h*w):
# - plain SGD: w <- (1 - lr*h) w is stable iff |1 - lr*h| < 1, i.e. lr < 2/h.
# - heavy ball as torch does it (v <- mu*v + h*w; w <- w - lr*v): the iteration matrix
#   [[1 - lr*h, mu], [-lr*h, mu]] has characteristic polynomial z^2 - (1 + mu - lr*h) z + mu;
#   with |mu| < 1 both roots lie inside the unit circle iff |1 + mu - lr*h| < 1 + mu, i.e.
#   lr < 2(1 + mu)/h. lrtune's "sgd" has mu = 0.9, so the limit is 3.8/h.
SWEEP = {"start_lr": 1e-5, "end_lr": 1e2, "steps": 100, "seeds": 1, "device": "cpu"}


@pytest.mark.parametrize("h", [1.0, 1000.0])
def test_diverged_at_is_near_the_analytic_limit_with_momentum(h: float) -> None:
    limit = 2 * (1 + 0.9) / h
    result = range_test(_quadratic_task(h), optimizer="sgd", **SWEEP)
    assert result.diverged_at is not None
    # It cannot blow up below the limit, and the stop rule catches it within a factor 3.
    assert limit / 3 < result.diverged_at < 3 * limit


def test_diverged_at_scales_with_curvature() -> None:
    def diverged(h: float, plain: bool) -> float:
        task = _quadratic_task(h)
        opt: Any = torch.optim.SGD(task.model.parameters(), lr=1.0) if plain else "sgd"
        result = range_test(task, optimizer=opt, **SWEEP)
        assert result.diverged_at is not None, result.diagnosis
        # Never before the stability limit (2/h plain, 3.8/h with momentum).
        assert result.diverged_at > (2.0 if plain else 3.8) / h
        return result.diverged_at

    for plain in (False, True):
        ratio = diverged(1.0, plain) / diverged(1000.0, plain)
        assert 1000 / 3 < ratio < 1000 * 3, (plain, ratio)


# --- exact state restore -------------------------------------------------------------------


def _state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "optimizer": copy.deepcopy(opt.state_dict()),
        "rng": torch.get_rng_state(),
    }


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if a is None:
        assert b is None, where
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _cnn_with_adam() -> tuple[Task, torch.optim.Optimizer]:
    task = digits_cnn(0)
    model = task.model
    opt = torch.optim.Adam(
        [
            {"params": model.features.parameters(), "lr": 1e-3},
            {"params": model.head.parameters(), "lr": 3e-3},
        ]
    )
    x, y = task.train
    model.train()
    for k in range(2):  # real steps: Adam has state, BN buffers moved
        opt.zero_grad()
        task.loss_fn(model(x[k * 32 : (k + 1) * 32]), y[k * 32 : (k + 1) * 32]).backward()
        opt.step()
    model.head.eval()  # a mixed train/eval state must come back as it was
    return task, opt


def test_state_is_restored_exactly() -> None:
    task, opt = _cnn_with_adam()
    torch.manual_seed(123)
    before = _state(task.model, opt)
    bn = task.model.features[1]
    assert int(bn.num_batches_tracked) == 2 and len(opt.state) > 0
    result = range_test(task, optimizer=opt, seeds=2, steps=30)
    assert len(result.lrs) == 2 and len(result.lrs[0]) > 1
    _assert_same(before, _state(task.model, opt))
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 3e-3]


def test_state_is_restored_exactly_when_the_step_raises() -> None:
    task, opt = _cnn_with_adam()
    calls = 0
    loss_fn = task.loss_fn

    def failing(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("boom in the 5th step")
        return loss_fn(pred, target)

    task.loss_fn = failing
    torch.manual_seed(7)
    before = _state(task.model, opt)
    # The library raises the task's own error (the CLI makes it one line: test_faults.py).
    with pytest.raises(RuntimeError, match="boom in the 5th step"):
        range_test(task, optimizer=opt, seeds=2, steps=30)
    assert calls == 5
    _assert_same(before, _state(task.model, opt))


def test_gradients_come_back_exactly_also_none() -> None:
    task = digits(0)
    first, second = task.model[0], task.model[2]
    # A user's accumulated gradient on one tensor, none on the others.
    first.weight.grad = torch.full_like(first.weight, 0.25)
    before = {
        n: None if p.grad is None else p.grad.clone() for n, p in task.model.named_parameters()
    }
    assert before["0.bias"] is None and before["2.weight"] is None
    range_test(task, seeds=2, steps=30)
    for name, param in task.model.named_parameters():
        if before[name] is None:
            assert param.grad is None, name
        else:
            assert param.grad is not None and torch.equal(param.grad, before[name]), name
    assert second.weight.grad is None


def test_param_groups_keep_their_lr_ratios() -> None:
    seen: list[list[float]] = []

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
            seen.append([g["lr"] for g in self.param_groups])
            return super().step(closure)

    task = digits(0)
    first, second = task.model[0], task.model[2]
    opt = RecordingSGD(
        [
            {"params": first.parameters(), "lr": 0.01},
            {"params": second.parameters(), "lr": 0.04},
        ],
        momentum=0.9,
    )
    result = range_test(task, optimizer=opt, seeds=1, steps=40, end_lr=1.0)
    assert len(seen) >= len(result.lrs[0]) > 20
    for (lr1, lr2), lr in zip(seen, result.lrs[0], strict=False):
        assert lr1 == pytest.approx(lr, rel=1e-12)
        assert lr2 / lr1 == pytest.approx(4.0, rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.04]


# --- every optimizer ------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_gives_finite_bounds(name: str) -> None:
    result = range_test("wine", optimizer=name, seeds=1, steps=40, device="cpu")
    assert result.optimizer == name
    assert math.isfinite(result.lr_low) and math.isfinite(result.lr_high)
    assert 0 < result.lr_low < result.lr_high
    assert result.start_lr <= result.lr_high


def test_unknown_optimizer_name_is_a_user_error() -> None:

    with pytest.raises(UserError, match="unknown optimizer 'bogus'"):
        range_test("wine", optimizer="bogus", seeds=1, steps=20)


# --- stop rule and smoothing ---------------------------------------------------------------


def test_should_stop_positive_losses_uses_4x_the_minimum() -> None:
    assert not should_stop(3.9, 1.0)
    assert should_stop(4.1, 1.0)
    assert not should_stop(1.0, 1.0)
    assert should_stop(math.nan, 1.0)
    assert should_stop(math.inf, 1.0)


def test_should_stop_is_robust_to_negative_losses() -> None:
    # fastai's `smoothed > 4 * best` would stop at once here (-1.9 > -8).
    assert not should_stop(-1.9, -2.0)
    assert not should_stop(-0.5, -2.0)
    assert should_stop(5.0, -2.0)
    assert should_stop(math.nan, -2.0)


def test_the_smoothed_curve_is_the_bias_corrected_ema_of_the_losses() -> None:
    result = range_test("digits", seeds=1, steps=40)
    avg, expected = 0.0, []
    for i, loss in enumerate(result.losses[0]):
        avg = BETA * avg + (1 - BETA) * loss
        expected.append(avg / (1 - BETA ** (i + 1)))
    np.testing.assert_allclose(result.smoothed[0], expected, rtol=1e-12)
    assert result.smoothed[0][0] == pytest.approx(result.losses[0][0])  # no bias towards 0


# --- diagnoses -----------------------------------------------------------------------------


def _task_with_loss(loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Task:
    task = digits(0)
    task.loss_fn = loss
    return task


def test_diagnosis_no_descent_when_the_loss_does_not_move() -> None:
    def constant(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.sum() * 0.0 + 1.0  # has a graph, but no parameter changes it

    result = range_test(_task_with_loss(constant), seeds=1, steps=30)
    assert result.diagnosis == DIAG_NO_DESCENT
    assert result.diverged_at is None


def test_diagnosis_no_descent_when_end_lr_is_tiny() -> None:
    result = range_test("digits", seeds=1, steps=30, start_lr=1e-7, end_lr=1e-6)
    assert result.diagnosis == DIAG_NO_DESCENT


def test_diagnosis_never_diverged_when_end_lr_is_too_small() -> None:
    result = range_test("digits", seeds=1, steps=60, start_lr=1e-3, end_lr=0.1)
    assert result.diagnosis == DIAG_NEVER_DIVERGED
    assert result.diverged_at is None
    assert len(result.lrs[0]) == 60
    assert result.lrs[0][-1] == pytest.approx(0.1)


def test_diagnosis_non_finite_from_the_start() -> None:
    def nan_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.sum() * math.nan

    result = range_test(_task_with_loss(nan_loss), seeds=1, steps=30)
    assert result.diagnosis.startswith("non-finite loss at lr=")
    assert len(result.losses[0]) == 1  # stopped at the first non-finite loss


def _exp_lrs(n: int, start: float = 1e-5, end: float = 1.0) -> list[float]:
    return [lr_at(i, n, start, end, "exp") for i in range(n)]


def _noisy(curve: np.ndarray, scale: float, seed: int = 0) -> list[float]:
    """Mini-batch-like noise: multiplicative, so it shrinks with the loss."""
    rng = np.random.default_rng(seed)
    return list(curve * np.exp(scale * rng.standard_normal(len(curve))))


def _u_curve(n: int = 100, low: float = 0.2, end: float = 3.0, at: float = 0.7) -> np.ndarray:
    """2.3 falling to ``low`` at fraction ``at`` of the sweep, then rising to ``end``."""
    x = np.linspace(0, 1, n)
    fall = low + (2.3 - low) / (1 + np.exp((x - at / 2) * 25))
    rise = np.where(x > at, (end - low) * ((x - at) / (1 - at)) ** 2, 0.0)
    return fall + rise


@pytest.mark.parametrize("seed", range(5))
def test_diagnose_a_u_shaped_curve_that_was_not_stopped_is_ok(seed: int) -> None:
    # What the EMA stop rule misses on a short sweep: the loss rose from 0.2 to 3 by the
    # end, but the lagging EMA never reached 4x its minimum.
    lrs = _exp_lrs(100)
    diagnosis, diverged_at = diagnose(lrs, _noisy(_u_curve(), 0.15, seed))
    assert diagnosis == DIAG_OK
    assert diverged_at is not None and lrs[70] < diverged_at < lrs[-1]


@pytest.mark.parametrize("seed", range(5))
def test_diagnose_a_curve_still_falling_never_diverged(seed: int) -> None:
    falling = 0.3 + 2.0 * np.exp(-np.linspace(0, 4, 100))
    assert diagnose(_exp_lrs(100), _noisy(falling, 0.15, seed)) == (DIAG_NEVER_DIVERGED, None)
    # A plateau at the minimum, and a rise within the noise, are not a divergence either.
    plateau = _u_curve(low=0.2, end=0.2)
    assert diagnose(_exp_lrs(100), _noisy(plateau, 0.15, seed))[0] == DIAG_NEVER_DIVERGED
    small_rise = _u_curve(low=0.2, end=0.25)
    assert diagnose(_exp_lrs(100), _noisy(small_rise, 0.15, seed))[0] == DIAG_NEVER_DIVERGED


@pytest.mark.parametrize("seed", range(5))
def test_diagnose_a_flat_noisy_curve_has_no_descent(seed: int) -> None:
    flat = np.full(100, 2.3)
    assert diagnose(_exp_lrs(100), _noisy(flat, 0.15, seed)) == (DIAG_NO_DESCENT, None)
    assert diagnose(_exp_lrs(100), list(flat)) == (DIAG_NO_DESCENT, None)
    # Flat, then blown up at a high LR (the stop rule ended it): nothing was learnt.
    blown = np.concatenate([np.full(60, 2.3), [9.0, 30.0]])
    lrs = _exp_lrs(62)
    assert diagnose(lrs, _noisy(blown, 0.1, seed), stopped=True) == (DIAG_NO_DESCENT, lrs[-1])


def test_diagnose_a_sweep_that_starts_above_the_divergence() -> None:
    lrs = _exp_lrs(3, 0.1, 0.2)
    assert diagnose(lrs, [2.3, 5.0, 60.0], stopped=True) == (DIAG_DIVERGED_AT_ONCE, lrs[-1])
    assert diagnose(lrs[:2], [2.3, 60.0], stopped=True) == (DIAG_DIVERGED_AT_ONCE, lrs[1])


def test_diagnose_non_finite_losses() -> None:
    lrs = _exp_lrs(100)
    # From the start: the task is broken.
    diagnosis, at = diagnose(lrs[:1], [math.nan], stopped=True)
    assert diagnosis == f"non-finite loss at lr={lrs[0]:.3g}" and at == lrs[0]
    # After a descent: the sweep just ran into the divergence.
    curve = [*_noisy(_u_curve(n=100, end=0.5)[:80], 0.1), math.inf]
    assert diagnose(lrs[:81], curve, stopped=True) == (DIAG_OK, lrs[80])


def test_diagnose_a_stopped_curve_after_a_descent_is_ok_at_the_stop() -> None:
    lrs = _exp_lrs(100)
    curve = _noisy(_u_curve(end=1.0)[:90], 0.1)
    assert diagnose(lrs[:90], curve, stopped=True) == (DIAG_OK, lrs[89])


def test_diagnose_negative_losses() -> None:
    lrs = _exp_lrs(100)
    x = np.linspace(0, 1, 100)
    down = -1 - 2 / (1 + np.exp(-(x - 0.3) * 25))
    assert diagnose(lrs, _noisy(down, 0.02)) == (DIAG_NEVER_DIVERGED, None)
    back_up = down + np.where(x > 0.7, 2.5 * ((x - 0.7) / 0.3) ** 2, 0.0)
    assert diagnose(lrs, _noisy(back_up, 0.02))[0] == DIAG_OK
    # From -99 to -101 and back: a rise of the minimum's magnitude is not needed.
    offset = down - 98.0
    assert diagnose(lrs, list(offset))[0] == DIAG_NEVER_DIVERGED
    assert diagnose(lrs, list(back_up - 98.0))[0] == DIAG_OK


def test_ok_sweep_on_digits() -> None:
    result = range_test("digits", seeds=1, steps=100)
    assert result.diagnosis == "ok"
    assert result.diverged_at is not None
    assert result.lr_low < result.lr_high < result.diverged_at


def test_a_short_healthy_sgd_sweep_on_digits_is_ok() -> None:
    # 25 steps over 8 decades: the loss falls, then blows up to ~20x its minimum in the
    # last points, before the lagging EMA reaches 4x (it said "never diverged").
    result = range_test("digits", optimizer="sgd", seeds=2, steps=25)
    assert result.diagnosis == DIAG_OK, result.per_seed
    assert result.diverged_at is not None


def test_an_adam_cnn_that_blows_up_does_not_say_never_diverged() -> None:
    # Adam on the small CNN, swept to 1: the loss falls from 2.4 to ~0.15 near lr=0.05 and
    # is back above 0.5 by lr=1 (the review's "never diverged: raise end_lr" case).
    result = range_test(
        "digits-cnn", optimizer="adam", start_lr=1e-5, end_lr=1.0, steps=100, seeds=1
    )
    assert result.diagnosis == DIAG_OK, result.per_seed
    assert result.diverged_at is not None and 0.01 < result.diverged_at < 1.0
    for lrs, losses in zip(result.lrs, result.losses, strict=True):
        assert len(lrs) == 100  # the stop rule did not end it: only the shape says so
        tail = np.mean(losses[-7:])
        assert tail > 2 * min(np.convolve(losses, np.ones(7) / 7, mode="valid"))


def test_linear_mode_sweeps_linearly() -> None:
    result = range_test("digits", seeds=1, steps=40, start_lr=1e-3, end_lr=0.5, mode="linear")
    lrs = np.asarray(result.lrs[0])
    assert result.mode == "linear"
    assert lrs[0] == pytest.approx(1e-3)
    np.testing.assert_allclose(np.diff(lrs), (0.5 - 1e-3) / 39, rtol=1e-9)
    assert result.lr_low < result.lr_high


# --- JSON and plot -------------------------------------------------------------------------


def test_json_round_trip_keeps_the_spec_fields() -> None:
    result = range_test("digits", seeds=2, steps=40)
    data = json.loads(result.to_json())
    assert set(SPEC_FIELDS) <= set(data)
    assert len(data["lrs"]) == len(data["losses"]) == len(data["smoothed"]) == 2
    back = RangeTestResult.from_dict(data)
    for name in SPEC_FIELDS:
        assert getattr(back, name) == data[name], name
    assert back.to_dict() == result.to_dict()


def test_json_writes_non_finite_losses_as_null() -> None:
    def nan_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return pred.sum() * math.nan

    data = json.loads(range_test(_task_with_loss(nan_loss), seeds=1, steps=30).to_json())
    assert data["losses"] == [[None]]


@pytest.mark.parametrize("task_fn", [digits, synthetic])
def test_track_metric_with_a_dataset_as_val(task_fn: Callable[[int], Task]) -> None:
    # On the CPU: a GPU's kernels may differ in the last bits between the two layouts.
    with_pair = range_test(task_fn(0), seeds=1, steps=30, track_metric=True, device="cpu")
    task = task_fn(0)
    task.val = TensorDataset(*task.val)
    with_dataset = range_test(task, seeds=1, steps=30, track_metric=True, device="cpu")
    classify = task_fn is digits
    assert with_dataset.metric_name == ("accuracy" if classify else "val_loss")
    # The same 512 held-out rows either way, so the same values.
    assert with_dataset.metrics == with_pair.metrics and with_dataset.metrics[0]


def test_plotting_leaves_matplotlib_global_state_alone(tmp_path: Path) -> None:
    # A user's backend stays (no matplotlib.use("Agg")) and pyplot is never imported.
    code = f"""
import sys, matplotlib
matplotlib.use("svg")
from lrtune.report import plot_range_test, plot_schedule
from lrtune.rangetest import RangeTestResult
rt = RangeTestResult.from_dict({{**{json.loads(_tiny_result_json())!r}}})
plot_range_test(rt, {str(tmp_path / "rt.png")!r})
plot_schedule([0.1, 0.05, 0.01], {str(tmp_path / "s.png")!r}, title="t")
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rt.png").read_bytes()[:8] == PNG_MAGIC


def _tiny_result_json() -> str:
    lrs = [1e-3, 1e-2, 1e-1, 1.0]
    return RangeTestResult(
        lr_low=0.01,
        lr_high=0.1,
        steep=0.01,
        valley=0.01,
        min10=0.01,
        diverged_at=1.0,
        diagnosis="ok",
        spread_decades=0.0,
        seconds=0.1,
        lrs=[lrs],
        losses=[[2.0, 1.0, 0.5, 4.0]],
        smoothed=[[2.0, 1.5, 1.0, 2.0]],
        seeds=[0],
    ).to_json()


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


@pytest.mark.slow
def test_plot_range_test_writes_a_png(tmp_path: Path) -> None:
    result = range_test("digits", seeds=1, steps=40)
    one = plot_range_test(result, tmp_path / "one.png")
    assert one.stat().st_size > 10_000
    width_one, _ = _png_size(one)

    tracked = range_test("digits", seeds=1, steps=40, track_metric=True)
    assert tracked.metric_name == "accuracy" and tracked.metrics[0]
    two = plot_range_test(tracked, tmp_path / "two.png")
    width_two, _ = _png_size(two)
    assert width_two > 1.8 * width_one  # a second panel beside the loss


# --- the package's pieces ------------------------------------------------------------------


def test_a_result_is_frozen_and_keyword_only() -> None:
    rt = RangeTestResult.from_dict(json.loads(_tiny_result_json()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rt.seconds = 2.0  # type: ignore[misc]
    fields = [getattr(rt, f.name) for f in dataclasses.fields(rt)]
    with pytest.raises(TypeError):
        RangeTestResult(*fields)  # type: ignore[misc]
    later = dataclasses.replace(rt, seconds=2.0)
    assert later.seconds == 2.0 and rt.seconds == 0.1 and later.lrs == rt.lrs


def test_reading_a_result_does_not_import_torch() -> None:
    code = (
        "import sys, json; from lrtune.rangetest import RangeTestResult, bounds_from, diagnose; "
        f"rt = RangeTestResult.from_dict(json.loads({_tiny_result_json()!r})); rt.table(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from lrtune import rangetest

    assert rangetest.range_test is range_test  # the lazy name is the sweep's function


def test_the_ema_is_bias_corrected() -> None:
    ema = Ema()
    assert ema.update(5.0) == pytest.approx(5.0)  # no bias towards 0
    avg = BETA * (1 - BETA) * 5.0 + (1 - BETA) * 1.0
    assert ema.update(1.0) == pytest.approx(avg / (1 - BETA**2))


def test_preserved_state_restores_everything_when_the_body_raises() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)).eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(16, 4)).sum().backward()
    opt.step()  # momentum buffers exist
    model[2].weight.grad = None  # one parameter without a grad
    before = copy.deepcopy(model.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    opt_before = copy.deepcopy(opt.state_dict())
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"), preserved_state(model, opt):
        model.train()
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(16, 4)).sum().backward()
            opt.step()
        raise RuntimeError("boom")
    assert not model.training and not model[1].training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    state = opt.state_dict()["state"]
    for k, v in opt_before["state"].items():
        assert torch.equal(state[k]["momentum_buffer"], v["momentum_buffer"])
    assert torch.equal(torch.get_rng_state(), rng)
