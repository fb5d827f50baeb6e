"""Robust training losses (`train.adversarial.loss`): madry, hybrid, trades; their cost; their digests."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from reports.contract import TRAIN_LOG_COLUMNS
from robustsparse.checkpoints import load_checkpoint
from robustsparse.config import AdversarialTrainingConfig, config_from_dict
from robustsparse.data import load_tensors
from robustsparse.errors import ConfigError
from robustsparse.train.adversarial import RobustLoss, make_adversary
from robustsparse.train.jobs import dense_job, experiment_jobs
from robustsparse.train.loop import train_one_epoch
from robustsparse.train.trainer import load_job_data, train_job

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    """The 128 training examples the jobs below train on (`data.train_examples`)."""
    return load_job_data(cfg().data)


def cfg(epochs: int = 1, adversarial: dict | None = None):
    return config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 128, "test_examples": 64},
            "train": {"epochs": epochs, "batch_size": 64, "adversarial": adversarial or {}},
        }
    )


def _params(folder) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in load_checkpoint(folder)[0].named_parameters()}


def test_digests_of_configs_without_the_new_settings_are_unchanged():
    # Computed with the code before `loss`, `hybrid_weight`, `trades_beta` and `plain_dense_control`
    # existed (commit 6b1ead2): finished models of these configs must not be trained again.
    plain = config_from_dict({"name": "t", "train": {"epochs": 3, "batch_size": 128}})
    assert [j.digest for j in experiment_jobs(plain)] == ["8bf532153238"]
    robust = config_from_dict(
        {
            "name": "t",
            "train": {
                "epochs": 3,
                "batch_size": 128,
                "adversarial": {"attack": "pgd", "eps": "8/255", "steps": 3, "ratio": 0.5},
            },
            "sparsity": {
                "method": "campfire",
                "granularity": "kernel",
                "target_sparsity": 0.7,
                "start_epoch": 0,
                "end_epoch": 2,
            },
        }
    )
    assert [j.digest for j in experiment_jobs(robust)] == ["25763d1277c9", "976bc693e820", "b63c5f5afc18"]
    # the defaults spelled out are the same models
    explicit = config_from_dict(
        {"name": "t", "train": {"epochs": 3, "batch_size": 128, "adversarial": {"loss": "replace"}}}
    )
    assert dense_job(explicit, 0).digest == "8bf532153238"


def test_the_settings_in_use_change_the_digest_and_the_unused_ones_do_not():
    def digest(adversarial: dict) -> str:
        return dense_job(cfg(adversarial=adversarial), 0).digest

    madry = {"attack": "pgd", "loss": "madry"}
    assert digest(madry) != digest({"attack": "pgd"})
    assert digest(madry) == digest({**madry, "ratio": 0.9})  # ratio is a setting of `replace` only
    assert digest(madry) == digest({**madry, "plain_dense_control": True})  # adds a model, changes none
    hybrid = {"attack": "pgd", "loss": "hybrid"}
    assert digest(hybrid) == digest({**hybrid, "hybrid_weight": 0.5}) != digest({**hybrid, "hybrid_weight": 0.7})
    trades = {"attack": "tpgd", "loss": "trades"}
    assert digest(trades) == digest({**trades, "trades_beta": 6.0}) != digest({**trades, "trades_beta": 1.0})


@pytest.mark.parametrize(
    ("adversarial", "message"),
    [
        ({"loss": "madry"}, "loss = 'madry' needs an attack"),
        ({"attack": "pgd", "loss": "trades"}, "loss: trades and attack: tpgd go together"),
        ({"attack": "tpgd", "loss": "madry"}, "loss: trades and attack: tpgd go together"),
        ({"attack": "pgd", "loss": "hybrid", "hybrid_weight": 1.5}, "hybrid_weight = 1.5"),
        ({"attack": "pgd", "loss": "madry", "hybrid_weight": 0.5}, "a setting of loss: hybrid"),
        ({"attack": "pgd", "trades_beta": 1.0}, "a setting of loss: trades"),
        ({"attack": "tpgd", "loss": "trades", "trades_beta": -1.0}, "trades_beta = -1.0"),
        ({"attack": "tpgd", "loss": "trades", "trades_beta": float("inf")}, "a finite number >= 0"),
        ({"plain_dense_control": True}, "plain_dense_control = True"),
        ({"attack": "pgd", "loss": "pgd"}, "train.adversarial.loss"),
    ],
)
def test_bad_settings_give_one_line_config_errors(adversarial, message):
    with pytest.raises(ConfigError, match=message) as info:
        cfg(adversarial=adversarial)
    assert "\n" not in str(info.value)


def test_defaults_are_filled_in_for_the_loss_in_use_only():
    assert AdversarialTrainingConfig(attack="pgd", loss="hybrid").hybrid_weight == 0.5
    assert AdversarialTrainingConfig(attack="tpgd", loss="trades").trades_beta == 6.0
    madry = AdversarialTrainingConfig(attack="pgd", loss="madry")
    assert madry.hybrid_weight is None and madry.trades_beta is None


@pytest.mark.parametrize(
    ("neutral", "active"),
    [
        ({"attack": "tpgd", "steps": 2, "loss": "trades", "trades_beta": 0.0}, {"trades_beta": 6.0}),
        ({"attack": "pgd", "steps": 2, "loss": "hybrid", "hybrid_weight": 1.0}, {"hybrid_weight": 0.5}),
    ],
)
def test_trades_at_beta_0_and_hybrid_at_weight_1_train_like_clean_training(tmp_path, digits, neutral, active):
    clean, off, on = (
        dense_job(cfg(), 0),
        dense_job(cfg(adversarial=neutral), 0),
        dense_job(cfg(adversarial={**neutral, **active}), 0),
    )
    for name, job in (("clean", clean), ("off", off), ("on", on)):
        train_job(job, tmp_path / name, device=CPU, bundle=digits, progress=False)
    a, b, c = _params(tmp_path / "clean"), _params(tmp_path / "off"), _params(tmp_path / "on")
    # the adversarial term is computed (its forward passes run) but weighs exactly nothing
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # with weight on it, it moves the weights
    assert pd.read_csv(tmp_path / "off" / "train_log.csv")["adversarial_seconds"].iloc[0] > 0


def test_madry_trains_on_adversarial_examples_of_the_whole_batch_inside_the_eps_ball(digits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    images, labels = load_tensors(digits.test, 64)
    batches = [(images[:32], labels[:32]), (images[32:], labels[32:])]
    settings = AdversarialTrainingConfig(attack="pgd", eps="8/255", steps=3, loss="madry")
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()) if m.training else None)
    stats = train_one_epoch(
        model,
        batches,
        torch.optim.SGD(model.parameters(), lr=0.1),
        None,
        device=CPU,
        progress=False,
        robust_loss=RobustLoss(make_adversary(settings), settings),
    )
    hook.remove()
    assert len(seen) == 2  # one training forward pass per batch, on the adversarial examples only
    for (clean, _), trained_on in zip(batches, seen):
        assert trained_on.shape == clean.shape  # the whole batch
        assert (trained_on - clean).abs().max() <= 8 / 255 + 1e-6
        assert trained_on.min() >= 0 and trained_on.max() <= 1
        assert ((trained_on - clean).abs().flatten(1).amax(1) > 0).all()  # every example was perturbed
    assert stats["adversarial_seconds"] > 0


def test_the_crafting_cost_is_logged_per_epoch(tmp_path, digits):
    plain = dense_job(cfg(epochs=2), 0)
    robust = dense_job(cfg(epochs=2, adversarial={"attack": "pgd", "steps": 2, "loss": "madry"}), 0)
    for name, job in (("plain", plain), ("robust", robust)):
        train_job(job, tmp_path / name, device=CPU, bundle=digits, progress=False)
    plain_log = pd.read_csv(tmp_path / "plain" / "train_log.csv")
    robust_log = pd.read_csv(tmp_path / "robust" / "train_log.csv")
    assert list(plain_log.columns) == list(robust_log.columns) == TRAIN_LOG_COLUMNS
    assert (plain_log["adversarial_seconds"] == 0).all()
    assert (robust_log["adversarial_seconds"] > 0).all()
    assert (robust_log["adversarial_seconds"] <= robust_log["epoch_seconds"]).all()


def test_resume_is_exact_with_a_robust_loss(tmp_path, digits, straight_and_resumed):
    # trades: two forward passes per step and the randomly started tpgd (madry has one of each)
    adversarial = {"attack": "tpgd", "steps": 2, "loss": "trades", "trades_beta": 1.0}
    job = dense_job(cfg(epochs=3, adversarial=adversarial), 0)
    straight_and_resumed(job, tmp_path, digits)
