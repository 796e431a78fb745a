"""Checkpoints (SPEC "Checkpoints", issue 17): a trial killed or preempted mid-run resumes
from its checkpoint on the next worker, and ends with the value of an uninterrupted run."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import REPO, own_loop_source
from optuna.artifacts import FileSystemArtifactStore

from lrtune.storage import open_storage
from lrtune.training.checkpoint import CHECKPOINT_ATTR, RESUMED_ATTR, Checkpoints
from lrtune.training.trainer import TrainConfig, run_trial, train

#: A task slow enough to be stopped mid-trial: 8 batches an epoch, each sleeping
#: $SLOW_DELAY seconds (0 by default: the reference run in this process is fast). Dropout
#: and shuffling make the resumed run's RNG streams matter.
SLOW_TASK = """
import os
import time

import torch

from lrtune import Task


def make(seed: int) -> Task:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(256, 8, generator=g)
    y = (x.sum(1) > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )
    delay = float(os.environ.get("SLOW_DELAY", "0"))

    def step_loss(model, batch):
        time.sleep(delay)
        return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])

    return Task(
        model=model,
        train=(x, y),
        val=(x[:64], y[:64]),
        loss_fn=torch.nn.functional.cross_entropy,
        batch_size=32,
        epochs=5,
        step_loss=step_loss,
        optimizer="adam",
    )
"""

#: The same data and model trained by a task's own ``fit`` loop, resuming through
#: ``hp.restore()`` / ``hp.checkpoint(state)``.
SLOW_FIT_TASK = """
import os
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from lrtune import Task

g = torch.Generator().manual_seed(1234)
X = torch.randn(256, 8, generator=g)
Y = (X.sum(1) > 0).long()


def net():
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )


def fit(hp, report):
    delay = float(os.environ.get("SLOW_DELAY", "0"))
    torch.manual_seed(hp.seed)
    model = net()
    train = DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True)
    optimizer = hp.build_optimizer(model.parameters())
    scheduler = hp.build_scheduler(optimizer, hp.epochs * len(train))
    start, value = 0, float("nan")
    state = hp.restore()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"]
    for epoch in range(start, hp.epochs):
        model.train()
        for x, y in train:
            time.sleep(delay)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            value = float(torch.nn.functional.cross_entropy(model(X[:64]), Y[:64]))
        report(value, epoch)
        hp.checkpoint({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "epoch": epoch + 1,
        })
    return value


def make(seed):
    torch.manual_seed(seed)
    return Task(model=net(), train=(X, Y), val=(X[:64], Y[:64]),
                loss_fn=torch.nn.functional.cross_entropy, batch_size=32, epochs=5, fit=fit)
"""

#: The same as a pytorch-lightning module (lrtune.lightning), resuming with ``ckpt_path``.
SLOW_LIGHTNING_TASK = """
import os
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lrtune.lightning import lightning_task

g = torch.Generator().manual_seed(1234)
X = torch.randn(256, 8, generator=g)
Y = (X.sum(1) > 0).long()


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2)
        )

    def training_step(self, batch, batch_idx):
        time.sleep(float(os.environ.get("SLOW_DELAY", "0")))
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))


make = lightning_task(
    Net,
    DataLoader(TensorDataset(X, Y), batch_size=32, shuffle=True),
    DataLoader(TensorDataset(X[:64], Y[:64]), batch_size=64),
    epochs=5,
    name="slow-lightning",
)
"""

STUDY = "g.random.none"
BEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]


@pytest.fixture
def slow_task(tmp_path: Path) -> str:
    path = tmp_path / "slow.py"
    path.write_text(SLOW_TASK)
    return f"{path}:make"


@pytest.fixture(params=["fit", "lightning"])
def own_loop_task(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A task with its own loop: a ``fit`` task, and a Lightning one (lrtune.lightning)."""
    if request.param == "lightning":
        pytest.importorskip("pytorch_lightning")
    path = tmp_path / f"slow_{request.param}.py"
    path.write_text(SLOW_FIT_TASK if request.param == "fit" else SLOW_LIGHTNING_TASK)
    return f"{path}:make"


