"""Faults in task code and dead workers: one line, a fail_reason on every FAIL, no hang.

Each test runs the real CLI on a tiny task written to ``tmp_path`` whose model, labels or
metric are broken in one way (or which calls ``sys.exit(3)``): in this process where that
is enough (an interpreter start costs seconds on a busy machine), in a subprocess where a
signal or a hang is the point.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import SLOW_STUDY, run_lrtune, signal_when_running, spawn_lrtune

from lrtune.cli import main

States = optuna.trial.TrialState
FINISHED = (States.COMPLETE, States.PRUNED)

TASKS = """
import sys

import torch
from torch import nn

from lrtune import Task

calls = {"n": 0}


def _task(seed, model=None, y_shift=0, metric=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long() + y_shift
    torch.manual_seed(seed)
    return Task(model or nn.Linear(4, 2), (x, y), (x, y), nn.CrossEntropyLoss(),
                metric=metric, batch_size=16, epochs=1, name="tiny")


class Exits(nn.Linear):
    def forward(self, x):
        sys.exit(3)


class DeviceAssert(nn.Linear):
    def forward(self, x):  # what torch raises after a CUDA kernel's assertion failed
        raise RuntimeError("CUDA error: device-side assert triggered")


class FirstCallFails(nn.Linear):
    def forward(self, x):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("only the first trial breaks")
        return super().forward(x)


def ok(seed):
    return _task(seed)


def shape(seed):
    return _task(seed, model=nn.Linear(5, 2))


def labels(seed):
    return _task(seed, y_shift=5)


def metric(seed):
    def broken(p, t):
        raise ZeroDivisionError("the metric divided by zero")
    return _task(seed, metric=broken)


def exits(seed):
    return _task(seed, model=Exits(4, 2))


def first_fails(seed):
    return _task(seed, model=FirstCallFails(4, 2))


def device_assert(seed):
    return _task(seed, model=DeviceAssert(4, 2))


def no_rows(seed):
    task = _task(seed)
    return Task(task.model, (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), task.val,
                task.loss_fn, batch_size=16, epochs=1, name="tiny")


def no_items(seed):
    task = _task(seed)
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    return Task(task.model, empty, task.val, task.loss_fn, batch_size=16, epochs=1, name="tiny")
"""

#: What each broken task's trials fail with (the start of the exception's first line).
REASONS = {
    "shape": "RuntimeError: mat1 and mat2 shapes cannot be multiplied",
    "labels": "IndexError: Target 5 is out of bounds",
    "metric": "ZeroDivisionError: the metric divided by zero",
    "exits": "SystemExit: the task called sys.exit(3)",
}
TRIALS = ["--prior", "none", "--samplers", "random", "--pruner", "none", "--device", "cpu"]


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    path = tmp_path / "tasks.py"
    path.write_text(TASKS)
    return path


class Ran:
    """Exit code and output of one in-process CLI run."""

    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _main(capfd: pytest.CaptureFixture[str], *args: str) -> Ran:
    capfd.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # what a task's sys.exit did before it was handled
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capfd.readouterr()
    return Ran(code, out, err)


def _error_line(proc: Ran | subprocess.CompletedProcess[str], command: str) -> str:
    """The one line of the error (WARNING lines about failed trials may come before it)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"lrtune {command}: error: "), proc.stderr
    return lines[0]


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def _states(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[Any, ...]]:
    return [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]


# --- errors in task code --------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_a_task_error_fails_each_trial_with_its_reason_and_stops_after_3(
    kind: str, tasks: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = _main(
        capfd, "study", "--task", f"{tasks}:{kind}", "--trials", "5", *TRIALS,
        "--storage", sqlite_url,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc, "study")
    assert line.startswith(f"lrtune study: error: 3 trials failed in a row: {REASONS[kind]}"), line
    trials = _trials(sqlite_url, "tiny.random.none")
    assert [t.state for t in trials] == [States.FAIL] * 3, _states(trials)
    for t in trials:
        assert t.user_attrs["fail_reason"].startswith(REASONS[kind]), _states(trials)


