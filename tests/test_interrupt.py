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
from tests.conftest import SLOW_STUDY, spawn_lrtune


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
    try:
        deadline = time.monotonic() + 120
        running = 0
        while time.monotonic() < deadline and running < 2:
            time.sleep(0.2)
            try:
                trials = optuna.load_study(study_name="digits.random.none", storage=url).trials
            except KeyError:  # not created yet
                continue
            running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        assert running == 2, "both workers should be running a trial"
        proc.send_signal(signal.SIGINT)  # to the parent only, as `kill -INT` would
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    states = [
        t.state for t in optuna.load_study(study_name="digits.random.none", storage=url).trials
    ]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 2  # each worker's trial, marked
