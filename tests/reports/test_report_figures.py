"""Figures: each function returns a Figure with the panels and lines the data call for."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from reports import (
    NothingToPlot,
    ReportError,
    fig_accuracy_vs_eps,
    fig_attack_success,
    fig_clean_vs_robust,
    fig_delta_heatmap,
    fig_delta_vs_eps,
    fig_layer_sparsity,
    summarize,
    try_figure,
)
from reports.load import load_layer_sparsity, load_meta, load_outcomes, load_results
from reports.tables import grid_deltas, model_deltas

N_FAMILIES = 4  # window/filter x 50%/70%
# a doubling sweep wide enough to crowd its small budgets at the left of a linear eps axis
WIDE_SWEEP = {
    "fgsm": {2: 0.90, 4: 0.85, 8: 0.70, 16: 0.50, 32: 0.30, 64: 0.15},
    "pgd": {8: 0.50, 16: 0.30, 32: 0.15},
}


@pytest.fixture(scope="module")
def run(shared_run: Path) -> dict:
    return {
        "results": load_results(shared_run),
        "outcomes": load_outcomes(shared_run),
        "meta": load_meta(shared_run),
        "layers": load_layer_sparsity(shared_run),
        "raw": pd.read_csv(shared_run / "results.csv"),
    }


def test_accuracy_vs_eps_one_panel_per_attack_one_line_per_family_plus_dense(run: dict) -> None:
    fig = fig_accuracy_vs_eps(run["results"])
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["FGSM", "PGD"]
    raw = run["raw"]
    for ax, attack in zip(fig.axes, ["fgsm", "pgd"]):
        assert len(ax.lines) == N_FAMILIES + 1
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(dashed) == 1
        dense = raw[raw["method"] == "dense"]
        clean = dense[dense["attack"] == "clean"]["accuracy"].mean()
        by_eps = dense[dense["attack"] == attack].groupby("eps")["accuracy"].mean()
        x, y = dashed[0].get_data()
        assert np.allclose(x, [0.0, *by_eps.index])
        assert np.allclose(y, [clean * 100, *(by_eps.to_numpy() * 100)])
        assert len(ax.collections) == N_FAMILIES + 1  # one 95% band per line
        labels, positions, _ = _eps_ticks(ax)
        assert labels == ["0", "2/255", "4/255", "8/255"]
        assert np.allclose(np.diff(positions), np.diff(positions)[0])  # 0, 2, 4, 8 /255: a doubling sweep


def _eps_ticks(ax) -> tuple[list[str], np.ndarray, list[tuple[float, float]]]:
    """The x tick labels of a drawn axes, their positions and their label spans, in display pixels."""
    ax.figure.draw_without_rendering()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    ticks = np.asarray(ax.get_xticks(), dtype=float)
    positions = ax.transData.transform(np.column_stack([ticks, np.zeros_like(ticks)]))[:, 0]
    spans = [(t.get_window_extent().x0, t.get_window_extent().x1) for t in ax.get_xticklabels()]
    return labels, positions, spans


def _assert_readable_eps_axis(ax, eps_255: list[int]) -> None:
    """Tick labels are the panel's eps labels in order, apart, evenly spaced for a doubling sweep, none overlapping."""
    labels, positions, spans = _eps_ticks(ax)
    assert labels == ["0", *(f"{e}/255" for e in eps_255)]
    assert np.all(np.diff(positions) > 20)  # pixels: no two ticks coincide
    assert np.allclose(np.diff(positions), np.diff(positions)[0], rtol=1e-6)
    assert all(right < left for (_, right), (left, _) in zip(spans, spans[1:])), spans  # labels do not overlap
    low, high = ax.get_xlim()
    assert low < 0.0 and high > eps_255[-1] / 255  # the clean point and the largest eps sit inside the panel


