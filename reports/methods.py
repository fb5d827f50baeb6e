"""Sparsification methods side by side at equal sparsity: the families compared, how far apart their achieved
sparsity and compute are, their robust accuracy, and paired tests between them on the same examples.

A setting compares methods when its sparse models come from more than one method (the `method`
column of results.csv and meta.json). The unit of comparison is the model family of
`labels.annotate` (its `label`: method/granularity, plus the variant): families are matched by
target sparsity, and their achieved sparsity and effective MACs are shown beside the accuracies.
A family whose achieved sparsity lies more than `SPARSITY_TOLERANCE` away from the other families
of its level is flagged (`matched` False) and named in words, never silently compared.

Every function returns a DataFrame of raw numbers (fractions, points); `build` writes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.compression import model_costs
from reports.contract import LOWRANK_GRANULARITY
from reports.stats import adjust_p_values, mcnemar_exact, paired_difference_interval, pareto_mask
from reports.tables import (
    aggregate_accuracy,
    annotated,
    grid_deltas,
    model_deltas,
    robust_vs_clean,
    strongest_series,
)

__all__ = [
    "PAIR_COLUMNS",
    "SPARSITY_TOLERANCE",
    "sparse_methods",
    "compares_methods",
    "method_families",
    "method_comparison",
    "method_pairs",
    "method_front",
]

#: The columns of `method_pairs` (the report shows them less setting, target_sparsity and n_seeds).
PAIR_COLUMNS: list[str] = [
    "setting",
    "target_sparsity",
    "sparsity_pct",
    "series",
    "best",
    "other",
    "best_accuracy",
    "other_accuracy",
    "delta_pp",
    "best_only",
    "other_only",
    "n_paired",
    "n_seeds",
    "delta_low_pp",
    "delta_high_pp",
    "p_value",
    "p_adjusted",
]

#: How far (as a fraction) a family's achieved sparsity may lie from the median of its level's
#: families and still count as "equal sparsity" (one percentage point).
SPARSITY_TOLERANCE = 0.01

_FAMILY = ["setting", "method", "granularity", "label", "target_sparsity", "sparsity_pct"]
_AT_EPS = dict(rtol=1e-6, atol=1e-9)


def sparse_methods(results: pd.DataFrame) -> list[str]:
    """The distinct methods of the sparse models in `results`, sorted."""
    df = annotated(results)
    return sorted(df.loc[~df["is_dense"], "method"].astype(str).unique())


def compares_methods(results: pd.DataFrame) -> bool:
    """True when the sparse models of `results` come from more than one method."""
    return len(sparse_methods(results)) > 1


def _meta_numbers(models: pd.DataFrame, results: pd.DataFrame, meta: pd.DataFrame | None) -> pd.DataFrame:
    """Per model: achieved sparsity over all weights, the effective MACs as a fraction of the
    setting's dense model (`compression.model_costs`: a low-rank model's own `dense_macs` are its
    smaller network's), total epochs."""
    out = pd.DataFrame({"model_id": models["model_id"]})
    wanted = ["achieved_sparsity_all", "total_epochs"]
    if meta is None:
        for col in wanted:
            out[col] = np.nan
    else:
        known = meta.drop_duplicates("model_id").set_index("model_id")
        for col in wanted:
            values = pd.to_numeric(known[col], errors="coerce") if col in known.columns else pd.Series(dtype=float)
            out[col] = out["model_id"].map(values).astype(float)
    costs = model_costs(results, meta).set_index("model_id")["macs_fraction"]
    out["macs_fraction"] = out["model_id"].map(costs).astype(float)
    return out


