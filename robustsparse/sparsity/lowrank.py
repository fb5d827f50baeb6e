"""Tucker-2 low-rank convolutions: HOSVD factorisation, rank search modules, MACs and per-layer tables.

A k x k convolution W (S x C x k x k) becomes three plain convolutions (methods.md 15):

    1x1 C -> r_in  (input factor U_in^T)  ->  k x k r_in -> r_out (core G, the conv's stride,
    padding, dilation)  ->  1x1 r_out -> S (output factor U_out, the conv's bias)

initialised by HOSVD: U_out the leading left singular vectors of the mode-1 (output) unfolding,
U_in those of the mode-2 (input) unfolding, G = W x1 U_out^T x2 U_in^T. At full rank the three
convs equal the original; a leading slice of the factors is exactly the truncated HOSVD of that
rank (the core's entries depend only on their own singular vectors), so one set of maximum-rank
factors holds every rank candidate.

`RankSearchConv2d` is the search-time layer: shared maximum-rank factors, rank candidates
(multiples of g, equal input and output rank) and either a mixture of candidates (one forward
with the core multiplied by a rank mask) or one chosen candidate (the leading slices).
`TuckerConv2d` is the compact layer that checkpoints hold; `factorise_model` rebuilds it from
the ranks in a model's metadata.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.sparsity.accounting import eval_forward_with_hooks

__all__ = [
    "TuckerConv2d",
    "RankSearchConv2d",
    "ConvGeometry",
    "hosvd",
    "rank_candidates",
    "rank_mask",
    "conv_macs",
    "tucker_macs",
    "conv_geometry",
    "compressible_convs",
    "set_module",
    "factorise_model",
    "lowrank_ranks",
    "lowrank_layer_table",
]


def hosvd(weight: torch.Tensor, rank_in: int, rank_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truncated Tucker-2 HOSVD of a conv weight (S, C, kh, kw), factors ordered by energy.

    Returns:
        (u_in (C, rank_in), core (rank_out, rank_in, kh, kw), u_out (S, rank_out)), so that
        W ~ core x1 u_out x2 u_in (exact at full rank).

    Raises:
        ValueError: a rank above what the unfolding has (C, S*kh*kw for the input; S, C*kh*kw for
            the output) or below 1.
    """
    w = weight.detach().to(torch.float64)
    s, c = w.shape[:2]
    max_in, max_out = min(c, w[0].numel() // c * s), min(s, w[0].numel())
    if not (1 <= rank_in <= max_in and 1 <= rank_out <= max_out):
        raise ValueError(f"ranks ({rank_in}, {rank_out}) out of range for a weight {tuple(w.shape)}")
    u_out = torch.linalg.svd(w.reshape(s, -1), full_matrices=False).U[:, :rank_out]
    u_in = torch.linalg.svd(w.transpose(0, 1).reshape(c, -1), full_matrices=False).U[:, :rank_in]
    core = torch.einsum("scij,sa,cb->abij", w, u_out, u_in)
    dtype = weight.dtype
    return u_in.to(dtype), core.to(dtype), u_out.to(dtype)


def rank_candidates(in_channels: int, out_channels: int, multiple: int) -> tuple[int, ...]:
    """The rank candidates of a layer: multiples of `multiple` up to min(C, S) (the smallest
    of C and S alone when it is below `multiple`); input and output rank are equal."""
    top = min(in_channels, out_channels)
    found = tuple(range(multiple, top + 1, multiple))
    return found or (top,)


def rank_mask(mixture: torch.Tensor, candidates: Sequence[int]) -> torch.Tensor:
    """The core mask M[a, b] = sum_j m_j [max(a, b) < r_j] of a candidate mixture (R x R, R = max r_j)."""
    top = max(candidates)
    ranks = torch.as_tensor(list(candidates), device=mixture.device)
    index = torch.arange(top, device=mixture.device)
    per_rank = ((index[:, None] < ranks[None, :]).to(mixture.dtype) * mixture[None, :]).sum(1)  # mask_r[a]
    return per_rank[torch.maximum(index[:, None], index[None, :])]


def _conv(in_ch: int, out_ch: int, kernel: int | tuple[int, int] = 1, bias: bool = False, **geometry: Any) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, bias=bias, **geometry)


def _geometry(conv: nn.Conv2d) -> dict[str, Any]:
    return {
        "stride": conv.stride,
        "padding": conv.padding,
        "dilation": conv.dilation,
        "padding_mode": conv.padding_mode,
    }


