"""drop_pruning through the trainer: from the dense parent, resume, settings in meta.json."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.sparsity import verify_structure
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import load_job_data, train_job

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """A small CNN on 8x8 images: intra-op threads only add overhead (and spin on a shared
    machine); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_cfg(epochs: int, sparsity: dict | None = None):
    data = {"name": "t", "data": {"train_examples": 256}, "train": {"epochs": epochs, "batch_size": 128}}
    return config_from_dict({**data, "sparsity": sparsity} if sparsity else data)


def test_interrupted_drop_pruning_resumes_to_the_same_masks_and_weights(tmp_path, straight_and_resumed):
    cfg = small_cfg(
        3,
        {
            "method": "drop_pruning",
            "granularity": "element",
            "target_sparsity": 0.7,
            "end_epoch": 2,
            "update_unit": "steps",  # a pruning step after every optimizer step: 1, 2 | 3, 4 (frozen)
            "drop_pruning_back_prob": 0.2,
            "drop_pruning_revive": "previous",
        },
    )
    bundle = load_job_data(cfg.data)
    # the dense parent (one epoch is enough here), where the fixture's runs look for it
    train_job(dense_job(small_cfg(1), 0), tmp_path / "dense-s0", device=CPU, bundle=bundle, progress=False)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    straight = straight_and_resumed(job, tmp_path, bundle)  # killed in epoch 2, between two pruning steps
    model, meta, masks = load_checkpoint_with_masks(straight)
    assert meta["parent"] == "dense-s0" and meta["method"] == "drop_pruning"
    assert meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005)
    assert verify_structure(model, masks, meta) == []
    written = json.loads((straight / "meta.json").read_text())["sparsity"]
    settings = written["settings"]
    assert (settings["drop_pruning_away_prob"], settings["drop_pruning_back_prob"]) == (0.5, 0.2)
    assert settings["drop_pruning_candidate_fraction"] is None and settings["drop_pruning_revive"] == "previous"
    steps = written["drop_pruning"]["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2, 3, 4] and steps[3]["dropped_back"] > 0
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].tolist() == [False, True, True]
