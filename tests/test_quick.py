"""The fastai-style one-liner: ``lrtune.range_test(model=..., train=loader, loss_fn=...)``
(and ``lrtune.lr_find``) without a Task, and ``result.plot()`` for a notebook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrtune
from lrtune.errors import UserError


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = (x[:, :2].sum(1) > 0).long()
    return TensorDataset(x, y)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))


def test_a_model_and_a_loader_without_a_task() -> None:
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loader = DataLoader(_data(), batch_size=32, shuffle=True)
    result = lrtune.range_test(model=net, train=loader, loss_fn=F.cross_entropy, seeds=1)
    assert result.diagnosis == "ok", result.per_seed
    assert result.lr_low < result.lr_high
    for k, v in net.state_dict().items():  # the model is given back as it was
        assert torch.equal(v, before[k]), k


def test_lr_find_is_range_test_and_takes_tensors() -> None:
    assert lrtune.lr_find is lrtune.range_test
    x, y = _data().tensors
    result = lrtune.lr_find(
        model=_net(), train=(x, y), loss_fn=F.cross_entropy, batch_size=64, seeds=1, steps=40
    )
    assert result.steps == 40 and len(result.lrs[0]) <= 40


def test_plot_is_a_figure_a_notebook_shows(tmp_path: Path) -> None:
    loader = DataLoader(_data(), batch_size=32, shuffle=True)
    result = lrtune.range_test(model=_net(), train=loader, loss_fn=F.cross_entropy, seeds=1)
    fig = result.plot()
    from matplotlib.figure import Figure

    assert isinstance(fig, Figure)
    assert fig._repr_png_().startswith(b"\x89PNG")  # what IPython displays
    path = tmp_path / "rt.png"
    result.plot(path)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, "give a task"),
        ({"model": nn.Linear(2, 2)}, "give a task"),
        ({"model": "resnet", "train": [(torch.zeros(2, 2), torch.zeros(2))]}, "not a torch"),
        ({"model": nn.Linear(2, 2), "train": [(torch.zeros(2, 2), torch.zeros(2))]}, "loss_fn="),
        ({"task": "digits", "model": nn.Linear(2, 2)}, "not both"),
        ({"model": nn.Linear(2, 2), "train": 3, "loss_fn": F.mse_loss}, "train is int"),
    ],
)
def test_bad_parts_are_one_line(kwargs: dict, expected: str) -> None:
    with pytest.raises(UserError, match=expected) as info:
        lrtune.range_test(**kwargs)
    assert "\n" not in str(info.value)
