"""Training that diverges: stopped with one line, marked failed, kept out of
the attack sweep and the results, listed apart in the summary and the report; the grid goes on."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
import torch

import robustsparse.pipeline.training as training_module
import robustsparse.train.trainer as trainer_module
from reports.contract import RESUME_STATE_FILE
from robustsparse.config import config_from_dict
from robustsparse.errors import TrainingDiverged
from robustsparse.pipeline import run_experiment, train_experiment
from robustsparse.train.loop import train_one_epoch

CPU = torch.device("cpu")


def _grid(settings: dict, **train) -> dict:
    settings["train"].update(train)
    settings["sparsity"]["from_dense"] = False  # every model from scratch: no control, each fails on its own
    settings["attack"] = {"n_examples": 40, "specs": [{"name": "fgsm", "eps": ["8/255"]}], "sanity_checks": False}
    return settings


def test_a_huge_learning_rate_is_detected_and_the_model_marked_failed(tiny_run_settings, tmp_path, caplog):
    settings = _grid(tiny_run_settings, lr=1e6, epochs=1)
    settings["sparsity"]["granularity"] = "element"
    with caplog.at_level(logging.ERROR, logger="robustsparse.pipeline.training"):
        summary = train_experiment(config_from_dict(settings), tmp_path, device=CPU, progress=False)
    assert list(summary["status"]) == ["failed", "failed"]
    assert summary["failure"].str.contains("non-finite training loss").all()
    lines = [r.getMessage() for r in caplog.records if r.name == "robustsparse.pipeline.training"]
    assert len(lines) == 2 and all("\n" not in line and "train.lr" in line for line in lines)
    meta = json.loads((tmp_path / "models" / "dense-s0" / "meta.json").read_text())
    assert meta["status"] == "failed" and "non-finite" in meta["failure"]
    assert not (tmp_path / "models" / "dense-s0" / "model.pt").exists()  # nothing to load, nothing to attack


def test_children_of_a_failed_parent_fail_without_training(tiny_run_settings, tmp_path, monkeypatch):
    settings = tiny_run_settings
    settings["train"]["lr"] = 1e6
    cfg = config_from_dict(settings)  # from_dense: the control and both sparse models start from dense-s0
    real = training_module.train_job
    trained = []

    def counting(job, *args, **kwargs):
        trained.append(job.model_id)
        return real(job, *args, **kwargs)

    monkeypatch.setattr(training_module, "train_job", counting)
    summary = train_experiment(cfg, tmp_path, device=CPU, progress=False)
    assert trained == ["dense-s0"]
    assert (summary["status"] == "failed").all()
    assert summary.set_index("model_id").loc["campfire-filter-50-s0", "failure"] == "its parent dense-s0 failed"


def _diverges_in_epoch_two(model_id: str):
    """train_one_epoch, except that `model_id`'s weights turn to NaN at its second epoch."""

    def wrapped(model, loader, optimizer, scheduler, *, desc: str, **kwargs):
        if desc.startswith(model_id + " ") and " epoch 2/" in desc:
            with torch.no_grad():
                next(model.parameters()).fill_(float("nan"))
        return train_one_epoch(model, loader, optimizer, scheduler, desc=desc, **kwargs)

    return wrapped


def test_one_diverging_model_fails_and_the_rest_of_the_grid_goes_on(tiny_run_settings, tmp_path, monkeypatch):
    cfg = config_from_dict(_grid(tiny_run_settings))
    bad = "campfire-filter-50-s0"
    monkeypatch.setattr(trainer_module, "train_one_epoch", _diverges_in_epoch_two(bad))
    run_dir = tmp_path / "run"
    summary = run_experiment(cfg, run_dir, device=CPU, progress=False)

    status = summary.models.set_index("model_id")["status"]
    assert status.to_dict() == {"dense-s0": "trained", "campfire-element-50-s0": "trained", bad: "failed"}
    assert list(summary.failed()["model_id"]) == [bad]
    assert bad not in set(summary.headline()["model_id"])  # never shown as a result
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results["model_id"]) == {"dense-s0", "campfire-element-50-s0"}
    assert bad not in set(pd.read_csv(run_dir / "outcomes.csv.gz")["model_id"])
    folder = run_dir / "models" / bad
    assert not (folder / "model.pt").exists()
    state = torch.load(folder / RESUME_STATE_FILE, weights_only=True)  # the last good epoch, kept
    assert state["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in state["state_dict"].values() if t.is_floating_point())
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "1 model(s) failed to train and have no results" in markdown and bad in markdown

    # started again: the failed model is neither retrained nor attacked, nothing else is recomputed
    monkeypatch.setattr(training_module, "train_job", pytest.fail)
    again = run_experiment(cfg, run_dir, device=CPU, progress=False, report=False)
    assert again.n_trained == 0 and again.n_evaluated == 0
    assert again.models.set_index("model_id").loc[bad, "status"] == "failed"


def test_the_loop_checks_the_loss_and_the_weights(tmp_path):
    model = torch.nn.Linear(4, 3)
    data = [(torch.rand(8, 4), torch.randint(0, 3, (8,)))]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train_one_epoch(model, data, optimizer, None, device=CPU, progress=False)  # a healthy model passes
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="non-finite training loss"):
        train_one_epoch(model, data, optimizer, None, device=CPU, progress=False)
    unused = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 3), "unused": torch.nn.Linear(1, 1)})
    with torch.no_grad():
        unused["unused"].weight.fill_(float("nan"))  # the loss cannot see it: the end-of-epoch check does

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.parts = unused

        def forward(self, x):
            return self.parts["used"](x)

    net = Net()
    with pytest.raises(TrainingDiverged, match="non-finite weights in parts.unused.weight"):
        train_one_epoch(net, data, torch.optim.SGD(net.parameters(), lr=0.1), None, device=CPU, progress=False)
