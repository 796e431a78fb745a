"""``worker --nproc-per-trial N`` (SPEC "Clusters"): each trial under torch.distributed
(gloo on the CPU). Two ranks train the same configuration and give the value one process
gives with the same batch; a killed rank, or one whose code raises, ends the trial,
recorded FAIL, within a bound; the range test under two ranks draws the one-process
curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from conftest import own_loop_source

from lrtune.training import ranks

REPO = Path(__file__).resolve().parents[1]
States = optuna.trial.TrialState

SPEC = """\
task = "digits"
samplers = ["random"]
prior = "none"
schedules = ["constant", "cosine"]
lr_low = 0.001
lr_high = 0.1
trials = {trials}
epochs = {epochs}
pruner = "none"
confirm = 0
"""


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("LRTUNE_")}
    base.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    return base


def lrtune(*args: str, cwd: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lrtune", *args],
        cwd=cwd,
        env=env(**extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def create(tmp_path: Path, url: str, group: str, *, trials: int, epochs: int) -> None:
    (tmp_path / "spec.toml").write_text(SPEC.format(trials=trials, epochs=epochs))
    proc = lrtune(
        *("study", "--spec", "spec.toml", "--group", group, "--create-only"),
        *("--storage", url, "--device", "cpu"),
        cwd=tmp_path,
    )
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err


def trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=url).get_trials()


def test_shard_splits_rows_and_keeps_structure() -> None:
    import torch

    batch = {"x": torch.arange(10).reshape(5, 2), "y": (torch.arange(5), torch.tensor(3.0))}
    parts = [ranks.Ranks(r, 2, torch.device("cpu")).shard(batch) for r in range(2)]
    assert [(n_local, n) for _, n_local, n in parts] == [(3, 5), (2, 5)]
    assert torch.equal(torch.cat([p["y"][0] for p, _, _ in parts]), batch["y"][0])
    assert all(float(p["y"][1]) == 3.0 for p, _, _ in parts)  # a scalar is not split
    assert [len(ranks._chunk(1, r, 2)) for r in range(2)] == [1, 0]  # fewer rows than ranks


@pytest.mark.slow
def test_two_ranks_give_the_one_process_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ranks.db'}"
    create(tmp_path, url, "one", trials=2, epochs=2)
    create(tmp_path, url, "two", trials=2, epochs=2)
    # The same worker index: both samplers draw the same two configurations.
    procs = [
        lrtune(
            *("worker", "--group", group, "--storage", url, "--device", "cpu", *flags),
            cwd=tmp_path,
            LRTUNE_WORKER_INDEX="1",
        )
        for group, flags in (("one", ()), ("two", ("--nproc-per-trial", "2")))
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    one, two = trials(url, "one.random.none"), trials(url, "two.random.none")
    assert [t.state for t in two] == [States.COMPLETE] * 2
    for a, b in zip(one, two, strict=True):
        assert a.params == b.params
        assert b.value == pytest.approx(a.value, rel=1e-5)
        assert b.intermediate_values == pytest.approx(a.intermediate_values, rel=1e-5)
        assert b.user_attrs["config"] == a.user_attrs["config"]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.mark.slow
def test_a_killed_rank_fails_the_trial_within_a_bound(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ranks.db'}"
    create(tmp_path, url, "long", trials=1, epochs=2000)
    worker = lrtune(
        *("worker", "--group", "long", "--storage", url, "--device", "cpu"),
        *("--nproc-per-trial", "2"),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 300
        while not any(t.state == States.RUNNING for t in trials(url, "long.random.none")):
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.5)
        time.sleep(2)  # into the training loop
        (follower,) = _children(worker.pid)
        os.kill(follower, 9)
        killed = time.monotonic()
        _out, err = worker.communicate(timeout=120)
        bound = time.monotonic() - killed
    finally:
        worker.kill()
    assert worker.returncode == 2, err
    (trial,) = trials(url, "long.random.none")
    assert trial.state == States.FAIL
    assert trial.user_attrs["fail_reason"]
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--nproc-per-trial" in lines[0], err
    assert "Traceback" not in err
    assert bound < ranks.TIMEOUT  # a dead rank is seen at the next collective, not timed out


RANGE_TEST = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from lrtune import range_test
    from lrtune.training import ranks
    world = int(sys.argv[1])
    if world > 1:
        rank = int(sys.argv[2])
        ranks.init(rank, world, torch.device("cpu"), "127.0.0.1", int(sys.argv[3]))
    result = range_test("digits", steps=40, seeds=1, device="cpu")
    if world == 1 or rank == 0:
        print(json.dumps({"losses": result.losses, "lrs": result.lrs}))
    ranks.close()
    """
)


