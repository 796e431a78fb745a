"""Issue 9, item 2 (spec side): optimizer parameters fixed under ``[optimizer]`` and searched
under ``[params.optimizer]``, ``precision``/``accumulate``/``clip_grad_norm`` and the range
test's ``start_lr``/``end_lr``/``steps`` as spec keys and flags, stored on the study, and
carried into ``export``, ``--into`` and ``load_config``. Bad values: tests/test_spec.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from lrtune import cli, export, load_config
from lrtune.errors import UserError
from lrtune.group.prepare import prepare_group
from lrtune.search.space import suggest, suggest_optimizer
from lrtune.search.spec import StudySpec, resolve_spec
from lrtune.search.states import FINISHED

SEARCHED = """\
task = "digits"
schedules = ["cosine"]
optimizer = { name = "adamw", betas = [0.9, 0.95], eps = 1e-7 }
precision = "fp32"
accumulate = 1

[params.optimizer]
weight_decay = [1e-5, 0.1]
"""


def test_optimizer_table_and_plain_name() -> None:
    table = resolve_spec({"optimizer": {"name": "adamw", "betas": [0.9, 0.95], "eps": 1e-8}})
    assert table.optimizer == "adamw"
    assert table.optimizer_params == {"betas": [0.9, 0.95], "eps": 1e-8}
    plain = resolve_spec({"optimizer": "adamw"})
    assert plain.optimizer == "adamw" and plain.optimizer_params == {}
    # A table without a name keeps the task's own optimizer (digits: sgd).
    nameless = resolve_spec({"optimizer": {"momentum": 0.95}})
    assert nameless.optimizer == "sgd" and nameless.optimizer_params == {"momentum": 0.95}
    # The flag names the optimizer; the file's parameters still apply to it.
    flagged = resolve_spec({"optimizer": {"weight_decay": 0.1}}, {"optimizer": "adam"})
    assert flagged.optimizer == "adam" and flagged.optimizer_params == {"weight_decay": 0.1}


def test_stored_spec_round_trips_with_the_new_keys() -> None:
    spec = resolve_spec(
        {
            "optimizer": {"name": "sgd", "momentum": 0.8},
            "params": {"optimizer": {"weight_decay": True}},
            "precision": "bf16",
            "accumulate": 4,
            "clip_grad_norm": 1.0,
            "rangetest_start_lr": 1e-5,
            "rangetest_end_lr": 3.0,
        }
    )
    assert spec.params["optimizer"]["weight_decay"] == ["float", 1e-5, 0.1, True]
    stored = spec.to_dict()
    assert stored["optimizer"] == "sgd" and stored["optimizer_params"] == {"momentum": 0.8}
    assert StudySpec.from_dict(stored) == spec


def test_searched_params_are_named_and_grid_keeps_defaults() -> None:
    spec = resolve_spec(
        {
            "optimizer": "sgd",
            "schedules": ["onecycle"],
            "params": {
                "optimizer": {"weight_decay": [1e-4, 1e-2], "momentum": [0.8, 0.95]},
                "onecycle": {"pct_start": [0.1, 0.5]},
            },
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest_optimizer(trial, spec)
    assert set(params) == {"weight_decay", "momentum"}
    assert 1e-4 <= params["weight_decay"] <= 1e-2
    dist = trial.distributions["optimizer.weight_decay"]
    assert isinstance(dist, optuna.distributions.FloatDistribution) and dist.log
    assert not trial.distributions["optimizer.momentum"].log  # type: ignore[attr-defined]
    # The grid sampler grids lr x schedule only: searched parameters keep their defaults
    # instead of failing the trial ("not found in the given grid").
    from lrtune.search.space import grid_space

    grid = optuna.create_study(sampler=optuna.samplers.GridSampler(grid_space(spec, (0.01, 1))))
    gtrial = grid.ask()
    assert suggest(gtrial, spec, (0.01, 1))[2] == {}
    assert suggest_optimizer(gtrial, spec) == {}
    assert set(gtrial.params) == {"lr", "schedule"}


def test_weight_decay_searched_shows_up_in_trial_params_and_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Acceptance: a tiny digits study (3 trials, prior none) searching weight_decay."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "wd.toml"
    spec.write_text(SEARCHED, encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'wd.db'}"
    args = ["study", "--spec", str(spec), "--group", "wd", "--prior", "none"]
    args += ["--samplers", "random", "--trials", "3", "--epochs", "1", "--pruner", "none"]
    args += ["--confirm", "0"]
    assert cli.main([*args, "--device", "cpu", "--storage", url]) == 0
    study = optuna.load_study(study_name="wd.random.none", storage=url)
    stored = study.user_attrs["spec"]
    assert stored["optimizer_params"] == {"betas": [0.9, 0.95], "eps": 1e-7}
    assert stored["params"]["optimizer"]["weight_decay"] == ["float", 1e-5, 0.1, True]
    trials = study.get_trials(states=FINISHED)
    assert len(trials) == 3
    decays = [t.params["optimizer.weight_decay"] for t in trials]
    assert len(set(decays)) == 3 and all(1e-5 <= d <= 0.1 for d in decays)
    for t in trials:  # what each trial trained with is what it searched
        opt = t.user_attrs["config"]["optimizer"]
        assert opt["weight_decay"] == t.params["optimizer.weight_decay"]
        assert opt["betas"] == [0.9, 0.95] and opt["eps"] == 1e-7
    capsys.readouterr()
    assert cli.main(["export", "--study", "wd.random.none", "--storage", url]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    best = study.best_trial
    assert data["optimizer"]["name"] == "adamw"
    assert data["optimizer"]["weight_decay"] == best.params["optimizer.weight_decay"]
    assert data["optimizer"]["betas"] == [0.9, 0.95]
    out = tmp_path / "best.yaml"
    out.write_text(yaml.safe_dump(data), encoding="utf-8")
    cfg = load_config(out)
    opt = cfg.build_optimizer(torch.nn.Linear(2, 2).parameters())
    assert isinstance(opt, torch.optim.AdamW)
    group = opt.param_groups[0]
    assert group["weight_decay"] == best.params["optimizer.weight_decay"]
    assert tuple(group["betas"]) == (0.9, 0.95) and group["eps"] == 1e-7


@pytest.mark.slow
def test_range_test_keys_reach_the_prior(tmp_path: Path) -> None:
    spec = resolve_spec(
        {"prior": ["rangetest"], "samplers": ["random"], "group": "rt"},
        {
            "rangetest_start_lr": 1e-4,
            "rangetest_end_lr": 1.0,
            "rangetest_steps": 30,
            "rangetest_seeds": 1,
        },
    )
    group = prepare_group(spec, f"sqlite:///{tmp_path / 'rt.db'}", device="cpu")
    assert group.rangetest is not None
    lrs = group.rangetest.lrs[0]
    assert lrs[0] == pytest.approx(1e-4)
    assert len(lrs) <= 30 and max(lrs) <= 1.0
    assert group.rangetest.seeds == [0]


def test_old_stored_spec_without_the_new_keys_resumes(tmp_path: Path) -> None:
    """A study made before these keys existed stored no value for them: their defaults."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    spec = resolve_spec({"prior": ["none"], "samplers": ["random"], "group": "old"})
    prepare_group(spec, url, device="cpu")
    study = optuna.load_study(study_name="old.random.none", storage=url)
    old = dict(study.user_attrs["spec"])
    for key in ("optimizer_params", "precision", "accumulate", "clip_grad_norm"):
        del old[key]
    for key in ("rangetest_start_lr", "rangetest_end_lr"):
        del old[key]
    study.set_user_attr("spec", old)
    prepare_group(spec, url, device="cpu")  # no "exists with a different ..."
    changed = resolve_spec(
        {"prior": ["none"], "samplers": ["random"], "group": "old", "accumulate": 2}
    )
    with pytest.raises(UserError, match="different accumulate"):
        prepare_group(changed, url, device="cpu")


