"""What a range test found: :class:`RangeTestResult`, its JSON and its suggestion table.

Torch-free, so reading a stored result (``lrtune report``, the dashboard) costs no torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

#: Above this many decades between the seeds' upper bounds the result carries a warning.
SPREAD_WARN = 0.5


@dataclass(frozen=True, kw_only=True)
class RangeTestResult:
    """What :func:`~lrtune.rangetest.range_test` found. Suggestions are medians over seeds.

    Frozen and keyword-only: a result is a record of one test; derive a changed copy with
    :func:`dataclasses.replace`.

    Attributes:
        lr_low, lr_high: the search bounds.
        steep: LR of steepest descent of the loss against log LR.
        valley: fastai's "valley" suggestion.
        min10: LR at the minimum smoothed loss, divided by 10.
        diverged_at: LR at which the loss blew up: where the sweep stopped, or where the
            smoothed loss rose well above its minimum (``None`` if it never diverged; see
            :func:`~lrtune.rangetest.diagnose`).
        diagnosis: ``ok``, ``no descent: ...``, ``non-finite loss at lr=...``,
            ``diverged at once: lower start_lr`` or ``never diverged: raise end_lr``.
        spread_decades: how far apart the seeds' ``lr_high`` are, in decades (above
            :data:`SPREAD_WARN`, :attr:`warnings` says so).
        seconds: wall time of the whole test.
        lrs, losses, smoothed: the curves, one list per seed; each point is one optimizer
            update (of ``accumulate`` micro-batches): :attr:`updates` counts them.
        batch_size, micro_batch_size: the effective batch of one update, and of one
            forward pass. The bounds belong to this batch size (with ``[params]
            batch_size`` a study moves them by its ``--batch-scaling`` rule).
        groups: the parameter groups' ``lr_mult`` by name: the LRs are the base LR,
            each group swept at it × its multiplier (empty: one group).
        ranks: the processes the sweep ran on (``--nproc-per-trial``): each micro-batch
            split across them, so ``batch_size`` is the global batch (per-rank rows ×
            ranks × accumulate).
    """

    lr_low: float
    lr_high: float
    steep: float
    valley: float
    min10: float
    diverged_at: float | None
    diagnosis: str
    spread_decades: float
    seconds: float
    lrs: list[list[float]]
    losses: list[list[float]]
    smoothed: list[list[float]]
    seeds: list[int] = field(default_factory=list)
    optimizer: str = "sgd"
    mode: str = "exp"
    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 100
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    metric_name: str | None = None
    metric_steps: list[list[int]] = field(default_factory=list)
    metrics: list[list[float]] = field(default_factory=list)
    batch_size: int | None = None
    micro_batch_size: int | None = None
    groups: dict[str, float] = field(default_factory=dict)
    ranks: int = 1

    @property
    def updates(self) -> int:
        """The optimizer updates the sweeps took, all seeds together: the test's cost in the
        unit a trial's ``total_steps`` counts (accumulation does not multiply it)."""
        return sum(len(lrs) for lrs in self.lrs)

    @property
    def warnings(self) -> list[str]:
        """What a reader of the bounds should know: seeds that disagree."""
        out = []
        if self.spread_decades > SPREAD_WARN:
            out.append(
                f"the {len(self.seeds)} seeds' upper bounds are {self.spread_decades:.2f} "
                f"decades apart (above {SPREAD_WARN:g}): the bounds are uncertain; run more "
                "seeds or steps"
            )
        return out

    def plot(self, path: str | os.PathLike[str] | None = None) -> Any:
        """The curves, bounds and suggestions as a matplotlib ``Figure`` (a notebook shows
        it as the cell's value); with ``path``, also written there as a PNG."""
        from lrtune.canvas import displayable, save_figure
        from lrtune.rangetest.plot import draw_range_test

        fig = draw_range_test(self)
        if path is not None:
            save_figure(fig, os.fspath(path))
        return displayable(fig)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite losses become ``None``), with ``updates`` and
        ``warnings``."""
        return _jsonable({**asdict(self), "updates": self.updates, "warnings": self.warnings})

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text (the ``--json`` file)."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """The suggestion table ``lrtune rangetest`` prints."""
        div = f"{self.diverged_at:.3g}" if self.diverged_at is not None else "never"
        decades = math.log10(self.lr_high / self.lr_low)
        rows = [
            ("steep", f"{self.steep:.3g}", "steepest descent of loss vs log LR"),
            ("valley", f"{self.valley:.3g}", "fastai's valley"),
            ("min/10", f"{self.min10:.3g}", "LR at the minimum smoothed loss / 10"),
            ("diverged at", div, "where the loss rose well above its minimum"),
            (
                "bounds",
                f"[{self.lr_low:.3g}, {self.lr_high:.3g}]",
                f"search bounds, {decades:.2g} decades",
            ),
            ("spread", f"{self.spread_decades:.2f}", f"decades between {len(self.seeds)} seeds"),
            ("diagnosis", self.diagnosis, ""),
            ("seconds", f"{self.seconds:.1f}", ""),
        ]
        head = (
            f"LR range test: {self.optimizer}, {self.mode} sweep {self.start_lr:.3g} -> "
            f"{self.end_lr:.3g} over {self.steps} steps, {len(self.seeds)} seed(s)"
        )
        if self.batch_size is not None:
            head += f", {self._batch()}"
        lines = [head]
        if self.groups:
            ratios = ", ".join(f"{name} x{mult:g}" for name, mult in self.groups.items())
            lines.append(
                f"  the LRs are the base LR; each group swept at it x its lr_mult: {ratios}"
            )
        lines.append(f"  {'':<12} {'lr':<22} note")
        lines += [f"  {k:<12} {v:<22} {n}".rstrip() for k, v, n in rows]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _batch(self) -> str:
        """The batch of one update, and how it is made up."""
        micro = self.micro_batch_size
        if self.ranks > 1 and micro:
            split = (
                f"{micro // self.ranks} per rank x {self.ranks} ranks"
                if micro % self.ranks == 0
                else f"{micro} split across {self.ranks} ranks"
            )
            steps = (self.batch_size or micro) // micro
            return f"global batch {self.batch_size} = {split} x {steps} accumulated"
        if micro and micro != self.batch_size:
            return f"batch {self.batch_size} ({(self.batch_size or micro) // micro} x {micro})"
        return f"batch {self.batch_size}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        """Rebuild a result stored with :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
