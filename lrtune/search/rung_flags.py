"""The rung flags (``--rungs``, ``--reduction-factor``, ``--horizon-beta``,
``--share-trunks``) checked, alone and against the rest of a spec: one line each
(:class:`lrtune.errors.UserError`). Pure Python.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from lrtune.errors import UserError
from lrtune.training.trunk import SHARED

#: ``--horizon-beta``'s bounds: LR* ∝ E^-β with |β| beyond 2 would move the LR by more than
#: two decades per decade of epochs, no horizon effect anyone reports.
BETA_LIMIT = 2.0


def check_beta(value: Any, where: str) -> float:
    """``--horizon-beta``: a finite number between -2 and 2 (0: no correction)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: expected a number (beta of LR* ~ epochs^-beta), got {value!r}")
    beta = float(value)
    if not math.isfinite(beta) or abs(beta) > BETA_LIMIT:
        raise UserError(
            f"{where}: must be between -{BETA_LIMIT:g} and {BETA_LIMIT:g} (e.g. 0.5; 0: off), "
            f"got {value!r}"
        )
    return beta


def parse_rungs(value: Any, where: str) -> tuple[int, ...]:
    """``--rungs 1,3,9`` or ``rungs = [1, 3, 9]``: positive integers, strictly ascending, at
    least two; else one line naming ``where``."""
    items: Sequence[Any] = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or len(items) < 2:
        raise UserError(
            f"{where}: expected two or more epochs per rung, ascending, e.g. 1,3,9, got {value!r}"
        )
    rungs = []
    for item in items:
        text = item.strip() if isinstance(item, str) else item
        number = int(text) if isinstance(text, str) and text.isdigit() else text
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise UserError(
                f"{where}: every rung is a whole number of epochs >= 1, got {item!r} (e.g. 1,3,9)"
            )
        rungs.append(number)
    for low, high in itertools.pairwise(rungs):
        if high <= low:
            raise UserError(
                f"{where}: rungs must be strictly ascending epochs, got {','.join(map(str, rungs))}"
            )
    return tuple(rungs)


def check_ladder(
    rungs: tuple[int, ...], *, epochs: int, pruner: str, samplers: Iterable[str], where: str
) -> None:
    """The rungs against the rest of the spec: the last rung is the full length
    (``epochs``), no learning-curve pruner, no grid. One line each."""
    if not rungs:
        return
    if rungs[-1] != epochs:
        raise UserError(
            f"{where}: the last rung ({rungs[-1]}) must be the full training length, "
            f"--epochs ({epochs}): end --rungs with {epochs} or pass --epochs {rungs[-1]}"
        )
    if pruner != "none":
        raise UserError(
            f"{where}: rungs replace --pruner {pruner} (a pruner judges truncated runs, a rung "
            "trains the whole schedule): drop one of the two"
        )
    if "grid" in samplers:
        raise UserError(
            f"{where}: the grid sampler has no rungs (a grid has no order to promote from): "
            "use --samplers random,tpe"
        )


def check_options(spec: Any, flags: Mapping[str, Any], source: str) -> None:
    """``--horizon-beta`` and ``--share-trunks`` against the rest of ``spec`` (a
    ``StudySpec``): both need rungs; they exclude each other (a corrected LR is not the
    trunk's); sharing needs a schedule with a stable phase among ``schedules``."""

    def where(key: str) -> str:
        return "--" + key.replace("_", "-") if key in flags else f"{source}: {key}"

    if spec.horizon_beta and not spec.rungs:
        raise UserError(
            f"{where('horizon_beta')}: corrects the LR of promotions between rungs: it needs "
            "--rungs (or drop it)"
        )
    if not spec.share_trunks:
        return
    if not spec.rungs:
        raise UserError(
            f"{where('share_trunks')}: a promotion between rungs starts from its source's "
            "trunk: it needs --rungs (or drop it)"
        )
    if spec.horizon_beta:
        raise UserError(
            f"{where('share_trunks')}: with --horizon-beta a promotion trains another LR than "
            "its source's trunk did: drop one of the two"
        )
    if not set(SHARED) & set(spec.schedules):
        raise UserError(
            f"{where('share_trunks')}: only {' and '.join(SHARED)} have a stable phase to "
            f"share, and the schedules ({','.join(spec.schedules)}) have neither: add one or "
            "drop it"
        )
