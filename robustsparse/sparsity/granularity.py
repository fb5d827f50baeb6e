"""What the unit is: how a weight is cut into groups for each granularity, and back.

Every granularity except `filter` / `channel` is a *row view* of the weight `W[K, C, R, S]`:
a 2-D table whose rows are the groups.

| view      | rows                                   | row length       |
| --------- | -------------------------------------- | ---------------- |
| `element` | one weight                             | 1                |
| `row`     | `W[k, c, r, :]`                        | S                |
| `kernel`  | `W[k, c, :, :]` (the spatial window)   | R*S              |
| `column`  | `W[:, c, r, s]` (one position, every filter) | K          |
| `cblock`  | `block` consecutive input channels of `W[k, :, r, s]` (1x1 / linear windows) | block |
| `nm`      | `m` consecutive input channels of `W[k, :, r, s]` | m     |

A trailing block shorter than its length (C not a multiple of it) is padded with positions that
never count and are never kept. `kernel` pruning keeps or drops whole rows; `window`, `n:m`
keep the same number of weights in every row (balanced); `window+kernel` drops whole rows and
keeps the same number inside each remaining one. Pointwise layers (1x1 convs, linear layers)
have a one-weight kernel (and kernel row), so `kernel`, `row`, `window` and `window+kernel` use
`cblock` rows there (`pointwise_grouping: channel_block`: a group is `pointwise_block`
consecutive input channels of one filter) or prune them as single weights, recorded as
`element` (`pointwise_grouping: element`). A one-weight group is never called a kernel.
A `column` (filter shape: a column of the GEMM matrix `W.view(K, -1)`) has K weights on every
layer, so it needs no pointwise fallback: on a 1x1 conv or a linear layer it is one input
channel of that layer alone (not the coupled `channel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from robustsparse.sparsity.layers import LayerInfo
from robustsparse.sparsity.settings import SparsityConfig

__all__ = ["RowView", "LayerPlan", "layer_plan", "topk_rows_mask", "group_description"]


# Granularities whose group on a 1x1 conv / linear layer would be a single weight.
POINTWISE_GROUPED: tuple[str, ...] = ("row", "kernel", "window", "window+kernel")


@dataclass(frozen=True)
class RowView:
    """A weight of shape (K, C, R, S) seen as rows of `block` entries (see the module table)."""

    kind: str
    shape: tuple[int, int, int, int]
    block: int

    @property
    def _lines(self) -> int:
        k, _, r, s = self.shape
        return k * r * s

    @property
    def _blocks_per_line(self) -> int:
        return math.ceil(self.shape[1] / self.block)

    @property
    def n_rows(self) -> int:
        k, c, r, s = self.shape
        if self.kind == "element":
            return k * c * r * s
        if self.kind == "row":
            return k * c * r
        if self.kind == "kernel":
            return k * c
        if self.kind == "column":
            return c * r * s
        return self._lines * self._blocks_per_line

    @property
    def padded(self) -> bool:
        return self.kind in ("cblock", "nm") and self.shape[1] % self.block != 0

    def rows(self, t: torch.Tensor, pad: float | bool = 0) -> torch.Tensor:
        """`t` (weight-shaped, any dtype) as a (n_rows, block) table; padding filled with `pad`."""
        k, c, r, s = self.shape
        t = t.reshape(self.shape)
        if self.kind == "element":
            return t.reshape(-1, 1)
        if self.kind == "row":
            return t.reshape(k * c * r, s)
        if self.kind == "kernel":
            return t.reshape(k * c, r * s)
        if self.kind == "column":
            return t.reshape(k, c * r * s).transpose(0, 1)
        lines = t.permute(0, 2, 3, 1).reshape(k * r * s, c)
        width = self._blocks_per_line * self.block
        if width != c:
            filler = torch.full((lines.shape[0], width - c), pad, dtype=t.dtype, device=t.device)
            lines = torch.cat([lines, filler], dim=1)
        return lines.reshape(-1, self.block)

    def unrows(self, table: torch.Tensor) -> torch.Tensor:
        """Inverse of `rows`: a (K, C, R, S) tensor (padding dropped)."""
        k, c, r, s = self.shape
        if self.kind in ("element", "row", "kernel"):
            return table.reshape(self.shape)
        if self.kind == "column":
            return table.transpose(0, 1).reshape(self.shape).contiguous()
        lines = table.reshape(k * r * s, -1)[:, :c]
        return lines.reshape(k, r, s, c).permute(0, 3, 1, 2).contiguous()

    def valid(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool (n_rows, block): True at real weights, False at padding."""
        return self.rows(torch.ones(self.shape, dtype=torch.bool, device=device), pad=False)

    def row_sizes(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Real weights per row (the row length, less padding)."""
        if not self.padded:
            return torch.full((self.n_rows,), self.block, dtype=torch.long, device=device)
        return self.valid(device).sum(dim=1)


@dataclass(frozen=True)
class LayerPlan:
    """How one prunable layer is pruned under a granularity.

    Attributes:
        granularity: the configured granularity, or `element` where a pointwise layer falls
            back to element pruning (`pointwise_grouping: element`).
        view: the row view (None for filter / channel, which couple several tensors).
        balanced: every row keeps the same number of weights (window, n:m).
        kernel_stage: whole rows are dropped first (window+kernel).
    """

    granularity: str
    view: RowView | None
    balanced: bool
    kernel_stage: bool

    def spec(self, keep: int | None = None) -> dict[str, Any]:
        """The JSON-able per-layer description written into metadata (used by the checks)."""
        out: dict[str, Any] = {"granularity": self.granularity}
        if self.view is not None:
            out.update(view=self.view.kind, block=self.view.block)
        if self.balanced:
            out.update(keep=keep if keep is not None else self.view.block, kernel_stage=self.kernel_stage)
        return out


def layer_plan(info: LayerInfo, cfg: SparsityConfig) -> LayerPlan:
    """The row view and rules for pruning `info` under `cfg.granularity`."""
    g = cfg.granularity
    k, c, r, s = info.shape
    if g == "element":
        return LayerPlan(g, RowView("element", info.shape, 1), False, False)
    if g in POINTWISE_GROUPED and info.pointwise:
        if cfg.pointwise_grouping == "element":
            return LayerPlan("element", RowView("element", info.shape, 1), False, False)
        balanced = g in ("window", "window+kernel")
        return LayerPlan(g, RowView("cblock", info.shape, cfg.pointwise_block), balanced, g == "window+kernel")
    if g == "row":
        return LayerPlan(g, RowView("row", info.shape, s), False, False)
    if g == "kernel":
        return LayerPlan(g, RowView("kernel", info.shape, r * s), False, False)
    if g == "column":
        return LayerPlan(g, RowView("column", info.shape, k), False, False)
    if g in ("window", "window+kernel"):
        return LayerPlan(g, RowView("kernel", info.shape, r * s), True, g == "window+kernel")
    if g == "n:m":
        return LayerPlan(g, RowView("nm", info.shape, cfg.m), True, False)
    return LayerPlan(g, None, False, False)  # filter / channel: see allocation.channel_masks


def topk_rows_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool mask keeping the `keep` highest scores of every row (ties: the lower index)."""
    keep = min(keep, scores.shape[1])
    out = torch.zeros_like(scores, dtype=torch.bool)
    if keep > 0:
        # A stable descending sort makes ties deterministic on every device.
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :keep]
        out.scatter_(1, order, True)
    return out


def group_description(spec: dict[str, Any] | None, shape: tuple[int, int, int, int]) -> str:
    """What one group of a layer is, in words, from its metadata spec (`LayerPlan.spec`).

    Examples: `1 weight`, `3x3 kernel`, `16-filter column`, `1x3 kernel row`, `8 input channels`,
    `3 of each 3x3 kernel`, `2 of each 8 input channels`, `whole filter`.
    """
    if not spec:
        return ""
    g = spec.get("granularity")
    if spec.get("view") == "channel" or g in ("filter", "channel"):
        return "whole filter" if g == "filter" else "whole input channel"
    view, block = spec.get("view"), int(spec.get("block", 1))
    k, _, r, s = shape
    unit = {
        "element": "1 weight",
        "row": f"1x{s} kernel row",
        "kernel": f"{r}x{s} kernel",
        "column": f"{k}-filter column",
        "cblock": f"{block} input channels",
        "nm": f"{block} input channels",
    }.get(view, "")
    if "keep" not in spec or not unit:
        return unit
    text = f"{spec['keep']} of each {unit}"
    if spec.get("dense_period"):
        text += f", every {spec['dense_period']}th dense"
    return f"whole {unit}s, then {text}" if spec.get("kernel_stage") else text
