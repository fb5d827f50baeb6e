"""haloc's settings, rank search and export (methods.md 15)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from robustsparse.cli import main
from robustsparse.errors import ConfigError
from robustsparse.models import create_model
from robustsparse.sparsity import SparsityConfig
from robustsparse.sparsity.haloc_costs import load_cost_table, macs_table, save_cost_table
from robustsparse.sparsity.lowrank import RankSearchConv2d, TuckerConv2d, conv_geometry
from robustsparse.sparsity.methods.haloc import HalocPruner


def cfg(**extra) -> SparsityConfig:
    base = {"method": "haloc", "granularity": "lowrank", "target_sparsity": 0.5, "end_epoch": 2}
    return SparsityConfig(**{**base, **extra})


def test_settings_are_filled_in_and_checked():
    c = cfg()
    assert c.haloc_target == 0.5 and c.haloc_rank_multiple == 8 and c.haloc_cost == "macs" and c.from_dense
    assert SparsityConfig(method="campfire", granularity="element", target_sparsity=0.5).haloc_beta is None
    bad = [
        ({"haloc_target": 0.3}, "haloc_target"),  # disagrees with target_sparsity
        ({"haloc_cost": "latency"}, "haloc_cost_table"),  # latency needs a measured table
        ({"haloc_rank_multiple": 0}, "haloc_rank_multiple"),
        ({"haloc_beta": -1.0}, "haloc_beta"),
        ({"schedule": "one_shot", "end_epoch": 0}, "end_epoch"),
    ]
    for extra, key in bad:
        with pytest.raises(ConfigError, match=key):
            cfg(**extra)
    with pytest.raises(ConfigError, match="haloc_beta"):
        SparsityConfig(method="campfire", granularity="element", target_sparsity=0.5, haloc_beta=1.0)
    with pytest.raises(ConfigError, match="granularity"):
        SparsityConfig(method="campfire", granularity="lowrank", target_sparsity=0.5)
    with pytest.raises(ConfigError, match="granularity"):
        cfg(granularity="element")


def _model_and_data(seed: int = 0):
    torch.manual_seed(seed)
    model = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    x, y = torch.rand(48, 1, 8, 8), torch.randint(0, 10, (48,))
    return model, (x, y)


def test_the_search_installs_shared_factors_steps_only_the_logits_and_exports_the_one_hot_model():
    model, held = _model_and_data()
    pruner = HalocPruner(
        model, cfg(haloc_alpha_batch=16, haloc_alpha_lr=0.5), steps_per_epoch=5, seed=0, example_batch=held
    )
    assert pruner.layers == ["net.conv2", "net.conv3"]
    assert all(isinstance(model.get_submodule(n), RankSearchConv2d) for n in pruner.layers)
    assert not isinstance(model.get_submodule("net.conv1"), RankSearchConv2d)
    weights = copy.deepcopy(model.state_dict())
    logits = [p.detach().clone() for p in pruner.logits]
    for step in range(1, 6):
        assert pruner.step(step) is False
    after = model.state_dict()
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # weights and BatchNorm statistics untouched
    assert any(not torch.equal(a, b.detach()) for a, b in zip(logits, pruner.logits))
    # the search model with one-hot masks at the ranks about to be fixed ...
    choice = pruner._argmax_ranks()
    searched = copy.deepcopy(model).eval()
    for name, j in choice.items():
        module = searched.get_submodule(name)
        module.mixture = nn.functional.one_hot(torch.tensor(j), len(module.candidates)).float()
    assert pruner.step(pruner.end_step) is True and pruner.frozen
    compact = model.eval()
    # ... equals the exported compact network of plain convs
    assert all(isinstance(compact.get_submodule(n), TuckerConv2d) for n in pruner.layers)
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(compact(x), searched(x), atol=1e-5)
    assert pruner.cost_fraction() <= 0.5 and pruner.metadata()["lowrank"]["ranks"] == {
        n: [pruner.candidates[n][j]] * 2 for n, j in choice.items()
    }


def test_the_feature_map_loss_compares_each_layer_with_the_frozen_parent():
    model, held = _model_and_data(1)
    pruner = HalocPruner(model, cfg(), steps_per_epoch=5, seed=0, example_batch=held)
    model.train()
    x = held[0][:8]
    model(x)
    first = pruner.loss_term()
    assert first is not None and first.requires_grad
    # the same number by hand: each factorised layer's output against the parent's on the same input
    student, teacher = {}, {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: student.__setitem__(n, o))
        for n in pruner.layers
    ]
    hooks += [
        pruner.original.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: teacher.__setitem__(n, o))
        for n in pruner.layers
    ]
    model(x)
    for h in hooks:
        h.remove()
    mse = sum(float(((student[n] - teacher[n]) ** 2).mean().detach()) for n in pruner.layers) / len(pruner.layers)
    assert float(first.detach()) == pytest.approx(pruner.fm_lambda(1) * mse, rel=1e-5) and mse > 0
    assert pruner.fm_lambda(0) == pytest.approx(0.5) and pruner.fm_lambda(pruner.end_step) == pytest.approx(0.01)
    model.eval()
    with torch.no_grad():
        model(x)
    assert pruner.loss_term() is None  # nothing captured outside a training forward
    pruner.fix_ranks(None)
    model.train()
    model(x)
    assert pruner.loss_term() is None  # fine-tuning is plain CE


def test_cost_table_from_file_must_cover_every_layer_and_rank(tmp_path):
    model, held = _model_and_data()
    geo = conv_geometry(model, held[0][:1], ["net.conv2", "net.conv3"])
    table = macs_table(geo, 16)
    path = save_cost_table(tmp_path / "c.json", table, kind="latency", unit="ms")
    assert load_cost_table(path, {"net.conv2": (16, 32)})["layers"] == json.loads(path.read_text())["layers"]
    with pytest.raises(ConfigError, match="rank"):
        load_cost_table(path, {"net.conv2": (8, 16)})
    with pytest.raises(ConfigError, match="cannot be read"):
        load_cost_table(tmp_path / "missing.json", {})


def test_haloc_costs_command_writes_a_table_the_pruner_reads(tmp_path, capsys):
    config = tmp_path / "e.yaml"
    config.write_text(
        "name: e\ndata: {dataset: digits}\nmodel: {arch: small_cnn}\ntrain: {epochs: 2}\n"
        "sparsity: {method: haloc, granularity: lowrank, target_sparsity: 0.5, end_epoch: 1, haloc_rank_multiple: 16}\n"
    )
    out = tmp_path / "lat.json"
    assert main(["haloc-costs", str(config), "--out", str(out), "--min-run-time", "0.001"]) == 0
    data = json.loads(out.read_text())
    assert data["kind"] == "latency" and data["batch"] == 1 and set(data["layers"]) == {"net.conv2", "net.conv3"}
    assert set(data["layers"]["net.conv3"]["ranks"]) == {"16", "32", "48", "64"}
    model, held = _model_and_data()
    pruner = HalocPruner(
        model, cfg(haloc_cost="latency", haloc_cost_table=str(out), haloc_rank_multiple=16), 5, 0, example_batch=held
    )
    assert pruner.costs["net.conv3"].tolist() == [
        data["layers"]["net.conv3"]["ranks"][k] for k in ("16", "32", "48", "64")
    ]
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: e\ndata: {dataset: digits}\nmodel: {arch: small_cnn}\n")
    assert main(["haloc-costs", str(plain), "--out", str(tmp_path / "x.json")]) == 2
    assert "no sparsity entry with method: haloc" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


@pytest.mark.parametrize("favour", ["smallest", "largest"])
def test_fixed_ranks_are_moved_onto_the_budget_and_argmax_alone_without_it(favour):
    model, held = _model_and_data()
    pruner = HalocPruner(model, cfg(haloc_rank_multiple=4), steps_per_epoch=5, seed=0, example_batch=held)
    with torch.no_grad():
        for logits in pruner.logits:  # argmax at one end: far under (smallest) or over (largest) the target
            logits.copy_(
                torch.linspace(1.0, 0.0, len(logits)) if favour == "smallest" else torch.linspace(0.0, 1.0, len(logits))
            )
    pruner._choose()
    argmax = {n: m.choice for n, m in pruner._search_modules().items()}
    moved = pruner._argmax_ranks()

    def cost(choice):
        return sum(float(pruner.costs[n][choice[n]]) for n in pruner.layers)

    assert cost(moved) <= pruner.target
    for n in pruner.layers:  # no single step up still fits: the budget is used
        if moved[n] + 1 < len(pruner.candidates[n]):
            assert cost({**moved, n: moved[n] + 1}) > pruner.target
    assert (cost(argmax) > pruner.target) == (favour == "largest") and moved != argmax
    pruner.cfg = cfg(haloc_rank_multiple=4, haloc_enforce_target=False)
    assert pruner._argmax_ranks() == argmax
