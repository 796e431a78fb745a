"""`lrtune study`: studies per sampler × prior, budgets, resume, Ctrl-C, bad specs."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from tests.conftest import REPO, SLOW_STUDY, run_lrtune, signal_when_running, spawn_lrtune

FAST = ["--epochs", "2", "--seed", "0"]


def _study(url: str, *args: str) -> int:
    return main(["study", "--storage", url, *FAST, *args])


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _finished(url: str, name: str) -> int:
    return sum(
        t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        for t in _trials(url, name)
    )


def _lr_decades(url: str, names: list[str]) -> float:
    lrs = [t.params["lr"] for n in names for t in _trials(url, n) if "lr" in t.params]
    return math.log10(max(lrs) / min(lrs))


SIX = [f"digits.{s}.{p}" for p in ("rangetest", "none") for s in ("grid", "random", "tpe")]


@pytest.mark.slow
def test_six_studies_compare_and_resume(sqlite_url: str, capsys: pytest.CaptureFixture[str]):
    args = ["--prior", "rangetest,none", "--samplers", "grid,random,tpe", "--trials", "6"]
    assert _study(sqlite_url, *args) == 0
    out = capsys.readouterr().out
    names = optuna.get_all_study_names(sqlite_url)
    assert sorted(names) == sorted([*SIX, "digits.confirm"])  # --confirm 3 by default
    for name in SIX:
        assert name in out  # the comparison table lists every study
        assert _finished(sqlite_url, name) == 6
    assert "winner (*)" in out and "lrtune export --study digits." in out
    # The prior narrows the LRs tried: 2 decades of bounds against 7.
    prior = _lr_decades(sqlite_url, [n for n in SIX if n.endswith(".rangetest")])
    wide = _lr_decades(sqlite_url, [n for n in SIX if n.endswith(".none")])
    assert prior <= 2.0 + 1e-9 < wide
    study = optuna.load_study(study_name="digits.tpe.rangetest", storage=sqlite_url)
    low, high = study.user_attrs["bounds"]
    assert all(low <= t.params["lr"] <= high for t in study.trials if "lr" in t.params)
    assert study.user_attrs["rangetest"]["diagnosis"] == "ok"
    assert study.user_attrs["comparison"]["group"] == "digits"

    # Running the same command again resumes: every study stays at exactly 6.
    assert _study(sqlite_url, *args) == 0
    assert all(_finished(sqlite_url, n) == 6 for n in SIX)
    # ... and asking for 8 continues each study to 8, not 6 + 8.
    assert _study(sqlite_url, *args[:-1], "8") == 0
    assert all(_finished(sqlite_url, n) == 8 for n in SIX)


def test_changed_spec_is_refused(sqlite_url: str, capsys: pytest.CaptureFixture[str]):
    assert _study(sqlite_url, "--prior", "none", "--samplers", "random", "--trials", "1") == 0
    capsys.readouterr()
    code = _study(
        sqlite_url, "--prior", "none", "--samplers", "random", "--trials", "1", "--lr-high", "1"
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "different lr_high" in err[0] and "--group" in err[0]


@pytest.mark.slow
def test_user_task_by_path_end_to_end(
    sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(REPO)
    code = main(
        [
            "study",
            "--storage",
            sqlite_url,
            "--task",
            "studies/my_task.py:make",
            "--prior",
            "rangetest",
            "--samplers",
            "random",
            "--trials",
            "2",
            "--epochs",
            "1",
            "--schedules",
            "cosine,onecycle",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "my-task.random.rangetest" in out and "best accuracy" in out
    assert _finished(sqlite_url, "my-task.random.rangetest") == 2
    best = optuna.load_study(study_name="my-task.random.rangetest", storage=sqlite_url)
    assert best.direction == optuna.study.StudyDirection.MAXIMIZE
    assert 0.0 <= best.best_value <= 1.0


def test_diverging_lr_is_a_pruned_trial_with_reason(sqlite_url: str):
    code = _study(
        sqlite_url,
        "--prior",
        "none",
        "--samplers",
        "random",
        "--trials",
        "3",
        "--lr-low",
        "20",
        "--lr-high",
        "100",
        "--schedules",
        "constant",
        "--pruner",
        "none",
    )
    assert code == 0
    trials = _trials(sqlite_url, "digits.random.none")
    assert len(trials) == 3
    for t in trials:
        assert t.state == optuna.trial.TrialState.PRUNED
        assert t.user_attrs["diverged"] is True
        reason = t.user_attrs["prune_reason"]
        assert reason.startswith("diverged: ")
        assert any(w in reason for w in ("non-finite", "exploded", "smoothed training loss"))


@pytest.mark.slow
def test_sigint_then_rerun_completes_the_budget(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'int.db'}"
    args = [*SLOW_STUDY, "--storage", url, "--trials", "3", "--lr-low", "0.01", "--lr-high", "0.1"]
    proc = spawn_lrtune(args, tmp_path)
    _out, err = signal_when_running(proc, url, "digits.random.none", signal.SIGINT)
    assert proc.returncode == 130, (_out[-1500:], err[-1500:])
    assert "Traceback" not in err and "run the same command again" in err
    states = [t.state for t in _trials(url, "digits.random.none")]
    assert optuna.trial.TrialState.RUNNING not in states
    assert optuna.trial.TrialState.FAIL in states  # the interrupted trial, marked

    rerun = run_lrtune(args, tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    trials = _trials(url, "digits.random.none")
    assert _finished(url, "digits.random.none") == 3
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)


def test_grid_points_end_exactly_on_the_bounds() -> None:
    import warnings

    from lrtune.search.samplers import make_sampler
    from lrtune.search.space import grid_space, suggest
    from lrtune.search.spec import StudySpec

    # Bounds from a real range test whose 10**log10(low) came out an ulp above low, so
    # Optuna warned "out of range of the parameter `lr`" on the first grid point.
    bounds = (0.02958832174660958, 0.9862773915536527)
    spec = StudySpec(schedules=("cosine",), samplers=("grid",), trials=6)
    grid = grid_space(spec, bounds)
    assert grid["lr"][0] == bounds[0] and grid["lr"][-1] == bounds[1]
    study = optuna.create_study(sampler=make_sampler("grid", seed=0, budget=6, grid=grid))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.optimize(lambda t: suggest(t, spec, bounds)[0], n_trials=len(grid["lr"]))
    assert sorted(t.params["lr"] for t in study.trials) == sorted(grid["lr"])


SLOW_TASK = """
import torch
from torch import nn

