"""The notebook helpers of the public reports API: which pair and level they pick, and what they say otherwise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from reports import choose_pair, choose_sparsity, fig_layer_sparsity, load_outcomes, load_results, show


def test_default_pair_is_dense_against_sparse_on_the_attack_that_hurts_dense_most(shared_run: Path) -> None:
    results = load_results(shared_run)
    one_seed = results[results["seed"] == 0]
    choice = choose_pair(one_seed, load_outcomes(shared_run), eps=8 / 255)
    assert choice.reason == ""
    assert (choice.model_a, choice.model_b) == ("dense-s0", "window-50-s0")
    at_eps = one_seed[(one_seed["model_id"] == "dense-s0") & (one_seed["eps"].round(9) == round(8 / 255, 9))]
    assert choice.key == at_eps.sort_values(["accuracy", "key"])["key"].iloc[0]
    assert choice.key.startswith("pgd:eps=8/255")  # PGD is the stronger attack in the synthetic run


def test_explicit_choices_are_kept(shared_run: Path) -> None:
    choice = choose_pair(
        load_results(shared_run), load_outcomes(shared_run), model_a="filter-70-s1", model_b="dense-s1", key="clean"
    )
    assert (choice.model_a, choice.model_b, choice.key, choice.reason) == ("filter-70-s1", "dense-s1", "clean", "")


def test_no_pair_says_why(shared_run: Path) -> None:
    results = load_results(shared_run)
    assert "no outcomes.csv.gz" in choose_pair(results, None).reason
    alone = results[results["model_id"] == "dense-s0"]
    choice = choose_pair(alone, load_outcomes(shared_run))
    assert choice.model_b is None and "only one model (dense-s0)" in choice.reason


def test_sparsity_level_defaults_to_the_most_shared_and_refuses_an_untrained_one(run_factory) -> None:
    results = load_results(run_factory(granularities=("window", "filter"), sparsities=(0.5, 0.7), seeds=(0,)))
    assert choose_sparsity(results) == 0.7  # both levels have both granularities: the higher wins
    uneven = results[~((results["granularity"] == "filter") & (results["target_sparsity"] == 0.7))]
    assert choose_sparsity(uneven) == 0.5
    assert choose_sparsity(results, 0.5) == 0.5
    with pytest.raises(ValueError, match="0.9 was not trained"):
        choose_sparsity(results, 0.9)
    assert choose_sparsity(results[results["method"] == "dense"]) is None


def test_show_returns_none_and_logs_when_there_is_nothing_to_draw(caplog) -> None:
    empty = pd.DataFrame(columns=["model_id", "layer_index", "name", "sparsity"])
    models = pd.DataFrame({"model_id": ["d"], "method": ["dense"], "granularity": ["dense"], "target_sparsity": [0.0]})
    assert show(fig_layer_sparsity, empty, models) is None
    assert "nothing to draw" in caplog.text
