"""Euclidean projections onto structured sparsity sets (StructADMM's Z-step, methods.md 6).

A structured set S = {tensors with at most `keep` non-zero groups} for a partition of the
entries into groups. The nearest point of S to `t` (Frobenius norm) keeps the `keep` groups of
the largest L2 norm unchanged and zeroes the others: dropping a group costs exactly its squared
norm, so the cheapest choice drops the smallest ones. The projection is exact; it is unique up
to ties, which are broken deterministically: among equal norms the lower index is dropped first
(the order of a stable ascending sort, the same as `allocation.channel_granularity_masks`, so a
hard-pruned mask equals the projection's support).

Groups of a weight `W[K, C, R, S]` (linear `W[K, C]` as R = S = 1), as methods.md's notation:

| kind      | group                | groups  |
| --------- | -------------------- | ------- |
| `element` | one weight           | K*C*R*S |
| `filter`  | `W[k, :, :, :]`      | K       |
| `channel` | `W[:, c, :, :]`      | C       |
| `column`  | `W[:, c, r, s]`      | C*R*S   |

`project_rows` works on any table whose rows are the groups (several tensors' slices
concatenated, e.g. a channel's columns in every consumer), so coupled groups project the same way.
"""

from __future__ import annotations

import torch

__all__ = ["GROUP_KINDS", "group_rows", "ungroup_rows", "support", "project_rows", "project"]

GROUP_KINDS: tuple[str, ...] = ("element", "filter", "channel", "column")


def _as4(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t
    if t.dim() == 2:
        return t.reshape(t.shape[0], t.shape[1], 1, 1)
    raise ValueError(f"a conv (4-D) or linear (2-D) weight is expected, got shape {tuple(t.shape)}")


def group_rows(t: torch.Tensor, kind: str) -> torch.Tensor:
    """`t` as a (groups, entries per group) table for `kind` (see the module table)."""
    w = _as4(t)
    k, c, r, s = w.shape
    if kind == "element":
        return w.reshape(-1, 1)
    if kind == "filter":
        return w.reshape(k, c * r * s)
    if kind == "channel":
        return w.transpose(0, 1).reshape(c, k * r * s)
    if kind == "column":
        return w.reshape(k, c * r * s).transpose(0, 1)
    raise ValueError(f"group kind {kind!r} is not one of {', '.join(GROUP_KINDS)}")


def ungroup_rows(table: torch.Tensor, kind: str, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of `group_rows`: a tensor of `shape` from its (groups, entries) table."""
    shape = tuple(shape)
    k, c = shape[0], shape[1]
    r, s = (shape[2], shape[3]) if len(shape) == 4 else (1, 1)
    if kind in ("element", "filter"):
        out = table.reshape(k, c, r, s)
    elif kind == "channel":
        out = table.reshape(c, k, r, s).transpose(0, 1)
    elif kind == "column":
        out = table.transpose(0, 1).reshape(k, c, r, s)
    else:
        raise ValueError(f"group kind {kind!r} is not one of {', '.join(GROUP_KINDS)}")
    return out.reshape(shape).contiguous()


def support(norms: torch.Tensor, keep: int) -> torch.Tensor:
    """Bool (groups,): the `keep` groups of the largest norm (ties: the lower index dropped first)."""
    n = norms.numel()
    keep = max(0, min(int(keep), n))
    kept = torch.ones(n, dtype=torch.bool, device=norms.device)
    kept[torch.argsort(norms.detach().double(), stable=True)[: n - keep]] = False
    return kept


def project_rows(table: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The nearest table with at most `keep` non-zero rows, and the kept rows (bool).

    Args:
        table: (groups, entries): one group per row.
        keep: how many rows may stay non-zero.
    """
    kept = support(table.detach().double().square().sum(1), keep)
    return table * kept[:, None].to(table.dtype), kept


def project(t: torch.Tensor, kind: str, keep: int) -> torch.Tensor:
    """Euclidean projection of one weight onto {at most `keep` non-zero groups of `kind`}.

    Example:
        >>> project(torch.tensor([[3.0, 0.1], [1.0, 2.0]]), "filter", 1)
        tensor([[3.0000, 0.1000],
                [0.0000, 0.0000]])
    """
    table, _ = project_rows(group_rows(t, kind), keep)
    return ungroup_rows(table, kind, t.shape)
