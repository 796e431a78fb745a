"""The user's own training code (SPEC "Your own training code"): any batches, precision,
accumulation, clipping, and the task's own loop (``fit``) through trials and studies."""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections import namedtuple
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrtune.cli import main
from lrtune.errors import UserError
from lrtune.rangetest import range_test
from lrtune.training.data import to_device
from lrtune.training.tasks import Task, check_task, digits
from lrtune.training.trainer import TrainConfig, train
from tests.conftest import REPO

CPU = torch.device("cpu")


@dataclasses.dataclass
class Pair:
    a: torch.Tensor
    meta: str


def test_to_device_walks_nested_batches() -> None:
    Point = namedtuple("Point", "x y")
    batch = {"t": torch.ones(2), "rest": [Point(torch.zeros(1), 3), (Pair(torch.ones(1), "m"),)]}
    moved = to_device(batch, torch.device("meta"))
    assert moved["t"].device.type == "meta"
    assert isinstance(moved["rest"][0], Point) and moved["rest"][0].x.device.type == "meta"
    assert moved["rest"][0].y == 3
    inner = moved["rest"][1][0]
    assert isinstance(inner, Pair) and inner.a.device.type == "meta" and inner.meta == "m"


def _digits_loaders(batch: int = 64) -> tuple[DataLoader, DataLoader]:
    t = digits(0)
    return (
        DataLoader(TensorDataset(*t.train), batch_size=batch, shuffle=True),
        DataLoader(TensorDataset(*t.val), batch_size=512),
    )


def test_a_dataloader_task_trains_like_tensor_data() -> None:
    tr, va = _digits_loaders()
    task = digits(0)
    task.train, task.val = tr, va
    check_task(task)
    result = train(task, TrainConfig(lr=0.05, epochs=3, device="cpu"))
    assert not result.diverged and result.total_steps == 3 * len(tr)
    assert result.history[-1] < 0.5 < 2.0 < train(task, TrainConfig(lr=1e-6, epochs=1)).value


def _dict_task(**fields: Any) -> Task:
    t = digits(0)
    x, y = t.train
    items = [{"pixels": x[i], "label": y[i]} for i in range(len(y))]
    vitems = [{"pixels": t.val[0][i], "label": t.val[1][i]} for i in range(len(t.val[1]))]
    return Task(
        model=t.model,
        train=DataLoader(items, batch_size=64, shuffle=True),
        val=DataLoader(vitems, batch_size=256),
        loss_fn=F.cross_entropy,
        step_loss=lambda m, b: F.cross_entropy(m(b["pixels"]), b["label"]),
        **fields,
    )


def test_dict_batches_train_with_step_loss_and_mean_val_loss() -> None:
    task = _dict_task(epochs=2)
    result = train(task, TrainConfig(lr=0.05, device="cpu"))
    assert not result.diverged and result.history[-1] < result.history[0] < 2.0
    # evaluate= replaces the default mean step_loss
    task.evaluate = lambda model, val: (
        sum(float((model(b["pixels"]).argmax(1) == b["label"]).float().mean()) for b in val)
        / len(list(val))
    )
    task.metric_name, task.direction = "accuracy", "maximize"
    assert train(task, TrainConfig(lr=0.05, device="cpu")).value > 0.8


def test_a_dict_batch_without_step_loss_says_what_to_add() -> None:
    task = _dict_task()
    task.step_loss = None
    with pytest.raises(TypeError, match="give the task a step_loss"):
        train(task, TrainConfig(lr=0.05, epochs=1, device="cpu"))
    with pytest.raises(TypeError, match="give the task a step_loss"):
        range_test(task, seeds=1, steps=30, device="cpu")


class _Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_accumulating_k_batches_of_b_equals_one_batch_of_k_b() -> None:
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(96, 5, generator=gen), torch.randn(96, 1, generator=gen)
    weights = []
    for batch, accumulate in ((8, 4), (32, 1)):
        task = Task(
            _Linear(), (x, y), (x, y), nn.MSELoss(), batch_size=batch, accumulate=accumulate
        )
        config = TrainConfig(
            lr=0.1, epochs=2, optimizer_params={"momentum": 0.0}, schedule="cosine", device="cpu"
        )
        result = train(task, config)
        assert result.total_steps == 6 and result.steps == 6  # one schedule step per update
        assert result.model is not None
        weights.append(torch.cat([p.detach().flatten() for p in result.model.parameters()]))
    assert not torch.equal(weights[0], torch.cat([p.flatten() for p in _Linear().parameters()]))
    assert torch.allclose(weights[0], weights[1], atol=1e-5, rtol=0)


