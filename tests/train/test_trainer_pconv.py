"""pconv through the trainer: gradual from the dense parent, resume, settings and library in meta.json."""

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


def test_interrupted_pconv_training_resumes_to_the_same_masks_library_and_weights(tmp_path, straight_and_resumed):
    cfg = config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 256},  # small: a dense parent and three pconv trainings
            "train": {"epochs": 3, "batch_size": 64},
            "sparsity": {
                "method": "pconv",
                "granularity": "kernel",
                "target_sparsity": 0.7,
                "start_epoch": 0,
                "end_epoch": 2,
                "pconv_library_size": 6,
            },
        }
    )
    digits = load_job_data(cfg.data)
    train_job(dense_job(cfg, 0), tmp_path / "dense-s0", device=CPU, bundle=digits, progress=False)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    # killed in epoch 2, while the masks are still changing; the parent is found beside the model folders
    straight = straight_and_resumed(job, tmp_path, digits)
    resumed_meta = json.loads((tmp_path / "resumed" / "meta.json").read_text())
    a_model, a_meta, a_masks = load_checkpoint_with_masks(straight)
    meta = json.loads((straight / "meta.json").read_text())
    settings = meta["sparsity"]["settings"]
    assert (settings["pconv_pattern_size"], settings["pconv_library_size"], settings["pconv_other_layers"]) == (
        4,
        6,
        "element",
    )
    library = meta["sparsity"]["pconv"]["library"]
    assert len(library) == 6 and library == resumed_meta["sparsity"]["pconv"]["library"]
    assert a_meta["parent"] == "dense-s0" and a_meta["method"] == "pconv"
    assert a_meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005)
    assert verify_structure(a_model, a_masks, a_meta) == []
    patterns = {tuple(p) for p in library}
    for name in ("net.conv2.weight", "net.conv3.weight"):  # small_cnn's 3x3 convs after the stem
        rows = a_masks[name].reshape(-1, 9)
        assert {tuple(torch.nonzero(r).flatten().tolist()) for r in rows[rows.any(1)]} <= patterns
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].tolist() == [False, True, True]
