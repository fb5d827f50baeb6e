"""psconv through the trainer: from scratch, masks fixed from step 0, resume, checkpoint and structure checks."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import load_dataset
from robustsparse.errors import ConfigError
from robustsparse.sparsity import build_pruner, verify_structure
from robustsparse.train.jobs import experiment_jobs, sparse_job

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_interrupted_psconv_training_resumes_to_the_same_masks_and_weights(tmp_path, digits, straight_and_resumed):
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
    straight = straight_and_resumed(job, tmp_path, digits)
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight)
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
