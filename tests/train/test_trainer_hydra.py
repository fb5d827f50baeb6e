"""hydra through the trainer: scores train while the weights stay frozen, the mask is their top-k,
the kept weights are fine-tuned with pruned weights and momentum at zero, resume is exact."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint, load_checkpoint_with_masks
from robustsparse.config import config_from_dict
from robustsparse.data import load_tensors
from robustsparse.errors import ConfigError
from robustsparse.inspection import inspect_checkpoint
from robustsparse.sparsity import verify_structure
from robustsparse.sparsity.methods import build_pruner
from robustsparse.sparsity.methods.hydra import scaled_scores
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.optim import build_optimizer
from robustsparse.train.trainer import load_job_data, train_job

from .conftest import train_killed_in_epoch

CPU = torch.device("cpu")


def hydra_cfg(epochs: int, score_epochs: int, **sparsity):
    return config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 128, "test_examples": 64},
            # the dense parent and the hydra model train with the same robust loss
            "train": {"epochs": epochs, "batch_size": 64, "adversarial": {"attack": "fgsm", "loss": "madry"}},
            "sparsity": {
                "method": "hydra",
                "granularity": "element",
                "target_sparsity": 0.7,
                "hydra_score_epochs": score_epochs,
                **sparsity,
            },
        }
    )


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A robust dense parent (2 epochs) in `<root>/dense-s0`, and the data; returns (root, bundle)."""
    root = tmp_path_factory.mktemp("hydra")
    cfg = hydra_cfg(2, 1)
    bundle = load_job_data(cfg.data)
    train_job(dense_job(cfg, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    return root, bundle


def _params(model) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in model.named_parameters()}


def test_settings_fix_the_score_phase_and_bad_ones_fail_in_one_line():
    entry = hydra_cfg(3, 2).sparsity[0]
    assert (entry.start_epoch, entry.end_epoch, entry.schedule, entry.from_dense) == (0, 2, "one_shot", True)
    assert entry.hydra_score_lr == 0.1
    default = config_from_dict(
        {
            "name": "t",
            "train": {"epochs": 6},
            "sparsity": {"method": "hydra", "granularity": "element", "target_sparsity": 0.5, "end_epoch": 4},
        }
    ).sparsity[0]
    assert default.hydra_score_epochs == 4 == default.end_epoch  # default: the config's end_epoch
    for bad, message in (
        ({"hydra_score_epochs": 0}, "hydra_score_epochs = 0"),
        ({"hydra_score_lr": -1.0}, "hydra_score_lr = -1.0"),
        ({"granularity": "kernel"}, "granularity = 'kernel'"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            hydra_cfg(3, 2, **bad)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="null unless method is 'hydra'"):
        config_from_dict(
            {"name": "t", "sparsity": {"method": "campfire", "target_sparsity": 0.5, "hydra_score_lr": 0.1}}
        )
    with pytest.raises(ConfigError, match="end_epoch"):
        hydra_cfg(3, 4)  # a score phase longer than the training


def test_scores_train_while_the_weights_stay_frozen_and_the_mask_is_their_top_k(parent, tmp_path):
    root, bundle = parent
    cfg = hydra_cfg(2, 2)  # the score phase takes the whole training: the mask is fixed after the last step
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    train_job(job, tmp_path / job.model_id, device=CPU, bundle=bundle, models_root=root, progress=False)
    dense = _params(load_checkpoint(root / "dense-s0")[0])
    model, meta, masks = load_checkpoint_with_masks(tmp_path / job.model_id)
    after = _params(model)
    # every parameter (weights, BatchNorm's scale and shift, biases) is the parent's, pruned ones at zero
    for name, value in after.items():
        mask = masks.get(name)
        expected = dense[name] if mask is None else torch.where(mask, dense[name], torch.zeros_like(dense[name]))
        assert torch.equal(value, expected), name
    scores = torch.load(tmp_path / job.model_id / "model.pt", weights_only=True)["pruner_state"]["hydra"]["scores"]
    assert set(scores) == {n for n, m in masks.items()} and scores
    for name, score in scores.items():
        assert not torch.allclose(score, scaled_scores(dense[name])), f"{name}: the scores did not train"
        kept, magnitude = masks[name], score.abs()
        assert magnitude[kept].min() >= magnitude[~kept].max()  # exactly the top-k of |score|
        assert abs(1 - kept.float().mean().item() - 0.7) < 0.01  # k at the target, per layer (uniform)
    assert meta["achieved_sparsity"] == pytest.approx(meta["sparsity"]["nearest_achievable_sparsity"])
    log = pd.read_csv(tmp_path / job.model_id / "train_log.csv")
    assert list(log["masks_frozen"]) == [False, True]
    assert log["adversarial_seconds"].gt(0).all()  # scored under the robust loss


def test_the_score_phase_forward_is_the_masked_network(parent):
    root, bundle = parent
    cfg = hydra_cfg(3, 2)
    model, _ = load_checkpoint(root / "dense-s0")
    pruner = build_pruner(model, cfg.sparsity[0], steps_per_epoch=2, seed=0)
    images, _ = load_tensors(bundle.test, 8)
    model.eval()
    with torch.no_grad():
        hooked = model(images)
    masks = pruner.top_k()
    plain, _ = load_checkpoint(root / "dense-s0")
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if name in masks:
                p.mul_(masks[name])
        assert torch.allclose(hooked, plain.eval()(images), atol=1e-5)
    assert not pruner.trains_weights()


def test_fine_tuning_keeps_pruned_weights_and_their_momentum_at_zero(parent, tmp_path, monkeypatch):
    root, bundle = parent
    cfg = hydra_cfg(3, 1)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    # killed in epoch 3: last.pt holds the state after a fine-tuning epoch
    train_killed_in_epoch(job, tmp_path / "m", bundle, 3, monkeypatch, models_root=root)
    state = torch.load(tmp_path / "m" / "last.pt", weights_only=True)
    model, _ = load_checkpoint(root / "dense-s0")
    model.load_state_dict(state["state_dict"])
    params = dict(model.named_parameters())
    optimizer = build_optimizer(model, cfg.train)
    optimizer.load_state_dict(state["optimizer"])
    masks = state["pruner"]["masks"]
    assert masks and all(not bool(m.all()) for m in masks.values())
    for name, mask in masks.items():
        momentum = optimizer.state[params[name]]["momentum_buffer"]
        assert bool((params[name].detach()[~mask] == 0).all()), name
        assert bool((momentum[~mask] == 0).all()), f"momentum leaks into pruned entries of {name}"
        assert bool((momentum[mask] != 0).any()), name  # the kept weights were fine-tuned
    dense = _params(load_checkpoint(root / "dense-s0")[0])
    assert not all(torch.equal(params[n].detach()[m], dense[n][m]) for n, m in masks.items())


def test_hydra_resumes_exactly_from_the_middle_of_the_score_phase_and_passes_inspect(parent, straight_and_resumed):
    root, bundle = parent
    cfg = hydra_cfg(3, 2)  # killed in epoch 2: resumed from the state after epoch 1, scores still training
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    straight = straight_and_resumed(job, root, bundle)
    model, meta, masks = load_checkpoint_with_masks(straight)  # the plain architecture, no hooks
    assert verify_structure(model, masks, meta) == []
    inspection = inspect_checkpoint(straight)
    assert inspection.problems == []
    assert inspection.meta["method"] == "hydra" and inspection.meta["sparsity"]["hydra"]["score_epochs"] == 2
    log = pd.read_csv(straight / "train_log.csv")
    assert list(log["masks_frozen"]) == [False, True, True]
