"""A task's batches: tensor data kept on the device and batched by index, or any loader.

A per-sample ``DataLoader`` costs more than the forward/backward pass of the small models
LR searches run on, so data that fits in device memory as ``(X, y)`` tensors is stacked
once on the device and mini-batches are taken with ``index_select`` on a shuffled index.
Anything else (a ``DataLoader``, any re-iterable of batches, a ``Dataset`` whose items
are not ``(x, y)`` tensor pairs) is iterated as it is, each batch moved to the device by
:func:`to_device` (tensors nested in tuples, lists, dicts and dataclasses).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lrtune.errors import UserError

#: Above this many bytes a torch ``Dataset`` is streamed through a ``DataLoader`` instead.
MAX_ON_DEVICE_BYTES = 2 * 1024**3


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it moved to ``device``: tensors nested in tuples
    (named tuples too), lists, dicts and dataclass instances; anything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        moved = [(k, to_device(v, device)) for k, v in batch.items()]
        return type(batch)(moved) if isinstance(batch, dict) else dict(moved)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a named tuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: to_device(getattr(batch, f.name), device)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    return batch


def is_pair(batch: Any) -> bool:
    """True for an ``(x, y)`` batch: a tuple or list of two tensors."""
    return (
        isinstance(batch, (tuple, list))
        and len(batch) == 2
        and isinstance(batch[0], torch.Tensor)
        and isinstance(batch[1], torch.Tensor)
    )


def as_tensors(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Return ``(X, y)`` for a tensor pair or a small ``Dataset`` of ``(x, y)`` items;
    ``None`` for anything else (streamed batch by batch)."""
    if is_pair(data):
        x, y = data
        if len(x) != len(y):
            raise ValueError(f"X has {len(x)} rows but y has {len(y)}")
        return x, y
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
        if n == 0:
            raise UserError("the dataset is empty")
        first = data[0]
        if not (isinstance(first, (tuple, list)) and len(first) == 2):
            return None  # dict or other items: a DataLoader collates them
        try:
            x0, y0 = torch.as_tensor(first[0]), torch.as_tensor(first[1])
        except (TypeError, ValueError, RuntimeError):
            return None
        per_item = x0.element_size() * x0.nelement() + y0.element_size() * y0.nelement()
        if per_item * n > MAX_ON_DEVICE_BYTES:
            return None
        xs, ys = zip(*(data[i] for i in range(n)), strict=True)
        return torch.stack([torch.as_tensor(v) for v in xs]), torch.stack(
            [torch.as_tensor(v) for v in ys]
        )
    return None


def has_tensor(batch: Any) -> bool:
    """True when ``batch`` holds a tensor somewhere (in the forms :func:`to_device` walks)."""
    if isinstance(batch, torch.Tensor):
        return True
    if isinstance(batch, Mapping):
        return any(has_tensor(v) for v in batch.values())
    if isinstance(batch, (tuple, list)):
        return any(has_tensor(v) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return any(has_tensor(getattr(batch, f.name)) for f in dataclasses.fields(batch))
    return False


def check_batches(data: Any, what: str) -> None:
    """Raise :class:`UserError` unless ``data`` is a tensor pair, a ``Dataset``, a
    ``DataLoader`` or a re-iterable of batches (a one-shot iterator or generator is not; a
    list's first batch must hold a tensor)."""
    if isinstance(data, DataLoader):
        try:
            empty = len(data) == 0  # cheap for a map-style dataset; none for an iterable one
        except TypeError:
            empty = False
        if empty:
            raise UserError(f"{what} has 0 batches: give it at least one batch")
        return
    if is_pair(data) or isinstance(data, Dataset):
        rows = _rows(data)
        if rows == 0:
            raise UserError(f"{what} has 0 rows: give it at least one sample")
        return
    expected = (
        "expected a torch Dataset, an (X, y) pair of tensors, a DataLoader or a "
        "re-iterable of batches"
    )
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable):
        raise UserError(f"{what} is {type(data).__name__}, {expected}")
    if iter(data) is data:
        raise UserError(
            f"{what} is a one-shot iterator ({type(data).__name__}): every epoch iterates it "
            "again; pass a list of batches or a DataLoader"
        )
    if isinstance(data, (list, tuple)):
        if not data:
            raise UserError(f"{what} has 0 batches: give it at least one batch")
        if not has_tensor(data[0]):
            raise UserError(
                f"{what} is {type(data).__name__} of {type(data[0]).__name__}, {expected} "
                "(tensors nested in tuples, lists, dicts or dataclasses)"
            )


