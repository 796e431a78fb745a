"""Tests of lrtune.training.tasks: built-ins offline, user tasks by import path and file path,
and one clear line for every kind of bad task."""

from __future__ import annotations

import math
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from lrtune.errors import UserError
from lrtune.training.loading import BUILTIN_TASKS, resolve_task
from lrtune.training.tasks import Task, check_task
from lrtune.training.trainer import TrainConfig, train

GOOD_MODULE = """
import torch
from torch import nn
from lrtune import Task

def make(seed):
    torch.manual_seed(seed)
    x = torch.randn(40, 3)
    y = x.sum(1, keepdim=True)
    return Task(model=nn.Linear(3, 1), train=(x, y), val=(x, y), loss_fn=nn.MSELoss(),
                batch_size=10, epochs=1, name="user")
"""


@pytest.mark.parametrize("name", list(BUILTIN_TASKS))
def test_builtin_task_builds_offline_and_trains_one_epoch(name: str) -> None:
    task = resolve_task(name)(0)
    check_task(task, name)
    assert task.name == name
    x, y = task.train
    assert x.device.type == "cpu" and len(x) == len(y) >= 50
    result = train(name, TrainConfig(lr=0.01, epochs=1, device="cpu"))
    assert not result.diverged and math.isfinite(result.value)
    assert len(result.history) == 1


def test_builtin_tasks_use_the_seed_for_weights_only() -> None:
    a, b, c = (resolve_task("digits")(s) for s in (0, 0, 1))
    assert torch.equal(a.train[0], c.train[0]) and torch.equal(a.val[1], c.val[1])
    wa, wb, wc = (next(t.model.parameters()) for t in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def _module_name() -> str:
    return f"lrtune_test_task_{uuid.uuid4().hex[:8]}"


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_user_task_by_module_and_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _module_name()
    _write(tmp_path / f"{name}.py", GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    task = resolve_task(f"{name}:make")(0)
    assert isinstance(task, Task) and task.name == "user"
    result = train(f"{name}:make", TrainConfig(lr=0.01, device="cpu"))
    assert math.isfinite(result.value)


def test_user_task_by_file_path(tmp_path: Path) -> None:
    path = _write(tmp_path / "my_task.py", GOOD_MODULE)
    task = resolve_task(f"{path}:make")(0)
    assert isinstance(task, Task)
    assert isinstance(task.model, nn.Linear)


def test_user_task_by_relative_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub" / "t.py", GOOD_MODULE)
    monkeypatch.chdir(tmp_path)
    assert isinstance(resolve_task("sub/t.py:make")(0), Task)


def test_a_factory_and_a_task_are_accepted() -> None:
    task = BUILTIN_TASKS["wine"](0)
    assert resolve_task(task)(5) is task
    assert isinstance(resolve_task(BUILTIN_TASKS["wine"])(0), Task)


def _one_line_error(spec: Any, *contains: str) -> str:
    with pytest.raises(UserError) as info:
        resolve_task(spec)(0)
    message = str(info.value)
    assert "\n" not in message and message
    for part in contains:
        assert part in message, message
    return message


def test_unknown_name_lists_the_builtins() -> None:
    _one_line_error("nope", "unknown task 'nope'", *BUILTIN_TASKS, "module:function")


def test_missing_file(tmp_path: Path) -> None:
    _one_line_error(f"{tmp_path}/missing.py:make", "does not exist")


def test_missing_module() -> None:
    _one_line_error("no_such_module_lrtune_xyz:make", "ModuleNotFoundError")


def test_module_without_the_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _module_name()
    _write(tmp_path / f"{name}.py", GOOD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    _one_line_error(f"{name}:build", "has no function 'build'")
    _one_line_error(f"{tmp_path / name}.py:build", "has no function 'build'")


def test_module_with_a_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "broken.py", "def make(seed):\n    return (\n")
    _one_line_error(f"{path}:make", "SyntaxError", "importing")


def test_module_with_a_failing_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _module_name()
    _write(
        tmp_path / f"{name}.py", "import not_installed_pkg_lrtune\n\ndef make(seed):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    _one_line_error(f"{name}:make", "ModuleNotFoundError", "not_installed_pkg_lrtune")
    _one_line_error(f"{tmp_path / name}.py:make", "ModuleNotFoundError")


def test_module_that_raises_on_import(tmp_path: Path) -> None:
    path = _write(tmp_path / "raises.py", "raise ValueError('bad config\\nsecond line')\n")
    _one_line_error(f"{path}:make", "ValueError: bad config")


def test_factory_returning_an_int(tmp_path: Path) -> None:
    path = _write(tmp_path / "int_task.py", "def make(seed):\n    return 3\n")
    _one_line_error(f"{path}:make", "returned int", "lrtune.Task")
    _one_line_error(lambda seed: 3, "returned int")


def test_factory_that_raises() -> None:
    def make(seed: int) -> Task:
        raise KeyError("no such column")

    _one_line_error(make, "KeyError")


def _valid(**changes: Any) -> Task:
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    fields: dict[str, Any] = {
        "model": nn.Linear(2, 2),
        "train": (x, y),
        "val": (x, y),
        "loss_fn": nn.CrossEntropyLoss(),
    }
    fields.update(changes)
    return Task(**fields)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"model": "resnet"}, "model is str"),
        ({"train": [1, 2, 3]}, "train is list"),
        ({"val": {"x": 1}}, "val is dict"),
        ({"loss_fn": 0}, "loss_fn is not callable"),
        ({"direction": "up"}, "direction is 'up'"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"metric": "accuracy"}, "metric is not callable"),
        ({"train": (torch.zeros(10, 2), torch.zeros(9))}, "train X has 10 rows, y 9"),
    ],
)
def test_task_with_a_wrong_field(changes: dict[str, Any], expected: str) -> None:
    check_task(_valid())  # the unchanged task is fine
    _one_line_error(lambda seed: _valid(**changes), expected)


def test_a_torch_dataset_is_accepted() -> None:
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    check_task(_valid(train=torch.utils.data.TensorDataset(x, y)))
