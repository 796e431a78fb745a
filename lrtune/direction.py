"""The optimization direction as a sign: ``sign * value`` is smaller for a better value
whichever way a study optimizes, so every "best" is a ``min`` over ``sign * value``.

Takes the spelling lrtune stores (``"minimize"``/``"maximize"``) and Optuna's
``StudyDirection`` alike; pure Python (no optuna import).
"""

from __future__ import annotations

from typing import Any


def sign(direction: Any) -> float:
    """``1.0`` for ``"minimize"`` (or ``StudyDirection.MINIMIZE``), ``-1.0`` for
    ``"maximize"``; anything else is a bug and raises ``ValueError``.

    >>> sign("minimize"), sign("maximize")
    (1.0, -1.0)
    >>> min([0.3, 0.9], key=lambda v: sign("maximize") * v)
    0.9
    """
    name = str(getattr(direction, "name", direction)).lower()
    if name == "minimize":
        return 1.0
    if name == "maximize":
        return -1.0
    raise ValueError(f"unknown direction {direction!r}")
