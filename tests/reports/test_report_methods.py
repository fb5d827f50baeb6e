"""Sparsification methods side by side: the numbers, figures and sentences say what the files say.

The synthetic run (`methods_run` of conftest) has three methods at the window granularity (campfire,
random, snip) at 50% and 70%, built so that campfire is the most robust at 50% and snip at 70%,
random the least robust at both, and snip at 70% reaches only 66.7% sparsity. Expected values are computed here from
results.csv and outcomes.csv.gz with pandas and scipy, not with the functions under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports import NothingToPlot, ReportError, summarize
from reports.build import _method_items
from reports.content import METHODS_SECTION, ReportContent, TableItem
from reports.labels import annotate
from reports.load import load_meta, load_outcomes, load_results, load_sanity
from reports.method_figures import fig_method_heatmap, fig_method_pareto, fig_methods_vs_eps
from reports.method_summary import method_findings
from reports.methods import (
    compares_methods,
    method_comparison,
    method_families,
    method_front,
    method_pairs,
)
from reports.render import render_html, render_markdown

PGD8 = "pgd:eps=8/255,steps=10,restarts=1,seed=0"
EPS8 = 8 / 255


@pytest.fixture(scope="module")
def tables(methods_run: Path) -> dict:
    results, outcomes, meta = load_results(methods_run), load_outcomes(methods_run), load_meta(methods_run)
    comparison = method_comparison(results, outcomes, meta, eps=EPS8)
    return {
        "results": results,
        "outcomes": outcomes,
        "meta": meta,
        "raw": pd.read_csv(methods_run / "results.csv"),
        "comparison": comparison,
        "pairs": method_pairs(results, outcomes, comparison, eps=EPS8),
    }


def _by_hand(raw: pd.DataFrame, outcomes: pd.DataFrame, model_id: str, other_id: str, key: str):
    """Accuracy difference (points) of two models under one key and McNemar's exact p, from the files."""
    a = outcomes[(outcomes.model_id == model_id) & (outcomes.key == key)].set_index("example")["correct"]
    b = outcomes[(outcomes.model_id == other_id) & (outcomes.key == key)].set_index("example")["correct"]
    b = b.reindex(a.index)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    acc = raw[raw.key == key].set_index("model_id")["accuracy"]
    p = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    return (acc[model_id] - acc[other_id]) * 100, float(p), only_a, only_b


def test_a_single_method_run_compares_no_methods(shared_run: Path) -> None:
    results = load_results(shared_run)
    assert not compares_methods(results)
    findings = summarize(results, load_outcomes(shared_run), meta=load_meta(shared_run))
    assert not [f for f in findings if f.kind.startswith("methods")]


def test_heatmap_cells_are_the_paired_differences_vs_dense(tables: dict) -> None:
    raw, outcomes = tables["raw"], tables["outcomes"]
    fig = fig_method_heatmap(tables["results"], outcomes, meta=tables["meta"], eps=EPS8)
    pgd = next(ax for ax in fig.axes if ax.get_title() == "PGD at eps 8/255")
    rows = [t.get_text() for t in pgd.get_yticklabels()]
    cols = [t.get_text() for t in pgd.get_xticklabels()]
    assert rows == ["campfire/window", "random/window", "snip/window"] and cols == ["50%", "70%"]
    cells = [t.get_text() for t in pgd.texts]  # row by row
    comparison = tables["comparison"].set_index(["label", "series", "target_sparsity"])
    for i, label in enumerate(rows):
        for j, target in enumerate([0.5, 0.7]):
            model_id = f"{label.split('/')[0]}-window-{round(target * 100)}-s0"
            delta, p, _, _ = _by_hand(raw, outcomes, model_id, "dense-s0", PGD8)
            row = comparison.loc[(label, "PGD", target)]
            assert row["delta_pp"] == pytest.approx(delta)
            assert row["p_value"] == pytest.approx(p) and row["p_adjusted"] >= row["p_value"]
            first, second = cells[i * 2 + j].split("\n")
            assert first == f"{delta:+.1f}" + ("*" if row["p_adjusted"] < 0.05 else "")
            # the achieved sparsity, flagged where it is not the level's
            assert second.startswith(f"{row['achieved_sparsity'] * 100:.1f}%")
            assert second.endswith(" !") == (label == "snip/window" and target == 0.7)
    assert cells[rows.index("random/window") * 2 + 1].endswith("*\n70.1%")  # -20 points: significant


