"""Task files import like scripts: a task split over several files (``from models import
Net`` beside it) works under the ``lrtune`` console script, whose ``sys.path`` does not hold
the working folder, and in a worker started in another folder; a failed sibling import
says how to fix it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest

from lrtune.errors import UserError
from lrtune.training.loading import locate_task, resolve_task

MODELS = """
from torch import nn


def build() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
"""

TASK = """
import torch
from torch import nn

from lrtune import Task
from models import build  # the file beside this one


def make(seed: int) -> Task:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = (x[:, 0] > 0).long()
    return Task(model=build(), train=(x, y), val=(x, y), loss_fn=nn.CrossEntropyLoss(),
                batch_size=16, epochs=1, name="two-file")
"""


def _project(root: Path, sibling: str = "models") -> Path:
    """``proj/two_file.py`` importing ``build`` from ``proj/{sibling}.py`` (a name of its
    own per test: a sibling imported once stays in ``sys.modules``)."""
    proj = root / "proj"
    proj.mkdir()
    (proj / f"{sibling}.py").write_text(textwrap.dedent(MODELS))
    text = textwrap.dedent(TASK).replace("from models import", f"from {sibling} import")
    (proj / "two_file.py").write_text(text)
    return proj


def _console_script(root: Path) -> list[str]:
    """The ``lrtune`` console script; else a script that starts lrtune the same way (its
    own folder, not the working folder, first on ``sys.path``)."""
    found = shutil.which("lrtune")
    if found:
        return [found]
    script = root / "bin" / "lrtune-script.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text("import sys\nfrom lrtune.cli import main\nsys.exit(main())\n")
    return [sys.executable, str(script)]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("LRTUNE_STORAGE", None)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_task_file_imports_its_sibling_in_process(tmp_path: Path) -> None:
    proj = _project(tmp_path, "lrtune_models_in_process")
    before = list(sys.path)
    task = resolve_task(f"{proj}/two_file.py:make")(0)
    assert task.name == "two-file"
    assert sys.path == before  # the folder was on sys.path only while it was imported


def test_a_failed_sibling_import_says_how_to_fix_it(tmp_path: Path) -> None:
    proj = _project(tmp_path, "lrtune_models_gone")
    (proj / "lrtune_models_gone.py").unlink()
    with pytest.raises(UserError) as info:
        resolve_task(f"{proj}/two_file.py:make")
    line = str(info.value)
    assert "\n" not in line
    assert "ModuleNotFoundError: No module named 'lrtune_models_gone'" in line
    assert f"with its folder {proj} on sys.path: put lrtune_models_gone.py" in line


def test_a_missing_module_says_where_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="run lrtune in the folder that holds no_such_lab"):
        resolve_task("no_such_lab:make")


def test_module_function_finds_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The console script's sys.path lacks the working folder; `module:function` as
    # `python -m` would import it.
    proj = _project(tmp_path, "lrtune_models_by_module")
    (proj / "two_file.py").rename(proj / "lrtune_two_file_mod.py")
    monkeypatch.chdir(proj)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(proj))])
    assert resolve_task("lrtune_two_file_mod:make")(0).name == "two-file"


def test_locate_task_uses_the_study_folder_when_the_file_is_there(tmp_path: Path) -> None:
    proj = _project(tmp_path)
    assert locate_task("proj/two_file.py:make", str(tmp_path)) == f"{proj}/two_file.py:make"
    assert locate_task("proj/two_file.py:make", "/nonexistent") == "proj/two_file.py:make"
    assert locate_task("digits", str(tmp_path)) == "digits"
    assert locate_task("mylab.tasks:make", str(tmp_path)) == "mylab.tasks:make"


@pytest.mark.slow
def test_two_file_task_under_the_console_script_and_a_worker_elsewhere(tmp_path: Path) -> None:
    _project(tmp_path)
    lrtune = _console_script(tmp_path)
    task = "proj/two_file.py:make"
    out = _run([*lrtune, "rangetest", "--task", task, "--seeds", "1", "--steps", "20"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "LR range test" in out.stdout
    url = f"sqlite:///{tmp_path / 'two.db'}"
    study = "study --prior none --samplers random --trials 2 --schedules constant --create-only"
    study += " --lr-low 0.001 --lr-high 0.05"  # no sampled LR diverges (it would be pruned)
    out = _run([*lrtune, *study.split(), "--task", task, "--storage", url], tmp_path)
    assert out.returncode == 0, out.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([*lrtune, "worker", "--group", "two-file", "--storage", url], elsewhere)
    assert out.returncode == 0, out.stderr
    done = optuna.load_study(study_name="two-file.random.none", storage=url).get_trials()
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"]
