"""The studies of a group: create them (with the range-test prior), run their trials until
each has its budget, and read them back.

A group is one ``StudySpec`` run as one Optuna study per sampler × prior (× repeat), named
``{group}.{sampler}.{prior}`` (``.r{K}`` for repeat K ≥ 2). Everything a worker needs to
run a study's trials is stored on the study itself (user attrs), so a worker on another
machine needs only the storage URL and the group name.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from lrtune import __version__
from lrtune.dashboard.graphs import set_metric_name
from lrtune.device import resolve_device
from lrtune.errors import UserError
from lrtune.faults import task_errors
from lrtune.group.baseline import BASELINE_SAMPLER, baseline_spec
from lrtune.group.creation import plot_png, spec_difference, write_study
from lrtune.rangetest import (
    DIAG_FLAT,
    DIAG_NEVER_DIVERGED,
    DIAG_OK,
    RangeTestResult,
    range_test,
)
from lrtune.search.dims import build_checked, setup_lines
from lrtune.search.ladder import budget_text
from lrtune.search.rung_flags import check_ladder
from lrtune.search.space import decades, grid_size
from lrtune.search.spec import StudySpec, check_group_name
from lrtune.search.states import is_created, study_name
from lrtune.storage import check_study_name, mask_url, new_sqlite_file, open_storage
from lrtune.training.tasks import Task
from lrtune.training.tblog import log_root, write_range_test
from lrtune.training.updater import check_precision

log = logging.getLogger(__name__)

#: Seconds between heartbeats of a running trial, and before a silent trial is failed.
HEARTBEAT_INTERVAL = 5
GRACE_PERIOD = 20
#: Seeds of two workers on the same study differ by this prime.
WORKER_SEED_STRIDE = 7919
#: A worker gives up after this many failed trials in a row (a broken task, not bad luck).
MAX_CONSECUTIVE_FAILURES = 3


@dataclass(frozen=True, kw_only=True)
class StudyRef:
    """One study of a group."""

    name: str
    sampler: str
    prior: str
    repeat: int
    seed: int
    #: A baseline arm's name (``schedulefree``: :mod:`lrtune.group.baseline`); ``None``: the search.
    baseline: str | None = None


def study_refs(spec: StudySpec, group: str) -> list[StudyRef]:
    """The studies of ``group``: prior × sampler × repeat, with their sampler seeds, then
    each baseline × prior × repeat (``{group}.{baseline}.{prior}``, TPE).

    The same sampler gets the same seed with and without the prior (a paired comparison);
    repeats get different seeds.
    """
    refs = []
    for repeat in range(1, spec.repeats + 1):
        seed = spec.seed + 100 * (repeat - 1)
        for prior in spec.prior:
            for sampler in spec.samplers:
                refs.append(
                    StudyRef(
                        name=study_name(group, sampler, prior, repeat),
                        sampler=sampler,
                        prior=prior,
                        repeat=repeat,
                        seed=seed,
                    )
                )
        for prior in spec.prior:
            for name in spec.baseline:
                refs.append(
                    StudyRef(
                        name=study_name(group, name, prior, repeat),
                        sampler=BASELINE_SAMPLER,
                        prior=prior,
                        repeat=repeat,
                        seed=seed,
                        baseline=name,
                    )
                )
    return refs


def default_group(spec: StudySpec, task: Task) -> str:
    """``spec.group``, else the name of ``task`` (the task built from ``spec``)."""
    if spec.group:
        return spec.group
    name = task.name.replace(" ", "-").replace(".", "-")
    check_group_name(name, f"task name {task.name!r} as the default --group (give --group NAME)")
    return name


@dataclass(kw_only=True)
class Group:
    """A prepared group: its studies and the bounds each prior searches."""

    name: str
    spec: StudySpec
    refs: list[StudyRef]
    bounds: dict[str, tuple[float, float]]
    rangetest: RangeTestResult | None
    created: list[str]
    #: The baseline arms' bounds per prior and range test (their own optimizer's).
    baseline_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    baseline_rangetest: RangeTestResult | None = None

    def budget(self, ref: StudyRef) -> int:
        """Finished trials ``ref`` must have; a grid study stops at its grid's size."""
        if ref.sampler == "grid":
            return min(self.spec.trials, grid_size(self.spec))
        return self.spec.trials

    def spec_of(self, ref: StudyRef) -> StudySpec:
        """The spec ``ref``'s trials run: the group's, or its baseline's."""
        return baseline_spec(self.spec, ref.baseline) if ref.baseline else self.spec

    def bounds_of(self, ref: StudyRef) -> tuple[float, float]:
        """The LR bounds ``ref`` searches."""
        return (self.baseline_bounds if ref.baseline else self.bounds)[ref.prior]

    def rangetest_of(self, ref: StudyRef) -> RangeTestResult | None:
        """The range test behind ``ref``'s bounds (``None`` without the prior)."""
        if ref.prior != "rangetest":
            return None
        return self.baseline_rangetest if ref.baseline else self.rangetest


