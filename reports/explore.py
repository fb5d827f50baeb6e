"""Helpers for exploring a finished run in a notebook: show a figure, pick two models to compare, pick a level.

The notebooks in notebooks/ use these instead of copying the logic, so a notebook cell stays a
few readable lines and the choices are tested once, here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.figures import try_figure
from reports.tables import annotated

__all__ = ["show", "PairChoice", "choose_pair", "choose_sparsity"]

log = logging.getLogger(__name__)


def show(make_figure: Callable[..., Figure], /, *args: Any, **kwargs: Any) -> Figure | None:
    """Draw one `reports` figure and display it in the notebook; when the data hold nothing it can show, say why.

    Args:
        make_figure: A figure function such as `fig_accuracy_vs_eps`.
        *args, **kwargs: Its arguments.

    Returns:
        The figure, or None when it was skipped (the reason is logged, see `try_figure`).
    """
    fig = try_figure(make_figure, *args, **kwargs)
    if fig is not None:
        try:
            from IPython.display import display
        except ImportError:  # outside IPython the caller gets the figure and shows it as it likes
            return fig
        display(fig)
    return fig


@dataclass(frozen=True)
class PairChoice:
    """Two models and an attack key to compare example by example, or why there is no such pair.

    Attributes:
        model_a: The reference (a dense model when the setting has one).
        model_b: The model compared with it, or None.
        key: The attack key both were evaluated with, or None.
        reason: Empty when a pair was found; otherwise one sentence saying why not.
    """

    model_a: str | None
    model_b: str | None
    key: str | None
    reason: str = ""


def choose_pair(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    *,
    model_a: str | None = None,
    model_b: str | None = None,
    key: str | None = None,
    eps: float | None = None,
) -> PairChoice:
    """Pick two models of one setting and an attack key to compare on the same examples.

    Defaults: A is the first dense model (else the first model), B the first sparse model other
    than A (else any other model), and the key the attack at `eps` that hurts A most; without one,
    A's strongest attack at any eps; else clean. Only keys both models have outcomes for are used.

    Args:
        results: Results table of one setting (raw or annotated).
        outcomes: Per-example outcomes, or None.
        model_a, model_b, key: Chosen explicitly instead of by default.
        eps: The eps at which the default key is looked for.

    Returns:
        The choice; its `reason` says why when no pair can be compared.
    """
    df = annotated(results)
    ids = list(dict.fromkeys(df["model_id"]))
    dense_ids = list(dict.fromkeys(df.loc[df["is_dense"], "model_id"]))
    a = model_a or (dense_ids[0] if dense_ids else (ids[0] if ids else None))
    others = [m for m in ids if m != a]
    b = model_b or next((m for m in others if m not in dense_ids), others[0] if others else None)
    if outcomes is None:
        return PairChoice(
            a, b, None, "this run has no outcomes.csv.gz, so models cannot be compared example by example"
        )
    if b is None:
        return PairChoice(a, None, None, f"only one model ({a}) in this setting: nothing to compare it with")
    if key is not None:
        return PairChoice(a, b, key)
    shared = set(outcomes.loc[outcomes["model_id"] == a, "key"]) & set(outcomes.loc[outcomes["model_id"] == b, "key"])
    rows = df[(df["model_id"] == a) & df["key"].isin(shared)]
    if rows.empty:
        return PairChoice(a, b, None, f"{a} and {b} share no attack key in outcomes.csv.gz")
    candidates = rows[rows["bounded"] & np.isclose(rows["eps"], eps if eps is not None else np.nan)]
    candidates = candidates if len(candidates) else rows[~rows["is_clean"]]
    candidates = candidates if len(candidates) else rows
    return PairChoice(a, b, str(candidates.sort_values(["accuracy", "key"])["key"].iloc[0]))


def choose_sparsity(results: pd.DataFrame, target: float | None = None) -> float | None:
    """The target sparsity to compare granularities at: `target` if it was trained, else the level most
    granularities share (ties: the higher level).

    Args:
        results: Results table of one setting (raw or annotated).
        target: A wanted level, e.g. 0.7.

    Returns:
        The level as stored in the table, or None when the setting has no sparse model.

    Raises:
        ValueError: If `target` was not trained (the message lists the levels that were).
    """
    df = annotated(results)
    sparse = df[~df["is_dense"]]
    if sparse.empty:
        return None
    levels = np.sort(sparse["target_sparsity"].unique())
    if target is not None:
        match = levels[np.isclose(levels, target)]
        if match.size == 0:
            raise ValueError(f"target sparsity {target} was not trained; choose one of {[float(x) for x in levels]}")
        return float(match[0])
    per_level = sparse.groupby("target_sparsity")["label"].nunique()
    return float(per_level[per_level == per_level.max()].index.max())
