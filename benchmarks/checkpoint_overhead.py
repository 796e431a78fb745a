"""What checkpoints cost and what they save (issue 17).

1. **Overhead**: per task, the seconds an epoch of lrtune's loop takes without checkpoints
   and with one after every epoch (``--checkpoint-every 1``, the worst case), and the time
   of one save (``torch.save`` + artifact-store write + the trial attr), in the same run.
   The default interval saves at most once per 30 s of training (and never in a trial
   shorter than that), so its overhead is at most ``save / max(epoch, 30 s)``.
2. **Recovery**: trials of a task are preempted at a random moment (uniform over the
   middle 80% of an uninterrupted run) and resumed, as a worker does:
   - ``sigterm``: SIGTERM (the worker saves at the next update and hands the trial back);
   - ``sigkill``: killed mid-step, no save (a heartbeat retry resumes from the last
     per-epoch checkpoint).
   Lost compute = (time before the stop + time of the resumed run) - the uninterrupted
   run's time; without checkpoints the whole time before the stop is lost (the retry
   starts over). Recovered = 1 - lost with / lost without. Each resumed value is checked
   against the uninterrupted run's (equal on CPU).

Each timing is the best of ``--repeats`` runs (a shared machine disturbs the others). Run
by hand, not in CI::

    OMP_NUM_THREADS=1 python benchmarks/checkpoint_overhead.py [--tasks digits-cnn,charlm]

The last line printed is a JSON object of the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import signal
import tempfile
import threading
import time
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore

from lrtune import interrupt, preempt
from lrtune.training.checkpoint import AUTO_SECONDS, Checkpoints
from lrtune.training.trainer import TrainConfig, run_trial

CONFIGS = {
    "digits-cnn": TrainConfig(lr=0.05, schedule="cosine", epochs=4, device="cpu"),
    "digits": TrainConfig(lr=0.05, schedule="cosine", epochs=6, device="cpu"),
    "charlm": TrainConfig(lr=3e-3, optimizer="adamw", schedule="cosine", epochs=2, device="cpu"),
}


class _Killed(Exception):
    """SIGUSR1 in this benchmark: a process killed mid-step, nothing saved."""


def _timed_saves(checkpoints: Checkpoints, into: list[float]) -> Checkpoints:
    save = checkpoints.save

    def timed(state: dict[str, Any], **kwargs: Any) -> bool:
        start = time.perf_counter()
        done = save(state, **kwargs)
        into.append(time.perf_counter() - start)
        return done

    checkpoints.save = timed  # type: ignore[method-assign]
    return checkpoints


def _run(task: str, store: Any, trial: Any | None, every: int | None = 1) -> tuple[float, Any]:
    config = CONFIGS[task]
    ckpt = None if trial is None else Checkpoints(store, trial, every=every)
    start = time.perf_counter()
    result = run_trial(task, config, lambda v, s: None, checkpoints=ckpt)
    return time.perf_counter() - start, result


def overhead(task: str, repeats: int) -> dict[str, Any]:
    """Seconds per epoch without and with a checkpoint after every epoch; seconds a save."""
    epochs = int(CONFIGS[task].epochs or 1)
    plain, saving, saves = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = FileSystemArtifactStore(tmp)
        study = optuna.create_study()
        for _ in range(repeats):  # alternated, so load changes hit both alike
            plain.append(_run(task, store, None)[0])
            trial = study.ask()
            ckpt = _timed_saves(Checkpoints(store, trial, every=1), saves)
            start = time.perf_counter()
            run_trial(task, CONFIGS[task], lambda v, s: None, checkpoints=ckpt)
            saving.append(time.perf_counter() - start)
    epoch = min(plain) / epochs
    save = min(saves)
    return {
        "task": task,
        "epochs": epochs,
        "epoch_s": round(epoch, 4),
        "epoch_with_every_epoch_s": round(min(saving) / epochs, 4),
        "every_epoch_overhead": round(min(saving) / min(plain) - 1, 4),
        "save_s": round(save, 4),
        "save_over_epoch": round(save / epoch, 4),
        "default_overhead_bound": round(save / max(epoch, AUTO_SECONDS), 5),
    }


def _stop_after(seconds: float, signum: int) -> threading.Timer:
    timer = threading.Timer(seconds, os.kill, args=(os.getpid(), signum))
    timer.start()
    return timer


def recovery(task: str, trials: int, seed: int) -> dict[str, Any]:
    """Lost compute with and without checkpoints when trials are stopped at random."""
    rng = random.Random(seed)
    whole_s, whole = min((_run(task, None, None) for _ in range(2)), key=lambda r: r[0])
    out: dict[str, Any] = {"task": task, "uninterrupted_s": round(whole_s, 3)}

    def killed(signum: int, frame: Any) -> None:
        raise _Killed

    previous = signal.signal(signal.SIGUSR1, killed)
    try:
        for how, signum in (("sigterm", signal.SIGTERM), ("sigkill", signal.SIGUSR1)):
            lost_with = lost_without = 0.0
            same = True
            with tempfile.TemporaryDirectory() as tmp:
                store = FileSystemArtifactStore(tmp)
                study = optuna.create_study()
                for _ in range(trials):
                    trial = study.ask()
                    at = whole_s * rng.uniform(0.1, 0.9)
                    start = time.perf_counter()
                    with interrupt.deferred_sigint(), preempt.handing_back(grace=3600):
                        timer = _stop_after(at, signum)
                        try:
                            _run(task, store, trial)
                        except (preempt.Preempted, _Killed):
                            pass
                        finally:
                            timer.cancel()
                    before = time.perf_counter() - start
                    again, result = _run(task, store, trial)
                    lost_with += max(0.0, before + again - whole_s)
                    lost_without += before
                    same = same and result.value == whole.value
            out[how] = {
                "trials": trials,
                "lost_with_s": round(lost_with, 3),
                "lost_without_s": round(lost_without, 3),
                "recovered": round(1 - lost_with / lost_without, 4) if lost_without else None,
                "same_value": same,
            }
    finally:
        signal.signal(signal.SIGUSR1, previous)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="digits-cnn,charlm")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5, help="preempted trials per task")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})",
        "date": datetime.date.today().isoformat(),
        "torch_threads": torch.get_num_threads(),
        "overhead": [],
        "recovery": [],
    }
    print("| task | epoch (s) | save (s) | every epoch: overhead | default: overhead bound |")
    print("|---|---|---|---|---|")
    for task in args.tasks.split(","):
        row = overhead(task, args.repeats)
        figures["overhead"].append(row)
        print(
            f"| {task} | {row['epoch_s']:.3f} | {row['save_s']:.4f} | "
            f"{row['every_epoch_overhead']:+.1%} (save = {row['save_over_epoch']:.1%} of an "
            f"epoch) | {row['default_overhead_bound']:.3%} |"
        )
    print()
    print("| task | stop | lost without (s) | lost with (s) | recovered | same value |")
    print("|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        rec = recovery(task, args.trials, args.seed)
        figures["recovery"].append(rec)
        for how in ("sigterm", "sigkill"):
            r = rec[how]
            print(
                f"| {task} | {how} | {r['lost_without_s']:.2f} | {r['lost_with_s']:.2f} | "
                f"{r['recovered']:.1%} | {r['same_value']} |"
            )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
