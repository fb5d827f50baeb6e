"""One compression axis for every method: robust accuracy against effective MACs and parameters.

Sparse models (zeros in the weights), low-rank models (a smaller factorised network) and any other
method (a different normalisation...) are placed on the same axes: their effective MACs and their
non-zero parameters, each as a fraction of the setting's dense model (the `contract.MODEL_COST_COLUMNS`
of results.csv, or of meta.json for older runs). Methods are then compared at equal compute:

- a **family** is a model id less its seed (the report's `label` at one target sparsity): its
  accuracies are pooled over seeds (correct examples summed over the seeds' test examples), with
  the 95% Wilson interval of the pooled count; its MACs and parameter fractions are means over seeds.
- a **MACs level** gathers the families whose effective MACs lie within `MACS_TOLERANCE` (relative)
  of the level's smallest, scanning families from the cheapest up. Dense models take part at their
  own MACs (so a dense variant such as the dense model with mixture normalisation meets the dense
  model at 100%), except the dense control continued for the fine-tuned models' epochs
  (`dense-continued`), which is a training-budget reference, not a method.
- at each level with more than one method, the method whose best family has the highest worst-case
  robust accuracy at the headline eps leads; it is called ahead only when its interval lies above
  the runner-up's (non-overlapping 95% intervals, a conservative criterion), else the level is a tie
  within the intervals.

Every function returns a DataFrame of raw numbers (fractions); `build` writes them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from reports.content import Finding
from reports.contract import CONTINUED_DENSE_METHOD, MODEL_COST_COLUMNS
from reports.labels import format_pct, join_names
from reports.stats import wilson_interval
from reports.tables import annotated, robust_vs_clean

__all__ = [
    "MACS_TOLERANCE",
    "CONTROL_METHODS",
    "model_costs",
    "compression_points",
    "compression_families",
    "equal_macs_levels",
    "equal_macs_comparison",
    "compression_findings",
    "compression_words",
]

#: Families whose effective MACs lie within this fraction (relative) of a level's cheapest family
#: share that level: 0.15 puts 25% and 28% of dense MACs together, 25% and 30% apart.
MACS_TOLERANCE = 0.15

_COSTS = list(MODEL_COST_COLUMNS)
#: Dense models that are training-budget controls, not methods: they take no part in a MACs level.
CONTROL_METHODS: tuple[str, ...] = (CONTINUED_DENSE_METHOD,)
_AT_EPS = dict(rtol=1e-6, atol=1e-9)


def model_costs(results: pd.DataFrame, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per model: its cost columns and their fractions of the setting's dense model.

    The costs come from results.csv's `MODEL_COST_COLUMNS`, filled from meta.json where results.csv
    lacks them. The reference of a setting is its plain dense models (method `dense`; else any dense
    model): the mean of their `dense_macs` and `params` (the architecture as built, every weight).
    Without a dense model a model is measured against its own `dense_macs` and `params`.

    Returns:
        One row per model: model_id, setting, method, granularity, label, target_sparsity, seed, is_dense, the
        four cost columns, reference_macs, reference_params, macs_fraction (effective_macs /
        reference_macs) and params_fraction (nonzero_params / reference_params); NaN where unknown.
    """
    df = annotated(results)
    models = df.drop_duplicates("model_id")[
        ["model_id", "setting", "method", "granularity", "label", "target_sparsity", "seed", "is_dense"]
    ].reset_index(drop=True)
    first = df.drop_duplicates("model_id").set_index("model_id")
    known = meta.drop_duplicates("model_id").set_index("model_id") if meta is not None else pd.DataFrame()
    for col in _COSTS:
        values = pd.to_numeric(first[col], errors="coerce") if col in first.columns else pd.Series(dtype=float)
        fill = pd.to_numeric(known[col], errors="coerce") if col in known.columns else pd.Series(dtype=float)
        out = models["model_id"].map(values).astype(float)
        models[col] = out.where(out.notna(), models["model_id"].map(fill).astype(float))
    models["reference_macs"] = np.nan
    models["reference_params"] = np.nan
    for _, idx in models.groupby("setting", sort=False).groups.items():
        sub = models.loc[idx]
        dense = sub[sub["is_dense"] & (sub["method"].str.lower() == "dense")]
        dense = dense if len(dense) else sub[sub["is_dense"]]
        models.loc[idx, "reference_macs"] = dense["dense_macs"].mean() if len(dense) else np.nan
        models.loc[idx, "reference_params"] = dense["params"].mean() if len(dense) else np.nan
    own = models["reference_macs"].isna()
    models.loc[own, "reference_macs"] = models.loc[own, "dense_macs"]
    own = models["reference_params"].isna()
    models.loc[own, "reference_params"] = models.loc[own, "params"]
    models["macs_fraction"] = models["effective_macs"] / models["reference_macs"]
    models["params_fraction"] = models["nonzero_params"] / models["reference_params"]
    return models


def _n_at_eps(df: pd.DataFrame, eps: float) -> pd.Series:
    """model_id -> the number of examples its eps-budget attacks at `eps` ran on (the smallest)."""
    at = df[df["bounded"] & np.isclose(df["eps"].astype(float), eps, **_AT_EPS)]
    return at.groupby("model_id")["n_examples"].min()


