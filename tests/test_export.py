"""lrtune export: best trial -> production config, --batch-size, --into merges, load_config."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import optuna
import pytest
import tomlkit
import torch
import yaml
from conftest import copy_sqlite

from lrtune import export, load_config, schedules
from lrtune.cli import main
from lrtune.errors import UserError

optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY = "digits.tpe.rangetest"


def _config(lr: float, schedule: dict[str, Any], batch_size: int = 64) -> dict[str, Any]:
    params = schedules.resolve_params(
        schedule["name"], 220, **{k: v for k, v in schedule.items() if k != "name"}
    )
    return {
        "optimizer": {"name": "sgd", "lr": lr, "momentum": 0.9, "weight_decay": 0.0},
        "schedule": {"name": schedule["name"], **params},
        "batch_size": batch_size,
        "epochs": 10,
        "total_steps": 220,
    }


BEST = _config(0.0830001234567, {"name": "onecycle", "pct_start": 0.25})


def _make_study(
    url: str,
    name: str = STUDY,
    *,
    finished: bool = True,
    direction: Literal["minimize", "maximize"] = "minimize",
) -> optuna.Study:
    """A study as lrtune leaves it: user attrs on the study, ``config`` on each trial."""
    study = optuna.create_study(storage=url, study_name=name, direction=direction)
    study.set_user_attr("metric", "val_loss")
    study.set_user_attr("lrtune_version", "0.1.0")
    study.set_user_attr("group", "digits")
    study.set_user_attr("task", "digits")
    dist: dict[str, optuna.distributions.BaseDistribution] = {
        "lr": optuna.distributions.FloatDistribution(1e-6, 10.0, log=True)
    }
    rows: list[tuple[dict[str, Any], float | None, optuna.trial.TrialState]] = [
        (_config(0.5, {"name": "cosine"}), 0.30, optuna.trial.TrialState.COMPLETE),
        (BEST, 0.071, optuna.trial.TrialState.COMPLETE),
        (_config(3.0, {"name": "constant"}), None, optuna.trial.TrialState.FAIL),
        (_config(0.01, {"name": "wsd"}), 0.09, optuna.trial.TrialState.COMPLETE),
    ]
    if not finished:
        rows = [(cfg, None, optuna.trial.TrialState.FAIL) for cfg, _, _ in rows[:2]]
    for cfg, value, state in rows:
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": cfg["optimizer"]["lr"]},
                distributions=dist,
                value=value,
                state=state,
                user_attrs={"config": cfg},
            )
        )
    return study


@pytest.fixture(scope="module")
def _template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "s.db"
    _make_study(f"sqlite:///{path}")
    return path


@pytest.fixture
def url(tmp_path: Path, _template: Path) -> str:
    """A fresh copy of a storage holding study ``STUDY`` (copying is faster than creating)."""
    copy_sqlite(_template, tmp_path / "s.db")
    return f"sqlite:///{tmp_path}/s.db"


def _export(capsys: pytest.CaptureFixture[str], url: str, *extra: str) -> tuple[int, str, str]:
    code = main(["export", "--storage", url, "--study", STUDY, *extra])
    out, err = capsys.readouterr()
    return code, out, err


# --- export ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "parse"),
    [
        ("yaml", yaml.safe_load),
        ("json", json.loads),
        ("toml", lambda text: tomlkit.parse(text).unwrap()),
    ],
)
def test_export_best_trial_each_format(
    capsys: pytest.CaptureFixture[str], url: str, fmt: str, parse: Any
) -> None:
    code, out, err = _export(capsys, url, "--format", fmt)
    assert code == 0, err
    data = parse(out)
    tables = ["optimizer", "schedule", "source"]
    # TOML puts top-level plain values before the tables
    order = (
        ["batch_size", *tables]
        if fmt == "toml"
        else ["optimizer", "schedule", "batch_size", "source"]
    )
    assert list(data) == order
    assert data["optimizer"] == BEST["optimizer"]
    assert data["optimizer"]["lr"] == 0.0830001234567  # exact round trip
    assert data["schedule"] == BEST["schedule"]
    assert data["batch_size"] == 64
    src = data["source"]
    assert list(src)[:7] == [
        "study",
        "trial",
        "value",
        "metric",
        "lrtune",
        "created",
        "storage",
    ]
    assert (src["study"], src["trial"], src["value"]) == (STUDY, 1, 0.071)
    assert (src["metric"], src["lrtune"], src["storage"]) == ("val_loss", "0.1.0", url)
    assert datetime.fromisoformat(src["created"]).tzinfo is not None
    assert (src["epochs"], src["total_steps"]) == (10, 220)


def test_export_maximize_picks_largest(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/m.db"
    _make_study(storage, "acc", direction="maximize")
    config = export.export_config(storage, "acc")
    assert config["source"]["trial"] == 0
    assert config["optimizer"]["lr"] == 0.5


def test_export_out_file_format_from_suffix(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "best.json"
    code, out, _ = _export(capsys, url, "--out", str(target))
    assert code == 0
    assert out == ""
    assert json.loads(target.read_text())["schedule"]["name"] == "onecycle"
    assert not list(tmp_path.glob(".best.json.*"))  # no temp file left behind


def test_batch_size_linear_scaling(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = _export(capsys, url, "--batch-size", "128")
    assert code == 0
    data = yaml.safe_load(out)
    lr = BEST["optimizer"]["lr"]
    assert data["optimizer"]["lr"] == lr * 128 / 64
    assert data["batch_size"] == 128
    assert data["source"]["trained_batch_size"] == 64
    assert data["source"]["trained_lr"] == lr
    assert "recommendation" not in data  # 2x needs no warmup advice


def test_batch_size_large_factor_recommends_warmup(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, _ = _export(capsys, url, "--batch-size", "1000", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["optimizer"]["lr"] == BEST["optimizer"]["lr"] * 1000 / 64
    assert list(data) == ["optimizer", "schedule", "batch_size", "recommendation", "source"]
    assert "warmup" in data["recommendation"]
    assert "Goyal" in data["recommendation"]


def test_recommendation_for_schedule_without_warmup(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/m.db"
    _make_study(storage, "acc", direction="maximize")  # best: cosine, no warmup
    config = export.export_config(storage, "acc", batch_size=64 * 8)
    assert "warmup_cosine" in config["recommendation"]
    assert export.export_config(storage, "acc", batch_size=64 * 7).get("recommendation") is None


def test_no_finished_trial_exit_2_nothing_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    _make_study(storage, finished=False)
    target = tmp_path / "out.yaml"
    code = main(["export", "--storage", storage, "--study", STUDY, "--out", str(target)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "no finished trial" in err
    assert not target.exists()


def test_study_not_made_by_lrtune(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(storage=storage, study_name="plain")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    with pytest.raises(UserError, match="lrtune config"):
        export.export_config(storage, "plain")


def test_unknown_study_exit_2(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code = main(["export", "--storage", url, "--study", "digits.tpe.rangetst"])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "lrtune ls" in err
    assert STUDY in err  # close match suggested


def test_missing_sqlite_file_exit_2_not_created(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["export", "--storage", f"sqlite:///{tmp_path}/nope.db", "--study", STUDY])
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nope.db").exists()


def test_unreachable_storage_masks_password() -> None:
    url = "postgresql+psycopg://bob:s3cret-pw@127.0.0.1:1/lrtune"
    with pytest.raises(UserError) as info:
        export.export_config(url, STUDY)
    message = str(info.value)
    assert "s3cret-pw" not in message
    assert "\n" not in message


def test_unknown_format_exit_2(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--storage", url, "--study", STUDY, "--format", "xml"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "xml" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(UserError):
        export.dump_config({"a": 1}, "xml")


def test_bad_batch_size_exit_2(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--storage", url, "--study", STUDY, "--batch-size", "0"])
    assert info.value.code == 2


def test_source_masks_password() -> None:
    url = "postgresql+psycopg://lrtune:hunter2@db.example:5432/lrtune"
    source = export.build_source(
        url, STUDY, trial_number=3, value=0.5, created=datetime(2025, 1, 2, tzinfo=timezone.utc)
    )
    assert "hunter2" not in json.dumps(source)
    assert source["storage"] == "postgresql+psycopg://lrtune:***@db.example:5432/lrtune"
    assert source["created"] == "2025-01-02T00:00:00+00:00"
    assert "hunter2" not in export.dump_config({"source": source}, "yaml")


# --- --into ----------------------------------------------------------------------------------

YAML_DOC = """\
# production training config
model:
  name: resnet18   # the backbone
  width: 64