class TuckerConv2d(nn.Module):
    """A conv as three plain convs: 1x1 C -> rank_in, k x k rank_in -> rank_out, 1x1 rank_out -> S.

    The first 1x1 runs at input resolution (it commutes with zero padding: it has no bias); the
    core carries the stride, padding and dilation; the last carries the bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: tuple[int, int],
        rank_in: int,
        rank_out: int,
        *,
        bias: bool,
        stride: tuple[int, int] = (1, 1),
        padding: Any = (0, 0),
        dilation: tuple[int, int] = (1, 1),
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        self.first = _conv(in_channels, rank_in)
        self.core = _conv(
            rank_in,
            rank_out,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            padding_mode=padding_mode,
        )
        self.last = _conv(rank_out, out_channels, bias=bias)

    @property
    def ranks(self) -> tuple[int, int]:
        """(rank_in, rank_out)."""
        return self.core.in_channels, self.core.out_channels

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, rank_in: int | None = None, rank_out: int | None = None) -> TuckerConv2d:
        """The HOSVD factorisation of `conv` (full rank by default: equal to `conv`)."""
        s, c, kh, kw = conv.weight.shape
        rank_in = min(c, s * kh * kw) if rank_in is None else rank_in
        rank_out = min(s, c * kh * kw) if rank_out is None else rank_out
        u_in, core, u_out = hosvd(conv.weight, rank_in, rank_out)
        out = cls(c, s, (kh, kw), rank_in, rank_out, bias=conv.bias is not None, **_geometry(conv))
        with torch.no_grad():
            out.first.weight.copy_(u_in.t()[:, :, None, None])
            out.core.weight.copy_(core)
            out.last.weight.copy_(u_out[:, :, None, None])
            if conv.bias is not None:
                out.last.bias.copy_(conv.bias)
        return out.to(conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))


class RankSearchConv2d(nn.Module):
    """A conv's shared maximum-rank Tucker-2 factors and its rank candidates, for the rank search.

    `mixture` (per-candidate weights summing to one, set by the search before a forward) gives
    the mixture of the candidates in one pass: the core times `rank_mask(mixture)`; otherwise
    the candidate `choice` (an index) runs on the leading slices, as its compact layer would.
    """

    def __init__(self, conv: nn.Conv2d, candidates: Sequence[int]) -> None:
        super().__init__()
        self.candidates = tuple(int(r) for r in candidates)
        self.factors = TuckerConv2d.from_conv(conv, max(self.candidates), max(self.candidates))
        self.mixture: torch.Tensor | None = None
        self.choice = len(self.candidates) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.factors
        if self.mixture is None:
            r = self.candidates[self.choice]
            z = F.conv2d(x, f.first.weight[:r])
            z = f.core._conv_forward(z, f.core.weight[:r, :r], None)
            return F.conv2d(z, f.last.weight[:, :r], f.last.bias)
        mask = rank_mask(self.mixture.to(f.core.weight.dtype), self.candidates)
        z = f.first(x)
        z = f.core._conv_forward(z, f.core.weight * mask[:, :, None, None], None)
        return f.last(z)

    def compact(self, rank: int | None = None) -> TuckerConv2d:
        """The compact layer of rank `rank` (default: the current choice): copies of the leading slices."""
        r = self.candidates[self.choice] if rank is None else int(rank)
        f = self.factors
        s, c = f.last.out_channels, f.first.in_channels
        out = TuckerConv2d(c, s, f.core.kernel_size, r, r, bias=f.last.bias is not None, **_geometry(f.core)).to(
            f.core.weight.device
        )
        with torch.no_grad():
            out.first.weight.copy_(f.first.weight[:r])
            out.core.weight.copy_(f.core.weight[:r, :r])
            out.last.weight.copy_(f.last.weight[:, :r])
            if f.last.bias is not None:
                out.last.bias.copy_(f.last.bias)
        return out


@dataclass(frozen=True)
class ConvGeometry:
    """One conv's channels, kernel and spatial sizes for one example (H, W in; H', W' out)."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]


def conv_macs(g: ConvGeometry) -> int:
    """MACs of the original conv for one example: H'W' S C k^2."""
    return g.out_hw[0] * g.out_hw[1] * g.out_channels * g.in_channels * g.kernel[0] * g.kernel[1]


def tucker_macs(g: ConvGeometry, rank_in: int, rank_out: int) -> int:
    """MACs of its Tucker-2 form for one example: H W C r_in + H'W' r_in r_out k^2 + H'W' r_out S."""
    hw, out_hw = g.in_hw[0] * g.in_hw[1], g.out_hw[0] * g.out_hw[1]
    return (
        hw * g.in_channels * rank_in
        + out_hw * rank_in * rank_out * g.kernel[0] * g.kernel[1]
        + (out_hw * rank_out * g.out_channels)
    )


