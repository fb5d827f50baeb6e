"""Figures of sparsification methods side by side, one setting each: DataFrames in, a Figure out, no file I/O.

Methods are colours throughout (the same colour for a method in every figure); granularities are
markers. Each function raises `NothingToPlot` when the setting has fewer than two methods, and
`ReportError` when the table holds more than one setting (filter it first, as `build_report` does).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reports.errors import NothingToPlot
from reports.figures import (
    _DENSE_COLOR,
    _EPS_XLABEL,
    _MARKERS,
    EPS_AXIS_WORDS,
    _eps_axis,
    _new_figure,
    _one_setting,
    _style,
)
from reports.labels import choose_eps, eps_label_of, eps_text, points_text, sparsity_text
from reports.methods import SPARSITY_TOLERANCE, method_comparison, method_front, sparse_methods
from reports.stats import correction_words
from reports.tables import aggregate_accuracy, annotated

__all__ = [
    "fig_methods_vs_eps",
    "fig_method_heatmap",
    "fig_method_pareto",
    "methods_vs_eps_caption",
    "method_heatmap_caption",
    "method_pareto_caption",
]


def _methods_of_one_setting(results: pd.DataFrame, what: str) -> pd.DataFrame:
    df = _one_setting(annotated(results), what)
    methods = sparse_methods(df)
    if len(methods) < 2:
        raise NothingToPlot(f"only {len(methods)} sparsification method in this setting: nothing to set side by side")
    return df


def method_colors(methods: list[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per method (colour-blind palette), dense black; the same method keeps its colour everywhere."""
    colors = sns.color_palette("colorblind", max(len(methods), 1))
    out = {m: colors[i % len(colors)] for i, m in enumerate(sorted(methods))}
    out["dense"] = (0.0, 0.0, 0.0)
    return out


def _granularity_markers(df: pd.DataFrame) -> dict[str, str]:
    granularities = sorted(df.loc[~df["is_dense"], "granularity"].astype(str).unique())
    return {g: _MARKERS[i % len(_MARKERS)] for i, g in enumerate(granularities)}


def _method_handles(methods: list[str], colors: dict, markers: dict) -> list[Line2D]:
    handles = [Line2D([], [], color=colors[m], lw=2.5, label=m) for m in methods]
    if len(markers) > 1:
        handles += [Line2D([], [], color="0.35", marker=mk, ls="", label=g) for g, mk in markers.items()]
    return handles


def fig_methods_vs_eps(results: pd.DataFrame) -> Figure:
    """Robust accuracy against eps per method: one panel per attack x target sparsity, one line per family.

    Lines are means over seeds, starting at eps 0 with the clean accuracy; colour: method, marker:
    granularity; bands: the 95% interval of `tables.aggregate_accuracy`; dashed black: dense (dotted:
    a dense control such as dense-continued). The eps axis is spaced as in `fig_accuracy_vs_eps`.

    Raises:
        NothingToPlot: Fewer than two methods, or no attack with an eps budget.
    """
    df = _methods_of_one_setting(results, "fig_methods_vs_eps")
    agg = aggregate_accuracy(df)
    bounded = agg[agg["bounded"]]
    if bounded.empty:
        raise NothingToPlot("no attack with an eps budget was run, so there is no accuracy-vs-eps curve")
    clean = agg[agg["is_clean"]].assign(eps=0.0, eps_label="0")
    series_list = list(dict.fromkeys(bounded.sort_values("eps")["series"]))
    targets = sorted(agg.loc[~agg["is_dense"], "target_sparsity"].unique())
    methods = sparse_methods(df)
    colors, markers = method_colors(methods), _granularity_markers(df)
    panels = [(s, t) for s in series_list for t in targets]
    with _style():
        fig, axes = _new_figure(len(panels), ncols_max=max(len(targets), 1), width=4.2, height=3.4)
        for ax, (series, target) in zip(axes, panels):
            sub = bounded[bounded["series"] == series]
            data = pd.concat([clean[clean["label"].isin(sub["label"])], sub], ignore_index=True)
            sparse = data[~data["is_dense"] & np.isclose(data["target_sparsity"].astype(float), target)]
            for label, g in sparse.groupby("label", sort=True):
                g = g.sort_values("eps")
                color = colors[str(g["method"].iloc[0])]
                marker = markers[str(g["granularity"].iloc[0])]
                ax.plot(g["eps"], g["accuracy"] * 100, color=color, marker=marker, lw=1.8, ms=5, label=str(label))
                ax.fill_between(g["eps"], g["band_low"] * 100, g["band_high"] * 100, color=color, alpha=0.10, lw=0)
            for dense_label, dense in data[data["is_dense"]].groupby("label"):
                dense = dense.sort_values("eps")
                ls = "--" if dense_label == "dense" else ":"
                ax.plot(dense["eps"], dense["accuracy"] * 100, ls=ls, color=_DENSE_COLOR, lw=1.6)
            _eps_axis(ax, data)
            ax.set(
                title=f"{series}, {sparsity_text(target)} sparsity",
                xlabel=_EPS_XLABEL,
                ylabel="accuracy (%)",
                ylim=(0, 100),
            )
        handles = _method_handles(methods, colors, markers)
        if agg["is_dense"].any():
            handles.append(Line2D([], [], color=_DENSE_COLOR, ls="--", lw=1.6, label="dense"))
        for control in sorted(set(agg.loc[agg["is_dense"], "label"]) - {"dense"}):
            handles.append(Line2D([], [], color=_DENSE_COLOR, ls=":", lw=1.6, label=control))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle("Robust accuracy vs eps per method at equal target sparsity (mean over seeds; bands: 95%)")
    return fig