def _rows(data: Any) -> int | None:
    """Rows of a tensor pair or a sized ``Dataset``; None when it has no length."""
    if is_pair(data):
        return len(data[0])
    try:
        return len(data)
    except TypeError:  # an iterable-style Dataset
        return None


class Batches:
    """Mini-batches of one split, on ``device``.

    ``(X, y)`` tensor data (and small ``Dataset``s of ``(x, y)`` items) is moved to the
    device once and batched by index in an order drawn from the epoch's generator; large
    ``Dataset``s go through a ``DataLoader``; a ``DataLoader`` or another re-iterable of
    batches is iterated as given (its own shuffling, seeded by torch's global RNG).
    """

    def __init__(self, data: Any, batch_size: int, device: torch.device, what: str = "data"):
        self.batch_size = batch_size
        self.device = device
        self.what = what
        tensors = as_tensors(data)
        self.indexed = tensors is not None
        self._loader: Any = None
        self._count: int | None = None
        if tensors is not None:
            self.x = tensors[0].to(device)
            self.y = tensors[1].to(device)
            self.n = len(self.x)
        elif isinstance(data, Dataset) and not isinstance(data, DataLoader):
            self._dataset = data
            self.n = len(data)  # type: ignore[arg-type]
        else:
            self._loader = data
            self.n = -1
        if self.n == 0:
            raise UserError(f"{what} has 0 rows: give it at least one sample")

    def __len__(self) -> int:
        """Number of mini-batches in one pass (the last one may be short); a re-iterable
        without ``len`` is counted once by iterating it."""
        if self._loader is None:
            return (self.n + self.batch_size - 1) // self.batch_size
        if self._count is None:
            try:
                self._count = len(self._loader)
            except TypeError:
                self._count = sum(1 for _ in self._loader)
            if self._count == 0:
                raise UserError(f"{self.what} has 0 batches: give it at least one batch")
        return self._count

    def epoch(self, generator: torch.Generator | None, shuffle: bool = True) -> Iterator[Any]:
        """One pass over the data; tensor data is shuffled with ``generator`` (CPU)."""
        if self._loader is not None:
            empty = True
            for batch in self._loader:
                empty = False
                yield to_device(batch, self.device)
            if empty:
                raise UserError(f"{self.what} has 0 batches: give it at least one batch")
            return
        if not self.indexed:
            loader = DataLoader(
                self._dataset, batch_size=self.batch_size, shuffle=shuffle, generator=generator
            )
            for batch in loader:
                yield to_device(batch, self.device)
            return
        if shuffle:
            order = torch.randperm(self.n, generator=generator).to(self.device)
        else:
            order = torch.arange(self.n, device=self.device)
        for start in range(0, self.n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)

    def __iter__(self) -> Iterator[Any]:
        """One pass in order (what ``Task.evaluate`` gets as ``val``)."""
        return self.epoch(None, shuffle=False)

    def endless(self, generator: torch.Generator | None) -> Iterator[Any]:
        """Shuffled batches forever, a new order each pass (the range test's stream).

        A pass that yields no batch raises :class:`UserError`: repeating it would loop for
        ever without yielding (and a deferred Ctrl-C is only seen between batches).
        """
        while True:
            empty = True
            for batch in self.epoch(generator):
                empty = False
                yield batch
            if empty:
                raise UserError(f"{self.what} has 0 batches: give it at least one batch")
