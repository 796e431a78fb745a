"""Issue 5 acceptance 1 and 2 on a REAL ``lrtune study`` run (not a hand-made study).

1. ``lrtune export`` of the TPE study gives the best trial's lr and schedule;
   ``--batch-size`` rescales the lr exactly; a study with no finished trial gives exit 2.
2. ``load_config`` rebuilds optimizer and scheduler whose LR equals the trial's at every
   step (the closed form, and what the trainer really trained with) and peaks at the
   exported lr.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

import lrtune
from lrtune import cli, schedules
from lrtune.training import trainer
from lrtune.training.trainer import TrainConfig

STUDY = "e2e.tpe.rangetest"
SPEC = """\
task = "digits"
rangetest_seeds = 1
schedules = ["onecycle", "warmup_cosine", "step", "cyclic"]
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real group ``e2e``: TPE with the range-test prior, 4 trials of 2 epochs."""
    tmp = tmp_path_factory.mktemp("export_e2e")
    spec = tmp / "e2e.toml"
    spec.write_text(SPEC, encoding="utf-8")
    storage = f"sqlite:///{tmp / 'lrtune.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LRTUNE_ARTIFACTS", raising=False)
        mp.chdir(tmp)
        args = ["study", "--spec", str(spec), "--group", "e2e", "--prior", "rangetest"]
        args += ["--samplers", "tpe", "--trials", "4", "--epochs", "2", "--device", "cpu"]
        assert cli.main([*args, "--storage", storage]) == 0
    return storage


def _study(url: str, name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def _export(url: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert cli.main(["export", "--study", STUDY, "--storage", url, *extra]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert isinstance(data, dict)
    return data


@pytest.mark.slow
def test_export_gives_best_trial(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    study = _study(url)
    best = study.best_trial
    config = best.user_attrs["config"]
    data = _export(url, capsys)
    assert data["optimizer"]["lr"] == best.params["lr"]
    assert data["optimizer"] == config["optimizer"]
    assert data["schedule"]["name"] == best.params["schedule"]
    assert data["schedule"] == config["schedule"]
    assert data["batch_size"] == config["batch_size"]
    source = data["source"]
    assert source["study"] == STUDY
    assert source["trial"] == best.number
    assert source["value"] == best.value
    assert source["metric"] == study.user_attrs["metric"] == "val_loss"
    assert source["total_steps"] == config["total_steps"]
    # The lr lies inside the range test's bounds, which the study searched.
    low, high = study.user_attrs["bounds"]
    assert low <= data["optimizer"]["lr"] <= high


def test_batch_size_rescales_exactly(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    best = _study(url).best_trial
    trained_bs = best.user_attrs["config"]["batch_size"]
    lr = best.params["lr"]
    for target in (trained_bs * 2, trained_bs // 4, trained_bs * 16):
        data = _export(url, capsys, "--batch-size", str(target))
        assert data["optimizer"]["lr"] == lr * target / trained_bs
        assert math.isclose(data["optimizer"]["lr"] / lr, target / trained_bs, rel_tol=1e-15)
        assert data["batch_size"] == target
        assert data["source"]["trained_batch_size"] == trained_bs
        assert data["source"]["trained_lr"] == lr
        assert ("recommendation" in data) == (target / trained_bs >= 8)


def test_study_without_finished_trials_exit_2(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["study", "--group", "fresh", "--prior", "none", "--samplers", "tpe", "--create-only"]
    assert cli.main([*args, "--storage", url]) == 0
    capsys.readouterr()
    out = tmp_path / "lr.yaml"
    code = cli.main(["export", "--study", "fresh.tpe.none", "--storage", url, "--out", str(out)])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert "has no finished trial yet" in captured.err
    assert not out.exists()


def _record_trained_lrs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make ``lrtune.training.trainer.train`` record the LR of every optimizer step it takes."""
    seen: list[float] = []
    make = trainer.make_optimizer

    def recording(*args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        opt = make(*args, **kwargs)
        step = opt.step

        def wrapped(*a: Any, **k: Any) -> Any:
            seen.append(opt.param_groups[0]["lr"])
            return step(*a, **k)

        opt.step = wrapped  # type: ignore[method-assign]
        return opt

    monkeypatch.setattr(trainer, "make_optimizer", recording)
    return seen


def test_load_config_lr_equals_trial_at_every_step(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _study(url)
    best = study.best_trial
    config = best.user_attrs["config"]
    total = config["total_steps"]
    name = config["schedule"]["name"]
    params = {k: v for k, v in config["schedule"].items() if k != "name"}
    lr = config["optimizer"]["lr"]

    # What the trial trained with: the same training run again, every step's LR recorded.
    seen = _record_trained_lrs(monkeypatch)
    spec = study.user_attrs["spec"]
    rerun = trainer.train(
        study.user_attrs["task"],
        TrainConfig(
            lr=lr,
            optimizer=config["optimizer"]["name"],
            schedule=name,
            schedule_params=params,
            epochs=config["epochs"],
            seed=spec["seed"],
            device="cpu",
        ),
    )
    assert rerun.config == config  # the very run the trial recorded
    assert rerun.value == pytest.approx(best.value, rel=1e-5)
    assert len(seen) == total

    out = tmp_path / "lr.yaml"
    assert cli.main(["export", "--study", STUDY, "--storage", url, "--out", str(out)]) == 0
    capsys.readouterr()
    cfg = lrtune.load_config(out)
    assert cfg.lr == lr
    model = torch.nn.Linear(64, 10)  # a fresh model of the user's
    opt = cfg.build_optimizer(model.parameters())
    sched = cfg.build_scheduler(opt, total)
    got = []
    for step in range(total):
        current = opt.param_groups[0]["lr"]
        got.append(current)
        closed = schedules.schedule_lr(name, step, total, lr, **params)
        assert current == pytest.approx(closed, rel=1e-12, abs=0.0), step
        assert current == pytest.approx(seen[step], rel=1e-12, abs=0.0), step
        opt.step()
        sched.step()
    # The exported lr is the peak: never exceeded. A schedule whose peak falls between two
    # steps of this run (onecycle with pct_start * T not an integer, as in torch) comes
    # within a few percent; a run of 1000 steps puts every schedule's peak on a step.
    assert cfg.lr * 0.95 <= max(got) <= cfg.lr * (1 + 1e-12)
    opt = cfg.build_optimizer(torch.nn.Linear(64, 10).parameters())
    sched = cfg.build_scheduler(opt, 1000)
    peak = 0.0
    for _ in range(1000):
        peak = max(peak, opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert peak == pytest.approx(cfg.lr, rel=1e-12)


def test_every_trial_config_rebuilds_its_schedule(url: str, tmp_path: Path) -> None:
    """Not only the best: each finished trial's stored config rebuilds its own LR curve."""
    trials = [t for t in _study(url).trials if "config" in t.user_attrs]
    assert len(trials) >= 4
    for t in trials:
        config = t.user_attrs["config"]
        path = tmp_path / f"trial{t.number}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        cfg = lrtune.load_config(path)
        total = config["total_steps"]
        opt = cfg.build_optimizer([torch.nn.Parameter(torch.zeros(1))])
        sched = cfg.build_scheduler(opt, total)
        expected = schedules.schedule_curve(
            config["schedule"]["name"],
            total,
            config["optimizer"]["lr"],
            **{k: v for k, v in config["schedule"].items() if k != "name"},
        )
        for step in range(total):
            assert opt.param_groups[0]["lr"] == pytest.approx(expected[step], rel=1e-12, abs=0.0)
            opt.step()
            sched.step()
