"""Tests of the command line, in-process: ``lrtune rangetest`` output and files and
``--help`` on every command. Bad input to every command: tests/test_bad_inputs.py."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lrtune.cli import COMMANDS, build_parser, main
from tests.conftest import SPEC_FIELDS


def _run(argv: list[str]) -> int:
    """``main(argv)``'s exit code, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_rangetest_prints_the_table_and_writes_json_and_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["rangetest", "--task", "digits", "--json", "r.json", "--plot", "r.png", "--seeds", "1"]
    assert _run(argv) == 0
    out = capsys.readouterr().out
    for row in ("steep", "valley", "min/10", "diverged at", "bounds", "spread", "diagnosis"):
        assert row in out
    assert "wrote r.json" in out and "wrote r.png" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(SPEC_FIELDS) <= set(data)
    assert data["diagnosis"] == "ok"
    assert 0 < data["lr_low"] < data["lr_high"]
    assert len(data["lrs"]) == 1 and len(data["lrs"][0]) == len(data["losses"][0])
    assert f"[{data['lr_low']:.3g}, {data['lr_high']:.3g}]" in out
    png = (tmp_path / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.png"]  # no temp files, no database


def test_rangetest_flags_reach_the_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = [
        "rangetest",
        "--task",
        "wine",
        "--optimizer",
        "adam",
        "--start-lr",
        "1e-5",
        "--end-lr",
        "1",
        "--steps",
        "30",
        "--mode",
        "linear",
        "--seeds",
        "2",
        "--seed",
        "4",
        "--device",
        "cpu",
        "--json",
        "r.json",
    ]
    assert _run(argv) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["optimizer"] == "adam" and data["mode"] == "linear"
    assert data["start_lr"] == 1e-5 and data["end_lr"] == 1.0 and data["steps"] == 30
    assert data["seeds"] == [4, 5]
    assert data["lrs"][0][0] == pytest.approx(1e-5)
    assert "adam, linear sweep" in capsys.readouterr().out


@pytest.fixture
def storage_with_a_study(tmp_path: Path) -> str:
    import optuna

    url = f"sqlite:///{tmp_path / 'existing.db'}"
    optuna.create_study(study_name="other", storage=url)
    return url


@pytest.mark.slow
def test_study_missing_on_an_existing_storage_writes_nothing(
    storage_with_a_study: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    db = tmp_path / "existing.db"
    size = db.stat().st_size
    argv = ["rangetest", "--storage", storage_with_a_study, "--study", "nope", "--json", "r.json"]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no study 'nope'" in err and "other" in err
    assert sorted(os.listdir(tmp_path)) == ["existing.db"]
    assert db.stat().st_size == size
    assert optuna.get_all_study_names(storage_with_a_study) == ["other"]


def test_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lrtune.errors import UserError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="unknown task"):
        main(["rangetest", "--task", "nope", "--debug"])


def _commands() -> list[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return list(actions[0].choices)


def test_the_commands_built_so_far_are_registered() -> None:
    # `report` joins this set when it is written (SPEC lists it).
    assert {"rangetest", "study", "worker", "dashboard", "export", "ls"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and f"lrtune {command}" in out
    assert len(out.splitlines()) > 3
    assert "(default: " in out  # flags show their defaults
    assert "\nexamples:\n  lrtune " + command in out


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_the_help_examples_are_valid_command_lines(command: str) -> None:
    (spec,) = [c for c in COMMANDS if c.name == command]
    assert spec.examples
    for line in spec.examples:
        argv = shlex.split(line)
        assert argv[:2] == ["lrtune", command]
        args = build_parser().parse_args(argv[1:])
        assert args.command == command


@pytest.mark.parametrize(
    "command", ["ls", "export --study s", "dashboard", "report --group g --out r"]
)
@pytest.mark.parametrize("flag", ["--device cpu", "--seed 1", "--task digits"])
def test_read_only_commands_refuse_training_flags(
    command: str,
    flag: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run([*command.split(), *flag.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    name = command.split()[0]
    assert len(err) == 1
    assert err[0].startswith(f"lrtune {name}: error: unrecognized arguments: {flag.split()[0]}")
    assert os.listdir(tmp_path) == []


def test_python_m_lrtune_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lrtune", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: lrtune")
    for command in _commands():
        assert command in proc.stdout


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([]) == 2
    assert "usage: lrtune" in capsys.readouterr().out


def _run_pasted(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``line`` run by a POSIX shell, as a user pasting it would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    bin_dir = cwd / "bin"  # `lrtune` on PATH: this checkout's, whatever is installed
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "lrtune"
    script.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m lrtune "$@"\n')
    script.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return subprocess.run(
        ["sh", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_printed_commands_quote_their_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A group name is the user's text; printed bare, `$(...)` in it would run when the
    # printed command is pasted into a shell.
    group = "g$(id>PWNED)'x"
    db = tmp_path / "my db.sqlite"  # a space in the storage URL too
    url = f"sqlite:///{db}"
    monkeypatch.chdir(tmp_path)
    small = ["--task", "digits", "--group", group, "--prior", "none", "--samplers", "random"]
    small += ["--trials", "1", "--epochs", "1", "--confirm", "0", "--device", "cpu"]
    assert main(["study", *small, "--storage", url, "--create-only"]) == 0
    out = capsys.readouterr().out
    workers = next(line for line in out.splitlines() if line.startswith("run workers with: "))
    assert shlex.split(workers.split(": ", 1)[1])[:4] == ["lrtune", "worker", "--group", group]
    assert main(["study", *small, "--storage", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    watch = next(line for line in lines if line.startswith("watch: "))
    export = next(line for line in lines if line.startswith("export: "))
    assert shlex.split(watch.split(": ", 1)[1]) == ["lrtune", "dashboard", "--storage", url]
    pasted = _run_pasted(export.split(": ", 1)[1], tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    assert "optimizer:" in pasted.stdout and f"study: {group}.random.none" in pasted.stdout
    # The same in report.md: its export command, pasted, exports and runs nothing else.
    assert main(["report", "--group", group, "--storage", url, "--out", "report"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("Export it: `"))
    pasted = _run_pasted(line.split("`")[1], tmp_path)
    assert pasted.returncode == 0, pasted.stderr
    assert (tmp_path / "lr.yaml").is_file()
    assert not (tmp_path / "PWNED").exists()