def method_families(
    results: pd.DataFrame, meta: pd.DataFrame | None = None, *, tolerance: float = SPARSITY_TOLERANCE
) -> pd.DataFrame:
    """The sparse families of a run with what makes their sparsity comparable, one row per family.

    Args:
        results: Results table (raw or annotated).
        meta: Per-model metadata (achieved sparsity over all weights, effective MACs, total epochs).
        tolerance: How far a family's achieved sparsity may lie from its level's median (fraction).

    Returns:
        Columns setting, method, granularity, label, target_sparsity, sparsity_pct, n_seeds,
        achieved_sparsity (prunable weights, mean over seeds), achieved_sparsity_all, macs_fraction
        (effective / dense MACs), total_epochs (NaN where meta.json lacks them),
        level_achieved (median achieved sparsity of the level's families), off_level_pp (achieved
        minus that median, points), off_target_pp (achieved minus target, points) and matched
        (|off_level_pp| within `tolerance`; always true for a low-rank family, which zeroes no
        weight: it is compared by its macs_fraction, and left out of its level's median).
    """
    df = annotated(results)
    models = df[~df["is_dense"]].drop_duplicates("model_id")
    models = models[["model_id", *_FAMILY, "achieved_sparsity"]].merge(
        _meta_numbers(models, results, meta), on="model_id"
    )
    out = (
        models.groupby(_FAMILY, sort=True, dropna=False)
        .agg(
            n_seeds=("model_id", "nunique"),
            achieved_sparsity=("achieved_sparsity", "mean"),
            achieved_sparsity_all=("achieved_sparsity_all", "mean"),
            macs_fraction=("macs_fraction", "mean"),
            total_epochs=("total_epochs", "mean"),
        )
        .reset_index()
    )
    # a low-rank family zeroes no weight (achieved 0 by definition): it is not held to the level's
    # sparsity, and does not pull the level's median down; its compute is its macs_fraction
    lowrank = out["granularity"] == LOWRANK_GRANULARITY
    masked = out["achieved_sparsity"].where(~lowrank)
    out["level_achieved"] = masked.groupby([out["setting"], out["target_sparsity"]]).transform("median")
    out["off_level_pp"] = (out["achieved_sparsity"] - out["level_achieved"]) * 100.0
    out["off_target_pp"] = (out["achieved_sparsity"] - out["target_sparsity"]) * 100.0
    # a tiny slack so that a gap of exactly the tolerance counts as matched despite float rounding
    out["matched"] = (out["off_level_pp"].abs() <= tolerance * 100.0 + 1e-9) | lowrank
    return out


def _series_at(df: pd.DataFrame, eps: float) -> list[str]:
    """The eps-budget attack configurations run at `eps`, in order of appearance."""
    at = df[df["bounded"] & np.isclose(df["eps"].astype(float), eps, **_AT_EPS)]
    return list(dict.fromkeys(at["series"]))


def method_comparison(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    meta: pd.DataFrame | None = None,
    *,
    eps: float,
    correction: str = "holm",
    tolerance: float = SPARSITY_TOLERANCE,
) -> pd.DataFrame:
    """Every sparse family at one eps, per attack: accuracy, its change vs dense, and its rank at its level.

    The change vs dense, its interval and p-values are exactly those of `tables.grid_deltas` (each
    model against the dense model with its training budget; McNemar on the same examples, pooled
    over seeds; `correction` over every test of the setting), so this table, the change-vs-dense
    tables and the heatmaps agree cell for cell.

    Args:
        results: Results table of the run (raw or annotated).
        outcomes: Per-example outcomes (McNemar tests and the per-example worst case).
        meta: Per-model metadata.
        eps: The eps (as stored).
        correction: Multiple-comparison correction (`stats.CORRECTIONS`).
        tolerance: See `method_families`.

    Returns:
        One row per family x attack configuration at `eps`: the `method_families` columns, series,
        is_headline (the attack with the lowest dense accuracy at `eps`), eps_label, accuracy
        (mean over seeds), dense_accuracy, delta_pp, delta_low_pp, delta_high_pp, p_value,
        p_adjusted, clean_accuracy and robust_accuracy (worst case over every attack at `eps`, per
        example where outcomes allow; mean over seeds), and rank (1: the highest accuracy among the
        families of the same setting, level and attack).
    """
    df = annotated(results)
    families = method_families(df, meta, tolerance=tolerance)
    rows = []
    for _, sub in df.groupby("setting", sort=False):
        series_at = _series_at(sub, eps)
        if not series_at or sub["is_dense"].all():
            continue
        agg = aggregate_accuracy(sub)
        headline = strongest_series(agg, eps)
        at = agg[~agg["is_dense"] & agg["bounded"] & np.isclose(agg["eps_key"], eps, **_AT_EPS)]
        part = at[[*_FAMILY, "series", "eps_label", "accuracy"]].copy()
        if sub["is_dense"].any():
            grid = grid_deltas(model_deltas(sub, outcomes, meta, correction=correction), correction=correction)
            grid = grid[grid["bounded"] & np.isclose(grid["eps_key"], eps, **_AT_EPS)]
            stats_cols = ["dense_accuracy", "delta_pp", "delta_low_pp", "delta_high_pp", "p_value", "p_adjusted"]
            part = part.merge(grid[["label", "target_sparsity", "series", *stats_cols]], how="left")
        per_model = robust_vs_clean(sub, meta, eps=eps, outcomes=outcomes)
        per_family = (
            per_model[~per_model["is_dense"]]
            .groupby(["label", "target_sparsity"])[["clean_accuracy", "robust_accuracy"]]
            .mean()
            .reset_index()
        )
        part = part.merge(per_family, on=["label", "target_sparsity"], how="left")
        part["is_headline"] = part["series"] == headline
        rows.append(part)
    stats_cols = ["dense_accuracy", "delta_pp", "delta_low_pp", "delta_high_pp", "p_value", "p_adjusted"]
    if not rows:
        return pd.DataFrame(columns=[*families.columns, "series", "is_headline", "eps_label", "accuracy", *stats_cols])
    out = pd.concat(rows, ignore_index=True)
    for col in stats_cols:
        if col not in out.columns:
            out[col] = np.nan
    out = families.merge(out, on=_FAMILY, how="inner")
    out = out.sort_values(
        ["setting", "target_sparsity", "is_headline", "series", "accuracy", "label"],
        ascending=[True, True, False, True, False, True],
        kind="stable",
    ).reset_index(drop=True)
    out["rank"] = out.groupby(["setting", "target_sparsity", "series"]).cumcount() + 1
    return out