def _lrtune(args: list[str], cwd: Path, delay: float = 0.0) -> subprocess.Popen[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", SLOW_DELAY=str(delay))
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _create(task: str, url: str, cwd: Path) -> None:
    args = ["study", "--task", task, "--storage", url, "--group", "g", "--prior", "none"]
    args += ["--samplers", "random", "--trials", "1", "--confirm", "0", "--create-only"]
    # LR bounds well below divergence: a sampled LR that diverges ends the trial early (pruned)
    # and leaves no window to stop it in.
    args += [
        "--checkpoint-every",
        "1",
        "--schedules",
        "cosine",
        "--lr-low",
        "0.001",
        "--lr-high",
        "0.01",
    ]
    proc = _lrtune(args, cwd)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def _wait_checkpoint(url: str, proc: subprocess.Popen[str], epoch: int) -> dict[str, Any]:
    """The running trial's checkpoint attr once it has ``epoch`` epochs or more."""
    storage = open_storage(url)  # no table creation: it would wait on the worker's locks
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        study = optuna.load_study(study_name=STUDY, storage=storage)
        for trial in study.get_trials(deepcopy=False):
            named = trial.user_attrs.get(CHECKPOINT_ATTR)
            if named and named.get("epoch", -1) >= epoch:  # not a save under way
                return dict(named)
        time.sleep(0.05)
    raise AssertionError("no checkpoint written")


def _reference(task: str, trial: optuna.trial.FrozenTrial) -> float:
    """The trial's configuration trained uninterrupted, in this process."""
    optimizer = trial.user_attrs["config"]["optimizer"]["name"]
    config = TrainConfig(
        lr=trial.params["lr"], optimizer=optimizer, schedule="cosine", epochs=5, device="cpu"
    )
    return run_trial(task, config, lambda v, s: None).value


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=open_storage(url)).get_trials()


def _killed_in_epoch_3(task: str, url: str, cwd: Path) -> None:
    _create(task, url, cwd)
    first = _lrtune(["worker", "--group", "g", "--storage", url, *BEAT], cwd, delay=0.3)
    named = _wait_checkpoint(url, first, 2)  # two epochs done: the worker is in epoch 3
    first.kill()
    first.communicate()
    second = _lrtune(["worker", "--group", "g", "--storage", url, *BEAT], cwd)
    _out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    trials = _trials(url)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("worker died")
    assert len(done) == 1
    assert done[0].user_attrs[RESUMED_ATTR] == named["epoch"]
    assert sorted(done[0].intermediate_values) == [0, 1, 2, 3, 4]  # the first ones reported again
    assert done[0].value == _reference(task, done[0])
    assert done[0].user_attrs[CHECKPOINT_ATTR] is None  # finished: its checkpoint removed


@pytest.mark.slow
def test_a_killed_trial_resumes_at_its_checkpoint_on_sqlite(
    slow_task: str, sqlite_url: str, tmp_path: Path
) -> None:
    _killed_in_epoch_3(slow_task, sqlite_url, tmp_path)


@pytest.mark.slow
def test_a_killed_trial_resumes_at_its_checkpoint_on_postgres(
    slow_task: str, pg_url: str, tmp_path: Path
) -> None:
    _killed_in_epoch_3(slow_task, pg_url, tmp_path)


def _preempted(task: str, url: str, cwd: Path) -> None:
    _create(task, url, cwd)
    args = ["worker", "--group", "g", "--storage", url, *BEAT, "--grace", "60"]
    first = _lrtune(args, cwd, delay=0.3)
    _wait_checkpoint(url, first, 1)
    time.sleep(1.0)  # into the next epoch: the checkpoint is mid-epoch
    first.send_signal(signal.SIGTERM)
    _out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "preempted" in err
    assert "--grace" not in err  # it handed the trial back itself, not the grace's watchdog
    (waiting,) = _trials(url)
    assert waiting.state == optuna.trial.TrialState.WAITING
    assert waiting.user_attrs["preempted"] == 1
    named = waiting.user_attrs[CHECKPOINT_ATTR]
    second = _lrtune(["worker", "--group", "g", "--storage", url, *BEAT], cwd)
    _out, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    (done,) = _trials(url)  # the same trial, finished: exact budget, no FAIL
    assert done.state == optuna.trial.TrialState.COMPLETE
    assert done.user_attrs[RESUMED_ATTR] == named["epoch"]
    assert done.value == _reference(task, done)


