"""Reading a range test's curves: the smoothing, the stop rule, the diagnosis, the suggestions
(steep, valley, min/10) and the search bounds; seeds combined by their median.

Torch-free: this works on plain lists and numpy arrays of the sweep's losses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrtune.rangetest.result import RangeTestResult

#: Points left out at each end of a curve when reading suggestions off it.
SKIP_START = 10
SKIP_END = 5
#: fp16 updates skipped on overflow in a row after which the sweep stops as non-finite.
MAX_SKIPPED = 20
#: The bounds are [valley × BOUNDS_LOW_MUL, valley × BOUNDS_HIGH_MUL], the top capped at the
#: minimum of the smoothed loss (see :func:`bounds_from`).
BOUNDS_LOW_MUL = 0.8
BOUNDS_HIGH_MUL = 80.0

DIAG_OK = "ok"
DIAG_NO_DESCENT = "no descent: check model and data"
DIAG_NEVER_DIVERGED = "never diverged: raise end_lr"
DIAG_DIVERGED_AT_ONCE = "diverged at once: lower start_lr"
DIAG_FLAT = "flat: the loss barely fell before it diverged (raise steps, or check the model)"
#: A descent smaller than this fraction of the start level, then a divergence, reads as
#: ``flat``: the built-in and example tasks fall by 33% (charlm) to 99% (finetune) of it, a
#: curve that moves a few percent before it blows up gives bounds that mean little.
FLAT_DEPTH = 0.1
#: :func:`diagnose`'s thresholds: a descent must exceed DESCENT_MIN × the start level; a
#: divergence is a rise above the minimum of RISE_OF_MIN × its magnitude and
#: RISE_OF_DESCENT × the descent; both must exceed NOISE_SIGMAS standard errors.
DESCENT_MIN = 0.02
RISE_OF_MIN = 1.0
RISE_OF_DESCENT = 0.2
NOISE_SIGMAS = 4.0


def lr_at(i: int, steps: int, start_lr: float, end_lr: float, mode: str) -> float:
    """The LR at sweep step ``i`` of ``steps`` (exponential or linear)."""
    frac = i / max(1, steps - 1)
    if mode == "exp":
        return start_lr * (end_lr / start_lr) ** frac
    return start_lr + (end_lr - start_lr) * frac


def should_stop(smoothed: float, best: float, factor: float = 4.0) -> bool:
    """True once ``smoothed`` rose ``factor - 1`` times ``|best|`` above ``best``.

    For positive losses this is fastai's ``smoothed > 4 * best``; unlike that test it does not
    fire at once when the loss is negative (e.g. a log-likelihood).
    """
    if not math.isfinite(smoothed):
        return True
    return smoothed - best > (factor - 1) * max(abs(best), 1e-12)


def _window(n: int) -> int:
    """The centred moving average's window for a curve of ``n`` points (odd, ≥ 3)."""
    return max(3, (n // 15) | 1)


def _lagfree(losses: np.ndarray) -> np.ndarray:
    # The EMA lags the true curve by ~1/(1-β) = 50 steps, which shifts the steepest point
    # to a higher LR; a centred moving average does not shift it.
    w = _window(len(losses))
    padded = np.pad(losses, (w // 2, w // 2), mode="edge")
    return np.convolve(padded, np.ones(w) / w, mode="valid")


def _valley(smoothed: np.ndarray) -> int:
    # fastai's valley: the longest decreasing run (by longest decreasing subsequence),
    # then a point two thirds of the way down it.
    values = smoothed.tolist()  # O(n²) comparisons: Python floats, not numpy scalars
    n = len(values)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if values[i] < values[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
        if lds[max_end] < lds[i]:
            max_end = i
            max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max_start + int(sections) + int(sections / 2)


def bounds_from(valley: float, min_lr: float) -> tuple[float, float]:
    """Search bounds from fastai's ``valley`` suggestion: ``[0.8 × valley, 80 × valley]``
    (2 decades), the top capped at ``min_lr`` (the minimum of the smoothed loss).

    fastai trains at ``valley`` (or ``min/10``); Smith reads the max LR off where the
    smoothed loss stops falling. Both are points, not a range, and a peak LR held for a
    whole run (or decayed by a schedule) tolerates more than the sweep's short visit
    suggests. The multipliers are calibrated against dense grids of real training
    (``benchmarks/bounds_calibration.py``: the search-efficiency oracle, each schedule's
    robust best LR, 10 range tests of 3 seeds each on seeds 500 and up, disjoint from the
    benchmark's): with SGD every schedule's best LR lay between about 3 × and 130 × the
    valley, but with Adam fine-tuning a pretrained body (``finetune``) between 0.75 × and
    4 × it. The bottom, 2.4 × the valley before, was fitted to the SGD tasks alone and
    missed the fine-tuning task's best LR in every range test. The cap keeps the top below
    Smith's max, and the bottom stays a decade under the top. ``tests/test_bounds.py``
    checks the rule in CI; docs/benchmarks.md has its coverage on held-out seeds.
    """
    high = min(valley * BOUNDS_HIGH_MUL, min_lr)
    return min(valley * BOUNDS_LOW_MUL, high / 10), high


@dataclass
class Curve:
    """One seed's sweep: what :func:`~lrtune.rangetest.sweep._sweep` recorded."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str | None
    metric_steps: list[int]
    metrics: list[float]
    metric_name: str | None = None


def diagnose(
    lrs: Sequence[float], losses: Sequence[float], *, stopped: bool = False
) -> tuple[str, float | None]:
    """Read the shape of one sweep's loss curve: ``(diagnosis, diverged_at)``.

    ``stopped`` says the sweep ended early (the loss rose 4× its minimum or was not
    finite). The curve is smoothed by a centred moving average of the raw losses: the
    EMA of the stop rule lags ~1/(1-β) = 50 steps, half a default sweep, so its last value
    can sit near the minimum while the loss has already blown up. On that curve:

    - *descent*: the minimum after the first ``SKIP_START`` points lies below the level
      of the first points by more than 2% of it and more than the batch-to-batch noise
      (4 standard errors of the difference). Without it the diagnosis is
      ``non-finite loss at lr=...`` when a loss was not finite, ``diverged at once`` when
      the sweep stopped within its first ``SKIP_START + SKIP_END`` points, else
      ``no descent``.
    - *diverged*: the sweep stopped, or the curve ends above its minimum by more than
      the largest of: the minimum's magnitude (2× for positive losses) but at most the
      descent, a fifth of the descent, and the noise. ``diverged_at`` is where the stop
      happened, or where the curve last rose past that level. A non-finite loss after a
      descent is a divergence. For a positive loss, a divergence after a descent of less
      than ``FLAT_DEPTH`` of the start level is ``flat``, else ``ok``.
    - otherwise ``never diverged: raise end_lr``.
    """
    lr = np.asarray(lrs, dtype=float)
    raw = np.asarray(losses, dtype=float)
    finite = np.isfinite(raw)
    first_bad = len(raw) if finite.all() else int(np.argmin(finite))
    non_finite_at = float(lr[first_bad]) if first_bad < len(raw) else None
    stop_at = non_finite_at if non_finite_at is not None else float(lr[-1]) if stopped else None

    def failed() -> tuple[str, float | None]:
        if non_finite_at is not None:
            return f"non-finite loss at lr={non_finite_at:.3g}", non_finite_at
        if stopped and len(raw) <= SKIP_START + SKIP_END:
            return DIAG_DIVERGED_AT_ONCE, stop_at
        return DIAG_NO_DESCENT, stop_at

    r = raw[:first_bad]
    w = _window(len(r))
    if len(r) < w + 2:
        return failed()
    smooth = np.convolve(r, np.ones(w) / w, mode="valid")  # smooth[j] is centred on j + off
    off = w // 2
    lo = max(0, SKIP_START - off)
    if len(smooth) - lo < 5:
        lo = 0
    # The start level is the first window's mean: with a high start_lr the loss may fall
    # within a few steps, so later points are no reference.
    start = float(smooth[0])
    i_min = lo + int(np.argmin(smooth[lo:]))
    low = float(smooth[i_min])
    # Batch-to-batch noise, robustly (MAD), from the residuals up to the minimum: past it a
    # blow-up would count as noise.
    resid = (r[off : off + len(smooth)] - smooth)[: max(i_min + 1, 5)]
    sigma = 1.4826 * float(np.median(np.abs(resid - np.median(resid))))
    # The standard error of a difference of two windows' means.
    noise = NOISE_SIGMAS * sigma * math.sqrt(2 / w)
    depth = start - low
    if not depth > max(DESCENT_MIN * max(abs(start), 1e-12), noise):
        return failed()
    # Only a positive loss has a scale to measure the descent against (0 is its floor);
    # a log-likelihood from -99 to -101 may have come a long way.
    ok = DIAG_FLAT if low > 0 and depth < FLAT_DEPTH * start else DIAG_OK
    if stop_at is not None:
        return ok, stop_at
    # 2x the minimum for positive losses; capped at the descent because a negative loss's
    # magnitude says nothing about its scale (-101 after -100 is a long way down).
    level = low + max(RISE_OF_MIN * min(abs(low), depth), RISE_OF_DESCENT * depth, noise)
    if smooth[-1] > level:
        below = np.nonzero(smooth[i_min:] <= level)[0]
        return ok, float(lr[i_min + int(below[-1]) + 1 + off])
    return DIAG_NEVER_DIVERGED, None


def read_curve(curve: Curve) -> dict[str, Any]:
    """One seed's diagnosis, ``diverged_at``, suggestions (``steep`` read before the
    divergence) and bounds."""
    lrs = np.asarray(curve.lrs)
    losses = np.asarray(curve.losses, dtype=float)
    smoothed = np.asarray(curve.smoothed, dtype=float)
    diagnosis, diverged_at = diagnose(
        curve.lrs, curve.losses, stopped=curve.stop_reason is not None
    )
    lo, hi = SKIP_START, len(lrs) - SKIP_END
    if hi - lo < 5:
        # The sweep stopped within its first points: nothing to read off.
        lo, hi = 0, len(lrs)
    window = slice(lo, hi)
    lr_w, raw_w, sm_w = lrs[window], losses[window], smoothed[window]
    ok = np.isfinite(raw_w) & np.isfinite(sm_w)
    if ok.sum() < 3:
        lr = float(lrs[0])
        return _suggestions(lr, lr, lr, diagnosis, diverged_at)
    lr_w, raw_w, sm_w = lr_w[ok], raw_w[ok], sm_w[ok]
    lagfree = _lagfree(raw_w)
    grads = np.gradient(lagfree, np.log10(lr_w))
    if diverged_at is not None and (lr_w < diverged_at).sum() >= 3:
        # The steepest fall is read before the divergence only: past it the loss swings,
        # and a drop from a spike would suggest an LR that already diverged.
        grads = np.where(lr_w < diverged_at, grads, np.inf)
    steep = float(lr_w[int(np.argmin(grads))])
    valley = float(lr_w[_valley(sm_w)])
    min_lr = float(lr_w[int(np.argmin(sm_w))])
    return _suggestions(steep, valley, min_lr, diagnosis, diverged_at)


def _suggestions(
    steep: float, valley: float, min_lr: float, diagnosis: str, diverged_at: float | None
) -> dict[str, Any]:
    """One seed's suggestions and the bounds they give."""
    low, high = bounds_from(valley, min_lr)
    return {
        "steep": steep,
        "valley": valley,
        "min10": min_lr / 10,
        "min_lr": min_lr,
        "lr_low": low,
        "lr_high": high,
        "diagnosis": diagnosis,
        "diverged_at": diverged_at,
    }


def _median_log(values: list[float]) -> float:
    return float(10 ** statistics.median(math.log10(v) for v in values))


def combine(
    curves: list[Curve], seeds: list[int], *, seconds: float, **fields: Any
) -> RangeTestResult:
    """The result of the sweeps ``curves`` (one per seed of ``seeds``): each read by
    :func:`read_curve`, suggestions and bounds from their medians (log scale), the majority
    diagnosis. ``fields`` are the result's other fields (``optimizer``, ``mode``,
    ``start_lr``, ...)."""
    per_seed = [read_curve(c) for c in curves]
    diagnoses = [p["diagnosis"] for p in per_seed]
    # The majority diagnosis; ties go to the first non-ok one so a problem is not hidden.
    diagnosis = max(diagnoses, key=lambda d: (diagnoses.count(d), d != DIAG_OK))
    div = [p["diverged_at"] for p in per_seed if p["diverged_at"] is not None]
    highs = [p["lr_high"] for p in per_seed]
    lr_low, lr_high = bounds_from(
        _median_log([p["valley"] for p in per_seed]), _median_log([p["min_lr"] for p in per_seed])
    )
    diverged_at = _median_log(div) if len(div) * 2 > len(per_seed) else None
    steep = _median_log([p["steep"] for p in per_seed])
    if diverged_at is not None:
        # Each seed's steep lies below its divergence; the medians over different sets of
        # seeds need not.
        steep = min(steep, diverged_at)
    return RangeTestResult(
        lr_low=lr_low,
        lr_high=lr_high,
        steep=steep,
        valley=_median_log([p["valley"] for p in per_seed]),
        min10=_median_log([p["min10"] for p in per_seed]),
        diverged_at=diverged_at,
        diagnosis=diagnosis,
        spread_decades=float(math.log10(max(highs) / min(highs))),
        seconds=seconds,
        lrs=[c.lrs for c in curves],
        losses=[c.losses for c in curves],
        smoothed=[c.smoothed for c in curves],
        seeds=seeds,
        per_seed=per_seed,
        metric_steps=[c.metric_steps for c in curves],
        metrics=[c.metrics for c in curves],
        **fields,
    )
