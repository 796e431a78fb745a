"""Choosing the torch device from ``--device auto|cpu|cuda[:N]|mps``.

``auto`` is the first CUDA device, else Apple's ``mps`` (Metal) when torch has it, else the
CPU. Precision rules per device (checked by the trainer, :func:`check_precision`): ``fp32``
everywhere; ``bf16`` autocast on CUDA, the CPU and mps (mps needs macOS 14 or later for
bf16; torch raises otherwise, which a trial records as its failure); ``fp16`` needs CUDA,
whose grad scaler it uses.
"""

from __future__ import annotations

import re

import torch

from lrtune.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def mps_available() -> bool:
    """Whether torch can use Apple's Metal GPU (``mps``) on this machine."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else ``mps`` when torch has
    it, else the CPU.

    Raises :class:`UserError` for a malformed name, or a CUDA or mps device that is not
    there.
    """
    if isinstance(name, torch.device):
        return name
    if not _DEVICE.match(name):
        raise UserError(f"unknown device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if name == "mps" and not mps_available():
        raise UserError(
            "device 'mps' asked for, but torch sees no Apple GPU here (mps needs macOS 12.3+ "
            "on Apple silicon and a torch built with it); use --device cpu or auto"
        )
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} asked for, but torch sees no CUDA device here")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA "
                "device(s) are visible"
            )
    return torch.device(name)
