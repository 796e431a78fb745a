"""lrtune's Plotly graphs for optuna-dashboard: the figures (no browser), the hooks that save
them (range test recorded, bounds widened, comparison computed) and the metric name."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

from lrtune.cli import main
from lrtune.dashboard.graphs import (
    BEST_SO_FAR_GRAPH,
    RANGETEST_GRAPH,
    best_so_far_figure,
    rangetest_figure,
    save_rangetest_graph,
    show_widened,
)
from lrtune.dashboard.trial_graphs import INTERMEDIATE_GRAPH
from lrtune.search.best import best_so_far
from lrtune.search.widen import STEP_DECADES, maybe_widen

COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED


def _sweep(seed_shift: float) -> tuple[list[float], list[float | None]]:
    """A range-test-like curve: flat, falling, then blowing up (the last point non-finite)."""
    lrs = [1e-6 * 10 ** (i / 10) for i in range(70)]
    losses: list[float | None] = [
        2.3 - 1.5 / (1 + math.exp(-3 * (math.log10(x) + 3 + seed_shift))) + max(0, x - 0.3) * 20
        for x in lrs
    ]
    losses[-1] = None  # what RangeTestResult.to_dict stores for inf/nan
    return lrs, losses


def _rangetest(diverged_at: float | None = 1.2) -> dict[str, Any]:
    (lrs0, sm0), (lrs1, sm1) = _sweep(0.0), _sweep(0.2)
    return {
        "lr_low": 3e-5,
        "lr_high": 0.15,
        "steep": 1e-3,
        "valley": 2.2e-3,
        "min10": 1.9e-2,
        "diverged_at": diverged_at,
        "diagnosis": "ok",
        "optimizer": "sgd",
        "end_lr": 10.0,
        "seeds": [0, 1],
        "lrs": [lrs0, lrs1],
        "smoothed": [sm0, sm1],
    }


def _shapes(fig: Any) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in json.loads(fig.to_json())["layout"].get("shapes", [])}


def test_rangetest_figure_curves_bounds_suggestions_divergence() -> None:
    rt = _rangetest()
    fig = rangetest_figure(rt)
    traces = {t.name: t for t in fig.data}
    # One smoothed curve per seed, on the sweep's own points; non-finite losses are gaps.
    for seed in (0, 1):
        curve = traces[f"seed {seed}"]
        assert list(curve.x) == pytest.approx(rt["lrs"][seed], rel=1e-4)
        assert curve.y[-1] is None
        assert list(curve.y[:-1]) == pytest.approx(rt["smoothed"][seed][:-1], rel=1e-4)
    # A marker per suggestion, at its LR, on the first seed's curve.
    for label, key in (("steep", "steep"), ("valley", "valley"), ("min/10", "min10")):
        (marker,) = [t for n, t in traces.items() if n.startswith(f"{label} ")]
        assert marker.x[0] == pytest.approx(rt[key])
        assert marker.y[0] is not None and 0.5 < marker.y[0] < 2.4
    assert list(traces) == ["seed 0", "seed 1", "steep 0.001", "valley 0.0022", "min/10 0.019"]
    shapes = _shapes(fig)
    assert set(shapes) == {"bounds", "diverged", "diverges"}  # no widening yet
    assert shapes["diverged"]["x0"] == shapes["diverged"]["x1"] == 1.2
    assert shapes["diverged"]["label"]["text"] == "diverged 1.2"
    assert (shapes["bounds"]["x0"], shapes["bounds"]["x1"]) == (3e-5, 0.15)
    assert shapes["bounds"]["yref"] == "y domain"  # shaded over the full height
    assert shapes["diverges"]["x0"] == 1.2 and shapes["diverges"]["x1"] == 10.0
    layout = fig.layout
    assert layout.xaxis.type == "log"
    assert "LR range test (sgd): ok" in layout.title.text and "widened" not in layout.title.text
    # The y axis is clipped to the starting loss: the blow-up does not flatten the curve.
    peak = max(v for v in rt["smoothed"][0] if v is not None)
    assert 2.3 < layout.yaxis.range[1] < peak / 10
    # A sweep that never diverged has neither the marker nor the shaded strip.
    calm = rangetest_figure(_rangetest(diverged_at=None))
    assert set(_shapes(calm)) == {"bounds"}


def test_rangetest_figure_shows_each_moved_edge() -> None:
    history = [[3e-5, 0.15], [3e-5, 0.15 * 10**0.5], [3e-5 / 10**0.5, 0.15 * 10**0.5]]
    fig = rangetest_figure(_rangetest(), history)
    shapes = _shapes(fig)
    # First move: the high edge, a strip from the old edge to the new one and a line there.
    assert shapes["widened 1"]["x0"] == pytest.approx(0.15)
    assert shapes["widened 1"]["x1"] == pytest.approx(0.15 * 10**0.5)
    assert shapes["widened 1 edge"]["x0"] == pytest.approx(0.15 * 10**0.5)
    assert shapes["widened 1 edge"]["label"]["text"].startswith("high → ")
    # Second move: the low edge.
    assert shapes["widened 2"]["x0"] == pytest.approx(3e-5 / 10**0.5)
    assert shapes["widened 2"]["x1"] == pytest.approx(3e-5)
    assert shapes["widened 2 edge"]["label"]["text"].startswith("low → ")
    assert (shapes["bounds"]["x0"], shapes["bounds"]["x1"]) == (3e-5, 0.15)  # the original
    assert "widened to 9.49e-06 … 0.474" in fig.layout.title.text
    # The x axis reaches the moved low edge.
    assert fig.layout.xaxis.range[0] <= math.log10(3e-5 / 10**0.5)


def _trial(number: int, state: optuna.trial.TrialState, value: float | None) -> Any:
    trial = optuna.trial.create_trial(state=state, value=value if state == COMPLETE else None)
    trial.number = number
    return trial


def test_best_so_far_counts_finished_trials_in_order() -> None:
    trials = [
        _trial(3, COMPLETE, 0.2),
        _trial(0, PRUNED, None),
        _trial(1, COMPLETE, 0.5),
        _trial(2, optuna.trial.TrialState.FAIL, None),  # not a finished trial
        _trial(4, COMPLETE, 0.3),
        _trial(5, COMPLETE, -math.inf),  # not finite: never the best
    ]
    assert best_so_far(trials, "minimize") == [None, 0.5, 0.2, 0.2, 0.2]
    assert best_so_far(trials, "maximize") == [None, 0.5, 0.5, 0.5, 0.5]


def test_best_so_far_figure_one_line_per_study_and_the_target() -> None:
    curves = {"tpe × rangetest": [None, 0.5, 0.2], "random × none": [0.9, 0.9, 0.4, 0.3]}
    fig = best_so_far_figure(
        curves, group="digits", metric="val_loss", direction="minimize", target=0.204
    )
    lines = {t.name: t for t in fig.data}
    assert set(lines) == set(curves)
    assert list(lines["random × none"].x) == [1, 2, 3, 4]
    assert list(lines["tpe × rangetest"].y) == [None, 0.5, 0.2]
    (target,) = json.loads(fig.to_json())["layout"]["shapes"]
    assert target["name"] == "target" and target["y0"] == target["y1"] == 0.204
    assert fig.layout.yaxis.title.text == "best val_loss (lower is better)"
    assert fig.layout.title.text == "Best val_loss so far: group digits"


def _system_attrs(study: optuna.Study) -> dict[str, Any]:
    """``study``'s system attrs as stored (read through the study's storage)."""
    return dict(study._storage.get_study_system_attrs(study._study_id))


def _graphs(study: optuna.Study) -> dict[str, Any]:
    """The graphs the dashboard serves for ``study`` (its own reader), as parsed JSON."""
    raw = get_plotly_graph_objects(_system_attrs(study))
    return {key: json.loads(value) for key, value in raw.items()}


def _widen_study(url: str) -> optuna.Study:
    """A range-test-prior study whose best trial sits at the high edge of its bounds."""
    study = optuna.create_study(storage=url, study_name="g.tpe.rangetest")
    attrs = {
        "prior": "rangetest",
        "sampler": "tpe",
        "spec": {"widen": True, "lr_low": 1e-6, "lr_high": 10.0},
        "bounds": [3e-5, 0.15],
        "budget": 10,
        "rangetest": _rangetest(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    dist = {"lr": optuna.distributions.FloatDistribution(3e-5, 0.15, log=True)}
    for lr, value in [(1e-4, 0.5), (1e-3, 0.4), (0.14, 0.3)]:
        study.add_trial(
            optuna.trial.create_trial(params={"lr": lr}, distributions=dist, value=value)
        )
    return study


def test_widen_replaces_the_graph_with_the_moved_edge(sqlite_url: str) -> None:
    study = _widen_study(sqlite_url)
    save_rangetest_graph(study, study.user_attrs["rangetest"])
    assert list(_graphs(study)) == [RANGETEST_GRAPH]
    before = _system_attrs(study)
    assert maybe_widen(study) == pytest.approx((3e-5, 0.15 * 10**STEP_DECADES))
    show_widened(study)  # what the worker does after a move
    graphs = _graphs(study)
    assert list(graphs) == [RANGETEST_GRAPH]  # replaced in place, not a second graph
    shapes = {s["name"]: s for s in graphs[RANGETEST_GRAPH]["layout"]["shapes"]}
    assert shapes["widened 1"]["x1"] == pytest.approx(0.15 * 10**STEP_DECADES)
    # A call that moves nothing leaves the stored graph alone (no write, no cost).
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 1e-3},
            distributions={"lr": optuna.distributions.FloatDistribution(3e-5, 1, log=True)},
            value=0.1,
        )
    )
    moved = _system_attrs(study)
    assert maybe_widen(study) is None
    after = _system_attrs(study)
    assert after == moved != before


@pytest.mark.slow
def test_study_run_names_the_metric_and_saves_both_graphs(sqlite_url: str, tmp_path: Path) -> None:
    spec = tmp_path / "tiny.toml"
    spec.write_text('task = "digits"\nrangetest_seeds = 1\nschedules = ["cosine"]\n')

    def run(trials: int) -> int:
        args = ["study", "--spec", str(spec), "--storage", sqlite_url, "--epochs", "2"]
        args += ["--prior", "rangetest,none", "--samplers", "random", "--trials", str(trials)]
        return main([*args, "--seed", "0", "--device", "cpu"])

    assert run(2) == 0
    names = ["digits.random.rangetest", "digits.random.none"]
    for name in names:
        study = optuna.load_study(study_name=name, storage=sqlite_url)
        assert study.metric_names == ["val_loss"]
        graphs = _graphs(study)
        want = {BEST_SO_FAR_GRAPH, INTERMEDIATE_GRAPH}  # too few trials for importances
        want |= {RANGETEST_GRAPH} if name.endswith("rangetest") else set()
        assert set(graphs) == want
        best = graphs[BEST_SO_FAR_GRAPH]
        assert {t["name"] for t in best["data"]} == {"random × rangetest", "random × none"}
        assert best["layout"]["title"]["text"] == "Best val_loss so far: group digits"
    prior = optuna.load_study(study_name=names[0], storage=sqlite_url)
    rt = prior.user_attrs["rangetest"]
    bounds = {s["name"]: s for s in _graphs(prior)[RANGETEST_GRAPH]["layout"]["shapes"]}
    assert (bounds["bounds"]["x0"], bounds["bounds"]["x1"]) == (rt["lr_low"], rt["lr_high"])

    # A study made before lrtune named the metric gets the name when the group resumes; the
    # graphs are replaced, not duplicated, by the new comparison.
    old = optuna.load_study(study_name=names[1], storage=sqlite_url)
    old._storage.set_study_system_attr(old._study_id, "study:metric_names", None)
    assert optuna.load_study(study_name=names[1], storage=sqlite_url).metric_names is None
    assert run(3) == 0
    for name in names:
        study = optuna.load_study(study_name=name, storage=sqlite_url)
        assert study.metric_names == ["val_loss"]
        graphs = _graphs(study)
        assert BEST_SO_FAR_GRAPH in graphs and len(graphs) == (3 if "rangetest" in name else 2)
        assert len(graphs[INTERMEDIATE_GRAPH]["data"]) == 3  # one line per trial
        assert all(len(t["x"]) == 3 for t in graphs[BEST_SO_FAR_GRAPH]["data"])
