"""Column contracts of the files a finished run directory holds; the single source of truth.

The pipeline writes `results.csv` with exactly `RESULT_COLUMNS` (in this order); `reports` checks
every table it reads against the lists here before using it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from reports.errors import ReportError

__all__ = [
    "RESULT_COLUMNS",
    "OUTCOME_COLUMNS",
    "SANITY_COLUMNS",
    "SANITY_STATUSES",
    "LAYER_SPARSITY_COLUMNS",
    "META_REQUIRED",
    "validate_results",
    "validate_columns",
]

#: Tidy results: one row per model x attack spec (x eps). Clean accuracy is attack="clean", eps=0.
RESULT_COLUMNS: list[str] = [
    "model_id",
    "arch",
    "dataset",
    "method",
    "granularity",
    "target_sparsity",
    "achieved_sparsity",
    "seed",
    "key",
    "attack",
    "norm",
    "eps",
    "eps_label",
    "steps",
    "restarts",
    "n_examples",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_clean_correct",
    "attack_success_rate",
    "linf_max",
    "l2_mean",
    "l2_median",
    "elapsed_s",
    "config_digest",
    # --- written by the attacks package (attacks.result.FRAME_COLUMNS) ---
    "eps_kind",  # clean | bounded | minimum_norm
    "batch_size",  # torchattacks' randomised attacks depend on it
]

#: Per-example outcomes (outcomes.csv.gz): one row per model x attack key x example.
#: `perturbation_norm`: the example's perturbation norm in the spec's threat model where the attack
#: fooled the model, NaN elsewhere (attacks.AttackOutcome.perturbation_norm).
OUTCOME_COLUMNS: list[str] = ["model_id", "key", "example", "correct", "perturbation_norm"]

#: Sanity-check flags (sanity.csv).
#: `status`: one of SANITY_STATUSES; a check that could not run is `not_run`, never `passed`.
SANITY_COLUMNS: list[str] = ["model_id", "check", "status", "evidence"]
SANITY_STATUSES: tuple[str, ...] = ("passed", "failed", "not_run")

#: Per-layer sparsity of one model (models/<model_id>/layer_sparsity.csv).
LAYER_SPARSITY_COLUMNS: list[str] = [
    "name",
    "shape",
    "granularity",
    "weights",
    "nonzeros",
    "sparsity",
    "structure_ok",
]

#: Fields every meta.json must carry for the report to place the model; the rest are optional.
META_REQUIRED: list[str] = ["model_id", "method", "granularity", "target_sparsity"]

_NUMERIC_RESULT_COLUMNS = [
    "target_sparsity",
    "achieved_sparsity",
    "seed",
    "eps",
    "steps",
    "restarts",
    "n_examples",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_clean_correct",
    "attack_success_rate",
    "linf_max",
    "l2_mean",
    "l2_median",
    "elapsed_s",
    "batch_size",
]


def validate_columns(df: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise if `df` lacks any of `required`.

    Args:
        df: The table to check.
        required: Column names that must be present (extra columns are allowed).
        what: Name of the table for the message, e.g. "results.csv".

    Raises:
        ReportError: Naming every missing column.
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReportError(
            f"{what} lacks column(s) {missing}; it must have {list(required)} (re-run the pipeline or add the columns)"
        )


def validate_results(df: pd.DataFrame, *, what: str = "results table") -> pd.DataFrame:
    """Check a results table against `RESULT_COLUMNS` and return it with numeric columns typed.

    Extra columns (e.g. an optional `variant`) are kept.

    Args:
        df: The results table.
        what: Name of the table for messages.

    Returns:
        A copy with the numeric columns converted to numbers (empty cells become NaN).

    Raises:
        ReportError: If columns are missing, a numeric column holds text, the table is empty,
            `key` repeats for one model, or there is no clean row.

    Example:
        >>> validate_results(pd.read_csv("runs/x/results.csv"))  # doctest: +SKIP
    """
    validate_columns(df, RESULT_COLUMNS, what)
    if df.empty:
        raise ReportError(f"{what} has no rows; run the attack sweep first")
    out = df.copy()
    for col in _NUMERIC_RESULT_COLUMNS:
        converted = pd.to_numeric(out[col], errors="coerce")
        bad = converted.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
        if bad.any():
            raise ReportError(
                f"{what} column {col!r} holds non-numeric value {out.loc[bad, col].iloc[0]!r}; "
                "it must be a number or empty"
            )
        out[col] = converted
    for col in ["model_id", "arch", "dataset", "method", "granularity", "key", "attack", "norm", "eps_label"]:
        # object first: a column read as all-empty is float64, which refuses a string fill value
        out[col] = out[col].astype(object).fillna("").astype(str)
    dup = out.duplicated(["model_id", "key"])
    if dup.any():
        first = out.loc[dup, ["model_id", "key"]].iloc[0].tolist()
        raise ReportError(f"{what} repeats (model_id, key) {first}; each model x attack spec must appear once")
    if not (out["attack"] == "clean").any():
        raise ReportError(f"{what} has no row with attack='clean'; clean accuracy is needed as the reference")
    return out
