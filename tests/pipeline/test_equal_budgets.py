"""Equal training budgets: sparse models fine-tuned from a dense parent are
compared with the dense model continued for the same epochs, never with their parent."""

from __future__ import annotations

import json

import pytest

from reports import load_meta, load_outcomes, load_results
from reports.summary import summarize
from reports.tables import model_deltas
from robustsparse.config import config_from_dict
from robustsparse.train.jobs import CONTINUED_METHOD, experiment_jobs


def _meta(run_dir, model_id: str) -> dict:
    return json.loads((run_dir / "models" / model_id / "meta.json").read_text())


def test_from_dense_grid_trains_the_continued_control_with_the_same_budget(tiny_run):
    dense, control = _meta(tiny_run, "dense-s0"), _meta(tiny_run, "dense-continued-s0")
    assert control["method"] == CONTINUED_METHOD and control["granularity"] == "dense"
    assert control["parent"] == "dense-s0" and control["target_sparsity"] == 0.0
    assert dense["total_epochs"] == dense["epochs"] == 2
    assert control["total_epochs"] == 4  # the parent's 2 + its own 2
    for model_id in ("campfire-element-50-s0", "campfire-filter-50-s0"):
        sparse = _meta(tiny_run, model_id)
        assert sparse["parent"] == "dense-s0"
        assert sparse["total_epochs"] == control["total_epochs"]  # like with like
        assert sparse["reference_model_id"] == "dense-continued-s0"
    # continuing changed the weights: the control is a model of its own, not a copy of its parent
    assert control["config_digest"] != dense["config_digest"]


def test_deltas_and_mcnemar_of_a_from_dense_grid_use_the_control(tiny_run):
    results, outcomes, meta = load_results(tiny_run), load_outcomes(tiny_run), load_meta(tiny_run)
    deltas = model_deltas(results, outcomes, meta)
    assert set(deltas["model_id"]) == {"campfire-element-50-s0", "campfire-filter-50-s0"}  # controls are not deltas
    assert set(deltas["dense_model_id"]) == {"dense-continued-s0"}
    assert set(deltas["match"]) == {"reference"}
    control = results[results["model_id"] == "dense-continued-s0"].set_index("key")["accuracy"]
    expected = (deltas["accuracy"] - deltas["key"].map(control)) * 100
    assert deltas["delta_pp"].to_numpy() == pytest.approx(expected.to_numpy())
    # McNemar's discordant pairs come from the control's outcomes, example by example
    row = deltas[(deltas["model_id"] == "campfire-filter-50-s0") & (deltas["key"] == "clean")].iloc[0]
    both = outcomes[outcomes["key"] == "clean"].pivot(index="example", columns="model_id", values="correct")
    sparse, ref = both["campfire-filter-50-s0"], both["dense-continued-s0"]
    assert row["sparse_only"] == ((sparse == 1) & (ref == 0)).sum()
    assert row["dense_only"] == ((sparse == 0) & (ref == 1)).sum()
    # the findings speak about the same numbers
    findings = summarize(results, outcomes, meta=meta)
    clean_cost = next(f for f in findings if f.kind == "clean_cost")
    assert clean_cost.numbers["dense_clean_accuracy"] == pytest.approx(control["clean"])


def test_report_states_total_epochs(tiny_run):
    markdown = (tiny_run / "report" / "report.md").read_text()
    assert "total epochs" in markdown and "4 (3 models)" in markdown


def test_from_scratch_grid_has_no_control_and_keeps_the_dense_model_as_reference(tiny_run_settings):
    tiny_run_settings["sparsity"]["from_dense"] = False
    jobs = experiment_jobs(config_from_dict(tiny_run_settings))
    assert [job.model_id for job in jobs if job.sparsity is None] == ["dense-s0"]
    assert {job.reference_id for job in jobs if job.sparsity is not None} == {"dense-s0"}
    assert all(job.parent_id is None for job in jobs)


def test_a_grid_mixing_from_dense_and_from_scratch_gives_each_its_own_reference(tiny_run_settings):
    tiny_run_settings["sparsity"]["from_dense"] = [True, False]
    jobs = {job.model_id: job for job in experiment_jobs(config_from_dict(tiny_run_settings))}
    assert "dense-continued-s0" in jobs
    references = {job.parent_id: job.reference_id for job in jobs.values() if job.sparsity is not None}
    assert references == {"dense-s0": "dense-continued-s0", None: "dense-s0"}
