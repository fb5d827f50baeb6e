"""One compression axis: every method by effective MACs and parameters, compared at equal MACs.

The synthetic run (`axis_run`) has campfire at filter and element and a low-rank method `haloc`
(granularity `rank`, written as a smaller network: its own `params` and `dense_macs` are the
factorised network's) at two targets, two seeds, plus a dense model with mixture normalisation.
Their costs put every family near 50% or near 25% of dense MACs. At 50% haloc keeps 10 points more
robust accuracy than the best campfire family (intervals apart); at 25% they are a point or two
apart (within the intervals). Expected values are computed here from the run's files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from reports import NothingToPlot, build_report, summarize
from reports.compression import (
    MACS_TOLERANCE,
    compression_families,
    compression_findings,
    compression_points,
    equal_macs_comparison,
    equal_macs_levels,
    model_costs,
)
from reports.compression_figures import fig_compression_axis
from reports.contract import MODEL_COST_COLUMNS, RESULTS
from reports.load import load_meta, load_outcomes, load_results

from .conftest import DENSE_MACS, DENSE_PARAMS, make_run

EPS8 = 8 / 255
FAMILIES = [("campfire", "filter"), ("campfire", "element"), ("haloc", "rank")]
COSTS = {  # (effective MACs, non-zero parameters) as fractions of dense
    ("campfire", "filter", 0.5): (0.50, 0.52),
    ("campfire", "filter", 0.75): (0.25, 0.26),
    ("campfire", "element", 0.5): (0.52, 0.50),
    ("campfire", "element", 0.75): (0.27, 0.25),
    ("haloc", "rank", 0.5): (0.49, 0.45),
    ("haloc", "rank", 0.75): (0.26, 0.22),
}
PENALTY = {
    ("campfire", "filter", 0.5): 0.10,
    ("campfire", "element", 0.5): 0.12,
    ("haloc", "rank", 0.5): 0.00,
    ("campfire", "filter", 0.75): 0.03,
    ("campfire", "element", 0.75): 0.02,
    ("haloc", "rank", 0.75): 0.035,
}


def _axis_run(root: Path, *, cost_columns: bool = True) -> Path:
    return make_run(
        root,
        families=FAMILIES,
        sparsities=(0.5, 0.75),
        methods=("campfire", "haloc"),
        costs=COSTS,
        cost_columns=cost_columns,
        robust_penalty=PENALTY,
        clean_penalty=dict.fromkeys(PENALTY, 0.01),
        extra_dense=("dense-mixture",),
        n_examples=400,
    )


@pytest.fixture(scope="module")
def axis_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _axis_run(tmp_path_factory.mktemp("axis") / "run")


@pytest.fixture(scope="module")
def loaded(axis_run: Path) -> dict:
    results, outcomes, meta = load_results(axis_run), load_outcomes(axis_run), load_meta(axis_run)
    points = compression_points(results, meta, eps=EPS8, outcomes=outcomes)
    families = compression_families(points)
    return {
        "results": results,
        "outcomes": outcomes,
        "meta": meta,
        "raw": pd.read_csv(axis_run / "results.csv"),
        "points": points,
        "families": families,
        "comparison": equal_macs_comparison(families),
    }


def test_results_carry_the_cost_columns_optionally():
    assert set(MODEL_COST_COLUMNS) <= set(RESULTS.columns)
    assert set(MODEL_COST_COLUMNS) <= RESULTS.optional  # results.csv files written before them still load
    assert list(RESULTS.columns)[-len(MODEL_COST_COLUMNS) :] == list(MODEL_COST_COLUMNS)  # appended, nothing moves


def test_fractions_are_of_the_dense_model_not_of_the_models_own_network(loaded):
    costs = model_costs(loaded["results"], loaded["meta"]).set_index("model_id")
    for (method, granularity, target), (macs, params) in COSTS.items():
        for seed in (0, 1):
            row = costs.loc[f"{method}-{granularity}-{round(target * 100)}-s{seed}"]
            assert row["macs_fraction"] == pytest.approx(macs, abs=1e-6)
            assert row["params_fraction"] == pytest.approx(params, abs=1e-4)
            assert row["reference_macs"] == DENSE_MACS and row["reference_params"] == DENSE_PARAMS
    # haloc's own dense count is its factorised network's: measured against it, it would look uncompressed
    haloc = loaded["raw"][loaded["raw"]["model_id"] == "haloc-rank-50-s0"].iloc[0]
    assert haloc["effective_macs"] == haloc["dense_macs"]
    assert costs.loc["dense-s0", "macs_fraction"] == 1.0 and costs.loc["dense-mixture-s1", "macs_fraction"] == 1.0


def test_costs_come_from_meta_json_when_results_csv_predates_them(tmp_path, loaded):
    old = _axis_run(tmp_path / "old", cost_columns=False)
    raw = pd.read_csv(old / "results.csv")
    assert not set(MODEL_COST_COLUMNS) & set(raw.columns)
    results = load_results(old)
    assert results[list(MODEL_COST_COLUMNS)].isna().all().all()
    from_meta = model_costs(results, load_meta(old)).set_index("model_id")
    from_csv = model_costs(loaded["results"], loaded["meta"]).set_index("model_id")
    pd.testing.assert_series_equal(from_meta["macs_fraction"], from_csv["macs_fraction"].loc[from_meta.index])
    # with neither, the fractions are unknown (not guessed) and the figure says there is nothing to plot
    blank = model_costs(results, None)
    assert blank["macs_fraction"].isna().all()
    with pytest.raises(NothingToPlot):
        fig_compression_axis(results, None, eps=EPS8)


def _worst_case(outcomes: pd.DataFrame, raw: pd.DataFrame, model_id: str) -> tuple[int, int]:
    """Examples correct under every eps-budget attack at 8/255, and the examples, from the files."""
    keys = raw[(raw["model_id"] == model_id) & np.isclose(raw["eps"], EPS8)]["key"]
    rows = outcomes[(outcomes["model_id"] == model_id) & outcomes["key"].isin(keys)]
    per_example = rows.groupby("example")["correct"].min()
    return int(per_example.sum()), len(per_example)


def test_families_pool_the_per_example_worst_case_over_seeds(loaded):
    fam = loaded["families"].set_index("label")
    for label, prefix in (("haloc/rank", "haloc-rank-50"), ("campfire/filter", "campfire-filter-50")):
        k0, n0 = _worst_case(loaded["outcomes"], loaded["raw"], f"{prefix}-s0")
        k1, n1 = _worst_case(loaded["outcomes"], loaded["raw"], f"{prefix}-s1")
        row = fam[fam["target_sparsity"] == 0.5].loc[label]
        assert row["n_seeds"] == 2 and row["n_robust"] == n0 + n1
        assert row["robust_accuracy"] == pytest.approx((k0 + k1) / (n0 + n1))
        assert row["robust_low"] < row["robust_accuracy"] < row["robust_high"]
    assert fam.loc["dense", "is_dense"] and fam.loc["dense-mixture", "is_dense"]


def test_levels_gather_families_of_equal_macs(loaded):
    levels = equal_macs_levels(loaded["families"])
    # the dense model and its mixture-normalised variant meet at 100%; the dense-continued control takes no part
    assert set(levels["label"]) == {"campfire/filter", "campfire/element", "haloc/rank", "dense", "dense-mixture"}
    by_level = levels.groupby("level")["target_sparsity"].apply(set).to_dict()
    assert by_level == {1: {0.75}, 2: {0.5}, 3: {0.0}}
    assert levels.groupby("level")["level_low"].first().round(2).tolist() == [0.25, 0.49, 1.0]
    assert levels.groupby("level")["level_high"].first().round(2).tolist() == [0.27, 0.52, 1.0]
    # a tolerance too tight to hold 25% and 27% together splits them
    assert equal_macs_levels(loaded["families"], tolerance=0.01)["level"].nunique() > 2
    assert MACS_TOLERANCE == 0.15


def test_the_most_robust_method_per_level_and_whether_its_interval_clears_the_others(loaded):
    comparison = loaded["comparison"]
    half = comparison[comparison["level"] == 2].set_index("method")
    assert half.loc["haloc", "rank"] == 1 and bool(half.loc["haloc", "ahead"])
    assert half.loc["campfire", "label"] == "campfire/filter"  # campfire's best family there
    assert half.loc["haloc", "robust_low"] > half.loc["campfire", "robust_high"]
    quarter = comparison[comparison["level"] == 1].set_index("method")
    assert quarter.loc["campfire", "rank"] == 1 and not bool(quarter.loc["campfire", "ahead"])
    assert quarter.loc["campfire", "robust_low"] <= quarter.loc["haloc", "robust_high"]
    assert (comparison["n_methods"] == 2).all()
    top = comparison[comparison["level"] == 3]
    assert set(top["method"]) == {"dense", "dense-mixture"} and not top["ahead"].any()  # same accuracy by construction
    dense = loaded["families"].set_index("label").loc["dense", "robust_accuracy"]
    assert comparison["dense_robust_accuracy"].eq(dense).all()  # the plain dense model, not dense-mixture
    assert half.loc["haloc", "delta_vs_dense_pp"] == pytest.approx((half.loc["haloc", "robust_accuracy"] - dense) * 100)


def test_findings_name_the_leader_per_level_with_intervals_and_say_how(loaded):
    findings = summarize(loaded["results"], loaded["outcomes"], meta=loaded["meta"])
    levels = [f for f in findings if f.kind == "compression"]
    assert [f.numbers["best_method"] for f in levels][:2] == ["campfire", "haloc"]
    assert levels[2].numbers["methods"] in (["dense", "dense-mixture"], ["dense-mixture", "dense"])
    quarter, half = levels[:2]
    assert half.numbers["ahead"] and "haloc leads" in half.text and "49% to 52% of dense MACs" in half.text
    assert not quarter.numbers["ahead"] and "within the intervals of haloc" in quarter.text
    assert "[" in half.text and "dense:" in half.text
    how = [f for f in findings if f.kind == "compression_method"]
    assert len(how) == 1 and "equal compute" in how[0].text and "Wilson" in how[0].text


def test_no_compression_finding_with_a_single_method(shared_run: Path):
    findings = summarize(load_results(shared_run), load_outcomes(shared_run), meta=load_meta(shared_run))
    assert not [f for f in findings if f.kind.startswith("compression")]
    assert compression_findings(equal_macs_comparison(compression_families(pd.DataFrame())), "8/255") == []


def test_the_figure_puts_every_method_and_the_dense_reference_on_both_axes(loaded):
    fig = fig_compression_axis(loaded["results"], loaded["meta"], eps=EPS8, outcomes=loaded["outcomes"])
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert [ax.get_xlabel() for ax in axes] == ["effective MACs (% of dense)", "non-zero parameters (% of dense)"]
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"campfire", "haloc", "dense", "dense-mixture"} <= legend
    dense = loaded["families"].set_index("label").loc["dense", "robust_accuracy"] * 100
    for ax in axes:
        assert any(np.allclose(line.get_ydata(), dense) for line in ax.get_lines())  # the dashed dense line
        assert ax.get_xlim()[1] >= 100


def test_the_report_has_the_figure_and_both_tables(axis_run: Path, tmp_path: Path):
    index = build_report(axis_run, out_dir=tmp_path / "report")
    root = index.parent
    assert (root / "figures" / "compression_axis.png").is_file()
    equal = pd.read_csv(root / "tables" / "equal_macs.csv")
    assert set(equal["method"]) == {"campfire", "haloc", "dense", "dense-mixture"} and len(equal) == 6
    families = pd.read_csv(root / "tables" / "compression.csv")
    assert {"dense", "dense-mixture", "haloc/rank"} <= set(families["label"])
    page = index.read_text(encoding="utf-8")
    assert "Methods at equal MACs" in page and "haloc leads" in page


def test_a_lowrank_family_is_compared_by_its_macs_not_held_to_the_level_sparsity(tmp_path: Path) -> None:
    """A low-rank family (granularity `lowrank`, e.g. haloc) zeroes no weight: its achieved sparsity
    is 0, which must neither flag it as "unequal sparsity" nor pull its level's median down, and its
    MACs fraction is against the dense model's (its own dense_macs are its smaller network's)."""
    from reports.contract import LOWRANK_GRANULARITY
    from reports.method_summary import method_findings
    from reports.methods import method_comparison, method_families, method_pairs

    families = [("campfire", "filter"), ("campfire", "element"), ("haloc", LOWRANK_GRANULARITY)]
    costs = {(m, g if m == "campfire" else LOWRANK_GRANULARITY, s): v for (m, g, s), v in COSTS.items()}
    achieved = {(m, g, s): (0.0 if m == "haloc" else s + 0.001) for (m, g, s) in costs}
    run = make_run(
        tmp_path / "run",
        families=families,
        sparsities=(0.5, 0.75),
        seeds=(0,),
        costs=costs,
        achieved=achieved,
        cost_columns=True,
        robust_penalty=dict.fromkeys(costs, 0.05),
        clean_penalty=dict.fromkeys(costs, 0.01),
    )
    results, meta = load_results(run), load_meta(run)
    table = method_families(results, meta)
    haloc = table[table["granularity"] == LOWRANK_GRANULARITY].set_index("target_sparsity")
    assert haloc["matched"].all()
    assert haloc.loc[0.5, "macs_fraction"] == pytest.approx(0.49, abs=0.01)  # not its own network's 1.0
    assert haloc.loc[0.75, "macs_fraction"] == pytest.approx(0.26, abs=0.01)
    # the level's median is the masked families' (0.501), not pulled towards haloc's 0
    assert table["level_achieved"].to_numpy() == pytest.approx(np.where(table["target_sparsity"] == 0.5, 0.501, 0.751))
    outcomes = load_outcomes(run)
    comparison = method_comparison(results, outcomes, meta, eps=EPS8)
    pairs = method_pairs(results, outcomes, comparison, eps=EPS8)
    findings = method_findings(comparison, pairs, table, label_eps="8/255", tolerance=0.01)
    assert not [f for f in findings if f.kind == "methods_sparsity"]
    level = next(f for f in findings if f.kind == "methods" and f.numbers["target_sparsity"] == 0.5)
    assert "haloc/lowrank low-rank, no zeroed weights" in level.text and "achieved 50.1%" in level.text
