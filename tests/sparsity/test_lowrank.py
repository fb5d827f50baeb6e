"""Tucker-2 factorisation (HALOC, methods.md 15): exactness, truncation, masked mixture, MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustsparse.sparsity import model_cost
from robustsparse.sparsity.lowrank import (
    RankSearchConv2d,
    TuckerConv2d,
    conv_geometry,
    conv_macs,
    factorise_model,
    rank_candidates,
    rank_mask,
    tucker_macs,
)


@pytest.mark.parametrize(
    "c, s, k, stride, padding, dilation, bias",
    [
        (6, 10, 3, 1, 1, 1, False),
        (10, 6, 3, 2, 1, 1, True),
        (5, 5, 3, 1, 2, 2, True),
        (4, 7, (3, 5), (2, 1), (0, 2), 1, True),
        (3, 16, 3, 1, 0, 1, False),
    ],
)
def test_full_rank_factorisation_equals_the_conv(c, s, k, stride, padding, dilation, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(c, s, k, stride=stride, padding=padding, dilation=dilation, bias=bias)
    if bias:
        nn.init.normal_(conv.bias)
    tucker = TuckerConv2d.from_conv(conv)
    x = torch.randn(2, c, 11, 13)
    assert torch.allclose(tucker(x), conv(x), atol=1e-5)
    # the plain convs carry the geometry where it belongs
    assert tucker.core.stride == conv.stride and tucker.first.stride == (1, 1)
    assert (tucker.last.bias is not None) == bias


def _truncated_hosvd(w: torch.Tensor, r: int) -> torch.Tensor:
    """An independent truncated HOSVD reconstruction of rank (r, r), from the unfoldings' SVDs."""
    s, c = w.shape[:2]
    u_out = torch.linalg.svd(w.reshape(s, -1).double())[0][:, :r]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(c, -1).double())[0][:, :r]
    p_out, p_in = u_out @ u_out.T, u_in @ u_in.T
    return torch.einsum("scij,st,cd->tdij", w.double(), p_out, p_in).float()


def _weight_of(layer: TuckerConv2d) -> torch.Tensor:
    """The dense k x k weight a Tucker layer computes."""
    return torch.einsum(
        "bc,abij,sa->scij", layer.first.weight[:, :, 0, 0], layer.core.weight, layer.last.weight[:, :, 0, 0]
    )


def test_rank_slices_are_the_truncated_hosvd_and_the_error_does_not_grow_with_the_rank():
    torch.manual_seed(1)
    conv = nn.Conv2d(12, 16, 3, padding=1, bias=False)
    search = RankSearchConv2d(conv, rank_candidates(12, 16, 2))
    errors = []
    for r in search.candidates:
        sliced = _weight_of(search.compact(r))
        assert torch.allclose(sliced, _truncated_hosvd(conv.weight.detach(), r), atol=1e-5)
        errors.append(float((sliced - conv.weight).detach().norm()))
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:]))
    assert errors[0] > errors[-1] + 1e-3  # truncation does lose something


def test_candidates_are_multiples_of_g_with_equal_ranks():
    assert rank_candidates(32, 64, 8) == (8, 16, 24, 32)
    assert rank_candidates(20, 6, 8) == (6,)  # below g: the only rank is min(C, S)
    conv = nn.Conv2d(16, 24, 3)
    search = RankSearchConv2d(conv, rank_candidates(16, 24, 4))
    for r in search.candidates:
        assert r % 4 == 0 and search.compact(r).ranks == (r, r)


def test_masked_core_forward_equals_the_explicit_mixture_of_candidates():
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=True)
    search = RankSearchConv2d(conv, rank_candidates(8, 12, 2))
    x = torch.randn(3, 8, 9, 9)
    m = torch.softmax(torch.randn(len(search.candidates)), 0)
    explicit = sum(w * search.compact(r)(x) for w, r in zip(m, search.candidates))
    search.mixture = m
    assert torch.allclose(search(x), explicit, atol=1e-5)
    # the mask is what the docstring says: M[a, b] = sum_j m_j [max(a, b) < r_j]
    mask = rank_mask(m, search.candidates)
    a, b = 1, 5
    assert torch.isclose(mask[a, b], sum(w for w, r in zip(m, search.candidates) if max(a, b) < r))


def test_a_one_hot_mixture_equals_the_compact_layer_of_that_rank():
    torch.manual_seed(3)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    search = RankSearchConv2d(conv, (2, 4, 6, 8))
    x = torch.randn(2, 8, 7, 7)
    for j in range(len(search.candidates)):
        search.mixture = nn.functional.one_hot(torch.tensor(j), 4).float()
        masked = search(x)
        search.mixture, search.choice = None, j
        assert torch.allclose(masked, search(x), atol=1e-5)
        assert torch.allclose(search.compact()(x), search(x), atol=1e-6)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.b = nn.Conv2d(16, 12, 3, padding=2, dilation=2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.b(self.a(self.stem(x))).mean((2, 3)))


def test_the_macs_formula_matches_the_hook_count():
    torch.manual_seed(4)
    net = _Net()
    x = torch.zeros(1, 3, 15, 15)
    geo = conv_geometry(net, x, ["a", "b"])
    dense = model_cost(net, x)["dense_macs"]
    ranks = {"a": (4, 6), "b": (5, 3)}
    factorise_model(net, ranks)
    counted = model_cost(net, x)["dense_macs"]
    formula = dense - sum(conv_macs(g) for g in geo.values()) + sum(tucker_macs(geo[n], *ranks[n]) for n in ranks)
    assert counted == formula and counted != dense
