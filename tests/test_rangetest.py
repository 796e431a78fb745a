"""Tests of lrtune.rangetest: divergence on a quadratic with a known limit, exact state
restore, param-group ratios, every optimizer, stop rule, smoothing, diagnoses, JSON, plot."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from lrtune.optimizers import OPTIMIZERS
from lrtune.plots import plot_range_test
from lrtune.rangetest import (
    DIAG_NEVER_DIVERGED,
    DIAG_NO_DESCENT,
    RangeTestResult,
    ema_smooth,
    range_test,
    should_stop,
)
from lrtune.tasks import Task, digits, digits_cnn
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
        "optimizer": copy.deepcopy(opt.state_dict()),
        "rng": torch.get_rng_state(),
    }


def _assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
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
    with pytest.raises(RuntimeError, match="boom"):
        range_test(task, optimizer=opt, seeds=2, steps=30)
    assert calls == 5
    _assert_same(before, _state(task.model, opt))


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
    from lrtune.errors import UserError

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


def test_ema_smooth_is_bias_corrected() -> None:
    np.testing.assert_allclose(ema_smooth(np.full(60, 3.0)), np.full(60, 3.0), rtol=1e-12)
    out = ema_smooth(np.array([1.0, 2.0]))
    assert out[0] == pytest.approx(1.0)
    assert out[1] == pytest.approx((0.98 * 0.02 * 1.0 + 0.02 * 2.0) / (1 - 0.98**2))


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


def test_ok_sweep_on_digits() -> None:
    result = range_test("digits", seeds=1, steps=100)
    assert result.diagnosis == "ok"
    assert result.diverged_at is not None
    assert result.lr_low < result.lr_high < result.diverged_at


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


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


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