def _trained(**training: Any) -> dict[str, Any]:
    return {
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.02, "betas": [0.9, 0.95]},
        "schedule": {"name": "constant"},
        "batch_size": 32,
        "epochs": 2,
        "total_steps": 90,
        **training,
    }


def _study_with(url: str, name: str, config: dict[str, Any]) -> None:
    study = optuna.create_study(storage=url, study_name=name)
    study.set_user_attr("metric", "val_loss")
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": config["optimizer"]["lr"]},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-6, 10.0, log=True)},
            value=0.1,
            user_attrs={"config": config},
        )
    )


def test_training_block_is_exported_loaded_and_merged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    _study_with(url, "amp", _trained(precision="bf16", accumulate=4, clip_grad_norm=1.0))
    _study_with(url, "old", _trained())  # a trial from before the training options
    config = export.export_config(url, "amp")
    assert list(config) == ["optimizer", "schedule", "batch_size", "training", "source"]
    assert config["training"] == {"precision": "bf16", "accumulate": 4, "clip_grad_norm": 1.0}
    assert "training" not in export.export_config(url, "old")
    for fmt in ("yaml", "json", "toml"):
        path = tmp_path / f"best.{fmt}"
        path.write_text(export.dump_config(config, fmt), encoding="utf-8")
        cfg = load_config(path)
        assert (cfg.precision, cfg.accumulate, cfg.clip_grad_norm) == ("bf16", 4, 1.0)
        assert cfg.optimizer["betas"] == [0.9, 0.95]
        assert cfg.to_dict()["training"] == config["training"]
    # --into: the block goes under the key beside the rest; a later export without one
    # (an older trial) takes the stale block away.
    prod = tmp_path / "prod.yaml"
    prod.write_text("model: resnet  # ours\ntrain:\n  epochs: 90\n", encoding="utf-8")
    assert cli.main(["export", "--study", "amp", "--storage", url, "--into", f"{prod}:train"]) == 0
    cfg = load_config(prod, "train")
    assert (cfg.precision, cfg.accumulate, cfg.clip_grad_norm) == ("bf16", 4, 1.0)
    assert "model: resnet  # ours" in prod.read_text()
    assert cli.main(["export", "--study", "old", "--storage", url, "--into", f"{prod}:train"]) == 0
    merged = yaml.safe_load(prod.read_text())["train"]
    assert "training" not in merged and merged["epochs"] == 90
    cfg = load_config(prod, "train")
    assert (cfg.precision, cfg.accumulate, cfg.clip_grad_norm) == ("fp32", 1, None)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ({"precision": "fp8"}, "training.precision"),
        ({"accumulate": 0}, "training.accumulate"),
        ({"clip_grad_norm": -1}, "training.clip_grad_norm"),
        ({"amp": True}, "training takes precision"),
        ("bf16", "training must be a table"),
    ],
)
def test_load_config_rejects_a_bad_training_block(
    tmp_path: Path, block: Any, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    data = {"optimizer": {"name": "sgd", "lr": 0.1}, "training": block}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(UserError, match=expected):
        load_config(path)


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        ({"name": "adam", "lr": 0.1, "momentum": 0.9}, "adam' takes weight_decay, betas, eps"),
        ({"name": "adamw", "lr": 0.1, "betas": [0.9]}, "betas must be two numbers"),
        ({"name": "sgd", "lr": 0.1, "weight_decay": -1}, "weight_decay must be >= 0"),
    ],
)
def test_load_config_checks_optimizer_params(
    tmp_path: Path, optimizer: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"optimizer": optimizer}), encoding="utf-8")
    with pytest.raises(UserError, match=expected):
        load_config(path)