def test_pareto_fronts_hold_exactly_the_non_dominated_models(tables: dict) -> None:
    front = method_front(tables["results"], tables["meta"], eps=EPS8, outcomes=tables["outcomes"])
    points = front[["clean_accuracy", "robust_accuracy", "macs_fraction"]].to_numpy(float)
    for i, (clean, robust, macs) in enumerate(points):
        others = np.delete(points, i, axis=0)
        dominated = any(c >= clean and r >= robust and (c > clean or r > robust) for c, r, _ in others)
        assert bool(front["front_clean_robust"].iloc[i]) == (not dominated)
        dominated = any(m <= macs and r >= robust and (m < macs or r > robust) for _, r, m in others)
        assert bool(front["front_macs_robust"].iloc[i]) == (not dominated)
    assert front["front_macs_robust"].sum() >= 2  # the data hold a real trade-off between compute and robustness
    fig = fig_method_pareto(tables["results"], tables["meta"], eps=EPS8, outcomes=tables["outcomes"])
    # the rings: one scatter per panel with no face colour, holding exactly that panel's front
    for ax, column in zip(fig.axes, ["front_clean_robust", "front_macs_robust"]):
        rings = [c for c in ax.collections if len(c.get_facecolor()) == 0 or c.get_facecolor()[0][3] == 0]
        assert len(rings) == 1 and len(rings[0].get_offsets()) == int(front[column].sum())


def test_findings_name_the_most_and_least_robust_method_at_each_level(tables: dict, methods_run: Path) -> None:
    raw = tables["raw"]
    findings = summarize(tables["results"], tables["outcomes"], meta=tables["meta"], sanity=load_sanity(methods_run))
    levels = {f.numbers["target_sparsity"]: f for f in findings if f.kind == "methods"}
    assert sorted(levels) == [0.5, 0.7]
    pgd = raw[(raw.key == PGD8) & (raw.method != "dense")]
    for target, f in levels.items():
        at = pgd[np.isclose(pgd.target_sparsity, target)]
        best = at.loc[at.accuracy.idxmax()]
        worst = at.loc[at.accuracy.idxmin()]
        best_label, worst_label = f"{best.method}/window", f"{worst.method}/window"
        assert f.numbers["best"] == best_label and f.numbers["worst"] == worst_label
        assert f.numbers["best_accuracy"] == pytest.approx(best.accuracy)
        assert f.text.startswith(f"At {target * 100:g}% sparsity (achieved")
        assert f"under PGD at eps 8/255, {best_label} keeps most robust accuracy: {best.accuracy:.1%}" in f.text
        assert f"{worst_label} keeps least: {worst.accuracy:.1%}" in f.text
    assert (levels[0.5].numbers["best"], levels[0.7].numbers["best"]) == ("campfire/window", "snip/window")
    # the finding speaks of the attack the headline uses and comes after the setting's other findings
    kinds = [f.kind for f in findings]
    assert kinds.index("methods") > kinds.index("clean_cost") and "methods_note" in kinds


def test_the_lead_is_tested_against_the_next_best_on_the_same_examples(tables: dict) -> None:
    pairs = tables["pairs"].set_index(["target_sparsity", "other"])
    raw, outcomes = tables["raw"], tables["outcomes"]
    row = pairs.loc[(0.7, "campfire/window")]
    assert row["best"] == "snip/window"
    delta, p, only_best, only_other = _by_hand(raw, outcomes, "snip-window-70-s0", "campfire-window-70-s0", PGD8)
    assert (row["best_only"], row["other_only"], row["n_paired"]) == (only_best, only_other, 300)
    assert row["delta_pp"] == pytest.approx(delta) and row["p_value"] == pytest.approx(p)
    # Holm over the setting's method-vs-method tests (4: two levels x two others)
    assert len(pairs) == 4
    ordered = np.sort(tables["pairs"]["p_value"].to_numpy())
    holm = np.minimum(np.maximum.accumulate(ordered * (4 - np.arange(4))), 1.0)
    assert np.sort(tables["pairs"]["p_adjusted"].to_numpy()) == pytest.approx(holm)
    finding = method_findings(
        tables["comparison"],
        tables["pairs"],
        method_families(tables["results"], tables["meta"]),
        label_eps="8/255",
        tolerance=0.01,
    )
    at70 = next(f for f in finding if f.kind == "methods" and f.numbers["target_sparsity"] == 0.7)
    assert at70.numbers["runner_up"] == "campfire/window"
    assert "Against the next best, campfire/window, on the same examples (300 examples):" in at70.text