def methods_vs_eps_caption() -> str:
    """The report's caption of `fig_methods_vs_eps`."""
    return (
        "One panel per attack and target sparsity, one line per method (colour) and granularity (marker), mean "
        "over seeds; eps 0 is clean accuracy. Dashed black: dense (dotted: the dense control continued for the "
        f"fine-tuned models' epochs). Bands: 95% interval. {EPS_AXIS_WORDS}"
    )


def fig_method_heatmap(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    *,
    meta: pd.DataFrame | None = None,
    eps: float | str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
    tolerance: float = SPARSITY_TOLERANCE,
) -> Figure:
    """Method x target sparsity heatmap of the change in robust accuracy vs dense, one panel per attack at `eps`.

    Each cell is the `methods.method_comparison` row (the same numbers as `tables.grid_deltas`):
    the mean over seeds of each model's accuracy minus its dense counterpart's, in points; '*'
    marks an adjusted McNemar p < alpha. The second line of a cell is the family's achieved
    sparsity, with '!' where it lies more than `tolerance` from the level's median (unequal sparsity).

    Raises:
        NothingToPlot: Fewer than two methods, no dense model, or no change vs dense at `eps`.
    """
    df = _methods_of_one_setting(results, "fig_method_heatmap")
    if not df["is_dense"].any():
        raise NothingToPlot("no dense model, so there is no change vs dense to show")
    e = choose_eps(df, eps)
    table = method_comparison(df, outcomes, meta, eps=e, correction=correction, tolerance=tolerance)
    table = table[table["delta_pp"].notna()]
    if table.empty:
        raise NothingToPlot(f"no sparse model was attacked at eps {eps_text(e)} with a dense counterpart")
    label_eps = eps_label_of(df, e)
    series_list = list(dict.fromkeys(table.sort_values("is_headline", ascending=False, kind="stable")["series"]))
    rows = sorted(table["label"].unique())
    cols = [sparsity_text(t) for t in sorted(table["target_sparsity"].unique())]
    limit = max(1.0, float(np.ceil(table["delta_pp"].abs().max())))
    with _style():
        fig, axes = _new_figure(len(series_list), width=1.2 * len(cols) + 2.6, height=0.55 * len(rows) + 1.6)
        for ax, series in zip(axes, series_list):
            sub = table[table["series"] == series]

            def cells(values: str, sub: pd.DataFrame = sub) -> pd.DataFrame:
                return sub.pivot(index="label", columns="sparsity_pct", values=values).reindex(index=rows, columns=cols)

            delta, p, achieved, matched = (
                cells("delta_pp"),
                cells("p_adjusted"),
                cells("achieved_sparsity"),
                cells("matched"),
            )
            text = [
                [
                    ""
                    if not np.isfinite(d)
                    else f"{d:+.1f}{'*' if np.isfinite(q) and q < alpha else ''}\n"
                    f"{a * 100:.1f}%{'' if m is True or m == 1 else ' !'}"
                    for d, q, a, m in zip(dr, pr, ar, mr)
                ]
                for dr, pr, ar, mr in zip(
                    delta.to_numpy(float), p.to_numpy(float), achieved.to_numpy(float), matched.to_numpy(object)
                )
            ]
            with warnings.catch_warnings():
                # seaborn 0.13 calls Colormap.set_bad, which matplotlib 3.11 marks as pending deprecation
                warnings.filterwarnings("ignore", message="The set_bad function", category=PendingDeprecationWarning)
                sns.heatmap(
                    delta,
                    ax=ax,
                    cmap="RdBu",
                    center=0.0,
                    vmin=-limit,
                    vmax=limit,
                    annot=np.array(text, dtype=object),
                    fmt="",
                    annot_kws={"fontsize": 8},
                    cbar=False,
                    linewidths=0.5,
                    linecolor="white",
                )
            ax.set(title=f"{series} at eps {label_eps}", xlabel="target sparsity", ylabel="method / granularity")
            ax.tick_params(axis="y", rotation=0)
        fig.colorbar(axes[0].collections[0], ax=axes, label="robust accuracy vs dense (points)", shrink=0.9)
        adjusted = {"holm": "Holm-adjusted ", "bh": "BH-adjusted "}.get(correction, "")
        fig.suptitle(
            f"Methods: change in robust accuracy vs dense at eps {label_eps} (* {adjusted}McNemar p < {alpha:g})"
        )
    return fig


