"""`train.adversarial.plain_dense_control`: a robust grid trains the plainly trained dense model beside
the adversarially trained one, and shows it in the results and the report as a dense control."""

from __future__ import annotations

import json

import pytest
import torch

from reports import load_meta, load_outcomes, load_results
from reports.summary import summarize
from reports.tables import model_deltas
from robustsparse.config import config_from_dict
from robustsparse.pipeline import run_experiment
from robustsparse.train.jobs import PLAIN_METHOD, dense_job, experiment_jobs


def _settings(plain_dense_control: bool = True) -> dict:
    return {
        "name": "robust",
        "data": {"dataset": "digits", "train_examples": 256},
        "model": {"arch": "small_cnn"},
        "train": {
            "epochs": 1,
            "batch_size": 128,
            "adversarial": {
                "attack": "fgsm",
                "eps": "16/255",
                "loss": "madry",
                "plain_dense_control": plain_dense_control,
            },
        },
        "sparsity": {
            "method": "campfire",
            "granularity": "element",
            "target_sparsity": 0.5,
            "schedule": "one_shot",
            "end_epoch": 0,
        },
        "attack": {"n_examples": 60, "sanity_checks": False, "specs": [{"name": "fgsm", "eps": ["16/255"]}]},
    }


def test_the_plain_control_is_the_dense_training_without_adversarial_training():
    cfg = config_from_dict(_settings())
    jobs = {job.model_id: job for job in experiment_jobs(cfg)}
    assert list(jobs)[:2] == ["dense-s0", "dense-plain-s0"]  # before the models that need a dense parent
    plain, robust = jobs["dense-plain-s0"], jobs["dense-s0"]
    assert plain.method == PLAIN_METHOD and plain.sparsity is None and plain.parent_id is None
    assert plain.train.adversarial.attack == "none" and robust.train.adversarial.attack == "fgsm"
    assert plain.train.epochs == robust.train.epochs and plain.seed == robust.seed  # the same budget
    # the same weights as the dense model of the same config without adversarial training: one digest
    settings = _settings(False)
    settings["train"]["adversarial"] = {}
    assert plain.digest == dense_job(config_from_dict(settings), 0).digest
    # the sparse models still descend from, and are measured against, the robust models
    sparse = jobs["campfire-element-50-s0"]
    assert sparse.parent_id == "dense-s0" and sparse.reference_id == "dense-continued-s0"
    without = [job.model_id for job in experiment_jobs(config_from_dict(_settings(False)))]
    assert "dense-plain-s0" not in without and len(without) == len(jobs) - 1


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("robust") / "run"
    run_experiment(config_from_dict(_settings()), run_dir, device=torch.device("cpu"), progress=False)
    return run_dir


def test_the_plain_control_is_in_the_results_and_the_report_as_a_dense_control(robust_run):
    meta = json.loads((robust_run / "models" / "dense-plain-s0" / "meta.json").read_text())
    assert meta["method"] == PLAIN_METHOD and meta["granularity"] == "dense" and meta["target_sparsity"] == 0.0
    assert meta["train"]["adversarial"]["attack"] == "none" and meta["total_epochs"] == 1
    results, outcomes = load_results(robust_run), load_outcomes(robust_run)
    plain = results[results["model_id"] == "dense-plain-s0"]
    assert set(plain["attack"]) == {"clean", "fgsm"} and set(plain["granularity"]) == {"dense"}
    deltas = model_deltas(results, outcomes, load_meta(robust_run))
    assert "dense-plain-s0" not in set(deltas["model_id"]) | set(deltas["dense_model_id"])  # a reference only
    findings = summarize(results, outcomes, meta=load_meta(robust_run))
    control = next(f for f in findings if f.kind == "plain_control")
    robust_fgsm = results[(results["model_id"] == "dense-s0") & (results["attack"] == "fgsm")]["accuracy"].iloc[0]
    plain_fgsm = plain[plain["attack"] == "fgsm"]["accuracy"].iloc[0]
    assert control.numbers["robust_gain_pp"] == pytest.approx((robust_fgsm - plain_fgsm) * 100)
    plain_clean = plain[plain["attack"] == "clean"]["accuracy"].iloc[0]
    assert control.numbers["plain_clean_accuracy"] == pytest.approx(plain_clean)
    assert control.text in (robust_run / "report" / "report.md").read_text()


def test_no_plain_control_finding_without_the_control(tiny_run):
    findings = summarize(load_results(tiny_run), load_outcomes(tiny_run), meta=load_meta(tiny_run))
    assert "plain_control" not in {f.kind for f in findings}
