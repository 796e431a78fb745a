"""Keeping a task's data on the device and batching it by index.

A per-sample ``DataLoader`` costs more than the forward/backward pass of the small models
LR searches run on, so data that fits in device memory is stacked once into tensors on the
device and mini-batches are taken with ``index_select`` on a shuffled index.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

#: Above this many bytes a torch ``Dataset`` is streamed through a ``DataLoader`` instead.
MAX_ON_DEVICE_BYTES = 2 * 1024**3


def as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return ``(X, y)`` for a tensor pair or a small ``Dataset``; ``None`` when too big."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if len(x) != len(y):
                raise ValueError(f"X has {len(x)} rows but y has {len(y)}")
            return x, y
    if isinstance(data, Dataset):
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError("the dataset is empty")
        x0, y0 = data[0]
        x0, y0 = torch.as_tensor(x0), torch.as_tensor(y0)
        per_item = x0.element_size() * x0.nelement() + y0.element_size() * y0.nelement()
        if per_item * n > MAX_ON_DEVICE_BYTES:
            return None
        xs, ys = zip(*(data[i] for i in range(n)), strict=True)
        return torch.stack([torch.as_tensor(v) for v in xs]), torch.stack(
            [torch.as_tensor(v) for v in ys]
        )
    raise TypeError(
        f"expected a torch Dataset or an (X, y) pair of tensors, got {type(data).__name__}"
    )


class Batches:
    """Mini-batches of one split, on ``device``, in an order drawn from ``generator``.

    Small data is moved to the device once; large datasets go through a ``DataLoader``.
    """

    def __init__(self, data: Any, batch_size: int, device: torch.device) -> None:
        self.batch_size = batch_size
        self.device = device
        tensors = as_tensors(data)
        self._dataset = None if tensors is not None else data
        if tensors is not None:
            self.x = tensors[0].to(device)
            self.y = tensors[1].to(device)
            self.n = len(self.x)
        else:
            self.n = len(data)

    def __len__(self) -> int:
        """Number of mini-batches in one pass (the last one may be short)."""
        return (self.n + self.batch_size - 1) // self.batch_size

    def epoch(
        self, generator: torch.Generator | None, shuffle: bool = True
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass over the data; shuffled with ``generator`` (a CPU generator)."""
        if self._dataset is not None:
            loader = DataLoader(
                self._dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator
            )
            for xb, yb in loader:
                yield xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            return
        if shuffle:
            order = torch.randperm(self.n, generator=generator).to(self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)

    def endless(
        self, generator: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled batches forever, a new order each pass (the range test's stream)."""
        while True:
            yield from self.epoch(generator)