def method_heatmap_caption(alpha: float, correction: str = "holm", tolerance: float = SPARSITY_TOLERANCE) -> str:
    """The report's caption of `fig_method_heatmap`."""
    return (
        "Rows: method / granularity; columns: target sparsity; one panel per attack at the headline eps (the "
        "strongest first). First line: mean over seeds of each sparse model's robust accuracy minus its dense "
        f"counterpart's, in points (blue: more robust than dense); * marks McNemar's exact p < {alpha:g} on the "
        f"same examples, {correction_words(correction)}. Second line: the achieved sparsity; '!' where it lies "
        f"more than {points_text(tolerance)} from the level's median, so the methods there are not at equal "
        "sparsity."
    )


def fig_method_pareto(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float | str | None = None,
    outcomes: pd.DataFrame | None = None,
) -> Figure:
    """Clean vs robust accuracy, and effective MACs vs robust accuracy, of every model, methods as colours.

    Robust accuracy is each model's worst case over the attacks at `eps` (per example where outcomes
    allow; `methods.method_front`). Each point is a model (marker: granularity; number: target
    sparsity in %); a ring marks the models on that panel's Pareto front, and the dotted line joins them.

    Raises:
        NothingToPlot: Fewer than two methods, or no model with clean and robust accuracy at `eps`.
    """
    df = _methods_of_one_setting(results, "fig_method_pareto")
    e = choose_eps(df, eps)
    data = method_front(df, meta, eps=e, outcomes=outcomes).dropna(subset=["clean_accuracy", "robust_accuracy"])
    if data.empty:
        raise NothingToPlot(f"no model has both clean accuracy and an attack at eps {eps_text(e)}")
    label_eps = eps_label_of(df, e)
    methods = sparse_methods(df)
    colors, markers = method_colors(methods), _granularity_markers(df)
    data = data.assign(clean_pct=data["clean_accuracy"] * 100, robust_pct=data["robust_accuracy"] * 100)
    panels = [("clean_pct", "front_clean_robust", "clean accuracy (%)", "Clean vs robust")]
    if data.loc[~data["is_dense"], "macs_fraction"].notna().any():
        data["macs_pct"] = data["macs_fraction"] * 100
        panels.append(("macs_pct", "front_macs_robust", "effective MACs (% of dense)", "Compute vs robust"))
    with _style():
        fig, axes = _new_figure(len(panels), width=5.0, height=4.0)
        for ax, (x, front, xlabel, title) in zip(axes, panels):
            shown = data.dropna(subset=[x])
            for row in shown.itertuples():
                if row.is_dense:
                    # the dense model filled, a dense control (dense-continued) hollow: they differ in budget
                    face = _DENSE_COLOR if row.label == "dense" else "white"
                    ax.scatter(
                        getattr(row, x), row.robust_pct, marker="*", s=200, c=[face], edgecolors=_DENSE_COLOR, zorder=4
                    )
                    continue
                ax.scatter(
                    getattr(row, x),
                    row.robust_pct,
                    marker=markers[str(row.granularity)],
                    s=70,
                    color=colors[str(row.method)],
                    alpha=0.9,
                    edgecolor="white",
                    zorder=3,
                )
                ax.annotate(
                    f"{row.target_sparsity * 100:.0f}",
                    (getattr(row, x), row.robust_pct),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=7,
                    color="0.3",
                )
            on = shown[shown[front]].sort_values([x, "robust_pct"], ascending=[True, False])
            if len(on):
                ax.scatter(on[x], on["robust_pct"], s=190, facecolor="none", edgecolor="0.15", lw=1.0, zorder=5)
                ax.plot(on[x], on["robust_pct"], color="0.2", ls=":", lw=1.2, zorder=2)
            ax.set(xlabel=xlabel, ylabel=f"robust accuracy at eps {label_eps} (%)", title=title)
        handles = _method_handles(methods, colors, markers)
        handles.append(Line2D([], [], color=_DENSE_COLOR, marker="*", ms=12, ls="", label="dense"))
        for control in sorted(set(data.loc[data["is_dense"], "label"]) - {"dense"}):
            handles.append(Line2D([], [], color=_DENSE_COLOR, mfc="white", marker="*", ms=12, ls="", label=control))
        handles.append(
            Line2D([], [], color="0.2", ls=":", marker="o", mfc="none", mec="0.15", ms=10, label="Pareto front")
        )
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle(f"Every model by method: worst-case robust accuracy at eps {label_eps}")
    return fig


def method_pareto_caption(eps_label: str) -> str:
    """The report's caption of `fig_method_pareto` at eps `eps_label`."""
    return (
        f"One point per model, colour: method, marker: granularity, number: target sparsity (%); star: dense "
        "(hollow: the dense control continued for the fine-tuned models' epochs). "
        f"Robust accuracy: the worst case over the eps-budget attacks at eps {eps_label}, per example. Ringed and "
        "joined by the dotted line: the Pareto front (no other model is at least as good on both axes and better "
        "on one; for compute, fewer effective MACs is better)."
    )
