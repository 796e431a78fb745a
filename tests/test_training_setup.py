"""The user's whole training setup (issue 19 acceptance), through the real command line:
parameter groups with a searched multiplier, the effective batch size with the prior's
bounds following it, the task's own dimensions, and ``study --timeout``.

One task file (a backbone and a head, a ``dropout`` argument) runs ``rangetest``, ``study``,
``export`` and ``load_config``; every optimizer step in this process is recorded by a global
step hook, so the LRs each group trained with are read, not recomputed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from torch.optim.optimizer import register_optimizer_step_pre_hook

import lrtune
from lrtune import cli
from lrtune.search.dims import scaled_bounds
from lrtune.training import trainer
from lrtune.training.trainer import TrainConfig

TASK = '''\
"""A backbone and a head; the head trains at 10x the backbone's LR unless searched."""
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch import nn

import lrtune


def make(seed: int, dropout: float = 0.0) -> lrtune.Task:
    # Every call is logged beside this file: the test reads which dropout reached it.
    with open(Path(__file__).with_name("calls.txt"), "a") as fh:
        fh.write(f"{dropout!r}\\n")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x @ torch.randn(8, 3, generator=g)).argmax(dim=1)
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout))
    model = nn.Sequential(backbone, nn.Linear(16, 3))
    return lrtune.Task(
        model=model,
        train=(x[:192], y[:192]),
        val=(x[192:], y[192:]),
        loss_fn=nn.functional.cross_entropy,
        batch_size=16,
        epochs=1,
        name="bh",
        param_groups=lambda m: [
            {"params": m[0].parameters(), "name": "backbone"},
            {"params": m[1].parameters(), "name": "head", "lr_mult": 10.0},
        ],
    )
