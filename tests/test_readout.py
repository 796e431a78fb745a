"""The range test's readout on constructed curves (no training): ``flat`` when the loss
barely fell before it diverged, a warning when the seeds disagree by more than half a
decade, ``steep`` never beyond the divergence, and the cost counted in updates."""

from __future__ import annotations

import json

import numpy as np

from lrtune.rangetest import DIAG_FLAT, DIAG_OK, SPREAD_WARN, Ema, RangeTestResult, lr_at
from lrtune.rangetest.suggest import Curve, combine, read_curve

N = 100


def _lrs(shift: float = 0.0) -> list[float]:
    """An exponential sweep 1e-5 .. 1, moved by ``shift`` decades."""
    return [lr_at(i, N, 1e-5, 1.0, "exp") * 10**shift for i in range(N)]


def _curve(losses: np.ndarray, shift: float = 0.0, seed: int = 0) -> Curve:
    rng = np.random.default_rng(seed)
    raw = list(losses * np.exp(0.01 * rng.standard_normal(len(losses))))
    ema = Ema()
    return Curve(_lrs(shift), raw, [ema.update(v) for v in raw], None, [], [])


def _u(depth: float, *, at: float = 0.7, end: float = 6.0) -> np.ndarray:
    """2.3 falling by ``depth`` (a fraction) around the middle, rising to ``end`` after
    fraction ``at`` of the sweep."""
    x = np.linspace(0, 1, N)
    low = 2.3 * (1 - depth)
    fall = low + (2.3 - low) / (1 + np.exp((x - at / 2) * 25))
    return fall + np.where(x > at, (end - low) * ((x - at) / (1 - at)) ** 2, 0.0)


def _result(curves: list[Curve]) -> RangeTestResult:
    return combine(curves, list(range(len(curves))), seconds=1.0, steps=N)


def test_a_curve_that_barely_falls_then_diverges_is_flat() -> None:
    flat = _result([_curve(_u(0.04), seed=s) for s in range(3)])
    assert flat.diagnosis == DIAG_FLAT
    assert flat.diverged_at is not None
    assert f"diagnosis    {DIAG_FLAT}" in flat.table()
    healthy = _result([_curve(_u(0.8), seed=s) for s in range(3)])
    assert healthy.diagnosis == DIAG_OK


def test_seeds_half_a_decade_apart_give_a_warning() -> None:
    close = _result([_curve(_u(0.8), shift=d, seed=i) for i, d in enumerate((0, 0.1, 0.2))])
    assert close.spread_decades < SPREAD_WARN and close.warnings == []
    assert "warning" not in close.table()
    apart = _result([_curve(_u(0.8), shift=d, seed=i) for i, d in enumerate((0, 0.3, 0.7))])
    assert apart.spread_decades > SPREAD_WARN
    (warning,) = apart.warnings
    assert f"{apart.spread_decades:.2f} decades apart (above 0.5)" in warning
    assert f"  warning: {warning}" in apart.table()
    assert json.loads(apart.to_json())["warnings"] == [warning]


def test_steep_is_never_beyond_the_divergence() -> None:
    # A fall, a blow-up from 70% of the sweep, a steep crash at 92% that stays above the
    # divergence level and up again (a loss that swings after diverging, before the
    # lagging EMA stops the sweep): the steepest fall of the curve is past the divergence.
    x = np.linspace(0, 1, N)
    loss = _u(0.8, end=9.0)
    crash = np.clip((x - 0.92) / 0.02, 0, 1) - np.clip((x - 0.95) / 0.03, 0, 1)
    loss = loss - 3.0 * crash
    curve = _curve(loss)
    one = read_curve(curve)
    assert one["diverged_at"] is not None
    grads = np.gradient(loss, np.log10(curve.lrs))
    assert curve.lrs[int(np.argmin(grads[10:-5])) + 10] > one["diverged_at"]  # the trap
    assert one["steep"] < one["diverged_at"]
    result = _result([_curve(loss, seed=s) for s in range(3)])
    assert result.diverged_at is not None and result.steep <= result.diverged_at


def test_the_cost_is_counted_in_updates() -> None:
    result = _result([_curve(_u(0.8), seed=s) for s in range(3)])
    assert result.updates == 3 * N
    assert json.loads(result.to_json())["updates"] == 3 * N
