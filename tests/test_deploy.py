"""deploy/slurm and deploy/k8s (SPEC "Clusters"): the scripts and manifests parse, reference
each other consistently, and every command line in them runs against the local PostgreSQL
the way the cluster would run it (array task ids and the Indexed Job's completion index as
environment variables), on a tiny task. No SLURM or Kubernetes here: the batch scripts run
under bash and the manifests' containers as local processes, with the cluster's variable
expansion ($(VAR) for Kubernetes)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from lrtune.cli import build_parser
from tests.conftest import tiny_spec

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "deploy" / "slurm"
K8S = REPO / "deploy" / "k8s"
TIMEOUT = 240  # seconds for one cluster command on the tiny task (bounded, never a hang)

TINY_SPEC = tiny_spec(trials=3, epochs=2)


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    """A bin folder whose ``lrtune`` runs this checkout's lrtune (what the image's console
    script is on the cluster)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "lrtune"
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m lrtune "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bin_dir


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    """A bin folder whose ``lrtune`` only records its arguments (one per line) in
    ``argv.txt`` beside it: the command line a script or a pod would run."""
    bin_dir = tmp_path / "rec"
    bin_dir.mkdir()
    exe = bin_dir / "lrtune"
    exe.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {shlex.quote(str(bin_dir / "argv.txt"))}\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def recorded(
    recorder: Path, cmd: list[str], env: dict[str, str], cwd: Path
) -> tuple[argparse.Namespace | None, str]:
    """Run ``cmd`` with :func:`recorder`'s ``lrtune``: the arguments it was given, parsed by
    lrtune's own parser (``None``: it was not run), and the command's stderr."""
    argv = recorder / "argv.txt"
    argv.unlink(missing_ok=True)
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    if not argv.exists():
        return None, proc.stderr
    return build_parser().parse_args(argv.read_text().splitlines()), proc.stderr