def prepare_group(
    spec: StudySpec,
    storage_url: str,
    *,
    device: str = "auto",
    on_rangetest: Callable[[RangeTestResult], None] | None = None,
    trains_here: bool = True,
) -> Group:
    """Create (or find, to resume) the studies of ``spec``; run the range test if needed.

    Checks everything before writing: the task builds, the storage opens, studies that
    already exist were made with the same spec (only ``trials`` may change). The range test
    runs at most once per group (once more for a baseline arm, with its own optimizer);
    its result is reused when the command is run again. A new SQLite file is created only
    once the range test passed. A study a crash left half-written is written again
    (:mod:`lrtune.group.creation`). ``trains_here``: trials run on ``device`` in this process
    (not ``--create-only``), so the precision must suit it.
    """
    with task_errors(f"task {spec.task}"):  # building it once also checks the task
        task = build_checked(spec)  # and the searched setup (lrtune.search.dims)
    if trains_here and task.fit is None:  # fp16 on the CPU: say so before any study exists
        check_precision(spec.precision or task.precision, resolve_device(device))
    group = default_group(spec, task)
    if spec.rungs:  # the spec checked the rest; the last rung is the task's own epochs here
        check_ladder(
            spec.rungs,
            epochs=spec.epochs or task.epochs,
            pruner=spec.pruner,
            samplers=spec.samplers,
            where="--rungs",
        )
    refs = study_refs(spec, group)
    for ref in refs:  # before anything is written, whatever the storage
        check_study_name(ref.name)
    prepared = Group(name=group, spec=spec, refs=refs, bounds={}, rangetest=None, created=[])
    # A new SQLite file is created only after the range test: a test that fails (a NaN
    # loss, a task error, Ctrl-C) must leave no empty database behind. An existing storage
    # is opened first, as its studies may hold the range test to reuse.
    new_file = new_sqlite_file(storage_url) is not None
    storage = None if new_file else open_storage(storage_url, create=True)
    existing = _existing(storage, refs) if storage is not None else {}
    stored = _stored_range_tests(prepared, existing)
    prepared.bounds = {"none": (spec.lr_low, spec.lr_high)}
    prepared.baseline_bounds = dict(prepared.bounds)
    if "rangetest" in spec.prior:
        prepared.rangetest = _prior_test(spec, group, stored[False], device, on_rangetest)
        prepared.bounds["rangetest"] = (prepared.rangetest.lr_low, prepared.rangetest.lr_high)
        if spec.baseline:
            rt = _prior_test(baseline_spec(spec), group, stored[True], device, on_rangetest)
            prepared.baseline_rangetest = rt
            prepared.baseline_bounds["rangetest"] = (rt.lr_low, rt.lr_high)
    if storage is None:
        storage = open_storage(storage_url, create=True)
    with tempfile.TemporaryDirectory(prefix="lrtune-") as plot_dir:
        for ref in refs:
            summary = existing.get(ref.name)
            if summary is not None and is_created(summary.user_attrs):
                study = optuna.load_study(study_name=ref.name, storage=storage)
                study.set_user_attr("budget", prepared.budget(ref))  # --trials may have changed
                set_metric_name(study, task.metric_name)  # studies made before lrtune named it
                continue
            _create_study(storage, storage_url, prepared, ref, task, Path(plot_dir))
            prepared.created.append(ref.name)
    return prepared


def _prior_test(
    spec: StudySpec,
    group: str,
    stored: dict[str, Any] | None,
    device: str,
    on_rangetest: Callable[[RangeTestResult], None] | None,
) -> RangeTestResult:
    """The range test of ``spec``'s optimizer: the one stored on the group, else a new one."""
    if stored is not None:
        result = RangeTestResult.from_dict(stored)
    else:
        with task_errors(f"range test on {spec.task}"):
            result = range_test(
                spec.task,
                optimizer=spec.optimizer,
                start_lr=spec.rangetest_start_lr,
                end_lr=spec.rangetest_end_lr,
                steps=spec.rangetest_steps,
                seeds=spec.rangetest_seeds,
                device=device,
                seed=spec.seed,
                **_training_options(spec),
            )
        root = log_root()
        if root is not None:  # --log-dir: the curve in TensorBoard too
            write_range_test(result, os.path.join(root, group, f"rangetest-{spec.optimizer}"))
        if on_rangetest is not None:
            on_rangetest(result)
    if result.diagnosis not in (DIAG_OK, DIAG_NEVER_DIVERGED, DIAG_FLAT):
        raise UserError(
            f"range test on {spec.task} ({spec.optimizer}): {result.diagnosis}; fix the task "
            "or run with --prior none"
        )
    return result