@pytest.mark.slow
def test_range_test_under_two_ranks(tmp_path: Path) -> None:
    script = tmp_path / "rt.py"
    script.write_text(RANGE_TEST)
    port = str(ranks.free_port())
    runs = [[sys.executable, str(script), "1"]]
    runs += [[sys.executable, str(script), "2", str(r), port] for r in range(2)]
    procs = [
        subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in runs
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outs.append(out)
    one, two = json.loads(outs[0]), json.loads(outs[1])
    assert two["lrs"] == one["lrs"]
    assert two["losses"][0] == pytest.approx(one["losses"][0], rel=1e-4)


STUDY_SPEC = """\
task = "digits"
samplers = ["random"]
prior = "rangetest"
schedules = ["constant", "cosine"]
trials = 2
epochs = 2
pruner = "none"
confirm = 0
accumulate = 2
rangetest_seeds = 1
rangetest_steps = 40
"""


@pytest.mark.slow
def test_study_under_two_ranks_gives_the_one_process_study(tmp_path: Path) -> None:
    """``study --nproc-per-trial 2``: its range test and its trials run on two ranks, say
    and store the global batch (per rank x ranks x accumulate), and find what one process
    finds with the same batch."""
    (tmp_path / "spec.toml").write_text(STUDY_SPEC)
    url = f"sqlite:///{tmp_path / 'ranks.db'}"
    outs = {}
    for group, flags in (("one", ()), ("two", ("--nproc-per-trial", "2"))):
        proc = lrtune(
            *("study", "--spec", "spec.toml", "--group", group, "--storage", url),
            *("--device", "cpu", *flags),
            cwd=tmp_path,
        )
        outs[group], err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert "global batch 128 = 32 per rank x 2 ranks x 2 accumulated" in outs["two"]
    assert "global batch" not in outs["one"] and "batch 128 (2 x 64)" in outs["one"]
    one = optuna.load_study(study_name="one.random.rangetest", storage=url)
    two = optuna.load_study(study_name="two.random.rangetest", storage=url)
    rt_one, rt_two = one.user_attrs["rangetest"], two.user_attrs["rangetest"]
    assert (rt_two["ranks"], rt_two["batch_size"], rt_two["micro_batch_size"]) == (2, 128, 64)
    assert rt_one["ranks"] == 1
    assert rt_two["lr_low"] == pytest.approx(rt_one["lr_low"], rel=1e-3)
    assert rt_two["lr_high"] == pytest.approx(rt_one["lr_high"], rel=1e-3)
    assert [t.state for t in two.trials] == [States.COMPLETE] * 2
    for a, b in zip(one.trials, two.trials, strict=True):
        assert a.params == b.params
        assert b.value == pytest.approx(a.value, rel=1e-4)
        assert b.user_attrs["config"]["batch_size"] == 128
        assert b.user_attrs["ranks"] == 2 and "ranks" not in a.user_attrs


@pytest.mark.slow
def test_rangetest_command_under_two_ranks(tmp_path: Path) -> None:
    """``rangetest --nproc-per-trial 2``: the one-process curve, the global batch stated
    and written to the JSON."""
    results = {}
    for n in ("1", "2"):
        proc = lrtune(
            *("rangetest", "--task", "digits", "--device", "cpu", "--seeds", "1"),
            *("--steps", "40", "--nproc-per-trial", n, "--json", f"rt{n}.json"),
            cwd=tmp_path,
        )
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert ("global batch 64 = 32 per rank x 2 ranks x 1 accumulated" in out) == (n == "2")
        results[n] = json.loads((tmp_path / f"rt{n}.json").read_text())
    one, two = results["1"], results["2"]
    assert (one["ranks"], two["ranks"]) == (1, 2)
    assert two["batch_size"] == one["batch_size"] == 64
    assert two["lrs"] == one["lrs"]
    assert two["losses"][0] == pytest.approx(one["losses"][0], rel=1e-4)
    assert two["lr_high"] == pytest.approx(one["lr_high"], rel=1e-3)


#: The shipped own-loop example with rank 1 raising before it trains: rank 0 trains its
#: first epoch and meets the dead rank at the report's reduction.
RAISING_FIT = own_loop_source(
    "fit-raise",
    """
def fit(hp, report):
    if hp.rank == 1:
        raise RuntimeError("rank 1 broke")
    return own_loop.fit(hp, report)
""",
)


@pytest.mark.slow
def test_a_rank_that_raises_fails_the_trial_in_one_line(tmp_path: Path) -> None:
    """User code that raises on one rank only: the other rank sees it at the next
    collective (no hang), the trial is recorded FAIL, the rank's own error is shown, and
    the command ends with one line, exit 2."""
    (tmp_path / "fit_raise.py").write_text(RAISING_FIT)
    url = f"sqlite:///{tmp_path / 'raise.db'}"
    proc = lrtune(
        *("study", "--task", "fit_raise.py:make", "--nproc-per-trial", "2", "--prior", "none"),
        *("--trials", "2", "--epochs", "3", "--pruner", "none", "--samplers", "random"),
        *("--confirm", "0", "--storage", url, "--device", "cpu"),
        cwd=tmp_path,
    )
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    assert "rank 1 broke" in err  # the failing rank says what broke
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--nproc-per-trial" in lines[0], err
    (trial,) = trials(url, "fit-raise.random.none")
    assert trial.state == States.FAIL and trial.user_attrs["fail_reason"]
