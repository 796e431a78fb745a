"""Shared trunks (``study --rungs … --share-trunks``, issue 16 item 3): a promoted wsd or
constant trial starts from its source's state at the end of the stable phase, and its result
equals training the same schedule from scratch, bit for bit on CPU; it costs only its new
epochs; the flag end to end on SQLite and its bad inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore

from lrtune.cli import main
from lrtune.search.ladder import Ladder, compute
from lrtune.search.states import FINISHED
from lrtune.training.trainer import TrainConfig, TrainResult, run_trial, train
from lrtune.training.trunk import START_ATTR, TRUNK_ATTR, Trunks, stable_end, warmup_steps

#: Dropout and shuffled batches: the trunk's RNG streams matter. 8 updates an epoch.
TASK = """
import torch
from lrtune import Task


def make(seed: int) -> Task:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(256, 8, generator=g)
    y = (x.sum(1) > 0).long()
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )
    return Task(model=model, train=(x, y), val=(x[:64], y[:64]),
                loss_fn=torch.nn.functional.cross_entropy, batch_size=32, epochs=9,
                optimizer="adam")
"""
PER_EPOCH = 8


@pytest.fixture
def task(tmp_path: Path) -> str:
    path = tmp_path / "trunk_task.py"
    path.write_text(TASK)
    return f"{path}:make"


def _trial() -> optuna.Trial:
    return optuna.create_study().ask()


def _config(schedule: str, epochs: int, **params: Any) -> TrainConfig:
    return TrainConfig(
        lr=3e-3,
        optimizer="adam",
        schedule=schedule,
        schedule_params=params,
        epochs=epochs,
        seed=7,
        device="cpu",
    )


def _run(task: str, config: TrainConfig, trial: optuna.Trial, trunks: Trunks | None) -> TrainResult:
    return run_trial(task, config, lambda value, step: trial.report(value, step), trunks=trunks)


def _same(a: TrainResult, b: TrainResult) -> None:
    assert a.history == b.history  # bit for bit, every epoch
    assert a.value == b.value and a.steps == b.steps and a.final_lr == b.final_lr
    assert a.model is not None and b.model is not None
    theirs = b.model.state_dict()
    for name, x in a.model.state_dict().items():
        assert torch.equal(x, theirs[name]), name


@pytest.mark.parametrize(
    ("schedule", "params", "rungs"),
    [
        ("wsd", {"warmup_frac": 0.1, "decay_frac": 0.3, "decay": "cosine"}, (1, 3, 9)),
        ("wsd", {"warmup_frac": 0.0, "decay_frac": 0.25}, (2, 6)),
        ("constant", {"warmup_frac": 0.2}, (1, 3)),
    ],
)
def test_a_promotion_from_a_trunk_equals_training_its_schedule_from_scratch(
    tmp_path: Path, task: str, schedule: str, params: dict[str, Any], rungs: tuple[int, ...]
) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    low = _trial()
    first = _run(
        task,
        _config(schedule, rungs[0], **params),
        low,
        Trunks(store, low, start=None, source=None, keep=True),
    )
    record = low.user_attrs[TRUNK_ATTR]
    total = rungs[0] * PER_EPOCH
    resolved = first.config["schedule"]
    assert record["step"] == stable_end(resolved, total)
    assert record["warmup"] == warmup_steps(resolved, total)
    assert record["epochs"] == record["step"] / PER_EPOCH
    # Up the ladder: each rung starts from the trunk of the one below and keeps its own.
    for epochs in rungs[1:]:
        high = _trial()
        keep = epochs != rungs[-1]
        shared = _run(
            task,
            _config(schedule, epochs, **params),
            high,
            Trunks(store, high, start=record, source=low.number, keep=keep),
        )
        start = high.user_attrs[START_ATTR]
        assert start["step"] == record["step"] and start["epochs"] == record["epochs"]
        # It warmed up as the bottom rung did: warmup_frac = W / T', what it records.
        warm = shared.config["schedule"]
        assert warmup_steps(warm, epochs * PER_EPOCH) == record["warmup"]
        # The same schedule trained from scratch: the same run, bit for bit.
        sched = {k: v for k, v in warm.items() if k != "name"}
        alone = train(task, _config(schedule, epochs, **sched))
        _same(shared, alone)
        # The epochs the trunk holds were reported again: one value per epoch.
        assert sorted(high.storage.get_trial(high._trial_id).intermediate_values) == list(
            range(epochs)
        )
        if keep:
            record, low = high.user_attrs[TRUNK_ATTR], high
        else:
            assert TRUNK_ATTR not in high.user_attrs  # the top rung keeps none


def test_a_trunk_that_differs_is_not_used(tmp_path: Path, task: str) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    low = _trial()
    _run(
        task,
        _config("wsd", 1, decay_frac=0.5),
        low,
        Trunks(store, low, start=None, source=None, keep=True),
    )
    record = low.user_attrs[TRUNK_ATTR]
    # Another LR: not this configuration's trunk. It trains from scratch.
    high = _trial()
    config = TrainConfig(
        lr=1e-3,
        optimizer="adam",
        schedule="wsd",
        schedule_params={"decay_frac": 0.5},
        epochs=3,
        seed=7,
        device="cpu",
    )
    result = _run(task, config, high, Trunks(store, high, start=record, source=0, keep=False))
    assert START_ATTR not in high.user_attrs
    sched = {k: v for k, v in result.config["schedule"].items() if k != "name"}
    _same(result, train(task, TrainConfig(**{**config.__dict__, "schedule_params": sched})))
    # A trunk that is gone: from scratch too.
    store.remove(record["artifact"])
    # (A heartbeat retry carries its original's trunk_start: cleared, it costs its rung.)
    other = _trial()
    other.set_user_attr(START_ATTR, {"from": 0, "step": 4, "epochs": 0.5})
    config = _config("wsd", 3, decay_frac=0.5)
    result = _run(task, config, other, Trunks(store, other, start=record, source=0, keep=False))
    assert other.user_attrs[START_ATTR] is None and not result.diverged


def test_other_schedules_keep_no_trunk(tmp_path: Path, task: str) -> None:
    store = FileSystemArtifactStore(str(tmp_path))
    trial = _trial()
    _run(
        task, _config("cosine", 1), trial, Trunks(store, trial, start=None, source=None, keep=True)
    )
    assert TRUNK_ATTR not in trial.user_attrs
    assert stable_end({"name": "wsd", "decay_frac": 1.0}, 8) is None  # decays from step 0


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_study_share_trunks_on_sqlite(tmp_path: Path, task: str, workers: int) -> None:
    """``lrtune study --rungs 1,3,9 --share-trunks`` (in process, and with two worker
    processes): every promoted wsd/constant trial started from its source's trunk, costs
    only its new epochs (the budget holds), reports one value per epoch, and its result is
    the one its recorded config gives from scratch."""
    url = f"sqlite:///{tmp_path / 'trunks.db'}"
    argv = [
        "study", "--task", task, "--storage", url, "--rungs", "1,3,9", "--epochs", "9",
        "--share-trunks", "--schedules", "wsd,constant", "--samplers", "tpe", "--prior",
        "none", "--trials", "3", "--confirm", "0", "--device", "cpu", "--group", "g",
        "--lr-low", "1e-4", "--lr-high", "0.3", "--workers", str(workers),
    ]  # fmt: skip
    assert main(argv) == 0
    study = optuna.load_study(study_name="g.tpe.none", storage=url)
    ladder = Ladder.from_attrs(study.user_attrs)
    assert ladder is not None and ladder.share
    # A second worker's duplicate promotion steps back as surplus (FAIL): not trained.
    trials = [t for t in study.trials if t.state in FINISHED]
    by_number = {t.number: t for t in trials}
    promoted = [t for t in trials if "promotion" in t.user_attrs]
    assert promoted and any(t.user_attrs["rung"] == ladder.top for t in promoted)
    for t in promoted:
        source = by_number[t.user_attrs["promotion"]["from"]]
        start = t.user_attrs[START_ATTR]  # every promotion here is wsd or constant
        assert start["from"] == source.number
        assert start["step"] == source.user_attrs[TRUNK_ATTR]["step"]
        epochs = t.user_attrs["epochs"]
        assert compute(t, ladder) == pytest.approx((epochs - start["epochs"]) / 9)
        assert sorted(t.intermediate_values) == list(range(epochs))
    spent = sum(compute(t, ladder) for t in trials)
    assert 3 <= spent < 3 + 1  # over by less than one full trial
    # A top-rung result is what its recorded config trains from scratch, bit for bit.
    top = next(t for t in promoted if t.state == optuna.trial.TrialState.COMPLETE
               and t.user_attrs["rung"] == ladder.top)  # fmt: skip
    config = top.user_attrs["config"]
    sched = {k: v for k, v in config["schedule"].items() if k != "name"}
    alone = TrainConfig(
        lr=config["optimizer"]["lr"],
        optimizer="adam",
        schedule=config["schedule"]["name"],
        schedule_params=sched,
        epochs=9,
        seed=0,
        device="cpu",
    )
    assert train(task, alone).value == top.value


def test_a_promotion_costs_only_its_epochs_past_the_trunk() -> None:
    ladder = Ladder(rungs=(1, 3, 9), eta=3, budget=4.0, share=True)
    trunk = {"artifact": "a", "step": 6, "epoch": 0, "batch": 6, "epochs": 0.75, "warmup": 1}
    promotion = {"from": 0, "rule": "top", "rank": 1, "of": 3, TRUNK_ATTR: trunk}
    attrs = {"rung": 1, "epochs": 3, "promotion": promotion}
    waiting = optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, user_attrs=attrs)
    assert compute(waiting, ladder) == pytest.approx(2.25 / 9)  # planned from its record
    # Finished: what it did. Started from the trunk: 2.25 epochs; fell back to scratch: 3.
    started = {**attrs, START_ATTR: {"from": 0, "step": 6, "epochs": 0.75}}
    done = optuna.trial.create_trial(value=0.1, user_attrs=started, intermediate_values={})
    assert compute(done, ladder) == pytest.approx(2.25 / 9)
    scratch = optuna.trial.create_trial(value=0.1, user_attrs=attrs)
    assert compute(scratch, ladder) == pytest.approx(3 / 9)
    cleared = {**attrs, START_ATTR: None}  # a retry that could not use the trunk
    running = optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs=cleared)
    assert compute(running, ladder) == pytest.approx(3 / 9)