@pytest.mark.slow
def test_sigterm_hands_the_trial_back_and_it_resumes_on_sqlite(
    slow_task: str, sqlite_url: str, tmp_path: Path
) -> None:
    _preempted(slow_task, sqlite_url, tmp_path)


@pytest.mark.slow
def test_sigterm_hands_the_trial_back_and_it_resumes_on_postgres(
    slow_task: str, pg_url: str, tmp_path: Path
) -> None:
    _preempted(slow_task, pg_url, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three processes importing torch (and Lightning)
def test_an_own_loop_killed_in_epoch_3_resumes_on_sqlite(
    own_loop_task: str, sqlite_url: str, tmp_path: Path
) -> None:
    _killed_in_epoch_3(own_loop_task, sqlite_url, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three processes importing torch (and Lightning)
def test_an_own_loop_killed_in_epoch_3_resumes_on_postgres(
    own_loop_task: str, pg_url: str, tmp_path: Path
) -> None:
    _killed_in_epoch_3(own_loop_task, pg_url, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three processes importing torch (and Lightning)
def test_sigterm_hands_an_own_loop_back_and_it_resumes_on_sqlite(
    own_loop_task: str, sqlite_url: str, tmp_path: Path
) -> None:
    _preempted(own_loop_task, sqlite_url, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three processes importing torch (and Lightning)
def test_sigterm_hands_an_own_loop_back_and_it_resumes_on_postgres(
    own_loop_task: str, pg_url: str, tmp_path: Path
) -> None:
    _preempted(own_loop_task, pg_url, tmp_path)


class _Stop(Exception):
    pass


def test_resuming_in_process_gives_the_uninterrupted_value(tmp_path: Path) -> None:
    """The same as the worker tests, fast: a run stopped after epoch 2 (its checkpoint
    written) and resumed equals a run never stopped, bit for bit."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    config = TrainConfig(lr=0.05, schedule="cosine", epochs=4, seed=3, device="cpu")
    whole = train("digits", config).value

    def stop_after_2(value: float, epoch: int) -> None:
        if epoch == 1:
            raise _Stop

    trial = study.ask()
    with pytest.raises(_Stop):
        run_trial("digits", config, stop_after_2, checkpoints=Checkpoints(store, trial, every=1))
    assert trial.user_attrs[CHECKPOINT_ATTR]["epoch"] == 1  # after epoch 1; epoch 2's not due
    result = run_trial(
        "digits", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert trial.user_attrs[RESUMED_ATTR] == 1
    assert result.value == whole


def test_the_default_interval_checkpoints_mid_epoch_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default interval (``every=None``) lrtune's loop also saves between two
    updates once AUTO_SECONDS passed (0 here: at every update), so a SIGKILL loses at most
    that much of a long epoch; a run stopped in epoch 2 resumes from its last mid-epoch
    checkpoint (the epoch's order replayed) and ends with the uninterrupted value."""
    from lrtune.training import checkpoint

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    config = TrainConfig(lr=0.05, schedule="cosine", epochs=3, seed=3, device="cpu")
    whole = train("digits", config).value
    monkeypatch.setattr(checkpoint, "AUTO_SECONDS", 0.0)

    def stop_at_epoch_2s_end(value: float, epoch: int) -> None:
        if epoch == 1:
            raise _Stop

    trial = study.ask()
    with pytest.raises(_Stop):
        run_trial("digits", config, stop_at_epoch_2s_end, checkpoints=Checkpoints(store, trial))
    named = trial.user_attrs[CHECKPOINT_ATTR]
    assert named["epoch"] == 1 and named["batch"] > 0  # in epoch 2, before its last update
    result = run_trial("digits", config, lambda v, s: None, checkpoints=Checkpoints(store, trial))
    assert trial.user_attrs[RESUMED_ATTR] == 1
    assert result.value == whole


class _Killed(BaseException):
    """A SIGKILL landing between two steps of a save."""


class _DyingStore:
    """A file store whose worker dies after the new checkpoint's write, or at the
    previous one's removal."""

    def __init__(self, store: FileSystemArtifactStore, when: str) -> None:
        self.store, self.when = store, when

    def open_reader(self, artifact_id: str) -> Any:
        return self.store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.store.write(artifact_id, content_body)
        if self.when == "after the write":
            raise _Killed

    def remove(self, artifact_id: str) -> None:
        raise _Killed


@pytest.mark.parametrize("when", ["after the write", "at the removal"])
def test_a_save_killed_between_its_steps_leaves_no_file_unnamed(tmp_path: Path, when: str) -> None:
    """A kill between writing a checkpoint, naming it and removing the previous one leaves
    a valid checkpoint named, and the retry's next save, or its discard at the trial's end,
    removes every file the kill left (a flaky orphan in the S3 test before)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    files = tmp_path / "store"
    files.mkdir()
    store = FileSystemArtifactStore(str(files))
    trial = study.ask()
    assert Checkpoints(store, trial).save({"w": torch.zeros(1)}, epoch=1)
    with pytest.raises(_Killed):
        Checkpoints(_DyingStore(store, when), trial).save({"w": torch.ones(1)}, epoch=2)
    assert len(list(files.iterdir())) == 2  # the previous checkpoint and the new one
    resumed = Checkpoints(store, trial).load()
    assert resumed is not None  # whichever is named is whole
    assert resumed["epoch"] == (1 if when == "after the write" else 2)

    retry = Checkpoints(store, trial)
    assert retry.save({"w": torch.full((1,), 3.0)}, epoch=3)
    assert [f.name for f in files.iterdir()] == [trial.user_attrs[CHECKPOINT_ATTR]["artifact"]]
    with pytest.raises(_Killed):
        Checkpoints(_DyingStore(store, when), trial).save({"w": torch.ones(1)}, epoch=4)
    Checkpoints(store, trial).discard()  # the trial ends without saving again
    assert list(files.iterdir()) == []
    assert trial.user_attrs[CHECKPOINT_ATTR] is None


def test_saves_keep_one_file_and_a_short_stale_list(tmp_path: Path) -> None:
    """Each save removes the previous file and drops from the attr what is gone: after many
    saves one file is left and the attr lists at most the one just removed."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    files = tmp_path / "store"
    files.mkdir()
    store = FileSystemArtifactStore(str(files))
    trial = study.ask()
    for epoch in range(1, 7):
        assert Checkpoints(store, trial).save({"w": torch.zeros(1)}, epoch=epoch)
        named = trial.user_attrs[CHECKPOINT_ATTR]
        assert [f.name for f in files.iterdir()] == [named["artifact"]]
        assert len(named["stale"]) <= 1, named


PRUNED_FIT = own_loop_source(
    "fit-pruned",
    """
def fit(hp, report):
    def report_then_prune(value, epoch):
        report(value, epoch)
        if epoch == 1:  # epoch 1's checkpoint is written after this report: epoch 0's is
            raise optuna.TrialPruned("pruned by the task")

    return own_loop.fit(hp, report_then_prune)
""",
    imports="import optuna",
)


@pytest.mark.slow
def test_a_pruned_trial_leaves_no_checkpoint(tmp_path: Path) -> None:
    """A pruned trial is never resumed: its checkpoint is removed like a finished one's."""
    (tmp_path / "fit_pruned.py").write_text(PRUNED_FIT)
    args = ["study", "--task", "fit_pruned.py:make", "--prior", "none", "--samplers", "random"]
    args += ["--trials", "2", "--epochs", "3", "--checkpoint-every", "1", "--confirm", "0"]
    proc = _lrtune([*args, "--storage", "sqlite:///x.db", "--device", "cpu"], tmp_path)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    study = optuna.load_study(
        study_name="fit-pruned.random.none", storage="sqlite:///" + str(tmp_path / "x.db")
    )
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(t.user_attrs[CHECKPOINT_ATTR] is None for t in trials)  # one was written
    assert list((tmp_path / "x.db.artifacts").iterdir()) == []


def test_a_checkpoint_of_another_task_or_a_truncated_one_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    config = TrainConfig(lr=0.05, epochs=2, device="cpu")
    whole = train("digits", config).value
    trial = study.ask()
    run_trial("wine", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1))
    assert trial.user_attrs[CHECKPOINT_ATTR]["epoch"] == 1
    # the checkpoint attr names wine's file: digits starts over
    result = run_trial(
        "digits", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert "its task is 'wine'" in caplog.text
    assert result.value == whole
    assert RESUMED_ATTR not in trial.user_attrs
    buffer = io.BytesIO()
    torch.save({"model": {}}, buffer)
    store.write("cut", io.BytesIO(buffer.getvalue()[:20]))
    trial.set_user_attr(CHECKPOINT_ATTR, {"artifact": "cut", "epoch": 1, "batch": 0})
    result = run_trial(
        "digits", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert "unreadable" in caplog.text
    assert result.value == whole
    assert RESUMED_ATTR not in trial.user_attrs


def test_a_fit_task_resumes_from_its_hp_checkpoint(tmp_path: Path) -> None:
    """studies/own_loop.py checkpoints with hp.checkpoint after each report; stopped in
    epoch 3 and resumed, it ends with the uninterrupted run's value."""
    task = str(REPO / "studies" / "own_loop.py") + ":make"
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    config = TrainConfig(lr=0.05, schedule="cosine", epochs=4, seed=1, device="cpu")
    whole = run_trial(task, config, lambda v, s: None).value

    def stop_in_epoch_3(value: float, epoch: int) -> None:
        if epoch == 2:
            raise _Stop

    trial = study.ask()
    with pytest.raises(_Stop):
        run_trial(task, config, stop_in_epoch_3, checkpoints=Checkpoints(store, trial, every=1))
    assert trial.user_attrs[CHECKPOINT_ATTR]["epoch"] == 2
    result = run_trial(
        task, config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert trial.user_attrs[RESUMED_ATTR] == 2
    assert len(result.history) == 4
    assert result.value == whole


def test_export_weights_load_into_a_fresh_model_and_give_the_studys_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrtune.cli import main
    from lrtune.training.data import Batches
    from lrtune.training.loading import resolve_task
    from lrtune.training.trainer import evaluate

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = ["study", "--task", "digits", "--storage", url, "--prior", "none", "--confirm", "0"]
    assert main([*study, "--samplers", "random", "--trials", "3", "--epochs", "2"]) == 0
    kept = list((tmp_path / "w.db.artifacts").glob("lrtune-weights-*"))
    assert len(kept) == 3  # every finished trial keeps its final weights until an export
    weights = tmp_path / "best.pt"
    export = ["export", "--study", "digits.random.none", "--storage", url, "--out", "c.yaml"]
    assert main([*export, "--weights", str(weights)]) == 0
    task = resolve_task("digits")(0)
    task.model.load_state_dict(torch.load(weights))
    value = evaluate(task, task.model, Batches(task.val, 1024, torch.device("cpu"), "val"))
    best = optuna.load_study(study_name="digits.random.none", storage=url).best_value
    assert value == pytest.approx(best, rel=1e-6)
    assert len(list((tmp_path / "w.db.artifacts").glob("lrtune-weights-*"))) == 1


def test_export_weights_of_a_study_without_checkpoints_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrtune.cli import main

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'n.db'}"
    study = ["study", "--task", "wine", "--storage", url, "--prior", "none", "--confirm", "0"]
    study += ["--samplers", "random", "--trials", "1", "--epochs", "1", "--checkpoint-every", "0"]
    assert main(study) == 0
    capsys.readouterr()
    export = ["export", "--study", "wine.random.none", "--storage", url, "--out", "c.yaml"]
    assert main([*export, "--weights", "w.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "kept no weights" in err[0]
    assert not (tmp_path / "w.pt").exists() and not (tmp_path / "c.yaml").exists()


def test_a_store_that_cannot_be_written_costs_the_checkpoints_not_the_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "afile").write_text("not a directory")
    store = FileSystemArtifactStore(str(tmp_path / "afile" / "store"))
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    config = TrainConfig(lr=0.05, epochs=3, device="cpu")
    trial = study.ask()
    result = run_trial(
        "wine", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert result.value == train("wine", config).value
    assert caplog.text.count("checkpoints not written") == 1  # one warning per worker
    named = trial.user_attrs.get(CHECKPOINT_ATTR) or {}
    assert "artifact" not in named  # no checkpoint named


@pytest.mark.slow
def test_max_time_preempts_the_worker_before_it(
    slow_task: str, sqlite_url: str, tmp_path: Path
) -> None:
    """`worker --max-time T` sends itself SIGTERM at T - grace: it exits 0 before T, its
    trial handed back (or not yet started), none failed."""
    _create(slow_task, sqlite_url, tmp_path)
    args = ["worker", "--group", "g", "--storage", sqlite_url, *BEAT]
    worker = _lrtune([*args, "--max-time", "20", "--grace", "5"], tmp_path, delay=0.5)
    _out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    assert "preempted" in err
    states = {t.state for t in _trials(sqlite_url)}
    assert optuna.trial.TrialState.FAIL not in states
    assert optuna.trial.TrialState.RUNNING not in states


BUCKET = "lrtune-ckpt"
PREFIX = "runs/one"


@pytest.fixture
def s3_bucket(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real S3-compatible server process, moto's (``moto[server]`` from PyPI), on
    127.0.0.1 with an empty bucket; ``$LRTUNE_ARTIFACTS`` points into it and boto3 finds it
    through ``AWS_ENDPOINT_URL_S3``, as any S3-compatible endpoint. Yields a boto3 client."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("moto.server")
    with socket.socket() as probe:  # a free port; the server binds it a moment later
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LRTUNE_ARTIFACTS", f"s3://{BUCKET}/{PREFIX}")
    try:
        client = boto3.client("s3")
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.communicate()
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield client
    finally:
        server.terminate()
        server.communicate(timeout=60)


def _keys(client: Any) -> set[str]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/").get("Contents", [])
    return {obj["Key"].removeprefix(PREFIX + "/") for obj in listed}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # three processes importing torch (and Lightning)
def test_checkpoints_in_s3_resume_a_killed_trial_and_export_reads_its_weights(
    slow_task: str,
    sqlite_url: str,
    tmp_path: Path,
    s3_bucket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$LRTUNE_ARTIFACTS=s3://bucket/prefix: the trial checkpoints into the bucket, the retry
    of a worker SIGKILLed in epoch 3 resumes from it on the uninterrupted run's value, and
    export --weights reads the winner's weights from it."""
    from lrtune.cli import main
    from lrtune.training.data import Batches
    from lrtune.training.loading import resolve_task
    from lrtune.training.trainer import evaluate

    _killed_in_epoch_3(slow_task, sqlite_url, tmp_path)  # resumed_from_epoch, value checked
    (done,) = [t for t in _trials(sqlite_url) if t.state == optuna.trial.TrialState.COMPLETE]
    assert _keys(s3_bucket) == {done.user_attrs["weights"]}  # the checkpoints were removed
    assert not (tmp_path / "lrtune.db.artifacts").exists()  # nothing in the file store
    monkeypatch.chdir(tmp_path)
    export = ["export", "--study", STUDY, "--storage", sqlite_url, "--out", "c.yaml"]
    assert main([*export, "--weights", str(tmp_path / "best.pt")]) == 0
    task = resolve_task(slow_task)(0)
    task.model.load_state_dict(torch.load(tmp_path / "best.pt"))
    value = evaluate(task, task.model, Batches(task.val, 1024, torch.device("cpu"), "val"))
    assert value == pytest.approx(done.value, rel=1e-6)


def test_an_s3_bucket_that_does_not_exist_stops_the_worker_in_one_line(
    slow_task: str,
    sqlite_url: str,
    tmp_path: Path,
    s3_bucket: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker does not run its trials without the checkpoints it was told to write."""
    _create(slow_task, sqlite_url, tmp_path)
    monkeypatch.setenv("LRTUNE_ARTIFACTS", "s3://no-such-bucket/x")
    worker = _lrtune(["worker", "--group", "g", "--storage", sqlite_url], tmp_path)
    _out, err = worker.communicate(timeout=300)
    assert worker.returncode == 2, err
    assert err.strip().splitlines() == [
        "lrtune worker: error: $LRTUNE_ARTIFACTS=s3://no-such-bucket/x: cannot use bucket "
        "'no-such-bucket' (An error occurred (404) when calling the HeadBucket operation: "
        "Not Found); create it, or check the AWS credentials and AWS_ENDPOINT_URL_S3"
    ]
    assert _trials(sqlite_url) == []  # no trial started
