"""Shared pieces of the trainer tests: the digits data, and a job trained straight and with a kill."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import robustsparse.train.trainer as trainer_module
from robustsparse.checkpoints import load_checkpoint_with_masks
from robustsparse.train.trainer import train_job

CPU = torch.device("cpu")


def train_killed_in_epoch(job, folder: Path, bundle, epoch: int, monkeypatch, **train_kwargs) -> None:
    """Train `job` into `folder`, killed (KeyboardInterrupt) in the evaluation closing `epoch`
    (1-based), so `last.pt` holds the state after epoch `epoch - 1`."""
    real = trainer_module.loss_and_accuracy
    calls = {"n": 0}

    def evaluate_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "loss_and_accuracy", evaluate_then_die)
        with pytest.raises(KeyboardInterrupt):
            train_job(job, folder, device=CPU, bundle=bundle, progress=False, **train_kwargs)


@pytest.fixture
def straight_and_resumed(monkeypatch):
    """Train `job` straight into `root/straight`, and into `root/resumed` killed in epoch 2 then
    started again; assert both end with the same masks and weights; return the straight run's folder."""

    def run(job, root: Path, bundle) -> Path:
        straight, resumed = root / "straight", root / "resumed"
        train_job(job, straight, device=CPU, bundle=bundle, progress=False)
        train_killed_in_epoch(job, resumed, bundle, 2, monkeypatch)
        train_job(job, resumed, device=CPU, bundle=bundle, progress=False)
        a_model, _, a_masks = load_checkpoint_with_masks(straight)
        b_model, _, b_masks = load_checkpoint_with_masks(resumed)
        assert a_masks.keys() == b_masks.keys() and all(torch.equal(a_masks[k], b_masks[k]) for k in a_masks)
        a, b = a_model.state_dict(), b_model.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
        return straight

    return run
