"""`study --confirm K`: the group's K best configurations re-trained on fresh seeds."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pytest

from lrtune.cli import main
from lrtune.export import export_config
from lrtune.group import confirm, confirm_trial
from lrtune.search.objective import Surplus
from lrtune.search.states import group_study_names
from lrtune.training.trainer import TrainConfig, train

DIGITS = ["--epochs", "2", "--trials", "4", "--samplers", "random", "--prior", "none"]
COMPLETE = optuna.trial.TrialState.COMPLETE


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def _note(url: str, name: str) -> str:
    from optuna_dashboard._note import get_note_from_system_attrs  # type: ignore[import-untyped]

    storage = optuna.storages.RDBStorage(url)
    system = storage.get_study_system_attrs(storage.get_study_id_from_name(name))
    return str(get_note_from_system_attrs(system, None)["body"])


@pytest.mark.slow
def test_confirmations_recorded_resumed_and_exported(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["study", "--storage", sqlite_url, *DIGITS, "--confirm", "2", "--confirm-seeds", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    search = _trials(sqlite_url, "digits.random.none")
    done = _trials(sqlite_url, "digits.confirm")
    assert [t.state for t in done] == [COMPLETE, COMPLETE]
    # The two best single-seed configurations of the group, each on seeds 1000 and 1001.
    ranked = sorted((t for t in search if t.state == COMPLETE), key=lambda t: t.value)
    assert [t.user_attrs["source"]["trial"] for t in done] == [t.number for t in ranked[:2]]
    for t in done:
        record = t.user_attrs["confirm"]
        assert record["seeds"] == [1000, 1001]
        assert len(record["values"]) == 2
        assert record["mean"] == pytest.approx(statistics.fmean(record["values"]))
        assert record["sd"] == pytest.approx(statistics.stdev(record["values"]))
        assert t.value == pytest.approx(record["mean"])
        # A fresh seed gives another value than the search's seed 0.
        assert record["values"][0] != t.user_attrs["source"]["value"]
    best = min(done, key=lambda t: t.value)
    mean, sd = best.user_attrs["confirm"]["mean"], best.user_attrs["confirm"]["sd"]
    assert f"confirmed winner: val_loss {mean:.4g} ± {sd:.2g} over 2 fresh seeds" in out
    # The confirm study is no strategy row of the comparison, and `ls` shows it as such.
    assert group_study_names(optuna.storages.RDBStorage(sqlite_url), "digits") == [
        "digits.random.none"
    ]
    assert "digits.confirm" not in out.split("\n\n")[1]  # the table
    assert main(["ls", "--storage", sqlite_url]) == 0
    ls = capsys.readouterr().out
    rows = [line.split()[:4] for line in ls.splitlines()]
    assert ["digits.confirm", "confirm", "-", "2/2"] in rows

    # The dashboard note of the search study and `lrtune report` name the confirmed winner.
    line = f"confirmed winner: val_loss {mean:.4g} ± {sd:.2g} over 2 fresh seeds"
    assert line in _note(sqlite_url, "digits.random.none")
    assert line in _note(sqlite_url, "digits.confirm")
    report = tmp_path / "report"
    assert main(["report", "--group", "digits", "--out", str(report), "--storage", sqlite_url]) == 0
    md = (report / "report.md").read_text()
    assert md.count(line) == 2, md  # in the comparison's notes and the winner section

    # Re-running resumes: nothing is trained again.
    assert main(args) == 0
    capsys.readouterr()
    assert len(_trials(sqlite_url, "digits.confirm")) == 2
    assert len(_trials(sqlite_url, "digits.random.none")) == len(search)

    # export (of the search study) takes the best seed mean and says where it came from.
    config = export_config(sqlite_url, "digits.random.none")
    assert config["optimizer"]["lr"] == pytest.approx(best.params["lr"])
    source = config["source"]
    assert source["study"] == "digits.random.none"
    assert source["trial"] == best.user_attrs["source"]["trial"]
    assert source["confirmed"] == {
        "seeds": [1000, 1001],
        "mean": mean,
        "sd": sd,
        "study": "digits.confirm",
        "trial": best.number,
    }


@pytest.mark.slow
def test_confirm_more_than_exist_and_worker_runs_them(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*DIGITS, "--trials", "3", "--confirm", "5", "--confirm-seeds", "1"]
    assert main(["study", "--storage", sqlite_url, *args, "--create-only"]) == 0
    names = optuna.get_all_study_names(optuna.storages.RDBStorage(sqlite_url))
    assert "digits.confirm" not in names  # not before the budgets are met
    assert main(["worker", "--group", "digits", "--storage", sqlite_url]) == 0
    out = capsys.readouterr().out
    complete = [t for t in _trials(sqlite_url, "digits.random.none") if t.state == COMPLETE]
    n = len(complete)  # a diverged (pruned) search trial is no candidate
    assert 1 <= n <= 3
    assert f"worker done: {3 + n} trials" in out  # the search and the confirmations
    done = _trials(sqlite_url, "digits.confirm")
    assert [t.state for t in done] == [COMPLETE] * n
    assert all(t.user_attrs["confirm"]["seeds"] == [1000] for t in done)
    assert all(t.user_attrs["worker"] for t in done)
    # A second worker finds nothing left to do.
    assert main(["worker", "--group", "digits", "--storage", sqlite_url]) == 0
    assert "worker done: 0 trials" in capsys.readouterr().out
    # The comparison says, in one line, that fewer configurations existed than asked.
    assert main(["study", "--storage", sqlite_url, *args]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "fewer than --confirm" in line]
    assert lines == [
        f"confirm: only {n} distinct configurations finished, fewer than --confirm 5: "
        f"confirmed those {n}"
    ]
    assert len(_trials(sqlite_url, "digits.confirm")) == n


def test_duplicate_enqueued_by_two_workers_is_trained_once(sqlite_url: str) -> None:
    args = [*DIGITS, "--trials", "2", "--confirm", "0"]
    assert main(["study", "--storage", sqlite_url, *args]) == 0  # the search, no confirm
    storage = optuna.storages.RDBStorage(sqlite_url)
    confirm.set_options(storage, "digits", 1, 1)
    # Two workers saw the budgets met at once: both create the study and enqueue.
    study = confirm.ensure(storage, "digits")
    assert study is not None
    assert confirm.ensure(storage, "digits") is not None  # idempotent: nothing more
    waiting = study.get_trials(deepcopy=False)
    assert [t.state for t in waiting] == [optuna.trial.TrialState.WAITING]
    first = waiting[0]
    study.enqueue_trial(first.params, user_attrs=dict(first.user_attrs))  # a racing copy
    # Each of two workers takes one of the two waiting trials.
    loaded, objective, budget = confirm_trial.load(
        storage, "digits.confirm", task="digits", device="cpu", worker="w"
    )
    assert budget == 1
    for _ in range(2):
        loaded.optimize(objective, n_trials=1, catch=(Surplus,))
    trials = _trials(sqlite_url, "digits.confirm")
    assert [t.state for t in trials] == [COMPLETE, optuna.trial.TrialState.FAIL]
    assert trials[1].user_attrs["fail_reason"] == "surplus: trial 0 confirms this configuration"
    assert "confirm" not in trials[1].user_attrs  # it trained nothing
    # A worker then finds the budget met.
    assert main(["worker", "--group", "digits", "--storage", sqlite_url]) == 0
    assert len(_trials(sqlite_url, "digits.confirm")) == 2


LUCKY_TASK = """
import math
import torch
from torch import nn
from lrtune.training.tasks import Task


