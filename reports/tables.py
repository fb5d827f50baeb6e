"""Tables computed from the results, outcomes and metadata: accuracies, deltas vs dense, sanity, run metadata,
and the paired 2x2 table of two models on one attack.

Every function returns raw numbers (fractions in [0, 1], deltas in percentage points), as a
DataFrame except `paired_test`'s dict; `build` writes them as CSV and `render` formats them for reading.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from reports.contract import SANITY_COLUMNS
from reports.errors import ReportError
from reports.labels import FAMILY_COLUMNS, annotate, eps_text, sparsity_text
from reports.stats import (
    adjust_p_values,
    mcnemar_exact,
    paired_difference_interval,
    pareto_mask,
    seed_interval,
    wilson_interval,
)

__all__ = [
    "annotated",
    "dense_matches",
    "failed_models",
    "model_deltas",
    "grid_deltas",
    "aggregate_accuracy",
    "accuracy_table",
    "success_rate_interval",
    "strongest_series",
    "robust_vs_clean",
    "sanity_table",
    "model_table",
    "metadata_table",
    "check_outcomes",
    "paired_outcomes",
    "paired_table",
    "paired_test",
]

log = logging.getLogger(__name__)

_SERIES_COLUMNS = ["series", "attack", "eps_key"]
_SANITY_ORDER = ("failed", "not_run", "passed")
_OUTCOME_WORDS = ["right", "wrong"]


def annotated(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with the derived label columns of `labels.annotate` (added once, kept if present)."""
    return results if "series" in results.columns else annotate(results)


def _meta_links(meta: pd.DataFrame | None, column: str) -> dict[str, str]:
    """model_id -> the model named in a meta.json field (e.g. `parent`), where one is named."""
    if meta is None or column not in meta.columns:
        return {}
    return {str(m): str(p) for m, p in zip(meta["model_id"], meta[column]) if isinstance(p, str) and p}


def dense_matches(results: pd.DataFrame, meta: pd.DataFrame | None = None) -> pd.DataFrame:
    """Pick the dense model each sparse model is compared with.

    Preference: the sparse model's `reference_model_id` in meta.json (the dense model with the
    same training budget: for a model fine-tuned from a dense parent, the dense control
    continued for the same epochs), or without one the dense model continued from the same
    parent; else its `parent` when that is a dense model of the same
    setting; else the dense model of the same setting and seed; else the mean of the setting's
    dense models (no paired test possible). Without a reference, only plain dense models
    (method `dense`) are candidates when the setting has any: a dense control is the reference
    of the models it was trained for only.

    Args:
        results: Results table (raw or annotated).
        meta: Per-model metadata (optional; gives `reference_model_id` and `parent`).

    Returns:
        One row per sparse model: model_id, dense_model_id (None for "mean"/"none"), match
        ("reference", "parent", "seed", "mean", or "none" when the setting has no dense model).
    """
    df = annotated(results)
    models = df.drop_duplicates("model_id")[["model_id", "setting", "seed", "is_dense", "method"]]
    dense = models[models["is_dense"]]
    references = _meta_links(meta, "reference_model_id")
    parents = _meta_links(meta, "parent")
    # a dense model continued from a parent is the control of the sparse models fine-tuned from it
    # (this also pairs models whose meta.json predates `reference_model_id`)
    controls = {parents[m]: m for m in dense["model_id"] if m in parents}
    rows = []
    for row in models[~models["is_dense"]].itertuples(index=False):
        candidates = dense[dense["setting"] == row.setting]
        reference = references.get(row.model_id, controls.get(parents.get(row.model_id, "")))
        if reference is not None and reference in set(candidates["model_id"]):
            rows.append((row.model_id, reference, "reference"))
            continue
        if reference is not None:
            log.warning(
                "%s: its reference %s has no results; compared with another dense model", row.model_id, reference
            )
        plain = candidates[candidates["method"].str.lower() == "dense"]
        candidates = plain if len(plain) else candidates
        parent = parents.get(row.model_id)
        if parent is not None and parent in set(candidates["model_id"]):
            rows.append((row.model_id, parent, "parent"))
            continue
        same_seed = candidates[candidates["seed"] == row.seed]
        if len(same_seed) >= 1:
            rows.append((row.model_id, same_seed["model_id"].iloc[0], "seed"))
        elif len(candidates):
            rows.append((row.model_id, None, "mean"))
        else:
            rows.append((row.model_id, None, "none"))
    return pd.DataFrame(rows, columns=["model_id", "dense_model_id", "match"])