@torch.no_grad()
def conv_geometry(model: nn.Module, example: torch.Tensor, names: Sequence[str]) -> dict[str, ConvGeometry]:
    """The geometry of the convs `names` of `model` on `example` (one forward with hooks, eval mode)."""
    modules = dict(model.named_modules())
    found: dict[str, ConvGeometry] = {}

    def hook(name: str):
        def record(module: nn.Conv2d, inputs: Any, output: torch.Tensor) -> None:
            found[name] = ConvGeometry(
                module.in_channels,
                module.out_channels,
                tuple(module.kernel_size),
                tuple(inputs[0].shape[-2:]),
                tuple(output.shape[-2:]),
            )

        return record

    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    eval_forward_with_hooks(model, example, handles)
    return found


def compressible_convs(
    model: nn.Module, *, keep_first_conv_dense: bool = True, keep_dense: Sequence[str] = ()
) -> list[str]:
    """The convs a low-rank method factorises: k x k (k > 1), ungrouped, not the stem when
    `keep_first_conv_dense`, not matching a `keep_dense` pattern (1x1 convs, shortcuts and linear
    layers stay dense)."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    out = []
    for i, (name, conv) in enumerate(convs):
        if i == 0 and keep_first_conv_dense:
            continue
        if conv.groups != 1 or conv.kernel_size == (1, 1) or any(fnmatch(name, p) for p in keep_dense):
            continue
        out.append(name)
    return out


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule `name` (dotted) of `model` by `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def factorise_model(model: nn.Module, ranks: Mapping[str, Sequence[int]]) -> nn.Module:
    """Replace every conv named in `ranks` by its `TuckerConv2d` of ranks (r_in, r_out), in place.

    The factors come from the conv's current weights (HOSVD); loading a checkpoint then
    overwrites them. Returns `model`.

    Raises:
        ValueError: a name is not a conv of `model`, or a rank is out of range.
    """
    modules = dict(model.named_modules())
    for name, (r_in, r_out) in ranks.items():
        conv = modules.get(name)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"low-rank layer {name!r} is not a conv of the model")
        set_module(model, name, TuckerConv2d.from_conv(conv, int(r_in), int(r_out)))
    return model


def lowrank_ranks(meta: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """The per-layer ranks a model's metadata records (`meta["sparsity"]["lowrank"]["ranks"]`; {} when none)."""
    sparsity = meta.get("sparsity") if isinstance(meta, Mapping) else None
    lowrank = sparsity.get("lowrank") if isinstance(sparsity, Mapping) else None
    ranks = lowrank.get("ranks") if isinstance(lowrank, Mapping) else None
    if not isinstance(ranks, Mapping):
        return {}
    return {str(name): (int(r[0]), int(r[1])) for name, r in ranks.items()}


@torch.no_grad()
def lowrank_layer_table(model: nn.Module, example: torch.Tensor) -> pd.DataFrame:
    """One row per `TuckerConv2d` of `model`: its ranks, parameters and MACs beside the conv's.

    Columns: layer, shape (S x C x kh x kw of the original conv), rank_in, rank_out, params,
    dense_params, macs, dense_macs (one example).
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, TuckerConv2d)}
    inner = {f"{n}.first": n for n in layers}
    sizes: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
    modules = dict(model.named_modules())

    def hook(name: str):
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            sizes[name] = (tuple(inputs[0].shape[-2:]), sizes.get(name, ((0, 0), (0, 0)))[1])

        return record

    def out_hook(name: str):
        def record(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            sizes[name] = (sizes[name][0], tuple(output.shape[-2:]))

        return record

    handles = [modules[f].register_forward_hook(hook(n)) for f, n in inner.items()]
    handles += [modules[f"{n}.core"].register_forward_hook(out_hook(n)) for n in layers]
    eval_forward_with_hooks(model, example, handles)
    rows = []
    for name, layer in layers.items():
        r_in, r_out = layer.ranks
        c, s, k = layer.first.in_channels, layer.last.out_channels, tuple(layer.core.kernel_size)
        g = ConvGeometry(c, s, k, *sizes[name])
        bias = int(layer.last.bias is not None) * s
        rows.append(
            {
                "layer": name,
                "shape": f"{s}x{c}x{k[0]}x{k[1]}",
                "rank_in": r_in,
                "rank_out": r_out,
                "params": sum(p.numel() for p in layer.parameters()),
                "dense_params": s * c * k[0] * k[1] + bias,
                "macs": tucker_macs(g, r_in, r_out),
                "dense_macs": conv_macs(g),
            }
        )
    return pd.DataFrame(
        rows, columns=["layer", "shape", "rank_in", "rank_out", "params", "dense_params", "macs", "dense_macs"]
    )
