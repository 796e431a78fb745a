"""Workers sharing one storage: budget, SIGKILL mid-trial, lost database, secrets, GPU path.

The multi-process tests start real ``python -m lrtune`` processes against the PostgreSQL
server on this machine (each test creates and drops its own database, see ``pg_url``) or a
temporary SQLite file.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import optuna
import pytest
import sqlalchemy
import torch

from lrtune import processes, workers
from lrtune.cli import main
from lrtune.group.prepare import MAX_CONSECUTIVE_FAILURES
from lrtune.joining import load_for_work
from lrtune.search.states import FINISHED
from lrtune.storage import mask_url, open_storage
from tests.conftest import TINY_TASK, run_lrtune, spawn_lrtune

REPO = Path(__file__).resolve().parents[1]
States = optuna.trial.TrialState
UNREACHABLE = "postgresql+psycopg://u:pw@127.0.0.1:1/x"
PG_ADMIN = os.environ.get("LRTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # In-process `lrtune study/worker` calls limit_cpu_threads; give the next test its one
    # thread back (see conftest).
    yield
    torch.set_num_threads(1)


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def _by_state(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def _wait_for(
    what: str, check: Callable[[], Any], timeout: float, procs: list[subprocess.Popen[str]]
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                pytest.fail(f"a worker exited ({p.returncode}) before {what}:\n{out}\n{err}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _one_line_error(stderr: str, command: str) -> str:
    """The one error line (warnings logged before it, e.g. failed trials, are allowed)."""
    lines = [
        line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING ")
    ]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"lrtune {command}: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# --- 1. SIGKILL mid-trial on PostgreSQL -----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_killed_mid_trial_is_retried_and_budget_exact(pg_url: str) -> None:
    # Narrow LR bounds and no pruner: no trial diverges or stops early, so each trial trains
    # all its epochs and the kill lands inside one. (Created in this process: one
    # interpreter start-up less.)
    created = main(
        [
            *("study", "--task", "digits", "--samplers", "tpe", "--prior", "none"),
            *("--trials", "8", "--epochs", "40", "--pruner", "none", "--storage", pg_url),
            *("--lr-low", "0.001", "--lr-high", "0.1", "--create-only", "--device", "cpu"),
            *("--confirm", "0"),  # the test is about the budget; 40-epoch confirmations: slow
        ]
    )
    assert created == 0
    name = "digits.tpe.none"
    assert _trials(pg_url, name) == []

    args = ("worker", "--group", "digits", "--heartbeat-interval", "1", "--grace-period", "6")
    victim = spawn_lrtune([*args], REPO, LRTUNE_STORAGE=pg_url)
    survivor = spawn_lrtune([*args, "--storage", pg_url], REPO)
    procs = [victim, survivor]
    try:

        def victim_running() -> optuna.trial.FrozenTrial | None:
            for t in _trials(pg_url, name):
                if (
                    t.state == States.RUNNING
                    and "lr" in t.params  # sampled: it is training, not still starting
                    and str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}")
                ):
                    return t
            return None

        def stopped_mid_trial() -> optuna.trial.FrozenTrial | None:
            # Freeze the victim, then read the storage: a trial still RUNNING now is one
            # the kill lands inside. One that finished meanwhile: let it go on, try again.
            running = victim_running()
            if running is None:
                return None
            victim.send_signal(signal.SIGSTOP)
            still = next((t for t in _trials(pg_url, name) if t.number == running.number), None)
            if still is not None and still.state == States.RUNNING:
                return still
            victim.send_signal(signal.SIGCONT)
            return None

        killed = _wait_for("the victim stopped inside a trial", stopped_mid_trial, 90, procs)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        out, err = survivor.communicate(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert survivor.returncode == 0, out + err
    assert "worker done:" in out

    trials = _trials(pg_url, name)
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 8, _by_state(trials)
    assert not [t for t in trials if t.state in (States.RUNNING, States.WAITING)]
    dead = next(t for t in trials if t.number == killed.number)
    assert dead.state == States.FAIL
    assert dead.user_attrs["fail_reason"].startswith("worker died: no heartbeat for ")
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in FINISHED, _by_state(trials)
    assert retries[0].params == dead.params
    assert retries[0].user_attrs["worker"].endswith(f":{survivor.pid}")


# --- 2. several local processes on SQLite ---------------------------------------------------


@pytest.mark.slow
def test_study_two_workers_on_sqlite_exact_budget_no_lock(sqlite_url: str, tmp_path: Path) -> None:
    result = run_lrtune(
        [
            *("study", "--task", "digits", "--samplers", "random", "--prior", "none"),
            *("--trials", "24", "--epochs", "2", "--workers", "2", "--storage", sqlite_url),
            *("--heartbeat-interval", "1", "--grace-period", "5"),
        ],
        REPO,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "database is locked" not in output
    assert "Traceback" not in output
    trials = _trials(sqlite_url, "digits.random.none")
    assert sum(t.state in FINISHED for t in trials) == 24, _by_state(trials)
    assert not [t for t in trials if t.state in (States.RUNNING, States.WAITING)]
    # both workers ran trials
    assert len({t.user_attrs["worker"] for t in trials if t.state in FINISHED}) == 2
    surplus = [t for t in trials if t.state == States.FAIL]
    assert all(t.user_attrs["fail_reason"].startswith("surplus") for t in surplus)


# --- 3. a password in the storage URL --------------------------------------------------------


def _pw_url(pg_url: str) -> str:
    db = pg_url.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        exists = conn.execute(
            sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = 'lrtune_pw'")
        ).scalar()
        if not exists:
            conn.execute(sqlalchemy.text("CREATE ROLE lrtune_pw LOGIN PASSWORD 's3cretpw'"))
        conn.execute(sqlalchemy.text(f'GRANT ALL ON DATABASE "{db}" TO lrtune_pw'))
        conn.execute(sqlalchemy.text("GRANT ALL ON SCHEMA public TO lrtune_pw"))
    engine.dispose()
    return f"postgresql+psycopg://lrtune_pw:s3cretpw@127.0.0.1:5432/{db}"


@pytest.mark.postgres
@pytest.mark.slow
def test_password_never_shown_or_stored(
    pg_url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "s3cretpw"
    url = _pw_url(pg_url)
    monkeypatch.setenv("LRTUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    small = ["--task", "digits", "--samplers", "random", "--prior", "rangetest,none"]
    small += ["--trials", "2", "--epochs", "1", "--device", "cpu"]
    out_file = tmp_path / "best.yaml"
    commands: list[list[str]] = [
        ["study", *small, "--storage", url, "--create-only", "--debug"],
        ["worker", "--group", "digits", "--storage", url, "--debug"],
        ["ls", "--storage", url, "--debug"],
        ["study", *small, "--storage", url],  # resumes: the table and the hints it prints
        ["export", "--study", "digits.random.rangetest", "--storage", url, "--debug"],
        ["export", "--study", "digits.random.none", "--out", str(out_file)],
        ["ls"],  # from $LRTUNE_STORAGE
        ["worker", "--study", "nope", "--storage", url],  # an error message
    ]
    monkeypatch.setenv("LRTUNE_STORAGE", url)
    codes = [main(cmd) for cmd in commands]
    assert codes == [0, 0, 0, 0, 0, 0, 0, 2]
    captured = capfd.readouterr()
    shown = captured.out + captured.err + caplog.text
    assert "digits.random.rangetest" in captured.out  # the commands did print
    assert "lrtune_pw:***@" in shown  # the URL was shown, masked
    assert secret not in shown
    assert secret not in out_file.read_text()

    storage = open_storage(url)
    try:
        studies = optuna.get_all_study_summaries(storage, include_best_trial=False)
        assert len(studies) == 3  # random x 2 priors, and digits.confirm (checked too)
        for summary in studies:
            system = storage.get_study_system_attrs(summary._study_id)
            assert secret not in repr(summary.user_attrs) + repr(system)
            assert summary.user_attrs["storage"] == mask_url(url)
            for t in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
                assert secret not in repr(t.user_attrs) + repr(t.system_attrs) + repr(t.params)
    finally:
        storage.engine.dispose()
    artifacts = list((tmp_path / "artifacts").rglob("*"))
    assert any(p.is_file() for p in artifacts)  # the range-test plot
    for p in artifacts:
        if p.is_file():
            assert secret.encode() not in p.read_bytes()


@pytest.mark.postgres
@pytest.mark.slow
def test_a_password_in_the_query_is_never_shown_or_stored(
    pg_url: str,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libpq reads the password (and passfile, sslpassword...) from the URL's query too:
    # the output, logs, exports, report.md and study attrs (served by the dashboard's
    # /api/studies) must hide it there as well.
    secret = "s3cretpw"
    db = _pw_url(pg_url).rsplit("/", 1)[1]
    url = (
        f"postgresql://127.0.0.1:5432/{db}?user=lrtune_pw&password={secret}"
        f"&passfile=/nonexistent/{secret}&sslmode=disable"
    )
    monkeypatch.setenv("LRTUNE_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    small = ["--task", "digits", "--samplers", "random", "--prior", "none", "--confirm", "0"]
    small += ["--trials", "2", "--epochs", "1", "--device", "cpu"]
    out_file = tmp_path / "best.yaml"
    commands: list[list[str]] = [
        ["study", *small, "--storage", url, "--create-only", "--debug"],
        ["worker", "--group", "digits", "--storage", url, "--debug"],
        ["study", *small, "--storage", url],  # the table and its watch:/export: lines
        ["ls", "--storage", url, "--debug"],
        ["export", "--study", "digits.random.none", "--storage", url, "--out", str(out_file)],
        ["report", "--group", "digits", "--storage", url, "--out", str(tmp_path / "report")],
        ["ls", "--storage", url.replace("127.0.0.1:5432", "127.0.0.1:1")],  # an error line
    ]
    codes = [main(cmd) for cmd in commands]
    assert codes == [0, 0, 0, 0, 0, 0, 2]
    captured = capfd.readouterr()
    shown = captured.out + captured.err + caplog.text
    assert "export: lrtune export --study digits.random.none" in captured.out
    assert "password=***" in shown  # the URL was shown, masked
    assert secret not in shown
    files = [out_file, *(tmp_path / "report").rglob("*"), *(tmp_path / "artifacts").rglob("*")]
    assert (tmp_path / "report" / "report.md") in files
    for path in files:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    storage = open_storage(url)
    try:
        for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
            system = storage.get_study_system_attrs(summary._study_id)
            assert secret not in repr(summary.user_attrs) + repr(system)
            assert "password=***" in summary.user_attrs["storage"]
    finally:
        storage.engine.dispose()


# --- 4. unreachable and lost PostgreSQL ------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["study", "--task", "digits", "--trials", "1", "--prior", "none", "--device", "cpu"],
        ["worker", "--group", "digits"],
        ["ls"],
    ],
    ids=["study", "worker", "ls"],
)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_unreachable_postgres_one_line_exit_2(
    argv: list[str], via: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if via == "flag":
        argv = [*argv, "--storage", UNREACHABLE]
    else:
        monkeypatch.setenv("LRTUNE_STORAGE", UNREACHABLE)
    assert main(argv) == 2
    captured = capfd.readouterr()
    line = _one_line_error(captured.err, argv[0])
    assert "retrying" not in captured.err  # refused at once, not retried as a lost storage
    assert "cannot open storage postgresql+psycopg://u:***@127.0.0.1:1/x" in line
    assert ":pw@" not in captured.out + captured.err


def _set_connections(pg_url: str, allow: bool) -> None:
    """Let the test database accept connections or not; cut the ones it has."""
    db = pg_url.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS {allow}'))
        if not allow:
            conn.execute(
                sqlalchemy.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"
                ),
                {"n": db},
            )
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_storage_lost_mid_run_retries_then_gives_up(pg_url: str) -> None:
    name = "digits.random.none"
    created = main(
        [
            *("study", "--task", "digits", "--samplers", "random", "--prior", "none"),
            *("--trials", "6", "--epochs", "40", "--pruner", "none", "--storage", pg_url),
            *("--lr-low", "0.001", "--lr-high", "0.1", "--create-only", "--device", "cpu"),
            *("--confirm", "0"),  # the test is about the budget; 40-epoch confirmations: slow
        ]
    )
    assert created == 0
    proc = spawn_lrtune(
        ["worker", "--group", "digits", "--heartbeat-interval", "1"],
        REPO,
        LRTUNE_STORAGE=pg_url,
        LRTUNE_STORAGE_RETRY_SECONDS="6",
    )
    try:

        def running() -> bool:
            return any(t.state == States.RUNNING for t in _trials(pg_url, name))

        # A short outage (2 s < 6 s of retries): the worker goes on.
        _wait_for("a running trial", running, 90, [proc])
        _set_connections(pg_url, False)
        time.sleep(2)
        _set_connections(pg_url, True)
        done_before = sum(t.state in FINISHED for t in _trials(pg_url, name))
        _wait_for(
            "a trial finished after the outage",
            lambda: sum(t.state in FINISHED for t in _trials(pg_url, name)) > done_before,
            60,
            [proc],
        )
        # A long one: the worker retries for 6 s, then exits with one line.
        _wait_for("a running trial", running, 60, [proc])
        _set_connections(pg_url, False)
        _out, err = proc.communicate(timeout=60)  # the bound: 6 s of retries, then exit
    finally:
        _set_connections(pg_url, True)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines[-1].startswith("lrtune worker: error: storage "), err
    assert "unreachable" in lines[-1] and "gave up" in lines[-1]
    # It retried for the whole retry time before giving up (the worker's own count).
    unreachable_for = re.search(r"unreachable for (\d+) s", lines[-1])
    assert unreachable_for and int(unreachable_for.group(1)) >= 6, lines[-1]
    assert "retrying for up to 6 s" in err, err
    # Every line before the last is a retry warning, at most two per outage.
    assert all(line.startswith("WARNING lrtune.storage_retry: storage ") for line in lines[:-1]), (
        err
    )
    assert len(lines) <= 5, err

    # Nothing is corrupted: the trial left RUNNING is failed by heartbeat and retried, and a
    # new worker finishes exactly the budget.
    report = workers.run_worker(
        pg_url, group="digits", device="cpu", heartbeat_interval=1, grace_period=2, poll=0.2
    )
    assert sum(report.trials.values()) >= 1
    trials = _trials(pg_url, name)
    assert sum(t.state in FINISHED for t in trials) == 6, _by_state(trials)
    assert not [t for t in trials if t.state in (States.RUNNING, States.WAITING)]
    stale = [
        t
        for t in trials
        if t.state == States.FAIL and t.user_attrs.get("fail_reason", "").startswith("worker died")
    ]
    assert stale, _by_state(trials)
    for t in stale:
        retried = [r for r in trials if r.system_attrs.get("failed_trial") == t.number]
        assert retried, f"trial {t.number} was not retried"


def test_storage_retry_seconds_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from lrtune import storage_retry

    monkeypatch.delenv(storage_retry.STORAGE_RETRY_ENV, raising=False)
    assert storage_retry.storage_retry_seconds() == storage_retry.STORAGE_RETRY_SECONDS == 120
    monkeypatch.setenv(storage_retry.STORAGE_RETRY_ENV, "7.5")
    assert storage_retry.storage_retry_seconds() == 7.5
    monkeypatch.setenv(storage_retry.STORAGE_RETRY_ENV, "soon")
    with pytest.raises(storage_retry.UserError, match="LRTUNE_STORAGE_RETRY_SECONDS"):
        storage_retry.storage_retry_seconds()


# --- 5. GPU path, on CPU ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "0,a"], "--gpus '0,a': expected a comma list of GPU indices"),
        (["--gpus", "0,0"], "expected distinct non-negative indices"),
        (["--gpus", "-1"], "expected distinct non-negative indices"),
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--device", "cuda:1"], "torch sees no CUDA device"),
    ],
)
def test_worker_bad_gpu_and_device_flags(
    argv: list[str], message: str, capfd: pytest.CaptureFixture[str], sqlite_url: str
) -> None:
    if torch.cuda.is_available() and "CUDA" in message:
        pytest.skip("this machine has a GPU")
    assert main(["worker", "--group", "g", "--storage", sqlite_url, *argv]) == 2
    line = _one_line_error(capfd.readouterr().err, "worker")
    assert message in line


class _FakePopen:
    started: ClassVar[list[tuple[list[str], dict[str, str]]]] = []

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.started.append((cmd, env))


def test_spawn_workers_one_process_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes.subprocess, "Popen", _FakePopen)
    _FakePopen.started = []
    url = "postgresql+psycopg://u:secret@db/lrtune"
    processes.spawn_workers(url, "digits", 2, gpus=[0, 3], extra_args=["--grace-period=9"])
    assert len(_FakePopen.started) == 2
    for index, (gpu, (cmd, env)) in enumerate(zip((0, 3), _FakePopen.started, strict=True)):
        assert cmd[1:] == [
            *("-m", "lrtune", "worker", "--group", "digits", "--device", "cuda"),
            "--grace-period=9",
        ]
        assert env["CUDA_VISIBLE_DEVICES"] == str(gpu)
        assert env["LRTUNE_WORKER_INDEX"] == str(index + 1)
        assert env["LRTUNE_STORAGE"] == url
        assert "secret" not in " ".join(cmd)  # the URL is not on the command line (ps)

    _FakePopen.started = []
    processes.spawn_workers(url, "digits", 3, device="cpu")
    assert [env["LRTUNE_WORKER_INDEX"] for _, env in _FakePopen.started] == ["1", "2", "3"]
    for cmd, env in _FakePopen.started:
        assert cmd[cmd.index("--device") + 1] == "cpu"
        assert "CUDA_VISIBLE_DEVICES" not in env or env["CUDA_VISIBLE_DEVICES"] == os.environ.get(
            "CUDA_VISIBLE_DEVICES"
        )


@pytest.mark.slow
def test_worker_gpus_on_a_machine_without_gpu_fails_cleanly(sqlite_url: str) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # The group must exist: the parent checks it before starting a process per GPU.
    created = main(
        [
            *("study", "--task", "digits", "--group", "g", "--prior", "none", "--trials", "1"),
            *("--storage", sqlite_url, "--create-only", "--device", "cpu"),
        ]
    )
    assert created == 0
    result = run_lrtune(["worker", "--group", "g", "--gpus", "0", "--storage", sqlite_url], REPO)
    # The child process (CUDA_VISIBLE_DEVICES=0, --device cuda) says why and the parent
    # passes its exit code on.
    assert result.returncode == 2, result.stderr
    # The child's one line, then the parent's naming which worker stopped and how.
    child, parent = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "torch sees no CUDA device" in child
    assert "worker 1" in parent and "exited with code 2" in parent
    assert "Traceback" not in result.stderr


OOM_TASK = """
import torch
from torch import nn