def test_a_cuda_device_side_assert_stops_the_worker_at_its_first_trial(
    tasks: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """A device-side assert leaves the process's CUDA context unusable (every later trial
    would fail at its first kernel, tests/test_cuda.py): the worker stops after that trial,
    in one line saying why and what to do, instead of failing two more."""
    proc = _main(
        capfd, "study", "--task", f"{tasks}:device_assert", "--trials", "5", *TRIALS,
        "--storage", sqlite_url,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc, "study")
    assert "trial 0 failed with a CUDA device-side assert" in line, line
    assert "--device cpu" in line and "unable to use the GPU" in line, line
    trials = _trials(sqlite_url, "tiny.random.none")
    assert [t.state for t in trials] == [States.FAIL], _states(trials)


def test_one_failing_trial_does_not_stop_the_study(
    tasks: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = _main(
        capfd, "study", "--task", f"{tasks}:first_fails", "--trials", "3", *TRIALS,
        "--storage", sqlite_url,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    trials = _trials(sqlite_url, "tiny.random.none")
    assert [t.state for t in trials] == [States.FAIL] + [States.COMPLETE] * 3, _states(trials)
    assert trials[0].user_attrs["fail_reason"] == "ValueError: only the first trial breaks"
    assert all("fail_reason" not in t.user_attrs for t in trials[1:])


@pytest.mark.parametrize("kind", ["shape", "labels", "exits"])
def test_rangetest_task_error_is_one_line_and_writes_nothing(
    kind: str, tasks: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rt.json"
    proc = _main(
        capfd, "rangetest", "--task", f"{tasks}:{kind}", "--steps", "20", "--seeds", "1",
        "--json", str(out), "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc, "rangetest")
    assert line.startswith(
        f"lrtune rangetest: error: range test on {tasks}:{kind}: {REASONS[kind]}"
    ), line
    assert proc.stdout == ""
    assert not out.exists()


def test_rangetest_metric_error_is_one_line(tasks: Path, capfd: pytest.CaptureFixture[str]) -> None:
    proc = _main(
        capfd, "rangetest", "--task", f"{tasks}:metric", "--steps", "20", "--seeds", "1",
        "--track-metric", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert REASONS["metric"] in _error_line(proc, "rangetest")


@pytest.mark.parametrize("kind", ["shape", "exits"])
def test_study_range_test_task_error_is_one_line_and_creates_no_study(
    kind: str, tasks: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    proc = _main(
        capfd, "study", "--task", f"{tasks}:{kind}", "--prior", "rangetest",
        "--samplers", "random", "--trials", "2", "--device", "cpu", "--storage", sqlite_url,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    line = _error_line(proc, "study")
    assert line.startswith(f"lrtune study: error: range test on {tasks}:{kind}: {REASONS[kind]}")
    db = Path(sqlite_url.removeprefix("sqlite:///"))
    if db.exists():
        storage = optuna.storages.RDBStorage(sqlite_url)
        assert optuna.get_all_study_names(storage) == []
        storage.engine.dispose()


def test_sys_exit_while_building_the_task_is_one_line(
    tmp_path: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "quits.py"
    path.write_text("import sys\n\ndef make(seed):\n    sys.exit(3)\n")
    for command in (["rangetest", "--steps", "20"], ["study", *TRIALS, "--storage", sqlite_url]):
        proc = _main(capfd, *command, "--task", f"{path}:make")
        assert proc.returncode == 2, proc.stderr
        assert "SystemExit: the task called sys.exit(3)" in _error_line(proc, command[0])


EMPTY_CASES = """
import sys

import torch
from torch import nn

import lrtune
from lrtune.cli import main
from lrtune.training.data import Batches

tasks, url = sys.argv[1], sys.argv[2]
for kind in ("no_rows", "no_items"):
    print("rangetest", kind, main(["rangetest", "--task", f"{tasks}:{kind}", "--steps", "20"]))
    print("study", kind, main(["study", "--task", f"{tasks}:{kind}", "--storage", url,
                               "--prior", "rangetest", "--samplers", "random", "--trials", "1"]))
x = torch.randn(8, 4)
val = (x, torch.zeros(8, dtype=torch.long))
task = lrtune.Task(nn.Linear(4, 2), (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)), val,
                   nn.CrossEntropyLoss())
try:
    lrtune.range_test(task, steps=20, seeds=1, device="cpu")
except lrtune.errors.UserError as exc:
    print("api", exc)


class EmptiesLater:  # batches on its first pass only: the stream must not spin on the next
    def __init__(self):
        self.passes = 0

    def __iter__(self):
        self.passes += 1
        return iter([val] if self.passes == 1 else [])


stream = Batches(EmptiesLater(), 8, torch.device("cpu"), "train").endless(None)
next(stream)
try:
    next(stream)
except lrtune.errors.UserError as exc:
    print("endless", exc)
"""


@pytest.mark.slow
def test_empty_training_data_is_one_line_never_an_endless_range_test(
    tasks: Path, tmp_path: Path
) -> None:
    """Zero training rows (a tensor pair, a Dataset) made the range test's endless stream
    repeat an empty epoch for ever: the range test, ``study`` with the prior and the API
    hung. Each is one line now, exit 2, with nothing written."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    script = tmp_path / "empty_cases.py"
    script.write_text(EMPTY_CASES)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), str(tasks), url],
            env=dict(os.environ, OMP_NUM_THREADS="1"),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the range test on empty training data never ended")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    for command in ("rangetest", "study"):
        for kind in ("no_rows", "no_items"):
            assert f"{command} {kind} 2" in proc.stdout.splitlines(), proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ": error: " in ln]
    assert len(errors) == 4, proc.stderr
    assert all("train has 0 rows" in ln for ln in errors), proc.stderr
    assert "api train has 0 rows" in proc.stdout
    assert "endless train has 0 batches" in proc.stdout
    assert not (tmp_path / "empty.db").exists()


# --- Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_marks_the_trial_interrupted(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'int.db'}"
    proc = spawn_lrtune([*SLOW_STUDY, "--storage", url, "--trials", "2"], tmp_path)
    _out, err = signal_when_running(proc, url, "digits.random.none", signal.SIGINT)
    assert proc.returncode == 130, err
    failed = [t for t in _trials(url, "digits.random.none") if t.state == States.FAIL]
    assert len(failed) == 1, err
    assert failed[0].user_attrs.get("fail_reason") == "interrupted (Ctrl-C)"


# --- a trial whose worker died --------------------------------------------------------------


def _orphans_then_worker(url: str, tasks: Path) -> None:
    """Create a group and leave two RUNNING trials as workers killed right after creating
    them would: one before its first heartbeat, one after. Then a worker must fail both
    with a reason, retry them, and finish exactly the budget, in bounded time."""
    created = main(
        ["study", "--task", f"{tasks}:ok", "--trials", "3", *TRIALS, "--storage", url,
         "--create-only"]
    )  # fmt: skip
    assert created == 0
    name = "tiny.random.none"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    orphans = [study.ask(), study.ask()]
    for orphan in orphans:
        orphan.suggest_float("lr", 1e-3, 1e-1, log=True)
    storage.record_heartbeat(orphans[1]._trial_id)
    storage.engine.dispose()
    hb = ["--heartbeat-interval", "1", "--grace-period", "2"]
    try:
        worker = ["worker", "--group", "tiny", "--storage", url, *hb]
        proc = run_lrtune(worker, tasks.parent, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker hung on a dead trial: {_states(_trials(url, name))}")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    trials = _trials(url, name)
    assert sum(t.state in FINISHED for t in trials) == 3, _states(trials)
    assert not [t for t in trials if t.state in (States.RUNNING, States.WAITING)]
    reasons = ["worker died: no heartbeat at all", "worker died: no heartbeat for"]
    for orphan, expected in zip(orphans, reasons, strict=True):
        dead = trials[orphan.number]
        assert dead.state == States.FAIL
        assert dead.user_attrs["fail_reason"].startswith(expected), _states(trials)
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == orphan.number]
        assert len(retries) == 1 and retries[0].state in FINISHED, _states(trials)
        assert retries[0].params["lr"] == dead.params["lr"]
        assert "fail_reason" not in retries[0].user_attrs


@pytest.mark.slow
def test_dead_trials_are_retried_on_sqlite(tasks: Path, sqlite_url: str) -> None:
    _orphans_then_worker(sqlite_url, tasks)


@pytest.mark.postgres
@pytest.mark.slow
def test_dead_trials_are_retried_on_postgres(tasks: Path, pg_url: str) -> None:
    _orphans_then_worker(pg_url, tasks)


@pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")
def test_only_lrtune_fails_a_stale_trial_and_it_records_why(sqlite_url: str) -> None:
    """Optuna fails stale trials at the start of each trial, without a reason; a trial
    going stale between that check and lrtune's would then lose its ``fail_reason``. Only
    lrtune's check may fail it (the race CI once hit, made certain here)."""
    import warnings

    from lrtune.faults import StaleWatch
    from lrtune.storage import open_storage

    storage = open_storage(sqlite_url, create=True, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1e-1, log=True)
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # the heartbeat is now older than the grace period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # what Optuna runs before each trial
    assert study.trials[0].state == States.RUNNING
    assert StaleWatch(1, 1).fail_stale(study) == [0]
    dead, retry = study.trials
    assert dead.state == States.FAIL
    assert dead.user_attrs["fail_reason"].startswith("worker died: no heartbeat for")
    assert retry.state == States.WAITING and retry.params == dead.params


def test_describe_is_one_short_line() -> None:
    from lrtune.errors import UserError
    from lrtune.faults import MAX_REASON, describe

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert describe(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert describe(KeyError()) == "KeyError"
    assert describe(BadStr()) == "BadStr"
    assert describe(SystemExit(3)) == "SystemExit: the task called sys.exit(3)"
    assert describe(UserError("task t: oops")) == "task t: oops"
    long = describe(RuntimeError("x" * 5000))
    assert len(long) <= len("RuntimeError: ") + MAX_REASON and "\n" not in long
    assert describe(RuntimeError("postgresql://u:secret@h/db down")).count("secret") == 0


def test_a_cuda_device_side_assert_says_where_its_cause_is() -> None:
    """CUDA reports a failed kernel assertion (a label out of range, an index out of bounds)
    as a bare 'device-side assert triggered': the line says where the cause is
    (tests/test_cuda.py shows it on a GPU)."""
    from lrtune.faults import DEVICE_ASSERT_HINT, describe

    error = RuntimeError(
        "CUDA error: device-side assert triggered\nCUDA kernel errors might be asynchronously "
        "reported at some other API call"
    )
    line = describe(error)
    assert line == f"RuntimeError: CUDA error: device-side assert triggered ({DEVICE_ASSERT_HINT})"
    assert "--device cpu" in line