from lrtune import Task


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x):
        return 0.03 * self.lin(x)  # the effective LR is 1e-3 x lr: no divergence by lr=10


def make(seed):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [1.5]])
    torch.manual_seed(seed)
    return Task(model=Scaled(), train=(x, y), val=(x, y), loss_fn=nn.MSELoss(),
                batch_size=64, epochs=1, name="slow")
"""


@pytest.mark.slow
def test_study_warns_in_one_line_when_the_range_test_is_not_ok(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "slow.py"
    task.write_text(SLOW_TASK)
    spec = tmp_path / "spec.toml"
    spec.write_text("rangetest_seeds = 1\nrangetest_steps = 40\n")
    args = ["--spec", str(spec), "--task", f"{task}:make", "--samplers", "random"]
    args += ["--trials", "1", "--pruner", "none"]
    assert _study(sqlite_url, *args) == 0  # it goes on
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1
    assert err[0].startswith("lrtune study: warning: range test diagnosis is 'never diverged")
    study = optuna.load_study(study_name="slow.random.rangetest", storage=sqlite_url)
    assert len(study.trials) == 1


@pytest.mark.slow
def test_study_does_not_warn_when_the_range_test_is_ok(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _study(sqlite_url, "--samplers", "random", "--trials", "1") == 0
    assert "warning" not in capsys.readouterr().err
