"""Trial cost, seed noise and range-test cost of the built-in tasks (README's task table).

For each task, in one warm process (a first trial pays the one-time imports):
- seconds per trial: three trials at the task's default epochs (seeds 0, 1, 2), median of
  their training seconds (as trials record them) and of their CPU seconds;
- seed noise: the spread of the validation metric over those three seeds at one sensible
  LR and schedule, ``(max - min) / mean`` and ``sd / mean``;
- the range test (3 seeds x 100 steps, the task's optimizer) in seconds and in
  trial-equivalents (its seconds / a trial's median seconds).

Usage (run it on one thread, as the figures are quoted)::

    OMP_NUM_THREADS=1 python benchmarks/zoo_tasks.py [--tasks charlm,digits-cnn,finetune]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lrtune.rangetest import range_test
from lrtune.search.spec import task_optimizer
from lrtune.training.trainer import TrainConfig, train

#: A sensible LR and schedule per task (near the best of a small sweep).
SETTINGS: dict[str, tuple[float, str]] = {
    "charlm": (0.01, "warmup_cosine"),
    "digits-cnn": (0.03, "cosine"),
    "finetune": (0.003, "cosine"),
    "digits": (0.1, "cosine"),
    "breast-cancer": (0.03, "cosine"),
    "wine": (0.03, "cosine"),
    "synthetic": (0.01, "cosine"),
}


def measure(task: str) -> dict[str, float | str]:
    """One row of the table for ``task``."""
    lr, schedule = SETTINGS[task]
    optimizer = task_optimizer(task)
    train(task, TrainConfig(lr=lr, optimizer=optimizer, schedule=schedule, seed=99))  # warm-up
    walls, cpus, values = [], [], []
    for seed in (0, 1, 2):
        cpu0 = time.process_time()
        result = train(task, TrainConfig(lr=lr, optimizer=optimizer, schedule=schedule, seed=seed))
        cpus.append(time.process_time() - cpu0)
        walls.append(result.seconds)
        values.append(result.value)
    cpu0 = time.process_time()
    rt = range_test(task, optimizer=optimizer, seeds=3, steps=100, device="cpu")
    rt_cpu = time.process_time() - cpu0
    mean = statistics.fmean(values)
    trial = statistics.median(walls)
    return {
        "task": task,
        "optimizer": optimizer,
        "setting": f"lr {lr:g}, {schedule}",
        "trial_s": trial,
        "trial_cpu_s": statistics.median(cpus),
        "mean": mean,
        "spread": (max(values) - min(values)) / abs(mean),
        "rel_sd": statistics.stdev(values) / abs(mean),
        "rt_s": rt.seconds,
        "rt_cpu_s": rt_cpu,
        "rt_trials": rt.seconds / trial,
        "diagnosis": rt.diagnosis,
    }


def main() -> None:
    """Print the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="charlm,digits-cnn,finetune")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        "| task | optimizer | setting | s/trial (CPU s) | mean val_loss, 3 seeds | seed spread "
        "(sd) | range test s (CPU s) | range test, trials |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for task in args.tasks.split(","):
        r = measure(task)
        print(
            f"| `{r['task']}` | {r['optimizer']} | {r['setting']} | {r['trial_s']:.2f} "
            f"({r['trial_cpu_s']:.2f}) | {r['mean']:.3f} | {100 * r['spread']:.1f}% "
            f"({100 * r['rel_sd']:.1f}%) | {r['rt_s']:.2f} ({r['rt_cpu_s']:.2f}) | "
            f"{r['rt_trials']:.2f} ({r['diagnosis']}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