def test_accuracy_vs_eps_spreads_a_doubling_sweep_and_keeps_the_data_in_eps_units(run_factory) -> None:
    raw_path = run_factory(attacks=WIDE_SWEEP, seeds=(0,))
    fig = fig_accuracy_vs_eps(load_results(raw_path))
    raw = pd.read_csv(raw_path / "results.csv")
    dense = raw[raw["method"] == "dense"]
    for ax, attack in zip(fig.axes, ["fgsm", "pgd"]):
        levels = sorted(WIDE_SWEEP[attack])
        _assert_readable_eps_axis(ax, levels)
        assert ax.get_xscale() == "symlog"
        eps = np.array([0.0, *(e / 255 for e in levels)])
        (line,) = [line for line in ax.lines if line.get_linestyle() == "--"]
        x, y = line.get_data()
        by_eps = dense[dense["attack"] == attack].sort_values("eps")["accuracy"].to_numpy()
        assert np.allclose(x, eps) and np.allclose(
            y, [dense.loc[dense["attack"] == "clean", "accuracy"].item() * 100, *(by_eps * 100)]
        )
        for band in ax.collections:  # every band spans the eps of its line, in eps units too
            xs = band.get_paths()[0].vertices[:, 0]
            assert np.isclose(xs.min(), 0.0) and np.isclose(xs.max(), eps[-1])
            assert all(np.isclose(eps, v).any() for v in xs)


def test_delta_heatmap_marks_the_significant_cells(run: dict) -> None:
    fig = fig_delta_heatmap(run["results"], run["outcomes"], meta=run["meta"])
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert len(heatmaps) == 2 and len(fig.axes) == 3  # plus one shared colour bar
    grid = grid_deltas(model_deltas(run["results"], run["outcomes"], run["meta"]))
    for ax, series in zip(heatmaps, ["FGSM", "PGD"]):
        cells = grid[(grid["series"] == series) & np.isclose(grid["eps_key"], 8 / 255)]
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == len(cells) == N_FAMILIES
        assert sum(t.endswith("*") for t in texts) == int((cells["p_value"] < 0.05).sum())
        assert sorted(float(t.rstrip("*")) for t in texts) == sorted(round(d, 1) for d in cells["delta_pp"])
        assert "8/255" in ax.get_title()


def test_delta_heatmap_without_outcomes_marks_nothing(run: dict) -> None:
    fig = fig_delta_heatmap(run["results"], None, eps="4/255")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts and not any(t.endswith("*") for t in texts)
    assert all("4/255" in ax.get_title() for ax in fig.axes if ax.get_title())


def test_clean_vs_robust_one_point_per_model_and_a_front(run: dict) -> None:
    fig = fig_clean_vs_robust(run["results"], run["meta"])
    assert len(fig.axes) == 2
    n_models = run["raw"]["model_id"].nunique()
    for ax in fig.axes:
        assert sum(len(c.get_offsets()) for c in ax.collections) == n_models
        assert len(ax.lines) == 1  # the Pareto front
    assert fig.axes[1].get_xscale() == "log"


def test_layer_sparsity_draws_layers_as_layers_and_the_totals_apart(run: dict) -> None:
    fig = fig_layer_sparsity(run["layers"], run["meta"])
    assert [ax.get_title() for ax in fig.axes] == ["target 50%", "target 70%"]
    layer_x = {0, 1, 2, 3}  # conv1, conv2, conv3, fc
    for ax, target in zip(fig.axes, [50.0, 70.0]):
        joined = [line for line in ax.lines if line.get_linestyle() not in ("None", "none", "")]
        curves = [line for line in joined if len(line.get_xdata()) == len(layer_x)]
        assert len(curves) == 2  # window and filter, each joining the four layers only
        for line in curves:
            assert set(np.asarray(line.get_xdata(), dtype=float)) == layer_x
        totals = [line for line in ax.lines if str(line.get_gid()).startswith("total:")]
        assert len(totals) == 2 and all(line.get_linestyle() == "None" for line in totals)
        for line in totals:  # right of every layer, never on a layer's slot
            assert min(np.asarray(line.get_xdata(), dtype=float)) > max(layer_x)
        assert any(np.allclose(line.get_ydata(), target) for line in ax.lines)
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert ticks == ["conv1", "conv2", "conv3", "fc", "prunable total", "all weights"]


