"""Schedule-free optimizers (``schedulefree_adamw``, ``schedulefree_sgd``): train/eval mode
switching in lrtune's loop, the range test and ``load_config``; the missing package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from lrtune import load_config, range_test
from lrtune.errors import UserError
from lrtune.search.spec import resolve_spec
from lrtune.training.data import Batches
from lrtune.training.optimizers import evaluating, make_optimizer
from lrtune.training.tasks import digits
from lrtune.training.trainer import TrainConfig, evaluate, train

pytest.importorskip("schedulefree", reason="the schedulefree extra is not installed")

SF = TrainConfig(
    lr=0.5,
    optimizer="schedulefree_sgd",
    schedule="constant",
    schedule_params={"warmup_frac": 0.1},
    epochs=3,
    device="cpu",
)


def test_trials_evaluate_the_averaged_weights() -> None:
    result = train("digits", SF)
    assert not result.diverged and result.value < 0.5
    assert result.config["optimizer"] == {
        "name": "schedulefree_sgd",
        "lr": 0.5,
        "momentum": 0.9,
        "weight_decay": 0.0,
    }
    task = digits(0)
    model = result.model
    assert model is not None
    # The model comes back at the point it was evaluated at (eval mode: the average x),
    # not at the point gradients were taken (y).
    val = Batches(task.val, 1024, torch.device("cpu"), "val")
    assert evaluate(task, model, val) == pytest.approx(result.value, rel=1e-6)


def test_evaluating_switches_to_the_average_and_back() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = make_optimizer("schedulefree_adamw", model.parameters(), 0.1)
    for _ in range(5):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        optimizer.step()  # train mode from make_optimizer: no error
        optimizer.zero_grad()
    y = model.weight.detach().clone()
    with evaluating(optimizer):
        x = model.weight.detach().clone()
    # Back at y to train on: schedule-free moves the weights y -> x -> y arithmetically,
    # so the way back is exact up to float rounding (bit for bit on some CPUs, not all).
    assert not torch.allclose(x, y, rtol=1e-3, atol=1e-4)
    assert torch.allclose(model.weight.detach(), y, rtol=1e-6, atol=1e-7)
    back = model.weight.detach().clone()
    with evaluating(torch.optim.SGD(model.parameters(), lr=0.1)):  # no modes: unchanged
        assert torch.equal(model.weight.detach(), back)


@pytest.mark.parametrize("name", ["schedulefree_sgd", "schedulefree_adamw"])
def test_range_test_sweeps_a_schedule_free_optimizer(name: str) -> None:
    result = range_test("digits", optimizer=name, seeds=1, steps=60, device="cpu")
    assert result.lr_low < result.lr_high
    assert result.optimizer == name


def test_load_config_builds_it_in_train_mode_with_the_trial_lrs(tmp_path: Path) -> None:
    path = tmp_path / "sf.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "optimizer": {"name": "schedulefree_adamw", "lr": 0.01, "weight_decay": 0.0},
                "schedule": {"name": "constant", "warmup_frac": 0.2},
            }
        )
    )
    hp = load_config(path)
    model = torch.nn.Linear(3, 1)
    optimizer = hp.build_optimizer(model.parameters())
    scheduler = hp.build_scheduler(optimizer, 20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()  # would raise if the optimizer were not in train mode
        optimizer.zero_grad()
        scheduler.step()
    assert lrs == pytest.approx([hp.lr_at(s, 20) for s in range(20)])
    assert lrs[:4] == pytest.approx([0.01 * (s + 1) / 5 for s in range(4)]) and lrs[4] == 0.01


def test_without_the_package_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "schedulefree", None)  # import schedulefree fails
    with pytest.raises(UserError, match=r"pip install 'lrtune\[schedulefree\]'"):
        resolve_spec({"optimizer": "schedulefree_adamw"})
    with pytest.raises(UserError, match="needs the schedulefree package"):
        make_optimizer("schedulefree_sgd", [torch.zeros(1, requires_grad=True)], 0.1)
