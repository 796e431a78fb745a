"""The LR range test (Smith 2015; fastai's ``lr_find``) and the search bounds it gives.

The LR grows exponentially (or linearly) from ``start_lr`` to ``end_lr`` over ``steps``
mini-batches; the loss is smoothed by a bias-corrected exponential moving average
(β = 0.98) and the sweep stops once the smoothed loss rises 3× the minimum's magnitude
above the minimum (fastai's "4× the minimum" for positive losses, and still meaningful for
negative ones) or the loss is not finite. :func:`diagnose` reads the curve's shape (descent,
divergence) from a lag-free moving average. Model, optimizer, BatchNorm buffers, gradients
and torch RNG state are restored in ``finally``, whatever happens.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from lrtune import interrupt
from lrtune.device import resolve_device
from lrtune.errors import UserError
from lrtune.training.data import Batches, is_pair
from lrtune.training.optimizers import check_optimizer, make_optimizer
from lrtune.training.tasks import Task, TaskFactory, resolve_task
from lrtune.training.trainer import Updater, batch_loss, check_precision

log = logging.getLogger(__name__)

BETA = 0.98
SKIP_START = 10
SKIP_END = 5
#: fp16 updates skipped on overflow in a row after which the sweep stops as non-finite.
MAX_SKIPPED = 20
#: The bounds are [valley × BOUNDS_LOW_MUL, valley × BOUNDS_HIGH_MUL], the top capped at the
#: minimum of the smoothed loss (see :func:`bounds_from`).
BOUNDS_LOW_MUL = 2.4
BOUNDS_HIGH_MUL = 80.0

DIAG_OK = "ok"
DIAG_NO_DESCENT = "no descent: check model and data"
DIAG_NEVER_DIVERGED = "never diverged: raise end_lr"
DIAG_DIVERGED_AT_ONCE = "diverged at once: lower start_lr"
#: :func:`diagnose`'s thresholds: a descent must exceed DESCENT_MIN × the start level; a
#: divergence is a rise above the minimum of RISE_OF_MIN × its magnitude and
#: RISE_OF_DESCENT × the descent; both must exceed NOISE_SIGMAS standard errors.
DESCENT_MIN = 0.02
RISE_OF_MIN = 1.0
RISE_OF_DESCENT = 0.2
NOISE_SIGMAS = 4.0


@dataclass
class RangeTestResult:
    """What :func:`range_test` found. Suggestions are medians over seeds.

    Attributes:
        lr_low, lr_high: the search bounds.
        steep: LR of steepest descent of the loss against log LR.
        valley: fastai's "valley" suggestion.
        min10: LR at the minimum smoothed loss, divided by 10.
        diverged_at: LR at which the loss blew up: where the sweep stopped, or where the
            smoothed loss rose well above its minimum (``None`` if it never diverged; see
            :func:`diagnose`).
        diagnosis: ``ok``, ``no descent: ...``, ``non-finite loss at lr=...``,
            ``diverged at once: lower start_lr`` or ``never diverged: raise end_lr``.
        spread_decades: how far apart the seeds' ``lr_high`` are, in decades.
        seconds: wall time of the whole test.
        lrs, losses, smoothed: the curves, one list per seed.
    """

    lr_low: float
    lr_high: float
    steep: float
    valley: float
    min10: float
    diverged_at: float | None
    diagnosis: str
    spread_decades: float
    seconds: float
    lrs: list[list[float]]
    losses: list[list[float]]
    smoothed: list[list[float]]
    seeds: list[int] = field(default_factory=list)
    optimizer: str = "sgd"
    mode: str = "exp"
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    metric_name: str | None = None
    metric_steps: list[list[int]] = field(default_factory=list)
    metrics: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite losses become ``None``)."""
        return _jsonable(asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text (the ``--json`` file)."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """The suggestion table ``lrtune rangetest`` prints."""
        div = f"{self.diverged_at:.3g}" if self.diverged_at is not None else "never"
        decades = math.log10(self.lr_high / self.lr_low)
        rows = [
            ("steep", f"{self.steep:.3g}", "steepest descent of loss vs log LR"),
            ("valley", f"{self.valley:.3g}", "fastai's valley"),
            ("min/10", f"{self.min10:.3g}", "LR at the minimum smoothed loss / 10"),
            ("diverged at", div, "where the loss rose well above its minimum"),
            (
                "bounds",
                f"[{self.lr_low:.3g}, {self.lr_high:.3g}]",
                f"search bounds, {decades:.2g} decades",
            ),
            ("spread", f"{self.spread_decades:.2f}", f"decades between {len(self.seeds)} seeds"),
            ("diagnosis", self.diagnosis, ""),
            ("seconds", f"{self.seconds:.1f}", ""),
        ]
        head = (
            f"LR range test: {self.optimizer}, {self.mode} sweep {self.start_lr:.3g} -> "
            f"{self.end_lr:.3g} over {self.steps} steps, {len(self.seeds)} seed(s)"
        )
        lines = [head, f"  {'':<12} {'lr':<22} note"]
        lines += [f"  {k:<12} {v:<22} {n}".rstrip() for k, v, n in rows]
        return "\n".join(lines)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        """Rebuild a result stored with :meth:`to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


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


def _lagfree(losses: np.ndarray) -> np.ndarray:
    # The EMA lags the true curve by ~1/(1-β) = 50 steps, which shifts the steepest point
    # to a higher LR; a centred moving average does not shift it.
    w = max(3, (len(losses) // 15) | 1)
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
    """Search bounds from fastai's ``valley`` suggestion: ``[2.4 × valley, 80 × valley]``,
    the top capped at ``min_lr`` (the minimum of the smoothed loss).

    fastai trains at ``valley`` (or ``min/10``); Smith reads the max LR off where the
    smoothed loss stops falling. Both are points, not a range, and a peak LR held for a
    whole run (or decayed by a schedule) tolerates more than the sweep's short visit
    suggests. The multipliers were calibrated against dense grids of real training
    (``lrtune.training.oracle``: 40 LRs × 10 schedules × 2 training seeds) on the four
    built-in tasks,
    with 20 range tests of 3 seeds each (seeds 500 and up, disjoint from the benchmark's):
    every schedule's best LR lay between 2.49 × and 75.4 × the valley. The cap keeps the top
    below Smith's max, where no schedule's best LR was seen, and the bottom stays a decade
    under the top. The earlier rule on the minimum alone, ``[min/50, min/1.5]``, needed 1.85
    decades for the same coverage: the minimum moves more between seeds than the valley.
    ``tests/test_bounds.py`` checks the rule in CI; docs/benchmarks.md has its coverage on
    held-out seeds.
    """
    high = min(valley * BOUNDS_HIGH_MUL, min_lr)
    return min(valley * BOUNDS_LOW_MUL, high / 10), high


@dataclass
class _Curve:
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
      descent is a divergence.
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
    w = max(3, (len(r) // 15) | 1)  # the window of _lagfree
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
    if stop_at is not None:
        return DIAG_OK, stop_at
    # 2x the minimum for positive losses; capped at the descent because a negative loss's
    # magnitude says nothing about its scale (-101 after -100 is a long way down).
    level = low + max(RISE_OF_MIN * min(abs(low), depth), RISE_OF_DESCENT * depth, noise)
    if smooth[-1] > level:
        below = np.nonzero(smooth[i_min:] <= level)[0]
        return DIAG_OK, float(lr[i_min + int(below[-1]) + 1 + off])
    return DIAG_NEVER_DIVERGED, None


def _suggest(curve: _Curve) -> dict[str, Any]:
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
        low, high = bounds_from(lr, lr)
        return {
            "steep": lr,
            "valley": lr,
            "min10": lr / 10,
            "min_lr": lr,
            "diagnosis": diagnosis,
            "lr_low": low,
            "lr_high": high,
            "diverged_at": diverged_at,
        }
    lr_w, raw_w, sm_w = lr_w[ok], raw_w[ok], sm_w[ok]
    lagfree = _lagfree(raw_w)
    grads = np.gradient(lagfree, np.log10(lr_w))
    steep = float(lr_w[int(np.argmin(grads))])
    valley = float(lr_w[_valley(sm_w)])
    min_lr = float(lr_w[int(np.argmin(sm_w))])
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


def _tracked_metric(
    task: Task, target: torch.Tensor
) -> tuple[str, Callable[[torch.Tensor, torch.Tensor], float]]:
    # ``target`` is the held-out targets (not ``task.val[1]``: ``val`` may be a Dataset,
    # whose item 1 is a sample, not the targets).
    if task.metric is not None:
        return task.metric_name, task.metric

    def metric(pred: torch.Tensor, target: torch.Tensor) -> float:
        if pred.dim() == 2 and pred.shape[1] > 1 and not target.is_floating_point():
            return float((pred.argmax(1) == target).float().mean())
        return float(task.loss_fn(pred, target))

    return "accuracy" if not target.is_floating_point() else "val_loss", metric


def _held_out(task: Task, device: torch.device) -> Any:
    """Up to 512 validation rows, on ``device``: the first validation batch."""
    batch = next(iter(Batches(task.val, 512, device, "val")))
    return (batch[0][:512], batch[1][:512]) if is_pair(batch) else batch


def _batch_metric(task: Task, batch: Any) -> tuple[str, Callable[[torch.nn.Module], float]]:
    """The tracked metric's name and ``metric(model)`` on one held-out ``batch``."""
    if not is_pair(batch) or (task.step_loss is not None and task.metric is None):
        step_loss = batch_loss(task)
        return "val_loss", lambda model: float(step_loss(model, batch))
    name, fn = _tracked_metric(task, batch[1])
    return name, lambda model: fn(model(batch[0]), batch[1])


def _sweep(
    task: Task,
    optimizer: torch.optim.Optimizer,
    ratios: list[float],
    *,
    seed: int,
    start_lr: float,
    end_lr: float,
    steps: int,
    mode: str,
    device: torch.device,
    track_metric: bool,
    precision: str,
    accumulate: int,
    clip_grad_norm: float | None,
) -> _Curve:
    batches = Batches(task.train, task.batch_size, device, "train")
    stream = batches.endless(torch.Generator().manual_seed(seed))
    model = task.model
    model.train()
    updater = Updater(
        model, optimizer, batch_loss(task), precision=precision, clip=clip_grad_norm, device=device
    )
    metric_fn = metric_name = None
    metric_every = max(1, steps // 25)
    if track_metric:
        metric_name, metric_fn = _batch_metric(task, _held_out(task, device))
    # Losses stay on the device and are checked every few steps on CUDA, so the GPU is not
    # stalled by a host sync each step; on CPU a check per step costs nothing. (A list of
    # loss tensors, not an indexed write into one buffer: that costs ~10% of a small step.)
    check_every = 8 if device.type == "cuda" else 1
    pending: list[torch.Tensor] = []
    lrs: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    metric_steps: list[int] = []
    metrics: list[float] = []
    avg, best = 0.0, math.inf
    stop_reason = None
    done = skipped = 0
    i = 0
    while i < steps:
        interrupt.check()  # a deferred Ctrl-C stops here (lrtune.interrupt)
        lr = lr_at(i, steps, start_lr, end_lr, mode)
        for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
            group["lr"] = lr * ratio
        # One sweep step is one optimizer update, of ``accumulate`` micro-batches; its loss
        # is their mean.
        loss = updater.forward(next(stream))
        updater.backward(loss, 1.0 / accumulate)
        loss = loss.detach()
        for _ in range(accumulate - 1):
            micro = updater.forward(next(stream))
            updater.backward(micro, 1.0 / accumulate)
            loss = loss + micro.detach()
        if not updater.step():
            # fp16 overflow: the scaler skipped the update; the LR does not move on. A loss
            # that keeps overflowing ends the sweep as non-finite.
            skipped += 1
            if skipped < MAX_SKIPPED:
                continue
            loss = torch.full_like(loss, math.inf)
        skipped = 0
        pending.append(loss / accumulate if accumulate > 1 else loss)
        lrs.append(lr)
        if metric_fn is not None and i % metric_every == 0:
            model.eval()
            with torch.no_grad(), updater.autocast():
                metrics.append(metric_fn(model))
            model.train()
            metric_steps.append(i)
        i += 1
        if i % check_every and i < steps:
            continue
        values = (
            [pending[0].item()]
            if len(pending) == 1
            else torch.stack(pending).float().flatten().tolist()
        )
        pending.clear()
        for value in values:
            done += 1
            raw.append(value)
            if not math.isfinite(value):
                stop_reason = "non-finite"
                smoothed.append(math.nan)
                break
            avg = BETA * avg + (1 - BETA) * value
            sm = avg / (1 - BETA**done)
            smoothed.append(sm)
            best = min(best, sm)
            if should_stop(sm, best):
                stop_reason = "diverged"
                break
        if stop_reason:
            break
    n = len(raw)
    return _Curve(lrs[:n], raw, smoothed, stop_reason, metric_steps, metrics, metric_name)


def _snapshot(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {name: m.training for name, m in model.named_modules()},
        # The sweep's backward passes leave .grad on every parameter; a user who had none
        # (or had accumulated some) gets back exactly what they had.
        "grads": [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()],
        "optimizer": copy.deepcopy(optimizer.state_dict()) if optimizer is not None else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, snap: dict) -> None:
    with torch.no_grad():
        model.load_state_dict(snap["model"])
    for name, module in model.named_modules():
        module.training = snap["training"].get(name, module.training)
    for param, grad in zip(model.parameters(), snap["grads"], strict=True):
        param.grad = None if grad is None else grad.to(param.device)
    if optimizer is not None:
        optimizer.load_state_dict(snap["optimizer"])
    torch.set_rng_state(snap["rng"])
    if snap["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(snap["cuda_rng"])


def _check_args(start_lr: float, end_lr: float, steps: int, mode: str, seeds: int) -> None:
    if not (math.isfinite(start_lr) and start_lr > 0):
        raise UserError(f"start_lr must be a positive number, got {start_lr}")
    if not (math.isfinite(end_lr) and end_lr > start_lr):
        raise UserError(f"end_lr must be larger than start_lr ({start_lr}), got {end_lr}")
    if steps < SKIP_START + SKIP_END + 5:
        raise UserError(f"steps must be at least {SKIP_START + SKIP_END + 5}, got {steps}")
    if mode not in ("exp", "linear"):
        raise UserError(f"mode must be 'exp' or 'linear', got {mode!r}")
    if seeds < 1:
        raise UserError(f"seeds must be at least 1, got {seeds}")


def _options(
    task: Task,
    device: torch.device,
    precision: str | None,
    accumulate: int | None,
    clip_grad_norm: float | None,
) -> dict[str, Any]:
    """The sweep's training options (``None``: the task's own), checked."""
    if task.fit is not None and task.step_loss is None:
        raise UserError(
            f"task {task.name} has its own fit but no step_loss: the range test needs "
            "step_loss(model, batch) (or run the study with --prior none)"
        )
    options: dict[str, Any] = {
        "precision": precision or task.precision,
        "accumulate": accumulate or task.accumulate,
        "clip_grad_norm": clip_grad_norm if clip_grad_norm is not None else task.clip_grad_norm,
    }
    check_precision(options["precision"], device)
    k = options["accumulate"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"accumulate must be a positive int, got {k!r}")
    return options


def _median_log(values: list[float]) -> float:
    return float(10 ** statistics.median(math.log10(v) for v in values))


def range_test(
    task: str | TaskFactory | Task,
    *,
    optimizer: str | torch.optim.Optimizer = "sgd",
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    mode: Literal["exp", "linear"] = "exp",
    seeds: int = 3,
    device: str | torch.device = "auto",
    track_metric: bool = False,
    seed: int = 0,
    precision: str | None = None,
    accumulate: int | None = None,
    clip_grad_norm: float | None = None,
) -> RangeTestResult:
    """Run the LR range test on ``task`` with ``seeds`` seeds and return the suggestions.

    ``task`` is a built-in name, a factory ``make(seed) -> Task`` (a fresh model per seed),
    or a :class:`Task` (its model is swept ``seeds`` times and restored exactly afterwards).
    ``optimizer`` is a name (``sgd``, ``adam``, ...) or an optimizer over the task's model;
    with several param groups their LR ratios are kept. Seeds are ``seed, seed+1, ...``.

    ``precision``, ``accumulate`` (micro-batches per sweep step: ``steps`` counts optimizer
    updates) and ``clip_grad_norm`` of ``None`` take the task's own. The task's batches go
    through ``step_loss`` (default ``loss_fn(model(x), y)``); a task with ``fit`` but no
    ``step_loss`` cannot be swept. Any error of the task's code in the sweep (a batch the
    model rejects) is raised as :class:`UserError` with its first line.
    """
    _check_args(start_lr, end_lr, steps, mode, seeds)
    if isinstance(optimizer, str):
        try:
            check_optimizer(optimizer)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    dev = resolve_device(device)
    factory = resolve_task(task)  # a Task gives a factory that returns that same Task
    given_opt = optimizer if isinstance(optimizer, torch.optim.Optimizer) else None
    opt_name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__.lower()
    # The first optimizer built in a process imports torch._dynamo (about 2 s here); a
    # trial's timer starts after its optimizer exists, so this one-time cost is left out of
    # the range test's seconds too, keeping "trial-equivalents" a fair ratio.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    t0 = time.perf_counter()
    curves: list[_Curve] = []
    seed_list = [seed + k for k in range(seeds)]
    rng_before = torch.get_rng_state()
    cuda_rng_before = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    metric_name = None
    try:
        for s in seed_list:
            torch.manual_seed(s)
            t = factory(s)
            options = _options(t, dev, precision, accumulate, clip_grad_norm)
            original_device = next(t.model.parameters()).device
            snap = _snapshot(t.model, given_opt)
            try:
                t.model.to(dev)
                opt = given_opt or make_optimizer(str(optimizer), t.model.parameters(), start_lr)
                base = opt.param_groups[0]["lr"]
                ratios = [g["lr"] / base for g in opt.param_groups]
                curve = _sweep(
                    t,
                    opt,
                    ratios,
                    seed=s,
                    start_lr=start_lr,
                    end_lr=end_lr,
                    steps=steps,
                    mode=mode,
                    device=dev,
                    track_metric=track_metric,
                    **options,
                )
                curves.append(curve)
                metric_name = curve.metric_name
            finally:
                t.model.to(original_device)
                _restore(t.model, given_opt, snap)
    finally:
        torch.set_rng_state(rng_before)
        if cuda_rng_before is not None:
            torch.cuda.set_rng_state_all(cuda_rng_before)
    per_seed = [_suggest(c) for c in curves]
    return _combine(
        per_seed,
        curves,
        seed_list,
        opt_name,
        mode,
        start_lr,
        end_lr,
        steps,
        time.perf_counter() - t0,
        metric_name,
    )


def _combine(
    per_seed: list[dict[str, Any]],
    curves: list[_Curve],
    seed_list: list[int],
    opt_name: str,
    mode: str,
    start_lr: float,
    end_lr: float,
    steps: int,
    seconds: float,
    metric_name: str | None,
) -> RangeTestResult:
    diagnoses = [p["diagnosis"] for p in per_seed]
    # The majority diagnosis; ties go to the first non-ok one so a problem is not hidden.
    diagnosis = max(diagnoses, key=lambda d: (diagnoses.count(d), d != DIAG_OK))
    div = [p["diverged_at"] for p in per_seed if p["diverged_at"] is not None]
    highs = [p["lr_high"] for p in per_seed]
    lr_low, lr_high = bounds_from(
        _median_log([p["valley"] for p in per_seed]), _median_log([p["min_lr"] for p in per_seed])
    )
    return RangeTestResult(
        lr_low=lr_low,
        lr_high=lr_high,
        steep=_median_log([p["steep"] for p in per_seed]),
        valley=_median_log([p["valley"] for p in per_seed]),
        min10=_median_log([p["min10"] for p in per_seed]),
        diverged_at=_median_log(div) if len(div) * 2 > len(per_seed) else None,
        diagnosis=diagnosis,
        spread_decades=float(math.log10(max(highs) / min(highs))),
        seconds=seconds,
        lrs=[c.lrs for c in curves],
        losses=[c.losses for c in curves],
        smoothed=[c.smoothed for c in curves],
        seeds=seed_list,
        optimizer=opt_name,
        mode=mode,
        start_lr=start_lr,
        end_lr=end_lr,
        steps=steps,
        per_seed=per_seed,
        metric_name=metric_name,
        metric_steps=[c.metric_steps for c in curves],
        metrics=[c.metrics for c in curves],
    )
