"""CUDA: training, mixed precision (fp16's grad scaler), the range test, a checkpoint's
resume (the CUDA RNG state) and the main job with a worker per GPU, on the GPU.

Marked ``gpu`` and skipped where torch sees no CUDA device (CI has none): they run by hand
on a GPU machine, with the rest of the device checks, in ``benchmarks/gpu_check.sh``."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import optuna
import pytest
import torch
from conftest import own_loop_source, run_lrtune
from optuna.artifacts import FileSystemArtifactStore

from lrtune.device import resolve_device
from lrtune.rangetest import range_test
from lrtune.training.checkpoint import RESUMED_ATTR, Checkpoints
from lrtune.training.trainer import TrainConfig, check_precision, run_trial, train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device"),
]


def test_auto_is_cuda_here() -> None:
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_learns_in_every_precision(precision: str) -> None:
    check_precision(precision, torch.device("cuda"))  # fp16 is refused on cpu and mps only
    config = TrainConfig(
        lr=0.05, schedule="cosine", epochs=2, device="cuda", precision=precision, seed=1
    )
    result = train("digits", config)
    assert not result.diverged, result.reason
    assert result.value < 2.0  # below chance's log(10) = 2.3 after two epochs


def test_the_range_test_on_cuda_finds_the_cpu_bounds() -> None:
    """Same task, same seed: the GPU's floating point differs from the CPU's in the last
    bits, not in the bounds' decade."""
    gpu = range_test("digits", device="cuda", seeds=1, steps=100)
    cpu = range_test("digits", device="cpu", seeds=1, steps=100)
    assert gpu.diagnosis == "ok", gpu.diagnosis
    assert abs(math.log10(gpu.lr_high / cpu.lr_high)) < 0.5
    assert abs(math.log10(gpu.lr_low / cpu.lr_low)) < 0.5


class _Stop(Exception):
    pass


def test_a_checkpoint_on_cuda_keeps_the_cuda_rng_and_resumes_to_the_same_value(
    tmp_path: Path,
) -> None:
    """Stopped after epoch 2 and resumed, a CUDA run ends where the uninterrupted one does
    (dropout-free digits MLP: the CUDA RNG state travels all the same)."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'x.db'}")
    store = FileSystemArtifactStore(str(tmp_path))
    config = TrainConfig(lr=0.05, schedule="cosine", epochs=3, seed=2, device="cuda")
    whole = train("digits", config).value

    def stop_after_2(value: float, epoch: int) -> None:
        if epoch == 1:
            raise _Stop

    trial = study.ask()
    with pytest.raises(_Stop):
        run_trial("digits", config, stop_after_2, checkpoints=Checkpoints(store, trial, every=1))
    saved = Checkpoints(store, trial).load()
    assert saved is not None and saved["epoch"] == 1
    assert "cuda" in saved["rng"]
    result = run_trial(
        "digits", config, lambda v, s: None, checkpoints=Checkpoints(store, trial, every=1)
    )
    assert trial.user_attrs[RESUMED_ATTR] == 1
    assert result.value == pytest.approx(whole, rel=1e-5)


ON_CUDA_FIT = own_loop_source(
    "fit-cuda",
    """
def fit(hp, report):
    if hp.device.type != "cuda":
        raise RuntimeError(f"trained on {hp.device}, not on the GPU")
    return own_loop.fit(hp, report)
