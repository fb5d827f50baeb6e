"""The pipeline end to end on a tiny grid: outputs, resume without recomputation, config guard."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import robustsparse.pipeline.evaluation as evaluation_module
from reports.schema import OUTCOME_COLUMNS, RESULT_COLUMNS
from robustsparse.config import load_config
from robustsparse.errors import ConfigError
from robustsparse.pipeline import run_experiment

CPU = torch.device("cpu")


def test_run_trains_attacks_reports_and_resumes_without_recomputing(tmp_path, tiny_config_file, monkeypatch):
    cfg = load_config(tiny_config_file)
    run_dir = tmp_path / "run"
    first = run_experiment(cfg, run_dir, device=CPU, progress=False)

    assert set(first.models["model_id"]) == {"dense-s0", "campfire-element-50-s0", "campfire-filter-50-s0"}
    assert first.n_trained == 3
    results = pd.read_csv(run_dir / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    assert len(results) == 3 * 4  # clean + 2 fgsm + 1 pgd per model
    assert not results.duplicated(["model_id", "key"]).any()
    dense = results[results["model_id"] == "dense-s0"]
    assert set(dense["granularity"]) == {"dense"} and set(dense["target_sparsity"]) == {0.0}
    for _, group in results.groupby("model_id"):
        clean = group.loc[group["attack"] == "clean", "accuracy"].item()
        assert (group["accuracy"] <= clean + 1e-12).all()  # robust never above clean
    outcomes = pd.read_csv(run_dir / "outcomes.csv.gz")
    assert list(outcomes.columns) == OUTCOME_COLUMNS
    per_key = outcomes.groupby(["model_id", "key"])["correct"].sum()
    merged = results.set_index(["model_id", "key"])["n_correct"]
    assert (per_key.reindex(merged.index) == merged).all()  # outcomes agree with the counts
    assert (run_dir / "sanity.csv").is_file()
    assert first.report_path is not None and first.report_path.is_file()

    # Started again: nothing is trained or attacked, and the tables are identical.
    def no_attacks(*args, **kwargs):
        raise AssertionError("an evaluation was recomputed")

    monkeypatch.setattr(evaluation_module, "evaluate", no_attacks)
    second = run_experiment(cfg, run_dir, device=CPU, progress=False)
    assert second.n_trained == 0 and second.n_evaluated == 0
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "results.csv"), results)


def test_interrupted_attack_sweep_resumes_to_identical_results(tmp_path, tiny_config_file, monkeypatch):
    cfg = load_config(tiny_config_file)
    straight = run_experiment(cfg, tmp_path / "straight", device=CPU, progress=False, report=False)

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
    assert resumed.n_evaluated == 2 * 4  # only the two models not yet attacked
    pd.testing.assert_frame_equal(
        resumed.results.drop(columns="elapsed_s").reset_index(drop=True),
        straight.results.drop(columns="elapsed_s").reset_index(drop=True),
    )


def test_changed_config_in_the_same_folder_is_refused_unless_restarted(tmp_path, tiny_config_file):
    cfg = load_config(tiny_config_file, ["sparsity.granularity=element", "attack.specs=[{name: fgsm, eps: [4/255]}]"])
    run_dir = tmp_path / "run"
    run_experiment(cfg, run_dir, device=CPU, progress=False, report=False)
    changed = load_config(tiny_config_file, ["sparsity.granularity=element", "train.epochs=4",
                                             "attack.specs=[{name: fgsm, eps: [4/255]}]"])
    with pytest.raises(ConfigError, match="different configuration"):
        run_experiment(changed, run_dir, device=CPU, progress=False, report=False)
    summary = run_experiment(changed, run_dir, device=CPU, restart=True, progress=False, report=False)
    assert summary.n_trained == 2