def cluster_env(shim: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LRTUNE_", "SLURM_"))}
    env.update(
        PATH=f"{shim}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


def run_all(cmds: list[tuple[list[str], dict[str, str]]], cwd: Path) -> list[str]:
    """Run the commands at once (like the array's tasks or the Job's pods); each must exit
    0 within :data:`TIMEOUT`. Returns their outputs."""
    procs = [
        subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for cmd, env in cmds
    ]
    outputs = []
    for (cmd, _), proc in zip(cmds, procs, strict=True):
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail(f"{cmd} did not finish within {TIMEOUT} s")
        assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{out}"
        outputs.append(out)
    return outputs


def finished_trials(url: str, group: str) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(url)
    names = [n for n in optuna.get_all_study_names(storage) if n.startswith(group + ".")]
    return {
        n: optuna.load_study(study_name=n, storage=storage).get_trials(
            states=(optuna.trial.TrialState.COMPLETE,)
        )
        for n in names
    }


# ---- SLURM ------------------------------------------------------------------------------


def sbatch_options(path: Path) -> dict[str, str]:
    """The ``#SBATCH --opt=value`` header of a batch script."""
    opts = {}
    for line in path.read_text().splitlines():
        m = re.match(r"#SBATCH\s+--([\w-]+)(?:[= ](\S+))?", line)
        if m:
            opts[m[1]] = m[2] or ""
    return opts


@pytest.mark.parametrize("script", ["create.sbatch", "worker.sbatch", "submit.sh"])
def test_slurm_scripts_are_valid_bash(script: str) -> None:
    path = SLURM / script
    assert path.read_text().startswith("#!/bin/bash\n")
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "--storage" not in path.read_text().replace("LRTUNE_STORAGE", "")  # env only


def test_slurm_headers() -> None:
    worker = sbatch_options(SLURM / "worker.sbatch")
    assert re.fullmatch(r"\d+-\d+", worker["array"])
    assert worker["gres"] == "gpu:1"  # one worker per array task and GPU
    assert "requeue" in worker
    assert worker["signal"].startswith("B:TERM@")  # to the batch shell = the exec'd worker
    create = sbatch_options(SLURM / "create.sbatch")
    assert "array" not in create


def signal_lead(path: Path) -> int:
    """Seconds before the limit that ``#SBATCH --signal=B:TERM@N`` sends SIGTERM."""
    return int(sbatch_options(path)["signal"].rpartition("@")[2])


def test_slurm_worker_stops_before_the_job_limit(recorder: Path, tmp_path: Path) -> None:
    """The worker's --max-time is the time the job has left (SLURM_JOB_END_TIME, else
    squeue's %L) less a margin, and its --grace fits inside the --signal lead, so a trial
    is checkpointed and handed back before SLURM kills the job."""
    script = ["bash", str(SLURM / "worker.sbatch")]
    base = cluster_env(
        recorder,
        LRTUNE_STORAGE="postgresql://u@db/lrtune",
        SLURM_JOB_ID="7",
        SLURM_CPUS_PER_TASK="4",
    )
    squeue = recorder / "squeue"

    def answer(text: str) -> None:  # what squeue -h -j 7 -o %L prints
        squeue.write_text(f'#!/bin/sh\n[ "$*" = "-h -j 7 -o %L" ] && echo {shlex.quote(text)}\n')
        squeue.chmod(0o755)

    now = int(time.time())
    args, _ = recorded(recorder, script, dict(base, SLURM_JOB_END_TIME=str(now + 3600)), tmp_path)
    assert args is not None and args.command == "worker" and args.threads == 4
    assert 3600 - 30 - 60 <= args.max_time <= 3600 - 30  # minus the margin (and this test's time)
    assert args.grace < signal_lead(SLURM / "worker.sbatch")
    assert args.grace < args.max_time
    for left, seconds in [("1-02:03:04", 93784), ("3:59:30", 14370), ("09:08", 548)]:
        answer(left)
        args, _ = recorded(recorder, script, base, tmp_path)
        assert args is not None and args.max_time == seconds - 30, left
    answer("UNLIMITED")
    args, _ = recorded(recorder, script, base, tmp_path)
    assert args is not None and args.max_time is None
    # Too little time left for a trial: no worker, one line, exit 0 (the task is done).
    args, err = recorded(recorder, script, dict(base, SLURM_JOB_END_TIME=str(now + 60)), tmp_path)
    assert args is None and "time limit" in err and len(err.splitlines()) == 1


def test_slurm_create_job_checkpoints_trials(recorder: Path, tmp_path: Path) -> None:
    env = cluster_env(recorder, LRTUNE_STORAGE="postgresql://u@db/lrtune", SLURM_JOB_ID="7")
    args, _ = recorded(recorder, ["bash", str(SLURM / "create.sbatch")], env, tmp_path)
    assert args is not None and args.create_only and args.checkpoint_every == 1
    args, _ = recorded(
        recorder,
        ["bash", str(SLURM / "create.sbatch")],
        dict(env, LRTUNE_CHECKPOINT_EVERY="3"),
        tmp_path,
    )
    assert args is not None and args.checkpoint_every == 3


@pytest.mark.postgres
@pytest.mark.slow
def test_slurm_array_runs_a_group(pg_url: str, shim: Path, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    base = cluster_env(shim, LRTUNE_STORAGE=pg_url, LRTUNE_SPEC="tiny.toml", LRTUNE_GROUP="tiny")
    run_all([(["bash", str(SLURM / "create.sbatch")], dict(base, SLURM_JOB_ID="41"))], tmp_path)
    assert finished_trials(pg_url, "tiny") == {"tiny.random.none": []}
    tasks = [
        (
            ["bash", str(SLURM / "worker.sbatch")],
            dict(
                base,
                SLURM_ARRAY_JOB_ID="42",
                SLURM_ARRAY_TASK_ID=str(k),
                SLURM_JOB_ID=str(43 + k),
                SLURM_JOB_END_TIME=str(int(time.time()) + 4 * 3600),  # --time=04:00:00
            ),
        )
        for k in range(2)
    ]
    outputs = run_all(tasks, tmp_path)
    assert all("worker done:" in out for out in outputs), outputs
    done = finished_trials(pg_url, "tiny")["tiny.random.none"]
    assert len(done) == 3  # the budget, shared by the array's tasks
    spec = optuna.load_study(study_name="tiny.random.none", storage=pg_url).user_attrs["spec"]
    assert spec["checkpoint_every"] == 1  # create.sbatch's: a preempted trial resumes


def test_slurm_script_without_storage_says_so(shim: Path, tmp_path: Path) -> None:
    for script in ("create.sbatch", "worker.sbatch", "submit.sh"):
        proc = subprocess.run(
            ["bash", str(SLURM / script)],
            env=cluster_env(shim),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode != 0
        assert "LRTUNE_STORAGE" in proc.stderr and "Traceback" not in proc.stderr


def test_submit_chains_the_array_after_the_create_job(shim: Path, tmp_path: Path) -> None:
    log = tmp_path / "sbatch.log"
    fake = shim / "sbatch"  # records its arguments, answers like sbatch --parsable
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\n'
        "n=$(wc -l < " + shlex.quote(str(log)) + ')\necho "$((100 + n));cluster"\n'
    )
    fake.chmod(0o755)
    env = cluster_env(shim, LRTUNE_STORAGE="postgresql://u@db/lrtune", LRTUNE_WORKERS="3")
    out = subprocess.run(
        ["bash", str(SLURM / "submit.sh"), "--partition=gpu"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    create, array = log.read_text().splitlines()
    assert create.endswith("create.sbatch") and "--partition=gpu" in create
    assert "--dependency=afterok:101 " in array and "--array=0-2 " in array
    assert array.endswith("worker.sbatch") and "--partition=gpu" in array
    assert "101" in out and "102" in out
    bad = subprocess.run(
        ["bash", str(SLURM / "submit.sh")],
        env=dict(env, LRTUNE_WORKERS="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "LRTUNE_WORKERS" in bad.stderr
    assert len(log.read_text().splitlines()) == 2  # nothing submitted


# ---- Kubernetes ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every object of deploy/k8s by (kind, name)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                key = (doc["kind"], doc["metadata"]["name"])
                assert key not in objects, f"{key} defined twice"
                objects[key] = doc
    return objects


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def lrtune_container(obj: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod_spec(obj)["containers"] if c["image"].startswith("lrtune")]
    return container


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``command``/``args``: ``$(VAR)`` from the container's
    environment, ``$$`` a literal ``$``, anything else unchanged."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]),
        text,
    )


def container_env(
    objects: dict[tuple[str, str], dict[str, Any]],
    container: dict[str, Any],
    secrets: dict[str, str],
    overrides: dict[str, str],
) -> dict[str, str]:
    """The environment Kubernetes gives ``container``: its ConfigMaps, then its ``env``
    (a Secret's value taken from ``secrets``, by key), then the test's ``overrides``."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            assert ref["key"] in objects[("Secret", ref["name"])]["stringData"]
            env[item["name"]] = secrets[ref["key"]]
    env.update(overrides)
    return env


def command_line(container: dict[str, Any], env: dict[str, str]) -> list[str]:
    return [expand(w, env) for w in [*container["command"], *container.get("args", [])]]


def test_k8s_objects(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    kinds = {kind for kind, _ in manifests}
    assert {"Secret", "StatefulSet", "Service", "Job", "Deployment", "ConfigMap"} <= kinds
    pg = manifests[("StatefulSet", "lrtune-postgres")]
    assert pg["spec"]["volumeClaimTemplates"]
    secret_url = manifests[("Secret", "lrtune-db")]["stringData"]["storage-url"]
    assert "@lrtune-postgres:5432/" in secret_url  # the Service's name
    for (kind, name), obj in manifests.items():
        if kind == "Service":
            assert obj["spec"].get("type", "ClusterIP") == "ClusterIP", name  # internal only
            labels = [
                o["spec"]["template"]["metadata"]["labels"]
                for o in manifests.values()
                if o["kind"] in ("StatefulSet", "Deployment")
            ]
            assert obj["spec"]["selector"] in labels, f"Service {name} selects no pods"
        if kind in ("Job", "Deployment"):
            container = lrtune_container(obj)
            names = [e["name"] for e in container["env"]]
            assert "LRTUNE_STORAGE" in names  # from the Secret, never on the command line
            assert "--storage" not in container.get("args", [])
            for volume in pod_spec(obj).get("volumes", []):
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in manifests


def test_k8s_jobs(manifests: dict[tuple[str, str], dict[str, Any]]) -> None:
    create = lrtune_container(manifests[("Job", "lrtune-create")])
    env = container_env(manifests, create, {"storage-url": "x", "password": "x"}, {})
    args = build_parser().parse_args(command_line(create, env)[1:])
    assert args.command == "study" and args.create_only
    assert (REPO / args.spec).is_file()  # in the image at /opt/lrtune/studies
    workers = manifests[("Job", "lrtune-workers")]
    assert workers["spec"]["completionMode"] == "Indexed"
    assert workers["spec"]["completions"] == workers["spec"]["parallelism"]
    assert lrtune_container(workers)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert args.checkpoint_every == 1  # the ConfigMap's: an evicted pod's trial resumes


def test_k8s_worker_hands_back_before_sigkill(
    manifests: dict[tuple[str, str], dict[str, Any]], recorder: Path, tmp_path: Path
) -> None:
    """The worker pod's --grace is shorter than the pod's terminationGracePeriodSeconds:
    on eviction it checkpoints and hands its trial back before Kubernetes' SIGKILL."""
    job = manifests[("Job", "lrtune-workers")]
    container = lrtune_container(job)
    env = container_env(manifests, container, {"storage-url": "x", "password": "x"}, {})
    env = {**cluster_env(recorder), **env, "JOB_COMPLETION_INDEX": "3"}
    args, _ = recorded(recorder, command_line(container, env), env, tmp_path)
    assert args is not None and args.command == "worker" and args.group == "digits"
    assert args.grace is not None
    assert args.grace + 10 <= pod_spec(job)["terminationGracePeriodSeconds"]


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


@pytest.mark.postgres
@pytest.mark.slow
def test_k8s_commands_run_a_group(
    manifests: dict[tuple[str, str], dict[str, Any]],
    pg_url: str,
    shim: Path,
    tmp_path: Path,
    free_port: int,
) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_SPEC)
    secrets = {"storage-url": pg_url, "password": ""}
    overrides = {
        "LRTUNE_SPEC": "tiny.toml",
        "LRTUNE_GROUP": "tiny",
        "LRTUNE_ARTIFACTS": str(tmp_path / "artifacts"),
    }
    base = cluster_env(shim)

    def pod(kind: str, name: str, **extra: str) -> tuple[list[str], dict[str, str]]:
        container = lrtune_container(manifests[(kind, name)])
        env = container_env(manifests, container, secrets, {**overrides, **extra})
        return command_line(container, env), {**base, **env}

    run_all([pod("Job", "lrtune-create")], tmp_path)
    assert finished_trials(pg_url, "tiny") == {"tiny.random.none": []}
    jobs = manifests[("Job", "lrtune-workers")]["spec"]
    pods = [pod("Job", "lrtune-workers", JOB_COMPLETION_INDEX=str(k)) for k in range(2)]
    assert jobs["parallelism"] >= len(pods)
    outputs = run_all(pods, tmp_path)
    assert all("worker done:" in out for out in outputs), outputs
    assert len(finished_trials(pg_url, "tiny")["tiny.random.none"]) == 3

    cmd, env = pod("Deployment", "lrtune-dashboard")
    port = cmd[cmd.index("--port") + 1]
    cmd[cmd.index("--port") + 1] = str(free_port)  # the pod's port may be taken here
    dash = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert dash.stdout is not None
        assert "open http://" in dash.stdout.readline()
        # Another pod reaches it by its Service's name.
        request = urllib.request.Request(
            f"http://127.0.0.1:{free_port}/api/studies",
            headers={"Host": f"lrtune-dashboard:{port}"},
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert response.status == 200
                    assert b"tiny.random.none" in response.read()
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
    finally:
        dash.terminate()
        dash.wait(timeout=30)