def _keyed(df: pd.DataFrame, series: str, eps: float) -> pd.DataFrame:
    """Per sparse model: its attack key for `series` at `eps`, with its family and seed."""
    rows = df[~df["is_dense"] & (df["series"] == series) & np.isclose(df["eps"].astype(float), eps, **_AT_EPS)]
    return rows[["model_id", "key", "seed", "setting", "label", "target_sparsity"]]


def _pair_counts(a: pd.DataFrame, b: pd.DataFrame, outcomes: pd.DataFrame) -> tuple[int, int, int, int]:
    """Discordant counts of two families, pooled over the seeds both have: (a_only, b_only, n_paired, n_seeds)."""
    a_only = b_only = n = seeds = 0
    for seed in sorted(set(a["seed"]) & set(b["seed"])):
        ra, rb = a[a["seed"] == seed].iloc[0], b[b["seed"] == seed].iloc[0]
        oa = outcomes[(outcomes["model_id"] == ra["model_id"]) & (outcomes["key"] == ra["key"])]
        ob = outcomes[(outcomes["model_id"] == rb["model_id"]) & (outcomes["key"] == rb["key"])]
        both = oa[["example", "correct"]].merge(ob[["example", "correct"]], on="example", suffixes=("_a", "_b"))
        if both.empty:
            continue
        ca, cb = both["correct_a"].astype(bool), both["correct_b"].astype(bool)
        a_only += int((ca & ~cb).sum())
        b_only += int((~ca & cb).sum())
        n += len(both)
        seeds += 1
    return a_only, b_only, n, seeds


