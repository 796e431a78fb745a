"""lrtune.lightning: a LightningModule trained by Trainer.fit with lrtune's optimizer and
exact schedule, reporting its monitored metric per epoch (real Lightning, CPU, digits)."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("pytorch_lightning")

import optuna  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lrtune import interrupt, schedule_lr  # noqa: E402
from lrtune.errors import UserError  # noqa: E402
from lrtune.export.load import ProductionConfig, _config_from_mapping  # noqa: E402
from lrtune.lightning import lightning_step_loss, lightning_task  # noqa: E402
from lrtune.training import tasks  # noqa: E402

BATCH = 128  # 1,347 training rows: 11 batches, the last one partial


@dataclasses.dataclass(frozen=True)
class Hp(ProductionConfig):
    """What the trial runner hands to fit: the exported config plus seed, epochs, device."""

    seed: int = 0
    epochs: int = 2
    device: str = "cpu"


def make_hp(schedule: dict[str, Any], *, epochs: int = 2, lr: float = 0.1) -> Hp:
    config = _config_from_mapping(
        {"optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9}, "schedule": schedule}, "test"
    )
    return Hp(optimizer=config.optimizer, schedule=config.schedule, epochs=epochs)


class Digits(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        raise AssertionError("the module's own configure_optimizers was called")


class DictDigits(Digits):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        logits = self.net(x)
        return {"loss": F.cross_entropy(logits, y), "logits": logits}


class DigitsData(pl.LightningDataModule):
    def setup(self, stage: str) -> None:
        self.train_set = TensorDataset(*_DIGITS.train)
        self.val_set = TensorDataset(*_DIGITS.val)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=BATCH, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=512)


_DIGITS = tasks.digits(0)
TRAIN = DataLoader(TensorDataset(*_DIGITS.train), batch_size=BATCH, shuffle=True)
VAL = DataLoader(TensorDataset(*_DIGITS.val), batch_size=512)


class LrRecorder(pl.Callback):
    """The LR of every optimizer update and of every training batch."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []
        self.batches: list[tuple[int, int, float]] = []

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.batches.append((trainer.current_epoch, index, lr))

    def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
        self.steps.append((trainer.global_step, optimizer.param_groups[0]["lr"]))


def test_fit_reports_every_epoch_and_returns_the_last_value() -> None:
    task = lightning_task(Digits, TRAIN, VAL, epochs=7, name="pl-digits")(0)
    assert isinstance(task.model, Digits) and task.train is TRAIN and task.val is VAL
    assert (task.batch_size, task.epochs, task.metric_name, task.name) == (
        BATCH,
        7,
        "val_loss",
        "pl-digits",
    )
    reports: list[tuple[int, float]] = []
    value = task.fit(make_hp({"name": "cosine"}, epochs=3), lambda v, s: reports.append((s, v)))
    assert [step for step, _ in reports] == [0, 1, 2]
    assert math.isfinite(value) and value == reports[-1][1]
    assert reports[-1][1] < reports[0][1] < math.log(10)  # it learned


@pytest.mark.parametrize("accumulate", [1, 2])
def test_lr_at_every_step_is_the_closed_form(accumulate: int) -> None:
    recorder = LrRecorder()
    trainer_kwargs = {"callbacks": [recorder], "accumulate_grad_batches": accumulate}
    task = lightning_task(Digits, TRAIN, VAL, trainer_kwargs=trainer_kwargs)(0)
    schedule = {"name": "onecycle", "pct_start": 0.3}
    hp = make_hp(schedule, epochs=2)
    task.fit(hp, lambda v, s: None)
    per_epoch = math.ceil(len(TRAIN) / accumulate)  # the partial accumulation steps too
    total = 2 * per_epoch
    params = {k: v for k, v in hp.schedule.items() if k != "name"}
    expected = [schedule_lr("onecycle", s, total, 0.1, **params) for s in range(total)]
    assert [step for step, _ in recorder.steps] == list(range(total))
    assert [lr for _, lr in recorder.steps] == expected  # exact, not approximately
    for epoch, index, lr in recorder.batches:
        assert lr == expected[epoch * per_epoch + index // accumulate]
    assert len(recorder.batches) == 2 * len(TRAIN)


def test_a_pruned_trial_stops_fit_and_propagates() -> None:
    recorder = LrRecorder()  # a single callback, not in a list, as Trainer also takes it
    make = lightning_task(Digits, TRAIN, VAL, trainer_kwargs={"callbacks": recorder})
    # val_loss is never below 1e-9: the pruner prunes at the first step it may, epoch 1.
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1e-9, n_warmup_steps=1))

    def objective(trial: optuna.Trial) -> float:
        def report(value: float, step: int) -> None:
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {step}")

        return make(0).fit(make_hp({"name": "constant"}, epochs=5), report)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=1)
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert sorted(trial.intermediate_values) == [0, 1]
    assert {epoch for epoch, _, _ in recorder.batches} == {0, 1}  # epochs 2-4 never ran