def test_bf16_on_cpu_trains() -> None:
    task = digits(0)
    task.precision = "bf16"
    result = train(task, TrainConfig(lr=0.05, epochs=3, device="cpu"))
    assert not result.diverged and result.history[-1] < 0.5 * result.history[0] + 0.5
    assert result.history[-1] < 1.0 and result.config["precision"] == "bf16"
    clipped = train(task, TrainConfig(lr=0.05, epochs=1, device="cpu", clip_grad_norm=0.5))
    assert clipped.history[0] != result.history[0] and clipped.config["clip_grad_norm"] == 0.5


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"precision": "fp8"}, "precision is 'fp8', allowed are fp32, bf16, fp16"),
        ({"accumulate": 0}, "accumulate must be a positive int"),
        ({"clip_grad_norm": -1.0}, "clip_grad_norm must be a positive number"),
        ({"train": iter([(torch.zeros(2, 64), torch.zeros(2))])}, "one-shot iterator"),
        ({"train": []}, "train has 0 batches"),
    ],
)
def test_bad_training_options_are_one_line(change: dict[str, Any], expected: str) -> None:
    task = dataclasses.replace(digits(0), **change)
    with pytest.raises(UserError, match=expected) as info:
        check_task(task)
    assert "\n" not in str(info.value)


def test_fp16_on_cpu_is_one_line() -> None:
    task = dataclasses.replace(digits(0), precision="fp16")
    check_task(task)  # fine as a task: it needs CUDA only when it trains
    expected = "precision fp16 needs CUDA .*use bf16 on cpu"
    with pytest.raises(UserError, match=expected):
        train(task, TrainConfig(lr=0.05, epochs=1, device="cpu"))
    with pytest.raises(UserError, match=expected):
        range_test(task, seeds=1, steps=30, device="cpu")
    with pytest.raises(UserError, match=expected):
        range_test("digits", precision="fp16", seeds=1, steps=30, device="cpu")


def test_the_range_test_takes_accumulate_micro_batches_per_lr_step() -> None:
    calls: list[int] = []

    def counting(model: nn.Module, batch: Any) -> torch.Tensor:
        calls.append(len(batch[0]))
        return F.cross_entropy(model(batch[0]), batch[1])

    task = dataclasses.replace(digits(0), step_loss=counting, accumulate=2)
    result = range_test(task, seeds=1, steps=30, end_lr=0.01, device="cpu")
    assert len(result.lrs[0]) == 30 and len(calls) == 60
    calls.clear()
    range_test(task, seeds=1, steps=30, end_lr=0.01, device="cpu", accumulate=3)
    assert len(calls) == 90


def test_an_empty_dataloader_is_one_line() -> None:
    empty = DataLoader(TensorDataset(torch.zeros(0, 64), torch.zeros(0, dtype=torch.long)))
    task = dataclasses.replace(digits(0), train=empty)
    for run in (
        lambda: check_task(task),
        lambda: train(task, TrainConfig(lr=0.05, epochs=1, device="cpu")),
        lambda: range_test(task, seeds=1, steps=30, device="cpu"),
    ):
        with pytest.raises(UserError, match="train has 0 batches"):
            run()


