"""haloc through the trainer: from the dense parent, exact resume in and after the search, the
saved compact model (rebuilt from its metadata), its costs, inspect and the held-out split."""

from __future__ import annotations

import pytest
import torch

from robustsparse.checkpoints import ModelSpec, load_checkpoint, read_checkpoint
from robustsparse.config import config_from_dict
from robustsparse.data import load_tensors
from robustsparse.errors import ConfigError
from robustsparse.exporting import export_checkpoint
from robustsparse.exporting.native import load_exported
from robustsparse.inspection import inspect_checkpoint
from robustsparse.sparsity import model_cost
from robustsparse.sparsity.lowrank import TuckerConv2d
from robustsparse.train.jobs import dense_job, sparse_job
from robustsparse.train.trainer import _hold_out, load_job_data, train_job

CPU = torch.device("cpu")


def haloc_cfg(end_epoch: int, **extra):
    return config_from_dict(
        {
            "name": "t",
            "data": {"train_examples": 160},
            "train": {"epochs": 3, "batch_size": 64},
            "sparsity": {
                "method": "haloc",
                "granularity": "lowrank",
                "target_sparsity": 0.6,
                "start_epoch": 0,
                "end_epoch": end_epoch,
                "haloc_rank_multiple": 8,
                "haloc_holdout_examples": 32,
                "haloc_alpha_batch": 16,
                **extra,
            },
        }
    )


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A dense parent (2 epochs) in `<root>/dense-s0`, and the data; returns (root, bundle)."""
    root = tmp_path_factory.mktemp("haloc")
    bundle = load_job_data(haloc_cfg(2).data)
    dense = config_from_dict({"name": "t", "data": {"train_examples": 160}, "train": {"epochs": 2, "batch_size": 64}})
    train_job(dense_job(dense, 0), root / "dense-s0", device=CPU, bundle=bundle, progress=False)
    return root, bundle


@pytest.mark.parametrize("end_epoch", [2, 1])  # killed in epoch 2: resumed in the search / after the ranks are fixed
def test_haloc_resumes_exactly_and_saves_a_compact_model_rebuilt_from_its_metadata(
    parent, straight_and_resumed, end_epoch
):
    root, bundle = parent
    cfg = haloc_cfg(end_epoch)
    job = sparse_job(cfg, cfg.sparsity[0], 0)
    assert job.parent_id == "dense-s0"
    case = root / f"end{end_epoch}"
    case.mkdir()
    (case / "dense-s0").symlink_to(root / "dense-s0")
    straight = straight_and_resumed(job, case, bundle)  # same weights straight and resumed
    resumed_meta = load_checkpoint(case / "resumed")[1]
    model, meta = load_checkpoint(straight)  # weights_only loading into the factorised architecture
    assert read_checkpoint(straight)["masks"] == {}
    ranks = meta["sparsity"]["lowrank"]["ranks"]
    assert ranks == resumed_meta["sparsity"]["lowrank"]["ranks"]
    assert set(ranks) == {"net.conv2", "net.conv3"}  # the stem and the classifier stay dense
    for name, (r_in, r_out) in ranks.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, TuckerConv2d) and layer.ranks == (r_in, r_out) and r_in % 8 == 0
    # the metadata's costs are the factorised network's, and it meets the target
    cost = model_cost(model, (1, 1, 8, 8))
    assert meta["params"] == cost["params"] == sum(p.numel() for p in model.parameters())
    assert meta["effective_macs"] == meta["dense_macs"] == cost["dense_macs"]
    lowrank = meta["sparsity"]["lowrank"]["cost"]
    assert lowrank["achieved_fraction"] <= lowrank["target_fraction"] == pytest.approx(0.4)
    images, labels = load_tensors(bundle.test)
    with torch.no_grad():
        acc = int((model(images).argmax(1) == labels).sum()) / len(labels)
    assert acc == pytest.approx(meta["clean_acc"], abs=1e-9)
    assert meta["achieved_sparsity"] == 0.0 and meta["granularity"] == "lowrank"
    # compression is against the dense architecture (the spec's), not the smaller factorised network
    dense_params = sum(
        p.numel() for p in ModelSpec.from_dict(read_checkpoint(straight)["model_spec"]).build().parameters()
    )
    assert dense_params > meta["params"]
    assert meta["compression"] == pytest.approx(dense_params / meta["nonzero_params"])
    export_checkpoint(straight, fmt="compressed", out=case / "m.rsz")  # exports rebuild the low-rank layers too
    exported, _ = load_exported(case / "m.rsz")
    with torch.no_grad():
        assert torch.equal(exported(images), model(images))
    report = inspect_checkpoint(straight)
    assert report.problems == []
    text = report.render(layers=True)
    assert "low-rank layers" in text
    for name, (r_in, _) in ranks.items():
        row = report.lowrank.set_index("layer").loc[name]
        assert row["rank_in"] == r_in and row["macs"] < row["dense_macs"] and row["params"] < row["dense_params"]
    table = report.layers.set_index("name")
    assert (
        table.loc["net.conv1.weight", "granularity"] == "dense" and table.loc["net.fc.weight", "granularity"] == "dense"
    )


def test_held_out_examples_are_a_seeded_split_the_weights_never_see():
    data = list(range(50))
    rest, held = _hold_out(data, 10, seed=3)
    assert len(held) == 10 and len(rest) == 40
    assert set(held.indices).isdisjoint(rest.indices) and set(held.indices) | set(rest.indices) == set(range(50))
    assert _hold_out(data, 10, seed=3)[1].indices == held.indices != _hold_out(data, 10, seed=4)[1].indices
    with pytest.raises(ConfigError, match="holds out 50 of the 50"):
        _hold_out(data, 50, seed=0)
