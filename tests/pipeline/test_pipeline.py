"""The pipeline end to end on a tiny grid: outputs, resume without recomputation, config guard."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

import robustsparse.pipeline.evaluation as evaluation_module
import robustsparse.pipeline.training as training_module
from reports.contract import MODEL_COST_COLUMNS, OUTCOMES, RESULTS
from robustsparse.config import load_config
from robustsparse.errors import ConfigError
from robustsparse.pipeline import read_run_config, run_experiment

CPU = torch.device("cpu")


def test_run_writes_models_results_outcomes_and_report(tiny_run):
    models = {p.name for p in (tiny_run / "models").iterdir()}
    # sparse models fine-tuned from dense-s0 come with their dense control, continued for the same epochs
    assert models == {"dense-s0", "dense-continued-s0", "campfire-element-50-s0", "campfire-filter-50-s0"}
    results = pd.read_csv(tiny_run / "results.csv")
    assert list(results.columns) == RESULTS.names
    assert len(results) == 4 * 4  # clean + 2 fgsm + 1 pgd per model
    assert not results.duplicated(["model_id", "key"]).any()
    dense = results[results["model_id"] == "dense-s0"]
    assert set(dense["granularity"]) == {"dense"} and set(dense["target_sparsity"]) == {0.0}
    # every row carries its model's cost from meta.json: the common compression axis of the report
    for model_id, group in results.groupby("model_id"):
        meta = json.loads((tiny_run / "models" / model_id / "meta.json").read_text())
        for column in MODEL_COST_COLUMNS:
            assert set(group[column]) == {meta[column]}, (model_id, column)
    filtered = results.set_index("model_id").loc["campfire-filter-50-s0"].iloc[0]
    assert filtered["effective_macs"] < filtered["dense_macs"] == dense["dense_macs"].iloc[0]
    for _, group in results.groupby("model_id"):
        clean = group.loc[group["attack"] == "clean", "accuracy"].item()
        assert (group["accuracy"] <= clean + 1e-12).all()  # robust never above clean
    outcomes = pd.read_csv(tiny_run / "outcomes.csv.gz")
    assert list(outcomes.columns) == OUTCOMES.names
    per_key = outcomes.groupby(["model_id", "key"])["correct"].sum()
    merged = results.set_index(["model_id", "key"])["n_correct"]
    assert (per_key.reindex(merged.index) == merged).all()  # outcomes agree with the counts
    sanity = pd.read_csv(tiny_run / "sanity.csv")
    assert set(sanity["model_id"]) == models
    # white-box vs transfer: PGD crafted on each model's parent (its twin) and scored on the model;
    # the dense model trained from scratch has no twin in the run
    twin = sanity[sanity["check"] == "whitebox_not_weaker_than_transfer"].set_index("model_id")
    assert twin.loc["dense-s0", "status"] == "not_run"
    for child in models - {"dense-s0"}:
        assert twin.loc[child, "status"] in {"passed", "failed"}, twin.loc[child, "evidence"]
        assert "1 attack(s)" in twin.loc[child, "evidence"] or "transferred" in twin.loc[child, "evidence"]
    assert (tiny_run / "report" / "index.html").is_file() and (tiny_run / "report" / "report.md").is_file()


def test_started_again_recomputes_nothing_and_keeps_identical_results(tiny_run, tmp_path, monkeypatch):
    run_dir = tmp_path / "copy"
    shutil.copytree(tiny_run, run_dir)
    before = {name: (run_dir / name).read_bytes() for name in ("results.csv", "outcomes.csv.gz", "sanity.csv")}
    cfg = read_run_config(run_dir)

    def no_attacks(*args, **kwargs):
        raise AssertionError("an evaluation was recomputed")

    def no_training(*args, **kwargs):
        raise AssertionError("a model was retrained")

    monkeypatch.setattr(evaluation_module, "evaluate", no_attacks)
    monkeypatch.setattr(training_module, "train_job", no_training)
    summary = run_experiment(cfg, run_dir, device=CPU, progress=False)
    assert summary.n_trained == 0 and summary.n_evaluated == 0
    for name, data in before.items():
        assert (run_dir / name).read_bytes() == data


def test_interrupted_attack_sweep_resumes_to_identical_results(tmp_path, tiny_config_file, monkeypatch):
    cfg = load_config(tiny_config_file)
    run_experiment(cfg, tmp_path / "straight", device=CPU, progress=False, report=False)

    real = evaluation_module.evaluate
    calls = {"n": 0}

    def dies_on_second_model(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation_module, "evaluate", dies_on_second_model)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, tmp_path / "resumed", device=CPU, progress=False, report=False)
    monkeypatch.setattr(evaluation_module, "evaluate", real)
    resumed = run_experiment(cfg, tmp_path / "resumed", device=CPU, progress=False, report=False)
    assert resumed.n_trained == 0  # the models were all finished before the sweep died
    assert resumed.n_evaluated == 3 * 4  # only the three models not yet attacked
    for name in ("results.csv", "outcomes.csv.gz", "sanity.csv"):
        a = pd.read_csv(tmp_path / "resumed" / name)
        b = pd.read_csv(tmp_path / "straight" / name)
        pd.testing.assert_frame_equal(
            a.drop(columns="elapsed_s", errors="ignore"), b.drop(columns="elapsed_s", errors="ignore")
        )


def test_changed_config_in_the_same_folder_is_refused_unless_restarted(tmp_path, tiny_config_file):
    cfg = load_config(tiny_config_file, ["sparsity.granularity=element", "attack.specs=[{name: fgsm, eps: [4/255]}]"])
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir, device=CPU, progress=False, report=False)
    changed = load_config(
        tiny_config_file,
        ["sparsity.granularity=element", "train.epochs=4", "attack.specs=[{name: fgsm, eps: [4/255]}]"],
    )
    with pytest.raises(ConfigError, match="different configuration"):
        run_experiment(changed, run_dir, device=CPU, progress=False, report=False)
    summary = run_experiment(changed, run_dir, device=CPU, restart=True, progress=False, report=False)
    assert summary.n_trained == 3  # dense, its continued control, element