def test_unequal_sparsity_is_said_in_words_not_hidden(tables: dict) -> None:
    families = method_families(tables["results"], tables["meta"])
    off = families[~families["matched"]]
    assert list(zip(off["label"], off["target_sparsity"])) == [("snip/window", 0.7)]
    assert off["off_level_pp"].iloc[0] == pytest.approx((0.667 - 0.701) * 100)
    findings = method_findings(tables["comparison"], tables["pairs"], families, label_eps="8/255", tolerance=0.01)
    said = [f for f in findings if f.kind == "methods_sparsity"]
    assert len(said) == 1 and said[0].numbers["target_sparsity"] == 0.7
    assert "snip/window reaches 66.7%, where the level's median is 70.1%" in said[0].text
    # a wider tolerance accepts the gap, and nothing is said
    wide = method_families(tables["results"], tables["meta"], tolerance=0.05)
    assert wide["matched"].all()
    assert not [
        f
        for f in method_findings(tables["comparison"], tables["pairs"], wide, label_eps="8/255", tolerance=0.05)
        if f.kind == "methods_sparsity"
    ]


def test_different_training_budgets_are_said(tables: dict) -> None:
    families = method_families(tables["results"], tables["meta"])
    quiet = method_findings(tables["comparison"], tables["pairs"], families, label_eps="8/255", tolerance=0.01)
    assert not [f for f in quiet if f.kind == "methods_budget"]  # the synthetic meta.json has no total_epochs
    families["total_epochs"] = families["method"].map({"campfire": 16, "random": 8, "snip": 8})
    said = method_findings(tables["comparison"], tables["pairs"], families, label_eps="8/255", tolerance=0.01)
    budget = next(f for f in said if f.kind == "methods_budget")
    assert "random and snip 8 epochs; campfire 16 epochs" in budget.text


def test_methods_vs_eps_draws_one_line_per_method_per_panel(tables: dict) -> None:
    fig = fig_methods_vs_eps(tables["results"])
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["FGSM, 50% sparsity", "FGSM, 70% sparsity", "PGD, 50% sparsity", "PGD, 70% sparsity"]
    raw = tables["raw"]
    ax = fig.axes[3]
    lines = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert sorted(lines) == ["campfire/window", "random/window", "snip/window"]
    x, y = lines["random/window"].get_data()
    model = raw[raw.model_id == "random-window-70-s0"]
    expected = [model[model.attack == "clean"].accuracy.iloc[0]] + list(
        model[model.attack == "pgd"].sort_values("eps").accuracy
    )
    assert np.allclose(y, np.array(expected) * 100)


def test_the_report_gives_methods_a_section_of_their_own(tables: dict) -> None:
    notes: list[str] = []
    df = annotate(tables["results"])
    figures, items = _method_items(df, tables["outcomes"], tables["meta"], None, 0.05, "holm", "", notes)
    assert [f.name for f in figures] == ["methods_vs_eps", "methods_heatmap", "methods_pareto"] and not notes
    assert [t.name for t in items] == ["methods", "method_pairs"]
    assert {f.section for f in figures} | {t.section for t in items} == {METHODS_SECTION}
    # the shown table is the headline attack's, one row per family and level
    assert len(items[0].shown) == 6 and "method / granularity" in items[0].shown.columns
    content = ReportContent("t", [], figures[:1], [*items, TableItem("other", "Other", "", df.head(1))], df.head(0))
    page = render_html(content)
    assert page.index('id="methods"') < page.index('id="fig-methods_vs_eps"') < page.index('id="figures"')
    assert page.index('id="table-methods"') < page.index('id="figures"') < page.index('id="table-other"')
    assert '<a href="#methods">' in page
    markdown = render_markdown(content)
    assert markdown.index("## Methods side by side") < markdown.index("(figures/methods_vs_eps.png)")
    assert markdown.index("(figures/methods_vs_eps.png)") < markdown.index("## Figures")
    # a single method: no section, no link, nothing empty
    plain = render_html(ReportContent("t", [], [], [TableItem("other", "Other", "", df.head(1))], df.head(0)))
    assert 'id="methods"' not in plain and "#methods" not in plain and "Methods side by side" not in plain
    assert "Methods side by side" not in render_markdown(ReportContent("t", [], [], [], df.head(0)))
    assert _method_items(df[df["method"].isin(["dense", "snip"])], None, None, None, 0.05, "holm", "", notes) == (
        [],
        [],
    )


def test_method_figures_say_why_they_cannot_draw(tables: dict, shared_run: Path) -> None:
    single = load_results(shared_run)  # campfire only
    for make in (fig_methods_vs_eps, fig_method_heatmap, fig_method_pareto):
        with pytest.raises(NothingToPlot, match="only 1 sparsification method"):
            make(single)
    two = tables["results"].copy()
    two.loc[two["model_id"].str.startswith("snip"), "dataset"] = "cifar10"
    with pytest.raises(ReportError, match="filter it to one dataset/arch"):
        fig_methods_vs_eps(two)
