"""npn through the trainer: from the dense parent, resume in the joint phase, the saved model and its scores."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import load_tensors
from robustsparse.sparsity import verify_structure
from robustsparse.sparsity.compact import compact_model
from robustsparse.sparsity.methods.npn import PrunerNetwork
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import load_job_data, train_job

CPU = torch.device("cpu")


def npn_cfg(end_epoch: int):
    return config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 128},
            "train": {"epochs": 3, "batch_size": 64},
            "sparsity": {
                "method": "npn",
                "granularity": "filter",
                "target_sparsity": 0.5,
                "start_epoch": 0,
                "end_epoch": end_epoch,
                "npn_lr": 0.05,
            },
        }
    )


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A dense parent (1 epoch) in `<root>/dense-s0`, and the data; returns (root, bundle)."""
    root = tmp_path_factory.mktemp("npn")
    cfg = npn_cfg(2)
    bundle = load_job_data(cfg.data)
    dense = config_from_dict({"name": "t", "data": {"train_examples": 128}, "train": {"epochs": 2, "batch_size": 64}})
    train_job(dense_job(dense, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    return root, bundle


def test_npn_resumes_exactly_in_the_joint_phase_and_its_mask_is_the_thresholded_scores(parent, straight_and_resumed):
    root, bundle = parent
    cfg = npn_cfg(2)  # killed in epoch 2: resumed from the state after epoch 1, gates still on
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    straight = straight_and_resumed(job, root, bundle)
    model, meta, masks = load_checkpoint_with_masks(straight)  # the plain architecture
    assert verify_structure(model, masks, meta) == []
    images, labels = load_tensors(bundle.test)
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(meta["clean_acc"], abs=1e-9)
    small = compact_model(model, masks)  # a thinner plain CNN computing the same function
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(small(images), model(images), atol=1e-4)
    written = json.loads((straight / "meta.json").read_text())["sparsity"]
    assert written["settings"]["npn_hidden"] == 16 and written["settings"]["npn_lr"] == 0.05
    assert written["settings"]["npn_gate"] == "straight_through" and written["settings"]["from_dense"] is True
    achieved = meta["achieved_sparsity"]
    assert achieved == pytest.approx(written["nearest_achievable_sparsity"], abs=1e-12)
    assert abs(achieved - 0.5) <= 0.005 or "nearest achievable" in written["achievable_note"]
    # the scores again, from the saved pruner state alone: the mask is exactly their threshold
    state = torch.load(straight / "model.pt", weights_only=True)["pruner_state"]["npn"]
    producers = list(state["record"]["features"])
    net = PrunerNetwork(len(producers), 16, seed=99)
    net.load_state_dict(state["network"])
    fresh = PrunerNetwork(len(producers), 16, seed=job.seed).state_dict()
    assert all(not torch.equal(fresh[k], v) for k, v in state["network"].items())  # trained in the joint phase
    with torch.no_grad():
        logits = net(list(state["record"]["features"].values()))
    for producer, lg in zip(producers, logits):
        score = torch.sigmoid(lg)
        kept = masks[f"{producer}.weight"].reshape(score.numel(), -1).any(1)
        assert torch.equal(kept, score >= written["npn"]["thresholds"][producer])
        assert bool(kept.any()) and not bool(kept.all())
    log = pd.read_csv(straight / "train_log.csv")
    assert list(log["masks_frozen"]) == [False, True, True]
