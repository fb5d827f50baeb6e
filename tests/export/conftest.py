"""Trained digits checkpoints shared by the export tests."""

from __future__ import annotations

import pytest
import torch

from robustsparse.config import config_from_dict
from robustsparse.data import load_dataset
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import train_job

CPU = torch.device("cpu")


@pytest.fixture(scope="package")
def models(tmp_path_factory):
    """A dense parent and two sparse children (window, filter) trained for two epochs on digits."""
    root = tmp_path_factory.mktemp("export")
    cfg = config_from_dict(
        {
            "train": {"epochs": 2, "batch_size": 128},
            "sparsity": {
                "method": "campfire",
                "granularity": ["window", "filter"],
                "target_sparsity": 0.7,
                "start_epoch": 0,
                "end_epoch": 1,
            },
        }
    )
    bundle = load_dataset("digits")
    train_job(dense_job(cfg, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    dirs = {}
    for sparsity in cfg.sparsity:
        job = sparse_job(cfg, sparsity, 0)
        train_job(job, root / job.model_id, device=CPU, bundle=bundle, models_root=root, progress=False)
        dirs[sparsity.granularity] = root / job.model_id
    return dirs