train:
  # tuned by lrtune
  optimizer:
    name: adam
    lr: 0.001
    betas: [0.9, 0.999]
  epochs: 90
data:
  path: /data/imagenet
"""


def test_into_yaml_keeps_comments_order_and_other_keys(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "prod.yaml"
    target.write_text(YAML_DOC)
    code, out, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    assert out.startswith("---") and "+    lr: 0.0830001234567" in out
    text = target.read_text()
    assert "# production training config" in text
    assert "# the backbone" in text
    assert "# tuned by lrtune" in text
    data = yaml.safe_load(text)
    assert list(data) == ["model", "train", "data"]
    assert data["model"] == {"name": "resnet18", "width": 64}
    assert data["data"] == {"path": "/data/imagenet"}
    assert list(data["train"]) == ["optimizer", "epochs", "schedule", "batch_size", "source"]
    assert data["train"]["epochs"] == 90
    assert data["train"]["optimizer"] == BEST["optimizer"]  # stale adam keys removed
    assert data["train"]["schedule"] == BEST["schedule"]
    cfg = load_config(f"{target}:train")
    assert cfg.optimizer == BEST["optimizer"]
    assert cfg.batch_size == 64
    # merging again changes nothing but the timestamp
    code, out, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    changed = [line for line in out.splitlines() if line.startswith(("+", "-"))][2:]
    assert all("created" in line for line in changed)  # same second: no diff at all


def test_into_yaml_new_nested_key(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "prod.yml"
    target.write_text(YAML_DOC)
    code, _, _ = _export(capsys, url, "--into", f"{target}:train.lrtune.best")
    assert code == 0
    data = yaml.safe_load(target.read_text())
    assert data["train"]["lrtune"]["best"]["schedule"]["name"] == "onecycle"
    assert data["train"]["optimizer"]["name"] == "adam"  # untouched
    assert load_config(target, "train.lrtune.best").lr == BEST["optimizer"]["lr"]


def test_into_dry_run_leaves_file_unchanged(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "prod.yaml"
    target.write_text(YAML_DOC)
    before = target.stat().st_mtime_ns
    code, out, err = _export(capsys, url, "--into", f"{target}:train", "--dry-run")
    assert code == 0
    assert "+  schedule:" in out
    assert "-    name: adam" in out
    assert "dry run" in err
    assert target.read_text() == YAML_DOC
    assert target.stat().st_mtime_ns == before


def test_into_json_keeps_order_and_indent(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "prod.json"
    original = {"model": {"name": "mlp"}, "train": {"epochs": 5}, "seed": 1}
    target.write_text(json.dumps(original, indent=4) + "\n")
    code, out, _ = _export(capsys, url, "--into", f"{target}:train.opt")
    assert code == 0
    assert out.startswith("---")
    text = target.read_text()
    assert text.endswith("}\n")
    assert '\n    "model": {' in text  # 4-space indent kept
    data = json.loads(text)
    assert list(data) == ["model", "train", "seed"]
    assert list(data["train"]) == ["epochs", "opt"]
    assert data["train"]["opt"]["optimizer"] == BEST["optimizer"]
    assert load_config(f"{target}:train.opt").schedule == BEST["schedule"]


def test_into_toml_keeps_comments(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "prod.toml"
    target.write_text(
        '# production config\ntitle = "run"  # name\n\n[model]\nname = "mlp" # backbone\n\n'
        "[train]\n# from lrtune\nepochs = 5\n"
    )
    code, _, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    text = target.read_text()
    for comment in ("# production config", "# name", "# backbone", "# from lrtune"):
        assert comment in text
    data = tomlkit.parse(text).unwrap()
    assert list(data) == ["title", "model", "train"]
    assert data["train"]["epochs"] == 5
    assert data["train"]["optimizer"] == BEST["optimizer"]
    assert data["train"]["schedule"] == BEST["schedule"]
    cfg = load_config(target, "train")
    assert cfg.schedule == BEST["schedule"]
    assert "\n\n[train.schedule]" in text  # tables stay separated by a blank line
    # a second merge updates the tables in place: only the timestamp may change
    code, out, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    changed = [line for line in out.splitlines() if line.startswith(("+", "-"))][2:]
    assert all("created" in line for line in changed)  # same second: no diff at all


def test_into_toml_top_level(capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> None:
    target = tmp_path / "prod.toml"
    target.write_text('name = "x"\n\n[other]\na = 1\n')
    code, _, _ = _export(capsys, url, "--into", str(target))
    assert code == 0
    data = tomlkit.parse(target.read_text()).unwrap()
    assert data["name"] == "x" and data["other"] == {"a": 1}
    assert data["batch_size"] == 64
    assert load_config(target).optimizer["lr"] == BEST["optimizer"]["lr"]


@pytest.mark.parametrize(
    ("name", "content", "key", "needle"),
    [
        ("missing.yaml", None, "", "no such file"),
        ("prod.txt", "a: 1\n", "", ".yaml"),
        ("prod.yaml", "train: 3\n", ":train.opt", "train is a int"),
        ("prod.json", "[1, 2]", "", "not an object"),
        ("prod.yaml", "a: [\n", "", "cannot parse"),
    ],
)
def test_into_errors_exit_2(
    capsys: pytest.CaptureFixture[str],
    url: str,
    tmp_path: Path,
    name: str,
    content: str | None,
    key: str,
    needle: str,
) -> None:
    target = tmp_path / name
    if content is not None:
        target.write_text(content)
    code, out, err = _export(capsys, url, "--into", f"{target}{key}")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert needle in err
    if content is not None:
        assert target.read_text() == content


def test_dry_run_needs_into(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, _, err = _export(capsys, url, "--dry-run")
    assert code == 2
    assert "--into" in err


def test_out_and_into_exclusive(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["export", "--storage", url, "--study", STUDY, "--out", "a.yaml", "--into", "b.yaml"])
    assert info.value.code == 2


def test_write_config_atomic_keeps_mode(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    target.write_text("old\n")
    target.chmod(0o600)
    export.write_config("new\n", target)
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["c.yaml"]


# --- load_config -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["yaml", "json", "toml"])
def test_load_config_scheduler_matches_closed_form(url: str, tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"best.{fmt}"
    export.write_config(export.dump_config(export.export_config(url, STUDY), fmt), path)
    cfg = load_config(path)
    lr = BEST["optimizer"]["lr"]
    params = {k: v for k, v in BEST["schedule"].items() if k != "name"}
    model = torch.nn.Linear(3, 1)
    opt = cfg.build_optimizer(model.parameters())
    assert isinstance(opt, torch.optim.SGD)
    assert opt.param_groups[0]["momentum"] == 0.9
    total = 200  # another run length than the trial's: durations are fractions
    sched = cfg.build_scheduler(opt, total)
    seen = []
    for step in range(total):
        got = opt.param_groups[0]["lr"]
        assert got == pytest.approx(schedules.schedule_lr("onecycle", step, total, lr, **params))
        assert got == pytest.approx(cfg.lr_at(step, total))
        seen.append(got)
        opt.step()
        sched.step()
    assert max(seen) == pytest.approx(lr)  # pct_start * total = 50: peak hit exactly


def test_build_optimizer_param_groups_lr_mult(url: str, tmp_path: Path) -> None:
    path = tmp_path / "best.yaml"
    export.write_config(export.dump_config(export.export_config(url, STUDY), "yaml"), path)
    cfg = load_config(str(path))
    body, head, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1), torch.nn.Linear(1, 1)
    lr = cfg.lr
    opt = cfg.build_optimizer(
        [
            {"params": body.parameters(), "lr_mult": 0.1},
            {"params": head.parameters()},
            {"params": other.parameters(), "lr": 0.5},
        ]
    )
    assert [g["lr"] for g in opt.param_groups] == [lr * 0.1, lr, 0.5]
    assert all("lr_mult" not in g for g in opt.param_groups)
    sched = cfg.build_scheduler(opt, 100)
    for _ in range(37):
        opt.step()
        sched.step()
    factor = schedules.lr_factor(
        "onecycle", 37, 100, **{k: v for k, v in cfg.schedule.items() if k != "name"}
    )
    got = [g["lr"] for g in opt.param_groups]
    assert got == pytest.approx([lr * 0.1 * factor, lr * factor, 0.5 * factor])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("schedule: {name: cosine}\n", "optimizer"),
        ("optimizer: {name: sgd, lr: -1}\n", "lr"),
        ("optimizer: {name: lamb, lr: 0.1}\n", "lamb"),
        ("optimizer: {name: sgd, lr: 0.1}\nschedule: {name: nope}\n", "nope"),
        ("optimizer: {name: sgd, lr: 0.1}\nschedule: {name: cosine, warmup_frac: 0.1}\n", "warmup"),
        ("- 1\n", "table"),
    ],
)
def test_load_config_bad_file(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        load_config(path)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_load_config_missing_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "none.yaml")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a": {"optimizer": {"name": "adam", "lr": 0.001}}}))
    with pytest.raises(UserError, match="no key"):
        load_config(path, "b")
    cfg = load_config(f"{path}:a")
    assert cfg.schedule["name"] == "constant"
    assert isinstance(cfg.build_optimizer([torch.zeros(1, requires_grad=True)]), torch.optim.Adam)


# --- --into on real-world configs (issue 11) ---------------------------------------------------

# A Lightning-CLI style config: lists indented under their key and at the key's column,
# flow lists, comments after several spaces, aligned comments, a Hydra defaults list.
LIGHTNING_YAML = """\
# Lightning CLI config
seed_everything: 42   # reproducible
trainer:
  max_epochs: 30
  devices: [0]
  callbacks:
    - class_path: ModelCheckpoint
      init_args:
        monitor: val_loss    # the metric
    - class_path: LearningRateMonitor
  logger:
  - tensorboard   # the default
  - csv
