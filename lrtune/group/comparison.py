"""The comparison of a group's studies as data: a :class:`Row` per study, an :class:`Arm`
per sampler × prior over its repeats, the :class:`Winner` and the :class:`Comparison`
holding them. :func:`lrtune.group.compare.compare_group` computes it,
:mod:`lrtune.group.present` lays it out as text. Keyword-only records; pure Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from lrtune.direction import sign as direction_sign
from lrtune.group.censored import Stat


@dataclass(frozen=True, kw_only=True)
class Confirmed:
    """A configuration re-trained on fresh seeds (trial user attr ``confirm``, SPEC "Seed
    noise"): the mean and standard deviation of its values over ``seeds`` seeds."""

    mean: float
    sd: float
    seeds: int


@dataclass(kw_only=True)
class Row:
    """One study's line of the table.

    ``to_target`` counts finished trials (complete or pruned, in order) up to and including
    the first complete one within the target (with rungs: the first on the top rung);
    ``None`` when none was. ``cost`` is the compute those trials trained, in full-trial
    equivalents (epochs trained ÷ the full epochs: a pruned or short-rung trial counts its
    share), plus the range test's cost for the prior arm. ``spent`` is the compute of all
    finished trials; ``rungs`` the study's rungs (empty: none).
    """

    study: str
    sampler: str
    prior: str
    repeat: int
    done: int
    budget: int
    best: float | None
    lr: float | None
    schedule: str | None
    best_trial: int | None
    to_target: int | None
    cost: float | None
    seconds: float
    confirmed: Confirmed | None = None
    spent: float = 0.0
    rungs: tuple[int, ...] = ()
    #: A baseline arm's study (``--baseline``, :mod:`lrtune.group.baseline`), not the search's.
    baseline: bool = False
    #: The best trial's params: the table shows its searched setup (batch size, lr_mult, task).
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def censored_at(self) -> int:
        """What a study that never reached the target counts as: its finished trials + 1
        (= budget + 1 once it has its budget), a lower bound of its trials-to-target."""
        return self.done + 1

    @property
    def censored_cost(self) -> float:
        """The cost a study that never reached the target counts as (before the range
        test): its compute + one full trial, the least a trial reaching it would add."""
        return self.spent + 1.0


@dataclass(kw_only=True)
class Arm:
    """One sampler × prior over its repeats (one study each)."""

    sampler: str
    prior: str
    studies: list[str]
    reached: int
    best: Stat | None
    to_target: Stat | None
    cost: Stat | None
    seconds: Stat | None
    confirmed: Confirmed | None = None


@dataclass(frozen=True, kw_only=True)
class Winner:
    """The sampler × prior that reached the target at the lowest median cost.

    ``study`` is the study for a single repeat; with repeats, the arm's first study (its
    name is ``{group}.{sampler}.{prior}``). ``to_target`` and ``cost`` are medians over the
    ``repeats``, none of them censored.
    """

    study: str
    sampler: str
    prior: str
    repeats: int
    reached: int
    to_target: float
    cost: float
    confirmed: Confirmed | None = None


@dataclass(kw_only=True)
class Comparison:
    """The group's table with what it is measured against."""

    group: str
    direction: str
    metric: str
    tolerance: float
    best: float | None
    target: float | None
    rangetest_seconds: float
    rangetest_trials: float
    rows: list[Row] = field(default_factory=list)
    arms: list[Arm] = field(default_factory=list)
    winner: Winner | None = None
    #: Lines on the group's confirmations (``{group}.confirm``, :mod:`lrtune.group.confirm`).
    confirm: list[str] = field(default_factory=list)

    @property
    def repeats(self) -> int:
        """The most studies any sampler × prior has."""
        return max((len(a.studies) for a in self.arms), default=1)

    @property
    def best_row(self) -> Row | None:
        """The study holding the group's best trial (the one to export)."""
        rows = [r for r in self.rows if r.best is not None]
        sign = direction_sign(self.direction)
        return min(rows, key=lambda r: sign * (r.best or 0.0), default=None)

    def table(self, *, markdown: bool = False) -> str:
        """The comparison as ``lrtune study`` prints it (or as Markdown), winner marked,
        then its notes (:func:`lrtune.group.present.format_table`)."""
        from lrtune.group.present import format_table

        return format_table(self, markdown=markdown)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored on the studies as ``comparison``; ``winner`` is the
        winner's study name, ``winner_arm`` its full record."""
        data = asdict(self)
        data["winner"] = self.winner.study if self.winner else None
        data["winner_arm"] = asdict(self.winner) if self.winner else None
        return data
