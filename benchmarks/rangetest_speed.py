"""ms per step of ``lrtune.range_test`` vs a bare training loop and vs torch-lr-finder.

Same model (same initial weights), same data, same batch size, same optimizer (SGD with
momentum 0.9), same exponential LR sweep and same number of steps for all three:

- ``bare``: zero_grad / forward / backward / step on tensors kept on the device, batched
  by index from a shuffled permutation, the LR set on the param groups each step;
- ``lrtune``: the whole ``lrtune.range_test(task, seeds=1, ...)`` call (state snapshot,
  sweep, suggestions, restore), wall time divided by the steps it actually ran;
- ``lr-finder``: torch-lr-finder's ``LRFinder(...).range_test(loader)`` and ``reset()``
  with a ``DataLoader`` over a ``TensorDataset``, its normal usage.

A task named ``NAME+loader`` (e.g. ``digits+loader``) compares the two on the *same*
``DataLoader``: lrtune's task gets that loader as ``train`` (batches moved to the device
one by one, as for any user loader), and the ratio is against torch-lr-finder.

The methods run interleaved, ``--repeats`` times after one warm-up each; the figure is
the median. torch runs on one thread (``torch.set_num_threads(1)``) so that the numbers
do not depend on how busy the other cores are. Run by hand, not in CI::

    python benchmarks/rangetest_speed.py [--tasks digits,digits-cnn] [--steps 200]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

import lrtune
from lrtune.device import resolve_device
from lrtune.rangetest import lr_at
from lrtune.training.loading import resolve_task
from lrtune.training.optimizers import make_optimizer
from lrtune.training.tasks import Task

START_LR = 1e-7


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh(name: str, device: torch.device) -> Task:
    task = resolve_task(name.removesuffix("+loader"))(0)  # seed 0: same initial weights
    task.model.to(device)
    return task


def _loader(task: Task) -> DataLoader:
    x, y = task.train
    return DataLoader(TensorDataset(x, y), batch_size=task.batch_size, shuffle=True)


def bare(name: str, steps: int, end_lr: float, device: torch.device) -> tuple[float, int]:
    """A bare on-device loop: seconds and steps."""
    task = _fresh(name, device)
    model, loss_fn, bs = task.model, task.loss_fn, task.batch_size
    x, y = (t.to(device) for t in task.train)
    n = len(x)
    opt = make_optimizer("sgd", model.parameters(), START_LR)
    lrs = [lr_at(i, steps, START_LR, end_lr, "exp") for i in range(steps)]
    generator = torch.Generator().manual_seed(0)
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    i = 0
    while i < steps:
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, bs):
            if i == steps:
                break
            idx = order[start : start + bs]
            for group in opt.param_groups:
                group["lr"] = lrs[i]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x.index_select(0, idx)), y.index_select(0, idx))
            loss.backward()
            opt.step()
            i += 1
    _sync(device)
    return time.perf_counter() - t0, steps


def with_lrtune(name: str, steps: int, end_lr: float, device: torch.device) -> tuple[float, int]:
    """The whole ``lrtune.range_test`` call on a built Task: seconds and steps it ran."""
    task = _fresh(name, device)
    if name.endswith("+loader"):
        task.train = _loader(task)
    _sync(device)
    t0 = time.perf_counter()
    result = lrtune.range_test(
        task, seeds=1, steps=steps, start_lr=START_LR, end_lr=end_lr, device=device
    )
    _sync(device)
    return time.perf_counter() - t0, len(result.lrs[0])


def with_lr_finder(name: str, steps: int, end_lr: float, device: torch.device) -> tuple[float, int]:
    """torch-lr-finder with a DataLoader, as its README uses it: seconds and steps it ran."""
    from torch_lr_finder import LRFinder

    task = _fresh(name, device)
    loader = _loader(task)
    opt = make_optimizer("sgd", task.model.parameters(), START_LR)
    _sync(device)
    t0 = time.perf_counter()
    finder = LRFinder(task.model, opt, task.loss_fn, device=device)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader, end_lr=end_lr, num_iter=steps, step_mode="exp", diverge_th=1e9)
    finder.reset()
    _sync(device)
    return time.perf_counter() - t0, len(finder.history["lr"])


METHODS: dict[str, Callable[[str, int, float, torch.device], tuple[float, int]]] = {
    "bare": bare,
    "lrtune": with_lrtune,
    "lr-finder": with_lr_finder,
}


def measure(
    name: str, steps: int, end_lr: float, repeats: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Median ms/step of each method on task ``name`` (interleaved, after a warm-up); the
    ratio is against ``bare``, or against ``lr-finder`` for a ``+loader`` task."""
    loader = name.endswith("+loader")
    methods = {m: f for m, f in METHODS.items() if not (loader and m == "bare")}
    samples: dict[str, list[float]] = {m: [] for m in methods}
    ran: dict[str, int] = {}
    for rep in range(repeats + 1):
        for method, fn in methods.items():
            seconds, done = fn(name, steps, end_lr, device)
            ran[method] = done
            if rep > 0:  # the first round warms up imports, allocator and caches
                samples[method].append(1000 * seconds / done)
    base = statistics.median(samples["lr-finder" if loader else "bare"])
    return {
        m: {
            "ms_per_step": statistics.median(v),
            "ratio": statistics.median(v) / base,
            "min_ms": min(v),
            "max_ms": max(v),
            "steps": ran[m],
        }
        for m, v in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,digits-cnn,digits+loader")
    parser.add_argument("--steps", type=int, default=200)
    # Low enough that no method stops early at divergence (digits diverges near lr=4).
    parser.add_argument("--end-lr", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    figures: dict[str, object] = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "steps": args.steps,
        "repeats": args.repeats,
    }
    print(
        f"range test speed: {args.steps} steps, median of {args.repeats}, device {device}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}"
    )
    print(f"| task | method | ms/step | ratio | min–max ms |\n|{'---|' * 5}")
    for name in args.tasks.split(","):
        result = measure(name, args.steps, args.end_lr, args.repeats, device)
        figures[name] = result
        for method, r in result.items():
            print(
                f"| {name} | {method} | {r['ms_per_step']:.3f} | {r['ratio']:.2f}x | "
                f"{r['min_ms']:.3f}–{r['max_ms']:.3f} |"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
