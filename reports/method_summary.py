"""The first screen's sentences about sparsification methods side by side (only where a setting has several).

Each `Finding` carries the numbers it was written from, as in `summary`, which calls
`method_findings` once per setting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.content import Finding
from reports.contract import LOWRANK_GRANULARITY
from reports.labels import format_pct, format_points, join_names, p_words, points_text, sparsity_text
from reports.stats import correction_words

__all__ = ["method_findings"]


def _range_pct(values: pd.Series, digits: int = 1) -> str:
    """ "44.4%" when every value rounds alike, else "44.4% to 46.0%"."""
    low, high = format_pct(float(values.min()), digits), format_pct(float(values.max()), digits)
    return low if low == high else f"{low} to {high}"


def _pairs_words(row: pd.Series) -> str:
    """How many paired examples a method-vs-method test rests on: "360 examples" or "720 pairs over 2 seeds"."""
    n, seeds = int(row["n_paired"]), int(row["n_seeds"])
    return f"{n} examples" if seeds == 1 else f"{n} pairs over {seeds} seeds"


def _level_words(level: pd.DataFrame) -> str:
    """What the families of one level reach: achieved sparsity (of the masked families; a low-rank
    family zeroes no weight and is named) and effective MACs, each as a range."""
    lowrank = level["granularity"] == LOWRANK_GRANULARITY
    masked = level.loc[~lowrank, "achieved_sparsity"]
    words = f"achieved {_range_pct(masked)}" if len(masked) else ""
    if lowrank.any():
        named = join_names([str(label) for label in level.loc[lowrank, "label"]])
        words += ("; " if words else "") + f"{named} low-rank, no zeroed weights"
    macs = level["macs_fraction"].dropna()
    if len(macs):
        words += f", effective MACs {_range_pct(macs, 0)} of dense"
    return words


def _level_finding(level: pd.DataFrame, pairs: pd.DataFrame, label_eps: str, alpha: float, correction: str) -> Finding:
    """Which family keeps most robust accuracy at one level under the headline attack, and by how much."""
    level = level.sort_values("rank")
    best, worst = level.iloc[0], level.iloc[-1]
    target = float(best["target_sparsity"])
    series = str(best["series"])
    head = f"At {sparsity_text(target)} sparsity ({_level_words(level)}) under {series} at eps {label_eps}"
    tied = level[np.isclose(level["accuracy"], best["accuracy"])]

    def versus_dense(row: pd.Series) -> str:
        if not np.isfinite(row["delta_pp"]):
            return ""
        return f", {format_points(row['delta_pp'])} vs dense ({p_words(row['p_adjusted'], alpha, correction)})"

    if len(tied) == len(level):
        text = f"{head}, every method keeps the same robust accuracy: {format_pct(best['accuracy'])}."
    else:
        leaders = join_names(list(tied["label"]))
        verb = "keeps" if len(tied) == 1 else "tie for"
        text = f"{head}, {leaders} {verb} most robust accuracy: {format_pct(best['accuracy'])}{versus_dense(best)}"
        others = level.iloc[len(tied) : -1]
        if len(others):
            text += "; then " + ", ".join(f"{r.label} {format_pct(r.accuracy)}" for r in others.itertuples())
        text += f"; {worst['label']} keeps least: {format_pct(worst['accuracy'])}{versus_dense(worst)}."
    numbers: dict[str, Any] = {
        "target_sparsity": target,
        "series": series,
        "eps_label": label_eps,
        "best": str(best["label"]),
        "best_accuracy": float(best["accuracy"]),
        "best_delta_pp": float(best["delta_pp"]),
        "best_p_adjusted": float(best["p_adjusted"]),
        "worst": str(worst["label"]),
        "worst_accuracy": float(worst["accuracy"]),
        "ranking": [(str(r.label), float(r.accuracy)) for r in level.itertuples()],
        "achieved": {str(r.label): float(r.achieved_sparsity) for r in level.itertuples()},
        "correction": correction,
    }
    runner = pairs[np.isclose(pairs["target_sparsity"], target)] if len(pairs) else pairs
    if len(runner) and len(tied) == 1:
        # the next best on the same examples: is the lead real?
        row = runner[runner["other"] == level.iloc[1]["label"]]
        if len(row):
            r = row.iloc[0]
            text += (
                f" Against the next best, {r['other']}, on the same examples ({_pairs_words(r)}): "
                f"{format_points(r['delta_pp'])} ({p_words(r['p_adjusted'], alpha, correction)}, over the "
                "method-vs-method tests)."
            )
            numbers.update(
                runner_up=str(r["other"]),
                vs_runner_up_pp=float(r["delta_pp"]),
                vs_runner_up_p_adjusted=float(r["p_adjusted"]),
            )
    return Finding("methods", text, numbers)


def _mismatch_finding(level: pd.DataFrame, tolerance: float) -> Finding | None:
    """Said in words when a level's families (`methods.method_families` rows) do not reach the same sparsity."""
    off = level[~level["matched"]]
    if off.empty:
        return None
    target = float(level["target_sparsity"].iloc[0])
    median = float(level["level_achieved"].iloc[0])
    named = [f"{r.label} reaches {format_pct(r.achieved_sparsity)}" for r in off.itertuples()]
    text = (
        f"At the {sparsity_text(target)} level the achieved sparsity is not equal: {join_names(named)}, "
        f"where the level's median is {format_pct(median)} (tolerance: {points_text(tolerance)}); "
        "their comparison with the other methods there is at unequal sparsity."
    )
    numbers = {
        "target_sparsity": target,
        "level_achieved": median,
        "off": {str(r.label): float(r.achieved_sparsity) for r in off.itertuples()},
        "tolerance": tolerance,
    }
    return Finding("methods_sparsity", text, numbers)


