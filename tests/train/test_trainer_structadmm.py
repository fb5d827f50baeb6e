"""structadmm through the trainer: resume mid-ADMM and mid-retraining, the checkpoint's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.utils.data import Subset

import robustsparse.train.trainer as trainer_module
from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.cli import main
from robustsparse.config import config_from_dict
from robustsparse.data import DatasetBundle, load_dataset, load_tensors
from robustsparse.sparsity import verify_structure
from robustsparse.sparsity.compact import compact_model
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import train_job

from .conftest import train_killed_in_epoch

CPU = torch.device("cpu")
EPOCHS = 4  # ADMM in epochs 1-2 (two iterations), hard pruning at the end of epoch 2, retraining 3-4


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A third of digits and a one-epoch dense parent in `<root>/dense-s0`; returns (root, bundle)."""
    full = load_dataset("digits")
    bundle = DatasetBundle(full.info, Subset(full.train, range(480)), Subset(full.test, range(120)))
    root = tmp_path_factory.mktemp("structadmm")
    dense = config_from_dict({"name": "t", "train": {"epochs": 1, "batch_size": 128}})
    train_job(dense_job(dense, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    return root, bundle


def admm_job(granularity: str):
    cfg = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": EPOCHS, "batch_size": 128},
            "sparsity": {
                "method": "structadmm",
                "granularity": granularity,
                "target_sparsity": 0.5,
                "start_epoch": 0,
                "end_epoch": 2,
                "structadmm_rho": 0.01,
                "structadmm_rho_factor": 2.0,
            },
        }
    )
    return sparse_job(cfg, cfg.sparsity[0], 0)


def killed_in_epoch(job, folder: Path, bundle, epoch: int, monkeypatch) -> None:
    """Train `job` into `folder`, killed during `epoch` (1-based), then started again to the end."""
    train_killed_in_epoch(job, folder, bundle, epoch, monkeypatch)
    state = torch.load(folder / trainer_module.RESUME_STATE_FILE, weights_only=True)
    assert state["epoch"] == epoch - 1
    train_job(job, folder, device=CPU, bundle=bundle, progress=False)


def same_model(a: Path, b: Path) -> None:
    a_model, a_meta, a_masks = load_checkpoint_with_masks(a)
    b_model, b_meta, b_masks = load_checkpoint_with_masks(b)
    assert a_masks.keys() == b_masks.keys() and all(torch.equal(a_masks[k], b_masks[k]) for k in a_masks)
    sa, sb = a_model.state_dict(), b_model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a_meta["sparsity"]["structadmm"] == b_meta["sparsity"]["structadmm"]


@pytest.mark.parametrize("granularity", ["filter", "element", "column"])
def test_structadmm_resumes_exactly_mid_admm_and_mid_retraining(parent, monkeypatch, granularity, capsys):
    root, bundle = parent
    job = admm_job(granularity)
    assert job.parent_id == "dense-s0"
    straight = root / f"{granularity}-straight"
    train_job(job, straight, device=CPU, bundle=bundle, progress=False)
    # killed in epoch 2 (the state after epoch 1: Z, U and rho mid-ADMM) and in epoch 4 (retraining)
    for epoch in (2, 4):
        resumed = root / f"{granularity}-killed-{epoch}"
        killed_in_epoch(job, resumed, bundle, epoch, monkeypatch)
        same_model(straight, resumed)

    model, meta, masks = load_checkpoint_with_masks(straight)  # load checks masked weights and sparsity
    assert verify_structure(model, masks, meta) == []
    assert main(["inspect", str(straight), "--layers"]) == 0
    assert "structadmm" in capsys.readouterr().out
    table = pd.read_csv(straight / "layer_sparsity.csv")
    assert table["structure_ok"].all()
    written = json.loads((straight / "meta.json").read_text())["sparsity"]
    admm = written["structadmm"]
    assert written["settings"]["structadmm_rho"] == 0.01 and written["settings"]["structadmm_admm_update_every"] == 1
    assert (admm["rho_initial"], admm["rho_factor"], admm["rho_max"]) == (0.01, 2.0, 1.0)
    assert admm["iterations"] == admm["iterations_done"] == 2 and [h["rho"] for h in admm["history"]] == [0.01, 0.02]
    assert admm["final_primal_residual"] == admm["history"][-1]["primal_residual"] > 0
    achieved = meta["achieved_sparsity"]
    assert achieved == pytest.approx(written["nearest_achievable_sparsity"], abs=1e-12)
    assert abs(achieved - 0.5) <= 0.02
    log = pd.read_csv(straight / "train_log.csv")
    assert log["masks_frozen"].tolist() == [False, True, True, True]
    assert log["achieved_sparsity"].iloc[0] == 0.0 and log["achieved_sparsity"].iloc[1:].nunique() == 1
    if granularity == "filter":  # whole channels: a thinner plain CNN computing the same function
        images, _ = load_tensors(bundle.test)
        small = compact_model(model, masks)
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            assert torch.allclose(small(images), model(images), atol=1e-4)