class Weight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.w.expand(len(x), 1)


def make(seed):
    # One SGD step with gradient 1: the trained weight is exactly -lr. The metric is best at
    # lr 0.1; on seed 0 only, lr >= 0.5 gets a lucky bonus (the outlier), and lr >= 2
    # diverges on any other seed.
    def metric(pred, _y):
        lr = -float(pred.detach()[0, 0])
        value = (math.log10(lr) + 1) ** 2 + 0.001 * (seed % 7)
        if seed == 0 and lr >= 0.5:
            value -= 1.5
        if seed != 0 and lr >= 2:
            return math.nan
        return value

    x, y = torch.zeros(8, 1), torch.zeros(8, 1)
    return Task(
        model=Weight(),
        train=(x, y),
        val=(x, y),
        loss_fn=lambda pred, _y: pred.mean() + 10,
        metric=metric,
        batch_size=8,
        epochs=1,
        name="lucky",
    )
"""


@pytest.mark.slow
def test_lucky_outlier_is_not_the_confirmed_winner(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = tmp_path / "lucky.py"
    task.write_text(LUCKY_TASK)
    spec = [
        *("--task", f"{task}:make", "--samplers", "random", "--prior", "none"),
        *("--schedules", "constant", "--pruner", "none", "--trials", "3", "--confirm", "3"),
    ]
    assert main(["study", "--storage", sqlite_url, *spec, "--create-only"]) == 0
    study = optuna.load_study(study_name="lucky.random.none", storage=sqlite_url)
    dists = {
        "lr": optuna.distributions.FloatDistribution(1e-6, 10.0, log=True),
        "schedule": optuna.distributions.CategoricalDistribution(["constant"]),
    }
    seed0 = {}
    for lr in (1.0, 0.1, 3.0):  # A: the lucky outlier, B: the real best, C: diverges later
        result = train(f"{task}:make", TrainConfig(lr=lr, optimizer="sgd", seed=0))
        seed0[lr] = result.value
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "schedule": "constant"},
                distributions=dists,
                value=result.value,
                user_attrs={"config": result.config, "seconds": result.seconds},
            )
        )
    assert seed0[1.0] < seed0[0.1] < seed0[3.0]  # on seed 0 the outlier A wins

    assert main(["study", "--storage", sqlite_url, *spec]) == 0
    out = capsys.readouterr().out
    assert "best trial: lucky.random.none #0, val_loss -0.5" in out  # single seed: A
    trials = {t.params["lr"]: t for t in _trials(sqlite_url, "lucky.confirm")}
    assert sorted(trials) == [0.1, 1.0, 3.0]
    assert trials[0.1].value < trials[1.0].value  # on fresh seeds B beats A
    # C diverged on a fresh seed: shown as such, counted as done, ranked last.
    c = trials[3.0]
    assert c.state == optuna.trial.TrialState.PRUNED
    assert c.user_attrs["prune_reason"].startswith("diverged on seed 1000: ")
    assert c.user_attrs["confirm"]["mean"] is None
    assert c.user_attrs["confirm"]["values"] == [None]
    assert "confirm: 1 configuration(s) diverged on a fresh seed and rank last: " in out
    assert "confirmed winner: val_loss 0.003 ± 0.0042 over 2 fresh seeds (lr 0.1" in out

    config = export_config(sqlite_url, "lucky.random.none")
    assert config["optimizer"]["lr"] == pytest.approx(0.1)
    assert config["source"]["trial"] == 1
    assert config["source"]["confirmed"]["mean"] == pytest.approx(trials[0.1].value)
    # The confirm study's dashboard note lists every configuration, the diverged one too.
    assert "| diverged | diverged |" in _note(sqlite_url, "lucky.confirm")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--confirm", "-1"], "argument --confirm: expected an integer >= 0, got '-1'"),
        (["--confirm-seeds", "0"], "argument --confirm-seeds: expected a positive integer"),
    ],
)
def test_bad_confirm_flags_one_line_exit_2(
    sqlite_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects it
        main(["study", "--storage", sqlite_url, *DIGITS, *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert err[0].startswith("lrtune study: error: ")
    assert not (tmp_path / "lrtune.db").exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("confirm = -1", "confirm: must be at least 0, got -1"),
        ("confirm_seeds = 0", "confirm_seeds: must be at least 1, got 0"),
        ('confirm = "3"', "confirm: expected an integer"),
    ],
)
def test_bad_confirm_spec_keys_one_line_exit_2(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, message: str
) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(line + "\n")
    assert main(["study", "--storage", sqlite_url, "--spec", str(spec), *DIGITS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "lrtune.db").exists()


def test_confirm_zero_turns_it_off(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["study", "--storage", sqlite_url, *DIGITS, "--trials", "2", "--confirm", "0"]) == 0
    out = capsys.readouterr().out
    assert "confirmed" not in out and "confirm:" not in out
    names = optuna.get_all_study_names(optuna.storages.RDBStorage(sqlite_url))
    assert names == ["digits.random.none"]
    stored = optuna.load_study(study_name=names[0], storage=sqlite_url).user_attrs["spec"]
    assert json.dumps(stored["confirm"]) == "0"
    assert export_config(sqlite_url, names[0])["source"].get("confirmed") is None
