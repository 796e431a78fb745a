"""The Python API (``import lrtune``): every example in the public docstrings runs as
written (so the examples cannot drift), ``run_study`` is ``lrtune study`` (one spec, one
group: either resumes the other), and its bad inputs are one-line ``UserError``s."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import lrtune
from lrtune.cli import main
from lrtune.errors import UserError

REPO = Path(__file__).resolve().parents[1]
#: The main job's API: each docstring holds an example.
REQUIRED = ("run_study", "compare_group", "export_config", "TrialParams")
#: The adapters' examples: in a module docstring (inside the function it would pass the
#: 80-line limit), or on the Python API page (lrtune.lightning is at the 400-line limit).
ADAPTERS = {
    "lightning_task": ("docs/reference/python-api.md", "pytorch_lightning"),
    "hf_task": ("lrtune.hf", "transformers"),
}
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
QUICK = {
    "prior": "none",
    "samplers": "random",
    "epochs": 1,
    "lr_low": 0.01,
    "lr_high": 0.3,
    "confirm": 0,
}


def _examples(doc: str | None) -> list[str]:
    return [textwrap.dedent(block) for block in BLOCK.findall(doc or "")]


def _cases() -> list[object]:
    cases: list[object] = []
    for name in sorted(set(lrtune.__all__) - set(ADAPTERS)):
        for i, code in enumerate(_examples(inspect.getdoc(getattr(lrtune, name)))):
            cases.append(pytest.param(name, code, id=f"{name}-{i}"))
    for name, (where, needs) in ADAPTERS.items():
        # Lightning and transformers take a while to import: the slow path runs them.
        cases.append(pytest.param(name, (where, needs), id=name, marks=pytest.mark.slow))
    return cases


def _adapter_example(name: str, where: str) -> str:
    """The one example of adapter ``name``: a block of the API page, or of a module's
    docstring, that calls it."""
    if where.endswith(".md"):
        text = (REPO / where).read_text(encoding="utf-8")
    else:
        text = importlib.import_module(where).__doc__ or ""
    blocks = [b for b in _examples(text) if f"lrtune.{name}(" in b]
    assert len(blocks) == 1, f"{where}: expected one example of {name}, found {len(blocks)}"
    return blocks[0]


def test_the_main_jobs_api_has_examples() -> None:
    """run_study, compare_group, export_config and the hp type each show an example."""
    missing = [n for n in REQUIRED if not _examples(inspect.getdoc(getattr(lrtune, n)))]
    assert not missing, f"public names without an example: {missing}"


def test_every_public_name_resolves_and_import_stays_light() -> None:
    for name in lrtune.__all__:
        if name in ADAPTERS and importlib.util.find_spec(ADAPTERS[name][1]) is None:
            continue  # its extra is not installed: importing it is meant to fail
        assert getattr(lrtune, name) is not None
        assert inspect.getdoc(getattr(lrtune, name)), f"{name} has no docstring"
    code = "import sys, lrtune; assert 'torch' not in sys.modules and 'optuna' not in sys.modules"
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("name", "code"), _cases())
def test_the_docstring_example_runs(
    name: str, code: str | tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples write example.db, best.json, hf-out/ here
    if isinstance(code, tuple):
        where, needs = code
        pytest.importorskip(needs, reason=f"the extra for {name} is not installed")
        code = _adapter_example(name, where)
    exec(compile(code, f"<example of lrtune.{name}>", "exec"), {"__name__": "__example__"})


def test_run_study_and_lrtune_study_are_one_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's studies are the call's: ``run_study`` resumes what ``lrtune study``
    started (one more trial on the same study, no new study), and the command then finds
    the budget met and trains nothing."""
    url = f"sqlite:///{tmp_path / 'one.db'}"
    flags = ["--storage", url, "--task", "digits", "--group", "g", "--prior", "none"]
    flags += ["--samplers", "random", "--epochs", "1", "--lr-low", "0.01", "--lr-high", "0.3"]
    assert main(["study", *flags, "--confirm", "0", "--trials", "2"]) == 0
    cmp = lrtune.run_study("digits", storage=url, group="g", trials=3, **QUICK)
    assert [(r.study, r.done, r.budget) for r in cmp.rows] == [("g.random.none", 3, 3)]
    capsys.readouterr()
    assert main(["study", *flags, "--confirm", "0", "--trials", "3"]) == 0
    out = capsys.readouterr().out
    assert "g.random.none" in out and "3/3" in out
    after = lrtune.compare_group(url, "g")
    assert [(r.study, r.done) for r in after.rows] == [("g.random.none", 3)]
    assert after.table() == cmp.table()  # nothing trained since: the same comparison


def make_for_test(seed: int) -> lrtune.Task:
    """A module-level factory: ``run_study`` passes it on as ``tests.test_api:...``."""
    return importlib.import_module("lrtune.training.loading").resolve_task("wine")(seed)


def test_a_factory_function_is_passed_by_its_import_path() -> None:
    from lrtune.group.run import task_path

    assert task_path(make_for_test) == f"{make_for_test.__module__}:make_for_test"
    assert task_path("digits") == "digits"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"trails": 3}, "unknown spec key 'trails'"),
        ({"trials": 0}, "--trials"),
        ({"samplers": "random,annealing"}, "unknown value 'annealing'"),
        ({"storage": " "}, "storage is empty"),
        ({"task": lambda seed: None}, "no task name or top-level factory"),
        ({"task": "no_such_task"}, "no_such_task"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    kwargs: dict[str, object], says: str, tmp_path: Path
) -> None:
    db = tmp_path / "bad.db"
    options = {"task": "digits", "storage": f"sqlite:///{db}", "trials": 2, **QUICK}
    with pytest.raises(UserError) as info:
        lrtune.run_study(**{**options, **kwargs})  # type: ignore[arg-type]
    message = str(info.value)
    assert says in message and "\n" not in message
    assert not db.exists()
