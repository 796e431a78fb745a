"""``--device``: names, ``auto`` (CUDA, else mps, else CPU), mps where it exists, and the
precision rules per device."""

from __future__ import annotations

import pytest
import torch

from lrtune.cli import main
from lrtune.device import mps_available, resolve_device
from lrtune.errors import UserError
from lrtune.training.trainer import TrainConfig, check_precision, train

needs_mps = pytest.mark.skipif(
    not mps_available(), reason="no Apple GPU (mps) here: torch.backends.mps is unavailable"
)
no_mps = pytest.mark.skipif(mps_available(), reason="this machine has mps")


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # The selection order, on a machine that may have neither: torch's own availability
    # probes are what resolve_device asks, so they are what this test sets.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("name", ["tpu", "mps:0", "gpu", "cuda:x"])
def test_malformed_names_are_refused(name: str) -> None:
    with pytest.raises(UserError, match="expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


@pytest.mark.parametrize(
    ("device", "allowed", "refused"),
    [("cpu", ("fp32", "bf16"), ("fp16",)), ("mps", ("fp32", "bf16"), ("fp16",))],
)
def test_precision_rules(device: str, allowed: tuple[str, ...], refused: tuple[str, ...]) -> None:
    for precision in allowed:
        check_precision(precision, torch.device(device))
    for precision in refused:
        with pytest.raises(UserError, match=f"needs CUDA.*use bf16 on {device}"):
            check_precision(precision, torch.device(device))


@no_mps
def test_mps_without_mps_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="torch sees no Apple GPU"):
        resolve_device("mps")
    code = main(["rangetest", "--device", "mps", "--seeds", "1", "--steps", "20"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "mps" in err and "Traceback" not in err


@needs_mps
def test_training_on_mps_learns_and_matches_the_schedule() -> None:
    result = train("digits", TrainConfig(lr=0.05, schedule="cosine", epochs=2, device="mps"))
    assert not result.diverged
    assert result.value < 2.0  # below chance's log(10) = 2.3 after two epochs


@needs_mps
def test_auto_is_mps_here() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is here too: auto picks CUDA")
    assert resolve_device("auto").type == "mps"