def failed_models(meta: pd.DataFrame | None) -> pd.DataFrame:
    """The models whose training failed (meta.json `status: failed`): model_id and failure.

    They have no results; the report lists them apart and uses nothing else of theirs.
    """
    if meta is None or "status" not in meta.columns:
        return pd.DataFrame(columns=["model_id", "failure"])
    failed = meta[meta["status"].astype(str) == "failed"]
    reasons = failed["failure"] if "failure" in failed.columns else pd.Series("failed", index=failed.index)
    return pd.DataFrame({"model_id": failed["model_id"], "failure": reasons.fillna("failed")}).reset_index(drop=True)


def _paired_counts(pairs: pd.DataFrame, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Discordant counts per (model_id, key) between each sparse model and its dense model."""
    sparse = outcomes.merge(pairs, on=["model_id", "key"], how="inner")
    dense = outcomes.rename(columns={"model_id": "dense_model_id", "correct": "dense_correct"})
    both = sparse.merge(dense, on=["dense_model_id", "key", "example"], how="inner")
    both["sparse_only"] = (both["correct"] == 1) & (both["dense_correct"] == 0)
    both["dense_only"] = (both["correct"] == 0) & (both["dense_correct"] == 1)
    counts = both.groupby(["model_id", "key"]).agg(
        sparse_only=("sparse_only", "sum"), dense_only=("dense_only", "sum"), n_paired=("example", "size")
    )
    return counts.reset_index()


def _paired_statistics(out: pd.DataFrame, correction: str) -> pd.DataFrame:
    """Add McNemar's p, its adjusted value and the exact interval of the paired difference to rows with counts.

    The family of a correction is every test of one setting (all attacks, eps and sparsity levels).
    """
    has = out["n_paired"].fillna(0) > 0
    out["p_value"] = np.nan
    out["delta_low_pp"] = np.nan
    out["delta_high_pp"] = np.nan
    if has.any():
        rows = out.loc[has]
        out.loc[has, "p_value"] = [mcnemar_exact(b, c) for b, c in zip(rows["sparse_only"], rows["dense_only"])]
        bounds = [
            paired_difference_interval(d, s, n)
            for d, s, n in zip(rows["dense_only"], rows["sparse_only"], rows["n_paired"])
        ]
        out.loc[has, "delta_low_pp"] = [low * 100.0 for low, _ in bounds]
        out.loc[has, "delta_high_pp"] = [high * 100.0 for _, high in bounds]
    out["p_adjusted"] = np.nan
    for _, idx in out.groupby("setting", sort=False).groups.items():
        out.loc[idx, "p_adjusted"] = adjust_p_values(out.loc[idx, "p_value"].to_numpy(), correction)
    return out


def model_deltas(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    meta: pd.DataFrame | None = None,
    *,
    correction: str = "holm",
) -> pd.DataFrame:
    """Change in accuracy of every sparse model vs its dense model, per attack spec, with McNemar p.

    Args:
        results: Results table (raw or annotated).
        outcomes: Per-example outcomes; without them p-values and intervals are NaN.
        meta: Per-model metadata (for the `parent` link).
        correction: Multiple-comparison correction of `p_adjusted` (`stats.CORRECTIONS`), over
            the tests of each setting.

    Returns:
        One row per sparse model x key with accuracy, dense_model_id, match, dense_accuracy,
        delta_pp (percentage points, sparse minus dense), sparse_only / dense_only (examples only
        the sparse / only the dense model gets right), n_paired, p_value (exact McNemar),
        p_adjusted, and delta_low_pp / delta_high_pp (exact 95% interval of the paired difference,
        `stats.paired_difference_interval`).
    """
    df = annotated(results)
    keep = [
        "model_id",
        *FAMILY_COLUMNS,
        "seed",
        *_SERIES_COLUMNS,
        "eps",
        "eps_label",
        "key",
        "is_clean",
        "min_norm",
        "bounded",
        "n_examples",
        "accuracy",
    ]
    sparse = df.loc[~df["is_dense"], keep].merge(dense_matches(df, meta), on="model_id", how="left")
    dense = df[df["is_dense"]]
    paired_acc = dense[["model_id", "key", "accuracy"]].rename(
        columns={"model_id": "dense_model_id", "accuracy": "paired_accuracy"}
    )
    out = sparse.merge(paired_acc, on=["dense_model_id", "key"], how="left")
    plain = dense[dense["method"].str.lower() == "dense"]  # the "mean" fallback: plain dense models, as above
    mean_acc = (
        (plain if len(plain) else dense)
        .groupby(["setting", "key"])["accuracy"]
        .mean()
        .rename("mean_accuracy")
        .reset_index()
    )
    out = out.merge(mean_acc, on=["setting", "key"], how="left")
    paired = out["match"].isin(["reference", "parent", "seed"])
    out["dense_accuracy"] = np.where(paired, out["paired_accuracy"], out["mean_accuracy"])
    out = out.drop(columns=["paired_accuracy", "mean_accuracy"])
    out["delta_pp"] = (out["accuracy"] - out["dense_accuracy"]) * 100.0
    if outcomes is not None and paired.any():
        pairs = out.loc[paired, ["model_id", "dense_model_id", "key"]]
        out = out.merge(_paired_counts(pairs, outcomes), on=["model_id", "key"], how="left")
    else:
        out["sparse_only"] = np.nan
        out["dense_only"] = np.nan
        out["n_paired"] = np.nan
    out = _paired_statistics(out, correction)
    short = (out["n_paired"].fillna(0) > 0) & (out["n_paired"] < out["n_examples"])
    if short.any():
        log.warning(
            "%d sparse/dense pairs share fewer examples than were evaluated; McNemar uses the shared ones", short.sum()
        )
    return out.reset_index(drop=True)


def grid_deltas(deltas: pd.DataFrame, *, correction: str = "holm") -> pd.DataFrame:
    """Aggregate `model_deltas` over seeds: one row per family x attack configuration x eps.

    The delta is the mean over seeds of each model's delta vs its matched dense model; the
    p-value is McNemar's exact test on the discordant counts pooled over the seeds' pairs, and
    `p_adjusted` that p-value corrected (`correction`) over every row of the same setting. The
    interval delta_low_pp / delta_high_pp is the exact 95% interval of the pooled paired
    difference (`stats.paired_difference_interval`).

    Returns:
        Columns FAMILY_COLUMNS + series, attack, eps_key, eps_label, is_clean, min_norm, bounded, n_seeds,
        accuracy, dense_accuracy, delta_pp, delta_sd, sparse_only, dense_only, n_paired, p_value,
        delta_low_pp, delta_high_pp, p_adjusted.
    """
    keys = [*FAMILY_COLUMNS, *_SERIES_COLUMNS]
    grouped = deltas.groupby(keys, sort=True, dropna=False)
    out = grouped.agg(
        eps_label=("eps_label", "first"),
        is_clean=("is_clean", "first"),
        min_norm=("min_norm", "first"),
        bounded=("bounded", "first"),
        n_seeds=("model_id", "nunique"),
        accuracy=("accuracy", "mean"),
        dense_accuracy=("dense_accuracy", "mean"),
        delta_pp=("delta_pp", "mean"),
        delta_sd=("delta_pp", "std"),
        sparse_only=("sparse_only", lambda s: s.sum(min_count=1)),
        dense_only=("dense_only", lambda s: s.sum(min_count=1)),
        n_paired=("n_paired", lambda s: s.sum(min_count=1)),
    ).reset_index()
    return _paired_statistics(out, correction)


def _band(group: pd.DataFrame) -> pd.Series:
    seed_low, seed_high = seed_interval(group["accuracy"].to_numpy())
    ci_low = group["ci_low"].mean()
    ci_high = group["ci_high"].mean()
    return pd.Series(
        {
            "eps": group["eps"].iloc[0],
            "eps_label": group["eps_label"].iloc[0],
            "is_dense": bool(group["is_dense"].iloc[0]),
            "is_clean": bool(group["is_clean"].iloc[0]),
            "min_norm": bool(group["min_norm"].iloc[0]),
            "bounded": bool(group["bounded"].iloc[0]),
            "n_seeds": group["model_id"].nunique(),
            "n_examples": group["n_examples"].mean(),
            "accuracy": group["accuracy"].mean(),
            "accuracy_sd": group["accuracy"].std(ddof=1) if len(group) > 1 else np.nan,
            "ci_low": ci_low,
            "ci_high": ci_high,
            "band_low": np.nanmin([ci_low, seed_low]) if np.isfinite([ci_low, seed_low]).any() else np.nan,
            "band_high": np.nanmax([ci_high, seed_high]) if np.isfinite([ci_high, seed_high]).any() else np.nan,
            "attack_success_rate": group["attack_success_rate"].mean(),
        }
    )


def aggregate_accuracy(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per model family x attack configuration x eps, averaged over seeds, with a 95% band.

    The band is the wider of the test-set interval (the seeds' Wilson intervals, averaged) and
    the between-seed Student-t interval of the mean, so it covers both sources of noise.

    Returns:
        Columns FAMILY_COLUMNS + series, attack, eps_key, eps, eps_label, is_dense, is_clean,
        min_norm, bounded, n_seeds, n_examples, accuracy, accuracy_sd, ci_low, ci_high, band_low, band_high,
        attack_success_rate.
    """
    df = annotated(results)
    keys = [*FAMILY_COLUMNS, *_SERIES_COLUMNS]
    rows = [
        pd.concat([pd.Series(dict(zip(keys, key))), _band(group)])
        for key, group in df.groupby(keys, sort=True, dropna=False)
    ]
    return pd.DataFrame(rows).reset_index(drop=True)


def strongest_series(agg: pd.DataFrame, eps: float) -> str | None:
    """The attack configuration the headline speaks of at `eps`: the one with the lowest dense accuracy.

    Args:
        agg: `aggregate_accuracy` of one setting.
        eps: The eps (as stored).

    Returns:
        Its `series` name, or None when nothing was attacked at `eps`. Without a dense model, the
        attack with the lowest accuracy over every model.
    """
    at = agg[agg["bounded"] & np.isclose(agg["eps_key"], eps, rtol=1e-6, atol=1e-9)]
    if at.empty:
        return None
    ref = at[at["is_dense"]] if at["is_dense"].any() else at
    by_series = ref.groupby("series", sort=False)["accuracy"].mean()
    return str(by_series.idxmin())


def success_rate_interval(results: pd.DataFrame, confidence: float = 0.95) -> tuple[pd.Series, pd.Series]:
    """95% Wilson interval of each row's attack success rate, over its `n_clean_correct` examples.

    The fooled count is recovered as ``round(attack_success_rate * n_clean_correct)``; rows with no
    success rate (clean rows) or no clean-correct example get NaN.
    """
    low = pd.Series(np.nan, index=results.index)
    high = pd.Series(np.nan, index=results.index)
    n = pd.to_numeric(results["n_clean_correct"], errors="coerce")
    rate = pd.to_numeric(results["attack_success_rate"], errors="coerce")
    ok = rate.notna() & n.notna() & (n > 0)
    for i in results.index[ok]:
        low[i], high[i] = wilson_interval(round(float(rate[i]) * float(n[i])), int(n[i]), confidence)
    return low, high


def accuracy_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per model x attack spec accuracy with its 95% interval, dense models first.

    Returns:
        Columns model_id, setting, granularity, target_sparsity, seed, attack (display name),
        eps, eps_label, n_examples, n_correct, accuracy, ci_low, ci_high, attack_success_rate,
        success_ci_low, success_ci_high (95% Wilson interval of the success rate over the
        clean-correct examples), l2_median, linf_max, key.
    """
    df = annotated(results).copy()
    df["success_ci_low"], df["success_ci_high"] = success_rate_interval(df)
    df["granularity"] = df["label"]
    df["attack"] = df["series"]
    df = df.sort_values(
        ["setting", "is_dense", "granularity", "target_sparsity", "seed", "is_clean", "attack", "eps"],
        ascending=[True, False, True, True, True, False, True, True],
        kind="stable",
    )
    cols = [
        "model_id",
        "setting",
        "granularity",
        "target_sparsity",
        "seed",
        "attack",
        "eps",
        "eps_label",
        "n_examples",
        "n_correct",
        "accuracy",
        "ci_low",
        "ci_high",
        "attack_success_rate",
        "success_ci_low",
        "success_ci_high",
        "l2_median",
        "linf_max",
        "key",
    ]
    return df[cols].reset_index(drop=True)


def _compression(models: pd.DataFrame, meta: pd.DataFrame | None) -> pd.Series:
    """Compression (total / non-zero weights) per model: meta.json's value, else 1 / (1 - achieved)."""
    fallback = 1.0 / (1.0 - models["achieved_sparsity"].clip(upper=1 - 1e-9).fillna(0.0))
    fallback = fallback.where(~models["is_dense"], 1.0)
    if meta is not None and "compression" in meta.columns:
        known = dict(zip(meta["model_id"], pd.to_numeric(meta["compression"], errors="coerce")))
        given = models["model_id"].map(known)
        return given.where(given.notna(), fallback)
    return fallback


def _per_example_robust(at_eps: pd.DataFrame, outcomes: pd.DataFrame | None) -> pd.Series:
    """Per model: the fraction of examples on which every attack in `at_eps` failed (the per-example worst case).

    A model whose outcomes lack one of its attacks at this eps, or do not cover the same examples
    for all of them, gets NaN (the caller falls back to the lowest single-attack accuracy).
    """
    if outcomes is None or at_eps.empty:
        return pd.Series(dtype=float)
    wanted = at_eps[["model_id", "key"]].drop_duplicates()
    sub = outcomes.merge(wanted, on=["model_id", "key"])
    robust = {}
    for model_id, keys in wanted.groupby("model_id")["key"]:
        wide = sub[sub["model_id"] == model_id].pivot(index="example", columns="key", values="correct")
        complete = set(wide.columns) == set(keys) and not wide.empty and not wide.isna().to_numpy().any()
        robust[model_id] = float(wide.astype(bool).all(axis=1).mean()) if complete else np.nan
    return pd.Series(robust, dtype=float)


def robust_vs_clean(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float,
    outcomes: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Clean and worst-case robust accuracy of every model at one eps, with compression and Pareto fronts.

    Robust accuracy is the worst case over every eps-budget attack run at `eps`, per example: an
    example counts as robust only if every one of those attacks failed on it (the RobustBench /
    AutoAttack convention). It needs the per-example `outcomes`; a model without them for every
    attack at `eps` gets the lowest single-attack accuracy instead (an upper bound of the
    per-example worst case), and `robust_basis` says which was used.

    Args:
        results: Results table (raw or annotated).
        meta: Per-model metadata (for `compression`).
        eps: The eps budget (as stored in the table).
        outcomes: Per-example outcomes (see `load.load_outcomes`).

    Returns:
        One row per model with clean_accuracy, robust_accuracy, robust_basis ("per example" or
        "min over attacks"), worst_attack (the single attack with the lowest accuracy) and
        worst_attack_accuracy (its accuracy), compression, front_clean_robust (on the Pareto front
        of clean and robust accuracy within its setting) and front_compression_robust (on the
        front of compression and robust accuracy).
    """
    df = annotated(results)
    models = df.drop_duplicates("model_id")[
        ["model_id", "setting", "label", "sparsity_pct", "target_sparsity", "achieved_sparsity", "seed", "is_dense"]
    ].reset_index(drop=True)
    clean = df[df["is_clean"]].groupby("model_id")["accuracy"].mean().rename("clean_accuracy")
    at_eps = df[df["bounded"] & np.isclose(df["eps"].astype(float), eps, rtol=1e-6, atol=1e-9)]
    worst_idx = at_eps.groupby("model_id")["accuracy"].idxmin()
    worst = at_eps.loc[worst_idx, ["model_id", "accuracy", "series"]].rename(
        columns={"accuracy": "worst_attack_accuracy", "series": "worst_attack"}
    )
    out = models.join(clean, on="model_id").merge(worst, on="model_id", how="left")
    per_example = out["model_id"].map(_per_example_robust(at_eps, outcomes)).astype(float)
    out["robust_accuracy"] = per_example.where(per_example.notna(), out["worst_attack_accuracy"])
    out["robust_basis"] = np.where(
        per_example.notna(), "per example", np.where(out["worst_attack_accuracy"].notna(), "min over attacks", "")
    )
    out["compression"] = _compression(out, meta).to_numpy()
    out["front_clean_robust"] = False
    out["front_compression_robust"] = False
    for _, idx in out.groupby("setting").groups.items():
        sub = out.loc[idx]
        out.loc[idx, "front_clean_robust"] = pareto_mask(sub[["clean_accuracy", "robust_accuracy"]].to_numpy())
        out.loc[idx, "front_compression_robust"] = pareto_mask(sub[["compression", "robust_accuracy"]].to_numpy())
    return out


def sanity_table(sanity: pd.DataFrame) -> pd.DataFrame:
    """Sanity-check flags: failures first, then the checks that could not run, then those that passed."""
    out = sanity[SANITY_COLUMNS].copy()
    order = out["status"].map({status: i for i, status in enumerate(_SANITY_ORDER)})
    return (
        out.assign(_order=order)
        .sort_values(["_order", "model_id", "check"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


_MODEL_COLUMNS = [
    "model_id",
    "arch",
    "dataset",
    "method",
    "granularity",
    "target_sparsity",
    "achieved_sparsity",
    "achieved_sparsity_all",
    "compression",
    "clean_acc",
    "params",
    "nonzero_params",
    "dense_macs",
    "effective_macs",
    "seed",
    "epochs",
    "total_epochs",
    "parent",
    "reference_model_id",
    "config_digest",
    "created_at",
]


def model_table(meta: pd.DataFrame) -> pd.DataFrame:
    """One row per model with the meta.json fields a reader compares (those present)."""
    cols = [c for c in _MODEL_COLUMNS if c in meta.columns]
    return meta[cols].reset_index(drop=True)


def _join(values: Any) -> str:
    items = [str(v) for v in dict.fromkeys(values) if v is not None and str(v) not in {"", "nan", "None"}]
    return ", ".join(items) if items else "n/a"


def _versions(meta: pd.DataFrame) -> str:
    parts = []
    for col in sorted(c for c in meta.columns if c.startswith("versions.")):
        counts = meta[col].dropna().astype(str).value_counts()
        name = col.split(".", 1)[1]
        if len(counts) == 1:
            parts.append(f"{name} {counts.index[0]}")
        elif len(counts) > 1:
            # different versions across models is worth seeing, so list each with its count
            parts.append(name + " " + " / ".join(f"{v} ({n} models)" for v, n in counts.items()))
    return ", ".join(parts) if parts else "n/a"


def metadata_table(
    results: pd.DataFrame, meta: pd.DataFrame | None = None, config: dict[str, Any] | None = None
) -> pd.DataFrame:
    """The run's metadata as (item, value) rows: settings, models, seeds, attacks, data, versions.

    Args:
        results: Results table (raw or annotated).
        meta: Per-model metadata.
        config: The parsed config.yaml.

    Returns:
        Two columns, item and value (text).
    """
    df = annotated(results)
    models = df.drop_duplicates("model_id")
    n_dense = int(models["is_dense"].sum())
    rows: list[tuple[str, str]] = []
    if config and config.get("name"):
        rows.append(("run", str(config["name"])))
    rows.append(("settings (dataset / arch)", _join(models["setting"])))
    rows.append(("models", f"{len(models)} ({n_dense} dense, {len(models) - n_dense} sparse)"))
    sparse = models[~models["is_dense"]]
    rows.append(("methods", _join(sorted(sparse["method"].unique())) if len(sparse) else "none"))
    rows.append(("granularities", _join(sorted(sparse["granularity"].unique())) if len(sparse) else "none"))
    rows.append(
        (
            "target sparsities",
            _join(sparsity_text(t) for t in sorted(sparse["target_sparsity"].unique())) if len(sparse) else "none",
        )
    )
    seeds = sorted(models["seed"].dropna().unique())
    rows.append(("seeds", _join(int(s) if float(s).is_integer() else s for s in seeds)))
    attacks = []
    for series, sub in df[~df["is_clean"]].groupby("series", sort=False):
        if not sub["bounded"].any():
            attacks.append(f"{series}: minimum-norm")
            continue
        budgets = sub.drop_duplicates("eps_key").sort_values("eps")
        shown = ", ".join(eps_text(e, lab) for e, lab in zip(budgets["eps"], budgets["eps_label"]))
        attacks.append(f"{series}: {shown}")
    rows.append(("attacks (eps)", "; ".join(attacks) if attacks else "clean only"))
    rows.append(("examples per evaluation", _join(int(n) for n in sorted(df["n_examples"].dropna().unique()))))
    if config and isinstance(config.get("data"), dict):
        rows.append(("data", json.dumps(config["data"], sort_keys=True, default=str)))
    if meta is not None and len(meta):
        if "epochs" in meta.columns:
            rows.append(("epochs", _join(sorted(meta["epochs"].dropna().unique()))))
        if "total_epochs" in meta.columns:  # own epochs plus the parent's: the training budget compared
            budgets = meta.dropna(subset=["total_epochs"]).groupby("total_epochs")["model_id"].count()
            rows.append(("total epochs", ", ".join(f"{int(t)} ({n} models)" for t, n in budgets.items()) or "n/a"))
        rows.append(("versions", _versions(meta)))
        if "created_at" in meta.columns:
            created = sorted(meta["created_at"].dropna().astype(str))
            if created:
                rows.append(("models created", f"{created[0]} to {created[-1]}"))
    rows.append(("config digest", _join(df["config_digest"])))
    rows.append(("attack time (s, total)", f"{df['elapsed_s'].sum():.1f}"))
    return pd.DataFrame(rows, columns=["item", "value"])


def check_outcomes(results: pd.DataFrame, outcomes: pd.DataFrame) -> list[str]:
    """Compare the per-example outcomes with the counts in the results table.

    Returns:
        One message per kind of disagreement (empty when they agree).
    """
    counts = outcomes.groupby(["model_id", "key"])["correct"].agg(["sum", "size"]).reset_index()
    merged = results[["model_id", "key", "n_correct", "n_examples"]].merge(counts, on=["model_id", "key"], how="left")
    notes = []
    missing = merged["size"].isna()
    if missing.any():
        first = merged.loc[missing, ["model_id", "key"]].iloc[0].tolist()
        notes.append(
            f"{int(missing.sum())} result row(s) have no per-example outcomes (first: {first}); "
            "their McNemar tests are left out"
        )
    wrong = ~missing & ((merged["sum"] != merged["n_correct"]) | (merged["size"] != merged["n_examples"]))
    if wrong.any():
        r = merged[wrong].iloc[0]
        notes.append(
            f"{int(wrong.sum())} result row(s) disagree with their per-example outcomes (first: {r['model_id']}, "
            f"{r['key']}: n_correct {r['n_correct']:g} vs {r['sum']:g} in outcomes)"
        )
    return notes


def paired_outcomes(outcomes: pd.DataFrame, model_a: str, model_b: str, key: str) -> pd.DataFrame:
    """The per-example outcomes of two models under one attack key, side by side.

    Args:
        outcomes: Per-example outcomes (see `load.load_outcomes`).
        model_a: First model_id.
        model_b: Second model_id (a different model).
        key: The attack key of results.csv (e.g. "clean").

    Returns:
        One row per example both models were evaluated on (index `example`), columns `model_a`
        and `model_b` holding 1 (right) or 0 (wrong).

    Raises:
        ReportError: If the models are the same, either has no outcomes for `key` (the message
            lists the keys both share), an outcome repeats, or the two share no example.
    """
    if model_a == model_b:
        raise ReportError(f"cannot pair model {model_a!r} with itself; pass two different model_ids")
    sub = outcomes[(outcomes["key"] == key) & outcomes["model_id"].isin([model_a, model_b])]
    lacking = [m for m in (model_a, model_b) if m not in set(sub["model_id"])]
    if lacking:
        shared = set(outcomes.loc[outcomes["model_id"] == model_a, "key"])
        shared &= set(outcomes.loc[outcomes["model_id"] == model_b, "key"])
        raise ReportError(
            f"no per-example outcomes of {lacking} for key {key!r}; keys both models share: {sorted(shared)}"
        )
    if sub.duplicated(["model_id", "example"]).any():
        raise ReportError(f"outcomes repeat an example for key {key!r}; each (model_id, key, example) must appear once")
    wide = sub.pivot(index="example", columns="model_id", values="correct").dropna()
    if wide.empty:
        raise ReportError(f"{model_a!r} and {model_b!r} share no example under key {key!r}; nothing to pair")
    return wide[[model_a, model_b]].astype(int).rename_axis(columns=None)


def paired_table(outcomes: pd.DataFrame, model_a: str, model_b: str, key: str) -> pd.DataFrame:
    """The 2x2 contingency table of two models on the examples they share under one attack key.

    Args:
        outcomes: Per-example outcomes (see `load.load_outcomes`).
        model_a: The model of the rows.
        model_b: The model of the columns.
        key: The attack key of results.csv.

    Returns:
        Counts of examples with rows "right"/"wrong" for model A (index named "<model_a> (A)") and
        the same columns for model B ("<model_b> (B)"); both always present, zeros included.
        `paired_test` turns it into accuracies and McNemar's p.

    Raises:
        ReportError: As `paired_outcomes`.
    """
    pair = paired_outcomes(outcomes, model_a, model_b, key)
    a, b = pair[model_a].to_numpy(dtype=bool), pair[model_b].to_numpy(dtype=bool)
    counts = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return pd.DataFrame(
        counts,
        index=pd.Index(_OUTCOME_WORDS, name=f"{model_a} (A)"),
        columns=pd.Index(_OUTCOME_WORDS, name=f"{model_b} (B)"),
    )


def paired_test(table: pd.DataFrame) -> dict[str, float | int]:
    """Accuracies, discordant counts and McNemar's exact p-value from a `paired_table`.

    Returns:
        n_examples, accuracy_a, accuracy_b (fractions), only_a (A right, B wrong), only_b (A wrong,
        B right) and p_value (`stats.mcnemar_exact`; 1.0 without discordant examples).

    Raises:
        ReportError: If `table` is not a 2x2 right/wrong table.
    """
    if list(table.index) != _OUTCOME_WORDS or list(table.columns) != _OUTCOME_WORDS:
        raise ReportError(
            f"paired_test needs a 2x2 table with rows and columns {_OUTCOME_WORDS}, got rows {list(table.index)} "
            f"and columns {list(table.columns)}; build it with paired_table"
        )
    n = int(table.to_numpy().sum())
    only_a, only_b = int(table.loc["right", "wrong"]), int(table.loc["wrong", "right"])
    return {
        "n_examples": n,
        "accuracy_a": float(table.loc["right"].sum()) / n if n else float("nan"),
        "accuracy_b": float(table["right"].sum()) / n if n else float("nan"),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": mcnemar_exact(only_a, only_b),
    }
