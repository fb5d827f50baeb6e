"""psconv through the trainer: from scratch, masks fixed from step 0, resume, checkpoint and structure checks."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

import robustsparse.train.trainer as trainer_module
from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import load_dataset
from robustsparse.errors import ConfigError
from robustsparse.sparsity import build_pruner, verify_structure
from robustsparse.train.jobs import experiment_jobs, sparse_job
from robustsparse.train.trainer import train_job

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_interrupted_psconv_training_resumes_to_the_same_masks_and_weights(tmp_path, digits, monkeypatch):
    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 3, "batch_size": 128},
            # from_dense: true is overridden: psconv trains from scratch, as the paper
            "sparsity": {"method": "psconv", "granularity": "window", "target_sparsity": 0.5, "from_dense": True},
        }
    )
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.model_id == "psconv-window-50-s0" and job.parent_id is None
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_job(job, straight, device=CPU, bundle=digits, progress=False)

    calls = {"n": 0}
    real_evaluate = trainer_module.loss_and_accuracy

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # killed in epoch 2
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "loss_and_accuracy", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_job(job, resumed, device=CPU, bundle=digits, progress=False)
    monkeypatch.undo()
    train_job(job, resumed, device=CPU, bundle=digits, progress=False)
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight)
    b_model, _, b_masks = load_checkpoint_with_masks(resumed)
    assert a_masks.keys() == b_masks.keys() and all(torch.equal(a_masks[k], b_masks[k]) for k in a_masks)
    a, b = a_model.state_dict(), b_model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a_meta["method"] == "psconv" and a_meta["sparsity"]["psconv"]["period"] == 8
    assert a_meta["achieved_sparsity"] == pytest.approx(a_meta["sparsity"]["nearest_achievable_sparsity"], abs=1e-9)
    assert verify_structure(a_model, a_masks, a_meta) == []
    # decided at step 0 and never changed
    step0 = build_pruner(a_model, job.sparsity, 1, job.seed)
    step0.step(0)
    assert all(torch.equal(step0.masks[k], a_masks[k]) for k in a_masks)
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].all()


def test_settings_derived_from_the_level_do_not_lengthen_model_ids():
    """psconv_kept (like n of n:m) follows the level: the id shows the level, not the setting."""
    sparsity = {"method": ["campfire", "psconv"], "granularity": ["window", "n:m"], "target_sparsity": [0.5, 0.75]}
    with pytest.raises(ConfigError, match="one of window with method 'psconv'"):
        config_from_dict({"name": "t", "sparsity": sparsity})
    sparsity = [
        {"method": "campfire", "granularity": ["window", "n:m"], "target_sparsity": [0.5, 0.75]},
        {"method": "psconv", "granularity": "window", "target_sparsity": [0.5, 0.75]},
        {"method": "psconv", "granularity": "window", "target_sparsity": 0.5, "psconv_period": 16},
    ]
    ids = [job.model_id for job in experiment_jobs(config_from_dict({"name": "t", "sparsity": sparsity}))]
    assert ids[2:] == [
        "campfire-window-50-s0",
        "campfire-window-75-s0",
        "campfire-nm2of4-50-s0",
        "campfire-nm1of4-75-s0",
        "psconv-window-50-psconv_period8-s0",
        "psconv-window-75-psconv_period8-s0",
        "psconv-window-50-psconv_period16-s0",
    ]
