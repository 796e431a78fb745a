"""Choosing the torch device from ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import re

import torch

from lrtune.errors import UserError

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU.

    Raises :class:`UserError` for a malformed name or a CUDA device that is not there.
    """
    if isinstance(name, torch.device):
        return name
    if not _DEVICE.match(name):
        raise UserError(f"unknown device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