@pytest.mark.slow
def test_a_worker_on_postgresql_trains_with_the_stored_options(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``study --create-only`` stores the options; a worker elsewhere reads them back."""
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "wd.toml"
    spec.write_text(SEARCHED + "eps = true\n", encoding="utf-8")
    args = ["study", "--spec", str(spec), "--group", "pgwd", "--prior", "none"]
    args += ["--samplers", "random", "--trials", "2", "--epochs", "1", "--pruner", "none"]
    args += ["--confirm", "0"]
    args += ["--optimizer", "adam", "--create-only", "--device", "cpu", "--storage", pg_url]
    # eps is searched and fixed in the file's table: the flag does not hide the conflict.
    assert cli.main(args) == 2
    spec.write_text(SEARCHED.replace(", eps = 1e-7", ""), encoding="utf-8")
    assert cli.main(args) == 0
    assert cli.main(["worker", "--group", "pgwd", "--device", "cpu", "--storage", pg_url]) == 0
    study = optuna.load_study(study_name="pgwd.random.none", storage=pg_url)
    trials = study.get_trials(states=FINISHED)  # a high LR may diverge: pruned, with config
    assert len(trials) == 2
    for t in trials:
        opt = t.user_attrs["config"]["optimizer"]
        assert opt["name"] == "adam" and opt["betas"] == [0.9, 0.95]
        assert opt["weight_decay"] == t.params["optimizer.weight_decay"]
