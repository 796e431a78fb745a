"""``lrtune report`` on a real (tiny) ``lrtune study`` group: report.md, the PNGs, errors."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import optuna
import pytest
from conftest import copy_sqlite

from lrtune import cli
from lrtune.report import (
    BEST_SO_FAR_PNG,
    IMPORTANCES_PNG,
    RANGETEST_PNG,
    REPORT_FILE,
    SCATTER_PNG,
    SCHEDULE_PNG,
    best_so_far,
    write_report,
)

GROUP = "tiny"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# One range-test seed and three schedules keep the group small; the space is still a log
# float (lr) and a categorical (schedule), as importances need.
SPEC = """\
task = "digits"
rangetest_seeds = 1
schedules = ["constant", "cosine", "onecycle"]
"""
STUDY_ARGS = [
    "study",
    "--group",
    GROUP,
    "--prior",
    "rangetest,none",
    "--samplers",
    "tpe,random",
    "--trials",
    "4",
    "--epochs",
    "2",
    "--device",
    "cpu",
]


def _run_study(tmp: Path, url: str, *extra: str) -> None:
    spec = tmp / "tiny.toml"
    spec.write_text(SPEC, encoding="utf-8")
    assert cli.main([*STUDY_ARGS, "--spec", str(spec), "--storage", url, *extra]) == 0


@pytest.fixture(scope="module")
def group_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real group of 4 studies x 4 trials (rangetest,none x tpe,random) in SQLite."""
    tmp = tmp_path_factory.mktemp("report")
    db = tmp / "lrtune.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LRTUNE_ARTIFACTS", raising=False)
        mp.chdir(tmp)
        _run_study(tmp, f"sqlite:///{db}")
    return db


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _check_pngs(out: Path, names: list[str]) -> None:
    for name in names:
        path = out / name
        assert path.is_file(), f"{name} missing: {sorted(p.name for p in out.iterdir())}"
        width, height = _png_size(path)
        assert width >= 600 and height >= 250, (name, width, height)
        assert path.stat().st_size > 10_000, (name, path.stat().st_size)


