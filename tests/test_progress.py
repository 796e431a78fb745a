"""The live progress display: redraws on a terminal, silent otherwise."""

from __future__ import annotations

import io

import optuna

from lrtune.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _storage_with_trials(url: str) -> None:
    study = optuna.create_study(study_name="g.tpe.none", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)


def test_quiet_when_not_a_terminal(sqlite_url: str) -> None:
    _storage_with_trials(sqlite_url)
    stream = io.StringIO()
    progress = Progress(["g.tpe.none"], {"g.tpe.none": 5}, stream)
    progress.update(optuna.storages.RDBStorage(sqlite_url))
    assert stream.getvalue() == ""


def test_redraws_in_place_on_a_terminal(sqlite_url: str) -> None:
    _storage_with_trials(sqlite_url)
    storage = optuna.storages.RDBStorage(sqlite_url)
    stream = _Terminal()
    progress = Progress(["g.tpe.none"], {"g.tpe.none": 5}, stream)
    progress.update(storage)
    first = stream.getvalue()
    assert "g.tpe.none" in first and "3/5" in first and "best" in first
    assert "3/5 trials" in first and "ETA -" in first
    progress.update(storage)
    # The second draw moves the cursor up over the two lines it drew before.
    assert stream.getvalue()[len(first) :].startswith("\x1b[1A\x1b[2K\x1b[1A\x1b[2K")
