"""Derived label columns shared by figures, tables and summary, the choice of eps, and number formatting.

Everything the report shows as a name ("PGD", "window", "70%") or as a number in words
("-1.2 points", "p<0.001") is made here, so figures, tables and sentences always agree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.errors import ReportError

__all__ = [
    "ATTACK_DISPLAY",
    "FAMILY_COLUMNS",
    "annotate",
    "choose_eps",
    "eps_label_of",
    "eps_text",
    "sparsity_text",
    "format_pct",
    "format_points",
    "format_p",
    "points_text",
    "p_words",
    "join_names",
    "settings_of",
]

#: How attack names are shown; names not listed are shown as they are.
ATTACK_DISPLAY: dict[str, str] = {
    "clean": "clean",
    "fgsm": "FGSM",
    "pgd": "PGD",
    "pgdl2": "PGD-L2",
    "bim": "BIM",
    "mifgsm": "MI-FGSM",
    "apgd": "APGD",
    "apgdt": "APGD-T",
    "autoattack": "AutoAttack",
    "square": "Square",
    "cw": "CW",
    "deepfool": "DeepFool",
    "fab": "FAB",
}

#: Columns that identify one model family across seeds (the `label` column carries the display name).
FAMILY_COLUMNS: list[str] = ["setting", "method", "granularity", "target_sparsity", "label", "sparsity_pct"]

_EPS_DECIMALS = 9


def sparsity_text(target: float) -> str:
    """0.7 -> "70%", 0.875 -> "87.5%"."""
    return f"{float(target) * 100:.4g}%"


def eps_text(eps: float, label: str | None = None) -> str:
    """The eps as the run wrote it (its eps_label) or, without one, as n/255 when it is on that grid."""
    if label:
        return str(label)
    if eps is None or not math.isfinite(float(eps)):
        return "no budget"
    n = float(eps) * 255
    if abs(n - round(n)) < 1e-6:
        return f"{round(n)}/255"
    return f"{float(eps):.4g}"


def format_pct(fraction: float, digits: int = 1) -> str:
    """0.9751 -> "97.5%"."""
    if fraction is None or not np.isfinite(fraction):
        return "n/a"
    return f"{fraction * 100:.{digits}f}%"


def format_points(points: float, digits: int = 1) -> str:
    """A difference in percentage points with its sign: -1.23 -> "-1.2 points"."""
    if points is None or not np.isfinite(points):
        return "n/a"
    value = round(float(points), digits)
    if value == 0:
        value = 0.0  # no "-0.0"
    return f"{value:+.{digits}f} points"


def points_text(fraction: float) -> str:
    """A tolerance as a fraction in percentage points: 0.01 -> "1 percentage point", 0.02 -> "2 percentage points"."""
    value = float(fraction) * 100
    return f"{value:g} percentage point" + ("" if value == 1 else "s")


def format_p(p: float) -> str:
    """A p-value in words: "p<0.001", "p=0.0041", "p=0.041", "p=0.41", or "no paired test"."""
    if p is None or not np.isfinite(p):
        return "no paired test"
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.2f}" if p >= 0.1 else f"p={p:.2g}"


_ADJUSTED = {"holm": "Holm-adjusted ", "bh": "BH-adjusted ", "none": ""}


def p_words(p: float, alpha: float, correction: str) -> str:
    """`p` (already adjusted by `correction`) in words, naming the correction: "Holm-adjusted p=0.01, significant"."""
    if p is None or not np.isfinite(p):
        return "no paired test"
    return f"{_ADJUSTED[correction]}{format_p(p)}, {'significant' if p < alpha else 'not significant'}"


def join_names(items: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c"."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _series_labels(df: pd.DataFrame) -> pd.Series:
    """One display name per attack configuration; eps is the x-axis, so it is not part of the name."""
    names = df["attack"].map(lambda a: ATTACK_DISPLAY.get(str(a).lower(), str(a)))
    out = names.copy()
    fields = [("norm", "{}"), ("steps", "steps={:g}"), ("restarts", "restarts={:g}")]
    for attack, idx in df.groupby("attack", sort=False).groups.items():
        if attack == "clean":
            continue
        sub = df.loc[idx]
        varying = [(c, fmt) for c, fmt in fields if sub[c].nunique(dropna=False) > 1]
        if not varying:
            continue
        for i in idx:
            parts = [fmt.format(df.at[i, c]) for c, fmt in varying if pd.notna(df.at[i, c]) and str(df.at[i, c])]
            out.at[i] = f"{names.at[i]} ({', '.join(parts)})" if parts else names.at[i]
    return out


def annotate(results: pd.DataFrame) -> pd.DataFrame:
    """Add the derived columns every report part uses.

    Added: `is_dense`, `is_clean` (eps_kind "clean"), `min_norm` (eps_kind "minimum_norm", as the
    attacks package wrote it), `bounded` (an attack with a finite eps budget > 0; a minimum-norm
    attack run with a budget is both), `series`
    (attack display name, with norm/steps/restarts when one attack appears with several),
    `label` ("dense", a dense control's method such as "dense-continued", the granularity, or
    method/granularity when several sparse methods exist;
    an optional input column `variant` is appended in brackets), `sparsity_pct` ("70%"),
    `setting` ("dataset / arch") and `eps_key` (eps rounded for grouping).

    Args:
        results: A validated results table.

    Returns:
        A copy with the columns added.
    """
    df = results.copy()
    df["is_dense"] = (df["method"].str.lower() == "dense") | (df["granularity"].str.lower() == "dense")
    df["is_clean"] = df["eps_kind"] == "clean"
    finite_eps = np.isfinite(df["eps"].astype(float))
    df["min_norm"] = df["eps_kind"] == "minimum_norm"
    df["bounded"] = ~df["is_clean"] & finite_eps & (df["eps"] > 0)
    df["series"] = _series_labels(df)
    sparse_methods = df.loc[~df["is_dense"], "method"].unique()
    label = df["method"] + "/" + df["granularity"] if len(sparse_methods) > 1 else df["granularity"].copy()
    if "variant" in df.columns:
        extra = df["variant"].astype(object).fillna("").astype(str)  # an all-empty column reads as float NaN
        label = label.where(extra == "", label + " [" + extra + "]")
    # a dense control (method dense-continued) keeps its method as its name, apart from the dense model
    dense_label = df["method"].where(df["method"].str.lower() != "dense", "dense")
    df["label"] = label.where(~df["is_dense"], dense_label)
    df["sparsity_pct"] = df["target_sparsity"].map(sparsity_text).where(~df["is_dense"], "dense")
    df["setting"] = df["dataset"] + " / " + df["arch"]
    df["eps_key"] = df["eps"].round(_EPS_DECIMALS)
    return df


def settings_of(df: pd.DataFrame) -> list[str]:
    """The distinct "dataset / arch" settings of an annotated table, in order of appearance."""
    return list(dict.fromkeys(df["setting"]))


def choose_eps(results: pd.DataFrame, eps: float | str | None = None) -> float:
    """The eps at which one-eps views (heatmap, trade-off, success rate) are drawn.

    With `eps` given, it must be one of the evaluated budgets. Without it, the budget shared by
    the most attack configurations is used, ties going to the larger eps (the usual headline,
    e.g. 8/255 when FGSM, PGD and Square were all run there).

    Args:
        results: A results table (raw or annotated, see `annotate`).
        eps: A requested eps ("8/255" or a float) or None.

    Returns:
        The eps value as stored in the table.

    Raises:
        ReportError: If nothing was attacked with an eps budget, or `eps` was not evaluated.
    """
    if "bounded" not in results.columns:
        results = annotate(results)
    bounded = results[results["bounded"]]
    if bounded.empty:
        raise ReportError("no attack with an eps budget in the results; nothing to show at one eps")
    available = np.sort(bounded["eps_key"].unique())
    if eps is not None:
        close = available[np.isclose(available, _requested_eps(bounded, eps), rtol=1e-6, atol=1e-9)]
        if close.size == 0:
            shown = ", ".join(eps_text(e) for e in available)
            raise ReportError(f"eps {eps!r} was not evaluated; choose one of {shown}")
        key = close[0]
    else:
        counts = bounded.groupby("eps_key")["series"].nunique()
        key = counts[counts == counts.max()].index.max()
    return float(bounded.loc[bounded["eps_key"] == key, "eps"].iloc[0])


def _requested_eps(bounded: pd.DataFrame, eps: float | str) -> float:
    """A requested eps as a number: a float, or text naming one of the table's eps labels ("8/255") or a decimal."""
    if not isinstance(eps, str):
        return float(eps)
    text = eps.replace(" ", "")
    by_label = bounded.loc[bounded["eps_label"].str.replace(" ", "") == text, "eps_key"]
    if len(by_label):
        return float(by_label.iloc[0])
    try:
        return float(text)
    except ValueError:
        return math.nan  # matches nothing: the caller lists the evaluated budgets


def eps_label_of(results: pd.DataFrame, eps: float) -> str:
    """The eps_label the run wrote for `eps` (or a computed one)."""
    rows = results[np.isclose(results["eps"].astype(float), eps, rtol=1e-6, atol=1e-9)]
    labels = [lab for lab in rows["eps_label"].astype(str) if lab and lab != "nan"]
    return eps_text(eps, labels[0] if labels else None)
