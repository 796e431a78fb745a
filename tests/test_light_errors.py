"""The read-only commands' error paths import neither torch nor optuna-dashboard (issue 12).

A typo in ``ls``/``export``/``report``/``dashboard`` should answer in a moment, not after
loading torch (seconds on a busy machine) or the dashboard's web stack.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna

from tests.conftest import REPO

HEAVY = ("torch", "optuna_dashboard")

# One fresh interpreter runs every case in turn and notes, after each, which heavy modules
# are loaded: the first case that names one is the one that imported it.
_RUN = """
import io, json, sys
from contextlib import redirect_stderr
from lrtune.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code
    heavy = [m for m in HEAVY if m in sys.modules]
    results.append({"rc": rc, "err": err.getvalue(), "heavy": heavy})
print(json.dumps(results))
"""


def _cases(root: Path, busy: int) -> dict[str, list[str]]:
    ok = f"sqlite:///{root / 'lrtune.db'}"
    missing = f"sqlite:///{root / 'missing.db'}"
    foreign = f"sqlite:///{root / 'foreign.db'}"
    bad_port = "postgresql://root:pw@127.0.0.1:notaport/lrtune"
    out = ["--out", str(root / "report")]
    return {
        "ls missing storage": ["ls", "--storage", missing],
        "ls foreign file": ["ls", "--storage", foreign],
        "ls bad port": ["ls", "--storage", bad_port],
        "export missing storage": ["export", "--storage", missing, "--study", "g.random.none"],
        "export unknown study": ["export", "--storage", ok, "--study", "nosuch"],
        "export bad port": ["export", "--storage", bad_port, "--study", "g.random.none"],
        "report missing storage": ["report", "--storage", missing, "--group", "g", *out],
        "report unknown group": ["report", "--storage", ok, "--group", "nosuch", *out],
        "report bad port": ["report", "--storage", bad_port, "--group", "g", *out],
        "dashboard missing storage": ["dashboard", "--storage", missing],
        "dashboard foreign file": ["dashboard", "--storage", foreign],
        "dashboard bad --port": ["dashboard", "--storage", ok, "--port", "notaport"],
        "dashboard busy port": ["dashboard", "--storage", ok, "--port", str(busy)],
    }


def test_read_only_error_paths_import_no_torch_nor_dashboard(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'lrtune.db'}", study_name="g.x")
    study.set_user_attr("group", "g")
    with sqlite3.connect(tmp_path / "foreign.db") as db:
        db.execute("create table notes (body text)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        cases = _cases(tmp_path, sock.getsockname()[1])
        proc = subprocess.run(
            [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{_RUN}", json.dumps(list(cases.values()))],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 0, proc.stderr
    results = dict(zip(cases, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True))
    for case, result in results.items():
        lines = result["err"].strip().splitlines()
        assert result["rc"] == 2 and len(lines) == 1, (case, result)  # an error path indeed
        assert "error: " in lines[0] and "Traceback" not in result["err"], (case, result)
        assert result["heavy"] == [], f"{case} imported {result['heavy']}: {lines[0]}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign.db", "lrtune.db"]
