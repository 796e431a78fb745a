"""``--log-dir``: TensorBoard runs per trial (per-step LR and loss, per-epoch metric) and
the range test's curve."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from lrtune.schedules import schedule_lr

pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_trial_run_holds_the_schedule_lr_at_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LRTUNE_LOG_DIR", "")  # main() sets it; restored after the test
    url = f"sqlite:///{tmp_path}/g.db"
    argv = "study --task digits --trials 2 --samplers random --prior rangetest --epochs 2"
    argv += " --schedules onecycle,warmup_cosine --confirm 0 --rangetest-seeds 1"
    argv += f" --device cpu --storage {url} --log-dir tb"
    assert main(argv.split()) == 0
    study = optuna.load_study(study_name="digits.random.rangetest", storage=url)
    for trial in study.get_trials():
        run = tmp_path / "tb" / "digits.random.rangetest" / f"trial-{trial.number:04d}"
        scalars = _scalars(run)
        config = trial.user_attrs["config"]
        total = config["total_steps"]
        sched = {k: v for k, v in config["schedule"].items() if k != "name"}
        expected = [
            schedule_lr(config["schedule"]["name"], s, total, config["optimizer"]["lr"], **sched)
            for s in range(total)
        ]
        assert [s for s, _ in scalars["lr"]] == list(range(total))
        assert [v for _, v in scalars["lr"]] == pytest.approx(expected, rel=1e-6)
        assert len(scalars["train_loss"]) == total
        assert [s for s, _ in scalars["val_loss"]] == [1, 2]
        assert scalars["val_loss"][-1][1] == pytest.approx(trial.value, rel=1e-6)
    curve = _scalars(tmp_path / "tb" / "digits" / "rangetest-sgd")
    rt = study.user_attrs["rangetest"]
    lrs = [v for _, v in curve[f"rangetest/seed-{rt['seeds'][0]}/lr"]]
    assert lrs == pytest.approx(rt["lrs"][0], rel=1e-6)


def test_rangetest_log_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LRTUNE_LOG_DIR", "")  # main() sets it; restored after the test
    assert (
        main(["rangetest", "--seeds", "1", "--steps", "30", "--device", "cpu", "--log-dir", "tb"])
        == 0
    )
    curve = _scalars(tmp_path / "tb" / "rangetest-digits")
    assert len(curve["rangetest/seed-0/lr"]) > 10
