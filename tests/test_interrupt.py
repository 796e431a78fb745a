"""Ctrl-C is deferred to a safe point while trials run, and a second one stops at once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest

from lrtune import interrupt
from lrtune.training.trainer import TrainConfig, train
from tests.conftest import SLOW_STUDY, signal_when_running, spawn_lrtune, wait_running


def _sigint_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)  # the handler runs at the next bytecode boundary


@pytest.fixture(autouse=True)
def _default_sigint():
    # Whatever the runner set, these tests start from Python's default handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_first_ctrl_c_waits_for_check_second_raises_at_once() -> None:
    with interrupt.deferred_sigint():
        interrupt.check()  # nothing pressed yet
        _sigint_self()  # recorded, not raised here
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):
            _sigint_self()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    interrupt.check()  # the request ends with the block


def test_an_ignored_sigint_stays_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with interrupt.deferred_sigint():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_training_stops_at_the_next_step() -> None:
    steps: list[int] = []

    def on_epoch(epoch: int, value: float) -> None:
        steps.append(epoch)
        if epoch == 1:
            _sigint_self()

    with interrupt.deferred_sigint(), pytest.raises(KeyboardInterrupt):
        train("digits", TrainConfig(lr=0.05, epochs=10), on_epoch=on_epoch)
    assert steps == [0, 1]  # epoch 3's first step raised


@pytest.mark.slow
def test_ctrl_c_to_the_parent_of_local_workers_reaches_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    proc = spawn_lrtune(
        [*SLOW_STUDY, "--storage", url, "--trials", "6", "--workers", "2"], tmp_path
    )
    # to the parent only, as `kill -INT` would, once both workers run a trial
    _out, err = signal_when_running(proc, url, "digits.random.none", signal.SIGINT, want=2)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    states = [
        t.state for t in optuna.load_study(study_name="digits.random.none", storage=url).trials
    ]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 2  # each worker's trial, marked


# --- issue 22 item 9: SIGTERM, local workers with their parent, Ctrl-C in a fit loop ------


def _alive(pid: int) -> bool:
    # A zombie is gone for this purpose (in a container nobody may reap an orphan).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _states(url: str, study: str) -> list[tuple[str, object]]:
    trials = optuna.load_study(study_name=study, storage=url).trials
    return [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials]


@pytest.mark.slow
def test_sigterm_hands_the_trial_of_a_study_back(tmp_path: Path, storage_url: str) -> None:
    """SIGTERM is preemption (SPEC "Checkpoints"): the trial goes back to WAITING, with its
    checkpoint, for the next run to resume; the study exits 0, no FAIL."""
    proc = spawn_lrtune([*SLOW_STUDY, "--storage", storage_url, "--trials", "2"], tmp_path)
    _out, err = signal_when_running(proc, storage_url, "digits.random.none", signal.SIGTERM)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    assert "preempted (SIGTERM)" in err
    assert _states(storage_url, "digits.random.none") == [("WAITING", None)]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_local_workers_stop_with_their_parent(
    tmp_path: Path, signum: int, storage_url: str
) -> None:
    """SIGTERM to `study --workers 2` reaches its workers; SIGKILL of it (nothing passed on)
    too: each worker sees its parent gone. Either way each hands its trial back (WAITING,
    not FAIL: a preemption) and none is left RUNNING."""
    proc = spawn_lrtune(
        [*SLOW_STUDY, "--storage", storage_url, "--trials", "6", "--workers", "2"], tmp_path
    )
    try:
        workers = wait_running(storage_url, "digits.random.none", 2)
        pids = [int(w.rpartition(":")[2]) for w in workers]
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=180)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [p for p in pids if _alive(p)], "the workers outlived their parent"
    if signum == signal.SIGTERM:
        assert proc.returncode == 0, err[-2000:]
        assert "Traceback" not in err
    states = _states(storage_url, "digits.random.none")
    assert states.count(("WAITING", None)) == 2, states
    assert not [s for s in states if s[0] == "RUNNING"], states


SLOW_BUILD = """
import os
import signal
import time


def make(seed):
    steps = os.path.join(os.path.dirname(__file__), "steps.txt")
    for i in range(600):  # imports and data loading: a minute when nothing stops them
        with open(steps, "a") as f:
            f.write(f"{i}\\n")
        if i == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
    raise AssertionError("the signal did not stop the build")
