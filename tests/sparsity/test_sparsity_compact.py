"""Compaction of filter/channel-pruned models: physically smaller, same outputs, residual streams intact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsparse.errors import ModelError
from robustsparse.sparsity import CampfirePruner, compact_model, model_cost, prune_one_shot


def _check_compaction(model: nn.Module, pruner: CampfirePruner, x: torch.Tensor) -> nn.Module:
    small = compact_model(model, pruner.masks)
    model.eval()
    small.eval()
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5, rtol=0)
    n_small = sum(p.numel() for p in small.parameters())
    n_big = sum(p.numel() for p in model.parameters())
    assert n_small < n_big
    masked_cost = model_cost(model, x[:1], pruner.masks)
    small_cost = model_cost(small, x[:1])
    # every zero the channel pruning made is physically gone
    assert small_cost["dense_macs"] == masked_cost["effective_macs"] < masked_cost["dense_macs"]
    return small


@pytest.mark.parametrize("granularity", ["filter", "channel"])
@pytest.mark.parametrize("target", [0.5, 0.7])
def test_tiny_net_compacts_with_the_same_outputs(tiny_net, tiny_batch, granularity: str, target: float) -> None:
    pruner = prune_one_shot(tiny_net, granularity, target)
    small = _check_compaction(tiny_net, pruner, tiny_batch[0])
    assert small.block_conv1.out_channels < 16 and small.block_bn1.num_features == small.block_conv1.out_channels
    assert small.block_conv2.in_channels == small.block_conv1.out_channels
    assert small.block_conv2.out_channels == 16  # the residual stream keeps its width
    assert small.fc1.in_features == small.conv3.out_channels * 4
    # train mode too (BatchNorm on batch statistics): a removed channel was exactly zero
    tiny_net.train()
    small.train()
    with torch.no_grad():
        assert torch.allclose(small(tiny_batch[0]), tiny_net(tiny_batch[0]), atol=1e-5, rtol=0)


def _registry_model(arch: str, image_size: int) -> nn.Module:
    models = pytest.importorskip("robustsparse.models")
    if arch not in models.list_models():
        pytest.skip(f"{arch} is not in the model registry yet")
    torch.manual_seed(0)
    model = models.create_model(
        arch, num_classes=10, in_channels=3, image_size=image_size, mean=(0.5,) * 3, std=(0.25,) * 3
    )
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model


@pytest.mark.parametrize(
    ("arch", "granularity"), [("resnet20", "filter"), ("vgg16_bn", "filter"), ("resnet20", "channel")]
)
def test_registry_models_compact_with_the_same_outputs(arch: str, granularity: str) -> None:
    model = _registry_model(arch, 32)
    pruner = prune_one_shot(model, granularity, 0.5)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    small = _check_compaction(model, pruner, x)
    if arch == "resnet20":  # block outputs feed the residual additions and keep their width
        for name, module in model.named_modules():
            if name.endswith("conv2"):
                assert small.get_submodule(name).out_channels == module.out_channels


def test_untraceable_model_is_refused_for_channel_granularities() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3)
            self.b = nn.Conv2d(8, 8, 3)
            self.c = nn.Conv2d(8, 8, 3)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            x = self.b(self.a(x))
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.fc(self.c(x).mean((2, 3)))

    with pytest.raises(ModelError, match="torch.fx"):
        prune_one_shot(Branchy(), "filter", 0.5)
    prune_one_shot(Branchy(), "kernel", 0.5)  # the other granularities do not need the graph