'''

SPEC = """\
task = "bh_task.py:make"
optimizer = "sgd"
schedules = ["onecycle", "cosine"]
samplers = ["random"]
prior = ["rangetest"]
trials = 3
epochs = 1
confirm = 0
rangetest_seeds = 1
rangetest_steps = 40
widen = false

[params]
batch_size = [16, 64]

[params.lr_mult]
head = [1, 100]

[params.task]
dropout = [0.0, 0.5]
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("setup")
    (tmp / "bh_task.py").write_text(TASK, encoding="utf-8")
    (tmp / "bh.toml").write_text(SPEC, encoding="utf-8")
    return tmp


@pytest.fixture
def steps() -> Iterator[list[tuple[int, list[float]]]]:
    """Every optimizer step in this process while the test runs: (optimizer id, the LR of
    each of its groups)."""
    seen: list[tuple[int, list[float]]] = []

    def hook(opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        seen.append((id(opt), [float(g["lr"]) for g in opt.param_groups]))

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def _main(*argv: str) -> int:
    return cli.main([*argv, "--device", "cpu"])


@pytest.fixture(scope="module")
def group(work: Path) -> dict[str, Any]:
    """The real group ``bh``: random sampler, range-test prior, 3 trials."""
    url = f"sqlite:///{work / 'bh.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.delenv("LRTUNE_ARTIFACTS", raising=False)
        (work / "calls.txt").unlink(missing_ok=True)
        assert _main("study", "--spec", "bh.toml", "--storage", url) == 0
    study = optuna.load_study(study_name="bh.random.rangetest", storage=url)
    return {"url": url, "study": study, "calls": (work / "calls.txt").read_text().split()}


@pytest.mark.slow
def test_the_range_test_sweeps_the_base_lr_with_the_ratio_kept(
    work: Path,
    steps: list[tuple[int, list[float]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(work)
    argv = ["rangetest", "--task", "bh_task.py:make", "--seeds", "1", "--steps", "40"]
    assert _main(*argv, "--json", "rt.json") == 0
    out = capsys.readouterr().out
    assert "each group swept at it x its lr_mult: backbone x1, head x10" in out, out
    result = json.loads((work / "rt.json").read_text())
    swept = result["lrs"][0]
    assert len(steps) >= len(swept) > 20
    for (_, (backbone, head)), lr in zip(steps, swept, strict=False):
        assert backbone == pytest.approx(lr, rel=1e-12)  # the curve's LR is the base LR
        assert head / backbone == pytest.approx(10.0, rel=1e-12)


@pytest.mark.slow
def test_a_searched_multiplier_through_study_export_and_load_config(
    group: dict[str, Any],
    work: Path,
    steps: list[tuple[int, list[float]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    study: optuna.Study = group["study"]
    trials = [t for t in study.trials if t.state.is_finished()]
    assert len(trials) == 3  # complete, or pruned as diverged (a head at 100x may well)
    for t in trials:  # each trial trained its own sampled multiplier, recorded by name
        mult = t.params["lr_mult.head"]
        assert 1 <= mult <= 100
        assert t.user_attrs["config"]["optimizer"]["groups"] == {
            "backbone": {"lr_mult": 1.0},
            "head": {"lr_mult": mult},
        }
    best = study.best_trial
    config = best.user_attrs["config"]
    out = work / "best.yaml"
    argv = ["export", "--study", study.study_name, "--storage", group["url"], "--out", str(out)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    exported = yaml.safe_load(out.read_text())
    assert exported["optimizer"]["groups"]["head"]["lr_mult"] == best.params["lr_mult.head"]

    # The trial's run again, every step's group LRs recorded: the very run it recorded.
    spec = study.user_attrs["spec"]
    schedule = {k: v for k, v in config["schedule"].items() if k != "name"}
    rerun = trainer.train(
        str(work / "bh_task.py") + ":make",
        TrainConfig(
            lr=config["optimizer"]["lr"],
            optimizer="sgd",
            schedule=config["schedule"]["name"],
            schedule_params=schedule,
            epochs=config["epochs"],
            seed=spec["seed"],
            device="cpu",
            batch_size=best.params["batch_size"],
            lr_mults={"head": best.params["lr_mult.head"]},
            task_params={"dropout": best.params["task.dropout"]},
        ),
    )
    assert rerun.config == config
    assert rerun.value == pytest.approx(best.value, rel=1e-5)
    trained = [lrs for _, lrs in steps]
    total = config["total_steps"]
    assert len(trained) == total

    # The user's own code: load_config rebuilds both groups from their task's param_groups.
    cfg = lrtune.load_config(out)
    model = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(8, 16)), torch.nn.Linear(16, 3))
    groups = [
        {"params": model[0].parameters(), "name": "backbone"},
        {"params": model[1].parameters(), "name": "head"},
    ]
    opt = cfg.build_optimizer(groups)
    sched = cfg.build_scheduler(opt, total)
    for step in range(total):
        got = [g["lr"] for g in opt.param_groups]
        assert got == pytest.approx(trained[step], rel=1e-12, abs=0.0), step
        opt.step()
        sched.step()


@pytest.mark.slow
def test_the_prior_bounds_follow_the_batch_size(group: dict[str, Any]) -> None:
    study: optuna.Study = group["study"]
    reference = study.user_attrs["rangetest"]["batch_size"]
    assert reference == 16  # the task's own batch: where the range test measured the bounds
    bounds = tuple(study.user_attrs["bounds"])
    sizes = set()
    for t in study.trials:
        batch = t.params["batch_size"]
        sizes.add(batch)
        assert batch in (16, 32, 64)
        low, high = t.user_attrs["lr_bounds"]
        # SGD: the linear rule, lr x B / B0.
        assert low == pytest.approx(bounds[0] * batch / reference, rel=1e-12)
        assert high == pytest.approx(bounds[1] * batch / reference, rel=1e-12)
        assert low <= t.params["lr"] <= high
        assert t.user_attrs["config"]["batch_size"] == batch
        assert t.user_attrs["config"]["micro_batch_size"] == batch  # accumulate 1
    assert scaled_bounds((1.0, 2.0), 64, 16, "sqrt") == (2.0, 4.0)
    assert scaled_bounds((1.0, 2.0), 64, 16, "none") == (1.0, 2.0)


@pytest.mark.slow
def test_batch_scaling_flag_picks_the_rule(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(work)
    url = f"sqlite:///{work / 'sqrt.db'}"
    argv = ["study", "--spec", "bh.toml", "--group", "bhs", "--trials", "2"]
    assert _main(*argv, "--batch-scaling", "sqrt", "--storage", url) == 0
    capsys.readouterr()
    study = optuna.load_study(study_name="bhs.random.rangetest", storage=url)
    assert study.user_attrs["spec"]["batch_scaling"] == "sqrt"
    bounds = study.user_attrs["bounds"]
    for t in study.trials:
        factor = math.sqrt(t.params["batch_size"] / 16)
        assert t.user_attrs["lr_bounds"] == pytest.approx([b * factor for b in bounds])


@pytest.mark.slow
def test_a_task_dimension_reaches_the_factory_and_the_export(
    group: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    study: optuna.Study = group["study"]
    sampled = [repr(t.params["task.dropout"]) for t in study.trials]
    assert all(0.0 <= t.params["task.dropout"] <= 0.5 for t in study.trials)
    # Each trial built its task with its own dropout (the range test and the check before
    # creating the studies build it with the task's default and the range's low end).
    assert set(sampled) <= set(group["calls"])
    for t in study.trials:
        assert t.user_attrs["config"]["task"] == {"dropout": t.params["task.dropout"]}
    argv = ["export", "--study", study.study_name, "--storage", group["url"]]
    assert cli.main(argv) == 0
    exported = yaml.safe_load(capsys.readouterr().out)
    assert exported["task"] == {"dropout": study.best_trial.params["task.dropout"]}


@pytest.mark.slow
def test_timeout_starts_no_trial_after_it_and_the_same_command_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 't.db'}"
    argv = ["study", "--task", "digits", "--group", "t", "--prior", "none", "--samplers"]
    argv += ["random", "--epochs", "1", "--schedules", "constant", "--trials", "2"]
    argv += ["--confirm", "0", "--storage", url]
    # A timeout already past when the trials begin: none starts (Optuna's rule too).
    assert _main(*argv, "--timeout", "1e-9") == 0
    err = capsys.readouterr().err
    assert "--timeout 1e-09 s reached: no new trial started after it" in err, err
    study = optuna.load_study(study_name="t.random.none", storage=url)
    assert study.trials == []
    # A worker likewise.
    assert _main("worker", "--group", "t", "--storage", url, "--timeout", "1e-9") == 0
    assert "--timeout 1e-09 s reached" in capsys.readouterr().err
    assert study.trials == []
    # The same command without it finishes the budget; a timeout not reached says nothing.
    assert _main(*argv, "--timeout", "3600") == 0
    assert "--timeout" not in capsys.readouterr().err
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 2


PAGE = Path(__file__).resolve().parents[1] / "docs" / "how-to" / "training-setup.md"


def test_the_page_commands_and_specs_are_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/how-to/training-setup.md: every command parses with today's flags, each spec it
    runs resolves and builds its task (factory keys and group names checked), and each
    export it shows has the blocks that setup exports (the full runs: by hand, see the
    page)."""
    import re
    import shlex

    from lrtune.search.dims import build_checked
    from lrtune.search.spec import load_spec_file, resolve_spec

    repo = PAGE.parents[2]
    monkeypatch.chdir(repo)
    text = PAGE.read_text(encoding="utf-8")
    commands = re.findall(r"```bash\n(.+?)\n```", text)
    assert len(commands) == 6
    parser = cli.build_parser()
    for line in commands:
        argv = shlex.split(line)
        assert argv[0] == "lrtune"
        args = parser.parse_args(argv[1:])
        if argv[1] == "study":
            spec = resolve_spec(load_spec_file(args.spec))
            build_checked(spec)
    exports = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.+?)\n```", text, re.S)]
    assert [sorted(e["optimizer"]["groups"]) for e in exports] == [["backbone", "head"]] * 3
    assert "task" in exports[2] and set(exports[2]["task"]) == {"dropout", "width"}
    assert all({"batch_size", "micro_batch_size", "source"} <= set(e) for e in exports)
