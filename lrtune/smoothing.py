"""The one smoothing of a loss curve: a bias-corrected exponential moving average.

The range test's stop rule and suggestions and a trial's divergence check read the same
smoothed loss. Torch- and numpy-free.
"""

from __future__ import annotations

#: The smoothing of the loss: a bias-corrected EMA with this β (fastai's).
BETA = 0.98


class Ema:
    """The one smoothing of the loss: a bias-corrected exponential moving average.

    Fed one loss at a time (the sweep's stop rule needs each smoothed value as it comes);
    the first smoothed value equals the first loss (no bias towards 0).
    """

    def __init__(self, beta: float = BETA) -> None:
        self.beta = beta
        self._avg = 0.0
        self._n = 0

    def update(self, value: float) -> float:
        """Add ``value``; return the smoothed loss so far."""
        self._n += 1
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        return self._avg / (1 - self.beta**self._n)