def test_an_empty_loader_stops_a_study_before_anything_is_written(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.py"
    path.write_text(
        "import torch\nfrom torch.utils.data import DataLoader, TensorDataset\n"
        "from lrtune.training.tasks import digits\n"
        "def make(seed):\n    t = digits(seed)\n"
        "    t.train = DataLoader(TensorDataset(torch.zeros(0, 64), torch.zeros(0)))\n"
        "    return t\n"
    )
    assert _study(sqlite_url, f"{path}:make", "--prior", "none", "--trials", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train has 0 batches" in err[0]
    assert optuna.get_all_study_names(sqlite_url) == []


def test_the_range_test_tracks_a_metric_on_dict_batches() -> None:
    result = range_test(_dict_task(), seeds=1, steps=30, end_lr=0.1, track_metric=True)
    assert result.metric_name == "val_loss" and len(result.metrics[0]) >= 10
    assert all(math.isfinite(v) for v in result.metrics[0])


TASK_FILE = """
import math
import torch
import torch.nn.functional as F
from torch import nn
from lrtune import Task
from lrtune.training.tasks import digits


def fit(hp, report):
    torch.manual_seed(hp.seed)
    t = digits(hp.seed)
    model = t.model.to(hp.device)
    (x, y), (vx, vy) = t.train, t.val
    optimizer = hp.build_optimizer(model.parameters())
    per_epoch = math.ceil(len(y) / hp.batch_size)
    scheduler = hp.build_scheduler(optimizer, hp.epochs * per_epoch)
    for epoch in range(hp.epochs):
        for i in range(0, len(y), hp.batch_size):
            loss = F.cross_entropy(model(x[i:i + hp.batch_size]), y[i:i + hp.batch_size])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            value = float(F.cross_entropy(model(vx), vy))
        report(value, epoch)
    return value


def _task(fit_fn, step_loss=None):
    t = digits(0)
    t.fit, t.step_loss, t.name = fit_fn, step_loss, "fit-task"
    return t


def make(seed):
    return _task(fit)


def make_raising(seed):
    def broken(hp, report):
        raise RuntimeError("the user's loop broke\\nsecond line")
    return _task(broken)


def make_optuna_error(seed):
    import optuna

    def broken(hp, report):
        raise optuna.exceptions.DuplicatedStudyError("my own study exists")
    return _task(broken)


def make_own_db_error(seed):
    import sqlalchemy.exc

    def broken(hp, report):
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("my database is down"))
    return _task(broken)


def make_generator_exit(seed):
    def broken(hp, report):
        raise GeneratorExit
    return _task(broken)


def make_global_step(seed):
    def counts_samples(hp, report):
        report(0.5, 3_000_000_000)  # a sample count past 2**31 as the step
        return 0.5
    return _task(counts_samples)


def make_nan(seed):
    return _task(lambda hp, report: float("nan"))


def make_text(seed):
    return _task(lambda hp, report: "0.5")
"""


@pytest.fixture
def fit_file(tmp_path: Path) -> Path:
    path = tmp_path / "fit_task.py"
    path.write_text(textwrap.dedent(TASK_FILE))
    return path


def _study(url: str, task: str, *args: str) -> int:
    return main(
        ["study", "--storage", url, "--task", task, "--samplers", "random", "--seed", "0",
         "--epochs", "2", "--pruner", "none", *args]
    )  # fmt: skip


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_fit_task_runs_a_study_with_reports(fit_file: Path, sqlite_url: str) -> None:
    assert _study(sqlite_url, f"{fit_file}:make", "--prior", "none", "--trials", "3") == 0
    trials = _trials(sqlite_url, "fit-task.random.none")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.value == t.intermediate_values[1]
        config = t.user_attrs["config"]
        assert config["epochs"] == 2 and config["optimizer"]["lr"] == t.params["lr"]
        assert config["schedule"]["name"] == t.params["schedule"]


def test_a_fit_that_raises_fails_its_trials_with_the_reason(
    fit_file: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _study(sqlite_url, f"{fit_file}:make_raising", "--prior", "none", "--trials", "2")
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the user's loop broke" in err[0]
    trials = _trials(sqlite_url, "fit-task.random.none")
    assert trials and all(t.state.name == "FAIL" for t in trials)
    reasons = {t.user_attrs["fail_reason"] for t in trials}
    assert reasons == {"RuntimeError: the user's loop broke"}


USER_ERRORS = {
    "optuna_error": "DuplicatedStudyError: my own study exists",
    "own_db_error": "OperationalError: (builtins.Exception) my database is down",
    "generator_exit": "GeneratorExit",
    "global_step": "ValueError: report(value, step=3000000000): steps go from 0 to 2**31 - 1",
}


def _user_error_study(url: str, fit_file: Path, kind: str, capsys: pytest.CaptureFixture[str]):
    code = _study(url, f"{fit_file}:make_{kind}", "--prior", "none", "--trials", "2")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"lrtune study: error: 3 trials failed in a row: {USER_ERRORS[kind]}")
    trials = _trials(url, "fit-task.random.none")
    assert [t.state.name for t in trials] == ["FAIL"] * 3
    for t in trials:
        assert t.user_attrs["fail_reason"].startswith(USER_ERRORS[kind])


@pytest.mark.parametrize("kind", sorted(USER_ERRORS))
def test_what_a_fit_raises_is_the_task_s_error_whatever_its_type(
    kind: str,
    fit_file: Path,
    sqlite_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Errors are told apart by where they were raised, not by their type: an OptunaError,
    a database error of the user's own or GeneratorExit raised by the task's code fail its
    trial with the reason (they crashed the study, were taken for a storage outage, or left
    the trial RUNNING), and so does a step no storage holds."""
    monkeypatch.setenv("LRTUNE_STORAGE_RETRY_SECONDS", "2")  # were it taken for an outage
    _user_error_study(sqlite_url, fit_file, kind, capsys)


@pytest.mark.postgres
def test_a_step_past_2_31_fails_the_trial_not_the_study_on_postgresql(
    fit_file: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL keeps steps in a 32-bit column: ``integer out of range`` stopped the whole
    study as a storage error."""
    _user_error_study(pg_url, fit_file, "global_step", capsys)


def test_an_error_inside_report_is_lrtune_s_whatever_the_fit_did_with_it(
    fit_file: Path,
) -> None:
    """The same type (a database OperationalError) is the storage's when raised inside
    ``report`` (even if the fit turned it into another error) and the task's when the fit
    raised it itself."""
    import sqlalchemy.exc

    from lrtune.search.objective import TaskError, run_task
    from lrtune.training.trainer import TrainConfig

    lost = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    def report(value: float, step: int) -> None:
        raise lost

    config = TrainConfig(lr=0.01, epochs=1, device="cpu")
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        run_task(f"{fit_file}:make", config, report)  # the fit lets it through
    assert caught.value is lost
    own = f"{fit_file}:make_own_db_error"
    with pytest.raises(TaskError, match="my database is down"):
        run_task(own, config, lambda value, step: None)
    wraps = fit_file.with_name("wraps.py")
    wraps.write_text(
        "from fit_task import _task\n"
        "def make(seed):\n"
        "    def fit(hp, report):\n"
        "        try:\n"
        "            report(0.5, 0)\n"
        "        except Exception as exc:\n"
        "            raise RuntimeError('the loop wrapped it') from exc\n"
        "    return _task(fit)\n"
    )
    with pytest.raises(sqlalchemy.exc.OperationalError) as caught:
        run_task(f"{wraps}:make", config, report)
    assert caught.value is lost


@pytest.mark.slow
def test_a_fit_returning_nan_is_pruned_and_text_fails(fit_file: Path, sqlite_url: str) -> None:
    assert _study(sqlite_url, f"{fit_file}:make_nan", "--prior", "none", "--trials", "2") == 0
    trials = _trials(sqlite_url, "fit-task.random.none")
    assert [t.state.name for t in trials] == ["PRUNED"] * 2
    assert trials[0].user_attrs["prune_reason"] == "diverged: fit returned nan"
    _study(sqlite_url, f"{fit_file}:make_text", "--prior", "none", "--trials", "1",
           "--group", "text")  # fmt: skip
    failed = _trials(sqlite_url, "text.random.none")
    assert failed[0].state.name == "FAIL"
    assert failed[0].user_attrs["fail_reason"] == (
        "TypeError: fit returned str, expected a number (the metric)"
    )


def test_prior_rangetest_on_fit_without_step_loss_is_one_line(
    fit_file: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _study(sqlite_url, f"{fit_file}:make", "--prior", "rangetest", "--trials", "1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has its own fit but no step_loss" in err[0]
    assert "--prior none" in err[0]
    assert optuna.get_all_study_names(sqlite_url) == []


def test_the_range_test_names_a_batch_the_model_rejects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.py"
    path.write_text(
        "import torch\nfrom lrtune.training.tasks import digits\n"
        "def make(seed):\n    t = digits(seed)\n"
        "    t.train = (torch.zeros(100, 10), torch.zeros(100, dtype=torch.long))\n    return t\n"
    )
    assert main(["rangetest", "--task", f"{path}:make", "--seeds", "1", "--steps", "30"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrtune rangetest: error: range test on ")
    assert "mat1 and mat2 shapes cannot be multiplied" in err[0]


def _example_study(url: str, spec: str, *args: str) -> int:
    return main(
        ["study", "--storage", url, "--spec", spec, "--samplers", "random", "--trials", "1",
         "--epochs", "1", "--seed", "0", *args]
    )  # fmt: skip


@pytest.mark.slow
def test_the_dict_task_example_runs_rangetest_and_study(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(REPO)
    args = ["rangetest", "--task", "studies/dict_task.py:make", "--seeds", "1", "--steps", "40"]
    assert main(args) == 0
    assert "diagnosis    ok" in capsys.readouterr().out
    assert _example_study(sqlite_url, "studies/dict-task.toml", "--prior", "rangetest,none") == 0
    for prior in ("rangetest", "none"):
        (trial,) = _trials(sqlite_url, f"dict-task.random.{prior}")
        assert trial.state.name == "COMPLETE" and 0 in trial.intermediate_values


@pytest.mark.slow
def test_the_own_loop_example_runs_a_study(sqlite_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)
    assert _example_study(sqlite_url, "studies/own-loop.toml", "--prior", "rangetest,none") == 0
    for prior in ("rangetest", "none"):
        (trial,) = _trials(sqlite_url, f"own-loop.random.{prior}")
        assert trial.state.name == "COMPLETE" and list(trial.intermediate_values) == [0]
        config = trial.user_attrs["config"]
        assert config["precision"] == "bf16" and config["accumulate"] == 2
        assert config["total_steps"] == 22  # 1 epoch of 44 micro-batches, 2 per update


@pytest.mark.slow
def test_the_lightning_example_runs_rangetest_and_study(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytorch_lightning")
    monkeypatch.chdir(REPO)
    args = ["rangetest", "--task", "studies/lightning_task.py:make", "--seeds", "1"]
    assert main([*args, "--steps", "40"]) == 0
    assert _example_study(sqlite_url, "studies/lightning.toml") == 0
    (trial,) = _trials(sqlite_url, "lightning-digits.random.none")
    assert trial.state.name == "COMPLETE" and list(trial.intermediate_values) == [0]
    assert trial.user_attrs["config"]["optimizer"]["lr"] == trial.params["lr"]


@pytest.mark.slow
def test_a_fit_task_through_create_only_and_a_worker_on_postgresql(
    fit_file: Path, pg_url: str
) -> None:
    task = f"{fit_file}:make"
    assert _study(pg_url, task, "--prior", "none", "--trials", "3", "--create-only") == 0
    assert _trials(pg_url, "fit-task.random.none") == []
    assert main(["worker", "--group", "fit-task", "--storage", pg_url]) == 0
    trials = _trials(pg_url, "fit-task.random.none")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # exactly the budget
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)


def test_an_fp16_update_skipped_on_overflow_reports_no_step() -> None:
    # torch's grad scaler also runs on CPU, so the skip logic is tested without a GPU
    # (fp16 training itself is refused on CPU: test_fp16_on_cpu_is_one_line).
    from lrtune.training.trainer import Updater

    model = nn.Linear(3, 1)
    with torch.no_grad():  # small fixed weights: a random init's scaled gradient may overflow
        model.weight.fill_(0.01)
        model.bias.zero_()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    updater = Updater(
        model, opt, lambda m, b: m(b).float().pow(2).mean(), precision="fp16", clip=1.0, device=CPU
    )
    updater.backward(updater.forward(torch.ones(4, 3)))
    assert updater.step() is True
    before = model.weight.detach().clone()
    updater.backward(updater.forward(torch.full((4, 3), 1e30)))  # gradients overflow
    assert updater.step() is False
    assert torch.equal(before, model.weight)  # the update was skipped
