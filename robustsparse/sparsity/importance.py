"""Which units matter: magnitude scores of elements, rows and channels (L1 or L2).

Scores of whole groups are the L1 norm (sum of |w|, Mao et al. 2017) or the L2 norm. For a
ranking across layers (`allocation: global`) groups of different sizes are compared through
the norm per weight: the mean |w| (L1) or the root-mean-square (L2).
"""

from __future__ import annotations

import torch

__all__ = ["element_scores", "row_scores", "channel_scores_from_rows", "channel_scores_from_columns"]


def element_scores(weight: torch.Tensor) -> torch.Tensor:
    """|w| (L1 and L2 rank single weights the same way)."""
    return weight.detach().abs().float()


def row_scores(table: torch.Tensor, importance: str, sizes: torch.Tensor | None = None) -> torch.Tensor:
    """The norm of every row of a (groups, block) table; padding must hold zeros.

    Args:
        table: weights arranged one group per row.
        importance: `l1` or `l2`.
        sizes: real weights per row; when given, the norm is divided by the size (L1) or its
            square root (L2), so groups of different sizes compare fairly.
    """
    table = table.detach().float()
    if importance == "l1":
        score = table.abs().sum(dim=1)
        return score / sizes.to(score) if sizes is not None else score
    score = table.square().sum(dim=1)
    if sizes is not None:
        score = score / sizes.to(score)
    return score.sqrt()


def _finish(sum_abs_or_sq: torch.Tensor, size: int, importance: str, normalize: bool) -> torch.Tensor:
    if importance == "l1":
        return sum_abs_or_sq / size if normalize else sum_abs_or_sq
    return (sum_abs_or_sq / size).sqrt() if normalize else sum_abs_or_sq.sqrt()


def channel_scores_from_rows(weight: torch.Tensor, importance: str, normalize: bool) -> torch.Tensor:
    """Score of every output channel (filter) of a conv/linear weight: the norm of `W[k, ...]`."""
    rows = weight.detach().float().reshape(weight.shape[0], -1)
    acc = rows.abs().sum(1) if importance == "l1" else rows.square().sum(1)
    return _finish(acc, rows.shape[1], importance, normalize)


def channel_scores_from_columns(columns: list[torch.Tensor], importance: str, normalize: bool) -> torch.Tensor:
    """Score of every input channel over all its consumers.

    Args:
        columns: one (channels, weights per channel) table per consumer.
        importance / normalize: as in `row_scores`.
    """
    acc = None
    size = 0
    for col in columns:
        col = col.detach().float()
        part = col.abs().sum(1) if importance == "l1" else col.square().sum(1)
        acc = part if acc is None else acc + part.to(acc.device)
        size += col.shape[1]
    return _finish(acc, size, importance, normalize)
