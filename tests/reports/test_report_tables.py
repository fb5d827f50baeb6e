"""Tables: deltas vs dense (matching, McNemar counts), seed aggregation, robust accuracy, metadata, paired 2x2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.errors import ReportError
from reports.load import load_meta, load_outcomes, load_results, load_sanity
from reports.tables import (
    aggregate_accuracy,
    check_outcomes,
    dense_matches,
    grid_deltas,
    metadata_table,
    model_deltas,
    paired_outcomes,
    paired_table,
    paired_test,
    robust_vs_clean,
    sanity_table,
)


@pytest.fixture(scope="module")
def frames(shared_run: Path) -> dict[str, pd.DataFrame]:
    return {
        "results": load_results(shared_run),
        "outcomes": load_outcomes(shared_run),
        "meta": load_meta(shared_run),
        "raw": pd.read_csv(shared_run / "results.csv"),
    }


def test_model_deltas_match_an_independent_computation(frames: dict) -> None:
    raw, out = frames["raw"], frames["outcomes"]
    deltas = model_deltas(frames["results"], out, frames["meta"])
    row = deltas[(deltas["model_id"] == "filter-70-s1") & deltas["key"].str.startswith("pgd:eps=8/255")].iloc[0]
    key = row["key"]
    acc = raw.set_index(["model_id", "key"])["accuracy"]
    assert row["dense_model_id"] == "dense-s1"
    assert row["delta_pp"] == pytest.approx((acc["filter-70-s1", key] - acc["dense-s1", key]) * 100)
    s = out[(out.model_id == "filter-70-s1") & (out.key == key)].set_index("example")["correct"]
    d = out[(out.model_id == "dense-s1") & (out.key == key)].set_index("example")["correct"].reindex(s.index)
    assert row["sparse_only"] == ((s == 1) & (d == 0)).sum()
    assert row["dense_only"] == ((s == 0) & (d == 1)).sum()
    # discordant counts and the accuracy change must tell the same story
    assert (row["sparse_only"] - row["dense_only"]) / row["n_paired"] * 100 == pytest.approx(row["delta_pp"])
    assert len(deltas) == (raw["method"] != "dense").sum()


def test_dense_match_prefers_parent_then_seed_then_mean(synthetic_run: Path) -> None:
    meta_path = synthetic_run / "models" / "window-50-s1" / "meta.json"
    data = json.loads(meta_path.read_text())
    data["parent"] = "dense-s0"  # a from-parent model whose parent has another seed
    meta_path.write_text(json.dumps(data))
    results, meta = load_results(synthetic_run), load_meta(synthetic_run)
    matches = dense_matches(results, meta).set_index("model_id")
    assert matches.loc["window-50-s1", "dense_model_id"] == "dense-s0"
    assert matches.loc["window-50-s1", "match"] == "parent"
    no_meta = dense_matches(results).set_index("model_id")
    assert tuple(no_meta.loc["window-50-s1", ["dense_model_id", "match"]]) == ("dense-s1", "seed")
    # a seed with no dense model of its own falls back to the dense mean, with no paired test
    lonely = results[results["model_id"] != "dense-s1"]
    deltas = model_deltas(lonely, load_outcomes(synthetic_run))
    rows = deltas[deltas["seed"] == 1]
    assert (rows["match"] == "mean").all() and rows["p_value"].isna().all()
    clean = lonely[(lonely["attack"] == "clean")].set_index("model_id")["accuracy"]
    row = rows[(rows["model_id"] == "filter-70-s1") & (rows["key"] == "clean")].iloc[0]
    assert row["delta_pp"] == pytest.approx((clean["filter-70-s1"] - clean["dense-s0"]) * 100)


def test_grid_pools_seeds(frames: dict) -> None:
    deltas = model_deltas(frames["results"], frames["outcomes"], frames["meta"])
    grid = grid_deltas(deltas)
    cell = grid[
        (grid["label"] == "filter")
        & (grid["target_sparsity"] == 0.7)
        & (grid["series"] == "PGD")
        & np.isclose(grid["eps_key"], 8 / 255)
    ].iloc[0]
    models = deltas[
        (deltas["granularity"] == "filter")
        & (deltas["target_sparsity"] == 0.7)
        & deltas["key"].str.startswith("pgd:eps=8/255")
    ]
    assert cell["n_seeds"] == 2
    assert cell["delta_pp"] == pytest.approx(models["delta_pp"].mean())
    assert cell["dense_only"] == models["dense_only"].sum()
    assert cell["p_value"] < 1e-3
    window = grid[(grid["label"] == "window") & (grid["target_sparsity"] == 0.7) & grid["is_clean"]].iloc[0]
    assert window["p_value"] > 0.05


def test_aggregate_band_covers_the_mean(frames: dict) -> None:
    agg = aggregate_accuracy(frames["results"])
    assert (agg["band_low"] <= agg["accuracy"] + 1e-12).all() and (agg["accuracy"] <= agg["band_high"] + 1e-12).all()
    dense_clean = agg[agg["is_dense"] & agg["is_clean"]]
    assert len(dense_clean) == 1 and dense_clean["n_seeds"].iloc[0] == 2
    # one row per family x attack config x eps: 1 dense + 4 sparse families, 1 clean + 2 attacks x 3 eps
    assert len(agg) == 5 * 7


def test_robust_vs_clean_takes_the_strongest_attack(frames: dict) -> None:
    table = robust_vs_clean(frames["results"], frames["meta"], eps=8 / 255)
    raw = frames["raw"]
    at = raw[np.isclose(raw["eps"], 8 / 255)].groupby("model_id")["accuracy"].min()
    assert np.allclose(table.set_index("model_id")["robust_accuracy"].reindex(at.index), at)
    assert (table["worst_attack"] == "PGD").all()
    assert (table.loc[table["is_dense"], "compression"] == 1.0).all()
    by_id = table.set_index("model_id")
    assert not by_id.loc["filter-70-s0", "front_clean_robust"]  # worse than window-70 on both axes
    assert by_id.loc["window-70-s0", "front_compression_robust"]  # most compressed and most robust at 70%


def _keys_at(raw: pd.DataFrame, model_id: str, eps: float) -> list[str]:
    rows = raw[(raw["model_id"] == model_id) & np.isclose(raw["eps"], eps) & (raw["attack"] != "clean")]
    return sorted(rows["key"])


def test_robust_vs_clean_counts_an_example_robust_only_if_every_attack_failed(frames: dict) -> None:
    # FGSM fools the last 165 examples, PGD the first 210 (the run's accuracies, 0.45 and 0.30):
    # together they fool all 300, so the per-example worst case is 0 where the best single attack leaves 0.30.
    raw, outcomes = frames["raw"], frames["outcomes"].copy()
    fgsm, pgd = _keys_at(raw, "dense-s0", 8 / 255)
    assert fgsm.startswith("fgsm") and pgd.startswith("pgd")
    for key, fooled in ((fgsm, lambda e: e >= 135), (pgd, lambda e: e < 210)):
        rows = (outcomes["model_id"] == "dense-s0") & (outcomes["key"] == key)
        outcomes.loc[rows, "correct"] = (~fooled(outcomes.loc[rows, "example"])).astype("int8")
    table = robust_vs_clean(frames["results"], frames["meta"], eps=8 / 255, outcomes=outcomes).set_index("model_id")
    row = table.loc["dense-s0"]
    assert row["worst_attack"] == "PGD" and row["worst_attack_accuracy"] == pytest.approx(0.30)
    assert row["robust_accuracy"] == 0.0 and row["robust_basis"] == "per example"


def test_robust_vs_clean_per_example_matches_an_independent_computation(frames: dict) -> None:
    raw, outcomes = frames["raw"], frames["outcomes"]
    table = robust_vs_clean(frames["results"], frames["meta"], eps=4 / 255, outcomes=outcomes).set_index("model_id")
    assert (table["robust_basis"] == "per example").all()
    for model_id in table.index:
        keys = _keys_at(raw, model_id, 4 / 255)
        sub = outcomes[(outcomes["model_id"] == model_id) & outcomes["key"].isin(keys)]
        expected = sub.groupby("example")["correct"].min().mean()
        assert table.loc[model_id, "robust_accuracy"] == pytest.approx(expected)
        assert table.loc[model_id, "robust_accuracy"] <= table.loc[model_id, "worst_attack_accuracy"] + 1e-12


def test_robust_vs_clean_falls_back_to_the_strongest_attack_without_every_outcome(frames: dict) -> None:
    raw, outcomes = frames["raw"], frames["outcomes"]
    _, pgd = _keys_at(raw, "dense-s0", 8 / 255)
    partial = outcomes[~((outcomes["model_id"] == "dense-s0") & (outcomes["key"] == pgd))]
    table = robust_vs_clean(frames["results"], frames["meta"], eps=8 / 255, outcomes=partial).set_index("model_id")
    assert table.loc["dense-s0", "robust_basis"] == "min over attacks"
    assert table.loc["dense-s0", "robust_accuracy"] == table.loc["dense-s0", "worst_attack_accuracy"]
    assert (table.drop(index="dense-s0")["robust_basis"] == "per example").all()


def test_check_outcomes_finds_disagreement(synthetic_run: Path) -> None:
    results, outcomes = load_results(synthetic_run), load_outcomes(synthetic_run)
    assert check_outcomes(results, outcomes) == []
    tampered = outcomes.copy()
    first = (tampered.model_id == "dense-s0") & (tampered.key == "clean") & (tampered.example == 0)
    tampered.loc[first, "correct"] ^= 1
    notes = check_outcomes(results, tampered)
    assert len(notes) == 1 and "dense-s0" in notes[0]


def test_sanity_table_lists_failures_first_then_checks_not_run(run_factory) -> None:
    run = run_factory(failing_check=True, not_run_check=True, seeds=(0,))
    status = list(sanity_table(load_sanity(run))["status"])
    first_passed = status.index("passed")
    assert status[0] == "failed"
    assert set(status[1:first_passed]) == {"not_run"} and set(status[first_passed:]) == {"passed"}


def test_metadata_table_names_seeds_versions_and_examples(frames: dict) -> None:
    table = metadata_table(frames["results"], frames["meta"], {"name": "synthetic", "data": {"dataset": "digits"}})
    items = dict(zip(table["item"], table["value"]))
    assert items["seeds"] == "0, 1"
    assert items["examples per evaluation"] == "300"
    assert "torch 2.14.1" in items["versions"]
    assert items["models"] == "10 (2 dense, 8 sparse)"
    assert "PGD: 2/255, 4/255, 8/255" in items["attacks (eps)"]


# ---------------------------------------------------------------- two models side by side


# model a and b under "pgd": a alone is right on examples 0-4, both on 5, neither on 6-7;
# b also has example 8 (a does not), and "clean" and model c are noise the pairing must ignore
PAIRED_A = [1, 1, 1, 1, 1, 1, 0, 0]
PAIRED_B = [0, 0, 0, 0, 0, 1, 0, 0]


@pytest.fixture
def paired() -> pd.DataFrame:
    def rows(model: str, key: str, correct: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"model_id": model, "key": key, "example": range(len(correct)), "correct": correct})

    return pd.concat(
        [
            rows("a", "pgd", PAIRED_A),
            rows("b", "pgd", [*PAIRED_B, 1]),
            rows("a", "clean", [1] * 8),
            rows("b", "clean", [0] * 8),
            rows("c", "pgd", [1] * 8),
            rows("c", "fgsm", [1] * 8),
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=0)  # the order of the rows must not matter


def test_paired_outcomes_lines_up_the_shared_examples(paired: pd.DataFrame) -> None:
    pair = paired_outcomes(paired, "a", "b", "pgd")
    assert list(pair.columns) == ["a", "b"]
    assert list(pair.index) == list(range(8))  # example 8 only b has: left out
    assert pair["a"].tolist() == PAIRED_A and pair["b"].tolist() == PAIRED_B


def test_paired_table_counts_by_hand(paired: pd.DataFrame) -> None:
    table = paired_table(paired, "a", "b", "pgd")
    assert table.index.name == "a (A)" and table.columns.name == "b (B)"
    assert table.loc["right"].tolist() == [1, 5]  # both right; only a right
    assert table.loc["wrong"].tolist() == [0, 2]  # only b right; both wrong
    # swapping the models transposes the table
    swapped = paired_table(paired, "b", "a", "pgd")
    assert (swapped.to_numpy() == table.to_numpy().T).all()
    # a row or column with no example is still there, with zeros
    clean = paired_table(paired, "a", "b", "clean")
    assert clean.loc["right"].tolist() == [0, 8] and clean.loc["wrong"].tolist() == [0, 0]


def test_paired_test_by_hand(paired: pd.DataFrame) -> None:
    test = paired_test(paired_table(paired, "a", "b", "pgd"))
    assert (test["n_examples"], test["only_a"], test["only_b"]) == (8, 5, 0)
    assert test["accuracy_a"] == pytest.approx(6 / 8) and test["accuracy_b"] == pytest.approx(1 / 8)
    assert test["p_value"] == pytest.approx(2 * 0.5**5)  # 5 of 5 discordant examples go to a, two-sided
    assert paired_test(paired_table(paired, "b", "a", "pgd"))["p_value"] == pytest.approx(test["p_value"])


def test_paired_test_agrees_with_model_deltas(frames: dict) -> None:
    deltas = model_deltas(frames["results"], frames["outcomes"], frames["meta"])
    row = deltas[(deltas["model_id"] == "filter-70-s1") & deltas["key"].str.startswith("pgd:eps=8/255")].iloc[0]
    test = paired_test(paired_table(frames["outcomes"], row["model_id"], row["dense_model_id"], row["key"]))
    counts = (test["only_a"], test["only_b"], test["n_examples"])
    assert counts == (row["sparse_only"], row["dense_only"], row["n_paired"])
    assert test["p_value"] == pytest.approx(row["p_value"])
    assert (test["accuracy_a"] - test["accuracy_b"]) * 100 == pytest.approx(row["delta_pp"])


def test_pairing_refuses_what_cannot_be_paired(paired: pd.DataFrame) -> None:
    with pytest.raises(ReportError, match="itself"):
        paired_table(paired, "a", "a", "pgd")
    with pytest.raises(ReportError) as info:
        paired_table(paired, "a", "c", "clean")  # c was never evaluated clean
    assert "['c']" in str(info.value) and "['pgd']" in str(info.value)  # names the key both share
    with pytest.raises(ReportError, match="repeat"):
        paired_outcomes(pd.concat([paired, paired]), "a", "b", "pgd")
    with pytest.raises(ReportError, match="2x2"):
        paired_test(pd.DataFrame([[1, 2]], index=["right"], columns=["right", "wrong"]))
