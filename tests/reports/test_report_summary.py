"""The first screen's sentences say what the numbers say.

Expected values are computed here straight from results.csv and outcomes.csv.gz with pandas and
scipy, not with the functions under test; the synthetic runs are built so the answers are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports import summarize
from reports.labels import format_p, format_points
from reports.load import load_meta, load_outcomes, load_results, load_sanity

from .conftest import ROBUST_PENALTY


def _expected(run: Path, granularity: str, target: float, key_prefix: str) -> tuple[float, float]:
    """Mean over seeds of sparse minus same-seed dense accuracy (points), and the pooled McNemar p."""
    raw = pd.read_csv(run / "results.csv")
    out = pd.read_csv(run / "outcomes.csv.gz")
    sparse = raw[(raw.granularity == granularity) & (raw.target_sparsity == target)]
    sparse = sparse[sparse.key.str.startswith(key_prefix)]
    dense = raw[(raw.method == "dense") & raw.key.str.startswith(key_prefix)].set_index("seed")
    deltas, b, c = [], 0, 0
    for row in sparse.itertuples():
        d = dense.loc[row.seed]
        deltas.append((row.accuracy - d.accuracy) * 100)
        s_out = out[(out.model_id == row.model_id) & (out.key == row.key)].set_index("example")["correct"]
        d_out = out[(out.model_id == d.model_id) & (out.key == row.key)].set_index("example")["correct"]
        d_out = d_out.reindex(s_out.index)
        b += int(((s_out == 1) & (d_out == 0)).sum())
        c += int(((s_out == 0) & (d_out == 1)).sum())
    p = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return float(np.mean(deltas)), float(p)


def _findings(run: Path, **kwargs):
    return summarize(load_results(run), load_outcomes(run), meta=load_meta(run), sanity=load_sanity(run), **kwargs)


def _by_sparsity(findings) -> dict[float, object]:
    return {f.numbers["target_sparsity"]: f for f in findings if f.kind == "sparsity"}


def test_window_loses_least_and_filter_most_at_70(shared_run: Path) -> None:
    f = _by_sparsity(_findings(shared_run, correction="none"))[0.7]
    assert f.numbers["best"] == "window" and f.numbers["worst"] == "filter"
    assert f.numbers["series"] == "PGD" and f.numbers["eps_label"] == "8/255"  # the strongest attack
    best_delta, best_p = _expected(shared_run, "window", 0.7, "pgd:eps=8/255")
    worst_delta, worst_p = _expected(shared_run, "filter", 0.7, "pgd:eps=8/255")
    assert f.numbers["best_delta_pp"] == pytest.approx(best_delta)
    assert f.numbers["worst_delta_pp"] == pytest.approx(worst_delta)
    assert f.numbers["best_p"] == pytest.approx(best_p) and f.numbers["worst_p"] == pytest.approx(worst_p)
    text = f.text
    assert text.startswith("At 70% sparsity under PGD at eps 8/255, window loses least robust accuracy")
    assert f"{format_points(best_delta)} vs dense ({format_p(best_p)}, not significant)" in text
    assert f"filter loses most: {format_points(worst_delta)} ({format_p(worst_p)}, significant)" in text
    assert best_p > 0.05 and worst_p < 0.001  # what the data were built to show


def test_the_answer_follows_the_data_not_the_names(run_factory) -> None:
    penalty = {("window", 0.5): 0.03, ("window", 0.7): 0.12, ("filter", 0.5): 0.0, ("filter", 0.7): 0.02}
    run = run_factory(robust_penalty=penalty, seeds=(0,))
    f = _by_sparsity(_findings(run, correction="none"))[0.7]
    assert (f.numbers["best"], f.numbers["worst"]) == ("filter", "window")
    delta, p = _expected(run, "window", 0.7, "pgd:eps=8/255")
    assert f"window loses most: {format_points(delta)} ({format_p(p)}, significant)" in f.text
    ranking = [g for g in _findings(run) if g.kind == "ranking"]
    assert len(ranking) == 1 and ranking[0].numbers["series"] == "FGSM"
    assert "is filter at every sparsity" in ranking[0].text


def test_a_gain_is_worded_as_a_gain(run_factory) -> None:
    penalty = {("window", 0.5): -0.05, ("window", 0.7): -0.04, ("filter", 0.5): 0.0, ("filter", 0.7): 0.02}
    run = run_factory(robust_penalty=penalty, seeds=(0,))
    f = _by_sparsity(_findings(run))[0.5]
    delta, _ = _expected(run, "window", 0.5, "pgd:eps=8/255")
    assert delta > 0
    assert f"window gains most robust accuracy: {format_points(delta)} vs dense" in f.text


def test_clean_accuracy_words_follow_the_sign(run_factory) -> None:
    # window gains clean accuracy at 70% (the CIFAR-10 case once worded "costs least"), filter loses it
    gain = {("window", 0.5): -0.02, ("window", 0.7): -0.06, ("filter", 0.5): 0.0, ("filter", 0.7): 0.05}
    cost = next(f for f in _findings(run_factory(clean_penalty=gain, seeds=(0,))) if f.kind == "clean_cost")
    at70 = cost.numbers["by_sparsity"][0.7]
    assert at70["least_delta_pp"] > 0 > at70["most_delta_pp"]
    assert f"window gains most ({format_points(at70['least_delta_pp'])}," in cost.text
    assert f"filter costs most ({format_points(at70['most_delta_pp'])}," in cost.text
    assert "window costs" not in cost.text
    # both gain: the smaller gain is a gain too, never a cost
    both = {("window", 0.5): -0.02, ("window", 0.7): -0.06, ("filter", 0.5): -0.01, ("filter", 0.7): -0.03}
    cost = next(f for f in _findings(run_factory(clean_penalty=both, seeds=(0,))) if f.kind == "clean_cost")
    assert "filter gains least (+" in cost.text and "costs" not in cost.text
    # both lose: "costs least" only for a loss
    loss = {("window", 0.5): 0.02, ("window", 0.7): 0.03, ("filter", 0.5): 0.01, ("filter", 0.7): 0.06}
    cost = next(f for f in _findings(run_factory(clean_penalty=loss, seeds=(0,))) if f.kind == "clean_cost")
    assert "window costs least (-" in cost.text and "filter costs most (-" in cost.text and "gains" not in cost.text


def test_holm_is_the_default_and_the_words_name_it(shared_run: Path) -> None:
    findings = _findings(shared_run)
    f = _by_sparsity(findings)[0.7]
    assert f.numbers["correction"] == "holm"
    assert f.numbers["best_p_adjusted"] >= f.numbers["best_p"]
    assert f.numbers["worst_p_adjusted"] >= f.numbers["worst_p"]
    assert f"(Holm-adjusted {format_p(f.numbers['best_p_adjusted'])}, not significant)" in f.text
    method = next(g for g in findings if g.kind == "method")
    assert "Holm-adjusted" in method.text and "no correction" not in method.text
    assert "exact 95% interval" in method.text and "Wilson" in method.text


def test_significance_follows_the_adjusted_p(run_factory) -> None:
    # a small robust-accuracy loss: significant alone, not after Holm over the setting's many tests
    penalty = {("window", 0.5): 0.0, ("window", 0.7): 0.0, ("filter", 0.5): 0.0, ("filter", 0.7): 0.016}
    run = run_factory(robust_penalty=penalty, clean_penalty=dict.fromkeys(penalty, 0.0), seeds=(0,), n_examples=1000)
    raw = _by_sparsity(_findings(run, correction="none"))[0.7]
    holm = _by_sparsity(_findings(run))[0.7]
    assert raw.numbers["worst"] == holm.numbers["worst"] == "filter"
    assert raw.numbers["worst_p"] < 0.05 <= holm.numbers["worst_p_adjusted"]
    assert "filter loses most" in raw.text and raw.text.endswith(", significant).")
    assert holm.text.endswith(", not significant).")


def test_benjamini_hochberg_is_a_setting(shared_run: Path) -> None:
    findings = _findings(shared_run, correction="bh")
    f = _by_sparsity(findings)[0.7]
    assert f.numbers["correction"] == "bh" and "BH-adjusted" in f.text
    method = next(g for g in findings if g.kind == "method")
    assert "Benjamini-Hochberg" in method.text


def test_chosen_eps_changes_the_sentences(shared_run: Path) -> None:
    f = _by_sparsity(_findings(shared_run, eps="4/255"))[0.7]
    assert "at eps 4/255" in f.text
    delta, _ = _expected(shared_run, "filter", 0.7, "pgd:eps=4/255")
    assert format_points(delta) in f.text


def test_clean_cost_and_dense_reference(shared_run: Path) -> None:
    findings = _findings(shared_run, correction="none")
    raw = pd.read_csv(shared_run / "results.csv")
    dense_clean = raw[(raw.method == "dense") & (raw.attack == "clean")]["accuracy"].mean()
    dense = next(f for f in findings if f.kind == "dense")
    assert dense.numbers["clean_accuracy"] == pytest.approx(dense_clean)
    assert f"{dense_clean * 100:.1f}% clean accuracy" in dense.text
    cost = next(f for f in findings if f.kind == "clean_cost")
    delta, p = _expected(shared_run, "filter", 0.7, "clean")
    at70 = cost.numbers["by_sparsity"][0.7]
    assert at70["most"] == "filter" and at70["most_delta_pp"] == pytest.approx(delta)
    assert f"filter costs most ({format_points(delta)}, {format_p(p)}, significant)" in cost.text


def test_dense_finding_gives_the_per_example_worst_case_over_every_attack(shared_run: Path) -> None:
    dense = next(f for f in _findings(shared_run) if f.kind == "dense")
    raw = pd.read_csv(shared_run / "results.csv")
    out = pd.read_csv(shared_run / "outcomes.csv.gz")
    at = raw[(raw.method == "dense") & np.isclose(raw.eps, dense.numbers["eps"]) & (raw.attack != "clean")]
    assert at["attack"].nunique() > 1  # several attacks at the headline eps, or the worst case is trivial
    per_example = out.merge(at[["model_id", "key"]]).groupby(["model_id", "example"])["correct"].min()
    expected = per_example.groupby("model_id").mean().mean()
    assert dense.numbers["worst_case_accuracy"] == pytest.approx(expected)
    assert expected <= dense.numbers["robust_accuracy"] + 1e-12
    assert f"{expected * 100:.1f}% against every attack at that eps, counted per example" in dense.text


def test_overview_sanity_and_precision(run_factory) -> None:
    run = run_factory(failing_check=True, seeds=(0,))
    findings = _findings(run)
    assert findings[0].kind == "sanity"  # a failed check is read first
    overview = findings[1]
    assert overview.kind == "overview"
    assert overview.numbers["n_dense"] == 1 and overview.numbers["n_sparse"] == 4
    assert "1 dense and 4 sparse" in overview.text
    sanity = next(f for f in findings if f.kind == "sanity")
    assert sanity.numbers["n_failed"] == 1
    assert sanity.text.startswith("1 of 11 sanity checks failed (gradient_masking on filter-70-s0)")
    precision = next(f for f in findings if f.kind == "precision")
    low, high = stats.binomtest(150, 300).proportion_ci(method="wilson")
    assert f"±{(high - low) * 50:.1f} points" in precision.text


def test_checks_that_did_not_run_are_never_counted_as_passed(run_factory) -> None:
    run = run_factory(not_run_check=True, seeds=(0,))
    sanity = next(f for f in _findings(run) if f.kind == "sanity")
    # 5 models x (2 passed + 1 not run)
    assert sanity.numbers == {
        "n_checks": 15,
        "n_passed": 10,
        "n_failed": 0,
        "n_not_run": 5,
        "failed": [],
        "not_run": ["eps0_equals_clean"],
    }
    assert "All" not in sanity.text
    assert sanity.text.startswith("10 of 15 sanity checks passed; 5 of 15 could not run")


def test_all_passed_only_when_every_check_ran_and_passed(run_factory) -> None:
    sanity = next(f for f in _findings(run_factory(seeds=(0,))) if f.kind == "sanity")
    assert sanity.text == "All 10 sanity checks passed."


def test_one_granularity_is_described_without_a_ranking(run_factory) -> None:
    run = run_factory(granularities=("filter",), seeds=(0,))
    findings = _findings(run, correction="none")
    f = _by_sparsity(findings)[0.7]
    delta, p = _expected(run, "filter", 0.7, "pgd:eps=8/255")
    assert f"filter changes robust accuracy by {format_points(delta)} vs dense ({format_p(p)}, significant)" in f.text
    assert not [g for g in findings if g.kind == "ranking"]


def test_without_outcomes_there_is_no_paired_test(shared_run: Path) -> None:
    findings = summarize(load_results(shared_run))
    f = _by_sparsity(findings)[0.7]
    assert np.isnan(f.numbers["best_p"]) and "no paired test" in f.text


def test_the_dense_worst_case_is_the_dense_models_not_a_mean_with_dense_variants(run_factory):
    """A dense variant (here with mixture normalisation, far less robust) must not pull the dense model's number down."""
    plain = run_factory(seeds=(0,))
    mixed = run_factory(
        seeds=(0,),
        extra_dense=("dense-mixture",),
        robust_penalty={**ROBUST_PENALTY, ("dense-mixture", "dense", 0.0): 0.2},
    )
    said = [next(f for f in _findings(run) if f.kind == "dense") for run in (plain, mixed)]
    assert said[0].numbers["worst_case_accuracy"] == said[1].numbers["worst_case_accuracy"]
    assert said[0].text == said[1].text
