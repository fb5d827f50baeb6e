"""The report's first screen: what the grid found, in sentences computed from the numbers.

Each `Finding` carries the sentence and the numbers it was written from, so a test (or a
reader) can check that the words say what the numbers say.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from reports.compression import compression_families, compression_findings, compression_points, equal_macs_comparison
from reports.content import Finding
from reports.contract import PLAIN_DENSE_METHOD
from reports.errors import ReportError
from reports.labels import (
    choose_eps,
    eps_label_of,
    format_pct,
    format_points,
    join_names,
    p_words,
    settings_of,
    sparsity_text,
)
from reports.method_summary import method_findings
from reports.methods import SPARSITY_TOLERANCE, compares_methods, method_comparison, method_families, method_pairs
from reports.stats import correction_words, wilson_interval
from reports.tables import (
    aggregate_accuracy,
    annotated,
    grid_deltas,
    model_deltas,
    robust_vs_clean,
    strongest_series,
)

__all__ = ["Finding", "summarize"]


def _rounded(x: float) -> float:
    return round(float(x), 1)


def _best_phrase(delta: float) -> str:
    d = _rounded(delta)
    if d < 0:
        return "loses least robust accuracy"
    if d > 0:
        return "gains most robust accuracy"
    return "keeps robust accuracy closest to dense"


def _worst_phrase(delta: float) -> str:
    d = _rounded(delta)
    if d < 0:
        return "loses most"
    if d > 0:
        return "gains least"
    return "keeps robust accuracy closest to dense"


def _clean_phrase(delta: float, *, best: bool) -> str:
    """Words for the clean-accuracy change of the best (largest change) or worst family, by its sign."""
    d = _rounded(delta)
    if d > 0:
        return "gains most" if best else "gains least"
    if d < 0:
        return "costs least" if best else "costs most"
    return "leaves it unchanged"


def _seeds_text(values: pd.Series) -> str:
    seeds = sorted(values.dropna().unique())
    return ", ".join(str(int(s)) if float(s).is_integer() else str(s) for s in seeds)


def _overview(df: pd.DataFrame, setting: str) -> Finding:
    models = df.drop_duplicates("model_id")
    dense, sparse = models[models["is_dense"]], models[~models["is_dense"]]
    attacks = df[~df["is_clean"]]
    parts = []
    for series, sub in attacks.groupby("series", sort=False):
        budgets = sub.loc[sub["bounded"]].drop_duplicates("eps_key")
        if len(budgets) > 1:
            top = budgets.sort_values("eps").iloc[-1]
            parts.append(f"{series} ({len(budgets)} eps up to {eps_label_of(df, top['eps'])})")
        elif len(budgets) == 1:
            parts.append(f"{series} (eps {eps_label_of(df, budgets['eps'].iloc[0])})")
        else:
            parts.append(f"{series} (minimum-norm)")
    n_examples = int(df["n_examples"].min())
    detail = ""
    if len(sparse):
        detail = (
            f" ({join_names(sorted(sparse['method'].unique()))}; granularities {join_names(sorted(sparse['label'].unique()))}; "
            f"target sparsities {join_names([sparsity_text(t) for t in sorted(sparse['target_sparsity'].unique())])}; "
            f"seeds {_seeds_text(models['seed'])})"
        )
    attacked = f", attacked with {join_names(parts)}" if parts else ", evaluated on clean data only"
    text = (
        f"The run holds {len(models)} models on {setting}: {len(dense)} dense and {len(sparse)} sparse{detail}"
        f"{attacked}, on {n_examples} test examples."
    )
    return Finding(
        "overview",
        text,
        {
            "setting": setting,
            "n_models": len(models),
            "n_dense": len(dense),
            "n_sparse": len(sparse),
            "granularities": sorted(sparse["label"].unique()),
            "n_examples": n_examples,
        },
    )


def _the_dense(dense: pd.DataFrame) -> pd.DataFrame:
    """Of the dense models' rows, the dense model itself where the run has one (label "dense"):
    not a dense control or another dense variant (e.g. with mixture normalisation)."""
    return dense[dense["label"] == "dense"] if (dense["label"] == "dense").any() else dense


def _at(frame: pd.DataFrame, series: str, eps: float) -> pd.DataFrame:
    """The rows of `frame` under `series` at `eps`."""
    return frame[(frame["series"] == series) & np.isclose(frame["eps_key"], eps, rtol=1e-6, atol=1e-9)]


def _dense_worst_case(df: pd.DataFrame, outcomes: pd.DataFrame | None, eps: float | None) -> float | None:
    """Mean over the dense models of the per-example worst case over every attack at `eps` (None without outcomes).

    The dense model itself where the run has one (label "dense"), as `_dense_finding` states its
    accuracies: not a dense control or another dense variant (e.g. with mixture normalisation).
    """
    if outcomes is None or eps is None or not df["is_dense"].any():
        return None
    table = robust_vs_clean(df, eps=eps, outcomes=outcomes)
    dense = _the_dense(table[table["is_dense"]])
    if dense.empty or not (dense["robust_basis"] == "per example").all():
        return None
    return float(dense["robust_accuracy"].mean())


def _dense_finding(
    agg: pd.DataFrame, series: str | None, eps: float | None, label_eps: str, worst_case: float | None = None
) -> Finding | None:
    dense = _the_dense(agg[agg["is_dense"]])
    if dense.empty:
        return None
    clean = dense[dense["is_clean"]]
    if clean.empty:
        return None
    clean_acc = float(clean["accuracy"].mean())
    n_seeds = int(clean["n_seeds"].max())
    numbers: dict[str, Any] = {"clean_accuracy": clean_acc, "n_seeds": n_seeds}
    text = f"The dense {'models reach' if n_seeds > 1 else 'model reaches'} {format_pct(clean_acc)} clean accuracy"
    if series is not None and eps is not None:
        row = _at(dense, series, eps)
        if not row.empty:
            robust = float(row["accuracy"].mean())
            numbers.update({"robust_accuracy": robust, "series": series, "eps": eps, "eps_label": label_eps})
            text += f" and {format_pct(robust)} robust accuracy under {series} at eps {label_eps}"
            if worst_case is not None:
                # the headline: an example is robust only if every attack at this eps failed on it
                numbers["worst_case_accuracy"] = worst_case
                text += f" ({format_pct(worst_case)} against every attack at that eps, counted per example)"
    text += f" (mean of {n_seeds} seeds)." if n_seeds > 1 else "."
    return Finding("dense", text, numbers)


def _plain_control_finding(agg: pd.DataFrame, series: str | None, eps: float | None, label_eps: str) -> Finding | None:
    """What adversarial training bought: the dense model against its plainly trained control."""
    dense, plain = agg[agg["label"] == "dense"], agg[agg["label"] == PLAIN_DENSE_METHOD]
    if dense.empty or plain.empty:
        return None
    numbers: dict[str, Any] = {
        "plain_clean_accuracy": float(plain.loc[plain["is_clean"], "accuracy"].mean()),
        "dense_clean_accuracy": float(dense.loc[dense["is_clean"], "accuracy"].mean()),
    }
    text = (
        f"The plainly trained dense control ({PLAIN_DENSE_METHOD}) reaches "
        f"{format_pct(numbers['plain_clean_accuracy'])} clean accuracy"
    )
    if series is not None and eps is not None:
        robust, plain_robust = _at(dense, series, eps), _at(plain, series, eps)
        if not robust.empty and not plain_robust.empty:
            gain = float(robust["accuracy"].mean()) - float(plain_robust["accuracy"].mean())
            numbers.update(
                {
                    "plain_robust_accuracy": float(plain_robust["accuracy"].mean()),
                    "robust_gain_pp": gain * 100,
                    "series": series,
                    "eps": eps,
                }
            )
            text += (
                f" and {format_pct(numbers['plain_robust_accuracy'])} under {series} at eps {label_eps}: the dense "
                f"model's adversarial training changes robust accuracy by {format_points(gain * 100)}"
            )
    return Finding("plain_control", text + ".", numbers)


def _sparsity_findings(
    grid: pd.DataFrame, series: str, eps: float, label_eps: str, alpha: float, correction: str
) -> list[Finding]:
    at = _at(grid, series, eps)
    at = at[at["delta_pp"].notna()]
    findings = []
    for target, sub in at.groupby("target_sparsity", sort=True):
        sub = sub.sort_values(["delta_pp", "label"], ascending=[False, True])
        best, worst = sub.iloc[0], sub.iloc[-1]
        where = f"At {sparsity_text(target)} sparsity under {series} at eps {label_eps}"
        numbers = {
            "series": series,
            "eps": eps,
            "eps_label": label_eps,
            "target_sparsity": float(target),
            "best": best["label"],
            "best_delta_pp": float(best["delta_pp"]),
            "best_p": float(best["p_value"]),
            "best_p_adjusted": float(best["p_adjusted"]),
            "worst": worst["label"],
            "worst_delta_pp": float(worst["delta_pp"]),
            "worst_p": float(worst["p_value"]),
            "worst_p_adjusted": float(worst["p_adjusted"]),
            "n_seeds": int(sub["n_seeds"].max()),
            "correction": correction,
        }
        best_p = p_words(best["p_adjusted"], alpha, correction)
        if len(sub) == 1:
            text = (
                f"{where}, {best['label']} changes robust accuracy by {format_points(best['delta_pp'])} vs dense "
                f"({best_p})."
            )
        else:
            text = (
                f"{where}, {best['label']} {_best_phrase(best['delta_pp'])}: "
                f"{format_points(best['delta_pp'])} vs dense "
                f"({best_p}); {worst['label']} {_worst_phrase(worst['delta_pp'])}: "
                f"{format_points(worst['delta_pp'])} ({p_words(worst['p_adjusted'], alpha, correction)})."
            )
        findings.append(Finding("sparsity", text, numbers))
    return findings


def _ranking_finding(grid: pd.DataFrame, series: str, eps: float, label_eps: str) -> Finding | None:
    at = _at(grid, series, eps)
    at = at[at["delta_pp"].notna()]
    if at["label"].nunique() < 2:
        return None
    best = (
        at.sort_values(["target_sparsity", "delta_pp", "label"], ascending=[True, False, True])
        .groupby("target_sparsity", sort=True)
        .head(1)
    )
    winners = list(best["label"])
    cells = [f"{sparsity_text(t)} ({format_points(d)})" for t, d in zip(best["target_sparsity"], best["delta_pp"])]
    family = "method/granularity" if at["method"].nunique() > 1 else "granularity"
    head = f"Under {series} at eps {label_eps}, the {family} that keeps most robust accuracy vs dense is"
    if len(set(winners)) == 1:
        text = f"{head} {winners[0]} at every sparsity: {join_names(cells)}."
    else:
        text = f"{head} " + join_names([f"{w} at {c}" for w, c in zip(winners, cells)]) + "."
    numbers = {
        "series": series,
        "eps": eps,
        "eps_label": label_eps,
        "best": {
            float(t): (lab, float(d)) for t, lab, d in zip(best["target_sparsity"], best["label"], best["delta_pp"])
        },
    }
    return Finding("ranking", text, numbers)


def _clean_cost_finding(grid: pd.DataFrame, agg: pd.DataFrame, alpha: float, correction: str) -> Finding | None:
    clean = grid[grid["is_clean"] & grid["delta_pp"].notna()]
    dense = agg[agg["is_dense"] & agg["is_clean"]]
    if clean.empty or dense.empty:
        return None
    # the reference each sparse model is compared with (a dense control where there is one)
    parts = []
    numbers: dict[str, Any] = {
        "dense_clean_accuracy": float(clean["dense_accuracy"].mean()),
        "by_sparsity": {},
        "correction": correction,
    }
    for target, sub in clean.groupby("target_sparsity", sort=True):
        sub = sub.sort_values(["delta_pp", "label"], ascending=[False, True])
        best, worst = sub.iloc[0], sub.iloc[-1]
        numbers["by_sparsity"][float(target)] = {
            "least": best["label"],
            "least_delta_pp": float(best["delta_pp"]),
            "least_p": float(best["p_value"]),
            "least_p_adjusted": float(best["p_adjusted"]),
            "most": worst["label"],
            "most_delta_pp": float(worst["delta_pp"]),
            "most_p": float(worst["p_value"]),
            "most_p_adjusted": float(worst["p_adjusted"]),
        }
        best_p = p_words(best["p_adjusted"], alpha, correction)
        if len(sub) == 1:
            parts.append(
                f"at {sparsity_text(target)} sparsity {best['label']} {format_points(best['delta_pp'])} ({best_p})"
            )
        else:
            parts.append(
                f"at {sparsity_text(target)} sparsity {best['label']} {_clean_phrase(best['delta_pp'], best=True)} "
                f"({format_points(best['delta_pp'])}, {best_p}) and {worst['label']} "
                f"{_clean_phrase(worst['delta_pp'], best=False)} "
                f"({format_points(worst['delta_pp'])}, {p_words(worst['p_adjusted'], alpha, correction)})"
            )
    text = f"Clean accuracy vs dense ({format_pct(numbers['dense_clean_accuracy'])}): " + "; ".join(parts) + "."
    return Finding("clean_cost", text, numbers)


def _sanity_finding(sanity: pd.DataFrame) -> Finding:
    """How many checks passed, failed and could not run; a check that did not run is never counted as passed."""
    n = len(sanity)
    failed = sanity[sanity["status"] == "failed"]
    not_run = sanity[sanity["status"] == "not_run"]
    n_passed = int((sanity["status"] == "passed").sum())
    numbers = {
        "n_checks": n,
        "n_passed": n_passed,
        "n_failed": len(failed),
        "n_not_run": len(not_run),
        "failed": failed[["model_id", "check"]].values.tolist(),
        "not_run": sorted(set(not_run["check"])),
    }
    skipped = ""
    if len(not_run):
        names = join_names(sorted(set(not_run["check"])))
        skipped = f"{len(not_run)} of {n} could not run (nothing to compare: {names})"
    if failed.empty:
        if not len(not_run):
            return Finding("sanity", f"All {n} sanity checks passed.", numbers)
        return Finding("sanity", f"{n_passed} of {n} sanity checks passed; {skipped}.", numbers)
    shown = [f"{r.check} on {r.model_id}" for r in failed.head(3).itertuples(index=False)]
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    text = (
        f"{len(failed)} of {n} sanity checks failed ({'; '.join(shown)}{more})"
        + (f"; {skipped}" if skipped else "")
        + "; read the sanity table before trusting the numbers above."
    )
    return Finding("sanity", text, numbers)


def _precision_finding(df: pd.DataFrame) -> Finding:
    n = int(df["n_examples"].min())
    low, high = wilson_interval(n // 2, n)
    half = (high - low) / 2 * 100
    text = (
        f"Each accuracy rests on {n} test examples, so its 95% interval is up to ±{half:.1f} points wide; "
        "differences between models are tested on the same examples (McNemar), which is more sensitive than "
        "comparing intervals."
    )
    return Finding("precision", text, {"n_examples": n, "half_width_pp": half})


def summarize(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    *,
    meta: pd.DataFrame | None = None,
    sanity: pd.DataFrame | None = None,
    eps: float | str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
) -> list[Finding]:
    """Compute the first-screen findings from the numbers.

    Failed sanity checks come first. Then, for each setting: an overview; the dense reference; at
    each target sparsity, which granularity loses least and most robust accuracy vs dense under the strongest attack at
    `eps`, with McNemar p-values; the best granularity per sparsity under the other attacks;
    the clean-accuracy cost. Then the sanity checks (when all passed), the precision the example count allows, and
    how deltas and p-values were computed.

    Args:
        results: Results table (raw or annotated).
        outcomes: Per-example outcomes (for p-values).
        meta: Per-model metadata (pairs sparse models with their parents).
        sanity: Sanity-check flags.
        eps: The eps the sentences speak about (default: see `labels.choose_eps`).
        alpha: Significance level for "significant", applied to the adjusted p-values.
        correction: Multiple-comparison correction (`stats.CORRECTIONS`: "holm", the default,
            "bh" or "none") over the McNemar tests of each setting; the sentences name it.

    Returns:
        The findings in reading order.

    Example:
        >>> for f in summarize(load_results(run), load_outcomes(run)): print(f.text)  # doctest: +SKIP
    """
    df = annotated(results)
    findings: list[Finding] = []
    settings = settings_of(df)
    for setting in settings:
        sub = df[df["setting"] == setting]
        part: list[Finding] = [_overview(sub, setting)]
        agg = aggregate_accuracy(sub)
        try:
            e: float | None = choose_eps(sub, eps)
        except ReportError as exc:
            if eps is not None and "was not evaluated" in str(exc):
                raise
            e = None
        label_eps = eps_label_of(sub, e) if e is not None else ""
        headline = strongest_series(agg, e) if e is not None else None
        dense = _dense_finding(agg, headline, e, label_eps, _dense_worst_case(sub, outcomes, e))
        if dense is not None:
            part.append(dense)
        plain = _plain_control_finding(agg, headline, e, label_eps)
        if plain is not None:
            part.append(plain)
        has_pairs = sub["is_dense"].any() and (~sub["is_dense"]).any()
        if has_pairs:
            grid = grid_deltas(model_deltas(sub, outcomes, meta, correction=correction), correction=correction)
            if headline is not None:
                part.extend(_sparsity_findings(grid, headline, e, label_eps, alpha, correction))
                for series in dict.fromkeys(grid.loc[grid["bounded"], "series"]):
                    if series != headline:
                        ranking = _ranking_finding(grid, series, e, label_eps)
                        if ranking is not None:
                            part.append(ranking)
            clean_cost = _clean_cost_finding(grid, agg, alpha, correction)
            if clean_cost is not None:
                part.append(clean_cost)
        if e is not None and compares_methods(sub):
            comparison = method_comparison(sub, outcomes, meta, eps=e, correction=correction)
            part.extend(
                method_findings(
                    comparison,
                    method_pairs(sub, outcomes, comparison, eps=e, correction=correction),
                    method_families(sub, meta),
                    label_eps=label_eps,
                    alpha=alpha,
                    correction=correction,
                    tolerance=SPARSITY_TOLERANCE,
                )
            )
        if e is not None:
            families = compression_families(compression_points(sub, meta, eps=e, outcomes=outcomes))
            part.extend(compression_findings(equal_macs_comparison(families), label_eps))
        if len(settings) > 1:
            part = [Finding(f.kind, f"{setting}: {f.text}", {**f.numbers, "setting": setting}) for f in part]
        findings.extend(part)
    if sanity is not None and len(sanity):
        check = _sanity_finding(sanity)
        # a failed check changes how every other sentence should be read, so it goes first
        if check.numbers["n_failed"]:
            findings.insert(0, check)
        else:
            findings.append(check)
    findings.append(_precision_finding(df))
    if (~df["is_dense"]).any() and df["is_dense"].any():
        findings.append(
            Finding(
                "method",
                "Changes vs dense are means over seeds of each sparse model's accuracy minus its dense counterpart's "
                "(the dense model with the same training budget: for a model fine-tuned from a dense parent, the dense "
                "model continued for the same epochs (dense-continued); else the dense model of the same seed), in "
                "percentage points; p-values are exact McNemar tests on the same test examples (discordant pairs "
                f"pooled over seeds), {correction_words(correction)}, called significant below {alpha:g}. The tables "
                "give each change's exact 95% interval (Clopper-Pearson on the discordant pairs, conditional on their "
                "number) and each attack success rate's 95% Wilson interval.",
                {"alpha": alpha, "correction": correction},
            )
        )
    return findings
