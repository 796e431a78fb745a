"""Multi-fidelity search end to end (issue 16's acceptance): ``study --rungs 1,3,9
--reduction-factor 3`` on SQLite (killed mid-trial, then resumed) and with two ``worker``
processes on PostgreSQL (one killed inside a rung trial, the other retries it; then the same
``study`` command resumes, and goes on with a larger budget); a ``fit`` task and the
Lightning adapter with rungs. (The warning for a ``fit`` that ignores ``hp.epochs`` is with the
other mistakes, in tests/test_bad_inputs.py.)

:func:`check_ladder` reads a finished study back and checks what the design promises: each
trial trained exactly its rung's epochs with the schedule compressed to them (its last LR is
the schedule's final LR), promotions are the top 1/η by value (or, at the end of the budget,
the best not yet promoted) of the trials of the rung below that had finished when it was
enqueued, no configuration trained twice on one rung, and the compute is the budget, over it
by less than one full trial.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import REPO, spawn_lrtune

from lrtune.cli import main
from lrtune.schedules import schedule_lr
from lrtune.search.ladder import Ladder, compute
from lrtune.search.states import FINISHED

States = optuna.trial.TrialState

#: A task slow enough (about 0.2 s an epoch) to be killed inside a rung trial: 8 updates
#: an epoch, each sleeping 20 ms.
SLOW_TASK = """
import time
import torch
from torch import nn
from lrtune import Task


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        if self.training:  # slow enough that a promoted trial is seen RUNNING on a busy machine
            time.sleep(0.08)
        return self.lin(x)


def make(seed):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    return Task(model=Slow(), train=(x, y), val=(x, y), loss_fn=nn.functional.cross_entropy,
                batch_size=16, epochs=9, name="slow")
