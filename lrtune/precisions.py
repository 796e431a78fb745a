"""The training precisions (``Task.precision``, the spec key and ``--precision``) and the
devices each one trains on; pure Python, so the spec checks them without torch."""

from __future__ import annotations

#: Every precision lrtune trains in: fp32, bf16 autocast, fp16 autocast with a grad scaler.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")

#: The precisions each device type trains in (fp16 needs CUDA's grad scaler).
PRECISIONS_BY_DEVICE: dict[str, tuple[str, ...]] = {
    "cuda": ("fp32", "bf16", "fp16"),
    "mps": ("fp32", "bf16"),
    "cpu": ("fp32", "bf16"),
}
