"""Study specs and `lrtune study` flags: every mistake is one line, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from lrtune.cli import main
from lrtune.errors import UserError
from lrtune.search.spec import StudySpec, load_spec_file, resolve_spec
from tests.conftest import REPO

BAD_SPECS = {
    "unknown key": ("trails = 5\n", "unknown key 'trails'"),
    "wrong type": ('trials = "ten"\n', "trials: expected an integer"),
    "unknown schedule": ('schedules = ["cosine", "triangle"]\n', "unknown value 'triangle'"),
    "inverted bounds": ("lr_low = 1.0\nlr_high = 0.1\n", "lr_low (1) must be below lr_high"),
    "unknown sampler": ('samplers = ["tpe", "bayes"]\n', "unknown value 'bayes'"),
    "bad toml": ("trials = \n", "not valid TOML"),
    "unknown optimizer": ('optimizer = "lamb"\n', "unknown optimizer 'lamb'"),
    "negative lr": ("lr_low = -1\n", "lr_low: must be a positive"),
    "param of other schedule": (
        'schedules = ["cosine"]\n[params.onecycle]\npct_start = [0.1, 0.5]\n',
        "schedule 'onecycle' is not in schedules",
    ),
    "unknown param": ("[params.onecycle]\npct_strat = [0.1, 0.5]\n", "unknown parameter"),
    "param out of range": ("[params.onecycle]\npct_start = [0.1, 1.5]\n", "pct_start"),
    "empty list": ("samplers = []\n", "expected a non-empty list"),
    "duplicate": ('prior = ["none", "none"]\n', "lists a value twice"),
    "bad group": ('group = "my.group"\n', "may not contain"),
    "accumulate 0": ("accumulate = 0\n", "accumulate: must be at least 1"),
    "precision fp8": ('precision = "fp8"\n', "unknown precision 'fp8'"),
    "clip_grad_norm -1": ("clip_grad_norm = -1\n", "clip_grad_norm: must be a positive"),
    "momentum on adam": (
        '[optimizer]\nname = "adam"\nmomentum = 0.9\n',
        "optimizer.momentum: adam takes weight_decay, betas, eps, not momentum",
    ),
    "momentum on adam, plain name": (
        'optimizer = "adam"\n[optimizer_params]\nmomentum = 0.9\n',
        "optimizer.momentum: adam takes",
    ),
    "searched momentum on adamw": (
        'optimizer = "adamw"\n[params.optimizer]\nmomentum = [0.8, 0.9]\n',
        "params.optimizer.momentum: adamw takes",
    ),
    "weight_decay low > high": (
        "[params.optimizer]\nweight_decay = [0.1, 0.01]\n",
        "params.optimizer.weight_decay: low (0.1) must be below high (0.01)",
    ),
    "weight_decay log from 0": (
        "[params.optimizer]\nweight_decay = [0, 0.1]\n",
        "log-scale range needs low > 0",
    ),
    "betas of one": (
        '[optimizer]\nname = "adamw"\nbetas = [0.9]\n',
        "betas must be two numbers in [0, 1)",
    ),
    "betas searched": (
        '[optimizer]\nname = "adamw"\n[params.optimizer]\nbetas = [0.9, 0.99]\n',
        "params.optimizer.betas: not searchable",
    ),
    "unknown optimizer key": (
        '[optimizer]\nname = "sgd"\nnesterov = true\n',
        "optimizer.nesterov: unknown key",
    ),
    "weight_decay negative": ("[optimizer]\nweight_decay = -0.1\n", "weight_decay must be >= 0"),
    "fixed and searched": (
        "[optimizer]\nweight_decay = 0.1\n[params.optimizer]\nweight_decay = true\n",
        "also fixed under [optimizer]",
    ),
    "rangetest end below start": (
        "rangetest_start_lr = 1e-3\nrangetest_end_lr = 1e-4\n",
        "rangetest_end_lr (0.0001) must be above rangetest_start_lr (0.001)",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_file(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text, expected = BAD_SPECS[case]
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    code = main(["study", "--spec", str(spec), "--storage", "sqlite:///s.db"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert str(spec) in err[0] and expected in err[0], err[0]
    assert "Traceback" not in err[0]
    assert not (tmp_path / "s.db").exists()  # nothing written to the storage


BAD_FLAGS = {
    "prior": (["--prior", "bayes"], "--prior: unknown value 'bayes'"),
    "samplers": (["--samplers", "tpe,,random"], "unknown value ''"),
    "pruner": (["--pruner", "sometimes"], "--pruner: unknown pruner"),
    "trials": (["--trials", "0"], "expected a positive integer"),
    "trials text": (["--trials", "many"], "expected a positive integer"),
    "lr bounds": (["--lr-low", "1", "--lr-high", "0.5"], "lr_low (1) must be below lr_high"),
    "lr nan": (["--lr-low", "nan"], "expected a positive finite number"),
    "tolerance": (["--tolerance", "2"], "--tolerance: must be between 0 and 1"),
    "schedules": (["--schedules", "cosine,zigzag"], "unknown value 'zigzag'"),
    "task": (["--task", "no-such-task"], "unknown task 'no-such-task'"),
    "task file": (["--task", "missing.py:make"], "does not exist"),
    "group": (["--group", "a b"], "may not contain"),
    "device": (["--device", "tpu"], "unknown device 'tpu'"),
    "spec missing": (["--spec", "nope.toml"], "spec file nope.toml does not exist"),
    "storage": (["--storage", "not-a-url"], "is not a URL"),
    "storage dir": (["--storage", "sqlite:////no/such/dir/x.db"], "cannot create the storage"),
    "unknown flag": (["--trails", "3"], "unrecognized arguments"),
    "accumulate 0": (["--accumulate", "0"], "--accumulate: expected a positive integer"),
    "precision fp8": (["--precision", "fp8"], "--precision: unknown precision 'fp8'"),
    "clip-grad-norm -1": (["--clip-grad-norm=-1"], "--clip-grad-norm: expected a positive"),
    "rangetest end <= start": (
        ["--rangetest-start-lr", "0.1", "--rangetest-end-lr", "0.1"],
        "rangetest_end_lr (0.1) must be above rangetest_start_lr (0.1)",
    ),
    "rangetest end below default start": (
        ["--rangetest-end-lr", "1e-8"],
        "rangetest_end_lr (1e-08) must be above",
    ),
    "rangetest steps": (["--rangetest-steps", "5"], "--rangetest-steps: must be at least 20"),
    "optimizer flag vs file params": (
        ["--optimizer", "adam", "--spec", "{spec}"],
        "optimizer.momentum: adam takes",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flags(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags, expected = BAD_FLAGS[case]
    monkeypatch.chdir(tmp_path)
    spec = tmp_path.parent / f"{tmp_path.name}-sgd.toml"  # outside tmp_path: it must stay empty
    spec.write_text('[optimizer]\nname = "sgd"\nmomentum = 0.95\n')
    argv = ["study", *(f.format(spec=spec) for f in flags)]
    if "--storage" not in flags:
        argv += ["--storage", "sqlite:///s.db"]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    assert expected in err[0], err[0]
    assert "Traceback" not in err[0]
    assert list(tmp_path.iterdir()) == []  # no database, no artifacts


def test_flags_override_the_file() -> None:
    values = load_spec_file(REPO / "studies" / "digits.toml")
    spec = resolve_spec(values, {"trials": 4, "prior": "none", "samplers": None})
    assert spec.trials == 4 and spec.prior == ("none",)
    assert spec.samplers == ("grid", "random", "tpe")  # from the file, flag not given


def test_shipped_specs_are_valid() -> None:
    for path in sorted((REPO / "studies").glob("*.toml")):
        spec = resolve_spec(load_spec_file(path), source=str(path))
        assert isinstance(spec, StudySpec)
    bc = resolve_spec(load_spec_file(REPO / "studies" / "breast-cancer.toml"))
    assert bc.params["onecycle"]["pct_start"] == ["float", 0.1, 0.5, False]
    assert bc.params["wsd"]["decay_frac"][0] == "float"  # `true`: the default range


def test_stored_spec_round_trips() -> None:
    spec = resolve_spec(load_spec_file(REPO / "studies" / "breast-cancer.toml"))
    assert StudySpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(UserError):
        StudySpec.from_dict({**spec.to_dict(), "trials": -1})


def test_an_integer_range_for_a_float_parameter_stays_float() -> None:
    spec = resolve_spec(
        {"schedules": ["onecycle", "sgdr"], "params": {"onecycle": {"div_factor": [5, 100]}}}
    )
    # div_factor is a float (log scale by default), not the 96 integers 5..100.
    assert spec.params["onecycle"]["div_factor"] == ["float", 5.0, 100.0, True]
    # An int parameter written with ints is still an int range.
    spec = resolve_spec({"schedules": ["sgdr"], "params": {"sgdr": {"t_mult": [1, 3]}}})
    assert spec.params["sgdr"]["t_mult"] == ["int", 1, 3]
    # And the float range reaches Optuna as a float distribution.
    import optuna

    from lrtune.search.space import suggest

    spec = resolve_spec(
        {"schedules": ["onecycle"], "params": {"onecycle": {"div_factor": [5, 100]}}}
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    _, _, params = suggest(trial, spec, (0.01, 0.1))
    assert isinstance(params["div_factor"], float)
    assert isinstance(
        trial.distributions["onecycle.div_factor"], optuna.distributions.FloatDistribution
    )