def test_step_loss_is_the_training_step_loss() -> None:
    x, y = next(iter(VAL))
    task = lightning_task(Digits, TRAIN, VAL)(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # self.log() without a Trainer stays quiet
        loss = task.step_loss(task.model, (x, y))
    assert torch.equal(loss, F.cross_entropy(task.model.net(x), y))
    loss.backward()  # a real graph the range test can step on
    dict_task = lightning_task(DictDigits, TRAIN, VAL)(3)
    assert torch.equal(
        dict_task.step_loss(dict_task.model, (x, y)), F.cross_entropy(dict_task.model.net(x), y)
    )
    with pytest.raises(TypeError, match="training_step returned NoneType"):
        lightning_step_loss(_NoLoss(), (x, y))


class _NoLoss(Digits):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return None


def test_the_seed_sets_the_initial_weights() -> None:
    make = lightning_task(Digits, TRAIN, VAL)
    first, again, other = (make(s).model.net[0].weight for s in (1, 1, 2))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_a_missing_monitor_names_the_logged_metrics() -> None:
    task = lightning_task(Digits, TRAIN, VAL, monitor="val_acc")(0)
    logged = r"'val_acc' was not logged \(logged: train_loss, val_loss\)"
    with pytest.raises(UserError, match=logged):
        task.fit(make_hp({"name": "constant"}, epochs=1), lambda v, s: None)


class _Broken(Digits):
    def training_step(self, batch: Any, batch_idx: int) -> Any:
        raise ValueError("labels out of range\nsecond line")


def test_an_error_in_the_users_module_leaves_fit_unchanged() -> None:
    # The trial runner records the exception's first line as the FAIL reason.
    task = lightning_task(_Broken, TRAIN, VAL)(0)
    with pytest.raises(ValueError, match="labels out of range"):
        task.fit(make_hp({"name": "constant"}, epochs=1), lambda v, s: None)


def test_without_validation_a_training_metric_is_reported() -> None:
    task = lightning_task(Digits, TRAIN, monitor="train_loss")(0)
    reports: list[tuple[int, float]] = []
    value = task.fit(make_hp({"name": "constant"}), lambda v, s: reports.append((s, v)))
    assert [s for s, _ in reports] == [0, 1] and value == reports[-1][1]


def test_a_datamodule_gives_the_loaders_and_trains() -> None:
    task = lightning_task(Digits, DigitsData(), epochs=1)(0)
    assert isinstance(task.train, DataLoader) and task.batch_size == BATCH
    assert isinstance(task.val, DataLoader) and len(task.val.dataset) == len(_DIGITS.val[1])
    reports: list[tuple[int, float]] = []
    task.fit(make_hp({"name": "cosine"}, epochs=1), lambda v, s: reports.append((s, v)))
    assert [s for s, _ in reports] == [0]


def test_lightning_stays_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    task = lightning_task(Digits, TRAIN, VAL)(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        task.fit(make_hp({"name": "constant"}, epochs=1), lambda v, s: None)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"trainer_kwargs": {"max_epochs": 3}}, "may not set max_epochs"),
        ({"direction": "up"}, "direction is 'up'"),
        ({"monitor": ""}, "monitor must name a logged metric"),
        ({"train": (_DIGITS.train[0], _DIGITS.train[1])}, "train is tuple, expected a DataLoader"),
        ({"train": DigitsData(), "val": VAL}, "val must be a DataLoader"),
    ],
)
def test_bad_arguments_are_one_clear_line(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"train": TRAIN, "val": VAL, **kwargs}
    with pytest.raises(UserError, match=message):
        lightning_task(Digits, **args)


