"""``lrtune.hf``: a ``transformers.Trainer`` set-up as a task (tiny GPT-2 built from a
config, no download): range test, study with both priors, a worker on PostgreSQL, export
``--format hf`` and a Trainer built from it; the bad inputs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; make sure of it
pytest.importorskip("transformers", reason="the hf extra is not installed")

from transformers import Trainer, TrainerCallback, TrainingArguments

from lrtune.cli import main
from lrtune.errors import UserError
from lrtune.hf import hf_task
from lrtune.training.trainer import TrainConfig, run_trial

STUDIES = Path(__file__).resolve().parents[1] / "studies"
sys.path.insert(0, str(STUDIES))
import hf_tiny  # noqa: E402

TASK = f"{STUDIES / 'hf_tiny.py'}:make"


class LrLog(TrainerCallback):
    """The LR of every optimizer step Trainer takes."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.lrs.append(kwargs["optimizer"].param_groups[0]["lr"])


def _args(**kw: Any) -> TrainingArguments:
    return TrainingArguments(output_dir="unused", per_device_train_batch_size=16, **kw)


def test_bad_arguments_are_one_line() -> None:
    train = hf_tiny._windows(32, 0)
    with pytest.raises(UserError, match="eval_dataset is missing"):
        hf_task(hf_tiny.model_init, train, None, args=_args())
    with pytest.raises(UserError, match=r"args.learning_rate is set .*lrtune sets"):
        hf_task(hf_tiny.model_init, train, train, args=_args(learning_rate=1e-3))
    with pytest.raises(UserError, match=r"args\.lr_scheduler_type"):
        hf_task(hf_tiny.model_init, train, train, args=_args(lr_scheduler_type="cosine"))


def test_a_metric_the_evaluation_does_not_give_is_one_line() -> None:
    data = hf_tiny._windows(32, 0)
    with pytest.raises(UserError, match="without compute_metrics the evaluation gives eval_loss"):
        hf_task(hf_tiny.model_init, data, data, args=_args(), metric="accuracy")
    make = hf_task(
        hf_tiny.model_init,
        data,
        data,
        args=_args(num_train_epochs=1),
        metric="acc",
        compute_metrics=lambda prediction: {"accuracy": 0.5},  # no "acc"
    )
    config = TrainConfig(lr=1e-3, optimizer="adamw", epochs=1, device="cpu")
    with pytest.raises(UserError, match=r"no 'eval_acc' .*gives: eval_accuracy, eval_loss"):
        run_trial(make, config, lambda value, step: None)


def test_the_study_runs_trainer_with_lrtunes_schedule(tmp_path: Path) -> None:
    log = LrLog()
    data = hf_tiny._windows(64, 0)
    make = hf_task(
        hf_tiny.model_init, data, data[:32], args=_args(num_train_epochs=2), callbacks=[log]
    )
    reports: list[tuple[int, float]] = []
    config = TrainConfig(lr=3e-3, optimizer="adamw", schedule="onecycle", epochs=2, device="cpu")
    result = run_trial(make, config, lambda value, step: reports.append((step, value)))
    from lrtune.schedules import schedule_lr

    total = len(log.lrs)
    assert total == 8  # 64 rows / 16 per batch x 2 epochs
    assert log.lrs == pytest.approx([schedule_lr("onecycle", s, total, 3e-3) for s in range(8)])
    assert [s for s, _ in reports] == [0, 1] and result.value == reports[-1][1]
    # Trainer's decay split: biases and norms without weight decay.
    assert result.config["optimizer"]["name"] == "adamw"


@pytest.mark.slow
@pytest.mark.postgres
def test_rangetest_study_worker_and_export(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["rangetest", "--task", TASK, "--seeds", "1", "--device", "cpu"]) == 0
    assert "LR range test: adamw" in capsys.readouterr().out
    common = ["--task", TASK, "--device", "cpu", "--storage", pg_url]
    create = ["study", *common, "--samplers", "tpe", "--prior", "rangetest,none", "--trials", "2"]
    create += ["--schedules", "cosine", "--confirm", "0", "--rangetest-seeds", "1"]
    assert main([*create, "--create-only"]) == 0
    assert main(["worker", "--group", "hf-tiny", "--storage", pg_url, "--device", "cpu"]) == 0
    assert main(create) == 0  # everything done: it compares
    out = capsys.readouterr().out
    assert "hf-tiny.tpe.rangetest" in out and "hf-tiny.tpe.none" in out
    study = optuna.load_study(study_name="hf-tiny.tpe.rangetest", storage=pg_url)
    assert len(study.get_trials()) == 2 and study.user_attrs["rangetest"]["optimizer"] == "adamw"
    best = study.best_trial
    code = main(["export", "--study", study.study_name, "--storage", pg_url, "--format", "hf"])
    assert code == 0
    text = capsys.readouterr().out
    namespace: dict[str, Any] = {}
    exec(text, namespace)
    fields = namespace["training_args"]
    assert fields["lr_scheduler_type"] == "cosine" and fields["optim"] == "adamw_torch"
    assert fields["learning_rate"] == best.params["lr"]
    # A Trainer built from the exported arguments: the trial's LR at every step.
    trial_lrs, trainer_lrs = LrLog(), LrLog()
    make = hf_task(
        hf_tiny.model_init,
        hf_tiny._windows(256, 0),
        hf_tiny._windows(64, 200_000),
        args=_args(num_train_epochs=2, eval_strategy="epoch"),
        callbacks=[trial_lrs],
    )
    cfg = best.user_attrs["config"]
    sched = {k: v for k, v in cfg["schedule"].items() if k != "name"}
    run_trial(
        make,
        TrainConfig(
            lr=cfg["optimizer"]["lr"],
            optimizer="adamw",
            schedule="cosine",
            schedule_params=sched,
            epochs=cfg["epochs"],
            device="cpu",
        ),
        lambda value, step: None,
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to="none", **fields
    )
    trainer = Trainer(
        model=hf_tiny.model_init(),
        args=args,
        train_dataset=hf_tiny._windows(256, 0),
        callbacks=[trainer_lrs],
    )
    trainer.train()
    assert len(trainer_lrs.lrs) == cfg["total_steps"] == len(trial_lrs.lrs)
    assert trainer_lrs.lrs == pytest.approx(trial_lrs.lrs, rel=1e-9)


def test_export_hf_of_a_schedule_trainer_lacks_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    argv = ["study", "--task", "digits", "--samplers", "random", "--prior", "none"]
    argv += ["--trials", "1", "--epochs", "1", "--schedules", "onecycle", "--confirm", "0"]
    assert main([*argv, "--device", "cpu", "--storage", url]) == 0
    capsys.readouterr()
    code = main(["export", "--study", "digits.random.none", "--storage", url, "--format", "hf"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "schedule onecycle" in err and "optimizers=(opt, sched)" in err
