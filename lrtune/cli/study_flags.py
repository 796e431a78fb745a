"""The flags of ``lrtune study``, in ``--help`` order (the studies, what they search, how
trials train, the prior and the confirmation, how they run), and which of them are spec
keys (:data:`SPEC_FLAGS`)."""

from __future__ import annotations

import argparse

from lrtune.cli.common import (
    add_common,
    add_heartbeat,
    add_log_dir,
    add_nproc,
    add_preemption,
    add_threads,
    add_timeout,
    int_at_least,
    non_negative_int,
    positive_float,
    positive_int,
    workers_count,
)


def add_study(p: argparse.ArgumentParser) -> None:
    """All of ``lrtune study``'s flags."""
    add_common(p)
    p.add_argument("--spec", metavar="FILE", help="study spec file (studies/*.toml); flags win")
    p.add_argument("--group", help="name of the set of studies (default: the task's name)")
    p.add_argument("--prior", help="rangetest, none, or rangetest,none (default: rangetest)")
    # In --help order: the studies, what they search, how trials train, the prior and the
    # confirmation, how they run.
    _add_studies_flags(p)
    _add_space_flags(p)
    _add_training_flags(p)
    _add_prior_flags(p)
    _add_run_flags(p)


def _add_studies_flags(p: argparse.ArgumentParser) -> None:
    """How many studies, of which samplers, with how many trials, at which fidelity."""
    p.add_argument(
        "--samplers", help="comma list of grid, random, tpe, qmc, gp (default: grid,random,tpe)"
    )
    p.add_argument("--trials", type=positive_int, help="finished trials per study (default: 30)")
    p.add_argument(
        "--repeats",
        type=positive_int,
        help="studies per sampler x prior with different sampler seeds (default: 1)",
    )
    p.add_argument(
        "--pruner",
        help="none, median or hyperband (default: none; pruning on mid-training losses "
        "favours schedules that decay early)",
    )
    p.add_argument("--epochs", type=positive_int, help="epochs per trial (default: the task's)")
    p.add_argument(
        "--rungs",
        metavar="E1,E2,...",
        help="multi-fidelity search: epochs per rung, ascending, the last = --epochs (e.g. "
        "1,3,9); each rung trains the whole schedule compressed to its epochs, --trials "
        "counts full-trial equivalents (default: off)",
    )
    p.add_argument(
        "--reduction-factor",
        type=int_at_least(2, "an integer >= 2"),
        metavar="ETA",
        help="with --rungs: the top 1/ETA of a rung is promoted to the next (default: 3)",
    )
    p.add_argument(
        "--horizon-beta",
        type=float,
        metavar="BETA",
        help="with --rungs: a configuration promoted from E to E' epochs trains at "
        "lr x (E'/E)^-BETA, as the best LR falls with the horizon (e.g. 0.5; default: 0, off)",
    )
    p.add_argument(
        "--share-trunks",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --rungs: a wsd or constant configuration promoted to a longer rung starts "
        "from its lower rung's state at the end of the stable phase and trains only the rest "
        "(its warmup fixed in steps where it started); other schedules train from scratch "
        "(default: off)",
    )


def _add_space_flags(p: argparse.ArgumentParser) -> None:
    """What the studies search: optimizer, schedules, LR bounds, the grid, the target."""
    p.add_argument(
        "--optimizer",
        help="sgd, adam, adamw, rmsprop, adagrad, schedulefree_adamw, schedulefree_sgd "
        "(default: the task's own, else sgd)",
    )
    p.add_argument("--schedules", help="comma list of schedules to search (default: all)")
    p.add_argument(
        "--baseline",
        help="schedulefree: add a schedule-free arm (LR and warmup searched, no schedule) "
        "to the comparison (default: none)",
    )
    p.add_argument("--lr-low", type=positive_float, help="no-prior lower LR bound (default: 1e-6)")
    p.add_argument("--lr-high", type=positive_float, help="no-prior upper LR bound (default: 10)")
    p.add_argument(
        "--tolerance",
        type=positive_float,
        help="trials-to-target: within this fraction of the best (default: 0.02)",
    )
    p.add_argument(
        "--widen",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="grow the prior's bounds when the best trials sit at an edge (default: on)",
    )
    p.add_argument("--grid-points", type=positive_int, help="LR points of the grid (default: 6)")


def _add_training_flags(p: argparse.ArgumentParser) -> None:
    """How a trial trains: precision, accumulation, clipping, batch-size scaling."""
    p.add_argument("--precision", help="fp32, bf16 or fp16 (default: the task's own, else fp32)")
    p.add_argument(
        "--accumulate",
        type=positive_int,
        help="micro-batches per optimizer update (default: the task's, else 1)",
    )
    p.add_argument(
        "--clip-grad-norm", type=positive_float, help="max gradient norm (default: the task's)"
    )
    p.add_argument(
        "--batch-scaling",
        metavar="RULE",
        help="linear, sqrt or none: with [params] batch_size and --prior rangetest, how a "
        "trial's LR bounds follow its batch size from the range test's (default: linear "
        "for sgd, sqrt for the adaptive optimizers)",
    )


def _add_prior_flags(p: argparse.ArgumentParser) -> None:
    """The prior's range test and the confirmation of the best configurations."""
    for name, what, kind in (
        ("start-lr", "first LR (default: 1e-7)", positive_float),
        ("end-lr", "last LR (default: 10)", positive_float),
        ("steps", "updates per sweep (default: 100)", positive_int),
        ("seeds", "sweeps (default: 3)", positive_int),
    ):
        p.add_argument(f"--rangetest-{name}", type=kind, help=f"the prior's range test: {what}")
    p.add_argument(
        "--confirm",
        type=non_negative_int,
        metavar="K",
        help="after the budgets, re-train the K best configurations on fresh seeds "
        "(default: 3; 0: off)",
    )
    p.add_argument(
        "--confirm-seeds",
        type=positive_int,
        metavar="S",
        help="fresh training seeds per confirmed configuration (default: 2)",
    )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Where and how the trials run: local workers, create-only, checkpoints, timeout,
    heartbeat, preemption."""
    p.add_argument(
        "--workers",
        type=workers_count,
        default=1,
        help="local worker processes (default: 1, run in this process)",
    )
    p.add_argument(
        "--create-only",
        action="store_true",
        help="create the studies (and run the range test) for remote workers, exit",
    )
    p.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        metavar="K",
        help="a trial checkpoints every K epochs, so a retried or preempted trial resumes "
        "(default: once 30 s of training passed since the last checkpoint, mid-epoch "
        "too; 0: off)",
    )
    add_nproc(p, "the range test and each trial")
    add_timeout(p)
    add_heartbeat(p)
    add_preemption(p, max_time=False)
    add_threads(p)
    add_log_dir(p)


#: The flags that are spec keys: given, they win over the spec file.
SPEC_FLAGS = (
    "task",
    "group",
    "prior",
    "samplers",
    "trials",
    "repeats",
    "pruner",
    "epochs",
    "optimizer",
    "schedules",
    "lr_low",
    "lr_high",
    "tolerance",
    "grid_points",
    "widen",
    "seed",
    "confirm",
    "confirm_seeds",
    "precision",
    "accumulate",
    "clip_grad_norm",
    "batch_scaling",
    "rangetest_start_lr",
    "rangetest_end_lr",
    "rangetest_steps",
    "rangetest_seeds",
    "rungs",
    "reduction_factor",
    "horizon_beta",
    "share_trunks",
    "baseline",
    "checkpoint_every",
)
