"""Tests of lrtune.training.zoo (charlm, finetune) and digits-cnn: they build offline, train,
pass the range test, and a task's own optimizer is what a study or range test uses by default."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lrtune.cli import main
from lrtune.errors import UserError
from lrtune.search.spec import StudySpec, resolve_spec
from lrtune.training import zoo
from lrtune.training.loading import resolve_task
from lrtune.training.tasks import Task, check_task
from lrtune.training.trainer import TrainConfig, evaluate, train

ZOO = {"charlm": "adamw", "digits-cnn": "sgd", "finetune": "adam"}
LR = {"charlm": 0.01, "digits-cnn": 0.03, "finetune": 0.003}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_task_builds_and_one_epoch_lowers_the_loss(name: str) -> None:
    task = resolve_task(name)(0)
    check_task(task, name)
    assert task.name == name
    assert (task.optimizer or "sgd") == ZOO[name]
    from lrtune.training.data import Batches

    untrained = evaluate(task, task.model, Batches(task.val, 1024, torch.device("cpu")))
    result = train(
        name, TrainConfig(lr=LR[name], optimizer=ZOO[name], epochs=1, device="cpu", seed=0)
    )
    assert not result.diverged and len(result.history) == 1
    assert result.value < 0.8 * untrained, (result.value, untrained)


def test_charlm_data_is_fixed_text_shifted_by_one() -> None:
    a, b = zoo.charlm(0), zoo.charlm(1)
    assert torch.equal(a.train[0], b.train[0]) and torch.equal(a.val[1], b.val[1])
    x, y = a.train
    assert x.dtype == torch.long and x.shape == (len(x), zoo.CONTEXT)
    assert torch.equal(x[:, 1:], y[:, :-1])  # the target is the next character
    assert int(x.max()) < len(zoo.VOCAB)
    wa, wb = (next(t.model.parameters()) for t in (a, b))
    assert not torch.equal(wa, wb)
    # An untrained model is close to uniform over the vocabulary: ln(96) nats per char.
    with torch.no_grad():
        logits = a.model(a.val[0][:8])
    assert logits.shape == (8, zoo.CONTEXT, len(zoo.VOCAB))
    assert abs(float(a.loss_fn(logits, a.val[1][:8])) - math.log(len(zoo.VOCAB))) < 0.5


def test_charlm_is_causal() -> None:
    model = zoo.charlm(0).model.eval()
    ids = torch.randint(0, len(zoo.VOCAB), (1, zoo.CONTEXT))
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % len(zoo.VOCAB)
    with torch.no_grad():
        a, b = model(ids), model(changed)
    assert torch.allclose(a[0, :-1], b[0, :-1], atol=1e-5)  # no position sees the future
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_finetune_pretrains_once_and_the_body_helps() -> None:
    zoo._pretrained_body.cache_clear()
    before = torch.get_rng_state()
    zoo._pretrained_body()
    assert torch.equal(torch.get_rng_state(), before)  # the trial's seed is not shifted
    a, b = zoo.finetune(0), zoo.finetune(1)
    assert zoo._pretrained_body.cache_info().misses == 1
    assert len(a.train[0]) == zoo.FINETUNE_ROWS
    assert set(a.train[1].tolist()) == set(range(5))  # digits 5-9, relabelled 0-4
    # Same pretrained body for every seed; only the new head differs.
    assert torch.equal(a.model[0][0].weight, b.model[0][0].weight)
    assert not torch.equal(a.model[1].weight, b.model[1].weight)
    config = TrainConfig(lr=0.001, optimizer="adam", epochs=5, device="cpu")
    pretrained = train("finetune", config).value

    def scratch(seed: int) -> Task:
        task = zoo.finetune(seed)
        torch.manual_seed(seed)
        task.model[0].apply(
            lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None
        )
        return task

    # With 50 labels, the pretrained body must beat the same body from scratch.
    assert pretrained < 0.85 * train(scratch, config).value


@pytest.mark.parametrize("name", sorted(ZOO))
def test_rangetest_cli_is_ok_with_the_task_optimizer(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rt.json"
    code = main(["rangetest", "--task", name, "--seeds", "1", "--json", str(out)])
    assert code == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["diagnosis"] == "ok"
    assert result["optimizer"] == ZOO[name]
    assert f"LR range test: {ZOO[name]}" in capsys.readouterr().out


def test_spec_takes_the_task_optimizer_unless_one_is_named() -> None:
    assert resolve_spec({"task": "charlm"}).optimizer == "adamw"
    assert resolve_spec({"task": "finetune"}).optimizer == "adam"
    assert resolve_spec({}).optimizer == "sgd"  # digits has none: sgd as before
    assert resolve_spec({"task": "charlm"}, {"optimizer": "sgd"}).optimizer == "sgd"
    assert resolve_spec({"task": "charlm", "optimizer": "adam"}).optimizer == "adam"
    stored = resolve_spec({"task": "charlm"}, {"optimizer": "rmsprop"}).to_dict()
    assert StudySpec.from_dict(stored).optimizer == "rmsprop"  # workers keep the stored one


def test_a_task_with_an_unknown_optimizer_is_one_clear_error() -> None:
    def make(seed: int) -> Task:
        task = zoo.finetune(seed)
        task.optimizer = "lamb"
        return task

    with pytest.raises(UserError, match="unknown optimizer 'lamb'"):
        resolve_task(make)(0)


def test_study_cli_trains_with_the_task_optimizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    argv = ["study", "--task", "finetune", "--trials", "2", "--samplers", "random"]
    code = main([*argv, "--prior", "none", "--epochs", "2", "--storage", url])
    assert code == 0, capsys.readouterr().err
    study = optuna.load_study(study_name="finetune.random.none", storage=url)
    assert study.user_attrs["spec"]["optimizer"] == "adam"
    trial = study.best_trial
    assert trial.user_attrs["config"]["optimizer"]["name"] == "adam"