def test_a_loader_without_batch_size_needs_one() -> None:
    sampler = torch.utils.data.BatchSampler(range(len(_DIGITS.train[1])), 100, drop_last=False)
    loader = DataLoader(TensorDataset(*_DIGITS.train), batch_sampler=sampler)
    with pytest.raises(UserError, match="pass lightning_task"):
        lightning_task(Digits, loader, VAL)(0)
    assert lightning_task(Digits, loader, VAL, batch_size=100)(0).batch_size == 100


class _CtrlC(pl.Callback):
    """Sends SIGINT to this process at the start of epoch 1, ``times`` times."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.batches = 0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, index: int) -> None:
        self.batches += 1
        if trainer.current_epoch == 1 and index == 0:
            for _ in range(self.times):
                os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_fit_with_keyboard_interrupt(presses: int) -> None:
    # One press is lrtune's deferred Ctrl-C (stops at the next batch); a second raises at
    # once, inside Lightning, which would otherwise ignore SIGINT from then on and exit.
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    ctrl_c = _CtrlC(presses)
    task = lightning_task(Digits, TRAIN, VAL, trainer_kwargs={"callbacks": [ctrl_c]})(0)
    with interrupt.deferred_sigint():
        with pytest.raises(KeyboardInterrupt):
            task.fit(make_hp({"name": "constant"}, epochs=3), lambda v, s: None)
        assert signal.getsignal(signal.SIGINT) is interrupt._handler
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert ctrl_c.batches == len(TRAIN) + 1


def test_the_example_task_and_spec() -> None:
    # studies/lightning_task.py + studies/lightning.toml; `lrtune study` runs them once the
    # trial runner calls Task.fit (issue 9 item 3): until then, fit is called directly.
    import importlib.util
    from pathlib import Path

    from lrtune.search.spec import load_spec_file, resolve_spec

    studies = Path(__file__).resolve().parents[1] / "studies"
    spec = resolve_spec(load_spec_file(studies / "lightning.toml"))
    assert spec.task == "studies/lightning_task.py:make" and spec.prior == ("none",)
    path = studies / "lightning_task.py"
    module_spec = importlib.util.spec_from_file_location("lightning_example", path)
    assert module_spec is not None and module_spec.loader is not None
    example = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(example)
    task = example.make(0)
    assert (task.name, task.metric_name, task.batch_size) == ("lightning-digits", "val_loss", 64)
    x, y = next(iter(task.train))
    assert task.step_loss(task.model, (x, y)).ndim == 0
    reports: list[tuple[int, float]] = []
    hp = make_hp({"name": "cosine"}, epochs=2, lr=0.05)
    value = task.fit(hp, lambda v, s: reports.append((s, v)))
    assert [s for s, _ in reports] == [0, 1] and value < math.log(10)


LIGHTNING_TASK_FILE = '''
import json, os
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrtune.lightning import lightning_task


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.cross_entropy(self.net(x), y))


class Record(pl.Callback):
    """Appends the LR of every training batch to $LR_LOG (one JSON list per fit)."""

    def on_train_start(self, trainer, module):
        self.lrs = []

    def on_train_batch_start(self, trainer, module, batch, index):
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, module):
        with open(os.environ["LR_LOG"], "a") as f:
            f.write(json.dumps(self.lrs) + "\\n")


x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
TRAIN = DataLoader(TensorDataset(x[:1000], y[:1000]), batch_size=100, shuffle=True)
VAL = DataLoader(TensorDataset(x[1000:], y[1000:]), batch_size=500)
make = lightning_task(Net, TRAIN, VAL, epochs=2, trainer_kwargs={"callbacks": [Record()]})
'''


def test_a_lightning_study_exports_the_schedule_it_trained_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Acceptance of issue 9: a Lightning task runs a study, and the config `lrtune export`
    # writes rebuilds, through load_config().build_scheduler, the LR of every step the
    # trial trained with (recorded inside Trainer.fit by a callback).
    import json

    from lrtune import load_config
    from lrtune.cli import main

    task_file = tmp_path / "ltask.py"
    task_file.write_text(LIGHTNING_TASK_FILE)
    log = tmp_path / "lrs.jsonl"
    monkeypatch.setenv("LR_LOG", str(log))
    url = f"sqlite:///{tmp_path / 'l.db'}"
    argv = [
        *("study", "--task", f"{task_file}:make", "--prior", "none", "--samplers", "random"),
        *("--trials", "1", "--pruner", "none", "--confirm", "0", "--device", "cpu"),
        *("--schedules", "onecycle", "--storage", url),
    ]
    assert main(argv) == 0
    out = tmp_path / "lr.yaml"
    assert (
        main(["export", "--study", "lightning.random.none", "--storage", url, "--out", str(out)])
        == 0
    )
    (trained,) = [json.loads(line) for line in log.read_text().splitlines()]
    cfg = load_config(out)
    assert cfg.to_dict()["schedule"]["name"] == "onecycle"
    import yaml

    # The steps the export says the trial ran are the updates Trainer.fit made.
    assert yaml.safe_load(out.read_text())["source"]["total_steps"] == len(trained)
    opt = cfg.build_optimizer([torch.nn.Parameter(torch.zeros(1))])
    sched = cfg.build_scheduler(opt, len(trained))  # 2 epochs x 10 batches
    rebuilt = []
    for _ in trained:
        rebuilt.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert len(trained) == 20
    assert rebuilt == pytest.approx(trained, rel=1e-12, abs=0.0)


class _Stop(Exception):
    pass


def test_a_stopped_trial_resumes_from_its_lightning_checkpoint(tmp_path: Path) -> None:
    """In a worker, hp.checkpoint stores a Lightning checkpoint (Trainer.save_checkpoint)
    after each epoch; a trial stopped in epoch 3 and run again resumes through
    Trainer.fit(ckpt_path=...) with the RNG streams of the checkpoint, and ends with the
    uninterrupted run's value, bit for bit (the next epochs shuffle their batches alike)."""
    import io

    from optuna.artifacts import FileSystemArtifactStore

    from lrtune.training.checkpoint import CHECKPOINT_ATTR, RESUMED_ATTR, Checkpoints
    from lrtune.training.trainer import TrainConfig, run_trial

    make = lightning_task(Digits, TRAIN, VAL, epochs=4, name="pl-digits")
    config = TrainConfig(lr=0.05, schedule="cosine", epochs=4, seed=1, device="cpu")
    whole = run_trial(make, config, lambda v, s: None)

    def stop_in_epoch_3(value: float, epoch: int) -> None:
        if epoch == 2:
            raise _Stop

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    trial = study.ask()
    with pytest.raises(_Stop):
        run_trial(make, config, stop_in_epoch_3, checkpoints=Checkpoints(store, trial, every=1))
    named = trial.user_attrs[CHECKPOINT_ATTR]
    assert named["epoch"] == 2
    with store.open_reader(named["artifact"]) as reader:
        saved = torch.load(io.BytesIO(reader.read()), weights_only=False)
    lightning = torch.load(io.BytesIO(saved["user"]["lightning"]), weights_only=False)
    assert lightning["epoch"] == 1 and "pytorch-lightning_version" in lightning
    reports: list[tuple[int, float]] = []
    resumed = run_trial(
        make,
        config,
        lambda v, s: reports.append((s, v)),
        checkpoints=Checkpoints(store, trial, every=1),
    )
    assert trial.user_attrs[RESUMED_ATTR] == 2
    assert [s for s, _ in reports] == [2, 3]  # epochs 0-1 not trained again
    assert resumed.history == whole.history and resumed.value == whole.value