model:
  layers:
  - 64
  - 32
train:
  optimizer:
    name: adam      # tried sgd first
    lr: 0.001
    betas: [0.9, 0.999]
  batch_size: 64        # fits one GPU
  epochs: 90
defaults:
- _self_
- model: resnet   # hydra group
"""


def _changed(diff: str) -> tuple[list[str], list[str]]:
    """The removed and the added lines of a unified diff (without the file headers)."""
    body = [line for line in diff.splitlines() if not line.startswith(("---", "+++"))]
    return (
        [line[1:] for line in body if line.startswith("-")],
        [line[1:] for line in body if line.startswith("+")],
    )


def test_into_yaml_untouched_lines_stay_byte_identical(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text(LIGHTNING_YAML)
    code, out, err = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0, err
    removed, added = _changed(out)
    # only the optimizer's stale/changed lines go; every other line is kept as it was; a
    # changed line's comment spoke of its old value and goes with it
    assert removed == [
        "    name: adam      # tried sgd first",
        "    lr: 0.001",
        "    betas: [0.9, 0.999]",
    ]
    assert added[:3] == [
        "    name: sgd",
        "    lr: 0.0830001234567",
        "    momentum: 0.9",
    ]
    text = target.read_text()
    old_lines = LIGHTNING_YAML.splitlines()
    kept = [line for line in old_lines if line not in removed]
    new_lines = text.splitlines()
    assert [line for line in new_lines if line in kept] == kept  # same bytes, same order
    assert "  - tensorboard   # the default" in new_lines
    assert "    - class_path: ModelCheckpoint" in new_lines
    assert "- model: resnet   # hydra group" in new_lines
    data = yaml.safe_load(text)
    assert data["train"]["optimizer"] == BEST["optimizer"]
    assert data["train"]["schedule"] == BEST["schedule"]
    assert list(data["train"]) == ["optimizer", "batch_size", "epochs", "schedule", "source"]
    assert data["trainer"] == yaml.safe_load(LIGHTNING_YAML)["trainer"]
    assert load_config(f"{target}:train").lr == BEST["optimizer"]["lr"]


def test_into_yaml_new_key_in_col0_list_file(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text(LIGHTNING_YAML)
    code, out, _ = _export(capsys, url, "--into", f"{target}:model.lrtune")
    assert code == 0
    removed, added = _changed(out)
    assert removed == []
    assert added[:3] == ["  lrtune:", "    optimizer:", "      name: sgd"]
    assert target.read_text().startswith(LIGHTNING_YAML.split("train:")[0] + "  lrtune:\n")
    assert load_config(target, "model.lrtune").schedule == BEST["schedule"]


@pytest.mark.parametrize("suffix", ["yaml", "json", "toml"])
def test_into_optimizer_block_replaces_owned_keys(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path, suffix: str
) -> None:
    """`--into file:train.optim` where train.optim IS an optimizer: lrtune's keys there are
    replaced by the exported optimizer's (nothing nested inside it), other keys stay, and
    the schedule and the rest go beside it under train; load_config reads it back."""
    data = {
        "train": {"optim": {"name": "adam", "lr": 0.001, "eps": 1e-8, "clip": 1.0}, "epochs": 9}
    }
    target = tmp_path / f"config.{suffix}"
    if suffix == "yaml":
        target.write_text(
            "train:\n  optim:\n    name: adam\n    lr: 0.001   # hand-tuned\n"
            "    eps: 1.0e-08\n    clip: 1.0  # grad clip\n  epochs: 9  # as in the paper\n"
        )
    elif suffix == "json":
        target.write_text(json.dumps(data, indent=2) + "\n")
    else:
        target.write_text(tomlkit.dumps(data).replace("lr = 0.001", "lr = 0.001  # hand-tuned"))
    code, out, err = _export(capsys, url, "--into", f"{target}:train.optim")
    assert code == 0, err
    warning = out.splitlines()[0]
    assert warning.startswith("# lrtune export: warning: ")
    assert "holds an optimizer (adam, lr 0.001)" in warning
    assert "(eps removed)" in warning and f"under {target}:train" in warning
    text = target.read_text()
    train = {
        "yaml": yaml.safe_load,
        "json": json.loads,
        "toml": lambda t: tomlkit.parse(t).unwrap(),
    }[suffix](text)["train"]
    assert train["optim"] == {**BEST["optimizer"], "clip": 1.0}
    assert train["schedule"] == BEST["schedule"] and train["epochs"] == 9
    assert "optimizer" not in train and "optimizer" not in train["optim"]
    assert train["source"]["study"] == STUDY
    if suffix != "json":
        assert "hand-tuned" not in text  # the changed lr's comment went with the old value
    if suffix == "yaml":
        assert "    clip: 1.0  # grad clip\n" in text and "  epochs: 9  # as in the paper\n" in text
    cfg = load_config(target, "train.optim")
    assert cfg.optimizer == BEST["optimizer"] and cfg.schedule == BEST["schedule"]
    # Run again: the block holds the exported optimizer now; at most source.created moves.
    code, out, err = _export(capsys, url, "--into", f"{target}:train.optim")
    assert code == 0, err
    removed, added = _changed(out)
    assert all("created" in line for line in removed + added), out


def test_into_toml_drops_the_comment_of_a_changed_value_only(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.toml"
    old = (
        "[train.optimizer]\nname = 'sgd'  # keep: unchanged\nlr = 0.1234  # old guess\n"
        "[other]\nx = 1  # mine\n"
    )
    target.write_text(old)
    code, _, err = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0, err
    text = target.read_text()
    assert "old guess" not in text
    assert "name = 'sgd'  # keep: unchanged\n" in text and "x = 1  # mine\n" in text


def test_into_batch_size_change_warns_and_rescale_keeps_it(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text(LIGHTNING_YAML.replace("batch_size: 64 ", "batch_size: 256"))
    code, out, _ = _export(capsys, url, "--into", f"{target}:train", "--dry-run")
    assert code == 0
    warning = out.splitlines()[0]
    assert warning.startswith("# lrtune export: warning: batch_size at ")
    assert "from 256 to 64" in warning
    assert "its comment '# fits one GPU' is dropped" in warning
    assert "--batch-size 256" in warning
    assert "+  batch_size: 64\n" in out  # the comment was about the old value
    # the offered way out: keep the user's batch size, rescale the LR
    code, out, _ = _export(capsys, url, "--into", f"{target}:train", "--batch-size", "256")
    assert code == 0
    assert "warning" not in out
    removed, _ = _changed(out)
    assert not any("batch_size" in line for line in removed)
    data = yaml.safe_load(target.read_text())
    assert data["train"]["batch_size"] == 256
    assert data["train"]["optimizer"]["lr"] == BEST["optimizer"]["lr"] * 256 / 64
    assert "  batch_size: 256       # fits one GPU\n" in target.read_text()


def test_into_toml_batch_size_change_warns(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.toml"
    target.write_text("[train]\nbatch_size = 32  # per GPU\n")
    code, out, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    assert "from 32 to 64" in out.splitlines()[0]
    assert "'# per GPU'" in out.splitlines()[0]


def test_write_config_through_symlink_writes_target(tmp_path: Path) -> None:
    real = tmp_path / "configs" / "prod.yaml"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "prod.yaml"
    link.symlink_to(real)
    export.write_config("new\n", link)
    assert link.is_symlink()
    assert real.read_text() == "new\n"
    assert sorted(p.name for p in real.parent.iterdir()) == ["prod.yaml"]  # no temp left


def test_into_through_symlink_keeps_link(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    real = tmp_path / "shared" / "config.yaml"
    real.parent.mkdir()
    real.write_text(YAML_DOC)
    link = tmp_path / "config.yaml"
    link.symlink_to(real)
    code, _, _ = _export(capsys, url, "--into", f"{link}:train")
    assert code == 0
    assert link.is_symlink()
    assert yaml.safe_load(real.read_text())["train"]["optimizer"] == BEST["optimizer"]


def test_into_yaml_crlf_stays_crlf(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    target.write_bytes(b"seed: 1   # s\r\ntrain:\r\n  epochs: 5\r\n")
    code, _, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    raw = target.read_bytes()
    assert raw.startswith(b"seed: 1   # s\r\ntrain:\r\n  epochs: 5\r\n  optimizer:\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert load_config(target, "train").optimizer == BEST["optimizer"]


def test_into_yaml_null_placeholder_is_filled(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    target = tmp_path / "config.yaml"
    target.write_text("train:   # filled by lrtune\nseed: 1\n")
    code, _, err = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0, err
    assert target.read_text().endswith("\nseed: 1\n")
    assert load_config(target, "train").schedule == BEST["schedule"]


def test_into_yaml_falls_back_to_round_trip_and_says_so(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    """An anchor on a replaced value: a line edit would leave its alias dangling."""
    target = tmp_path / "config.yaml"
    target.write_text("train:\n  batch_size: &bs 64\ndata:\n  batch_size: *bs\n")
    code, out, _ = _export(capsys, url, "--into", f"{target}:train.run")
    assert code == 0
    data = yaml.safe_load(target.read_text())
    assert data["data"]["batch_size"] == 64
    assert data["train"]["run"]["optimizer"] == BEST["optimizer"]
    target.write_text("train:\n  batch_size: &bs 32\ndata:\n  batch_size: *bs\n")
    code, out, _ = _export(capsys, url, "--into", f"{target}:train")
    assert code == 0
    assert "# lrtune export: warning: could not keep the layout" in out
    data = yaml.safe_load(target.read_text())
    assert (data["train"]["batch_size"], data["data"]["batch_size"]) == (64, 32)


@pytest.mark.parametrize(
    ("text", "key", "kept"),
    [
        ("train: !Config\n  epochs: 3\n", "train", "train: !Config\n"),
        ("train: &t !Config\n  epochs: 3\n", "train", "train: &t !Config\n"),
        ("train: !Config {epochs: 3}\n", "train", "train: !Config {"),
        ("train:\n  optimizer: !Opt\n    name: adam\n", "train", "  optimizer: !Opt\n"),
        ("when: !Date 2024\ntrain:\n  epochs: 3\n", "train", "when: !Date 2024\n"),
    ],
)  # fmt: skip
def test_into_yaml_keeps_custom_tags(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path, text: str, key: str, kept: str
) -> None:
    # A tag names the class a config loader builds (OmegaConf, Hydra, a yaml constructor):
    # dropping it silently changes what the user's code gets.
    from ruamel.yaml import YAML

    target = tmp_path / "config.yaml"
    target.write_text(text)
    code, _, err = _export(capsys, url, "--into", f"{target}:{key}")
    assert code == 0, err
    new = target.read_text()
    assert kept in new, new
    doc = YAML(typ="rt").load(new)
    assert doc["train"]["optimizer"]["name"] == BEST["optimizer"]["name"]


def test_export_package_imports_no_torch() -> None:
    """The export package (export, --into, load_config) pays for torch only when a config
    builds an optimizer, so `lrtune export` and its error paths stay quick."""
    import subprocess
    import sys

    code = (
        "import sys, lrtune.export as e; "
        "from lrtune.export import export_config, merge_into, load_config, ProductionConfig; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_trial_picks_one_trial_and_refuses_an_unfinished_one(
    capsys: pytest.CaptureFixture[str], url: str
) -> None:
    code, out, err = _export(capsys, url, "--trial", "3", "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"]["trial"] == 3 and data["source"]["value"] == 0.09
    assert data["schedule"]["name"] == "wsd"
    code, out, err = _export(capsys, url, "--trial", "2")
    assert code == 2 and out == ""
    assert "trial 2 of study" in err and "is FAIL, not COMPLETE" in err
    assert err.count("\n") == 1


def test_help_says_what_export_writes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "write the group's confirmed winner (else the study's best trial)" in text
    assert "its group's confirmed winner when the group has one" in text
    assert "--trial N export trial N of the study instead" in text