"""


def test_a_signal_while_a_task_is_built_stops_the_build_at_once(tmp_path: Path) -> None:
    """A trial is RUNNING while its task is built: a signal that waited for the first
    training step could outlast the parent's wait for its local workers (issue 22 item 9)."""
    from lrtune.training.loading import resolve_task

    (tmp_path / "slow_build.py").write_text(SLOW_BUILD)
    make = resolve_task(f"{tmp_path / 'slow_build.py'}:make")
    with interrupt.deferred_sigint(), pytest.raises(interrupt.Interrupted) as info:
        make(0)
    assert info.value.signum == signal.SIGTERM
    assert (tmp_path / "steps.txt").read_text().split() == ["0", "1", "2"]


WRAPPED_BUILD = """
import os
import signal
import time


def make(seed):
    try:  # what a C extension's module init does with an exception raised inside it
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    except BaseException as exc:
        raise ImportError("initialization failed") from exc
    raise AssertionError("the signal did not stop the build")
"""


def test_a_signal_that_the_build_turns_into_another_error_still_stops_it(
    tmp_path: Path,
) -> None:
    """A SIGTERM that lands in an extension module's init comes out as ImportError: it is
    still the SIGTERM (preempted), not a factory error (one line, exit 2). A worker that
    reported the ImportError made `study --workers 2` exit 143 instead of 0 in CI."""
    from lrtune.training.loading import resolve_task

    (tmp_path / "wrapped_build.py").write_text(WRAPPED_BUILD)
    make = resolve_task(f"{tmp_path / 'wrapped_build.py'}:make")
    with interrupt.deferred_sigint(), pytest.raises(interrupt.Interrupted) as info:
        make(0)
    assert info.value.signum == signal.SIGTERM
    # Without a signal, the error is the error.
    with (
        interrupt.deferred_sigint(),
        pytest.raises(ValueError, match="no signal"),
        interrupt.immediate(),
    ):
        raise ValueError("no signal")


def _reporting_fit(reports: list[int], *, swallow: bool, count: int = 400) -> object:
    """A task whose own loop reports every 10 ms; ``swallow``: it catches the interrupt and
    returns (as Lightning's graceful shutdown does)."""
    import torch

    from lrtune import Task

    def fit(hp: object, report: object) -> float:
        try:
            for step in range(count):
                time.sleep(0.01)
                reports.append(step)
                report(1.0 / (step + 1), step)  # type: ignore[operator]
                if step == 2:
                    _sigint_self()
        except KeyboardInterrupt:
            if not swallow:
                raise
        return 0.5

    x = torch.zeros(8, 2)
    y = torch.zeros(8, dtype=torch.long)
    return Task(
        torch.nn.Linear(2, 2), (x, y), (x, y), torch.nn.CrossEntropyLoss(), epochs=1, fit=fit
    )


@pytest.mark.parametrize("swallow", [False, True])
def test_ctrl_c_reaches_a_fit_loop_at_its_next_report(swallow: bool) -> None:
    from lrtune.training.trainer import run_trial

    reports: list[int] = []
    task = _reporting_fit(reports, swallow=swallow)
    with interrupt.deferred_sigint(), pytest.raises(KeyboardInterrupt):
        run_trial(task, TrainConfig(lr=0.1, device="cpu"), lambda v, s: None)  # type: ignore[arg-type]
    # Ctrl-C after report 2 stops the loop at report 3; one that swallows it still fails.
    assert reports == [0, 1, 2, 3]


FIT_TASK = """
import time

import torch

from lrtune import Task


def make(seed):
    def fit(hp, report):
        try:
            for step in range(3000):  # 30 s when nothing stops it
                time.sleep(0.01)
                report(1.0 / (step + 1), step)
        except KeyboardInterrupt:
            pass  # a loop that shuts down gracefully, as Lightning does
        return 0.5

    x, y = torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)
    return Task(torch.nn.Linear(2, 2), (x, y), (x, y), torch.nn.CrossEntropyLoss(),
                epochs=1, fit=fit, name="fit")
"""


@pytest.mark.slow
def test_ctrl_c_in_a_fit_study_fails_the_trial_as_the_message_says(
    tmp_path: Path, storage_url: str
) -> None:
    (tmp_path / "fit_task.py").write_text(FIT_TASK)
    args = ["study", "--task", "fit_task.py:make", "--prior", "none", "--samplers", "random",
            "--trials", "2", "--confirm", "0", "--storage", storage_url]  # fmt: skip
    proc = spawn_lrtune(args, tmp_path)
    _out, err = signal_when_running(proc, storage_url, "fit.random.none", signal.SIGINT)
    assert proc.returncode == 130, err[-2000:]
    assert "the running trial is marked failed" in err
    assert _states(storage_url, "fit.random.none") == [("FAIL", "interrupted (Ctrl-C)")]