def _create_study(
    storage: optuna.storages.BaseStorage,
    storage_url: str,
    group: Group,
    ref: StudyRef,
    task: Task,
    plot_dir: Path,
) -> None:
    """Create study ``ref`` with everything a worker needs in its user attrs, or finish
    writing it (:mod:`lrtune.group.creation`)."""
    spec = group.spec_of(ref)
    attrs = {
        "lrtune_version": __version__,
        "group": group.name,
        "task": spec.task,
        # A worker started in another folder finds a relative task file from here.
        "task_dir": os.getcwd(),
        "spec": spec.to_dict(),
        "sampler": ref.sampler,
        "prior": ref.prior,
        "repeat": ref.repeat,
        "seed": ref.seed,
        "bounds": list(group.bounds_of(ref)),
        "budget": group.budget(ref),
        "epochs": spec.epochs or task.epochs,
        "metric": task.metric_name,
        "storage": mask_url(storage_url),
    }
    if ref.baseline:
        attrs["baseline"] = ref.baseline
    result = group.rangetest_of(ref)
    plot = None
    if result is not None:
        name = f"rangetest-{result.optimizer}.png" if ref.baseline else "rangetest.png"
        plot = plot_dir / name
        plot = plot if plot.exists() else plot_png(result, plot)
    write_study(
        storage,
        ref.name,
        direction=task.direction,
        metric=task.metric_name,
        attrs=attrs,
        storage_url=storage_url,
        rangetest=result,
        plot_path=plot,
        note=_note(group, ref),
    )


def _training_options(spec: StudySpec) -> dict[str, Any]:
    """The spec's precision, accumulate and clip_grad_norm for the range test (those set)."""
    names = ("precision", "accumulate", "clip_grad_norm")
    return {k: getattr(spec, k) for k in names if getattr(spec, k) is not None}


def _existing(
    storage: optuna.storages.BaseStorage, refs: list[StudyRef]
) -> dict[str, optuna.study.StudySummary]:
    names = {ref.name for ref in refs}
    return {
        s.study_name: s
        for s in optuna.get_all_study_summaries(storage, include_best_trial=False)
        if s.study_name in names
    }


def _stored_range_tests(
    group: Group, existing: dict[str, optuna.study.StudySummary]
) -> dict[bool, dict[str, Any] | None]:
    """The range tests the group's studies hold for this spec (key: a baseline arm's?),
    after checking that the studies that exist were made with it.

    A study a crash left half-written (:func:`lrtune.search.states.is_created`) and that
    has no trial is no conflict: it is written again with this spec.
    """
    stored: dict[bool, dict[str, Any] | None] = {False: None, True: None}
    for ref in group.refs:
        summary = existing.get(ref.name)
        if summary is None:
            continue
        attrs = summary.user_attrs
        differs = spec_difference(ref.name, attrs.get("spec", {}), group.spec_of(ref))
        if differs is not None and (is_created(attrs) or summary.n_trials > 0):
            raise UserError(differs)
        if differs is None and "spec" in attrs:
            baseline = ref.baseline is not None
            stored[baseline] = stored[baseline] or attrs.get("rangetest")
    return stored


def _note(group: Group, ref: StudyRef) -> str:
    """The dashboard note of a new study (markdown)."""
    low, high = group.bounds_of(ref)
    spec = group.spec_of(ref)
    budget = budget_text(group.budget(ref), spec.rungs, spec.reduction_factor, spec.horizon_beta)
    lines = [
        f"## {ref.name}",
        f"- task: `{spec.task}`, optimizer `{spec.optimizer}`",
        f"- sampler: **{ref.sampler}** (seed {ref.seed}), prior: **{ref.prior}**",
        f"- LR bounds: {low:.3g} … {high:.3g} ({decades((low, high)):.1f} decades)",
        f"- budget: {budget}",
        f"- schedules: {', '.join(spec.schedules)}",
        *setup_lines(spec),
    ]
    if ref.baseline:
        lines.append(
            f"- baseline **{ref.baseline}**: LR and warmup searched, no schedule "
            "(the comparison's answer to: was tuning the schedule worth it?)"
        )
    rt = group.rangetest_of(ref)
    if rt is not None:
        lines.append(
            f"- range test: steep {rt.steep:.3g}, valley {rt.valley:.3g}, "
            f"min/10 {rt.min10:.3g}, diagnosis {rt.diagnosis}, {rt.seconds:.1f} s "
            "(plot in the artifacts)"
        )
    return "\n".join(lines)


def load_existing_study(storage_url: str, name: str) -> optuna.Study:
    """Load study ``name`` or raise a one-line :class:`UserError` (nothing is created)."""
    storage = open_storage(storage_url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        hint = f"; studies there: {', '.join(sorted(names)[:6])}" if names else ""
        raise UserError(f"no study {name!r} in {mask_url(storage_url)}{hint}")
    return optuna.load_study(study_name=name, storage=storage)