from lrtune import Task

calls = {"n": 0}


class Greedy(nn.Module):
    def __init__(self, always: bool) -> None:
        super().__init__()
        self.always = always
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        if self.always or calls["n"] == 0:
            calls["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.lin(x)


def _task(seed: int, always: bool) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(seed)
    return Task(Greedy(always), (x, y), (x, y), nn.CrossEntropyLoss(), batch_size=16,
                epochs=1, name="greedy")


def first_trial(seed: int) -> Task:
    return _task(seed, False)


def every_trial(seed: int) -> Task:
    return _task(seed, True)
"""


@pytest.mark.slow
def test_cuda_oom_fails_the_trial_and_the_worker_goes_on(
    tmp_path: Path, sqlite_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "oom_task.py"
    path.write_text(OOM_TASK)
    common = ["--samplers", "random", "--prior", "none", "--trials", "3", "--pruner", "none"]
    common += ["--device", "cpu", "--storage", sqlite_url]
    assert main(["study", "--task", f"{path}:first_trial", "--group", "once", *common]) == 0
    trials = _trials(sqlite_url, "once.random.none")
    assert [t.state for t in trials] == [States.FAIL] + [States.COMPLETE] * 3
    reason = trials[0].user_attrs["fail_reason"]
    assert reason.startswith("CUDA out of memory: CUDA out of memory. Tried to allocate")

    # Out of memory every time: the worker stops after MAX_CONSECUTIVE_FAILURES, one line.
    capfd.readouterr()
    assert main(["study", "--task", f"{path}:every_trial", "--group", "always", *common]) == 2
    line = _one_line_error(capfd.readouterr().err, "study")
    assert f"{MAX_CONSECUTIVE_FAILURES} trials failed in a row: CUDA out of memory" in line
    trials = _trials(sqlite_url, "always.random.none")
    assert [t.state for t in trials] == [States.FAIL] * MAX_CONSECUTIVE_FAILURES


def test_limit_cpu_threads_default_env_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    assert workers.limit_cpu_threads() == workers.DEFAULT_THREADS == 1
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert workers.limit_cpu_threads() == 2  # the user's own limit wins over the default
    assert workers.limit_cpu_threads(3) == 3  # and --threads over both
    torch.set_num_threads(2)
    assert workers.limit_cpu_threads(0) == 2  # 0: leave torch's own choice
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert workers.limit_cpu_threads() == 1


def test_threads_flag(sqlite_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    # The default (no flag, no $OMP_NUM_THREADS) is one thread; --threads N sets N and
    # travels to the workers `study --workers N` starts; a negative count is one line.
    with pytest.raises(SystemExit) as exit_:
        main(["study", "--threads", "-1", "--storage", sqlite_url])
    assert exit_.value.code == 2
    err = capfd.readouterr().err
    assert err.strip() == (
        "lrtune study: error: argument --threads: expected an integer 0..1024, got '-1' "
        "(see --help)"
    )
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    common = ["--prior", "none", "--samplers", "random", "--trials", "1", "--epochs", "1"]
    common += ["--device", "cpu", "--storage", sqlite_url, "--create-only"]
    env_before = os.environ.pop("OMP_NUM_THREADS", None)
    try:
        torch.set_num_threads(2)
        assert main(["study", "--group", "t1", *common]) == 0
        assert torch.get_num_threads() == 1
        assert main(["study", "--group", "t2", "--threads", "2", *common]) == 0
        assert torch.get_num_threads() == 2
    finally:
        if env_before is not None:
            os.environ["OMP_NUM_THREADS"] = env_before
    capfd.readouterr()
    from lrtune.cli import build_parser
    from lrtune.cli.common import heartbeat_flags

    args = build_parser().parse_args(["study", "--threads", "3", "--workers", "2"])
    assert "--threads=3" in heartbeat_flags(args)
    args = build_parser().parse_args(["worker", "--group", "g", "--threads", "3"])
    assert args.threads == 3


# --- 6. seeds ------------------------------------------------------------------------------


def test_each_worker_samples_with_its_own_seed(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sampler in ("random", "tpe"):
        assert main(["study", "--samplers", sampler, "--prior", "none", "--trials", "4",
                     "--storage", sqlite_url, "--create-only", "--device", "cpu"]) == 0  # fmt: skip
    storage = open_storage(sqlite_url)
    for name in ("digits.random.none", "digits.tpe.none"):
        firsts = []
        for index in range(4):
            study, _objective, _budget = load_for_work(storage, name, index, "cpu")
            trial = study.ask()
            firsts.append(trial.suggest_float("lr", 1e-6, 10, log=True))
            study.tell(trial, state=States.FAIL)
        assert len(set(firsts)) == 4, firsts  # no two workers propose the same point

    monkeypatch.setenv("LRTUNE_WORKER_INDEX", "3")
    assert workers.worker_index() == 3
    monkeypatch.delenv("LRTUNE_WORKER_INDEX")
    monkeypatch.setattr(workers.os, "getpid", lambda: 4242)
    a = workers.worker_index()
    monkeypatch.setattr(workers.os, "getpid", lambda: 4243)
    b = workers.worker_index()
    assert a != b and a >= 1 and b >= 1


def test_trial_failed_by_another_worker_while_running_is_skipped(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another worker may fail this process's trial as stale (e.g. this machine was starved
    # past the grace period). The task below does that to its own first trial, mid-run.
    task = tmp_path / "starved.py"
    task.write_text(
        "import optuna, os\n"
        "from lrtune.training.tasks import digits\n"
        "done = []\n"
        "def make(seed):\n"
        "    t = digits(seed)\n"
        "    inner = t.loss_fn\n"
        "    def loss_fn(p, y):\n"
        "        if not done:\n"
        "            done.append(1)\n"
        "            s = optuna.storages.RDBStorage(os.environ['LRTUNE_STORAGE'])\n"
        "            for st in s.get_all_studies():\n"
        "                for tr in s.get_all_trials(st._study_id):\n"
        "                    if tr.state == optuna.trial.TrialState.RUNNING:\n"
        "                        s.set_trial_state_values(tr._trial_id, "
        "optuna.trial.TrialState.FAIL)\n"
        "        return inner(p, y)\n"
        "    t.loss_fn = loss_fn\n"
        "    return t\n"
    )
    monkeypatch.setenv("LRTUNE_STORAGE", sqlite_url)
    code = main(
        [
            "study",
            "--task",
            f"{task}:make",
            "--samplers",
            "random",
            "--prior",
            "none",
            "--trials",
            "3",
            "--epochs",
            "1",
        ]
    )
    assert code == 0
    trials = _trials(sqlite_url, "digits.random.none")
    assert sum(t.state in FINISHED for t in trials) == 3
    assert trials[0].state == States.FAIL


def test_surplus_check_counts_only_started_unfailed_trials(sqlite_url: str) -> None:
    # is_surplus skips the read while fewer trials than the budget were started before
    # this one; past that it counts finished and running trials, not failed ones.
    from lrtune.search.objective import is_surplus
    from lrtune.storage import open_storage

    study = optuna.create_study(storage=open_storage(sqlite_url, create=True), study_name="s")
    first = study.ask()
    assert not is_surplus(study, first, 1)
    study.tell(first, state=States.FAIL)
    second = study.ask()  # number 1 == budget, but the trial before it failed
    assert not is_surplus(study, second, 1)
    third = study.ask()  # the running second trial fills the budget of 1
    assert is_surplus(study, third, 1)
    assert not is_surplus(study, third, 2)


KILLED_TASK = """import os, signal
import torch
from lrtune import Task


def fit(hp, report):
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's OOM killer does


def make(seed):
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    return Task(torch.nn.Linear(4, 2), (x, y), (x, y), torch.nn.functional.cross_entropy,
                epochs=1, fit=fit, name="killed")
"""


@pytest.mark.slow
@pytest.mark.parametrize("command", ["study", "worker"])
def test_a_worker_killed_by_a_signal_is_named(command: str, tmp_path: Path) -> None:
    # A worker killed by a signal says nothing itself: the parent must say which one died
    # and how, not "see its message above" over nothing (nor, when another worker ended
    # well, take its -9 for success).
    (tmp_path / "killed.py").write_text(KILLED_TASK)
    url = f"sqlite:///{tmp_path / 'k.db'}"
    study = ["study", "--task", str(tmp_path / "killed.py") + ":make", "--prior", "none"]
    study += ["--samplers", "random", "--trials", "2", "--confirm", "0", "--storage", url]
    if command == "worker":
        done = run_lrtune([*study, "--create-only"], REPO)
        assert done.returncode == 0, done.stderr
        argv = ["worker", "--group", "killed", "--storage", url]
    else:
        argv = study
    done = run_lrtune(
        [*argv, "--workers", "2", "--heartbeat-interval", "1", "--grace-period", "2"], REPO
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"lrtune {command}: error: "), done.stderr
    assert "worker 1 (pid " in lines[0] and "was killed by SIGKILL" in lines[0], lines[0]
    assert "see its message above" not in lines[0]


@pytest.mark.slow
def test_a_pinned_worker_trusts_no_study_more_than_its_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``worker --task`` is one check for every study the worker loads. Whoever can write
    the storage could make a pinned worker import their module through the confirm study's
    ``spec.task`` (loaded before the pin was checked), or through a search study's
    ``task_dir`` (a relative task file was looked up there first)."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    (here / "tiny_task.py").write_text(TINY_TASK)
    marker = tmp_path / "imported"
    evil = f"open({str(marker)!r}, 'w').close()\n"
    (elsewhere / "tiny_task.py").write_text(evil)
    (tmp_path / "evil.py").write_text(evil)
    monkeypatch.chdir(here)
    url = f"sqlite:///{here / 's.db'}"
    common = ["--prior", "none", "--samplers", "random", "--device", "cpu", "--storage", url]
    study = ["study", "--task", "tiny_task.py:ok", "--group", "g", "--trials", "2", *common]
    assert main([*study, "--confirm", "1", "--confirm-seeds", "1"]) == 0
    pinned = ["worker", "--group", "g", "--task", "tiny_task.py:ok", "--storage", url]
    pinned += ["--heartbeat-interval", "1", "--grace-period", "2"]
    storage = optuna.storages.RDBStorage(url)
    # A search study pointed at another folder holding a file of the same name.
    search = optuna.load_study(study_name="g.random.none", storage=storage)
    search.set_user_attr("task_dir", str(elsewhere))
    search.set_user_attr("budget", 3)
    capsys.readouterr()
    assert main(pinned) == 0, capsys.readouterr().err
    assert not marker.exists()
    assert sum(t.state in FINISHED for t in search.get_trials(deepcopy=False)) == 3
    # The confirm study pointed at another module, with a configuration left to confirm.
    confirm_study = optuna.load_study(study_name="g.confirm", storage=storage)
    confirm_study.set_user_attr(
        "spec", dict(confirm_study.user_attrs["spec"], task=f"{tmp_path / 'evil.py'}:make")
    )
    params = {"lr": 0.0123, "schedule": "constant"}
    source = {"study": "g.random.none", "trial": 0, "value": 0.5}
    confirm_study.enqueue_trial(params, user_attrs={"params": params, "source": source})
    storage.engine.dispose()
    capsys.readouterr()
    assert main(pinned) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study g.confirm runs task" in err, err
    assert "pinned --task 'tiny_task.py:ok'" in err and "nothing was imported" in err, err
    assert not marker.exists()
