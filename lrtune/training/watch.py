"""When a trial's training has diverged: a non-finite loss, one batch's loss far above the
first, or the smoothed loss a few times above the first (the run got worse than the
untrained model and stays there).

A diverged trial is pruned with the reason (``prune_reason``), not scored: a value like
val_loss 67 next to the group's 0.09 would mean nothing to the samplers and flatten every
plot. Measured on ``digits`` (SGD, 10 epochs, 220 updates): runs that ended at val_loss 16
to 23 after their schedule decayed had a smoothed training loss 4.9 to 10 times their first
loss on the way; healthy and borderline runs (val_loss up to 3) never rose above 1.2 times
it. ``Task.divergence_factor`` sets the multiple for a task (``None``: off).
"""

from __future__ import annotations

import math

from lrtune.smoothing import Ema

#: A positive training loss this many times its first value, on one batch, counts as diverged.
EXPLODED = 100.0
#: The default ``Task.divergence_factor``: the smoothed training loss above this multiple of
#: the first loss counts as diverged.
DIVERGENCE_FACTOR = 4.0


class DivergenceWatch:
    """Fed each micro-batch's training loss in turn; says when the run has diverged.

    The multiples apply to a positive first loss only: a negative loss (a log-likelihood)
    has no scale to multiply, and only a non-finite value ends such a run.
    """

    def __init__(self, factor: float | None = DIVERGENCE_FACTOR) -> None:
        self.factor = factor
        self.first: float | None = None
        self._ema = Ema()

    def check(self, loss: float, step: int, lr: float) -> str | None:
        """The reason the run has diverged at this loss, or ``None``."""
        if not math.isfinite(loss):
            return f"non-finite training loss at step {step} (lr={lr:.3g})"
        smooth = self._ema.update(loss)
        if self.first is None:
            self.first = loss
            return None
        first = self.first
        if first <= 0:
            return None
        if loss > EXPLODED * first:
            # Finite but astronomically high (1e13 .. 1e27 seen at high LRs): as diverged as a
            # NaN, and no need to wait for the smoothing to see it.
            return (
                f"training loss exploded to {loss:.3g} at step {step} "
                f"({EXPLODED:g}x its first value; lr={lr:.3g})"
            )
        if self.factor is not None and smooth > self.factor * first:
            return (
                f"smoothed training loss {smooth:.3g} at step {step} is above "
                f"{self.factor:g}x its first value {first:.3g} (the task's "
                f"divergence_factor; lr={lr:.3g})"
            )
        return None
