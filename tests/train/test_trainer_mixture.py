"""Mixture normalisation as a model setting: digests, jobs, resume, checkpoints, bad settings."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from robustsparse.checkpoints import load_checkpoint, read_checkpoint
from robustsparse.config import config_from_dict, load_config
from robustsparse.data import load_dataset, load_tensors
from robustsparse.errors import ConfigError
from robustsparse.inspection import inspect_checkpoint
from robustsparse.models import MixtureNorm2d
from robustsparse.train.jobs import MIXTURE_METHOD, dense_job, experiment_jobs
from robustsparse.train.trainer import train_job

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(**model):
    return config_from_dict({"name": "t", "model": model, "train": {"epochs": 3, "batch_size": 128}})


def test_batchnorm_digests_are_those_from_before_mixture_normalisation_existed():
    """Digests computed on 6b1ead2 (before `model.norm`): finished models of existing configs stay valid."""
    jobs = {job.model_id: job.digest for job in experiment_jobs(load_config(CONFIGS / "digits-quick.yaml"))}
    assert jobs["dense-s0"] == "52d8c7d1485c"
    assert jobs["dense-continued-s0"] == "16cc3bebb3b5"
    assert jobs["campfire-element-50-s0"] == "b4824471395f"
    assert jobs["campfire-filter-90-s0"] == "169809e6991b"
    # the mixture settings do not count while norm is batchnorm, and mixture_dense adds a model only
    quick = load_config(CONFIGS / "digits-quick.yaml")
    assert dense_job(quick, 0).digest == "52d8c7d1485c"
    tweaked = config_from_dict(
        {**_plain(quick), "model": {"arch": "small_cnn", "mixture_components": 5, "mixture_dense": True}}
    )
    assert dense_job(tweaked, 0).digest == "52d8c7d1485c"


def _plain(cfg) -> dict:
    from robustsparse.config import config_to_dict

    return config_to_dict(cfg)


def test_mixture_settings_count_in_the_digest_with_norm_mixture():
    base = dense_job(_cfg(norm="mixture"), 0).digest
    assert base != dense_job(_cfg(), 0).digest
    assert base != dense_job(_cfg(norm="mixture", mixture_components=2), 0).digest
    assert base != dense_job(_cfg(norm="mixture", mixture_layers=1), 0).digest
    assert base == dense_job(_cfg(norm="mixture", mixture_layers="all"), 0).digest


def test_mixture_dense_adds_one_dense_mixture_model_per_seed():
    cfg = config_from_dict(
        {
            "name": "t",
            "seeds": [0, 1],
            "model": {"mixture_dense": True, "mixture_components": 2},
            "sparsity": {"method": "campfire", "granularity": "element", "target_sparsity": 0.5},
        }
    )
    jobs = experiment_jobs(cfg)
    mixture = [job for job in jobs if job.method == MIXTURE_METHOD]
    assert [job.model_id for job in mixture] == ["dense-mixture-s0", "dense-mixture-s1"]
    assert all(job.model.norm == "mixture" and job.parent_id is None for job in mixture)
    assert all(job.model.norm == "batchnorm" for job in jobs if job.method != MIXTURE_METHOD)
    assert {job.digest for job in mixture}.isdisjoint({dense_job(cfg, s).digest for s in (0, 1)})
    assert not any(job.method == MIXTURE_METHOD for job in experiment_jobs(_cfg()))


@pytest.mark.parametrize(
    ("model", "named"),
    [
        ({"norm": "groupnorm"}, "model.norm"),
        ({"norm": "mixture", "mixture_components": 0}, "model.mixture_components"),
        ({"norm": "mixture", "mixture_layers": 4}, "model.mixture_layers"),
        ({"norm": "mixture", "mixture_layers": ["net.bn9"]}, "model.mixture_layers"),
        ({"norm": "mixture", "mixture_layers": "some"}, "model.mixture_layers"),
        ({"norm": "mixture", "mixture_em_steps": 0}, "model.mixture_em_steps"),
        ({"norm": "mixture", "mixture_dense": True}, "model.mixture_dense"),
        ({"arch": "lenet5", "norm": "mixture"}, "model.norm"),
    ],
)
def test_bad_mixture_settings_are_one_line_config_errors(model, named):
    with pytest.raises(ConfigError) as info:
        _cfg(**model)
    message = str(info.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize(
    ("sparsity", "named"),
    [
        ({"method": "campfire", "granularity": "filter", "target_sparsity": 0.5}, "sparsity.granularity"),
        ({"method": "hybrid", "granularity": "element", "target_sparsity": 0.5}, "sparsity.method"),
    ],
)
def test_channel_pruning_with_mixture_norm_is_refused_at_load(sparsity, named):
    raw = {"name": "t", "model": {"norm": "mixture"}, "sparsity": sparsity}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert named in str(info.value) and "\n" not in str(info.value)
    # the same grid with batch normalisation, or element pruning with mixture normalisation, loads
    config_from_dict({**raw, "model": {"norm": "batchnorm", "mixture_dense": True}})
    config_from_dict({**raw, "sparsity": {"method": "campfire", "granularity": "element", "target_sparsity": 0.5}})


def test_good_mixture_settings_pass():
    for model in ({"norm": "mixture"}, {"norm": "mixture", "mixture_layers": ["net.bn2"]}, {"mixture_dense": True}):
        assert _cfg(**model).model.mixture_components == 3


def test_interrupted_mixture_training_resumes_exactly_and_its_checkpoint_rebuilds_the_layers(
    tmp_path, straight_and_resumed
):
    digits = load_dataset("digits")
    cfg = config_from_dict(
        {
            "name": "t",
            "model": {"norm": "mixture", "mixture_layers": ["net.bn1", "net.bn3"], "mixture_components": 2},
            "train": {"epochs": 3, "batch_size": 256},
        }
    )
    job = dense_job(cfg, 0)
    folder = straight_and_resumed(job, tmp_path, digits)  # asserts equal weights and buffers

    payload = read_checkpoint(folder)  # weights_only loading
    assert payload["model_spec"]["norm"] == "mixture"
    assert payload["model_spec"]["mixture"]["components"] == 2
    model, meta = load_checkpoint(folder)
    assert meta["normalisation"] == "mixture"
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MixtureNorm2d)}
    assert sorted(layers) == ["net.bn1", "net.bn3"]
    assert all(int(m.seeded) == 1 and m.components == 2 for m in layers.values())
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in model.state_dict().items())
    images, labels = load_tensors(digits.test)
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(meta["clean_acc"], abs=1e-9)
    shown = inspect_checkpoint(folder).render()
    assert "normalisation mixture at net.bn1 (K=2), net.bn3 (K=2)" in shown and "structure    ok" in shown


def test_training_with_one_component_everywhere_follows_batch_normalisation(tmp_path):
    """K = 1 in every layer is batch normalisation: the whole training curve is BN's."""
    digits = load_dataset("digits")
    logs = []
    for i, model in enumerate(({}, {"norm": "mixture", "mixture_components": 1})):
        cfg = config_from_dict({"name": "t", "model": model, "train": {"epochs": 2, "batch_size": 256}})
        train_job(dense_job(cfg, 0), tmp_path / str(i), device=torch.device("cpu"), bundle=digits, progress=False)
        logs.append(pd.read_csv(tmp_path / str(i) / "train_log.csv"))
    for column in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert logs[1][column].tolist() == pytest.approx(logs[0][column].tolist(), abs=1e-4)