""",
)


def _lrtune(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_lrtune(args, cwd, timeout=600)  # a process start and CUDA's initialisation


def test_the_main_job_on_a_worker_per_gpu_trains_on_cuda(tmp_path: Path) -> None:
    """study --create-only, then worker --gpus 0 (a process with CUDA_VISIBLE_DEVICES=0 and
    --device cuda), then export: the trials ran on the GPU (the task fails any trial that
    does not), with the range-test prior."""
    (tmp_path / "fit_cuda.py").write_text(ON_CUDA_FIT)
    url = "sqlite:///lrtune.db"
    study = ["study", "--task", "fit_cuda.py:make", "--group", "g", "--storage", url]
    study += ["--prior", "rangetest", "--samplers", "tpe", "--trials", "3", "--epochs", "2"]
    study += ["--confirm", "0", "--device", "cuda", "--create-only"]
    created = _lrtune(study, tmp_path)
    assert created.returncode == 0, created.stderr
    worker = _lrtune(["worker", "--group", "g", "--gpus", "0", "--storage", url], tmp_path)
    assert worker.returncode == 0, worker.stderr
    trials = optuna.load_study(
        study_name="g.tpe.rangetest", storage=f"sqlite:///{tmp_path / 'lrtune.db'}"
    ).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3, [
        t.user_attrs.get("fail_reason") for t in trials
    ]
    exported = _lrtune(["export", "--study", "g.tpe.rangetest", "--storage", url], tmp_path)
    assert exported.returncode == 0, exported.stderr


def test_weights_trained_on_cuda_export_to_the_cpu(tmp_path: Path) -> None:
    """lrtune's own loop on CUDA keeps the winner's weights; export --weights writes CPU
    tensors that load on any machine."""
    url = "sqlite:///lrtune.db"
    study = ["study", "--task", "digits", "--group", "d", "--storage", url, "--prior", "none"]
    study += ["--samplers", "random", "--trials", "1", "--epochs", "1", "--confirm", "0"]
    ran = _lrtune([*study, "--device", "cuda"], tmp_path)
    assert ran.returncode == 0, ran.stderr
    export = ["export", "--study", "d.random.none", "--storage", url, "--out", "c.yaml"]
    exported = _lrtune([*export, "--weights", "best.pt"], tmp_path)
    assert exported.returncode == 0, exported.stderr
    weights = torch.load(tmp_path / "best.pt")
    assert weights and all(t.device.type == "cpu" for t in weights.values())


BAD_LABELS = """
import torch
from torch import nn

from lrtune import Task


def make(seed):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] > 0).long() + 5  # labels 5 and 6 for a model of 2 classes
    torch.manual_seed(seed)
    return Task(nn.Linear(4, 2), (x, y), (x, y), nn.CrossEntropyLoss(), batch_size=16,
                epochs=1, name="tiny")
"""


def test_a_device_side_assert_ends_in_lrtunes_line_saying_what_to_do(tmp_path: Path) -> None:
    """On CUDA a label out of range is a kernel's assertion: the kernel prints its own lines,
    and lrtune's last line says to run on the CPU for the error it stands for; the range
    test writes nothing, and a study stops after the trial that hit it (the process's CUDA
    context is lost with it), without a hang."""
    (tmp_path / "bad.py").write_text(BAD_LABELS)
    args = ["rangetest", "--task", "bad.py:make", "--device", "cuda", "--steps", "20"]
    ran = _lrtune([*args, "--seeds", "1", "--json", "rt.json"], tmp_path)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert last.startswith("lrtune rangetest: error: range test on bad.py:make: "), last
    assert "device-side assert triggered" in last and "--device cpu" in last, last
    assert not (tmp_path / "rt.json").exists()

    study = ["study", "--task", "bad.py:make", "--prior", "none", "--samplers", "random"]
    study += ["--trials", "5", "--confirm", "0", "--device", "cuda", "--storage", "sqlite:///x.db"]
    ran = _lrtune(study, tmp_path)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    last = ran.stderr.strip().splitlines()[-1]
    assert "trial 0 failed with a CUDA device-side assert" in last, last
    assert "--device cpu" in last, last


def test_more_ranks_per_trial_than_gpus_is_one_line(tmp_path: Path) -> None:
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs or more")
    args = ["study", "--nproc-per-trial", "2", "--device", "cuda", "--prior", "none"]
    result = _lrtune([*args, "--trials", "1", "--storage", "sqlite:///x.db"], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--nproc-per-trial 2 needs 2 GPUs" in lines[0], result.stderr