def method_pairs(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    comparison: pd.DataFrame,
    *,
    eps: float,
    correction: str = "holm",
) -> pd.DataFrame:
    """The most robust family of each level against every other family there, on the same examples.

    Under each setting's headline attack at `eps` (`method_comparison`'s `is_headline` rows), the
    family ranked first at a level is paired with each other family of that level, seed by seed
    (same seed, same examples), and the discordant examples are pooled over the shared seeds:
    McNemar's exact test, the exact interval of the paired difference, and `correction` over the
    setting's method-vs-method tests (a family of its own, apart from the tests against dense).

    Args:
        results: Results table (raw or annotated).
        outcomes: Per-example outcomes; without them the table is empty.
        comparison: `method_comparison` of the same results at `eps`.
        eps: The eps (as stored).
        correction: Multiple-comparison correction (`stats.CORRECTIONS`).

    Returns:
        One row per (setting, level, other family): setting, target_sparsity, sparsity_pct, series,
        best, other, best_accuracy and other_accuracy (`comparison`'s means over seeds), delta_pp
        (best minus other on the paired examples), best_only, other_only, n_paired, n_seeds, delta_low_pp, delta_high_pp, p_value,
        p_adjusted.
    """
    columns = PAIR_COLUMNS
    if outcomes is None or comparison.empty:
        return pd.DataFrame(columns=columns)
    df = annotated(results)
    rows = []
    for (setting, target), level in comparison[comparison["is_headline"]].groupby(
        ["setting", "target_sparsity"], sort=True
    ):
        level = level.sort_values("rank")
        if len(level) < 2:
            continue
        series = str(level["series"].iloc[0])
        keyed = _keyed(df[df["setting"] == setting], series, eps)
        keyed = keyed[np.isclose(keyed["target_sparsity"], target)]
        best = str(level["label"].iloc[0])
        for other in level["label"].iloc[1:]:
            a_only, b_only, n, seeds = _pair_counts(
                keyed[keyed["label"] == best], keyed[keyed["label"] == other], outcomes
            )
            if n == 0:
                continue
            low, high = paired_difference_interval(b_only, a_only, n)
            rows.append(
                {
                    "setting": setting,
                    "target_sparsity": float(target),
                    "sparsity_pct": level["sparsity_pct"].iloc[0],
                    "series": series,
                    "best": best,
                    "other": str(other),
                    "delta_pp": (a_only - b_only) / n * 100.0,
                    "best_only": a_only,
                    "other_only": b_only,
                    "n_paired": n,
                    "n_seeds": seeds,
                    "delta_low_pp": low * 100.0,
                    "delta_high_pp": high * 100.0,
                    "p_value": mcnemar_exact(a_only, b_only),
                }
            )
    out = pd.DataFrame(rows, columns=[c for c in columns if c not in ("best_accuracy", "other_accuracy", "p_adjusted")])
    accuracy = comparison[comparison["is_headline"]].set_index(["setting", "target_sparsity", "label"])["accuracy"]
    out["best_accuracy"] = [
        accuracy.get((s, t, b), np.nan) for s, t, b in zip(out["setting"], out["target_sparsity"], out["best"])
    ]
    out["other_accuracy"] = [
        accuracy.get((s, t, o), np.nan) for s, t, o in zip(out["setting"], out["target_sparsity"], out["other"])
    ]
    out["p_adjusted"] = np.nan
    for _, idx in out.groupby("setting", sort=False).groups.items():
        out.loc[idx, "p_adjusted"] = adjust_p_values(out.loc[idx, "p_value"].to_numpy(dtype=float), correction)
    return out[columns]


def method_front(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float,
    outcomes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every model of one setting with clean and worst-case robust accuracy, effective MACs and both Pareto fronts.

    Args:
        results: Results table of one setting (raw or annotated).
        meta: Per-model metadata (effective MACs; compression).
        eps: The eps (as stored).
        outcomes: Per-example outcomes (the per-example worst case).

    Returns:
        `tables.robust_vs_clean`'s rows with method, granularity, macs_fraction (effective / dense
        MACs; 1 for dense models without meta.json), front_clean_robust (no other model has higher
        or equal clean and robust accuracy, one of them higher) and front_macs_robust (no other
        model needs at most as many MACs and is at least as robust, one of them strictly).
    """
    df = annotated(results)
    out = robust_vs_clean(df, meta, eps=eps, outcomes=outcomes)
    info = df.drop_duplicates("model_id").set_index("model_id")
    out["method"] = out["model_id"].map(info["method"])
    out["granularity"] = out["model_id"].map(info["granularity"])
    macs = _meta_numbers(out, results, meta).set_index("model_id")["macs_fraction"]
    out["macs_fraction"] = out["model_id"].map(macs).astype(float)
    out.loc[out["is_dense"] & out["macs_fraction"].isna(), "macs_fraction"] = 1.0
    out["front_macs_robust"] = False
    for _, idx in out.groupby("setting").groups.items():
        sub = out.loc[idx]
        # fewer MACs is better: maximise their negative
        out.loc[idx, "front_macs_robust"] = pareto_mask(
            np.column_stack([-sub["macs_fraction"].to_numpy(float), sub["robust_accuracy"].to_numpy(float)])
        )
    return out