"""

RUNGS = ("--rungs", "1,3,9", "--reduction-factor", "3", "--epochs", "9")


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def _origin(trial: optuna.trial.FrozenTrial) -> int:
    """The number a trial was first enqueued or started with (a retry keeps its first's)."""
    return int(trial.system_attrs.get("failed_trial", trial.number))


def check_ladder(
    trials: list[optuna.trial.FrozenTrial],
    *,
    budget: float,
    rungs: tuple[int, ...] = (1, 3, 9),
    eta: int = 3,
    sequential: bool = True,
    lrtune_loop: bool = True,
    beta: float = 0.0,
) -> None:
    """The promises of a study with rungs, read from its trials (see the module doc).

    ``sequential``: one worker at a time, so every trial numbered before a promotion had
    finished when it was enqueued. With several workers, those that had finished are the
    first ``of`` (the promotion's record) of them to complete: the top 1/η is recomputed
    from them (the budget rule's compute check needs the sequential case).
    """
    ladder = Ladder(rungs=rungs, eta=eta, budget=budget, beta=beta)
    by_number = {t.number: t for t in trials}
    trained = [t for t in trials if t.state in FINISHED]
    assert trained
    per_epoch: set[int] = set()
    for t in trained:
        rung = t.user_attrs["rung"]
        epochs = rungs[rung]
        config = t.user_attrs["config"]
        assert t.user_attrs["epochs"] == epochs and config["epochs"] == epochs
        if t.state != States.COMPLETE:
            continue
        # Trained exactly its epochs: one report each.
        assert sorted(t.intermediate_values) == list(range(epochs)), t.number
        if not lrtune_loop:
            continue
        total = config["total_steps"]
        assert total % epochs == 0
        per_epoch.add(total // epochs)
        # The whole schedule compressed to the rung: the last update's LR is the final LR.
        schedule = dict(config["schedule"])
        name = schedule.pop("name")
        lr = config["optimizer"]["lr"]
        final = schedule_lr(name, total - 1, total, lr, **schedule)
        assert t.user_attrs["final_lr"] == pytest.approx(final, rel=1e-9), t.number
        if name == "cosine":  # annealed: a truncated 1-of-9-epoch run would be at 0.98 lr
            assert t.user_attrs["final_lr"] < 0.05 * lr
    assert len(per_epoch) <= 1  # every rung trains the same steps per epoch
    # Promotions: from the rung below, the same configuration, by their rule.
    promoted = [t for t in trials if "promotion" in t.user_attrs]
    assert promoted, "no configuration was promoted"
    held: set[tuple[int, int]] = set()
    for t in sorted(promoted, key=_origin):
        record = t.user_attrs["promotion"]
        source = by_number[record["from"]]
        rung = t.user_attrs["rung"]
        assert source.user_attrs["rung"] == rung - 1 and source.state == States.COMPLETE
        if t.state in FINISHED:  # the same configuration (its LR corrected with a beta)
            assert t.params == pytest.approx(ladder.carry(source.params, rung - 1))
            assert t.user_attrs["config"]["optimizer"]["lr"] == pytest.approx(t.params["lr"])
        reason = str(t.user_attrs.get("fail_reason", ""))
        if t.state != States.FAIL:
            assert (rung, source.number) not in held, f"trial {t.number} trained twice"
            held.add((rung, source.number))
        elif reason.startswith("surplus"):
            continue
        if record["rule"] == "top":
            assert record["rank"] <= record["of"] // eta
        # Sequential: everything numbered before it had finished when it was enqueued.
        below = [
            s
            for s in trials
            if s.state in FINISHED and s.user_attrs["rung"] == rung - 1 and s.number < _origin(t)
        ]
        if not sequential:  # the first `of` of them to finish had finished
            below = sorted(below, key=lambda s: s.datetime_complete)[: record["of"]]
        ranked = sorted(
            below,
            key=lambda s: (s.state != States.COMPLETE, float(s.value or 0.0), s.number),  # minimize
        )
        assert record["of"] == len(ranked) and ranked[record["rank"] - 1] is source
        if record["rule"] == "top":
            assert source in ranked[: len(ranked) // eta]
        else:  # the end of the budget: the best of the rung not promoted before it
            earlier = {
                p.user_attrs["promotion"]["from"]
                for p in promoted
                if p.user_attrs["rung"] == rung
                and _origin(p) < _origin(t)
                and not str(p.user_attrs.get("fail_reason", "")).startswith("surplus")
            }
            assert ranked[0] is source or all(
                s.number in earlier for s in ranked[: record["rank"] - 1]
            )
            if not sequential:
                continue
            assert ladder.budget - sum(
                compute(s, ladder) for s in trials if s.number < _origin(t) and s.state in FINISHED
            ) < ladder.climb(-1)
    # Compute is the budget: reached, and passed by less than one full trial.
    spent = sum(compute(t, ladder) for t in trained)
    assert budget <= spent < budget + 1, spent
    assert [t for t in trained if t.user_attrs["rung"] == ladder.top]


def _export(url: str, study: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "best.yaml"
    assert main(["export", "--study", study, "--storage", url, "--out", str(out)]) == 0
    return dict(yaml.safe_load(out.read_text()))


def _exported_from_top(url: str, study: str, tmp_path: Path) -> None:
    trials = _trials(url, study)
    exported = _export(url, study, tmp_path)
    source = next(t for t in trials if t.number == exported["source"]["trial"])
    top = [t for t in trials if t.state == States.COMPLETE and t.user_attrs["rung"] == 2]
    assert source.user_attrs["rung"] == 2
    assert source.value == min(float(t.value or 0.0) for t in top)
    assert exported["source"]["epochs"] == 9
    # Shorter runs reached lower values than some top-rung ones: the export ignores them.
    assert exported["optimizer"]["lr"] == source.params["lr"]


def _running_promotion(
    url: str, name: str, procs: list[subprocess.Popen[str]]
) -> optuna.trial.FrozenTrial:
    """Wait (at most 5 minutes) for a promoted trial (rung 2 or 3) that is training."""
    deadline = time.monotonic() + 300
    study = None  # one storage for the whole wait: opening one per poll is slower than a trial
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        try:
            study = study or optuna.load_study(study_name=name, storage=url)
            trials = study.get_trials(deepcopy=False)
        except Exception:  # the study is not there yet
            trials = []
        for t in trials:
            # Every param suggested: a kill between two suggestions leaves the dead trial a
            # part of its configuration, which its retry (given the whole) would not equal.
            promoted = t.user_attrs.get("rung", 0) >= 1 and "schedule" in t.params
            if t.state == States.RUNNING and promoted:
                return t
        time.sleep(0.05)
    raise AssertionError("no promoted trial ran")


def _check_retried(trials: list[optuna.trial.FrozenTrial], victim: int) -> None:
    """The killed trial was failed by heartbeat and retried once, on its rung, with its
    configuration and its promotion record."""
    dead = next(t for t in trials if t.number == victim)
    assert dead.state == States.FAIL
    assert dead.user_attrs["fail_reason"].startswith("worker died")
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert retry.state in FINISHED and retry.params == dead.params
    assert retry.user_attrs["rung"] == dead.user_attrs["rung"]
    assert retry.user_attrs["promotion"] == dead.user_attrs["promotion"]


@pytest.mark.slow
def test_rungs_on_sqlite_survive_a_kill_and_resume_the_same_ladder(tmp_path: Path) -> None:
    task = tmp_path / "slow_task.py"
    task.write_text(SLOW_TASK)
    url = f"sqlite:///{tmp_path / 'rungs.db'}"
    command = [
        *("study", "--task", f"{task}:make", "--prior", "none", "--samplers", "tpe"),
        *RUNGS,
        *("--trials", "3", "--confirm", "0", "--device", "cpu", "--storage", url),
        *("--lr-low", "0.01", "--lr-high", "1", "--schedules", "cosine,wsd,constant,onecycle"),
        *("--heartbeat-interval", "1", "--grace-period", "2"),
    ]
    name = "slow.tpe.none"
    proc = spawn_lrtune(command, tmp_path)
    try:
        # Kill the process inside a promoted trial (rung 2 or 3) that is training.
        victim = _running_promotion(url, name, [proc])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    before = {t.number for t in _trials(url, name)}
    # Re-running the same command continues the same ladder.
    assert main(command) == 0
    trials = _trials(url, name)
    _check_retried(trials, victim.number)
    # The second run continued the first one's ladder: each of its promotions ranked the
    # first run's finished trials of the rung below with its own (whether one of them is
    # promoted again is up to their values: no assertion on that).
    first = [t for t in trials if t.number in before and t.state in FINISHED]
    later = [
        t
        for t in trials
        if "promotion" in t.user_attrs
        and t.number not in before
        and t.system_attrs.get("failed_trial") is None
    ]
    assert later
    for t in later:
        below = [s for s in first if s.user_attrs["rung"] == t.user_attrs["rung"] - 1]
        assert t.user_attrs["promotion"]["of"] >= len(below), t.number
    check_ladder(trials, budget=3)
    _exported_from_top(url, name, tmp_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_rungs_on_postgresql_survive_a_killed_worker_and_resume(
    pg_url: str, tmp_path: Path
) -> None:
    task = tmp_path / "slow_task.py"
    task.write_text(SLOW_TASK)
    heartbeat = ("--heartbeat-interval", "1", "--grace-period", "2")
    command = [
        *("study", "--task", f"{task}:make", "--prior", "none", "--samplers", "tpe"),
        *RUNGS,
        *("--trials", "3", "--confirm", "0", "--device", "cpu", "--storage", pg_url),
        *("--lr-low", "0.01", "--lr-high", "1", "--schedules", "cosine,wsd,constant,onecycle"),
        *heartbeat,
    ]
    name = "slow.tpe.none"
    # Remote workers: the study is created, then two `lrtune worker` processes join it.
    assert main([*command, "--create-only"]) == 0
    worker = ["worker", "--group", "slow", "--storage", pg_url, "--device", "cpu", *heartbeat]
    procs = [spawn_lrtune(worker, tmp_path) for _ in range(2)]
    try:
        victim = _running_promotion(pg_url, name, procs)
        pid = int(str(victim.user_attrs["worker"]).rsplit(":", 1)[1])
        (killed,) = [p for p in procs if p.pid == pid]
        (survivor,) = [p for p in procs if p is not killed]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        # The other worker fails the dead trial by heartbeat, retries it and ends the ladder.
        _, err = survivor.communicate(timeout=180)
        assert survivor.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    trials = _trials(pg_url, name)
    _check_retried(trials, victim.number)
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == victim.number)
    # Both workers trained: the victim's trial ran on one, its retry on the other.
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]
    check_ladder(trials, budget=3, sequential=False)
    # Resume: the same command finds the ladder done and trains nothing more.
    assert main(command) == 0
    assert len(_trials(pg_url, name)) == len(trials)
    # More budget: the same ladder goes on (promotions of configurations found before).
    at = command.index("--trials") + 1
    assert main([*command[:at], "4", *command[at + 1 :]]) == 0
    more = _trials(pg_url, name)
    assert any(
        t.number >= len(trials) and t.user_attrs["promotion"]["from"] < len(trials)
        for t in more
        if "promotion" in t.user_attrs
    )
    check_ladder(more, budget=4, sequential=False)
    _exported_from_top(pg_url, name, tmp_path)
    # Nothing is left waiting or running.
    assert not [t for t in more if t.state in (States.RUNNING, States.WAITING)]


def _example(url: str, spec: str, *args: str) -> int:
    return main(
        ["study", "--spec", spec, "--storage", url, "--prior", "none", "--samplers", "tpe",
         "--confirm", "0", "--rungs", "1,2,4", "--epochs", "4", "--trials", "2", *args]
    )  # fmt: skip


@pytest.mark.slow
def test_the_fit_example_runs_with_rungs(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(REPO)
    # With a horizon correction: a promotion from E to 2E epochs trains at lr / sqrt(2).
    assert _example(sqlite_url, "studies/own-loop.toml", "--horizon-beta", "0.5") == 0
    trials = _trials(sqlite_url, "own-loop.tpe.none")
    check_ladder(trials, budget=2, rungs=(1, 2, 4), lrtune_loop=False, beta=0.5)
    assert all(
        t.user_attrs["promotion"]["beta"] == 0.5 for t in trials if "promotion" in t.user_attrs
    )
    for t in trials:
        if t.state == States.COMPLETE:
            # hp.epochs: the fit's own loop trained the rung's epochs, 22 updates each.
            assert t.user_attrs["config"]["total_steps"] == 22 * t.user_attrs["epochs"]
    assert "ignores hp.epochs" not in caplog.text


@pytest.mark.slow
def test_the_lightning_example_runs_with_rungs(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytorch_lightning")
    monkeypatch.chdir(REPO)
    assert _example(sqlite_url, "studies/lightning.toml") == 0
    trials = _trials(sqlite_url, "lightning-digits.tpe.none")
    check_ladder(trials, budget=2, rungs=(1, 2, 4), lrtune_loop=False)
