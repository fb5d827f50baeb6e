"""hybrid through the trainer: from the dense parent, resume, meta.json and layer_sparsity.csv."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import DatasetBundle, load_dataset
from robustsparse.exporting import export_checkpoint, load_exported
from robustsparse.sparsity import verify_structure
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import _example_batch, train_job

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    """A third of digits (the method's behaviour, not its accuracy, is under test: faster epochs)."""
    full = load_dataset("digits")
    return DatasetBundle(full.info, Subset(full.train, range(480)), Subset(full.test, range(120)))


def test_interrupted_hybrid_training_resumes_to_the_same_masks_and_weights(tmp_path, digits, straight_and_resumed):
    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 3, "batch_size": 128},
            "sparsity": {
                "method": "hybrid",
                "granularity": "element",
                "target_sparsity": 0.7,
                "end_epoch": 2,  # killed in epoch 2: resumed while the element stage is under way
                "hybrid_examples": 200,
                "hybrid_ratios": [0.25, 0.5],
                "hybrid_tolerance": 1.0,  # any drop passes: conv2 loses half its channels
            },
        }
    )
    # a one-epoch parent is enough to have something to measure (and keeps the test short)
    parent_cfg = config_from_dict({"name": "t", "train": {"epochs": 1, "batch_size": 128}})
    train_job(dense_job(parent_cfg, 0), tmp_path / "dense-s0", device=CPU, bundle=digits, progress=False)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    straight = straight_and_resumed(job, tmp_path, digits)
    model, meta, masks = load_checkpoint_with_masks(straight)
    assert verify_structure(model, masks, meta) == []
    assert meta["achieved_sparsity"] == pytest.approx(0.7, abs=0.005)
    on_disk = json.loads((straight / "meta.json").read_text())
    settings = on_disk["sparsity"]["settings"]
    assert (settings["hybrid_examples"], settings["hybrid_ratios"], settings["hybrid_tolerance"]) == (
        200,
        [0.25, 0.5],
        1.0,
    )
    hybrid = on_disk["sparsity"]["hybrid"]
    assert hybrid["examples"] == 200 and len(hybrid["sensitivity"]) == 2 * len(hybrid["channel_layers"]) > 0
    # the sensitivity subset: the first 200 of the seeded shuffle, the parent's accuracy on it
    parent, _, _ = load_checkpoint_with_masks(tmp_path / "dense-s0")
    x, y = _example_batch(digits.train, 200, job.seed)
    with torch.no_grad():
        parent_acc = float((parent.eval()(x).argmax(1) == y).float().mean())
    assert hybrid["baseline_accuracy"] == pytest.approx(parent_acc)
    # masks fixed during fine-tuning: nothing changes after end_epoch
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].tolist() == [False, True, True]
    assert log["achieved_sparsity"].iloc[1] == log["achieved_sparsity"].iloc[2]
    assert hybrid["ratios"] == {"net.conv2": 0.5} and hybrid["removed_channels"] == {"net.conv2": 32}
    table = pd.read_csv(straight / "layer_sparsity.csv").set_index("name")
    assert table.loc["net.conv2.weight", "granularity"] == table.loc["net.conv3.weight", "granularity"]
    assert table.loc["net.conv2.weight", "granularity"] == "filter+element" and table["structure_ok"].all()
    # the removed channels can be cut out: the compact export is smaller and computes the same
    summary = export_checkpoint(straight, fmt="compact", out=tmp_path / "compact.pt")
    small, _ = load_exported(tmp_path / "compact.pt")
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(small(x[:16]), model.eval()(x[:16]), atol=1e-5)
    assert summary.exported_bytes < summary.dense_bytes