def test_attack_success_with_a_minimum_norm_attack(run_factory) -> None:
    results = load_results(run_factory(include_cw=True, seeds=(0,)))
    fig = fig_attack_success(results)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["FGSM at eps 8/255", "PGD at eps 8/255", "CW (minimum-norm)"]
    assert fig.axes[2].get_ylabel() == "median L2 perturbation (fooled examples)"
    # CW has no eps budget (eps=inf), so the eps figure still has only FGSM and PGD
    assert len(fig_accuracy_vs_eps(results).axes) == 2
    assert "CW (minimum-norm)" in summarize(results)[0].text


def test_minimum_norm_attack_with_a_budget_counts_at_that_eps(run_factory) -> None:
    results = load_results(run_factory(attacks={"pgd": {2: 0.7, 8: 0.3}, "fab": {8: 0.35}}, seeds=(0,)))
    assert [ax.get_title() for ax in fig_accuracy_vs_eps(results).axes] == ["PGD", "FAB"]
    titles = [ax.get_title() for ax in fig_attack_success(results).axes]
    assert titles == ["PGD at eps 8/255", "FAB at eps 8/255", "FAB (minimum-norm)"]
    assert fig_attack_success(results).axes[2].get_ylabel() == "largest Linf perturbation"


def test_dense_only_run_skips_what_needs_sparse_models(run_factory) -> None:
    path = run_factory(granularities=(), seeds=(0,))
    results = load_results(path)
    with pytest.raises(NothingToPlot, match="no sparse"):
        fig_delta_heatmap(results)
    with pytest.raises(NothingToPlot):
        fig_layer_sparsity(load_layer_sparsity(path), load_meta(path))
    fig = fig_accuracy_vs_eps(results)
    assert all(len(ax.lines) == 1 for ax in fig.axes)


def test_no_dense_model_skips_the_heatmap(run_factory) -> None:
    results = load_results(run_factory(include_dense=False, seeds=(0,)))
    with pytest.raises(NothingToPlot, match="no dense"):
        fig_delta_heatmap(results)
    assert all(len(ax.lines) == N_FAMILIES for ax in fig_accuracy_vs_eps(results).axes)


def test_single_eps(run_factory) -> None:
    results = load_results(run_factory(attacks={"fgsm": {8: 0.45}}, seeds=(0,)))
    fig = fig_accuracy_vs_eps(results)
    assert len(fig.axes) == 1
    assert all(len(line.get_xdata()) == 2 for line in fig.axes[0].lines)  # clean at 0, then 8/255
    assert len(fig_delta_heatmap(results).axes) == 2


def test_several_settings_must_be_filtered(run: dict) -> None:
    other = run["results"].assign(dataset="cifar10", model_id=run["results"]["model_id"] + "-c")
    both = pd.concat([run["results"], other], ignore_index=True)
    with pytest.raises(ReportError, match="settings"):
        fig_accuracy_vs_eps(both)


# ---------------------------------------------------------------- change vs dense against eps


def _expected_deltas(raw: pd.DataFrame) -> dict[tuple[str, float, str], list[float]]:
    """Per (granularity, target, attack): [clean delta, delta at each eps ascending], mean over seeds, by hand."""
    acc = raw.set_index(["model_id", "key"])["accuracy"]
    sparse = raw[raw["method"] != "dense"].copy()
    # the synthetic run's parent of every sparse model is the dense model of its seed
    dense = [acc[(f"dense-s{seed}", key)] for seed, key in zip(sparse["seed"], sparse["key"])]
    sparse["delta"] = (sparse["accuracy"] - dense) * 100
    mean = sparse.groupby(["granularity", "target_sparsity", "attack", "eps"])["delta"].mean()
    out = {}
    for (g, t, attack), sub in mean.drop("clean", level="attack").groupby(level=[0, 1, 2]):
        out[(g, t, attack)] = [mean[(g, t, "clean", 0.0)], *sub.sort_index(level="eps").to_list()]
    return out