@pytest.mark.slow
def test_report_writes_markdown_and_pngs(
    group_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reports" / "tiny"  # parents are created
    assert (
        cli.main(
            ["report", "--group", GROUP, "--out", str(out), "--storage", f"sqlite:///{group_db}"]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert f"wrote {out / REPORT_FILE}" in stdout and "5 plots" in stdout, stdout
    pngs = [BEST_SO_FAR_PNG, RANGETEST_PNG, SCHEDULE_PNG, IMPORTANCES_PNG, SCATTER_PNG]
    _check_pngs(out, pngs)
    assert sorted(p.name for p in out.iterdir()) == sorted([REPORT_FILE, *pngs])
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp dir left"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert out.stat().st_mode == plain.stat().st_mode  # not mkdtemp's 0700

    md = (out / REPORT_FILE).read_text(encoding="utf-8")
    for name in pngs:
        assert f"]({name})" in md, name
    # The comparison table of compare.format_table(markdown=True), one row per study.
    assert "| study | trials | best val_loss | lr | schedule | to target | cost | seconds |" in md
    for study in ("tiny.tpe.rangetest", "tiny.random.rangetest", "tiny.tpe.none"):
        assert f"| {study} | 4/4 |" in md or f"| * {study} | 4/4 |" in md, study
    storage = optuna.storages.RDBStorage(f"sqlite:///{group_db}", skip_table_creation=True)
    rt = optuna.load_study(study_name="tiny.tpe.rangetest", storage=storage).user_attrs["rangetest"]
    assert f"**[{rt['lr_low']:.3g}, {rt['lr_high']:.3g}]**" in md
    # The best trial is a complete trial with the group's best value (tied arms share trials).
    complete = [
        (t.value, name, t.number)
        for name in optuna.get_all_study_names(storage)
        if not name.endswith(".confirm")  # the confirmations are no strategy's trials
        for t in optuna.load_study(study_name=name, storage=storage).trials
        if t.state == optuna.trial.TrialState.COMPLETE
    ]
    best = min(v for v, _, _ in complete)
    assert any(f"best trial: **{n} #{k}**" in md for v, n, k in complete if v == best), md
    assert "winner: **tiny." in md
    assert "PED-ANOVA" in md


@pytest.mark.slow
def test_report_again_replaces_its_files_and_keeps_others(group_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine", encoding="utf-8")
    (out / IMPORTANCES_PNG).write_bytes(b"stale")
    path = write_report(f"sqlite:///{group_db}", GROUP, out)
    assert path == out / REPORT_FILE
    assert (out / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (out / IMPORTANCES_PNG).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_band_over_repeats(group_db: Path, tmp_path: Path) -> None:
    """--repeats 2 on a copy of the group: the range test is reused, the table and the
    best-so-far plot switch to median and IQR over the repeats."""
    db = tmp_path / "lrtune.db"
    copy_sqlite(group_db, db)
    arts = group_db.with_name(group_db.name + ".artifacts")
    shutil.copytree(arts, db.with_name(db.name + ".artifacts"))
    url = f"sqlite:///{db}"
    _run_study(tmp_path, url, "--repeats", "2")
    out = tmp_path / "rep"
    write_report(url, GROUP, out)
    md = (out / REPORT_FILE).read_text(encoding="utf-8")
    assert "median [IQR] over 2 repeats" in md
    assert "| tpe | rangetest | 2 (" in md or "| * tpe | rangetest | 2 (" in md
    assert "median over 2 repeats, the band their interquartile range" in md
    _check_pngs(out, [BEST_SO_FAR_PNG, RANGETEST_PNG, SCHEDULE_PNG, SCATTER_PNG])


def test_unknown_group_exit_2_one_line_nothing_written(
    group_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "nope" / "report"
    code = cli.main(
        ["report", "--group", "nope", "--out", str(out), "--storage", f"sqlite:///{group_db}"]
    )
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("lrtune report: error: no group 'nope'")
    assert "groups there: tiny" in captured.err
    assert list(tmp_path.iterdir()) == []


def test_group_without_finished_trials_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    args = ["study", "--group", "empty", "--prior", "none", "--samplers", "random", "--create-only"]
    assert cli.main([*args, "--storage", url]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert cli.main(["report", "--group", "empty", "--out", str(out), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no complete trial yet" in err, err
    assert not out.exists()


def test_missing_storage_and_out_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.db"
    assert (
        cli.main(
            [
                "report",
                "--group",
                "g",
                "--out",
                str(tmp_path / "o"),
                "--storage",
                f"sqlite:///{missing}",
            ]
        )
        == 2
    )
    assert "no storage at" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    afile = tmp_path / "file"
    afile.write_text("x", encoding="utf-8")
    assert cli.main(["report", "--group", "g", "--out", str(afile)]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_best_so_far_counts_pruned_and_direction() -> None:
    def trial(number: int, state: str, value: float | None) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(
            state=optuna.trial.TrialState[state],
            value=value,
            params={},
            distributions={},
        )

    ts = [
        trial(0, "PRUNED", None),
        trial(1, "COMPLETE", 0.5),
        trial(2, "COMPLETE", 0.7),
        trial(3, "PRUNED", None),
        trial(4, "COMPLETE", 0.2),
    ]
    got = best_so_far(ts, "minimize")
    assert got == [None, 0.5, 0.5, 0.5, 0.2]
    assert best_so_far(ts, "maximize")[1:] == [0.5, 0.7, 0.7, 0.7]


def test_help_lists_report() -> None:
    assert "report" in cli.build_parser().format_help()


def test_scatter_shades_the_bounds_the_range_test_gave_not_widened_ones() -> None:
    import optuna

    from lrtune.report import start_bounds

    widened = optuna.create_study()
    widened.set_user_attr("prior", "rangetest")
    widened.set_user_attr("bounds", [0.003, 1.0])
    widened.set_user_attr("bounds_history", [[0.03, 1.0], [0.003, 1.0]])
    plain = optuna.create_study()
    plain.set_user_attr("prior", "none")
    plain.set_user_attr("bounds", [1e-6, 10.0])
    assert start_bounds([widened, plain]) == {"rangetest": (0.03, 1.0), "none": (1e-6, 10.0)}
