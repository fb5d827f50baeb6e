"""dst through the trainer on digits: the target is reached, resume is exact, the saved model passes inspect."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.cli import main
from robustsparse.config import config_from_dict
from robustsparse.data import load_tensors
from robustsparse.sparsity import verify_structure
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import load_job_data, train_job

CPU = torch.device("cpu")
# The documented tolerance of dst's feedback on alpha (methods/dst.py): |achieved - target| <= 0.05.
TOLERANCE = 0.05
TRAIN = {"epochs": 4, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "lr_schedule": "cosine"}


def dst_cfg(target: float):
    return config_from_dict(
        {
            "name": "t",
            "data": {"dataset": "digits", "train_examples": 640},
            "model": {"arch": "small_cnn"},
            "train": TRAIN,
            "sparsity": {
                "method": "dst",
                "granularity": "element",
                "target_sparsity": target,
                "start_epoch": 0,
                "end_epoch": 3,
            },
        }
    )


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A dense parent (3 epochs) in `<root>/dense-s0`, and the data; returns (root, bundle)."""
    root = tmp_path_factory.mktemp("dst")
    cfg = dst_cfg(0.7)
    bundle = load_job_data(cfg.data)
    dense = config_from_dict(
        {
            "name": "t",
            "data": {"dataset": "digits", "train_examples": 640},
            "model": {"arch": "small_cnn"},
            "train": {**TRAIN, "epochs": 3},
        }
    )
    train_job(dense_job(dense, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    return root, bundle


def test_dst_resumes_exactly_reaches_its_target_and_passes_inspect(parent, straight_and_resumed, capsys):
    root, bundle = parent
    cfg = dst_cfg(0.7)  # killed in epoch 2: resumed from the state after epoch 1, masks still dynamic
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    straight = straight_and_resumed(job, root, bundle)
    model, meta, masks = load_checkpoint_with_masks(straight)  # masked weights are zero, sparsity as recorded
    assert verify_structure(model, masks, meta) == []
    assert main(["inspect", str(straight), "--layers"]) == 0
    assert "structure    ok" in capsys.readouterr().out
    images, labels = load_tensors(bundle.test)
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(meta["clean_acc"], abs=1e-9)  # the plain model, no hooks, is the trained one
    written = json.loads((straight / "meta.json").read_text())["sparsity"]
    assert written["settings"]["dst_threshold"] == "filter" and written["settings"]["dst_alpha_control"] == "feedback"
    assert written["dst"]["target_sparsity"] == 0.7
    assert written["dst"]["achieved_sparsity"] == pytest.approx(meta["achieved_sparsity"], abs=1e-12)
    assert abs(meta["achieved_sparsity"] - 0.7) <= TOLERANCE
    assert written["dst"]["alpha"] != written["dst"]["alpha_start"]  # the feedback moved alpha
    log = pd.read_csv(straight / "train_log.csv")
    assert list(log["masks_frozen"]) == [False, False, True, True]
    assert log["achieved_sparsity"].iloc[0] > 0  # the masked forward's sparsity is logged while dynamic
    # the per-filter thresholds are saved, and the masks are exactly |w| > t of the weights at the freeze
    state = torch.load(straight / "model.pt", weights_only=True)["pruner_state"]["dst"]
    assert all(t.dim() == 1 and t.numel() > 1 for t in state["thresholds"]) and state["format"] == "robustsparse.dst"


@pytest.mark.parametrize("target", [0.5, 0.9])
def test_dst_reaches_other_targets_within_the_tolerance(parent, tmp_path, target):
    root, bundle = parent
    cfg = dst_cfg(target)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    meta = train_job(job, tmp_path / "m", device=CPU, bundle=bundle, models_root=root, progress=False)
    assert abs(meta["achieved_sparsity"] - target) <= TOLERANCE, meta["sparsity"]["dst"]["trace"]