def compression_points(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float,
    outcomes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Every model with its clean and worst-case robust accuracy at `eps` and its cost fractions.

    Robust accuracy is `tables.robust_vs_clean`'s (worst case over the eps-budget attacks at `eps`,
    per example where outcomes allow).

    Returns:
        `model_costs`' rows with clean_accuracy, robust_accuracy, robust_basis and n_robust (the
        examples behind robust_accuracy); models without a robust accuracy at `eps` are left out.
    """
    df = annotated(results)
    costs = model_costs(df, meta)
    rvc = robust_vs_clean(df, meta, eps=eps, outcomes=outcomes)
    out = costs.merge(rvc[["model_id", "clean_accuracy", "robust_accuracy", "robust_basis"]], on="model_id")
    out["n_robust"] = out["model_id"].map(_n_at_eps(df, eps)).astype(float)
    return out.dropna(subset=["robust_accuracy"]).reset_index(drop=True)


def compression_families(points: pd.DataFrame) -> pd.DataFrame:
    """`compression_points` pooled over seeds, one row per setting x family (label x target sparsity).

    Returns:
        setting, method, granularity, label, target_sparsity, is_dense, n_seeds, macs_fraction, params_fraction
        (means over seeds), clean_accuracy (mean), robust_accuracy (pooled: robust examples summed
        over seeds / their examples), robust_low and robust_high (its 95% Wilson interval), n_robust.
    """
    keys = ["setting", "method", "granularity", "label", "target_sparsity", "is_dense"]
    columns = [
        *keys,
        "n_seeds",
        "macs_fraction",
        "params_fraction",
        "clean_accuracy",
        "robust_accuracy",
        "robust_low",
        "robust_high",
        "n_robust",
    ]
    if points.empty:
        return pd.DataFrame(columns=columns)
    data = points.assign(
        robust_correct=(points["robust_accuracy"] * points["n_robust"]).round(),
    )
    out = (
        data.groupby(keys, sort=True, dropna=False)
        .agg(
            n_seeds=("model_id", "nunique"),
            macs_fraction=("macs_fraction", "mean"),
            params_fraction=("params_fraction", "mean"),
            clean_accuracy=("clean_accuracy", "mean"),
            robust_correct=("robust_correct", "sum"),
            n_robust=("n_robust", "sum"),
            robust_mean=("robust_accuracy", "mean"),
        )
        .reset_index()
    )
    pooled = out["n_robust"] > 0
    out["robust_accuracy"] = np.where(
        pooled, out["robust_correct"] / out["n_robust"].where(pooled, 1), out["robust_mean"]
    )
    intervals = [
        wilson_interval(int(k), int(n)) if n > 0 else (np.nan, np.nan)
        for k, n in zip(out["robust_correct"].fillna(0), out["n_robust"].fillna(0))
    ]
    out["robust_low"] = [low for low, _ in intervals]
    out["robust_high"] = [high for _, high in intervals]
    return out[columns]


def equal_macs_levels(families: pd.DataFrame, tolerance: float = MACS_TOLERANCE) -> pd.DataFrame:
    """The families with known MACs, grouped into levels of equal compute per setting.

    Scanning a setting's families from the fewest effective MACs up, a family joins the current
    level while its MACs fraction is at most (1 + `tolerance`) times the level's first; otherwise it
    opens the next level. Dense models take part (the dense model and dense variants, at about
    100%), the training-budget controls (`CONTROL_METHODS`) do not.

    Returns:
        The families (controls and those without MACs left out) with level (1: the cheapest) and
        level_low / level_high (the level's smallest and largest MACs fraction).
    """
    control = families["method"].astype(str).str.lower().isin(CONTROL_METHODS)
    data = families[~control & families["macs_fraction"].notna()]
    data = data.sort_values(["setting", "macs_fraction", "label"], kind="stable").copy()
    levels = []
    for _, sub in data.groupby("setting", sort=False):
        level, start = 0, None
        for value in sub["macs_fraction"]:
            if start is None or value > start * (1.0 + tolerance) + 1e-12:
                level, start = level + 1, value
            levels.append(level)
    data["level"] = levels
    bounds = data.groupby(["setting", "level"])["macs_fraction"]
    data["level_low"] = bounds.transform("min")
    data["level_high"] = bounds.transform("max")
    return data.reset_index(drop=True)


def equal_macs_comparison(families: pd.DataFrame, tolerance: float = MACS_TOLERANCE) -> pd.DataFrame:
    """At each MACs level: every method's best family, ranked by worst-case robust accuracy.

    Returns:
        One row per setting x level x method: setting, level, level_low, level_high, method, label
        (its most robust family there), macs_fraction, params_fraction, robust_accuracy, robust_low,
        robust_high, clean_accuracy, n_methods (methods at the level), rank (1: the most robust),
        ahead (rank 1 and its interval lies above every other method's at the level; False
        elsewhere and where the level has one method), dense_robust_accuracy (the setting's plain
        dense reference, pooled) and delta_vs_dense_pp (points).
    """
    levels = equal_macs_levels(families, tolerance)
    columns = [
        "setting",
        "level",
        "level_low",
        "level_high",
        "method",
        "label",
        "macs_fraction",
        "params_fraction",
        "robust_accuracy",
        "robust_low",
        "robust_high",
        "clean_accuracy",
        "n_methods",
        "rank",
        "ahead",
        "dense_robust_accuracy",
        "delta_vs_dense_pp",
    ]
    if levels.empty:
        return pd.DataFrame(columns=columns)
    best = (
        levels.sort_values(["robust_accuracy", "label"], ascending=[False, True], kind="stable")
        .drop_duplicates(["setting", "level", "method"])
        .sort_values(["setting", "level", "robust_accuracy", "label"], ascending=[True, True, False, True])
        .reset_index(drop=True)
    )
    best["n_methods"] = best.groupby(["setting", "level"])["method"].transform("nunique")
    best["rank"] = best.groupby(["setting", "level"]).cumcount() + 1
    runner_high = best.groupby(["setting", "level"])["robust_high"].transform(
        lambda s: s.iloc[1:].max() if len(s) > 1 else np.nan
    )
    best["ahead"] = (best["rank"] == 1) & (best["n_methods"] > 1) & (best["robust_low"] > runner_high)
    dense = families[families["is_dense"].astype(bool)]
    plain = dense[dense["method"].str.lower() == "dense"]
    reference = (plain if len(plain) else dense).groupby("setting")["robust_accuracy"].mean()
    best["dense_robust_accuracy"] = best["setting"].map(reference).astype(float)
    best["delta_vs_dense_pp"] = (best["robust_accuracy"] - best["dense_robust_accuracy"]) * 100.0
    return best[columns]


def compression_words(tolerance: float = MACS_TOLERANCE) -> str:
    """How the equal-MACs comparison is made, in one sentence (captions and findings)."""
    return (
        "Methods are compared at equal compute: families (a model less its seed) whose effective MACs lie within "
        f"{tolerance * 100:g}% (relative) of each other form one level (dense models at their own MACs, the "
        f"{CONTINUED_DENSE_METHOD} control apart); at each level the method whose best family "
        "keeps the highest worst-case robust accuracy (pooled over seeds) leads, and is called ahead only where its "
        "95% Wilson interval lies above every other method's there."
    )


def _level_text(level: pd.DataFrame) -> str:
    low, high = format_pct(float(level["level_low"].iloc[0]), 0), format_pct(float(level["level_high"].iloc[0]), 0)
    return low if low == high else f"{low} to {high}"


def _entry(row: pd.Series) -> str:
    return (
        f"{row['label']} {format_pct(row['robust_accuracy'])} "
        f"[{format_pct(row['robust_low'])}, {format_pct(row['robust_high'])}]"
    )


def compression_findings(comparison: pd.DataFrame, label_eps: str, tolerance: float = MACS_TOLERANCE) -> list[Finding]:
    """One sentence per MACs level with more than one method, then how the comparison was made.

    Args:
        comparison: `equal_macs_comparison` of one setting.
        label_eps: The eps the robust accuracies are at, as shown.
        tolerance: The level tolerance the comparison used.

    Returns:
        Findings of kind "compression" (one per level compared) and "compression_method" (how);
        none where no level holds two methods.
    """
    findings = []
    for level_id, level in comparison.groupby("level", sort=True):
        if int(level["n_methods"].iloc[0]) < 2:
            continue
        level = level.sort_values("rank")
        lead, others = level.iloc[0], level.iloc[1:]
        dense = lead["dense_robust_accuracy"]
        has_dense = (level["method"].astype(str).str.lower() == "dense").any()
        versus = f" (dense: {format_pct(dense)})" if np.isfinite(dense) and not has_dense else ""
        verdict = (
            f"{lead['method']} leads"
            if bool(lead["ahead"])
            else f"{lead['method']} is highest, within the intervals of"
        )
        rest = join_names([_entry(row) for _, row in others.iterrows()])
        if bool(lead["ahead"]):
            text = (
                f"At {_level_text(level)} of dense MACs, under the worst case at eps {label_eps}, {verdict}: "
                f"{_entry(lead)} against {rest}{versus}."
            )
        else:
            text = (
                f"At {_level_text(level)} of dense MACs, under the worst case at eps {label_eps}, {verdict} "
                f"{join_names(list(others['method']))}: {_entry(lead)} against {rest}{versus}."
            )
        findings.append(
            Finding(
                "compression",
                text,
                {
                    "level": int(level_id),
                    "level_low": float(lead["level_low"]),
                    "level_high": float(lead["level_high"]),
                    "best_method": str(lead["method"]),
                    "best_label": str(lead["label"]),
                    "best_robust_accuracy": float(lead["robust_accuracy"]),
                    "ahead": bool(lead["ahead"]),
                    "methods": list(level["method"]),
                    "dense_robust_accuracy": float(dense),
                },
            )
        )
    if findings:
        findings.append(Finding("compression_method", compression_words(tolerance), {"tolerance": tolerance}))
    return findings
