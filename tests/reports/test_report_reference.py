"""Which dense model a sparse model is compared with, and failed models kept apart.

A synthetic run gets a dense control per seed (method `dense-continued`, accuracy set apart from
the plain dense model's, so a delta against the wrong model cannot pass)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import build_report, load_meta, load_outcomes, load_results
from reports.tables import dense_matches, failed_models, model_deltas

CONTROL_SHIFT = 0.1  # the control gets 10 points less of everything than the plain dense model


def _add_controls(run: Path, *, reference: bool) -> None:
    """Copy each dense model as `dense-continued-s<seed>` with lower accuracy; name it as reference."""
    results = pd.read_csv(run / "results.csv")
    outcomes = pd.read_csv(run / "outcomes.csv.gz")
    dense = results[results["method"] == "dense"].copy()
    dense["model_id"] = dense["model_id"].str.replace("dense-", "dense-continued-", regex=False)
    dense["method"] = "dense-continued"
    n = dense["n_examples"]
    dense["n_correct"] = (dense["n_correct"] - (CONTROL_SHIFT * n).round()).astype(int)
    dense["accuracy"] = dense["n_correct"] / n
    control_outcomes = []
    for row in dense.itertuples(index=False):
        correct = np.zeros(int(row.n_examples), dtype=int)
        correct[: int(row.n_correct)] = 1
        control_outcomes.append(
            pd.DataFrame(
                {"model_id": row.model_id, "key": row.key, "example": np.arange(len(correct)), "correct": correct}
            )
        )
    pd.concat([results, dense]).to_csv(run / "results.csv", index=False)
    pd.concat([outcomes, *control_outcomes]).to_csv(run / "outcomes.csv.gz", index=False)
    for folder in (run / "models").iterdir():
        meta = json.loads((folder / "meta.json").read_text())
        if meta["method"] == "dense":
            control = {**meta, "model_id": meta["model_id"].replace("dense-", "dense-continued-")}
            control.update(method="dense-continued", parent=meta["model_id"])
            (run / "models" / control["model_id"]).mkdir()
            (run / "models" / control["model_id"] / "meta.json").write_text(json.dumps(control))
        elif reference:
            meta["reference_model_id"] = f"dense-continued-s{meta['seed']}"
            (folder / "meta.json").write_text(json.dumps(meta))


def test_deltas_use_the_reference_named_in_meta(run_factory) -> None:
    run = run_factory()
    _add_controls(run, reference=True)
    results, outcomes, meta = load_results(run), load_outcomes(run), load_meta(run)
    matches = dense_matches(results, meta)
    assert (matches["match"] == "reference").all()
    assert (matches["dense_model_id"] == "dense-continued-s" + matches["model_id"].str[-1]).all()
    deltas = model_deltas(results, outcomes, meta)
    by_model = results.set_index(["model_id", "key"])["accuracy"]
    expected = [by_model[(ref, key)] for ref, key in zip(deltas["dense_model_id"], deltas["key"])]
    assert deltas["dense_accuracy"].to_numpy() == pytest.approx(expected)
    assert deltas["n_paired"].notna().all()  # McNemar on the control's outcomes


def test_a_meta_json_without_reference_pairs_with_the_control_of_its_parent(run_factory) -> None:
    run = run_factory()
    _add_controls(run, reference=False)  # models written before reference_model_id existed
    matches = dense_matches(load_results(run), load_meta(run))
    assert (matches["match"] == "reference").all()
    assert (matches["dense_model_id"] == "dense-continued-s" + matches["model_id"].str[-1]).all()


def test_from_scratch_models_keep_the_plain_dense_model_as_reference(run_factory) -> None:
    run = run_factory()
    _add_controls(run, reference=False)
    for folder in (run / "models").iterdir():  # sparse models trained from scratch: no parent
        meta = json.loads((folder / "meta.json").read_text())
        if meta["method"] == "campfire":
            (folder / "meta.json").write_text(json.dumps({**meta, "parent": None}))
    results, meta = load_results(run), load_meta(run)
    matches = dense_matches(results, meta)
    assert set(matches["match"]) == {"seed"}
    assert not matches["dense_model_id"].str.contains("continued").any()
    assert set(dense_matches(results, None)["dense_model_id"]) == {"dense-s0", "dense-s1"}  # no meta: same seed


def test_the_control_is_drawn_and_named_apart_from_the_dense_model(run_factory) -> None:
    run = run_factory()
    _add_controls(run, reference=True)
    build_report(run)
    markdown = (run / "report" / "report.md").read_text()
    assert "dense-continued" in markdown


def test_failed_models_are_listed_apart_and_never_as_results(run_factory) -> None:
    run = run_factory()
    folder = run / "models" / "filter-90-s0"
    folder.mkdir()
    failure = "training diverged at step 40: non-finite training loss (nan)"
    meta = dict(model_id="filter-90-s0", method="campfire", granularity="filter", target_sparsity=0.9, seed=0)
    (folder / "meta.json").write_text(json.dumps({**meta, "status": "failed", "failure": failure}))
    failed = failed_models(load_meta(run))
    assert list(failed["model_id"]) == ["filter-90-s0"] and list(failed["failure"]) == [failure]
    build_report(run)
    markdown = (run / "report" / "report.md").read_text()
    assert f"1 model(s) failed to train and have no results: filter-90-s0 ({failure})" in markdown
    assert markdown.count("filter-90-s0") == 1  # in that note only: no table row, no result