def _budget_finding(families: pd.DataFrame) -> Finding | None:
    """Said in words when the methods' training budgets (total epochs, parent's included) differ."""
    known = families.dropna(subset=["total_epochs"])
    budgets = known.groupby("method")["total_epochs"].agg(["min", "max"])
    if known.empty or known["total_epochs"].nunique() < 2:
        return None
    parts = []
    for epochs, group in budgets.groupby("max", sort=True):
        parts.append(f"{join_names(list(group.index))} {int(epochs)} epochs")
    text = (
        "The methods' training budgets differ (total epochs, a dense parent's included): "
        + "; ".join(parts)
        + ". Each change vs dense is against the dense model with the same budget; the comparisons between "
        "methods are not budget-matched."
    )
    return Finding("methods_budget", text, {"total_epochs": budgets["max"].to_dict()})


def method_findings(
    comparison: pd.DataFrame,
    pairs: pd.DataFrame,
    families: pd.DataFrame,
    *,
    label_eps: str,
    alpha: float = 0.05,
    correction: str = "holm",
    tolerance: float,
) -> list[Finding]:
    """Sentences comparing the methods of one setting at each level, under its headline attack.

    Args:
        comparison: `methods.method_comparison` of one setting.
        pairs: `methods.method_pairs` of the same.
        families: `methods.method_families` of the same.
        label_eps: The eps as the sentences write it.
        alpha: Significance level, applied to the adjusted p-values.
        correction: The multiple-comparison correction the p-values carry.
        tolerance: The tolerance `families` was matched with.

    Returns:
        Per level: kind "methods" (who keeps most and least robust accuracy, vs dense and vs the
        next best on the same examples), then "methods_sparsity" where the achieved sparsity is
        not equal; then "methods_budget" where the training budgets differ, and "methods_note" (how
        the comparisons were made). Empty when the setting has fewer than two families at any level.
    """
    headline = comparison[comparison["is_headline"]]
    findings: list[Finding] = []
    for target, level in headline.groupby("target_sparsity", sort=True):
        if level["label"].nunique() < 2:
            continue
        findings.append(_level_finding(level, pairs, label_eps, alpha, correction))
        mismatch = _mismatch_finding(families[np.isclose(families["target_sparsity"], target)], tolerance)
        if mismatch is not None:
            findings.append(mismatch)
    if not findings:
        return []
    budget = _budget_finding(families)
    if budget is not None:
        findings.append(budget)
    findings.append(
        Finding(
            "methods_note",
            "Methods are compared at equal target sparsity, their achieved sparsity and effective MACs shown beside; "
            "robust accuracy is the mean over seeds under the strongest attack at that eps; each method against "
            "the best at its level is tested on the same examples (McNemar, exact, discordant pairs pooled over "
            f"the seeds both share), {correction_words(correction)} (the method-vs-method tests a family apart "
            "from the tests against dense).",
            {"correction": correction, "alpha": alpha},
        )
    )
    return findings