def test_delta_vs_eps_lines_are_the_mean_changes_vs_dense(run: dict) -> None:
    fig = fig_delta_vs_eps(run["results"], meta=run["meta"])
    assert [ax.get_title() for ax in fig.axes] == ["FGSM", "PGD"]
    expected = _expected_deltas(run["raw"])
    # by construction: filter at 70% loses 285 - 270 of 300 clean examples, window at 50% none
    assert expected[("filter", 0.7, "fgsm")][0] == pytest.approx(-5.0)
    assert expected[("window", 0.5, "pgd")][0] == pytest.approx(0.0)
    for ax, attack in zip(fig.axes, ["fgsm", "pgd"]):
        dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert len(dashed) == 1 and np.allclose(dashed[0].get_ydata(), 0.0)  # the dense reference
        lines = [line for line in ax.lines if line.get_linestyle() != "--"]
        assert len(lines) == N_FAMILIES
        for line in lines:
            assert np.allclose(line.get_xdata(), [0.0, 2 / 255, 4 / 255, 8 / 255])
        got = sorted(tuple(np.round(line.get_ydata(), 6)) for line in lines)
        want = sorted(tuple(np.round(v, 6)) for k, v in expected.items() if k[2] == attack)
        assert got == want
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "2/255", "4/255", "8/255"]


def test_delta_vs_eps_spreads_a_doubling_sweep(run_factory) -> None:
    fig = fig_delta_vs_eps(load_results(run_factory(attacks=WIDE_SWEEP, seeds=(0,))))
    for ax, attack in zip(fig.axes, ["fgsm", "pgd"]):
        levels = sorted(WIDE_SWEEP[attack])
        _assert_readable_eps_axis(ax, levels)
        for line in ax.lines:
            if line.get_linestyle() != "--":
                assert np.allclose(line.get_xdata(), [0.0, *(e / 255 for e in levels)])


def test_delta_vs_eps_at_one_sparsity_says_which(run: dict) -> None:
    results = run["results"]
    at = results[results["target_sparsity"].isin([0.0, 0.7])]
    fig = fig_delta_vs_eps(at, meta=run["meta"])
    assert "at 70% sparsity" in fig.get_suptitle()
    assert all(len(ax.lines) == 2 + 1 for ax in fig.axes)  # window, filter, the dense reference
    assert "sparsity" not in fig_delta_vs_eps(results).get_suptitle()  # two levels: no single one to name


def test_delta_vs_eps_needs_sparse_dense_and_an_eps_budget(run_factory) -> None:
    with pytest.raises(NothingToPlot, match="no dense"):
        fig_delta_vs_eps(load_results(run_factory(include_dense=False, seeds=(0,))))
    with pytest.raises(NothingToPlot, match="no sparse"):
        fig_delta_vs_eps(load_results(run_factory(granularities=(), seeds=(0,))))
    with pytest.raises(NothingToPlot, match="eps budget"):
        fig_delta_vs_eps(load_results(run_factory(attacks={}, seeds=(0,))))


# ---------------------------------------------------------------- try_figure


def test_try_figure_passes_arguments_and_returns_the_figure(run: dict) -> None:
    fig = try_figure(fig_delta_heatmap, run["results"], None, eps="4/255")
    assert isinstance(fig, Figure)
    assert all("4/255" in ax.get_title() for ax in fig.axes if ax.get_title())


def test_try_figure_logs_why_there_is_nothing_to_draw(run_factory, caplog) -> None:
    dense_only = load_results(run_factory(granularities=(), seeds=(0,)))
    with caplog.at_level(logging.WARNING, logger="reports.figures"):
        assert try_figure(fig_delta_heatmap, dense_only) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "reports.figures"]
    assert messages == ["fig_delta_heatmap: nothing to draw (no sparse models, so there is no change vs dense to show)"]


def test_try_figure_lets_real_errors_through(run: dict) -> None:
    with pytest.raises(ReportError, match="eps"):
        try_figure(fig_delta_heatmap, run["results"], eps="3/255")  # an eps the run never attacked at
